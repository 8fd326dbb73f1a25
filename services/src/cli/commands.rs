//! The client commands of the `nekton` binary: `run`, `jobs`, `batch`, `module`, `image` and
//! `webhook` (the last two in [`super::image`] and [`super::webhook`]).
//!
//! [`ClientCommand`] is flattened into the binary's subcommands; [`execute`] runs one and returns
//! the process exit code ([`execute_or_report`] also prints errors and picks their exit code).

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use super::client::{
    BatchFilter, BatchStreamEvent, Client, DEFAULT_SERVER, JobFilter, LogQuery, LogStreamEvent,
    StdStream, truncate_chars,
};
use crate::api::types::{
    Batch, BatchSpec, Encoding, InputFileSpec, Job, JobSpec, JobState, LimitsSpec, Module,
    NetworkMode, NetworkPolicy, NetworkSpec, OutcomeReason, OutcomeView, PreopenMode, PreopenSpec,
    RuntimeKind, WasmSpec,
};
use crate::model::LineStamper;

/// Exit code for jobs that ran out of wall-clock or CPU time (like `timeout(1)`).
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit code for jobs the service could not run, and for failures of the CLI itself
/// (like `docker run`).
pub const EXIT_SERVICE_ERROR: i32 = 125;
/// Exit code for jobs killed for exceeding their memory limit (128 + SIGKILL, like the OOM killer).
pub const EXIT_MEMORY_LIMIT: i32 = 137;
/// Exit code for jobs stopped for exceeding their output limit (128 + SIGXFSZ, what a process
/// exceeding its file-size limit dies of).
pub const EXIT_OUTPUT_LIMIT: i32 = 153;
/// Exit code for cancelled jobs (128 + SIGINT).
pub const EXIT_CANCELLED: i32 = 130;

const RUN_EXIT_STATUS_HELP: &str = "\
Exit status:
  nekton run exits with the job's own exit code when the program exited, otherwise:
    exited          the program's exit code (0-255; a code outside that range gives 1)
    signaled        128 + the signal number (e.g. 139 for SIGSEGV)
    wall_timeout    124 (like timeout(1))
    cpu_timeout     124 (CPU time or Wasm fuel used up)
    memory_limit    137 (128 + SIGKILL, like the kernel's OOM killer)
    output_limit    153 (128 + SIGXFSZ, like exceeding a file-size limit)
    cancelled       130 (128 + SIGINT)
    spec_error, image_error, worker_lost, internal_error, or a failure of nekton itself
                    125 (like docker run)
  For every outcome other than a plain exit, nekton prints on stderr:
    nekton: job <id> <state>: <reason>: <detail>

Ctrl-C once asks the server to cancel the job (nekton keeps streaming until it ends);
Ctrl-C twice detaches at once and leaves the job to the server.";

/// Where the API server is: shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// URL of the nekton API server.
    #[arg(
        long = "server",
        env = "NEKTON_SERVER",
        default_value = DEFAULT_SERVER,
        value_name = "URL",
        global = true
    )]
    pub server: String,
    /// API token (`nk_...`). Without it: the token `nekton login` saved for this server, else, for
    /// a server on this machine, the admin token its first start wrote to
    /// `<state-dir>/admin.token`.
    #[arg(
        long = "token",
        env = "NEKTON_TOKEN",
        value_name = "TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub token: Option<String>,
}

impl ServerArgs {
    /// A client for the chosen server, with the token [`ServerArgs::token`] finds.
    pub fn client(&self) -> Result<Client> {
        let token = self.find_token();
        Client::with_token(&self.server, token.as_deref())
    }

    /// The token to send: `--token`/`NEKTON_TOKEN`, the one saved by `nekton login` for this
    /// server, or a local server's `<state-dir>/admin.token` (readable by its owner only).
    pub fn find_token(&self) -> Option<String> {
        if let Some(t) = self
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            return Some(t.to_string());
        }
        if let Some(t) = super::credentials::load(&self.server) {
            return Some(t);
        }
        let local = reqwest::Url::parse(self.server.trim())
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .is_some_and(|h| {
                h == "localhost"
                    || h.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
                    || h == "[::1]"
            });
        if !local {
            return None;
        }
        let dir = std::env::var_os("NEKTON_STATE_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(crate::server::default_state_dir);
        std::fs::read_to_string(crate::server::admin_token_path(&dir))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    }
}

/// Commands that talk to a nekton API server (flatten into the binary's subcommands).
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process: boxing would only add noise
pub enum ClientCommand {
    /// Run a program as a job, stream its output live and exit with its exit code (like
    /// `docker run`).
    #[command(after_help = RUN_EXIT_STATUS_HELP)]
    Run(RunArgs),
    /// List, inspect and cancel jobs, and read their logs.
    Jobs(JobsArgs),
    /// Submit many jobs at once.
    Batch(BatchArgs),
    /// Upload Wasm modules.
    Module(ModuleArgs),
    /// Run a test suite (a job spec with a `tests` section, YAML or JSON) as one job: a live
    /// table of its cases; exits 0 only when all are accepted. `--junit FILE` writes a JUnit
    /// XML report.
    Test(super::grade::TestArgs),
    /// Pull, list, remove and import images on the server's worker host.
    Image(super::image::ImageArgs),
    /// Manage the tenant's webhook endpoints (job and batch completion events) and see their
    /// deliveries.
    Webhook(super::webhook::WebhookArgs),
    /// Create, list and change tenants and their quotas (admin).
    Tenant(super::admin::TenantArgs),
    /// Create, list and revoke API tokens (admin).
    Token(super::admin::TokenArgs),
    /// Save a token for --server (checked first), so later commands send it.
    Login(super::admin::LoginArgs),
    /// Forget the token saved for --server.
    Logout,
    /// Show your tenant and your token's scopes.
    Whoami,
    /// Your tenant's usage: jobs by outcome, CPU-seconds, memory byte-seconds, output bytes.
    Usage(super::admin::UsageArgs),
    /// The audit log: token, tenant and quota changes, cancels (admin).
    Audit(super::admin::AuditArgs),
    /// Print this client's version and the server's (API version, database migration level).
    /// Exits 1 (after printing the client's version) when the server cannot be asked.
    Version,
}

/// `nekton run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// What to run: a local Wasm file (an existing file that starts with the Wasm magic
    /// `\0asm`, or a path ending in `.wasm` or starting with `/`, `./` or `../`; it is uploaded
    /// first), an uploaded module's digest `sha256:<hex>`, or else an OCI image reference such as
    /// `alpine:3.20` or `127.0.0.1:5000/busybox:1` (pulled by the worker; Wasm images run on the
    /// Wasm backend, others as Linux containers).
    #[arg(value_name = "PROGRAM")]
    pub program: String,

    /// Arguments passed to the program: everything after PROGRAM (put nekton's own options
    /// before PROGRAM), optionally after `--`.
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,

    /// Set an environment variable in the job (repeatable). `-e NAME` alone copies NAME from
    /// this shell's environment.
    #[arg(short = 'e', long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,

    /// Read environment variables from a file (repeatable; `-e` wins over the files): one
    /// `NAME=VALUE` per line, `NAME` alone copies it from this shell, blank lines and lines
    /// starting with `#` are skipped (Docker's `--env-file` format).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,

    /// Send this process's standard input (read to its end) as the job's stdin.
    #[arg(short = 'i', long)]
    pub interactive: bool,

    /// Copy a local file into the job's input directory (repeatable). GUESTPATH is relative
    /// (Wasm jobs see it below /data); it defaults to the file's name.
    #[arg(long = "file", value_name = "LOCAL[:GUESTPATH]", value_parser = parse_file_arg)]
    pub files: Vec<FileArg>,

    /// Wall-clock limit: a number with its unit, ms, s, m or h (e.g. 1500ms, 2s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub wall_time: Option<u64>,

    /// CPU-time limit (containers): a number with its unit, ms, s, m or h (e.g. 500ms, 2s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub cpu_time: Option<u64>,

    /// Memory limit: bytes, or a number with K, M, G or T (binary: 64M = 64 MiB).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub memory: Option<u64>,

    /// Wasm fuel budget (about one unit per instruction).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub fuel: Option<u64>,

    /// Bytes kept per output stream: bytes, or a number with K, M, G or T.
    #[arg(long, value_name = "N", value_parser = parse_size)]
    pub output_bytes: Option<u64>,

    /// Maximum number of processes (containers).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub pids: Option<u64>,

    /// Network access: none (the default) or bridge (NAT egress; containers).
    #[arg(long, value_name = "MODE", value_parser = parse_wire_enum::<NetworkMode>)]
    pub network: Option<NetworkMode>,

    /// Bridge jobs: a destination the job may reach, `CIDR` or `CIDR:PORT` (repeat for more;
    /// implies `--network bridge`). With any, everything else the job sends is dropped except
    /// DNS to the worker's resolvers.
    #[arg(long, value_name = "CIDR[:PORT]")]
    pub egress: Vec<String>,

    /// Wasm jobs: preopen a directory of the job's (its files are in it) at a guest path
    /// (repeat for more, in order; replaces the default, the whole directory at `/`):
    /// `/data=input:ro` shows the job's `input/` read-only at `/data`; without `=DIR`, the whole
    /// directory; `:rw` (the default) or `:ro`.
    #[arg(long, value_name = "GUEST[=DIR][:ro]", value_parser = parse_preopen)]
    pub preopen: Vec<PreopenSpec>,

    /// Backend: auto (the default: Wasm programs go to Wasm), container or wasm.
    #[arg(long, value_name = "KIND", value_parser = parse_wire_enum::<RuntimeKind>)]
    pub runtime: Option<RuntimeKind>,

    /// Images: replace the image's entrypoint with this program (ARGS then replace its cmd);
    /// `--entrypoint ''` clears it, so ARGS are the whole command.
    #[arg(long, value_name = "PROGRAM")]
    pub entrypoint: Option<String>,

    /// Working directory inside the container (absolute).
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,

    /// User to run as inside the container: `uid[:gid]` or a name from the image.
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,

    /// Add a label (repeatable); `nekton jobs ls --label K=V` finds the job again.
    #[arg(long = "label", value_name = "K=V", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,

    /// Queue to submit to (default: `default`).
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,

    /// Priority within the queue, -1000..=1000; higher runs first (default 0).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i16>,

    /// Attempts allowed when the infrastructure fails (never for the job's own failures).
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,

    /// Makes the submission safe to retry: the same key returns the job created the first time.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,

    /// Print the job id and exit at once instead of streaming the job's output.
    #[arg(short = 'd', long)]
    pub detach: bool,
}

/// A `--file LOCAL[:GUESTPATH]` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileArg {
    pub local: PathBuf,
    pub guest: String,
}

/// `nekton jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub command: JobsCommand,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    Ls {
        /// Only jobs in this state: queued, scheduled, running, succeeded, failed, cancelled or
        /// error.
        #[arg(long, value_name = "STATE", value_parser = parse_state)]
        state: Option<JobState>,
        /// Only jobs with this label (repeatable: all must match).
        #[arg(long = "label", value_name = "K=V", value_parser = parse_key_value)]
        labels: Vec<(String, String)>,
        /// Only jobs of this batch.
        #[arg(long, value_name = "ID")]
        batch: Option<Uuid>,
        /// Jobs per page (the server caps it).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Start at this cursor (printed when more jobs are available).
        #[arg(long, value_name = "CURSOR", conflicts_with = "all")]
        cursor: Option<String>,
        /// Follow the pages to the end and list every matching job.
        #[arg(long)]
        all: bool,
        /// Print the jobs as JSON (one array) instead of a table (same as `--format json`).
        #[arg(long, conflicts_with_all = ["format", "quiet"])]
        json: bool,
        /// Print only the jobs' ids, one per line.
        #[arg(short = 'q', long, conflicts_with = "format")]
        quiet: bool,
        /// `table` (the default), `json`, or a template such as `'{{.id}} {{.state}}'` applied to
        /// each job's JSON fields (nested with dots: `{{.outcome.reason}}`).
        #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
        format: Option<Format>,
    },
    /// Print jobs: as JSON by default.
    Get {
        /// The jobs' ids (as printed by `nekton run -d` or `nekton jobs ls`).
        #[arg(value_name = "ID", required = true)]
        ids: Vec<Uuid>,
        /// `json` (the default), `table`, or a template such as `'{{.id}} {{.state}}'`.
        #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
        format: Option<Format>,
    },
    /// Wait until the jobs have finished; print `ID STATE RESULT` for each as it ends. Exits 0
    /// when all succeeded, else with the first unsuccessful job's code (as `nekton run` would).
    Wait {
        #[arg(value_name = "ID", required = true)]
        ids: Vec<Uuid>,
    },
    /// Cancel a job: a queued job at once, a running one within a second.
    Cancel {
        /// The job's id (as printed by `nekton run -d` or `nekton jobs ls`).
        #[arg(value_name = "ID")]
        id: Uuid,
    },
    /// Print a job's output.
    Logs {
        /// The job's id (as printed by `nekton run -d` or `nekton jobs ls`).
        #[arg(value_name = "ID")]
        id: Uuid,
        /// Follow the output live until the job ends (stdout to stdout, stderr to stderr).
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only this stream: stdout or stderr.
        #[arg(long, value_name = "STREAM", value_parser = parse_std_stream)]
        stream: Option<StdStream>,
        /// Only the last N lines (of the latest attempt).
        #[arg(short = 'n', long, value_name = "N")]
        tail: Option<u32>,
        /// Only output written since this time: RFC 3339 (2026-12-04T10:00:00Z) or a duration
        /// ago (10m, 2h, 30s).
        #[arg(long, value_name = "TIME", value_parser = parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Start each line with the time it was written (RFC 3339, UTC).
        #[arg(short = 't', long)]
        timestamps: bool,
    },
    /// A job's artifacts (the files its `artifacts` patterns kept): without PATH a table of
    /// them and of the matches that were skipped; with PATH that file's bytes to stdout (or to
    /// -o FILE); with -o DIR and no PATH every artifact written below DIR.
    Artifacts {
        /// The job's id (as printed by `nekton run -d` or `nekton jobs ls`).
        #[arg(value_name = "ID")]
        id: Uuid,
        /// One artifact's path, as listed.
        #[arg(value_name = "PATH")]
        path: Option<String>,
        /// With PATH: the file to write it to. Without: the directory to write every artifact
        /// below (created if missing; paths never leave it, symlinks in it are never followed).
        #[arg(short = 'o', long = "output", value_name = "DIR|FILE")]
        output: Option<PathBuf>,
    },
}

/// `nekton batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    #[command(subcommand)]
    pub command: BatchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Submit a JSONL file (one job spec per non-empty line) as one batch; prints the batch id.
    Submit {
        /// The JSONL file, or `-` for standard input.
        #[arg(value_name = "FILE.jsonl")]
        file: PathBuf,
        /// Job fields applied to every job unless the job sets them (env, labels and limits are
        /// merged key by key): a JSON object, or `@FILE` to read it from a file.
        #[arg(long, value_name = "JSON")]
        defaults: Option<String>,
        /// Label the batch (repeatable).
        #[arg(long = "label", value_name = "K=V", value_parser = parse_key_value)]
        labels: Vec<(String, String)>,
        /// Wait for every job to finish, showing progress; exit 1 unless all succeeded.
        #[arg(long)]
        wait: bool,
        /// Also print each job's id with its line number.
        #[arg(short = 'v', long)]
        verbose: bool,
    },
    /// List batches, newest first, with their jobs counted by state.
    Ls {
        /// Only batches with this label (repeatable: all must match).
        #[arg(long = "label", value_name = "K=V", value_parser = parse_key_value)]
        labels: Vec<(String, String)>,
        /// Only batches whose jobs have all finished.
        #[arg(long, conflicts_with = "unfinished")]
        done: bool,
        /// Only batches with a job still waiting or running.
        #[arg(long)]
        unfinished: bool,
        /// Batches per page (the server caps it).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Start at this cursor (printed when more batches are available).
        #[arg(long, value_name = "CURSOR", conflicts_with = "all")]
        cursor: Option<String>,
        /// Follow the pages to the end and list every matching batch.
        #[arg(long)]
        all: bool,
        /// Print the batches as JSON (one array) instead of a table (same as `--format json`).
        #[arg(long, conflicts_with_all = ["format", "quiet"])]
        json: bool,
        /// Print only the batches' ids, one per line.
        #[arg(short = 'q', long, conflicts_with = "format")]
        quiet: bool,
        /// `table` (the default), `json`, or a template such as `'{{.id}} {{.counts.failed}}'`
        /// applied to each batch's JSON fields.
        #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
        format: Option<Format>,
    },
    /// Print batches (their jobs counted by state): as JSON by default.
    Get {
        /// The batches' ids (as printed by `nekton batch submit` or `nekton batch ls`).
        #[arg(value_name = "ID", required = true)]
        ids: Vec<Uuid>,
        /// `json` (the default), `table`, or a template such as `'{{.id}} {{.finished}}'`.
        #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
        format: Option<Format>,
    },
    /// Cancel every unfinished job of a batch: waiting jobs at once, running ones within a
    /// second. Prints how many jobs were cancelled and how many running ones were asked to stop.
    Cancel {
        #[arg(value_name = "ID")]
        id: Uuid,
    },
    /// Wait until every job of the batch has finished; print the counts by state and each job
    /// that did not succeed (id, state, result). Exits 0 only when all succeeded, else 1.
    Wait {
        #[arg(value_name = "ID")]
        id: Uuid,
    },
}

/// `nekton module`.
#[derive(Debug, Args)]
pub struct ModuleArgs {
    #[command(subcommand)]
    pub command: ModuleCommand,
}

#[derive(Debug, Subcommand)]
pub enum ModuleCommand {
    /// Upload a Wasm module and print its digest (use it as `nekton run sha256:...`).
    Push {
        /// A binary module (`.wasm`) or WebAssembly text (`.wat`, assembled before upload).
        #[arg(value_name = "FILE.wasm|FILE.wat")]
        file: PathBuf,
    },
    /// List the tenant's uploaded modules, newest first: digest, size, upload time.
    Ls {
        /// Modules per page (the server caps it).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Start at this cursor (printed when more modules are available).
        #[arg(long, value_name = "CURSOR", conflicts_with = "all")]
        cursor: Option<String>,
        /// Follow the pages to the end and list every module.
        #[arg(long)]
        all: bool,
        /// Print the modules as JSON (one array) instead of a table.
        #[arg(long, conflicts_with = "quiet")]
        json: bool,
        /// Print only the digests, one per line.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
}

/// Runs a client command; returns the process exit code.
pub async fn execute(cmd: ClientCommand, server: &ServerArgs) -> Result<i32> {
    match cmd {
        ClientCommand::Run(args) => run(args, server).await,
        ClientCommand::Jobs(args) => jobs(args, server).await,
        ClientCommand::Batch(args) => batch(args, server).await,
        ClientCommand::Module(args) => module(args, server).await,
        ClientCommand::Test(args) => super::grade::test(args, server).await,
        ClientCommand::Image(args) => super::image::image(args, server).await,
        ClientCommand::Webhook(args) => super::webhook::webhook(args, server).await,
        ClientCommand::Tenant(args) => super::admin::tenant(args, server).await,
        ClientCommand::Token(args) => super::admin::token(args, server).await,
        ClientCommand::Login(args) => super::admin::login(args, server).await,
        ClientCommand::Logout => super::admin::logout(server).await,
        ClientCommand::Whoami => super::admin::whoami(server).await,
        ClientCommand::Usage(args) => super::admin::usage(args, server).await,
        ClientCommand::Audit(args) => super::admin::audit(args, server).await,
        ClientCommand::Version => version(server).await,
    }
}

/// `nekton version`: the client's version always; the server's when it answers.
async fn version(server: &ServerArgs) -> Result<i32> {
    crate::outln!("client: nekton {}", env!("CARGO_PKG_VERSION"))?;
    let answer = match server.client() {
        Ok(client) => client.version().await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(v) => {
            let commit = v
                .git_commit
                .map(|c| format!(" (commit {c})"))
                .unwrap_or_default();
            let migration = v
                .migration
                .map_or_else(|| "none".to_string(), |m| m.to_string());
            crate::outln!(
                "server: nekton {}{commit}, API {}, database migration {migration} (this server knows up to {})",
                v.version,
                v.api_version,
                v.migration_latest
            )?;
            Ok(0)
        }
        Err(e) => {
            eprintln!(
                "nekton: could not ask {} for its version: {e:#}",
                server.server
            );
            Ok(1)
        }
    }
}

/// Runs a client command; on error prints `nekton: <error chain>` to stderr and returns 125 for
/// `run` (so it never collides with the job's own exit codes) and 1 for the other commands.
pub async fn execute_or_report(cmd: ClientCommand, server: &ServerArgs) -> i32 {
    let failure_code = match cmd {
        ClientCommand::Run(_) => EXIT_SERVICE_ERROR,
        _ => 1,
    };
    match execute(cmd, server).await {
        Ok(code) => code,
        // The reader went away (`nekton jobs ls | head -1`): what it wanted was printed.
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("nekton: {e:#}");
            failure_code
        }
    }
}

/// True when the error is a write to a closed pipe or socket on our stdout.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

// ---------------------------------------------------------------------------------------------
// run

/// What PROGRAM names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Program {
    LocalModule(PathBuf),
    Digest(String),
    Image(String),
}

fn classify_program(program: &str) -> Result<Program> {
    if program.is_empty() {
        bail!("PROGRAM is empty: give a .wasm file, a module digest sha256:<hex> or an image");
    }
    if let Some(hex) = program.strip_prefix("sha256:") {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(
                "{program:?} is not a module digest: expected `sha256:` followed by 64 hex digits \
                 (as printed by `nekton module push`)"
            );
        }
        return Ok(Program::Digest(format!(
            "sha256:{}",
            hex.to_ascii_lowercase()
        )));
    }
    if is_wasm_file(Path::new(program)) {
        return Ok(Program::LocalModule(PathBuf::from(program)));
    }
    let looks_like_path = program.starts_with('/')
        || program.starts_with("./")
        || program.starts_with("../")
        || program.to_ascii_lowercase().ends_with(".wasm")
        || program.to_ascii_lowercase().ends_with(".wat");
    if looks_like_path {
        return Ok(Program::LocalModule(PathBuf::from(program)));
    }
    Ok(Program::Image(program.to_string()))
}

/// Reads a local module: a binary `.wasm`, or WebAssembly text (a `.wat` file, or any file that
/// is not binary Wasm) assembled here, so examples and quick tests need no toolchain.
pub(crate) async fn read_local_module(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_local_file(path, "the Wasm module").await?;
    if bytes.starts_with(b"\0asm") {
        return Ok(bytes);
    }
    let is_text = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("wat"));
    if !is_text {
        // Let the server say what is wrong with it (it validates every upload).
        return Ok(bytes);
    }
    wat::parse_bytes(&bytes)
        .map(|b| b.into_owned())
        .map_err(|e| anyhow::anyhow!("{} is not valid WebAssembly text: {e}", path.display()))
}

/// An existing regular file that starts with the Wasm magic `\0asm`.
fn is_wasm_file(path: &Path) -> bool {
    use std::io::Read as _;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\0asm"
}

async fn read_local_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    tokio::fs::read(path).await.with_context(|| {
        format!(
            "cannot read {what} {}: check the path (relative paths start from {})",
            path.display(),
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| "the current directory".into())
        )
    })
}

async fn build_run_spec(args: &RunArgs, client: &Client) -> Result<JobSpec> {
    let mut spec = JobSpec::default();
    match classify_program(&args.program)? {
        Program::Digest(d) => spec.module = Some(d),
        Program::Image(i) => spec.image = Some(i),
        Program::LocalModule(path) => {
            let wasm = read_local_module(&path).await?;
            let module = client
                .push_module(wasm)
                .await
                .with_context(|| format!("uploading {} failed", path.display()))?;
            spec.module = Some(module.digest);
        }
    }
    spec.args = args.args.clone();
    for path in &args.env_files {
        let text = read_local_file(path, "the env file").await?;
        let text = String::from_utf8(text)
            .with_context(|| format!("the env file {} is not UTF-8 text", path.display()))?;
        for (name, value) in parse_env_file(&text)
            .map_err(|e| anyhow::anyhow!("the env file {}: {e}", path.display()))?
        {
            spec.env.insert(name, value);
        }
    }
    spec.env.extend(args.env.iter().cloned());
    spec.labels = args.labels.iter().cloned().collect();
    if args.interactive {
        let mut input = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut input)
            .await
            .context("reading standard input for --interactive failed")?;
        let (content, encoding) = encode_content(input);
        spec.stdin = Some(content);
        spec.stdin_encoding = encoding;
    }
    for f in &args.files {
        let data = read_local_file(&f.local, "--file").await?;
        let mode = file_mode(&f.local);
        spec.files.push(InputFileSpec {
            path: f.guest.clone(),
            content: base64::engine::general_purpose::STANDARD.encode(data),
            encoding: Some(Encoding::Base64),
            mode,
        });
    }
    let limits = LimitsSpec {
        wall_time_ms: args.wall_time,
        cpu_time_ms: args.cpu_time,
        memory_bytes: args.memory,
        fuel: args.fuel,
        output_bytes: args.output_bytes,
        pids: args.pids,
        disk_bytes: None,
    };
    if limits != LimitsSpec::default() {
        spec.limits = Some(limits);
    }
    spec.network = if args.egress.is_empty() {
        args.network.map(NetworkSpec::Mode)
    } else {
        Some(NetworkSpec::Policy(NetworkPolicy {
            mode: args.network.unwrap_or(NetworkMode::Bridge),
            allow: Some(args.egress.clone()),
        }))
    };
    if !args.preopen.is_empty() {
        spec.wasm = Some(WasmSpec {
            preopens: args.preopen.clone(),
        });
    }
    spec.runtime = args.runtime;
    spec.entrypoint = args.entrypoint.as_ref().map(|e| {
        if e.is_empty() {
            Vec::new()
        } else {
            vec![e.clone()]
        }
    });
    spec.workdir = args.workdir.clone();
    spec.user = args.user.clone();
    spec.queue = args.queue.clone();
    spec.priority = args.priority;
    spec.max_attempts = args.max_attempts;
    Ok(spec)
}

/// Text when the bytes are UTF-8 (no encoding field needed), else base64.
fn encode_content(bytes: Vec<u8>) -> (String, Option<Encoding>) {
    match String::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(e) => (
            base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
            Some(Encoding::Base64),
        ),
    }
}

#[cfg(unix)]
fn file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn file_mode(_path: &Path) -> Option<u32> {
    None
}

async fn run(args: RunArgs, server: &ServerArgs) -> Result<i32> {
    let client = server.client()?;
    let spec = build_run_spec(&args, &client).await?;
    let job = client
        .submit(&spec, args.idempotency_key.as_deref())
        .await
        .context("submitting the job failed")?;
    if args.detach {
        crate::outln!("{}", job.id)?;
        return Ok(0);
    }
    follow_job(&client, job.id).await
}

/// Streams a job's output to this process's stdout/stderr until it ends; returns its exit code.
async fn follow_job(client: &Client, id: Uuid) -> Result<i32> {
    let mut out = Output::default();
    let mut events = Box::pin(client.follow_logs(id, None));
    let mut interrupts = Interrupts::new();
    let mut cancel_requested = false;
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else {
                    bail!(
                        "the log stream of job {id} ended without an exit event; the job goes on \
                         on the server: see `nekton jobs get {id}`"
                    );
                };
                let ev = ev.with_context(|| {
                    format!("the job goes on on the server: see `nekton jobs get {id}`")
                })?;
                match ev {
                    LogStreamEvent::State { .. } | LogStreamEvent::Suite { .. } => {}
                    LogStreamEvent::Log { stream, bytes, .. } => out.write(stream, &bytes)?,
                    LogStreamEvent::Exit { event, .. } => {
                        out.flush();
                        if let Some(line) = describe_outcome(id, event.state, event.outcome.as_ref()) {
                            eprintln!("{line}");
                        }
                        return Ok(exit_code_for(event.state, event.outcome.as_ref()));
                    }
                }
            }
            () = interrupts.next() => {
                out.flush();
                if cancel_requested {
                    eprintln!("nekton: detached from job {id}; it may still be running on the server");
                    return Ok(EXIT_CANCELLED);
                }
                cancel_requested = true;
                eprintln!("nekton: cancelling job {id} (press Ctrl-C again to detach)");
                if let Err(e) = client.cancel(id).await {
                    eprintln!("nekton: cancelling job {id} failed: {e:#}");
                }
            }
        }
    }
}

/// Ctrl-C (SIGINT) notifications. Once created, SIGINT no longer kills the process.
struct Interrupts {
    #[cfg(unix)]
    sig: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                sig: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Resolves at the next Ctrl-C (never, if the handler could not be installed).
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(sig) = self.sig.as_mut()
            && sig.recv().await.is_some()
        {
            return;
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_ok() {
            return;
        }
        futures::future::pending::<()>().await
    }
}

/// This process's stdout/stderr, written byte-exact. A closed stdout (e.g. `| head`) stops the
/// copying to it but not the following, so the exit code still reflects the job.
#[derive(Default)]
struct Output {
    stdout_closed: bool,
    stderr_closed: bool,
}

impl Output {
    fn write(&mut self, stream: StdStream, bytes: &[u8]) -> Result<()> {
        let (closed, result) = match stream {
            StdStream::Stdout => {
                let r = write_all_flush(&mut io::stdout().lock(), bytes, self.stdout_closed);
                (&mut self.stdout_closed, r)
            }
            StdStream::Stderr => {
                let r = write_all_flush(&mut io::stderr().lock(), bytes, self.stderr_closed);
                (&mut self.stderr_closed, r)
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                *closed = true;
                Ok(())
            }
            Err(e) => Err(anyhow!(e).context(format!("writing the job's {stream} failed"))),
        }
    }

    fn flush(&mut self) {
        let _ = io::stdout().flush();
        let _ = io::stderr().flush();
    }
}

fn write_all_flush(w: &mut impl Write, bytes: &[u8], closed: bool) -> io::Result<()> {
    if closed {
        return Ok(());
    }
    w.write_all(bytes)?;
    w.flush()
}

/// The exit code `nekton run` exits with for a finished job (the table in `nekton run --help`).
pub fn exit_code_for(state: JobState, outcome: Option<&OutcomeView>) -> i32 {
    let Some(o) = outcome else {
        return match state {
            JobState::Succeeded => 0,
            JobState::Cancelled => EXIT_CANCELLED,
            JobState::Failed => 1,
            _ => EXIT_SERVICE_ERROR,
        };
    };
    let Some(reason) = o.reason.known() else {
        // A reason newer than this CLI: the service's side, as for the other non-job failures.
        return EXIT_SERVICE_ERROR;
    };
    match reason {
        OutcomeReason::Exited => match o.exit_code {
            Some(code) if (0..=255).contains(&code) => code,
            Some(_) => 1,
            None if state == JobState::Succeeded => 0,
            None => 1,
        },
        OutcomeReason::Signaled => match o.signal {
            Some(sig) if (1..=127).contains(&sig) => 128 + sig,
            _ => 1,
        },
        OutcomeReason::WallTimeout | OutcomeReason::CpuTimeout => EXIT_TIMEOUT,
        OutcomeReason::MemoryLimit => EXIT_MEMORY_LIMIT,
        OutcomeReason::OutputLimit => EXIT_OUTPUT_LIMIT,
        OutcomeReason::Cancelled => EXIT_CANCELLED,
        OutcomeReason::TestsFailed | OutcomeReason::CompileError => 1,
        OutcomeReason::ImageError
        | OutcomeReason::SpecError
        | OutcomeReason::WorkerLost
        | OutcomeReason::InternalError => EXIT_SERVICE_ERROR,
    }
}

/// The stderr line for a job that did not simply exit:
/// `nekton: job <id> <state>: <reason>: <detail>`; `None` for a plain exit.
fn describe_outcome(id: Uuid, state: JobState, outcome: Option<&OutcomeView>) -> Option<String> {
    let Some(o) = outcome else {
        return (state != JobState::Succeeded)
            .then(|| format!("nekton: job {id} {}: no outcome recorded", state.as_str()));
    };
    if o.reason == OutcomeReason::Exited {
        return match o.exit_code {
            Some(code) if !(0..=255).contains(&code) => Some(format!(
                "nekton: job {id} {}: exited: exit code {code} is outside 0-255",
                state.as_str()
            )),
            _ => None,
        };
    }
    let detail = o.detail.clone().or_else(|| match (o.signal, o.exit_code) {
        (Some(sig), _) => Some(format!("signal {sig}")),
        (None, Some(code)) => Some(format!("exit code {code}")),
        _ => None,
    });
    Some(match detail {
        Some(d) => format!(
            "nekton: job {id} {}: {}: {d}",
            state.as_str(),
            o.reason.as_str()
        ),
        None => format!("nekton: job {id} {}: {}", state.as_str(), o.reason.as_str()),
    })
}

// ---------------------------------------------------------------------------------------------
// jobs

async fn jobs(args: JobsArgs, server: &ServerArgs) -> Result<i32> {
    let client = server.client()?;
    match args.command {
        JobsCommand::Ls {
            state,
            labels,
            batch,
            limit,
            cursor,
            all,
            json,
            quiet,
            format,
        } => {
            let filter = JobFilter {
                state,
                labels,
                batch,
                cursor,
                limit,
            };
            let (jobs, next) = if all {
                (client.list_all_jobs(&filter).await?, None)
            } else {
                let page = client.list_jobs(&filter).await?;
                (page.jobs, page.next_cursor)
            };
            let format = list_format(json, quiet, format, "id");
            print_jobs(&jobs, &format)?;
            more_hint("jobs", next);
            Ok(0)
        }
        JobsCommand::Get { ids, format } => {
            let mut jobs = Vec::with_capacity(ids.len());
            for id in ids {
                jobs.push(client.get_job(id).await?);
            }
            match format.unwrap_or(Format::Json) {
                // One job prints as an object (as before), several as an array.
                Format::Json if jobs.len() == 1 => {
                    crate::outln!("{}", serde_json::to_string_pretty(&jobs[0])?)?
                }
                format => print_jobs(&jobs, &format)?,
            }
            Ok(0)
        }
        JobsCommand::Wait { ids } => wait_for_jobs(&client, &ids).await,
        JobsCommand::Cancel { id } => {
            let job = client.cancel(id).await?;
            crate::outln!("{} {}", job.id, job.state.as_str())?;
            Ok(0)
        }
        JobsCommand::Artifacts { id, path, output } => {
            super::artifacts::run(&client, id, path, output).await
        }
        JobsCommand::Logs {
            id,
            follow,
            stream,
            tail,
            since,
            timestamps,
        } => {
            let query = LogQuery {
                stream,
                tail,
                since,
                timestamps,
            };
            if follow {
                follow_logs_only(&client, id, &query).await
            } else {
                let mut chunks = client.plain_logs(id, &query).await?;
                let mut stdout = io::stdout().lock();
                while let Some(chunk) = chunks.next().await {
                    match stdout.write_all(&chunk?) {
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(0),
                        r => r.context("writing the log to stdout failed")?,
                    }
                }
                match stdout.flush() {
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                    r => r.context("writing the log to stdout failed")?,
                }
                Ok(0)
            }
        }
    }
}

/// How `jobs ls|get` print jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    /// `{{.field}}` / `{{.a.b}}` replaced by the job's JSON values; one line per job.
    Template(String),
}

fn parse_format(s: &str) -> Result<Format, String> {
    match s {
        "table" => Ok(Format::Table),
        "json" => Ok(Format::Json),
        t if t.contains("{{") => {
            // Check the template's shape now, so a typo fails before any request.
            render_template(t, &serde_json::json!({})).map(|_| Format::Template(t.to_string()))
        }
        _ => Err(format!(
            "{s:?} is not a format; use table, json, or a template such as '{{{{.id}}}} {{{{.state}}}}'"
        )),
    }
}

/// Renders `{{.a.b}}` placeholders from `value`. A placeholder naming no field renders empty
/// (a job that has not finished has no `outcome`); a malformed one is an error.
fn render_template(template: &str, value: &serde_json::Value) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed `{{{{` in the template {template:?}"))?;
        let path = after[..end].trim();
        let fields = path.strip_prefix('.').ok_or_else(|| {
            format!("template placeholders name a field with a leading dot, like {{{{.id}}}}: got {{{{{path}}}}}")
        })?;
        let mut v = value;
        if !fields.is_empty() {
            for f in fields.split('.') {
                v = v.get(f).unwrap_or(&serde_json::Value::Null);
            }
        }
        match v {
            serde_json::Value::Null => {}
            serde_json::Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out.replace("\\t", "\t").replace("\\n", "\n"))
}

fn print_jobs(jobs: &[Job], format: &Format) -> Result<()> {
    print_items(jobs, format, jobs_table)
}

/// Prints records as a table (`table`), one JSON array, or one template line each.
fn print_items<T: serde::Serialize>(
    items: &[T],
    format: &Format,
    table: fn(&[T]) -> String,
) -> Result<()> {
    match format {
        Format::Table => crate::out!("{}", table(items))?,
        Format::Json => crate::outln!("{}", serde_json::to_string_pretty(items)?)?,
        Format::Template(t) => {
            let mut text = String::new();
            for item in items {
                let line = render_template(t, &serde_json::to_value(item)?)
                    .map_err(|e| anyhow::anyhow!(e))?;
                text.push_str(&line);
                text.push('\n');
            }
            crate::out!("{text}")?
        }
    }
    Ok(())
}

/// The format of a listing: `--json`, else `-q` (only the records' `id_field`, one per line),
/// else `--format`, else a table.
fn list_format(json: bool, quiet: bool, format: Option<Format>, id_field: &str) -> Format {
    match (json, quiet, format) {
        (true, _, _) => Format::Json,
        (_, true, _) => Format::Template(format!("{{{{.{id_field}}}}}")),
        (_, _, f) => f.unwrap_or(Format::Table),
    }
}

/// After one page of a listing: how to get the next (on stderr, so stdout stays the records).
fn more_hint(what: &str, next: Option<String>) {
    if let Some(next) = next {
        eprintln!("(more {what}: add --cursor {next} for the next page, or --all for all)");
    }
}

/// A time in a table cell.
pub(crate) fn time_cell(t: &chrono::DateTime<chrono::Utc>) -> String {
    time_cell_in(t, &chrono::Local)
}

/// A table's time in `zone`, with the zone's offset so it is never ambiguous
/// (`2026-12-04 20:15:03 +01:00`).
fn time_cell_in<Tz: chrono::TimeZone>(t: &chrono::DateTime<chrono::Utc>, zone: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    t.with_timezone(zone)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

fn modules_table(modules: &[Module]) -> String {
    let rows: Vec<Vec<String>> = modules
        .iter()
        .map(|m| {
            vec![
                m.digest.clone(),
                m.size_bytes.to_string(),
                time_cell(&m.created_at),
            ]
        })
        .collect();
    render_table(&["DIGEST", "SIZE", "CREATED"], &rows)
}

/// `jobs wait`: polls each job until it is final (a cheap GET; no log bytes are transferred).
async fn wait_for_jobs(client: &Client, ids: &[Uuid]) -> Result<i32> {
    let mut first_failure = None;
    for &id in ids {
        let mut delay = Duration::from_millis(50);
        let job = loop {
            let job = client.get_job(id).await?;
            if job.state.is_terminal() {
                break job;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        };
        let code = exit_code_for(job.state, job.outcome.as_ref());
        crate::outln!("{} {} {}", job.id, job.state.as_str(), result_cell(&job))?;
        if code != 0 && first_failure.is_none() {
            first_failure = Some(code);
        }
    }
    Ok(first_failure.unwrap_or(0))
}

/// `jobs logs -f`: copies the live output until the job ends (from the last `--tail` lines or
/// `--since` a time on, each line with its time with `--timestamps`); exit code 0 (the job's own
/// result is in `nekton jobs get`).
async fn follow_logs_only(client: &Client, id: Uuid, query: &LogQuery) -> Result<i32> {
    let mut out = Output::default();
    let mut stamper = query.timestamps.then(LineStamper::default);
    let mut events = Box::pin(client.follow_logs_from(id, query, None));
    while let Some(ev) = events.next().await {
        match ev? {
            LogStreamEvent::Log {
                stream, bytes, at, ..
            } if query.stream.is_none_or(|s| s == stream) => match &mut stamper {
                Some(s) => out.write(stream, &s.stamp(stream, at, &bytes))?,
                None => out.write(stream, &bytes)?,
            },
            LogStreamEvent::Exit { .. } => break,
            _ => {}
        }
    }
    out.flush();
    Ok(0)
}

/// The RESULT column: `exit N`, `signal N`, the reason, or `-`.
fn result_cell(job: &Job) -> String {
    match &job.outcome {
        None => "-".into(),
        Some(o) => match (o.reason.as_str(), o.exit_code, o.signal) {
            ("exited", Some(code), _) => format!("exit {code}"),
            ("signaled", _, Some(sig)) => format!("signal {sig}"),
            (reason, _, _) => reason.to_string(),
        },
    }
}

fn jobs_table(jobs: &[Job]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.state.as_str().to_string(),
                result_cell(j),
                truncate_chars(&j.program, 48),
                time_cell(&j.created_at),
            ]
        })
        .collect();
    render_table(&["ID", "STATE", "RESULT", "PROGRAM", "CREATED"], &rows)
}

/// Columns padded to their widest cell, two spaces apart; no trailing blanks.
fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let pad = w.saturating_sub(cell.chars().count()) + 2;
                l.push_str(cell);
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for row in rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

/// A batch's counts in a few columns: done/total, then the non-zero final states.
fn batches_table(batches: &[Batch]) -> String {
    let count = |b: &Batch, s: &str| b.counts.get(s).copied().unwrap_or(0);
    let rows: Vec<Vec<String>> = batches
        .iter()
        .map(|b| {
            let done: i64 = JobState::ALL
                .iter()
                .filter(|s| s.is_terminal())
                .map(|s| count(b, s.as_str()))
                .sum();
            vec![
                b.id.to_string(),
                format!("{done}/{}", b.total),
                count(b, "running").to_string(),
                count(b, "succeeded").to_string(),
                (count(b, "failed") + count(b, "error")).to_string(),
                count(b, "cancelled").to_string(),
                time_cell(&b.created_at),
            ]
        })
        .collect();
    render_table(
        &[
            "ID",
            "DONE",
            "RUNNING",
            "SUCCEEDED",
            "FAILED",
            "CANCELLED",
            "CREATED",
        ],
        &rows,
    )
}

// ---------------------------------------------------------------------------------------------
// batch

/// Parses a JSONL file of job specs: one JSON object per non-empty line, each checked against
/// the job spec's fields and types. Returns `(line number, job)` pairs; on any bad line, an
/// error naming every bad line (up to 10) and nothing else.
pub fn parse_jobs_jsonl(text: &str) -> Result<Vec<(usize, serde_json::Value)>> {
    const MAX_REPORTED: usize = 10;
    let mut jobs = Vec::new();
    let mut bad = Vec::new();
    let mut bad_count = 0usize;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match parse_job_object(line) {
            Ok(v) => jobs.push((line_no, v)),
            Err(e) => {
                bad_count += 1;
                if bad.len() < MAX_REPORTED {
                    bad.push(format!("line {line_no}: {e}"));
                }
            }
        }
    }
    if bad_count > 0 {
        let more = if bad_count > bad.len() {
            format!("\n  ... and {} more bad lines", bad_count - bad.len())
        } else {
            String::new()
        };
        bail!(
            "{bad_count} bad line(s), nothing was submitted; each non-empty line must be one job \
             spec as a JSON object:\n  {}{more}",
            bad.join("\n  ")
        );
    }
    if jobs.is_empty() {
        bail!(
            "no jobs: the file has no non-empty lines; write one job spec (a JSON object) per line"
        );
    }
    Ok(jobs)
}

/// One JSON object that deserializes as a (possibly partial) job spec.
fn parse_job_object(text: &str) -> Result<serde_json::Value> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow!("invalid JSON: {e}"))?;
    check_job_object(&value)?;
    Ok(value)
}

fn check_job_object(value: &serde_json::Value) -> Result<()> {
    if !value.is_object() {
        bail!(
            "expected a JSON object (a job spec), found {}",
            json_kind(value)
        );
    }
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    match <JobSpec as serde::Deserialize>::deserialize(de) {
        Ok(_) => Ok(()),
        Err(e) => {
            let path = track.path().to_string();
            let top_level_unknown =
                !path.contains('.') && e.to_string().starts_with("unknown field");
            if path.is_empty() || path == "." || top_level_unknown {
                bail!("not a valid job spec: {e}")
            } else {
                bail!("not a valid job spec: field `{path}`: {e}")
            }
        }
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Parses `--defaults`: a JSON object, or `@FILE` holding one.
fn parse_defaults(arg: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    let (text, origin) = match arg.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the --defaults file {path}"))?,
            format!("the --defaults file {path}"),
        ),
        None => (arg.to_string(), "--defaults".to_string()),
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{origin} is not valid JSON; pass a JSON object like '{{\"image\":\"alpine\"}}' or @FILE"))?;
    check_job_object(&value).with_context(|| format!("{origin} is not usable as job defaults"))?;
    match value {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(anyhow!("{origin} must be a JSON object")),
    }
}

async fn batch(args: BatchArgs, server: &ServerArgs) -> Result<i32> {
    let client = server.client()?;
    match args.command {
        BatchCommand::Submit {
            file,
            defaults,
            labels,
            wait,
            verbose,
        } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                tokio::io::stdin()
                    .read_to_string(&mut s)
                    .await
                    .context("reading the jobs from standard input failed (is it UTF-8 JSONL?)")?;
                s
            } else {
                tokio::fs::read_to_string(&file).await.with_context(|| {
                    format!(
                        "cannot read {} (a UTF-8 JSONL file is expected)",
                        file.display()
                    )
                })?
            };
            let jobs = parse_jobs_jsonl(&text)
                .with_context(|| format!("{} has errors", file.display()))?;
            let defaults = defaults.as_deref().map(parse_defaults).transpose()?;
            let spec = BatchSpec {
                defaults: defaults.unwrap_or_default(),
                jobs: jobs.iter().map(|(_, v)| v.clone()).collect(),
                labels: labels.into_iter().collect(),
            };
            let created = client
                .submit_batch(&spec)
                .await
                .context("submitting the batch failed")?;
            crate::outln!("{}", created.id)?;
            if verbose {
                for ((line, _), job_id) in jobs.iter().zip(&created.job_ids) {
                    crate::outln!("{job_id}\tline {line}")?;
                }
            }
            if wait {
                wait_for_batch(&client, created.id, created.job_ids.len() as u64, false).await
            } else {
                Ok(0)
            }
        }
        BatchCommand::Ls {
            labels,
            done,
            unfinished,
            limit,
            cursor,
            all,
            json,
            quiet,
            format,
        } => {
            let filter = BatchFilter {
                labels,
                done: (done || unfinished).then_some(done),
                cursor,
                limit,
            };
            let (batches, next) = if all {
                (client.list_all_batches(&filter).await?, None)
            } else {
                let page = client.list_batches(&filter).await?;
                (page.batches, page.next_cursor)
            };
            let format = list_format(json, quiet, format, "id");
            print_items(&batches, &format, batches_table)?;
            more_hint("batches", next);
            Ok(0)
        }
        BatchCommand::Get { ids, format } => {
            let mut batches = Vec::with_capacity(ids.len());
            for id in ids {
                batches.push(client.get_batch(id).await?);
            }
            match format.unwrap_or(Format::Json) {
                Format::Json if batches.len() == 1 => {
                    crate::outln!("{}", serde_json::to_string_pretty(&batches[0])?)?
                }
                format => print_items(&batches, &format, batches_table)?,
            }
            Ok(0)
        }
        BatchCommand::Cancel { id } => {
            let c = client.cancel_batch(id).await?;
            crate::outln!(
                "{id}: {} waiting jobs cancelled, {} running jobs asked to stop",
                c.cancelled,
                c.cancel_requested
            )?;
            Ok(0)
        }
        BatchCommand::Wait { id } => {
            let batch = client.get_batch(id).await?;
            wait_for_batch(&client, id, batch.total.max(0) as u64, true).await
        }
    }
}

/// Follows the batch's events to its end with a progress bar; then reports the counts by state
/// and every job that did not succeed (to stdout with `report_to_stdout`, else to stderr). 0 when
/// all succeeded, else 1.
async fn wait_for_batch(
    client: &Client,
    id: Uuid,
    total: u64,
    report_to_stdout: bool,
) -> Result<i32> {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut seen = HashSet::new();
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut unsuccessful: Vec<Job> = Vec::new();
    let mut events = Box::pin(client.batch_events(id));
    let batch = loop {
        match events.next().await {
            Some(Ok(BatchStreamEvent::Job(job))) => {
                if seen.insert(job.id) {
                    *counts.entry(job.state.as_str()).or_default() += 1;
                    if job.state != JobState::Succeeded {
                        unsuccessful.push((*job).clone());
                    }
                    bar.inc(1);
                    bar.set_message(
                        counts
                            .iter()
                            .map(|(s, n)| format!("{s} {n}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    );
                }
            }
            Some(Ok(BatchStreamEvent::Done(batch))) => break batch,
            Some(Err(e)) => {
                bar.abandon();
                return Err(e.context(format!(
                    "waiting for batch {id} failed; its jobs go on on the server: see \
                     `nekton jobs ls --batch {id}`"
                )));
            }
            None => {
                bar.abandon();
                bail!(
                    "the event stream of batch {id} ended early; see `nekton jobs ls --batch {id}`"
                );
            }
        }
    };
    bar.finish_and_clear();
    let summary = batch
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let succeeded = batch.counts.get("succeeded").copied().unwrap_or(0);
    let mut report = format!("batch {id}: {} jobs: {summary}\n", batch.total);
    for job in &unsuccessful {
        let detail = job
            .outcome
            .as_ref()
            .and_then(|o| o.detail.as_deref())
            .map(|d| format!(" ({})", truncate_chars(d, 120)))
            .unwrap_or_default();
        report.push_str(&format!(
            "  {} {} {}{detail}\n",
            job.id,
            job.state.as_str(),
            result_cell(job)
        ));
    }
    if report_to_stdout {
        crate::out!("{report}")?;
    } else {
        eprint!("{report}");
    }
    Ok(if succeeded == batch.total && batch.finished {
        0
    } else {
        1
    })
}

// ---------------------------------------------------------------------------------------------
// module

async fn module(args: ModuleArgs, server: &ServerArgs) -> Result<i32> {
    let client = server.client()?;
    match args.command {
        ModuleCommand::Push { file } => {
            let wasm = read_local_module(&file).await?;
            let module = client
                .push_module(wasm)
                .await
                .with_context(|| format!("uploading {} failed", file.display()))?;
            crate::outln!("{}", module.digest)?;
            Ok(0)
        }
        ModuleCommand::Ls {
            limit,
            cursor,
            all,
            json,
            quiet,
        } => {
            let (modules, next) = if all {
                (client.list_all_modules(cursor, limit).await?, None)
            } else {
                let page = client.list_modules(cursor.as_deref(), limit).await?;
                (page.modules, page.next_cursor)
            };
            print_items(
                &modules,
                &list_format(json, quiet, None, "digest"),
                modules_table,
            )?;
            more_hint("modules", next);
            Ok(0)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// argument parsers (clap value parsers: they return the message shown after "invalid value")

/// `K=V` with a non-empty key; the value may contain `=` and be empty.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        Some(_) => Err(format!("{s:?} has an empty key; write KEY=VALUE")),
        None => Err(format!("{s:?} has no `=`; write KEY=VALUE")),
    }
}

/// `-e K=V`, or `-e K` to copy K from this process's environment.
pub fn parse_env(s: &str) -> Result<(String, String), String> {
    if s.contains('=') {
        return parse_key_value(s);
    }
    if s.is_empty() {
        return Err("empty variable; write NAME=VALUE".into());
    }
    match std::env::var(s) {
        Ok(v) => Ok((s.to_string(), v)),
        Err(_) => Err(format!(
            "{s:?} has no `=` and is not set in this environment (or is not UTF-8); write NAME=VALUE"
        )),
    }
}

/// The lines of an `--env-file`, each as `-e` would read it; errors name the line.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut vars = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        vars.push(parse_env(line).map_err(|e| format!("line {}: {e}", i + 1))?);
    }
    Ok(vars)
}

/// `--file LOCAL[:GUESTPATH]`; the guest path defaults to the local file's name.
pub fn parse_file_arg(s: &str) -> Result<FileArg, String> {
    let (local, guest) = match s.split_once(':') {
        Some((l, g)) => (l, Some(g)),
        None => (s, None),
    };
    if local.is_empty() {
        return Err(format!(
            "{s:?} names no local file; write LOCAL[:GUESTPATH]"
        ));
    }
    let guest = match guest {
        Some("") => return Err(format!("{s:?} has an empty guest path after `:`")),
        Some(g) => g.to_string(),
        None => Path::new(local)
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                format!("cannot derive a guest path from {local:?}; write LOCAL:GUESTPATH")
            })?
            .to_string(),
    };
    Ok(FileArg {
        local: PathBuf::from(local),
        guest,
    })
}

/// Splits `12.5Mi` into the number and the suffix.
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    (&s[..end], s[end..].trim())
}

/// `number * multiplier`, where number may have a fraction; rounds down; None on overflow.
fn scale(number: &str, multiplier: u64) -> Option<u64> {
    let number = number.replace('_', "");
    let (int, frac) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number.as_str(), ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let int_val: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut total = int_val.checked_mul(multiplier)?;
    if !frac.is_empty() {
        if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 18 {
            return None;
        }
        let denom = 10u128.pow(frac.len() as u32);
        let f: u128 = frac.parse().ok()?;
        let part = f * u128::from(multiplier) / denom;
        total = total.checked_add(u64::try_from(part).ok()?)?;
    }
    Some(total)
}

/// A byte size: `1048576`, `64M`, `1.5G`, `512KiB`, `2gb` (K/M/G/T are powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (number, suffix) = split_number(t);
    let multiplier: u64 = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{s:?} is not a size; write bytes or a number with K, M, G or T (e.g. 64M, 1.5G)"
            ));
        }
    };
    scale(number, multiplier).ok_or_else(|| {
        format!("{s:?} is not a size; write bytes or a number with K, M, G or T (e.g. 64M, 1.5G)")
    })
}

/// A duration with its unit, in milliseconds: `1500ms`, `2s`, `1.5m`, `1h`. A bare number is
/// refused: `2` could mean 2 ms or 2 s, and a job limited to 2 ms by mistake fails confusingly.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (number, suffix) = split_number(t);
    let hint = "write a number with a unit: ms, s, m or h (e.g. 1500ms, 2s, 5m)";
    let multiplier: u64 = match suffix.to_ascii_lowercase().as_str() {
        "" if !number.is_empty() => {
            return Err(format!(
                "{s:?} has no unit; {hint} — did you mean {number}s or {number}ms?"
            ));
        }
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{s:?} is not a duration; {hint}")),
    };
    scale(number, multiplier).ok_or_else(|| format!("{s:?} is not a duration; {hint}"))
}

/// A plain count; `_` separators allowed (`1_000_000`).
pub fn parse_count(s: &str) -> Result<u64, String> {
    s.trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number ≥ 0"))
}

/// `--preopen GUEST[=DIR][:ro|:rw]`; the paths themselves are checked by the server.
fn parse_preopen(s: &str) -> Result<PreopenSpec, String> {
    let (rest, mode) = if let Some(rest) = s.strip_suffix(":ro") {
        (rest, Some(PreopenMode::Ro))
    } else if let Some(rest) = s.strip_suffix(":rw") {
        (rest, Some(PreopenMode::Rw))
    } else {
        (s, None)
    };
    let (guest, dir) = match rest.split_once('=') {
        Some((guest, dir)) => (guest, Some(dir.to_owned())),
        None => (rest, None),
    };
    if !guest.starts_with('/') {
        return Err(format!(
            "{s:?} is not GUEST[=DIR][:ro]: the guest path must be absolute, e.g. /data=input:ro"
        ));
    }
    Ok(PreopenSpec {
        guest: guest.to_owned(),
        dir,
        mode,
    })
}

fn parse_state(s: &str) -> Result<JobState, String> {
    JobState::parse(s).ok_or_else(|| {
        format!(
            "{s:?} is not a job state; use one of: {}",
            JobState::ALL.map(JobState::as_str).join(", ")
        )
    })
}

/// `--since`: an RFC 3339 time, or a duration (with its unit) before now.
fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let ms = parse_duration_ms(s)
        .map_err(|e| format!("{e}; or give a time in RFC 3339 form (e.g. 2026-12-04T10:00:00Z)"))?;
    let ago = chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX));
    chrono::Utc::now()
        .checked_sub_signed(ago)
        .ok_or_else(|| format!("{s:?} is further back than any time nekton can store"))
}

fn parse_std_stream(s: &str) -> Result<StdStream, String> {
    StdStream::parse(s).ok_or_else(|| format!("{s:?} is not a stream; use stdout or stderr"))
}

/// An API enum from its wire name (`none`, `bridge`, `auto`, ...).
fn parse_wire_enum<T: DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|e| format!("{s:?} is not accepted: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[test]
    fn preopens_parse_guest_dir_and_mode() {
        let p = |s| parse_preopen(s).unwrap();
        assert_eq!(
            p("/data=input:ro"),
            PreopenSpec {
                guest: "/data".into(),
                dir: Some("input".into()),
                mode: Some(PreopenMode::Ro)
            }
        );
        assert_eq!(
            p("/"),
            PreopenSpec {
                guest: "/".into(),
                dir: None,
                mode: None
            }
        );
        assert_eq!(p("/out=a/b:rw").mode, Some(PreopenMode::Rw));
        assert_eq!(p("/out=a/b:rw").dir.as_deref(), Some("a/b"));
        assert!(
            parse_preopen("data=input")
                .unwrap_err()
                .contains("absolute")
        );
    }

    #[test]
    fn table_times_are_local_with_their_offset() {
        use chrono::TimeZone;
        let t = chrono::Utc
            .with_ymd_and_hms(2026, 12, 4, 19, 15, 3)
            .unwrap();
        let plus_one = chrono::FixedOffset::east_opt(3600).unwrap();
        assert_eq!(time_cell_in(&t, &plus_one), "2026-12-04 20:15:03 +01:00");
        assert_eq!(time_cell_in(&t, &chrono::Utc), "2026-12-04 19:15:03 +00:00");
    }

    #[test]
    fn since_takes_a_time_or_a_duration_ago() {
        assert_eq!(
            parse_since("2026-12-04T10:00:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-12-04T09:00:00+00:00"
        );
        let ago = chrono::Utc::now() - parse_since("10m").unwrap();
        assert!((599..=601).contains(&ago.num_seconds()), "{ago}");
        let e = parse_since("10").unwrap_err();
        assert!(e.contains("no unit") && e.contains("RFC 3339"), "{e}");
        assert!(parse_since("yesterday").is_err());
    }

    fn outcome(reason: &str, exit_code: Option<i32>, signal: Option<i32>) -> OutcomeView {
        OutcomeView {
            reason: crate::api::types::Named::parse(reason),
            exit_code,
            signal,
            detail: None,
            tests: None,
        }
    }

    #[test]
    fn exit_code_table() {
        use JobState::*;
        let cases = [
            (Succeeded, outcome("exited", Some(0), None), 0),
            (Failed, outcome("exited", Some(3), None), 3),
            (Failed, outcome("exited", Some(255), None), 255),
            (Failed, outcome("exited", Some(256), None), 1),
            (Failed, outcome("exited", Some(-1), None), 1),
            (Failed, outcome("signaled", None, Some(9)), 137),
            (Failed, outcome("signaled", None, Some(11)), 139),
            (Failed, outcome("signaled", None, None), 1),
            (Failed, outcome("wall_timeout", None, Some(9)), 124),
            (Failed, outcome("cpu_timeout", None, None), 124),
            (Failed, outcome("memory_limit", None, Some(9)), 137),
            (Failed, outcome("output_limit", None, None), 153),
            (Cancelled, outcome("cancelled", None, None), 130),
            (Error, outcome("spec_error", None, None), 125),
            (Error, outcome("image_error", None, None), 125),
            (Error, outcome("internal_error", None, None), 125),
            (Error, outcome("worker_lost", None, None), 125),
            (Error, outcome("something_new", None, None), 125),
        ];
        for (state, o, want) in cases {
            assert_eq!(exit_code_for(state, Some(&o)), want, "{state:?} {o:?}");
        }
        assert_eq!(exit_code_for(Succeeded, None), 0);
        assert_eq!(exit_code_for(Failed, None), 1);
        assert_eq!(exit_code_for(Cancelled, None), 130);
        assert_eq!(exit_code_for(Error, None), 125);
    }

    #[test]
    fn outcome_lines() {
        let id = Uuid::nil();
        assert_eq!(
            describe_outcome(
                id,
                JobState::Succeeded,
                Some(&outcome("exited", Some(0), None))
            ),
            None
        );
        assert_eq!(
            describe_outcome(
                id,
                JobState::Failed,
                Some(&outcome("exited", Some(2), None))
            ),
            None
        );
        let mut o = outcome("wall_timeout", None, Some(9));
        o.detail = Some("wall-clock limit of 1000 ms reached".into());
        assert_eq!(
            describe_outcome(id, JobState::Failed, Some(&o)).unwrap(),
            format!("nekton: job {id} failed: wall_timeout: wall-clock limit of 1000 ms reached")
        );
        assert_eq!(
            describe_outcome(
                id,
                JobState::Failed,
                Some(&outcome("signaled", None, Some(11)))
            )
            .unwrap(),
            format!("nekton: job {id} failed: signaled: signal 11")
        );
        assert_eq!(
            describe_outcome(
                id,
                JobState::Cancelled,
                Some(&outcome("cancelled", None, None))
            )
            .unwrap(),
            format!("nekton: job {id} cancelled: cancelled")
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64mb"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("100b"), Ok(100));
        assert_eq!(parse_size("1_000"), Ok(1000));
        assert_eq!(parse_size(" 8M "), Ok(8 << 20));
        for bad in [
            "",
            "M",
            "-1",
            "1X",
            "1.2.3M",
            "abc",
            "99999999999999999999",
            "20000000T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn durations_and_counts() {
        let bare = parse_duration_ms("1500").unwrap_err();
        assert!(
            bare.contains("no unit") && bare.contains("1500s or 1500ms"),
            "{bare}"
        );
        assert!(parse_duration_ms("").is_err());
        assert_eq!(parse_duration_ms("1500ms"), Ok(1500));
        assert_eq!(parse_duration_ms("2s"), Ok(2000));
        assert_eq!(parse_duration_ms("0.5s"), Ok(500));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert!(parse_duration_ms("2d").is_err());
        assert!(parse_duration_ms("-5").is_err());
        assert_eq!(parse_count("1_000_000"), Ok(1_000_000));
        assert!(parse_count("1e6").is_err());
    }

    #[test]
    fn env_and_labels() {
        assert_eq!(parse_env("A=b"), Ok(("A".into(), "b".into())));
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env("A="), Ok(("A".into(), String::new())));
        assert!(parse_env("=b").is_err());
        assert!(parse_env("").is_err());
        assert!(parse_env("NEKTON_TEST_SURELY_UNSET_VARIABLE_42").is_err());
        // PATH is set in any test environment.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(parse_env("PATH"), Ok(("PATH".into(), path)));
        assert!(parse_key_value("novalue").is_err());
        assert_eq!(parse_key_value("k=v"), Ok(("k".into(), "v".into())));
    }

    #[test]
    fn file_args() {
        assert_eq!(
            parse_file_arg("data/in.txt:input/case1.txt"),
            Ok(FileArg {
                local: "data/in.txt".into(),
                guest: "input/case1.txt".into()
            })
        );
        assert_eq!(
            parse_file_arg("/tmp/x/in.txt"),
            Ok(FileArg {
                local: "/tmp/x/in.txt".into(),
                guest: "in.txt".into()
            })
        );
        assert!(parse_file_arg(":guest").is_err());
        assert!(parse_file_arg("local:").is_err());
        assert!(parse_file_arg("..").is_err());
    }

    #[test]
    fn program_kinds() {
        let hex = "ab".repeat(32);
        assert_eq!(
            classify_program(&format!("sha256:{}", hex.to_uppercase())).unwrap(),
            Program::Digest(format!("sha256:{hex}"))
        );
        assert!(classify_program("sha256:abc").is_err());
        assert_eq!(
            classify_program("hello.wasm").unwrap(),
            Program::LocalModule("hello.wasm".into())
        );
        assert_eq!(
            classify_program("./prog").unwrap(),
            Program::LocalModule("./prog".into())
        );
        assert_eq!(
            classify_program("examples/hello.wat").unwrap(),
            Program::LocalModule("examples/hello.wat".into())
        );
        assert_eq!(
            classify_program("alpine:3.20").unwrap(),
            Program::Image("alpine:3.20".into())
        );
        assert_eq!(
            classify_program("ghcr.io/org/img@sha256:0123").unwrap(),
            Program::Image("ghcr.io/org/img@sha256:0123".into())
        );
        assert!(classify_program("").is_err());
        // An existing file with the Wasm magic is a module whatever its name; any other name
        // that is not path-like is an image.
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("prog");
        std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
        let name = module.display().to_string();
        assert_eq!(
            classify_program(&name).unwrap(),
            Program::LocalModule(module.clone())
        );
        assert_eq!(
            classify_program("127.0.0.1:5000/busybox:1").unwrap(),
            Program::Image("127.0.0.1:5000/busybox:1".into())
        );
    }

    #[test]
    fn content_encoding() {
        assert_eq!(encode_content(b"hi\n".to_vec()), ("hi\n".into(), None));
        assert_eq!(
            encode_content(vec![0xff, 0x00]),
            ("/wA=".into(), Some(Encoding::Base64))
        );
    }

    #[test]
    fn jsonl_parsing() {
        let ok = "{\"image\":\"alpine\",\"args\":[\"echo\",\"1\"]}\n\n  \n{\"module\":\"sha256:00\"}\r\n";
        let jobs = parse_jobs_jsonl(ok).unwrap();
        assert_eq!(jobs.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![1, 4]);
        // Partial specs are fine: the batch defaults may fill them in.
        assert!(parse_jobs_jsonl("{\"args\":[\"x\"]}").is_ok());

        let bad = "{\"image\":\"a\"}\n{\"imgae\":\"a\"}\nnot json\n[1]\n{\"limits\":{\"memory_bytes\":\"big\"}}\n";
        let err = format!("{:#}", parse_jobs_jsonl(bad).unwrap_err());
        assert!(err.contains("4 bad line(s)"), "{err}");
        assert!(err.contains("line 2:") && err.contains("imgae"), "{err}");
        assert!(err.contains("line 3: invalid JSON"), "{err}");
        assert!(err.contains("line 4: expected a JSON object"), "{err}");
        assert!(
            err.contains("line 5:") && err.contains("limits.memory_bytes"),
            "{err}"
        );
        assert!(!err.contains("line 1:"), "{err}");

        assert!(parse_jobs_jsonl("\n \n").is_err());
        let many: String = (0..15).map(|_| "x\n").collect();
        let err = format!("{:#}", parse_jobs_jsonl(&many).unwrap_err());
        assert!(err.contains("and 5 more"), "{err}");
    }

    #[test]
    fn defaults_arg() {
        assert!(parse_defaults(r#"{"image":"alpine","limits":{"wall_time_ms":5}}"#).is_ok());
        assert!(parse_defaults("[1]").is_err());
        assert!(parse_defaults(r#"{"nope":1}"#).is_err());
        assert!(parse_defaults("{").is_err());
        assert!(parse_defaults("@/nonexistent/defaults.json").is_err());
    }

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        cmd: ClientCommand,
    }

    fn parse_with_server(args: &[&str]) -> Result<(ClientCommand, ServerArgs), clap::Error> {
        let m = TestCli::command()
            .try_get_matches_from(std::iter::once("nekton").chain(args.iter().copied()))?;
        TestCli::from_arg_matches(&m).map(|c| (c.cmd, c.server))
    }

    fn parse(args: &[&str]) -> Result<ClientCommand, clap::Error> {
        parse_with_server(args).map(|(cmd, _)| cmd)
    }

    #[test]
    fn cli_definition_is_valid() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn run_arguments() {
        let (cmd, server) = parse_with_server(&[
            "run",
            "-e",
            "A=1",
            "--memory",
            "64M",
            "--priority",
            "-5",
            "--label",
            "k=v",
            "--server",
            "http://x:1",
            "prog.wasm",
            "--",
            "-v",
            "x",
        ])
        .unwrap();
        let ClientCommand::Run(r) = cmd else {
            panic!("not run")
        };
        assert_eq!(r.program, "prog.wasm");
        assert_eq!(r.args, vec!["-v", "x"]);
        assert_eq!(r.env, vec![("A".to_string(), "1".to_string())]);
        assert_eq!(r.memory, Some(64 << 20));
        assert_eq!(r.priority, Some(-5));
        assert_eq!(server.server, "http://x:1");

        let ClientCommand::Run(r) = parse(&["run", "alpine", "sh", "-c", "echo hi"]).unwrap()
        else {
            panic!("not run")
        };
        assert_eq!(r.args, vec!["sh", "-c", "echo hi"]);

        let err = parse(&["run", "--memory", "lots", "alpine"]).unwrap_err();
        assert!(err.to_string().contains("not a size"), "{err}");

        let ClientCommand::Run(r) = parse(&[
            "run",
            "--entrypoint",
            "/bin/sh",
            "-w",
            "/work",
            "-u",
            "1000:1000",
            "--runtime",
            "container",
            "127.0.0.1:5000/busybox:1",
            "--",
            "-c",
            "exit 7",
        ])
        .unwrap() else {
            panic!("not run")
        };
        assert_eq!(r.entrypoint.as_deref(), Some("/bin/sh"));
        assert_eq!(r.workdir.as_deref(), Some("/work"));
        assert_eq!(r.user.as_deref(), Some("1000:1000"));
        assert_eq!(r.runtime, Some(RuntimeKind::Container));
        assert_eq!(r.args, vec!["-c", "exit 7"]);

        for args in [
            &["image", "pull", "--always", "busybox"][..],
            &["image", "ls", "--json"],
            &["image", "rm", "a", "b"],
            &["image", "import", "dir", "--reference", "x:1"],
            &["image", "gc"],
        ] {
            assert!(
                matches!(parse(args).unwrap(), ClientCommand::Image(_)),
                "{args:?}"
            );
        }
        assert!(parse(&["image", "rm"]).is_err());
    }

    #[test]
    fn jobs_arguments() {
        let cmd = parse(&[
            "jobs", "ls", "--state", "running", "--label", "a=b", "--all",
        ])
        .unwrap();
        let ClientCommand::Jobs(JobsArgs {
            command: JobsCommand::Ls {
                state, labels, all, ..
            },
            ..
        }) = cmd
        else {
            panic!("not jobs ls")
        };
        assert_eq!(state, Some(JobState::Running));
        assert_eq!(labels, vec![("a".to_string(), "b".to_string())]);
        assert!(all);
        assert!(parse(&["jobs", "ls", "--state", "done"]).is_err());
        assert!(
            parse(&[
                "jobs",
                "--server",
                "http://y:2",
                "logs",
                "-f",
                &Uuid::nil().to_string()
            ])
            .is_ok()
        );
        assert!(parse(&["jobs", "get", "not-a-uuid"]).is_err());
    }

    #[test]
    fn env_files() {
        let vars = parse_env_file("# comment\n\nA=1\n  B=x=y\nC=\n").unwrap();
        assert_eq!(
            vars,
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "x=y".to_string()),
                ("C".to_string(), String::new()),
            ]
        );
        let err = parse_env_file("A=1\nNEKTON_SURELY_UNSET_VARIABLE_42\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }

    #[test]
    fn formats_and_templates() {
        assert_eq!(parse_format("json"), Ok(Format::Json));
        assert_eq!(parse_format("table"), Ok(Format::Table));
        assert!(parse_format("yaml").unwrap_err().contains("template"));
        assert!(parse_format("{{.id").unwrap_err().contains("unclosed"));
        assert!(parse_format("{{id}}").unwrap_err().contains("leading dot"));
        let v = serde_json::json!({"id": "j1", "state": "failed", "attempt": 2,
            "outcome": {"reason": "exited", "exit_code": 3}, "usage": null});
        assert_eq!(
            render_template(
                "{{.id}} {{ .state }}\\t{{.outcome.reason}}/{{.outcome.exit_code}}",
                &v
            ),
            Ok("j1 failed\texited/3".to_string())
        );
        assert_eq!(
            render_template("{{.usage.wall_ms}}|{{.nope}}", &v),
            Ok("|".into())
        );
        let ClientCommand::Jobs(JobsArgs {
            command: JobsCommand::Ls { quiet, .. },
        }) = parse(&["jobs", "ls", "-q"]).unwrap()
        else {
            panic!("not jobs ls")
        };
        assert!(quiet);
        assert!(parse(&["jobs", "ls", "-q", "--format", "json"]).is_err());
        assert!(parse(&["jobs", "wait"]).is_err(), "wait needs an id");
        let ClientCommand::Jobs(JobsArgs {
            command: JobsCommand::Wait { ids },
        }) = parse(&[
            "jobs",
            "wait",
            &Uuid::nil().to_string(),
            &Uuid::max().to_string(),
        ])
        .unwrap()
        else {
            panic!("not jobs wait")
        };
        assert_eq!(ids.len(), 2);
    }

    #[test]
    fn server_flag_goes_before_or_after_the_subcommand() {
        for args in [
            &["--server", "http://h:1", "jobs", "ls"][..],
            &["jobs", "--server", "http://h:1", "ls"][..],
            &["jobs", "ls", "--server", "http://h:1"][..],
            &["--server", "http://h:1", "image", "ls"][..],
            &["batch", "submit", "x.jsonl", "--server", "http://h:1"][..],
        ] {
            let (_, server) = parse_with_server(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(server.server, "http://h:1", "{args:?}");
        }
    }

    #[test]
    fn table_renders() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "id": Uuid::nil(), "state": "failed", "attempt": 1, "max_attempts": 3,
            "queue": "default", "priority": 0, "labels": {}, "program": "alpine",
            "cancel_requested": false, "created_at": "2024-05-01T12:00:00Z",
            "started_at": null, "finished_at": null,
            "outcome": {"reason": "exited", "exit_code": 2, "signal": null}, "usage": null
        }))
        .unwrap();
        let created = time_cell(&job.created_at);
        let t = jobs_table(&[job]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID"), "{t}");
        assert!(
            lines[1].contains("failed") && lines[1].contains("exit 2"),
            "{t}"
        );
        // Local time with its offset (table_times_are_local_with_their_offset pins the format).
        assert!(lines[1].ends_with(&created), "{t}");
    }
}
