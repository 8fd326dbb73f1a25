//! Assembling a nekton process: the database (a URL, or the embedded server), migrations, the
//! Wasm backend, images and the container backend (worker processes), the worker and the API, and an orderly shutdown of all of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use runtime_core::Backend;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::auth::AuthMode;
use crate::api::{self, AppState};
use crate::config::{LimitPolicy, QueueTiming};
use crate::images::{self, ImageOptions};
use crate::metrics::Metrics;
use crate::pg::EmbeddedOptions;
use crate::pg::supervisor::Supervisor;
use crate::store::queue::Notices;
use crate::webhooks::WebhookOptions;
use crate::worker::route::ImageModuleStore;
use crate::worker::{ExecLanes, PgModuleStore, Worker, WorkerConfig};
use image_store::ImageStore;

/// Where a process keeps its state when none is given: `$NEKTON_STATE_DIR` is read by clap;
/// this is the fallback — `/var/lib/nekton` for root (PostgreSQL's account must be able to reach
/// it), `$XDG_DATA_HOME/nekton` or `~/.local/share/nekton` otherwise.
pub fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/nekton");
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("nekton");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/nekton"),
        None => PathBuf::from("/tmp/nekton"),
    }
}

/// A pooled connection idle for at least this long is pinged before it is handed out (a kept
/// connection unused that long is given back rather than used: [`crate::store::Held::IDLE`]).
const PING_IDLE_AFTER: Duration = crate::store::Held::IDLE;

/// The pool settings of a service process.
///
/// sqlx pings a connection (a Sync and its ReadyForQuery: one round trip) every time it is taken
/// from the pool, by default — before every statement of a job's path, where it cost more than
/// the statements themselves for a lone job's reads. Only a connection idle for
/// [`PING_IDLE_AFTER`] is pinged here: one used within the last second was working then, and
/// sqlx still pings every connection when it goes back to the pool (off the caller's path), so
/// a connection broken while in use never returns. What is left is a connection that breaks
/// while it waits less than a second: after a database crash, at most one statement per such
/// connection fails — with the connection error the API answers as 503 + `Retry-After` and the
/// worker retries — and the database was down then anyway.
fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// A connection pool sized for a service process.
pub async fn pool_from_options(
    options: PgConnectOptions,
    max_connections: u32,
) -> anyhow::Result<PgPool> {
    pool_options(max_connections)
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")
}

/// The database of a process: either the given URL, or the embedded server in `state_dir`.
pub struct Database {
    pub pool: PgPool,
    /// The embedded server, restarted if it dies (see [`crate::pg::supervisor`]).
    pub embedded: Option<Supervisor>,
    /// With a multi-host URL: the task that keeps the pool on the primary
    /// ([`crate::store::hosts`]).
    pub follower: Option<crate::store::hosts::Follower>,
}

impl Database {
    pub async fn open(
        database_url: Option<&str>,
        state_dir: &Path,
        max_connections: u32,
    ) -> anyhow::Result<Self> {
        let (pool, embedded, follower) = match database_url {
            Some(url) => {
                let url = crate::store::hosts::DatabaseUrl::parse(url)?;
                let (pool, follower) =
                    crate::store::hosts::connect(&url, pool_options(max_connections)).await?;
                (pool, None, follower)
            }
            None => {
                let root = state_dir.join("postgres");
                let pg = Supervisor::start(root, EmbeddedOptions::default())
                    .await
                    .context("starting the embedded PostgreSQL (pass --database-url to use your own server)")?;
                pg.create_database_if_missing("nekton").await?;
                (
                    pool_from_options(pg.connect_options("nekton").await, max_connections).await?,
                    Some(pg),
                    None,
                )
            }
        };
        crate::store::migrate(&pool)
            .await
            .context("applying database migrations")?;
        Ok(Self {
            pool,
            embedded,
            follower,
        })
    }

    pub async fn close(self) {
        drop(self.follower);
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            pg.stop().await;
        }
    }
}

/// What a process runs.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Serve the API here (None: no API).
    pub api: Option<SocketAddr>,
    /// Run a worker with this many slots (None: no worker).
    pub worker_slots: Option<usize>,
    /// Of the worker's slots, how many may hold container jobs (None: all of them).
    pub container_slots: Option<usize>,
    pub queues: Vec<String>,
    pub state_dir: PathBuf,
    pub policy: LimitPolicy,
    pub timing: QueueTiming,
    pub shutdown_grace: Duration,
    /// Registries, credentials (used by a process that runs a worker).
    pub images: ImageOptions,
    /// Whether API requests need a token (`--auth off` only on loopback addresses).
    pub auth: AuthMode,
    /// Also serve `/metrics` here, without a token (for a scraper on a private address).
    pub metrics_listen: Option<SocketAddr>,
    /// Webhook delivery (run by a process that runs a worker): the address policy's extra
    /// ranges, retries, timeouts.
    pub webhooks: WebhookOptions,
    /// An admin token the operator hands in (e.g. from a Secret): made valid at start instead of
    /// writing `<state_dir>/admin.token`.
    pub bootstrap_token: Option<String>,
    /// Origins whose browser pages may call the API (`--cors-origin`, exact origins such as
    /// `http://127.0.0.1:5173`; `*` is refused). Empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// No other process uses the database (`nekton serve` on its embedded one, whose socket
    /// only this process's user can reach): with both the API and a worker here, what they store
    /// is told in memory and nothing is NOTIFYed (docs/queue.md §3).
    pub private_database: bool,
}

/// Makes the operator's `token` a live admin token of the default tenant (idempotent: several
/// API replicas may start with the same one). A token that was revoked stays revoked.
pub async fn adopt_admin_token(pool: &PgPool, token: &str) -> anyhow::Result<()> {
    use crate::model::auth::{Scopes, hash_token, looks_like_token, token_hint};
    anyhow::ensure!(
        looks_like_token(token),
        "the bootstrap token is not an API token (`nk_` and 32 letters or digits); make one with \
         `nekton token create` on a running server, or take one from a first start's admin.token"
    );
    let hash = hash_token(token);
    let inserted = crate::store::tenants::adopt_token(
        pool,
        &hash,
        &token_hint(token),
        crate::config::DEFAULT_TENANT,
        "admin (bootstrap token from the operator)",
        Scopes::all(),
    )
    .await?;
    if inserted {
        tracing::info!("registered the operator's bootstrap admin token");
    } else if !crate::store::tenants::token_is_live(pool, &hash).await? {
        tracing::warn!("the bootstrap admin token was revoked or has expired; it stays so");
    }
    Ok(())
}

/// Refuses `--auth off` unless every listen address is loopback: without tokens, anyone who can
/// reach the API could run code on the workers.
pub fn check_auth_mode(options: &ProcessOptions) -> anyhow::Result<()> {
    if options.auth == AuthMode::Off {
        for addr in options.api.iter().chain(options.metrics_listen.iter()) {
            if !addr.ip().is_loopback() {
                anyhow::bail!(
                    "refusing to start with --auth off on {addr}: without tokens anyone who can reach that address \
                     could run jobs and read every job's output; listen on a loopback address (127.0.0.1) or leave auth on"
                );
            }
        }
    }
    Ok(())
}

/// Parses the `--cors-origin` values (refusing `*` and anything that is not an exact origin).
pub fn cors_origins(raw: &[String]) -> anyhow::Result<Vec<axum::http::HeaderValue>> {
    raw.iter()
        .map(|o| api::cors::parse_origin(o).map_err(|e| anyhow::anyhow!("--cors-origin: {e}")))
        .collect()
}

/// The admin token file in a state directory.
pub fn admin_token_path(state_dir: &Path) -> PathBuf {
    state_dir.join("admin.token")
}

/// Makes sure `<state_dir>/admin.token` holds a live admin token: on the first start (or when the
/// file is missing or its token was revoked) a new token of the default tenant with every scope
/// is created and written there (mode 0600). Returns the token.
pub async fn bootstrap_admin_token(pool: &PgPool, state_dir: &Path) -> anyhow::Result<String> {
    use crate::model::auth::{Scopes, hash_token, looks_like_token, new_token};
    use crate::store::tenants;
    let path = admin_token_path(state_dir);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if looks_like_token(existing) && tenants::token_is_live(pool, &hash_token(existing)).await?
        {
            return Ok(existing.to_string());
        }
        tracing::warn!(path = %path.display(), "the admin token file holds no live token; writing a new one");
    }
    let secret = new_token().context("drawing a token from the system's random generator")?;
    let no_file = || {
        format!(
            "cannot write the admin token to {}; give the state directory a writable place \
             (--state-dir), or hand the API its admin token instead (--bootstrap-token / \
             NEKTON_BOOTSTRAP_TOKEN, e.g. from a Kubernetes Secret)",
            path.display()
        )
    };
    // The file first (a read-only state dir fails before anything is stored), then the token,
    // then the file's final name.
    std::fs::create_dir_all(state_dir).with_context(no_file)?;
    let tmp = state_dir.join(format!(".admin.token.{}", std::process::id()));
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(no_file)?;
        writeln!(f, "{}", secret.token).with_context(no_file)?;
        f.sync_all().ok();
    }
    let stored = tenants::create_token(
        pool,
        &tenants::Actor::default(),
        crate::config::DEFAULT_TENANT,
        "admin (written to admin.token at first start)",
        Scopes::all(),
        None,
        &secret,
    )
    .await;
    let stored = match stored {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(anyhow::anyhow!(
            "the default tenant is missing from the database"
        )),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = stored {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &path).with_context(no_file)?;
    tracing::info!(path = %path.display(), "wrote a new admin token");
    Ok(secret.token)
}

/// The runtimes sandboxes run on, apart from the service's own I/O: one for most jobs and one
/// for the jobs of tenants holding less than their share of the worker's slots (the worker's
/// express lane, docs/queue.md "Fair claims across tenants"), so that a light tenant's job is not
/// queued behind every runnable sandbox of a heavy one. One thread per core each; the express
/// runtime's threads are idle unless a light tenant has work.
pub struct ExecRuntime {
    normal: Option<tokio::runtime::Runtime>,
    express: Option<tokio::runtime::Runtime>,
}

impl ExecRuntime {
    pub fn new() -> anyhow::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let build = |name: &str| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(name)
                .enable_all()
                .build()
                .with_context(|| format!("starting the sandbox runtime {name}"))
        };
        Ok(Self {
            normal: Some(build("nekton-sandbox")?),
            express: Some(build("nekton-express")?),
        })
    }

    pub fn lanes(&self) -> ExecLanes {
        let handle = |rt: &Option<tokio::runtime::Runtime>| match rt {
            Some(rt) => rt.handle().clone(),
            None => tokio::runtime::Handle::current(),
        };
        ExecLanes {
            normal: handle(&self.normal),
            express: handle(&self.express),
        }
    }
}

impl Drop for ExecRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one would panic; nothing of it is awaited any more.
        for rt in [self.normal.take(), self.express.take()]
            .into_iter()
            .flatten()
        {
            rt.shutdown_background();
        }
    }
}

/// A started process; stop it with [`Running::shutdown`].
pub struct Running {
    /// Where the API listens (useful with port 0).
    pub api_addr: Option<SocketAddr>,
    /// Where `/metrics` is served without a token, if asked.
    pub metrics_addr: Option<SocketAddr>,
    /// The admin token in `<state_dir>/admin.token` (an API process with auth on).
    pub admin_token: Option<String>,
    pub worker_id: Option<Uuid>,
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
    _exec: Option<ExecRuntime>,
}

impl Running {
    /// Stops claiming, drains the worker (grace period), closes the API; returns the first error.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.wait().await
    }

    /// Waits until every part has stopped (after [`Running::stop_token`] fired).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        while let Some(r) = self.tasks.join_next().await {
            let r = r.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = r {
                tracing::error!(error = %e, "a service task failed");
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }

    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// The Wasm backend of a worker, caching compiled modules under `state_dir/wasm-cache`. Modules
/// come from the image store (Wasm images) when given, else from PostgreSQL (uploads); none
/// larger than `max_module_bytes` (the operator's `--max-module-bytes`).
///
/// Its instance pool holds `slots` instances, the worker's slots: no more Wasm jobs run here at
/// once, and a suite runs no more cases at once than that either (`worker::suite`); past it a
/// case waits for an instance (queueing, not its wall time). Not the backend's default of 256:
/// every pooled instance has an async stack of its own (two mappings: a guard page and the
/// stack), and each container job forks this process once (`container-backend`: the init, P2;
/// P3 is a vfork-style child that copies nothing), copying every mapping — 256 stacks
/// were 512 of the server's ≈ 620 mappings (load-tests/README.md, "A Wasm pool the size of the
/// worker's slots").
pub fn wasm_backend(
    pool: &PgPool,
    state_dir: &Path,
    images: Option<Arc<ImageStore>>,
    max_module_bytes: usize,
    slots: usize,
) -> anyhow::Result<Arc<dyn Backend>> {
    let config = wasm_backend::WasmConfig {
        cache_dir: state_dir.join("wasm-cache"),
        max_module_bytes,
        max_concurrent_instances: pool_instances(slots),
        ..Default::default()
    };
    let modules = ImageModuleStore {
        images,
        pg: PgModuleStore { pool: pool.clone() },
        max_module_bytes: u64::try_from(max_module_bytes).unwrap_or(u64::MAX),
    };
    let backend = wasm_backend::WasmBackend::new(config, Arc::new(modules))
        .context("starting the Wasm backend")?;
    Ok(Arc::new(backend))
}

/// The Wasm instance pool's size for a worker of `slots` slots: one instance per slot (at least
/// one; a count past `u32` is capped).
fn pool_instances(slots: usize) -> u32 {
    u32::try_from(slots.max(1)).unwrap_or(u32::MAX)
}

/// The API's hub, told by the worker in the same process what its writers stored.
struct HubListener(api::hub::Hub);

impl crate::worker::writer::Listener for HubListener {
    fn waited(&self, ids: &[Uuid]) -> crate::store::queue::Ask {
        self.0.waited(ids)
    }

    fn stored(&self, stored: crate::worker::writer::Stored<'_>) {
        self.0
            .stored_locally(stored.output, stored.done, stored.asked, stored.answers)
    }
}

/// Starts the API and/or a worker on `pool`.
pub async fn start(pool: PgPool, options: ProcessOptions) -> anyhow::Result<Running> {
    check_auth_mode(&options)?;
    let cors_origins = cors_origins(&options.cors_origins)?;
    if options.worker_slots.is_some() {
        options
            .webhooks
            .check()
            .map_err(anyhow::Error::msg)
            .context("checking the webhook settings")?;
    }
    let stop = CancellationToken::new();
    let metrics = Metrics::new();
    let local_wake = Arc::new(Notify::new());
    // The API's notification hub, made first so that a worker in this process can tell it of
    // the completions it stores directly.
    let hub = api::hub::Hub::new(metrics.sse_job_reads.clone());
    // The id this process's API names in its job NOTIFYs; its own worker skips them.
    let origin = Uuid::now_v7();
    // Every follower and every worker of a private database is here: tell them in memory.
    let notices =
        if options.private_database && options.api.is_some() && options.worker_slots.is_some() {
            Notices::InProcess
        } else {
            Notices::Notify
        };
    let mut tasks = tokio::task::JoinSet::new();
    let mut api_addr = None;
    let mut metrics_addr = None;
    let mut admin_token = None;
    let mut worker_id = None;
    let mut exec = None;
    let mut image_service = None;
    // The worker's slots, handed lone jobs by the API when both run here.
    let mut handoff = None;

    if let Some(slots) = options.worker_slots {
        let rt = ExecRuntime::new()?;
        let lanes = rt.lanes();
        exec = Some(rt);
        let host = images::start(&options.state_dir, &options.images)?;
        image_service = Some(host.images.clone());
        let backend = wasm_backend(
            &pool,
            &options.state_dir,
            Some(host.images.store().clone()),
            options.policy.max_module_bytes,
            slots,
        )?;
        let config = WorkerConfig {
            id: Uuid::now_v7(),
            queues: options.queues.clone(),
            slots,
            container_slots: options.container_slots.unwrap_or(slots),
            timing: options.timing.clone(),
            shutdown_grace: options.shutdown_grace,
        };
        worker_id = Some(config.id);
        let worker = Worker::new(
            pool.clone(),
            config,
            vec![backend],
            metrics.clone(),
            local_wake.clone(),
            lanes,
        )
        .with_images(host);
        handoff = Some(worker.handoff());
        let worker = match options.api {
            Some(_) => {
                let hub = hub.clone();
                worker
                    .with_on_stored(Arc::new(HubListener(hub)), notices)
                    .with_local_origin(origin)
            }
            None => worker,
        };
        let token = stop.clone();
        tasks.spawn(async move { worker.run(token).await });
        // Webhook deliveries go out from worker processes (the API may be on a host with no
        // business reaching tenants' endpoints).
        tasks.spawn(crate::webhooks::delivery::run(
            pool.clone(),
            options.webhooks.clone(),
            options.timing.retention,
            stop.clone(),
            metrics.clone(),
        ));
    }

    if let Some(addr) = options.api {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the API to {addr}"))?;
        api_addr = Some(listener.local_addr()?);
        let state = AppState::new(
            pool.clone(),
            options.policy.clone(),
            metrics.clone(),
            local_wake.clone(),
        )
        .with_hub(hub)
        .with_origin(origin, notices)
        .with_images(image_service.clone())
        .with_handoff(handoff)
        .with_auth(options.auth)
        .with_cors(cors_origins);
        if options.auth == AuthMode::On {
            match &options.bootstrap_token {
                Some(t) => {
                    adopt_admin_token(&pool, t.trim()).await?;
                    admin_token = Some(t.trim().to_string());
                }
                None => {
                    admin_token = Some(bootstrap_admin_token(&pool, &options.state_dir).await?);
                }
            }
        }
        if let Some(addr) = options.metrics_listen {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics listener to {addr}"))?;
            metrics_addr = Some(listener.local_addr()?);
            let app = axum::Router::new()
                .route(
                    "/metrics",
                    axum::routing::get(api::system::metrics_unauthenticated),
                )
                .with_state(state.clone());
            let token = stop.clone();
            tasks.spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { token.cancelled().await })
                    .await
                    .context("serving /metrics")
            });
        }
        let hub_stop = stop.clone();
        tasks.spawn(state.hub.clone().run(pool.clone(), hub_stop).then_ok());
        let app = api::app(state);
        let token = stop.clone();
        tasks.spawn(async move {
            // Long-lived SSE streams would hold a graceful shutdown forever: give them a moment.
            // Small SSE writes must not wait for delayed ACKs (Nagle): set TCP_NODELAY.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
            });
            let serve = axum::serve(listener, app).with_graceful_shutdown({
                let token = token.clone();
                async move { token.cancelled().await }
            });
            tokio::select! {
                r = serve => r.context("serving HTTP"),
                _ = async { token.cancelled().await; tokio::time::sleep(Duration::from_secs(5)).await } => Ok(()),
            }
        });
        tracing::info!(addr = %api_addr.unwrap_or(addr), "API listening");
    }
    Ok(Running {
        api_addr,
        metrics_addr,
        admin_token,
        worker_id,
        stop,
        tasks,
        _exec: exec,
    })
}

trait ThenOk {
    fn then_ok(self) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
}

impl<F: std::future::Future<Output = ()> + Send> ThenOk for F {
    async fn then_ok(self) -> anyhow::Result<()> {
        self.await;
        Ok(())
    }
}

/// Resolves when the process gets SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the service");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown signal received");
}
