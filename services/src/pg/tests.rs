//! Tests of the embedded server against the machine's real PostgreSQL binaries. They need
//! `initdb`/`postgres` (`apt-get install postgresql`) and fail, not skip, without them. Some
//! check the root-specific behaviour and require running as root, as CI does.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use super::process::is_alive;
use super::*;

fn temp_root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("nekton-pgt-")
        .tempdir_in("/tmp")
        .expect("create temp dir in /tmp")
}

async fn select_one(pg: &EmbeddedPostgres) -> i32 {
    let mut conn = PgConnection::connect_with(&pg.connect_options("postgres"))
        .await
        .expect("connect to the embedded server");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .expect("SELECT 1");
    conn.close().await.expect("close");
    one
}

async fn wait_until_gone(pid: i32) -> bool {
    process::wait_gone(pid, Duration::from_secs(10)).await
}

fn require_root(test: &str) {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "{test} checks the behaviour as root and must run as root (CI does)"
    );
}

#[tokio::test]
async fn start_query_stop_restart() {
    let dir = temp_root();
    let t0 = Instant::now();
    let pg = EmbeddedPostgres::start(dir.path(), EmbeddedOptions::for_tests())
        .await
        .expect("first start");
    let first_start = t0.elapsed();
    assert!(pg.initialized_cluster(), "the first start runs initdb");
    assert_eq!(select_one(&pg).await, 1);
    assert!(pg.data_dir().join("PG_VERSION").is_file());
    assert!(
        !pg.data_root().join(INITDB_DIR).exists(),
        "initdb's work directory is renamed away"
    );

    let pid = pg.pid();
    let socket = pg.socket_path();
    let pid_file = pg.data_dir().join("postmaster.pid");
    assert!(socket.exists(), "socket {} exists", socket.display());
    assert!(is_alive(pid));
    // Only the Unix socket: no TCP listener.
    let mut conn = PgConnection::connect_with(&pg.connect_options("postgres"))
        .await
        .expect("connect");
    let listen: String = sqlx::query_scalar("SHOW listen_addresses")
        .fetch_one(&mut conn)
        .await
        .expect("show listen_addresses");
    assert_eq!(listen, "");
    conn.close().await.expect("close");

    let t1 = Instant::now();
    pg.stop().await;
    let stop_time = t1.elapsed();
    assert!(!is_alive(pid), "server process {pid} is gone after stop");
    assert!(!socket.exists(), "socket is removed after stop");
    assert!(!pid_file.exists(), "postmaster.pid is removed after stop");

    let t2 = Instant::now();
    let pg = EmbeddedPostgres::start(dir.path(), EmbeddedOptions::for_tests())
        .await
        .expect("second start");
    let second_start = t2.elapsed();
    assert!(!pg.initialized_cluster(), "no second initdb");
    assert_eq!(select_one(&pg).await, 1);
    eprintln!(
        "timing: first start (initdb + start) {first_start:?}, stop {stop_time:?}, \
         restart {second_start:?}"
    );
    pg.stop().await;
}

#[tokio::test]
async fn durable_defaults_start_too() {
    // The `serve` settings (fsync on, synchronous commit on, 200 connections, 128MB).
    let dir = temp_root();
    let t0 = Instant::now();
    let pg = EmbeddedPostgres::start(dir.path(), EmbeddedOptions::default())
        .await
        .expect("start with serve defaults");
    let elapsed = t0.elapsed();
    let mut conn = PgConnection::connect_with(&pg.connect_options("postgres"))
        .await
        .expect("connect");
    for (name, want) in [
        ("fsync", "on"),
        ("synchronous_commit", "on"),
        ("max_connections", "200"),
        ("shared_buffers", "128MB"),
        ("server_encoding", "UTF8"),
    ] {
        let got: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&mut conn)
            .await
            .expect("show setting");
        assert_eq!(got, want, "{name}");
    }
    conn.close().await.expect("close");
    eprintln!("timing: first start with fsync (initdb + start) {elapsed:?}");
    pg.stop().await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "root tier: checks the behaviour as root; run with --features root-tests as root (scripts/test.sh does)"
)]
async fn runs_as_unprivileged_user_when_root() {
    require_root("runs_as_unprivileged_user_when_root");
    let dir = temp_root();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // Like `<state dir>/postgres` under a state dir that does not exist yet: the missing state
    // dir must be created traversable for the server's account.
    let root = dir.path().join("state").join("postgres");
    let pg = EmbeddedPostgres::start(&root, EmbeddedOptions::for_tests())
        .await
        .expect("start");
    let state_mode = std::fs::metadata(dir.path().join("state"))
        .expect("state dir")
        .mode();
    assert_ne!(
        state_mode & 0o001,
        0,
        "the created state dir is traversable"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", pg.pid())).expect("status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    let uid: u32 = uid_line
        .split_whitespace()
        .nth(1)
        .and_then(|u| u.parse().ok())
        .expect("uid");
    assert_ne!(uid, 0, "the server must not run as root");
    let expected = account::server_account().expect("account");
    assert_eq!(uid, expected.uid.as_raw());
    let owner = std::fs::metadata(pg.data_dir()).expect("data dir").uid();
    assert_eq!(
        owner, uid,
        "the data directory belongs to the server's user"
    );
    let mode = std::fs::metadata(pg.data_root()).expect("root").mode() & 0o777;
    assert_eq!(mode, 0o700);
    pg.stop().await;
}

#[tokio::test]
async fn second_start_stops_a_running_server() {
    let dir = temp_root();
    let first = EmbeddedPostgres::start(dir.path(), EmbeddedOptions::for_tests())
        .await
        .expect("first start");
    let first_pid = first.pid();
    // As if the first owner were gone but its server still ran: a second start on the same data
    // root stops that server and starts its own.
    let second = EmbeddedPostgres::start(dir.path(), EmbeddedOptions::for_tests())
        .await
        .expect("second start while the first server runs");
    assert_ne!(second.pid(), first_pid);
    assert!(
        wait_until_gone(first_pid).await,
        "the first server was stopped"
    );
    assert!(!first.is_running());
    assert_eq!(select_one(&second).await, 1);
    drop(first); // must not disturb the second server
    assert_eq!(select_one(&second).await, 1);
    second.stop().await;
}

#[tokio::test]
async fn stale_pid_files_do_not_block_a_start() {
    let dir = temp_root();
    let pg = EmbeddedPostgres::start(dir.path(), EmbeddedOptions::for_tests())
        .await
        .expect("start");
    let pid_file = pg.data_dir().join("postmaster.pid");
    let stale = std::fs::read_to_string(&pid_file).expect("read postmaster.pid");
    let owner = std::fs::metadata(&pid_file).expect("pid file").uid();
    let dead_pid = pg.pid();
    pg.stop().await;
    assert!(!is_alive(dead_pid));

    // A pid file of a dead server: PostgreSQL replaces it itself.
    std::fs::write(&pid_file, &stale).expect("write stale postmaster.pid");
    std::os::unix::fs::lchown(&pid_file, Some(owner), None).expect("chown");
    let pg = EmbeddedPostgres::start(dir.path(), EmbeddedOptions::for_tests())
        .await
        .expect("start over a stale pid file of a dead process");
    assert_eq!(select_one(&pg).await, 1);
    pg.stop().await;

    // A pid file whose pid now belongs to an unrelated live process (pid 1): removed by us,
    // since PostgreSQL would refuse to start.
    let recycled = stale.replacen(&dead_pid.to_string(), "1", 1);
    std::fs::write(&pid_file, &recycled).expect("write recycled postmaster.pid");
    std::os::unix::fs::lchown(&pid_file, Some(owner), None).expect("chown");
    let pg = EmbeddedPostgres::start(dir.path(), EmbeddedOptions::for_tests())
        .await
        .expect("start over a pid file naming an unrelated process");
    assert_eq!(select_one(&pg).await, 1);
    pg.stop().await;
}

#[tokio::test]
async fn a_pid_file_naming_a_later_process_in_the_data_dir_is_not_a_server() {
    let dir = temp_root();
    let pg = EmbeddedPostgres::start(dir.path(), EmbeddedOptions::for_tests())
        .await
        .expect("start");
    let pid_file = pg.data_dir().join("postmaster.pid");
    let stale = std::fs::read_to_string(&pid_file).expect("read postmaster.pid");
    let owner = std::fs::metadata(&pid_file).expect("pid file").uid();
    let data_dir = pg.data_dir().to_path_buf();
    let dead_pid = pg.pid();
    pg.stop().await;
    // A process that took the dead server's pid over and happens to work in the data directory
    // (the cwd check alone would take it for the server and signal it): it started after the
    // time the pid file records, so it is not the server.
    let mut other = std::process::Command::new("sleep")
        .arg("60")
        .current_dir(&data_dir)
        .spawn()
        .expect("spawn sleep (coreutils)");
    let mut lines: Vec<String> = stale.lines().map(str::to_string).collect();
    lines[0] = other.id().to_string();
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 3600;
    lines[2] = hour_ago.to_string();
    std::fs::write(&pid_file, lines.join("\n") + "\n").expect("write postmaster.pid");
    std::os::unix::fs::lchown(&pid_file, Some(owner), None).expect("chown");
    assert_ne!(other.id() as i32, dead_pid);
    let pg = EmbeddedPostgres::start(dir.path(), EmbeddedOptions::for_tests())
        .await
        .expect("start over a pid file naming a later process");
    assert_eq!(select_one(&pg).await, 1);
    assert!(
        other.try_wait().expect("try_wait").is_none(),
        "the unrelated process was not signalled"
    );
    pg.stop().await;
    other.kill().expect("kill sleep");
    other.wait().expect("reap sleep");
}

#[test]
fn lock_files_name_pid_and_start_time() {
    let dir = temp_root();
    let path = dir.path().join("postmaster.pid");
    std::fs::write(&path, "4242\n/data\n1700000000\n5432\n/run\n").expect("write");
    assert_eq!(
        lock_file_owner(&path),
        Some((
            4242,
            Some(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        ))
    );
    // A standalone backend's negated pid; no start time line.
    std::fs::write(&path, "-4242\n/data\n").expect("write");
    assert_eq!(lock_file_owner(&path), Some((4242, None)));
    for bad in ["", "0\n", "x\n", "-2147483648\n"] {
        std::fs::write(&path, bad).expect("write");
        assert_eq!(lock_file_owner(&path), None, "{bad:?}");
    }
}

#[tokio::test]
async fn drop_stops_the_server() {
    let dir = temp_root();
    let pg = EmbeddedPostgres::start(dir.path(), EmbeddedOptions::for_tests())
        .await
        .expect("start");
    let pid = pg.pid();
    let socket = pg.socket_path();
    drop(pg);
    assert!(!is_alive(pid), "server process {pid} is gone after drop");
    assert!(!socket.exists(), "socket is removed after drop");
}

const HELPER_ENV: &str = "NEKTON_PG_TEST_HELPER_ROOT";

/// Not a test on its own: when re-executed by `server_dies_with_its_owner` with the helper
/// environment variable set, it starts a server, reports its pid and waits to be killed.
#[tokio::test]
async fn helper_start_server_and_wait() {
    let Some(root) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let root = PathBuf::from(root);
    let pg = EmbeddedPostgres::start(&root, EmbeddedOptions::for_tests())
        .await
        .expect("helper start");
    std::fs::write(root.join("helper.pid"), pg.pid().to_string()).expect("write helper.pid");
    tokio::time::sleep(Duration::from_secs(120)).await;
    pg.stop().await;
}

#[tokio::test]
async fn server_dies_with_its_owner() {
    let dir = temp_root();
    let exe = std::env::current_exe().expect("current exe");
    let module = module_path!()
        .split_once("::")
        .map(|(_, m)| m)
        .unwrap_or(module_path!());
    let mut helper = std::process::Command::new(exe)
        .args([
            "--exact",
            &format!("{module}::helper_start_server_and_wait"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn helper");
    let pid_path = dir.path().join("helper.pid");
    let deadline = Instant::now() + Duration::from_secs(60);
    let server_pid: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        if let Ok(Some(status)) = helper.try_wait() {
            panic!("helper exited early: {status}");
        }
        assert!(Instant::now() < deadline, "helper did not start a server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(is_alive(server_pid));
    helper.kill().expect("SIGKILL helper");
    helper.wait().expect("reap helper");
    assert!(
        wait_until_gone(server_pid).await,
        "the server {server_pid} must die with its owner (parent-death signal)"
    );
    // The next owner starts on the same data root.
    let pg = EmbeddedPostgres::start(dir.path(), EmbeddedOptions::for_tests())
        .await
        .expect("start after the owner was killed");
    assert!(!pg.initialized_cluster());
    assert_eq!(select_one(&pg).await, 1);
    pg.stop().await;
}

#[tokio::test]
async fn missing_binaries_give_install_instructions() {
    let empty = temp_root();
    let options = EmbeddedOptions {
        search: BinarySearch::new(
            vec![empty.path().to_path_buf()],
            vec![empty.path().to_path_buf()],
        ),
        ..EmbeddedOptions::for_tests()
    };
    let data = temp_root();
    let err = EmbeddedPostgres::start(data.path(), options)
        .await
        .expect_err("no binaries in an empty search path");
    assert!(matches!(err, PgError::BinariesNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("apt-get install postgresql"), "{msg}");
    assert!(msg.contains("--database-url"), "{msg}");
    assert!(msg.contains(&empty.path().display().to_string()), "{msg}");
}

#[test]
fn finds_binaries_on_the_machine_and_by_lib_root() {
    let found = BinarySearch::system().find().expect("PostgreSQL binaries");
    assert!(found.major_version() >= 10, "{found:?}");
    // Only the library root, as on a stock Debian/Ubuntu with nothing on PATH.
    let by_root = BinarySearch::new(Vec::new(), vec![PathBuf::from(DEFAULT_LIB_ROOT)]).find();
    if Path::new(DEFAULT_LIB_ROOT).is_dir() {
        let by_root = by_root.expect("binaries under /usr/lib/postgresql");
        assert!(by_root.postgres.starts_with(DEFAULT_LIB_ROOT));
    }
}

#[tokio::test]
async fn long_data_root_is_refused_clearly() {
    let dir = temp_root();
    let long = dir.path().join("a".repeat(60)).join("b".repeat(30));
    let err = EmbeddedPostgres::start(&long, EmbeddedOptions::for_tests())
        .await
        .expect_err("socket path too long");
    assert!(matches!(err, PgError::SocketPathTooLong { .. }), "{err:?}");
    assert!(err.to_string().contains("shorter state directory"), "{err}");
}

#[tokio::test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "root tier: checks the behaviour as root; run with --features root-tests as root (scripts/test.sh does)"
)]
async fn unreachable_data_root_names_the_fix() {
    require_root("unreachable_data_root_names_the_fix");
    let dir = temp_root();
    let closed = dir.path().join("closed");
    std::fs::create_dir(&closed).expect("mkdir");
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    // The temp dir itself is 0700 as well; open it so the error is about `closed`.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let err = EmbeddedPostgres::start(closed.join("pg"), EmbeddedOptions::for_tests())
        .await
        .expect_err("unreachable data root");
    assert!(matches!(err, PgError::NotTraversable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("--state-dir /var/lib/nekton"), "{msg}");
    assert!(msg.contains(&closed.display().to_string()), "{msg}");
}

#[tokio::test]
async fn creates_databases_idempotently() {
    let dir = temp_root();
    let pg = EmbeddedPostgres::start(dir.path(), EmbeddedOptions::for_tests())
        .await
        .expect("start");
    pg.create_database_if_missing("nekton")
        .await
        .expect("create");
    pg.create_database_if_missing("nekton")
        .await
        .expect("create again");
    pg.create_database_if_missing("Odd \"name\"")
        .await
        .expect("create with quotes");
    let mut conn = PgConnection::connect_with(&pg.connect_options("Odd \"name\""))
        .await
        .expect("connect to the new database");
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .expect("current_database");
    assert_eq!(db, "Odd \"name\"");
    conn.close().await.expect("close");
    let by_url = PgConnection::connect(&pg.url("nekton"))
        .await
        .expect("connect by url");
    by_url.close().await.expect("close");
    let err = pg
        .create_database_if_missing("")
        .await
        .expect_err("empty name");
    assert!(matches!(err, PgError::InvalidDatabaseName { .. }));
    pg.stop().await;
}

#[tokio::test]
async fn early_exit_reports_the_log() {
    let dir = temp_root();
    let options = EmbeddedOptions {
        settings: vec![("no_such_setting_xyz".into(), "1".into())],
        ..EmbeddedOptions::for_tests()
    };
    let err = EmbeddedPostgres::start(dir.path(), options)
        .await
        .expect_err("an unknown setting stops the server");
    assert!(
        matches!(err, PgError::ExitedDuringStartup { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("no_such_setting_xyz"), "{err}");
}
