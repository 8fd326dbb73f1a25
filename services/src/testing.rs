//! Test support: a fresh, empty PostgreSQL database for every test.
//!
//! [`TestDb::new`] creates a uniquely named database and returns a pool on it, plus its connect
//! options and URL (for a second pool, a `LISTEN` connection or a child process). Where the
//! database lives:
//!
//! - `NEKTON_TEST_DATABASE_URL` set: on that server (the URL's user must be allowed to create
//!   databases). Test databases older than six hours, left by earlier runs, are dropped there.
//! - otherwise: on ONE embedded server per test process ([`crate::pg::EmbeddedPostgres`], fsync
//!   off), started on first use in `/tmp/nekton-test-pg-<pid>-*`, stopped and removed when the
//!   process exits. Directories of test processes that died without cleaning up are removed by
//!   the next run.
//!
//! No migrations are run: callers apply the schema they need to [`TestDb::pool`]. Each
//! `#[tokio::test]` has its own runtime; the shared server does not depend on any runtime, and
//! pools are created per test inside the test's runtime.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

use crate::pg::{EmbeddedOptions, EmbeddedPostgres};

/// Environment variable naming an existing server to create test databases on.
pub const TEST_DATABASE_URL_ENV: &str = "NEKTON_TEST_DATABASE_URL";

/// Prefix of every test database name.
pub const TEST_DATABASE_PREFIX: &str = "nekton_test_";

const TEMP_PREFIX: &str = "nekton-test-pg-";
const STALE_DATABASE_AGE: Duration = Duration::from_secs(6 * 3600);

/// The server test databases are created on, shared by all tests of a process.
enum Server {
    External { admin: PgConnectOptions },
    Embedded { pg: EmbeddedPostgres, root: PathBuf },
}

impl Server {
    fn admin_options(&self) -> PgConnectOptions {
        match self {
            Server::External { admin } => admin.clone(),
            Server::Embedded { pg, .. } => pg.connect_options("postgres"),
        }
    }

    fn database_options(&self, name: &str) -> PgConnectOptions {
        self.admin_options().database(name)
    }

    fn database_url(&self, name: &str) -> String {
        match self {
            Server::External { admin } => admin.clone().database(name).to_url_lossy().to_string(),
            Server::Embedded { pg, .. } => pg.url(name),
        }
    }
}

static SERVER: OnceCell<Result<Server, String>> = OnceCell::const_new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh, empty database and a pool on it.
pub struct TestDb {
    /// A pool on the test database (at most 10 connections).
    pub pool: PgPool,
    name: String,
    options: PgConnectOptions,
    url: String,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish()
    }
}

impl TestDb {
    /// Creates a fresh database; panics with the reason if that is impossible (no PostgreSQL
    /// binaries, bad `NEKTON_TEST_DATABASE_URL`, ...): a test must fail, not skip.
    pub async fn new() -> TestDb {
        match Self::try_new().await {
            Ok(db) => db,
            Err(e) => panic!("cannot create a test database: {e:#}"),
        }
    }

    /// Creates a fresh database.
    pub async fn try_new() -> anyhow::Result<TestDb> {
        let server = SERVER
            .get_or_init(|| async { init_server().await.map_err(|e| format!("{e:#}")) })
            .await
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))?;

        let name = unique_name();
        let mut admin = PgConnection::connect_with(&server.admin_options())
            .await
            .context("connecting to the test PostgreSQL server")?;
        crate::pg::create_database_on(&mut admin, &name)
            .await
            .with_context(|| format!("creating test database {name}"))?;
        let _ = admin.close().await;

        let options = server.database_options(&name);
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .with_context(|| format!("connecting to test database {name}"))?;
        Ok(TestDb {
            pool,
            url: server.database_url(&name),
            name,
            options,
        })
    }

    /// The pool on the test database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The database's name (`nekton_test_…`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connect options for the test database (for a second pool or a `PgListener`).
    pub fn connect_options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// A URL for the test database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new single connection to the test database.
    pub async fn connect(&self) -> anyhow::Result<PgConnection> {
        PgConnection::connect_with(&self.options)
            .await
            .with_context(|| format!("connecting to test database {}", self.name))
    }
}

/// A pool on a fresh, empty database (see [`TestDb::new`]).
pub async fn test_pool() -> PgPool {
    TestDb::new().await.pool
}

/// `nekton_test_<unix seconds>_<pid>_<n>`: unique across processes and machines sharing a
/// server (together with the clock), and datable for the stale-database sweep.
fn unique_name() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{TEST_DATABASE_PREFIX}{secs}_{}_{}_{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos & 0xffff
    )
}

async fn init_server() -> anyhow::Result<Server> {
    match std::env::var(TEST_DATABASE_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => {
            let admin = PgConnectOptions::from_str(url.trim())
                .with_context(|| format!("parsing {TEST_DATABASE_URL_ENV}"))?;
            drop_stale_databases(&admin).await;
            Ok(Server::External { admin })
        }
        _ => start_embedded().await,
    }
}

async fn start_embedded() -> anyhow::Result<Server> {
    let tmp = Path::new("/tmp");
    sweep_stale_dirs(tmp);
    let root = tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
        .tempdir_in(tmp)
        .context("creating a temporary directory for the test PostgreSQL server")?
        .keep();
    let pg = match EmbeddedPostgres::start(&root, EmbeddedOptions::for_tests()).await {
        Ok(pg) => pg,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&root);
            return Err(e).context("starting the embedded PostgreSQL server for tests");
        }
    };
    // SAFETY: atexit only stores the function pointer; `stop_embedded_at_exit` is a plain
    // `extern "C" fn()` that does not unwind (it catches panics).
    let registered = unsafe { libc::atexit(stop_embedded_at_exit) };
    if registered != 0 {
        tracing::warn!("atexit registration failed; the test server stops by its death signal");
    }
    Ok(Server::Embedded { pg, root })
}

/// Stops the shared test server and removes its directory when the test process exits.
extern "C" fn stop_embedded_at_exit() {
    let _ = std::panic::catch_unwind(|| {
        if let Some(Ok(Server::Embedded { pg, root })) = SERVER.get() {
            pg.stop_blocking();
            let _ = std::fs::remove_dir_all(root);
        }
    });
}

/// Removes `/tmp/nekton-test-pg-<pid>-*` directories whose test process is gone.
fn sweep_stale_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// Drops `nekton_test_*` databases older than six hours on an external server (best effort).
async fn drop_stale_databases(admin: &PgConnectOptions) {
    let Ok(mut conn) = PgConnection::connect_with(admin).await else {
        return;
    };
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_catalog.pg_database WHERE starts_with(datname, $1)",
    )
    .bind(TEST_DATABASE_PREFIX)
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for name in names {
        let created = name
            .strip_prefix(TEST_DATABASE_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(created) = created
            && now.saturating_sub(created) > STALE_DATABASE_AGE.as_secs()
        {
            let sql = format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                name.replace('"', "\"\"")
            );
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await;
        }
    }
    let _ = conn.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_test_db_is_fresh_and_separate() {
        let a = TestDb::new().await;
        let b = TestDb::new().await;
        assert_ne!(a.name(), b.name());
        sqlx::raw_sql("CREATE TABLE only_in_a (x int)")
            .execute(a.pool())
            .await
            .expect("create table in a");
        let tables_in_b: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'public'",
        )
        .fetch_one(b.pool())
        .await
        .expect("count tables in b");
        assert_eq!(tables_in_b, 0, "a fresh database has no tables");
        let db: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(a.pool())
            .await
            .expect("current_database");
        assert_eq!(db, a.name());

        // The URL and the connect options reach the same database, and LISTEN/NOTIFY works
        // across them.
        let by_url = PgPool::connect(a.url()).await.expect("connect by url");
        let db: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&by_url)
            .await
            .expect("current_database by url");
        assert_eq!(db, a.name());
        let mut listener = sqlx::postgres::PgListener::connect_with(a.pool())
            .await
            .expect("listener");
        listener.listen("test_channel").await.expect("listen");
        sqlx::query("SELECT pg_notify('test_channel', 'hello')")
            .execute(&by_url)
            .await
            .expect("notify");
        let note = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("notification in time")
            .expect("notification");
        assert_eq!(note.payload(), "hello");
    }

    #[tokio::test]
    async fn test_pool_works_from_another_runtime() {
        // A second #[tokio::test] (another runtime) shares the process-wide server.
        let pool = test_pool().await;
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&pool)
            .await
            .expect("select 1");
        assert_eq!(one, 1);
    }
}
