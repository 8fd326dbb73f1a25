//! The client side of the `nekton` binary: a typed HTTP client for the v1 API ([`client`]) and the
//! user-facing commands built on it ([`commands`]): `run`, `jobs ls|get|cancel|logs|artifacts`,
//! `batch submit`, `module push`, `image pull|ls|rm|import|gc` and
//! `webhook create|ls|rm|deliveries|redeliver`.
//!
//! `main.rs` wires them in with one enum variant and one call:
//!
//! ```ignore
//! #[derive(clap::Subcommand)]
//! enum Command {
//!     // ... serve, api, worker, migrate ...
//!     #[command(flatten)]
//!     Client(nekton::cli::ClientCommand),
//! }
//! // in main: Command::Client(cmd) => std::process::exit(nekton::cli::execute_or_report(cmd).await),
//! ```

/// `println!` that returns the write error instead of panicking, so a closed pipe
/// (`nekton jobs ls | head -1`) ends the command quietly (see [`commands::is_broken_pipe`]).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        writeln!(::std::io::stdout().lock(), $($arg)*)
    }};
}

/// `print!` that returns the write error instead of panicking (see [`outln!`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let mut out = ::std::io::stdout().lock();
        write!(out, $($arg)*).and_then(|()| out.flush())
    }};
}

pub mod admin;
pub mod artifacts;
pub mod client;
pub mod commands;
pub mod credentials;
pub mod grade;
pub mod image;
pub mod webhook;

pub use client::{
    ApiError, BatchFilter, BatchStreamEvent, Client, DEFAULT_SERVER, JobFilter, LogStreamEvent,
    StdStream, decode_log_event,
};
pub use commands::{
    BatchArgs, BatchCommand, ClientCommand, JobsArgs, JobsCommand, ModuleArgs, ModuleCommand,
    RunArgs, ServerArgs, execute, execute_or_report, exit_code_for, is_broken_pipe,
};
