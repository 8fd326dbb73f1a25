//! PostgreSQL failover: a primary with a synchronous streaming standby (two local servers on
//! 127.0.0.2 and 127.0.0.3), nekton (API and worker) connected through the multi-host URL
//! `postgres://…@127.0.0.2:5432,127.0.0.3:5432/nekton?target_session_attrs=read-write`. Jobs are
//! submitted throughout; the primary's postmaster is killed (`SIGKILL`) and the standby promoted.
//! The pool follows the new primary with no restart, and every job whose submission was
//! answered 201 — before, during or after the failover — is there and runs to `succeeded`,
//! exactly once per idempotency key.
//!
//! Needs root (the servers run as PostgreSQL's account) and `pg_basebackup` beside `initdb`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::guests;
use nekton::api::types::{JobSpec, JobState};
use nekton::pg::{EmbeddedOptions, EmbeddedPostgres, PORT, SUPERUSER};
use sqlx::{Connection, Executor};

const PRIMARY: &str = "127.0.0.2";
const STANDBY: &str = "127.0.0.3";

fn options(listen: &str) -> EmbeddedOptions {
    EmbeddedOptions {
        synchronous_commit: true,
        settings: vec![
            ("listen_addresses".into(), listen.into()),
            ("wal_level".into(), "replica".into()),
            ("hot_standby".into(), "on".into()),
        ],
        ..EmbeddedOptions::for_tests()
    }
}

async fn superuser(pg: &EmbeddedPostgres) -> sqlx::PgConnection {
    sqlx::PgConnection::connect_with(&pg.connect_options("postgres"))
        .await
        .expect("connecting to a test server over its socket")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_survive_a_failover_to_the_promoted_standby() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs two PostgreSQL servers as PostgreSQL's account: run it as root \
         (scripts/test.sh does)"
    );
    let dir = common::serve_state_dir("nkfailover");
    let t0 = Instant::now();
    let phase = |what: &str| println!("failover: {what} at {:?}", t0.elapsed());

    // The primary, open to loopback TCP on 127.0.0.2.
    let primary = EmbeddedPostgres::start(dir.path().join("primary"), options(PRIMARY))
        .await
        .expect("starting the primary");
    let basebackup = primary.binaries().initdb.with_file_name("pg_basebackup");
    assert!(
        basebackup.is_file(),
        "{} is needed (Debian: postgresql-15, beside initdb)",
        basebackup.display()
    );
    primary.create_database_if_missing("nekton").await.unwrap();

    // The standby: a base backup of the primary (with `standby.signal` and `primary_conninfo`
    // over the primary's socket), started on 127.0.0.3.
    let standby_root = dir.path().join("standby");
    let data_name = primary
        .data_dir()
        .strip_prefix(primary.data_root())
        .expect("the data directory is inside the data root")
        .to_path_buf();
    std::fs::create_dir_all(&standby_root).unwrap();
    let status = std::process::Command::new(&basebackup)
        .arg("-h")
        .arg(primary.socket_dir())
        .args([
            "-p",
            &PORT.to_string(),
            "-U",
            SUPERUSER,
            "-R",
            "-X",
            "stream",
        ])
        // A fast checkpoint: the default spreads it over minutes.
        .args(["--checkpoint=fast", "-D"])
        .arg(standby_root.join(&data_name))
        .status()
        .expect("running pg_basebackup");
    assert!(status.success(), "pg_basebackup failed: {status}");
    let standby = EmbeddedPostgres::start(&standby_root, options(STANDBY))
        .await
        .expect("starting the standby");

    // Commits wait for the standby from now on: an acknowledged commit is on both servers.
    let mut conn = superuser(&primary).await;
    conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        .await
        .unwrap();
    conn.execute("SELECT pg_reload_conf()").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sync: Option<String> =
            sqlx::query_scalar("SELECT sync_state FROM pg_stat_replication LIMIT 1")
                .fetch_optional(&mut conn)
                .await
                .unwrap();
        if sync.as_deref() == Some("sync") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never became synchronous ({sync:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(conn);
    phase("the standby is synchronous");

    // nekton through the multi-host URL, the way `--database-url` is given.
    let url = format!(
        "postgres://{SUPERUSER}@{PRIMARY}:{PORT},{STANDBY}:{PORT}/nekton?sslmode=disable&target_session_attrs=read-write"
    );
    let state = tempfile::tempdir().unwrap();
    let db = nekton::server::Database::open(Some(&url), state.path(), 10)
        .await
        .expect("opening the database through the multi-host URL");
    assert_eq!(db.pool.connect_options().get_host(), PRIMARY);
    let (running, client) = common::start_on(&db.pool, state.path()).await;
    let hello = client.push_module(guests::hello()).await.unwrap().digest;
    let spec = JobSpec {
        module: Some(hello),
        ..Default::default()
    };

    // A client that submits job after job, retrying each (same idempotency key) until it is
    // answered 201; it records what was accepted.
    let submitter = {
        let client = client.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            let mut accepted = BTreeMap::new();
            let mut refused = 0u32;
            for i in 0..60 {
                let key = format!("failover-{i}");
                let deadline = Instant::now() + Duration::from_secs(90);
                loop {
                    match client.submit(&spec, Some(&key)).await {
                        Ok(job) => {
                            accepted.insert(key, job.id);
                            break;
                        }
                        Err(e) => {
                            refused += 1;
                            assert!(Instant::now() < deadline, "{key} never accepted: {e:#}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (accepted, refused)
        })
    };

    // After a few accepted jobs: the primary dies, the standby is promoted.
    tokio::time::sleep(Duration::from_millis(800)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(primary.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("killing the primary's postmaster");
    let killed_at = Instant::now();
    let mut conn = superuser(&standby).await;
    conn.execute("SELECT pg_promote(true, 60)").await.unwrap();
    drop(conn);

    let (accepted, refused) = submitter.await.expect("the submitter");
    println!(
        "failover: {} accepted, {refused} refused attempts meanwhile, pool on {}",
        accepted.len(),
        db.pool.connect_options().get_host()
    );
    assert_eq!(accepted.len(), 60);
    assert_eq!(
        db.pool.connect_options().get_host(),
        STANDBY,
        "the pool did not follow the promoted standby"
    );

    // Every accepted job is on the new primary and runs to its end, once.
    for (key, id) in &accepted {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match client.get_job(*id).await {
                Ok(job) if job.state.is_terminal() => {
                    assert_eq!(job.state, JobState::Succeeded, "{key}: {job:?}");
                    break;
                }
                Ok(_) => {}
                Err(e) => assert!(
                    !e.to_string().contains("404"),
                    "{key}: accepted job {id} is gone after the failover: {e:#}"
                ),
            }
            assert!(
                Instant::now() < deadline,
                "{key}: job {id} did not finish after the failover"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 60, "one job per idempotency key");
    println!(
        "failover: all jobs finished {:?} after the kill",
        killed_at.elapsed()
    );

    phase("checked");
    running.shutdown().await.unwrap();
    phase("nekton stopped");
    db.close().await;
    standby.stop().await;
    drop(primary);
    phase("servers stopped");
}
