//! nekton through PgBouncer (Debian's), the way production PostgreSQL is often fronted: the API and
//! a worker connect only to PgBouncer on 127.0.0.1, in **session** pooling mode, which keeps
//! everything nekton relies on — LISTEN/NOTIFY (log streaming, cancels, wake-ups), prepared
//! statements and advisory locks (migrations). Transaction pooling is not supported: sqlx caches
//! named prepared statements per connection, which PgBouncer 1.18 cannot carry across server
//! connections (see docs/operations.md).
//!
//! Needs `pgbouncer` (scripts/setup-test.sh installs it) and root (PgBouncer runs as the
//! embedded server's unprivileged account).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::guests;
use nekton::api::types::{JobSpec, JobState, LimitsSpec};
use nekton::cli::LogStreamEvent;
use nekton::pg::{EmbeddedOptions, EmbeddedPostgres, PORT, SUPERUSER};

struct Bouncer(Child);

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_worker_run_through_pgbouncer_in_session_mode() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs PgBouncer as PostgreSQL's account: run it as root (scripts/test.sh does)"
    );
    let bin = which("pgbouncer").expect(
        "pgbouncer is needed (Debian: apt-get install pgbouncer; scripts/setup-test.sh does)",
    );
    let dir = common::serve_state_dir("nkbouncer");
    let pg = EmbeddedPostgres::start(dir.path().join("pg"), EmbeddedOptions::for_tests())
        .await
        .unwrap();
    pg.create_database_if_missing("nekton").await.unwrap();

    let port = common::free_port();
    let conf = dir.path().join("bouncer");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("users.txt"), format!("\"{SUPERUSER}\" \"\"\n")).unwrap();
    std::fs::write(
        conf.join("pgbouncer.ini"),
        format!(
            "[databases]\nnekton = host={socket} port={PORT} dbname=nekton user={SUPERUSER}\n\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nignore_startup_parameters = extra_float_digits\nauth_file = {conf}/users.txt\npool_mode = session\n\
             max_client_conn = 200\ndefault_pool_size = 40\nlogfile = {conf}/pgbouncer.log\n",
            socket = pg.socket_dir().display(),
            conf = conf.display(),
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&conf).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
    std::fs::set_permissions(&conf, perms).unwrap();
    let _bouncer = Bouncer(
        Command::new(bin)
            .args(["-u", "postgres"])
            .arg(conf.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting pgbouncer"),
    );

    // Everything nekton does goes through PgBouncer.
    let url = format!("postgres://{SUPERUSER}@127.0.0.1:{port}/nekton?sslmode=disable");
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let start = Instant::now();
    let pool = loop {
        match nekton::server::pool_from_options(options.clone(), 10).await {
            Ok(p) => break p,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "PgBouncer did not come up: {e:#}\n{}",
                    std::fs::read_to_string(conf.join("pgbouncer.log")).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    nekton::store::migrate(&pool)
        .await
        .expect("migrations through PgBouncer");
    let state = tempfile::tempdir().unwrap();
    let (running, client) = common::start_on(&pool, state.path()).await;

    // Jobs run, their output streams live over SSE (LISTEN through PgBouncer), a running job is
    // cancelled within a second (NOTIFY through PgBouncer), a batch completes.
    let hello = client.push_module(guests::hello()).await.unwrap().digest;
    let spec = JobSpec {
        module: Some(hello.clone()),
        ..Default::default()
    };
    let job = client.submit(&spec, Some("via-bouncer")).await.unwrap();
    let mut events = Box::pin(client.follow_logs(job.id, None));
    let mut stdout = Vec::new();
    let mut exited = false;
    while let Some(ev) = futures::StreamExt::next(&mut events).await {
        match ev.unwrap() {
            LogStreamEvent::Log {
                bytes,
                stream: nekton::cli::StdStream::Stdout,
                ..
            } => stdout.extend_from_slice(&bytes),
            LogStreamEvent::Exit { .. } => {
                exited = true;
                break;
            }
            _ => {}
        }
    }
    assert!(exited, "the SSE stream ended without its exit event");
    assert_eq!(stdout, b"hello\n");
    assert_eq!(
        client.get_job(job.id).await.unwrap().state,
        JobState::Succeeded
    );

    let spin = client.push_module(guests::spin()).await.unwrap().digest;
    let long = client
        .submit(
            &JobSpec {
                module: Some(spin),
                limits: Some(LimitsSpec {
                    wall_time_ms: Some(60_000),
                    ..Default::default()
                }),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get_job(long.id).await.unwrap().state != JobState::Running {
        assert!(Instant::now() < deadline, "the spinning job never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.cancel(long.id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let cancelled = loop {
        let j = client.get_job(long.id).await.unwrap();
        if j.state.is_terminal() {
            break j;
        }
        assert!(Instant::now() < deadline, "the cancel never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(cancelled.state, JobState::Cancelled);

    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            client
                .submit(&spec, Some(&format!("many-{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    for id in ids {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let j = client.get_job(id).await.unwrap();
            if j.state.is_terminal() {
                assert_eq!(j.state, JobState::Succeeded, "{j:?}");
                break;
            }
            assert!(Instant::now() < deadline, "job {id} did not finish");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    running.shutdown().await.unwrap();
    pool.close().await;
    pg.stop().await;
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
