//! The one error type of the embedded-PostgreSQL module.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while finding, initialising, starting or using the embedded
/// PostgreSQL server. Each variant names the binary, path or user involved; failures of the server
/// itself carry the tail of its log.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Neither `PATH` nor the versioned library directories hold `initdb` and `postgres`.
    #[error(
        "PostgreSQL server binaries (initdb and postgres) not found: searched {searched}. \
         Install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`; Fedora/RHEL: \
         `dnf install postgresql-server`; Alpine: `apk add postgresql`), or pass \
         --database-url to use an existing PostgreSQL server"
    )]
    BinariesNotFound {
        /// Human-readable list of what was searched.
        searched: String,
    },

    /// A binary was found but `--version` could not be run or understood.
    #[error("could not determine the version of {binary}: {detail}")]
    Version {
        /// The binary that was run.
        binary: PathBuf,
        /// What went wrong.
        detail: String,
    },

    /// A filesystem operation on the data root failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "create directory".
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The data root cannot be used as given (not UTF-8, contains a double quote, ...).
    #[error("unusable PostgreSQL data root {path}: {reason}")]
    InvalidDataRoot {
        /// The data root.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },

    /// The Unix socket path would exceed what `sockaddr_un` can hold.
    #[error(
        "the PostgreSQL socket path {path} is {len} bytes long, over the limit of {max} bytes \
         for Unix sockets; use a shorter state directory (e.g. `--state-dir /var/lib/nekton`)"
    )]
    SocketPathTooLong {
        /// The socket file that would be created.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// Running as root, but there is no unprivileged account to run PostgreSQL as.
    #[error(
        "PostgreSQL refuses to run as root and neither a `postgres` nor a `nobody` user \
         exists to run it as; create one (e.g. `useradd --system --user-group postgres`) or \
         run nekton as an unprivileged user"
    )]
    NoUnprivilegedUser,

    /// Looking up a user in the password database failed.
    #[error("could not look up user `{user}`: {source}")]
    UserLookup {
        /// The user name.
        user: String,
        /// The underlying error.
        #[source]
        source: nix::Error,
    },

    /// The unprivileged account cannot reach the data root.
    #[error(
        "the embedded PostgreSQL server runs as user `{user}` (PostgreSQL refuses to run as \
         root), but that user cannot enter {dir} (mode {mode:o}, owner uid {owner_uid}) on \
         the way to {data_root}; use a state directory that user can reach, e.g. \
         `--state-dir /var/lib/nekton`"
    )]
    NotTraversable {
        /// The account PostgreSQL would run as.
        user: String,
        /// The ancestor directory it cannot search.
        dir: PathBuf,
        /// Permission bits of that directory.
        mode: u32,
        /// Owner of that directory.
        owner_uid: u32,
        /// The data root.
        data_root: PathBuf,
    },

    /// The data directory exists but is not a PostgreSQL cluster.
    #[error(
        "{path} exists but is not a PostgreSQL data directory (no PG_VERSION); move it away \
         or choose another state directory"
    )]
    NotADataDirectory {
        /// The data directory.
        path: PathBuf,
    },

    /// A binary could not be started at all.
    #[error("could not run {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// `initdb` exited unsuccessfully.
    #[error("{binary} failed ({status}) initialising {data_dir}; end of {log}:\n{tail}")]
    InitdbFailed {
        /// The initdb binary.
        binary: PathBuf,
        /// How it exited.
        status: String,
        /// The directory it was initialising.
        data_dir: PathBuf,
        /// The log file its output went to.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },

    /// The server exited before it accepted connections.
    #[error("{binary} exited during startup ({status}); end of {log}:\n{tail}")]
    ExitedDuringStartup {
        /// The postgres binary.
        binary: PathBuf,
        /// How it exited.
        status: String,
        /// The server log.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },

    /// The server did not accept connections in time.
    #[error(
        "the PostgreSQL server did not accept connections on {socket_dir} within {timeout:?} \
         (last error: {last_error}); end of {log}:\n{tail}"
    )]
    StartTimeout {
        /// The socket directory that was polled.
        socket_dir: PathBuf,
        /// How long we waited.
        timeout: Duration,
        /// The last connection error.
        last_error: String,
        /// The server log.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },

    /// A server left running on this data directory (e.g. by a killed nekton) would not stop.
    #[error(
        "a PostgreSQL server (pid {pid}) is still running on {data_dir} and did not stop on \
         SIGINT, SIGQUIT or SIGKILL{detail}"
    )]
    StaleServer {
        /// Its pid, from postmaster.pid.
        pid: i32,
        /// The data directory.
        data_dir: PathBuf,
        /// Extra detail (e.g. a signal that could not be sent).
        detail: String,
    },

    /// A database name that PostgreSQL would not accept.
    #[error("invalid database name {name:?}: {reason}")]
    InvalidDatabaseName {
        /// The name.
        name: String,
        /// Why it is invalid.
        reason: &'static str,
    },

    /// An SQL operation against the embedded server failed.
    #[error("{action} on the embedded PostgreSQL server at {socket_dir}: {source}")]
    Sql {
        /// What was being done.
        action: String,
        /// The socket directory.
        socket_dir: PathBuf,
        /// The underlying error.
        #[source]
        source: sqlx::Error,
    },
}

impl PgError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        PgError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
