//! The embedded PostgreSQL server: `nekton serve` without a database URL, and the test suites.
//!
//! [`EmbeddedPostgres::start`] runs a private server from the machine's own PostgreSQL binaries
//! (found on `PATH` or under `/usr/lib/postgresql/*/bin`, see [`BinarySearch`]) in a data root
//! directory that it owns:
//!
//! ```text
//! <data root>/            mode 0700, owned by the server's account
//!   data/                 the cluster (initdb'd once, as data.initdb/ and then renamed)
//!   run/.s.PGSQL.5432     the only way in: a Unix socket (no TCP listener)
//!   postgres.log          initdb's and the server's output
//! ```
//!
//! The server listens only on the Unix socket; clients connect as the `postgres` superuser with
//! trust authentication, so access is controlled by the socket directory's permissions (0700).
//! When nekton runs as root the server runs as the `postgres` system user (else `nobody`), since
//! PostgreSQL refuses to run as root. The server is a direct child of nekton (no pg_ctl) with a
//! parent-death signal, and is stopped by [`EmbeddedPostgres::stop`], by `Drop`, or by that signal
//! when nekton dies; a server left running on the same data root by an earlier process is
//! stopped before the new one starts.

mod account;
mod binaries;
mod error;
mod process;
pub mod supervisor;

#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{Connection, PgConnection};

pub use binaries::{BinarySearch, DEFAULT_LIB_ROOT, PgBinaries};
pub use error::PgError;

use account::Account;
use process::Supervised;

/// The superuser that initdb creates and that clients connect as.
pub const SUPERUSER: &str = "postgres";

/// The port number. There is no TCP listener; it only names the socket file `.s.PGSQL.5432`.
pub const PORT: u16 = 5432;

/// Longest socket path accepted (`sockaddr_un.sun_path` holds 108 bytes; keep a margin).
pub const MAX_SOCKET_PATH: usize = 100;

const DATA_DIR: &str = "data";
const INITDB_DIR: &str = "data.initdb";
const RUN_DIR: &str = "run";
const LOG_FILE: &str = "postgres.log";
const LOG_ROTATE_BYTES: u64 = 16 * 1024 * 1024;

/// How to run the embedded server.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Where to find `initdb` and `postgres`.
    pub search: BinarySearch,
    /// `false` skips every fsync (`initdb -N`, `fsync=off`, `full_page_writes=off`): a crash
    /// can corrupt the cluster. For tests only.
    pub fsync: bool,
    /// `synchronous_commit`; off loses the last few commits in a crash, never consistency.
    pub synchronous_commit: bool,
    /// `max_connections`.
    pub max_connections: u32,
    /// `shared_buffers`, in PostgreSQL's notation (`128MB`).
    pub shared_buffers: String,
    /// Further `name=value` settings passed with `-c`.
    pub settings: Vec<(String, String)>,
    /// How long to wait for the server to accept connections.
    pub start_timeout: Duration,
    /// How long a fast shutdown (SIGINT) may take before SIGQUIT.
    pub stop_timeout: Duration,
}

impl Default for EmbeddedOptions {
    /// Settings for `nekton serve`: durable, 200 connections, 128 MB of shared buffers.
    fn default() -> Self {
        EmbeddedOptions {
            search: BinarySearch::system(),
            fsync: true,
            synchronous_commit: true,
            max_connections: 200,
            shared_buffers: "128MB".into(),
            settings: Vec::new(),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(30),
        }
    }
}

impl EmbeddedOptions {
    /// Settings for tests: no fsync, asynchronous commit, smaller shared buffers.
    pub fn for_tests() -> Self {
        EmbeddedOptions {
            fsync: false,
            synchronous_commit: false,
            shared_buffers: "32MB".into(),
            ..Self::default()
        }
    }
}

/// Paths inside a data root.
#[derive(Debug, Clone)]
struct Layout {
    root: PathBuf,
    data: PathBuf,
    initdb: PathBuf,
    run: PathBuf,
    log: PathBuf,
}

impl Layout {
    fn new(root: PathBuf) -> Self {
        Layout {
            data: root.join(DATA_DIR),
            initdb: root.join(INITDB_DIR),
            run: root.join(RUN_DIR),
            log: root.join(LOG_FILE),
            root,
        }
    }

    fn socket(&self) -> PathBuf {
        self.run.join(format!(".s.PGSQL.{PORT}"))
    }
}

/// A running private PostgreSQL server. Stop it with [`EmbeddedPostgres::stop`]; dropping it
/// stops it too (immediate shutdown).
pub struct EmbeddedPostgres {
    layout: Layout,
    binaries: PgBinaries,
    child: Supervised,
    stop_timeout: Duration,
    initialized: bool,
}

impl std::fmt::Debug for EmbeddedPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedPostgres")
            .field("data_root", &self.layout.root)
            .field("pid", &self.child.pid())
            .field("version", &self.binaries.version)
            .finish()
    }
}

impl EmbeddedPostgres {
    /// Initialises (once) and starts a server in `data_root`, creating the directory if needed,
    /// and waits until it accepts connections. `data_root` must be dedicated to the server: it is
    /// made mode 0700 and, when nekton is root, chowned to the server's account.
    pub async fn start(
        data_root: impl AsRef<Path>,
        options: EmbeddedOptions,
    ) -> Result<Self, PgError> {
        let binaries = options.search.find()?;
        let account = account::server_account()?;
        let layout = prepare_root(data_root.as_ref(), &account)?;
        let log = open_log(&layout, &account)?;

        stop_stale_server(&layout, options.stop_timeout).await?;

        let initialized = !layout.data.join("PG_VERSION").is_file();
        if initialized {
            initdb(&layout, &binaries, &account, &options, &log).await?;
        }
        if account.switch {
            let owner = std::fs::metadata(&layout.data)
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
                .map_err(|e| PgError::io("inspect", &layout.data, e))?;
            if owner != account.uid.as_raw() {
                tracing::info!(data_dir = %layout.data.display(), user = %account.name,
                    "changing the owner of the PostgreSQL data directory");
                account::chown_tree(&account, &layout.data)?;
            }
        }

        let log_offset = log_len(&layout.log);
        let cmd = postgres_command(&layout, &binaries, &account, &options, &log)?;
        let started = Instant::now();
        let child = Supervised::spawn(cmd, &binaries.postgres)
            .await
            .map_err(|source| PgError::Spawn {
                binary: binaries.postgres.clone(),
                source,
            })?;
        let server = EmbeddedPostgres {
            layout,
            binaries,
            child,
            stop_timeout: options.stop_timeout,
            initialized,
        };
        server.wait_ready(options.start_timeout, log_offset).await?;
        tracing::info!(
            pid = server.pid(),
            version = %server.binaries.version,
            socket_dir = %server.layout.run.display(),
            initdb = server.initialized,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "embedded PostgreSQL is ready"
        );
        Ok(server)
    }

    /// Options for connecting to `database` over the Unix socket as the superuser. Host, port,
    /// user, database and TLS are set explicitly, so `PG*` environment variables cannot redirect
    /// them.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .socket(&self.layout.run)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
            .ssl_mode(PgSslMode::Disable)
            .application_name("nekton")
    }

    /// A `postgres://` URL for `database` (the socket directory percent-encoded as the host), for
    /// tools and child processes that take a URL.
    pub fn url(&self, database: &str) -> String {
        socket_url(&self.layout.run, database)
    }

    /// Creates `name` unless it exists (safe against a concurrent creator).
    pub async fn create_database_if_missing(&self, name: &str) -> Result<(), PgError> {
        validate_database_name(name)?;
        let sql_err = |action: String| {
            let socket_dir = self.layout.run.clone();
            move |source| PgError::Sql {
                action,
                socket_dir,
                source,
            }
        };
        let mut conn = PgConnection::connect_with(&self.connect_options("postgres"))
            .await
            .map_err(sql_err("connect".into()))?;
        create_database_on(&mut conn, name)
            .await
            .map_err(sql_err(format!("create database {name:?}")))?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Stops the server: fast shutdown (SIGINT: disconnect clients, checkpoint), escalating to
    /// SIGQUIT after the stop timeout and to SIGKILL five seconds later. Returns once the server
    /// process has exited (it removes its socket and postmaster.pid itself).
    pub async fn stop(self) {
        let pid = self.pid();
        if self.child.signal(Signal::SIGINT) {
            let exited = match self.child.wait_timeout(self.stop_timeout).await {
                Some(e) => Some(e),
                None => {
                    tracing::warn!(pid, timeout = ?self.stop_timeout,
                        "PostgreSQL did not finish a fast shutdown in time; sending SIGQUIT");
                    self.child.signal(Signal::SIGQUIT);
                    match self.child.wait_timeout(Duration::from_secs(5)).await {
                        Some(e) => Some(e),
                        None => {
                            tracing::warn!(pid, "PostgreSQL ignored SIGQUIT; sending SIGKILL");
                            self.child.signal(Signal::SIGKILL);
                            self.child.wait_timeout(Duration::from_secs(5)).await
                        }
                    }
                }
            };
            match exited {
                Some(e) if e.success => tracing::info!(pid, "embedded PostgreSQL stopped"),
                Some(e) => {
                    tracing::warn!(pid, status = %e.description, "embedded PostgreSQL stopped")
                }
                None => tracing::error!(pid, "embedded PostgreSQL could not be stopped"),
            }
        }
    }

    /// A future (not borrowing `self`) that resolves when the server process exits, for whatever
    /// reason, saying how it ended ("exit code 0", "killed by SIGKILL"). [`supervisor`] uses it
    /// to notice a crash.
    pub fn exit_watcher(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        self.child.exit_watcher()
    }

    /// Immediate shutdown (SIGQUIT) from synchronous code, blocking up to ~10 s. For exit paths
    /// that cannot await (atexit handlers); [`EmbeddedPostgres::stop`] is the orderly way.
    pub fn stop_blocking(&self) {
        self.child.kill_blocking();
    }

    /// The server's process id.
    pub fn pid(&self) -> i32 {
        self.child.pid()
    }

    /// Whether the server process is still running.
    pub fn is_running(&self) -> bool {
        self.child.exited().is_none()
    }

    /// The data root given to [`EmbeddedPostgres::start`] (absolute, symlinks resolved).
    pub fn data_root(&self) -> &Path {
        &self.layout.root
    }

    /// The cluster directory (`<data root>/data`).
    pub fn data_dir(&self) -> &Path {
        &self.layout.data
    }

    /// The directory that holds the Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.layout.run
    }

    /// The socket file itself.
    pub fn socket_path(&self) -> PathBuf {
        self.layout.socket()
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.layout.log
    }

    /// The binaries the server runs from.
    pub fn binaries(&self) -> &PgBinaries {
        &self.binaries
    }

    /// Whether this start ran initdb (a fresh cluster).
    pub fn initialized_cluster(&self) -> bool {
        self.initialized
    }

    async fn wait_ready(&self, timeout: Duration, log_offset: u64) -> Result<(), PgError> {
        let deadline = Instant::now() + timeout;
        let options = self.connect_options("postgres");
        loop {
            if let Some(exited) = self.child.exited() {
                return Err(PgError::ExitedDuringStartup {
                    binary: self.binaries.postgres.clone(),
                    status: exited.description,
                    log: self.layout.log.clone(),
                    tail: process::log_tail(&self.layout.log, log_offset),
                });
            }
            let last_error = if self.layout.socket().exists() {
                let attempt = tokio::time::timeout(
                    Duration::from_secs(5),
                    PgConnection::connect_with(&options),
                )
                .await;
                match attempt {
                    Ok(Ok(conn)) => {
                        let _ = conn.close().await;
                        return Ok(());
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "connection attempt timed out".into(),
                }
            } else {
                format!("{} does not exist yet", self.layout.socket().display())
            };
            if Instant::now() >= deadline {
                return Err(PgError::StartTimeout {
                    socket_dir: self.layout.run.clone(),
                    timeout,
                    last_error,
                    log: self.layout.log.clone(),
                    tail: process::log_tail(&self.layout.log, log_offset),
                });
            }
            // Returns early if the server exits meanwhile.
            let _ = self.child.wait_timeout(Duration::from_millis(25)).await;
        }
    }
}

/// A `postgres://` URL for a server listening in `socket_dir`.
pub fn socket_url(socket_dir: &Path, database: &str) -> String {
    format!(
        "postgres://{SUPERUSER}@{}:{PORT}/{}?sslmode=disable",
        percent_encode(&socket_dir.to_string_lossy()),
        percent_encode(database)
    )
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Quotes an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn validate_database_name(name: &str) -> Result<(), PgError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > 63 {
        "longer than 63 bytes"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(PgError::InvalidDatabaseName {
        name: name.to_string(),
        reason,
    })
}

/// `CREATE DATABASE name` unless it exists; a concurrent creator winning is not an error.
pub(crate) async fn create_database_on(
    conn: &mut PgConnection,
    name: &str,
) -> Result<(), sqlx::Error> {
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    if exists.is_some() {
        return Ok(());
    }
    let sql = format!("CREATE DATABASE {}", quote_ident(name));
    match sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
    {
        Ok(_) => Ok(()),
        // 42P04 duplicate_database; 23505 when two creators race on the catalog index.
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Creates the data root and run directory, checks the socket path and access for `account`.
fn prepare_root(data_root: &Path, account: &Account) -> Result<Layout, PgError> {
    let absolute =
        std::path::absolute(data_root).map_err(|e| PgError::io("resolve", data_root, e))?;
    // Missing ancestors get the default mode (the server's account must traverse them); only
    // the data root itself is private.
    if let Some(parent) = absolute.parent() {
        std::fs::create_dir_all(parent).map_err(|e| PgError::io("create directory", parent, e))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(&absolute) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && absolute.is_dir() => {}
        Err(e) => return Err(PgError::io("create directory", &absolute, e)),
    }
    let root =
        std::fs::canonicalize(&absolute).map_err(|e| PgError::io("resolve", &absolute, e))?;
    let layout = Layout::new(root);

    let socket = layout.socket();
    let Some(socket_str) = socket.to_str() else {
        return Err(PgError::InvalidDataRoot {
            path: layout.root.clone(),
            reason: "the path is not valid UTF-8".into(),
        });
    };
    if socket_str.contains(['"', '\n', '\r', ',']) {
        return Err(PgError::InvalidDataRoot {
            path: layout.root.clone(),
            reason: "the path contains a double quote, comma or line break".into(),
        });
    }
    if socket_str.len() >= MAX_SOCKET_PATH {
        return Err(PgError::SocketPathTooLong {
            len: socket_str.len(),
            path: socket,
            max: MAX_SOCKET_PATH,
        });
    }

    if account.switch {
        account::check_traversable(account, &layout.root)?;
    }
    std::fs::set_permissions(&layout.root, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| PgError::io("set permissions of", &layout.root, e))?;
    match std::fs::DirBuilder::new().mode(0o700).create(&layout.run) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(PgError::io("create directory", &layout.run, e)),
    }
    std::fs::set_permissions(&layout.run, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| PgError::io("set permissions of", &layout.run, e))?;
    if account.switch {
        account::chown(account, &layout.root)?;
        account::chown(account, &layout.run)?;
    }
    Ok(layout)
}

/// Opens the log for appending (rotating a large one to `postgres.log.1`).
fn open_log(layout: &Layout, account: &Account) -> Result<File, PgError> {
    if log_len(&layout.log) > LOG_ROTATE_BYTES {
        let old = layout.log.with_extension("log.1");
        std::fs::rename(&layout.log, &old).map_err(|e| PgError::io("rotate", &layout.log, e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&layout.log)
        .map_err(|e| PgError::io("open", &layout.log, e))?;
    if account.switch {
        account::chown(account, &layout.log)?;
    }
    Ok(file)
}

fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn log_stdio(log: &File) -> Result<Stdio, PgError> {
    log.try_clone()
        .map(Stdio::from)
        .map_err(|e| PgError::io("duplicate the handle of", LOG_FILE, e))
}

/// A command for one of the server binaries, as the server's account, with a clean environment
/// for locale and `PG*` variables.
fn base_command(
    binary: &Path,
    layout: &Layout,
    account: &Account,
    log: &File,
) -> Result<Command, PgError> {
    let mut cmd = Command::new(binary);
    cmd.stdin(Stdio::null())
        .stdout(log_stdio(log)?)
        .stderr(log_stdio(log)?)
        .current_dir(&layout.root)
        .env("LC_ALL", "C")
        .env("LANG", "C");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    if account.switch {
        use std::os::unix::process::CommandExt;
        cmd.uid(account.uid.as_raw()).gid(account.gid.as_raw());
        if let Some(home) = nix::unistd::User::from_uid(account.uid)
            .ok()
            .flatten()
            .map(|u| u.dir)
        {
            cmd.env("HOME", home);
        }
        cmd.env("USER", &account.name).env("LOGNAME", &account.name);
    }
    Ok(cmd)
}

/// Runs initdb into `data.initdb/` and renames it to `data/` once complete, so an interrupted
/// initdb never leaves a half-made cluster where a real one is expected.
async fn initdb(
    layout: &Layout,
    binaries: &PgBinaries,
    account: &Account,
    options: &EmbeddedOptions,
    log: &File,
) -> Result<(), PgError> {
    if layout.data.exists() {
        let empty = std::fs::read_dir(&layout.data)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(PgError::NotADataDirectory {
                path: layout.data.clone(),
            });
        }
        std::fs::remove_dir(&layout.data)
            .map_err(|e| PgError::io("remove empty directory", &layout.data, e))?;
    }
    if layout.initdb.exists() {
        tracing::info!(dir = %layout.initdb.display(), "removing an interrupted initdb");
        std::fs::remove_dir_all(&layout.initdb)
            .map_err(|e| PgError::io("remove", &layout.initdb, e))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&layout.initdb)
        .map_err(|e| PgError::io("create directory", &layout.initdb, e))?;
    if account.switch {
        account::chown(account, &layout.initdb)?;
    }

    let offset = log_len(&layout.log);
    let mut cmd = base_command(&binaries.initdb, layout, account, log)?;
    cmd.arg("-D")
        .arg(&layout.initdb)
        .arg("--auth=trust")
        .arg(format!("--username={SUPERUSER}"))
        .arg("--encoding=UTF8")
        .arg("--no-locale");
    if binaries.major_version() >= 14 {
        cmd.arg("--no-instructions");
    }
    if !options.fsync {
        cmd.arg("--no-sync");
    }
    let started = Instant::now();
    tracing::info!(binary = %binaries.initdb.display(), data_dir = %layout.data.display(),
        user = %account.name, "initialising the PostgreSQL cluster");
    let child = Supervised::spawn(cmd, &binaries.initdb)
        .await
        .map_err(|source| PgError::Spawn {
            binary: binaries.initdb.clone(),
            source,
        })?;
    let exited = child.wait().await;
    if !exited.success {
        return Err(PgError::InitdbFailed {
            binary: binaries.initdb.clone(),
            status: exited.description,
            data_dir: layout.data.clone(),
            log: layout.log.clone(),
            tail: process::log_tail(&layout.log, offset),
        });
    }
    std::fs::rename(&layout.initdb, &layout.data)
        .map_err(|e| PgError::io("rename initialised cluster to", &layout.data, e))?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "PostgreSQL cluster initialised"
    );
    Ok(())
}

fn postgres_command(
    layout: &Layout,
    binaries: &PgBinaries,
    account: &Account,
    options: &EmbeddedOptions,
    log: &File,
) -> Result<Command, PgError> {
    let mut cmd = base_command(&binaries.postgres, layout, account, log)?;
    let on_off = |b: bool| if b { "on" } else { "off" };
    let mut settings: Vec<(String, String)> = vec![
        ("listen_addresses".into(), String::new()),
        (
            "unix_socket_directories".into(),
            format!("\"{}\"", layout.run.display()),
        ),
        ("unix_socket_permissions".into(), "0700".into()),
        ("port".into(), PORT.to_string()),
        (
            "max_connections".into(),
            options.max_connections.to_string(),
        ),
        ("shared_buffers".into(), options.shared_buffers.clone()),
        (
            "synchronous_commit".into(),
            on_off(options.synchronous_commit).into(),
        ),
        ("logging_collector".into(), "off".into()),
        ("log_destination".into(), "stderr".into()),
        ("log_line_prefix".into(), "%m [%p] ".into()),
    ];
    if !options.fsync {
        settings.push(("fsync".into(), "off".into()));
        settings.push(("full_page_writes".into(), "off".into()));
    }
    settings.extend(options.settings.iter().cloned());
    cmd.arg("-D").arg(&layout.data);
    for (name, value) in settings {
        cmd.arg("-c").arg(format!("{name}={value}"));
    }
    Ok(cmd)
}

/// Stops a server that an earlier process left running on this data root (its postmaster.pid
/// names a live postmaster in this data directory), and removes lock files whose pid was
/// recycled by an unrelated process (PostgreSQL would refuse to start over those). Lock files of
/// dead processes are left for PostgreSQL, which replaces them itself. A process is named by its
/// [`Owner`](runtime_core::owner::Owner) (pid and start time), so neither the checks nor the
/// signals can reach a process that took the pid over meanwhile.
async fn stop_stale_server(layout: &Layout, timeout: Duration) -> Result<(), PgError> {
    let pid_file = layout.data.join("postmaster.pid");
    if let Some((pid, started)) = lock_file_owner(&pid_file)
        && let Some(owner) = process::owner_of(pid)
    {
        if process::is_postmaster_of(owner, started, &layout.data) {
            tracing::warn!(pid, data_dir = %layout.data.display(),
                "a PostgreSQL server from an earlier run is still running; stopping it");
            stop_foreign(owner, &layout.data, timeout).await?;
        } else {
            tracing::warn!(pid, file = %pid_file.display(),
                "removing a stale postmaster.pid whose pid now belongs to another process");
            remove_if_exists(&pid_file)?;
        }
    }
    let socket_lock = PathBuf::from(format!("{}.lock", layout.socket().display()));
    if let Some((pid, started)) = lock_file_owner(&socket_lock)
        && let Some(owner) = process::owner_of(pid)
        && !process::is_postmaster_of(owner, started, &layout.data)
    {
        tracing::warn!(pid, file = %socket_lock.display(),
            "removing a stale socket lock file whose pid now belongs to another process");
        remove_if_exists(&socket_lock)?;
        remove_if_exists(&layout.socket())?;
    }
    Ok(())
}

/// SIGINT, then SIGQUIT, then SIGKILL a postmaster that is not our child; no signal is sent
/// once `owner` is gone (its pid may be someone else's by then).
async fn stop_foreign(
    owner: runtime_core::owner::Owner,
    data_dir: &Path,
    timeout: Duration,
) -> Result<(), PgError> {
    let pid = owner.pid() as i32;
    let steps = [
        (Signal::SIGINT, timeout),
        (Signal::SIGQUIT, Duration::from_secs(5)),
        (Signal::SIGKILL, Duration::from_secs(5)),
    ];
    for (signal, wait) in steps {
        if !owner.is_alive() {
            return Ok(());
        }
        match kill(Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                return Err(PgError::StaleServer {
                    pid,
                    data_dir: data_dir.to_path_buf(),
                    detail: format!(" (sending {signal}: {e})"),
                });
            }
        }
        if process::wait_owner_gone(owner, wait).await {
            return Ok(());
        }
    }
    Err(PgError::StaleServer {
        pid,
        data_dir: data_dir.to_path_buf(),
        detail: String::new(),
    })
}

/// The pid in a PostgreSQL lock file (`postmaster.pid`, `.s.PGSQL.<port>.lock`: line 1) and the
/// start time it records (line 3, seconds since the epoch), if present.
fn lock_file_owner(path: &Path) -> Option<(i32, Option<std::time::SystemTime>)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    // postmaster.pid of a standalone backend holds the negated pid.
    let pid = Some(pid.unsigned_abs())
        .filter(|p| *p > 0)
        .and_then(|p| i32::try_from(p).ok())?;
    let started = lines
        .nth(1)
        .and_then(|l| l.trim().parse::<u64>().ok())
        .map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s));
    Some((pid, started))
}

fn remove_if_exists(path: &Path) -> Result<(), PgError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PgError::io("remove", path, e)),
    }
}
