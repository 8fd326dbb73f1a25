//! The `nekton` binary: `serve` (API + worker + embedded PostgreSQL), `api`, `worker`, `migrate`,
//! `openapi`, and the client commands (`run`, `jobs`, `batch`, `module`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use nekton::api::auth::AuthMode;
use nekton::config::{LimitPolicy, QueueTiming};
use nekton::images::ImageOptions;
use nekton::server::{self, Database, ProcessOptions};

#[derive(Parser)]
#[command(
    name = "nekton",
    version,
    about = "Sandboxed job execution: a job API, workers, and their CLI"
)]
struct Cli {
    /// Where the API server is (client commands; before or after the subcommand).
    #[command(flatten)]
    server: nekton::cli::ServerArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and a worker in one process. Without --database-url, starts a private
    /// PostgreSQL in the state directory.
    Serve {
        #[command(flatten)]
        common: ServiceArgs,
        #[arg(long, env = "NEKTON_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        access: AccessArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        images: ImageArgs,
        /// Once up, run a demo job through the API and print its output and record.
        #[arg(long)]
        demo: bool,
        /// With --demo: stop after the demo job instead of serving on.
        #[arg(long, requires = "demo")]
        exit_after_demo: bool,
    },
    /// Run only the API (needs --database-url shared with the workers).
    Api {
        #[command(flatten)]
        common: ServiceArgs,
        #[arg(long, env = "NEKTON_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Run only a worker (needs --database-url shared with the API).
    Worker {
        #[command(flatten)]
        common: ServiceArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        images: ImageArgs,
    },
    /// Apply the database migrations and exit.
    Migrate {
        #[command(flatten)]
        common: ServiceArgs,
    },
    /// Print the OpenAPI document of the v1 API.
    Openapi,
    /// Print a shell completion script: `nekton completions bash > /etc/bash_completion.d/nekton`,
    /// `nekton completions zsh > "${fpath[1]}/_nekton"`, `nekton completions fish >
    /// ~/.config/fish/completions/nekton.fish`.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Client(nekton::cli::ClientCommand),
}

/// Who may use the API.
#[derive(Args, Clone)]
struct AccessArgs {
    /// `on`: every /v1 request needs a token (the first start writes an admin token to
    /// <state-dir>/admin.token). `off`: no tokens, everyone acts as the default tenant with every
    /// scope — refused unless every listen address is loopback.
    #[arg(long, env = "NEKTON_AUTH", default_value = "on", value_parser = ["on", "off"])]
    auth: String,
    /// Also serve /metrics on this address without a token (for a Prometheus scraper); on the
    /// API address /metrics needs an admin token.
    #[arg(long, env = "NEKTON_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// An admin token (`nk_...`) to accept instead of writing a new one to
    /// <state-dir>/admin.token: for API replicas with a read-only state, fed from a secret.
    #[arg(
        long,
        env = "NEKTON_BOOTSTRAP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    bootstrap_token: Option<String>,
    /// Let browser pages from this exact origin call the API (CORS), e.g.
    /// `http://127.0.0.1:5173` (repeatable; env: comma-separated). `*` is refused: tokens are
    /// involved. Default: none, no CORS headers (the console at /ui needs none).
    #[arg(
        long = "cors-origin",
        env = "NEKTON_CORS_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ',',
        value_parser = parse_cors_origin
    )]
    cors_origins: Vec<String>,
}

/// Checks a `--cors-origin` at parse time, so `*` or a URL with a path is a usage error.
fn parse_cors_origin(s: &str) -> Result<String, String> {
    nekton::api::cors::parse_origin(s)?;
    Ok(s.trim().to_string())
}

impl AccessArgs {
    fn mode(&self) -> AuthMode {
        if self.auth == "off" {
            AuthMode::Off
        } else {
            AuthMode::On
        }
    }
}

#[derive(Args, Clone)]
struct ServiceArgs {
    /// PostgreSQL URL. Without it, `serve` and `migrate` use the embedded server.
    #[arg(long, env = "NEKTON_DATABASE_URL")]
    database_url: Option<String>,
    /// State directory: embedded PostgreSQL, compiled-module cache, image store (`images/`),
    /// container state (`containers/`).
    #[arg(long, env = "NEKTON_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Database connections of this process.
    #[arg(long, env = "NEKTON_DB_CONNECTIONS", default_value_t = 20)]
    db_connections: u32,
    /// Default wall-time limit of a job, in ms.
    #[arg(long, env = "NEKTON_DEFAULT_WALL_TIME_MS", default_value_t = LimitPolicy::default().default_wall_time_ms)]
    default_wall_time_ms: u64,
    /// Largest wall-time limit a job may ask for, in ms.
    #[arg(long, env = "NEKTON_MAX_WALL_TIME_MS", default_value_t = LimitPolicy::default().max_wall_time_ms)]
    max_wall_time_ms: u64,
    /// Default memory limit of a job, in bytes.
    #[arg(long, env = "NEKTON_DEFAULT_MEMORY_BYTES", default_value_t = LimitPolicy::default().default_memory_bytes)]
    default_memory_bytes: u64,
    /// Largest memory limit a job may ask for, in bytes.
    #[arg(long, env = "NEKTON_MAX_MEMORY_BYTES", default_value_t = LimitPolicy::default().max_memory_bytes)]
    max_memory_bytes: u64,
    /// Default output kept per stream, in bytes.
    #[arg(long, env = "NEKTON_DEFAULT_OUTPUT_BYTES", default_value_t = LimitPolicy::default().default_output_bytes)]
    default_output_bytes: u64,
    /// Largest Wasm module accepted, in bytes: uploads past it get 413, and workers refuse to load
    /// larger modules.
    #[arg(long, env = "NEKTON_MAX_MODULE_BYTES", default_value_t = LimitPolicy::default().max_module_bytes)]
    max_module_bytes: usize,
    /// Artifacts: bytes kept of one file a job's `artifacts` match (a larger one is cut and
    /// flagged `truncated`).
    #[arg(long, env = "NEKTON_ARTIFACT_FILE_BYTES", default_value_t = LimitPolicy::default().artifact_file_bytes)]
    artifact_file_bytes: u64,
    /// Artifacts: bytes kept over all files of one job run.
    #[arg(long, env = "NEKTON_ARTIFACT_TOTAL_BYTES", default_value_t = LimitPolicy::default().artifact_total_bytes)]
    artifact_total_bytes: u64,
    /// Artifacts: files kept of one job run.
    #[arg(long, env = "NEKTON_ARTIFACT_FILES", default_value_t = LimitPolicy::default().artifact_files)]
    artifact_files: u64,
    /// Event streams (SSE: job logs, batch completions) this API process serves at once; a
    /// stream past it is refused with 503 and `Retry-After: 1` (each costs a task and a small
    /// buffer; see docs/operations.md).
    #[arg(long, env = "NEKTON_MAX_STREAMS", default_value_t = LimitPolicy::default().max_streams)]
    max_streams: usize,
    /// Fuel budget of a Wasm job that sets none (default: none, fuel is still counted).
    #[arg(long, env = "NEKTON_DEFAULT_FUEL")]
    default_fuel: Option<u64>,
    /// Lease of a claimed job, in seconds: a worker silent this long loses its jobs to the rescuer.
    #[arg(long, env = "NEKTON_LEASE_SECS", default_value_t = 30)]
    lease_secs: u64,
    /// Keep finished jobs and their logs this many hours.
    #[arg(long, env = "NEKTON_RETENTION_HOURS", default_value_t = 168)]
    retention_hours: u64,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "NEKTON_LOG_JSON")]
    log_json: bool,
    /// Export spans (HTTP requests, job submissions, and each attempt's claim, run and
    /// completion) over OTLP/HTTP (JSON) to this collector base URL, e.g.
    /// `http://127.0.0.1:4318` (`/v1/traces` is appended). Default: no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
}

#[derive(Args, Clone)]
struct WorkerArgs {
    /// Jobs this worker runs at once (also the size of its Wasm instance pool).
    #[arg(long, env = "NEKTON_SLOTS", default_value_t = 128)]
    slots: usize,
    /// Of those, jobs that may run in a container (image jobs) at once; at most --slots. 0: this
    /// worker runs no image jobs (they wait for a worker that does).
    #[arg(long, env = "NEKTON_CONTAINER_SLOTS", default_value_t = 32)]
    container_slots: usize,
    /// Queues to take jobs from (comma-separated).
    #[arg(
        long,
        env = "NEKTON_QUEUES",
        default_value = "default",
        value_delimiter = ','
    )]
    queues: Vec<String>,
    /// On SIGTERM, how long running jobs may finish before they are stopped and requeued (s).
    #[arg(long, env = "NEKTON_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    shutdown_grace_secs: u64,
    /// Let webhook deliveries reach this range although the address policy refuses it
    /// (loopback, private, link-local, metadata, ...): a CIDR or one address (repeatable; env:
    /// comma-separated), e.g. `10.1.0.0/16` for receivers on your own network. Default: public
    /// addresses only.
    #[arg(
        long = "webhook-allow",
        env = "NEKTON_WEBHOOK_ALLOW",
        value_name = "CIDR",
        value_delimiter = ',',
        value_parser = parse_cidr
    )]
    webhook_allow: Vec<ipnet::IpNet>,
    /// Tests: the wait after a webhook's first failed attempt, in ms (doubling from there).
    #[arg(long, env = "NEKTON_WEBHOOK_RETRY_FIRST_MS", hide = true)]
    webhook_retry_first_ms: Option<u64>,
    /// Tests: how long a claimed webhook delivery belongs to this process, in ms.
    #[arg(long, env = "NEKTON_WEBHOOK_LEASE_MS", hide = true)]
    webhook_lease_ms: Option<u64>,
    /// Tests: the timeout of one webhook attempt, in ms.
    #[arg(long, env = "NEKTON_WEBHOOK_TIMEOUT_MS", hide = true)]
    webhook_timeout_ms: Option<u64>,
    /// Tests: how often the webhook outbox is polled, in ms.
    #[arg(long, env = "NEKTON_WEBHOOK_POLL_MS", hide = true)]
    webhook_poll_ms: Option<u64>,
}

/// A CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address (`127.0.0.1`).
fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| format!("{s:?} is not a CIDR (like 10.1.0.0/16) or an IP address"))
}

impl WorkerArgs {
    fn webhooks(&self) -> nekton::webhooks::WebhookOptions {
        let mut w = nekton::webhooks::WebhookOptions {
            allow: self.webhook_allow.clone(),
            ..Default::default()
        };
        if let Some(ms) = self.webhook_retry_first_ms {
            w.retry =
                nekton::webhooks::schedule::RetrySchedule::quick(Duration::from_millis(ms.max(1)));
        }
        if let Some(ms) = self.webhook_lease_ms {
            w.lease = Duration::from_millis(ms.max(1));
        }
        if let Some(ms) = self.webhook_timeout_ms {
            w.timeout = Duration::from_millis(ms.max(1));
            w.connect_timeout = w.connect_timeout.min(w.timeout);
        }
        if let Some(ms) = self.webhook_poll_ms {
            w.poll = Duration::from_millis(ms.max(1));
        }
        w
    }
}

/// How a worker reaches image registries.
#[derive(Args, Clone, Default)]
struct ImageArgs {
    /// A registry (`host:port`, as written in image references) to reach over plain HTTP
    /// (repeatable; env: comma-separated). Every other registry is HTTPS only.
    #[arg(
        long = "insecure-registry",
        env = "NEKTON_INSECURE_REGISTRIES",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// Only pull images from these registries (repeatable; env: comma-separated; `docker.io` for
    /// Docker Hub). Default: any registry.
    #[arg(
        long = "allowed-registry",
        env = "NEKTON_ALLOWED_REGISTRIES",
        value_name = "HOST[:PORT]",
        value_delimiter = ','
    )]
    allowed_registries: Vec<String>,
    /// Registry credentials: a Docker-style config.json (`{"auths": {"HOST": {"auth":
    /// base64(user:password)}}}`, or `username`+`password`, or `registrytoken`).
    #[arg(
        long = "registry-auth",
        env = "NEKTON_REGISTRY_AUTH",
        value_name = "FILE"
    )]
    registry_auth: Option<PathBuf>,
    /// Where container jobs' cgroups go: a path from the root of each cgroup hierarchy (jobs
    /// use `<path>/nekton-jobs/<job>`). Default: below the worker's own cgroup.
    #[arg(
        long = "cgroup-parent",
        env = "NEKTON_CGROUP_PARENT",
        value_name = "PATH"
    )]
    cgroup_parent: Option<String>,
    /// A cgroup2 mount for the job cgroups, when the host's controllers are on a unified
    /// hierarchy mounted elsewhere than /sys/fs/cgroup (e.g. the hybrid layout's
    /// /sys/fs/cgroup/unified, after moving memory, cpu and pids there). Default:
    /// /sys/fs/cgroup when it is cgroup2, else the v1 hierarchies.
    #[arg(long = "cgroup-root", env = "NEKTON_CGROUP_ROOT", value_name = "DIR")]
    cgroup_root: Option<PathBuf>,
    /// User namespaces of container jobs (rootless): `auto` (on where the host has idmapped
    /// mounts on the state dir's filesystem, else off with a warning), `on` (refuse container
    /// jobs without them), `off` (a job's root is the host's root).
    #[arg(long, env = "NEKTON_USERNS", value_name = "auto|on|off", default_value = "auto", value_parser = parse_userns_mode)]
    userns: container_backend::UsernsMode,
    /// First host uid/gid of the jobs' id ranges (default 1879048192 = 0x70000000, a block no
    /// distribution or systemd allocates).
    #[arg(long, env = "NEKTON_USERNS_BASE", value_name = "ID", default_value_t = container_backend::UsernsConfig::default().base)]
    userns_base: u32,
    /// Host ids per range: a job sees uids/gids 0..SIZE (default 65536).
    #[arg(long, env = "NEKTON_USERNS_SIZE", value_name = "IDS", default_value_t = container_backend::UsernsConfig::default().size)]
    userns_size: u32,
    /// How many containers run at once with host ids of their own (more wait for a range).
    /// Default: slots × slots (a test suite runs up to `slots` cases at once), capped at the
    /// ranges that fit below 2130706432 (or 2^31 for a higher base).
    #[arg(long, env = "NEKTON_USERNS_RANGES", value_name = "N")]
    userns_ranges: Option<u32>,
    /// Largest extracted size of one image layer (file contents), e.g. 8G. A pull past it fails
    /// with `image_error`, nothing stored. Default 8 GiB.
    #[arg(long, env = "NEKTON_IMAGE_MAX_LAYER_BYTES", value_name = "BYTES", value_parser = nekton::cli::commands::parse_size)]
    image_max_layer_bytes: Option<u64>,
    /// Largest extracted size of one image (all its layers). Default 32 GiB.
    #[arg(long, env = "NEKTON_IMAGE_MAX_IMAGE_BYTES", value_name = "BYTES", value_parser = nekton::cli::commands::parse_size)]
    image_max_image_bytes: Option<u64>,
    /// Largest extracted size of all images in this worker's store together (gc frees space).
    /// Default: no cap.
    #[arg(long, env = "NEKTON_IMAGE_MAX_STORE_BYTES", value_name = "BYTES", value_parser = nekton::cli::commands::parse_size)]
    image_max_store_bytes: Option<u64>,
    #[command(flatten)]
    network: NetworkArgs,
}

/// Bridge networking of container jobs (`network: bridge`) on this worker host.
#[derive(Args, Clone)]
struct NetworkArgs {
    /// Do not set up bridge networking: `network: bridge` jobs end with `spec_error`.
    #[arg(long, env = "NEKTON_NO_BRIDGE_NETWORK")]
    no_bridge_network: bool,
    /// The host bridge the jobs' veths join (≤ 15 characters).
    #[arg(long, env = "NEKTON_NETWORK_BRIDGE", default_value = "nekton0")]
    network_bridge: String,
    /// The job subnet; its first address is the bridge's (the jobs' gateway).
    #[arg(long, env = "NEKTON_NETWORK_SUBNET", default_value = "10.88.0.0/16", value_parser = parse_net)]
    network_subnet: container_backend::Ipv4Net,
    /// DNS servers for the jobs' /etc/resolv.conf (repeatable; env: comma-separated). Default:
    /// the host's (non-loopback) resolvers.
    #[arg(
        long = "network-dns",
        env = "NEKTON_NETWORK_DNS",
        value_name = "IPV4",
        value_delimiter = ','
    )]
    network_dns: Vec<std::net::Ipv4Addr>,
    /// A destination jobs may reach despite the isolation rules (host addresses, 169.254/16):
    /// `CIDR` or `CIDR:PORT` (repeatable; env: comma-separated).
    #[arg(long = "network-allow", env = "NEKTON_NETWORK_ALLOW", value_name = "CIDR[:PORT]", value_delimiter = ',', value_parser = parse_allowed)]
    network_allow: Vec<container_backend::Allowed>,
    /// The nftables table nekton owns (`inet <name>`).
    #[arg(long, env = "NEKTON_NETWORK_TABLE", default_value = "nekton")]
    network_table: String,
    /// Remove nekton's bridge, nftables table, job veths, conntrack entries and address leases
    /// from this host, then exit (stop the host's workers first).
    #[arg(long)]
    cleanup_network: bool,
}

fn parse_net(s: &str) -> Result<container_backend::Ipv4Net, String> {
    s.parse()
}

fn parse_allowed(s: &str) -> Result<container_backend::Allowed, String> {
    s.parse()
}

impl Default for NetworkArgs {
    fn default() -> Self {
        Self {
            no_bridge_network: true,
            network_bridge: String::new(),
            network_subnet: container_backend::BridgeConfig::default().subnet,
            network_dns: Vec::new(),
            network_allow: Vec::new(),
            network_table: String::new(),
            cleanup_network: false,
        }
    }
}

impl NetworkArgs {
    fn config(&self) -> container_backend::BridgeConfig {
        container_backend::BridgeConfig {
            bridge: self.network_bridge.clone(),
            subnet: self.network_subnet,
            dns: self.network_dns.clone(),
            allow: self.network_allow.clone(),
            table: self.network_table.clone(),
            lease_dir: None,
        }
    }

    /// `--cleanup-network`: removes nekton's network from the host and reports what went.
    fn cleanup(&self) -> anyhow::Result<()> {
        let report = container_backend::cleanup_network(&self.config())
            .map_err(|e| anyhow::anyhow!("cleaning the bridge network: {e}"))?;
        println!(
            "table inet {}: {}; bridge {}: {}; job veths removed: {}; address leases removed: {}",
            self.network_table,
            if report.table_removed {
                "removed"
            } else {
                "absent"
            },
            self.network_bridge,
            if report.bridge_removed {
                "removed"
            } else {
                "absent"
            },
            report.veths_removed.len(),
            report.leases_removed
        );
        Ok(())
    }
}

impl ImageArgs {
    fn store_limits(&self) -> image_store::StoreLimits {
        let mut limits = image_store::StoreLimits::default();
        if let Some(b) = self.image_max_layer_bytes {
            limits.extract.max_bytes = b;
        }
        if let Some(b) = self.image_max_image_bytes {
            limits.max_image_unpacked_bytes = b;
        }
        if let Some(b) = self.image_max_store_bytes {
            limits.max_store_unpacked_bytes = b;
        }
        limits
    }

    /// The user namespace settings for a worker of `slots` slots.
    fn userns_config(&self, slots: usize) -> container_backend::UsernsConfig {
        let fit =
            container_backend::UsernsConfig::ranges_that_fit(self.userns_base, self.userns_size);
        let wanted = u32::try_from(slots.saturating_mul(slots)).unwrap_or(u32::MAX);
        container_backend::UsernsConfig {
            mode: self.userns,
            base: self.userns_base,
            size: self.userns_size,
            ranges: self.userns_ranges.unwrap_or(wanted.clamp(1, fit)),
        }
    }

    fn options(&self) -> ImageOptions {
        let clean = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let allowed = clean(&self.allowed_registries);
        ImageOptions {
            insecure_registries: clean(&self.insecure_registries),
            allowed_registries: (!allowed.is_empty()).then_some(allowed),
            registry_auth: self.registry_auth.clone(),
            cgroup_parent: self.cgroup_parent.clone(),
            cgroup_root: self.cgroup_root.clone(),
            userns: self.userns_config(1),
            store_limits: self.store_limits(),
            network: (!self.network.no_bridge_network).then(|| self.network.config()),
        }
    }
}

impl ServiceArgs {
    fn policy(&self) -> LimitPolicy {
        LimitPolicy {
            default_wall_time_ms: self.default_wall_time_ms,
            max_wall_time_ms: self.max_wall_time_ms,
            default_memory_bytes: self.default_memory_bytes,
            max_memory_bytes: self.max_memory_bytes,
            default_output_bytes: self.default_output_bytes,
            default_fuel: self.default_fuel,
            max_module_bytes: self.max_module_bytes,
            artifact_file_bytes: self.artifact_file_bytes,
            artifact_total_bytes: self.artifact_total_bytes,
            artifact_files: self.artifact_files,
            max_streams: self.max_streams,
            ..LimitPolicy::default()
        }
    }

    fn timing(&self) -> QueueTiming {
        let mut t = QueueTiming::with_lease(Duration::from_secs(self.lease_secs.max(1)));
        t.retention = Duration::from_secs(self.retention_hours * 3600);
        t
    }

    fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(server::default_state_dir)
    }

    fn require_url(&self, what: &str) -> anyhow::Result<&str> {
        self.database_url.as_deref().with_context(|| {
            format!("`nekton {what}` needs --database-url (or NEKTON_DATABASE_URL) shared by the API and the workers; `nekton serve` runs everything with an embedded database")
        })
    }
}

fn parse_userns_mode(s: &str) -> Result<container_backend::UsernsMode, String> {
    s.parse()
}

/// Logs (and, with --otlp-endpoint, the span export) of a service process.
fn init_tracing(common: &ServiceArgs) -> anyhow::Result<nekton::telemetry::Telemetry> {
    nekton::telemetry::init(common.log_json, common.otlp_endpoint.as_deref())
}

fn options(
    common: &ServiceArgs,
    api: Option<(SocketAddr, &AccessArgs)>,
    worker: Option<&WorkerArgs>,
    images: &ImageArgs,
) -> ProcessOptions {
    ProcessOptions {
        auth: api.map_or(AuthMode::On, |(_, a)| a.mode()),
        metrics_listen: api.and_then(|(_, a)| a.metrics_listen),
        bootstrap_token: api.and_then(|(_, a)| a.bootstrap_token.clone()),
        cors_origins: api.map(|(_, a)| a.cors_origins.clone()).unwrap_or_default(),
        api: api.map(|(addr, _)| addr),
        worker_slots: worker.map(|w| w.slots.max(1)),
        container_slots: worker.map(|w| w.container_slots.min(w.slots.max(1))),
        queues: worker
            .map(|w| w.queues.clone())
            .unwrap_or_else(|| vec!["default".into()]),
        state_dir: common.state_dir(),
        policy: common.policy(),
        timing: common.timing(),
        shutdown_grace: Duration::from_secs(worker.map_or(30, |w| w.shutdown_grace_secs)),
        images: ImageOptions {
            userns: images
                .userns_config(worker.map_or(1, |w| w.container_slots.clamp(1, w.slots.max(1)))),
            ..images.options()
        },
        webhooks: worker.map(WorkerArgs::webhooks).unwrap_or_default(),
        // Without a URL the database is the embedded one, which no other process uses.
        private_database: common.database_url.is_none(),
    }
}

async fn serve_until_signal(
    db: Database,
    opts: ProcessOptions,
    demo: Option<bool>,
) -> anyhow::Result<()> {
    let state_dir = opts.state_dir.clone();
    let mut running = server::start(db.pool.clone(), opts).await?;
    let stop = running.stop_token();
    let mut result = Ok(());
    if let (Some(_), Some(addr)) = (&running.admin_token, running.api_addr) {
        let path = server::admin_token_path(&state_dir);
        eprintln!(
            "nekton: API on http://{addr}; admin token in {} (the CLI on this machine reads it; `nekton token create` makes tokens for others); web console: http://{addr}{}",
            path.display(),
            nekton::api::console::PATH
        );
    }
    if let (Some(exit_after), Some(addr)) = (demo, running.api_addr) {
        let outcome =
            nekton::demo::run_demo(&format!("http://{addr}"), running.admin_token.as_deref()).await;
        if let Err(e) = &outcome {
            eprintln!("demo failed: {e:#}");
        }
        if exit_after || outcome.is_err() {
            result = outcome;
            stop.cancel();
        } else {
            println!("nekton is serving on http://{addr} — press Ctrl-C to stop");
        }
    }
    tokio::select! {
        _ = server::shutdown_signal() => stop.cancel(),
        _ = stop.cancelled() => {}
    }
    let stopped = running.wait().await;
    db.close().await;
    result.and(stopped)
}

async fn main_inner(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve {
            common,
            listen,
            access,
            worker,
            images,
            demo,
            exit_after_demo,
        } => {
            let telemetry = init_tracing(&common)?;
            let result = async {
                if images.network.cleanup_network {
                    images.network.cleanup()?;
                    return Ok(0);
                }
                let opts = options(&common, Some((listen, &access)), Some(&worker), &images);
                server::check_auth_mode(&opts)?;
                let db = Database::open(
                    common.database_url.as_deref(),
                    &common.state_dir(),
                    common.db_connections,
                )
                .await?;
                serve_until_signal(db, opts, demo.then_some(exit_after_demo)).await?;
                Ok(0)
            }
            .await;
            telemetry.shutdown().await;
            result
        }
        Command::Api {
            common,
            listen,
            access,
        } => {
            let telemetry = init_tracing(&common)?;
            let result = async {
                let opts = options(
                    &common,
                    Some((listen, &access)),
                    None,
                    &ImageArgs::default(),
                );
                server::check_auth_mode(&opts)?;
                let db = Database::open(
                    Some(common.require_url("api")?),
                    &common.state_dir(),
                    common.db_connections,
                )
                .await?;
                serve_until_signal(db, opts, None).await?;
                Ok(0)
            }
            .await;
            telemetry.shutdown().await;
            result
        }
        Command::Worker {
            common,
            worker,
            images,
        } => {
            let telemetry = init_tracing(&common)?;
            let result = async {
                if images.network.cleanup_network {
                    images.network.cleanup()?;
                    return Ok(0);
                }
                let db = Database::open(
                    Some(common.require_url("worker")?),
                    &common.state_dir(),
                    common.db_connections,
                )
                .await?;
                serve_until_signal(db, options(&common, None, Some(&worker), &images), None)
                    .await?;
                Ok(0)
            }
            .await;
            telemetry.shutdown().await;
            result
        }
        Command::Migrate { common } => {
            // Logs only: nothing to trace.
            nekton::telemetry::init(common.log_json, None)?;
            let db = Database::open(common.database_url.as_deref(), &common.state_dir(), 2).await?;
            println!("migrations applied");
            db.close().await;
            Ok(0)
        }
        Command::Openapi => {
            nekton::outln!("{}", nekton::api::openapi().to_pretty_json()?)?;
            Ok(0)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "nekton", &mut script);
            nekton::out!("{}", String::from_utf8_lossy(&script))?;
            Ok(0)
        }
        Command::Client(cmd) => Ok(nekton::cli::execute_or_report(cmd, &cli.server).await),
    }
}

/// Lifts the soft limit on open descriptors to the hard one: every SSE client, database
/// connection and job pipe is a descriptor, and distributions still default the soft limit to
/// 1024 (Go and nginx do the same at start). Container jobs set their own limits.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        eprintln!("nekton: cannot raise the open-files limit from {soft} to {hard}: {e}");
    }
}

#[tokio::main]
async fn main() {
    raise_open_files_limit();
    let cli = Cli::parse();
    let code = match main_inner(cli).await {
        Ok(code) => code,
        Err(e) if nekton::cli::is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("nekton: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
