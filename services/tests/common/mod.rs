//! Shared integration-test harness: a fresh database (embedded PostgreSQL unless
//! NEKTON_TEST_DATABASE_URL is set), the API and a worker in this process on 127.0.0.1:0, and
//! clients for them.
//!
//! # Test tiers
//!
//! The workspace's tests come in two tiers, split with one Cargo feature per crate rather than a
//! separate test crate, so that test files stay next to the code they test and keep their names:
//!
//! - **default** — what a plain `cargo test` runs, as any user, with no registry and no particular
//!   kernel: unit tests, the Wasm backend suites, the queue (`queue`), the API through the router
//!   (`api_handlers`) and end to end (`api`), whole processes (`processes`). The embedded
//!   PostgreSQL runs as the current user when that is not root.
//! - **root** — every `[[test]]` target declared with `required-features = ["root-tests"]` in its
//!   crate's Cargo.toml: `container-backend` (`container`, `container_limits`, `container_net`,
//!   `hostile`), `image-store` (`image_extract`, `image_import`, `image_registry`) and this
//!   crate (`images`, `containers`, `hostile`). They need root, namespaces, cgroups, nft,
//!   `gcc -static` or Debian's `docker-registry` — plus two unit tests of the embedded
//!   PostgreSQL (`pg::tests::runs_as_unprivileged_user_when_root`,
//!   `unreachable_data_root_names_the_fix`), which are `ignore`d, with that reason, unless the
//!   feature is on. Run them as root with `--all-features` (or `-p CRATE --features root-tests`);
//!   as elsewhere, a missing prerequisite fails with its name, it never skips.
//!
//! `scripts/test.sh` (CI, as root) always runs both tiers and prints each one's wall time; it
//! finds the root targets with `cargo metadata`, so a new root-only test file needs only its
//! `[[test]]` entry.

#![allow(dead_code)]

pub mod guests;

use std::time::{Duration, Instant};

use nekton::api::types::{Job, JobSpec, LimitsSpec};
use nekton::cli::Client;
use nekton::config::{LimitPolicy, QueueTiming};
use nekton::server::{self, ProcessOptions, Running};
use nekton::testing::TestDb;
use uuid::Uuid;

pub struct Harness {
    pub db: TestDb,
    pub running: Option<Running>,
    pub base: String,
    pub client: Client,
    /// An HTTP client that sends the admin token (the default tenant, every scope).
    pub http: reqwest::Client,
    /// The admin token the server wrote to its state dir (None with `--auth off`).
    pub admin_token: Option<String>,
    pub state_dir: tempfile::TempDir,
}

/// Polls with `client` (as the job's own tenant) until the job is in a final state; fails the
/// test after `timeout`.
pub async fn wait_finished(client: &Client, id: Uuid, timeout: Duration) -> Job {
    let start = Instant::now();
    loop {
        let job = client.get_job(id).await.expect("get job");
        if job.state.is_terminal() {
            return job;
        }
        assert!(
            start.elapsed() < timeout,
            "job {id} still {:?} after {timeout:?}",
            job.state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A counter's value from the text of `GET /metrics`: the line that starts with `name` as printed
/// (labels included, e.g. `nekton_claims_total{result="jobs"}`). None when there is no such line
/// (a labelled series before its first increment).
pub fn counter(metrics: &str, name: &str) -> Option<u64> {
    let key = format!("{name} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.trim().parse().expect("a counter value"))
}

/// A raw HTTP client that sends `Authorization: Bearer <token>` when given.
pub fn http_client(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).expect("token header"),
        );
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

pub fn options(state_dir: &std::path::Path) -> ProcessOptions {
    ProcessOptions {
        api: Some("127.0.0.1:0".parse().unwrap()),
        worker_slots: Some(8),
        container_slots: None,
        queues: vec!["default".into()],
        state_dir: state_dir.to_path_buf(),
        policy: LimitPolicy::default(),
        timing: QueueTiming::default(),
        shutdown_grace: Duration::from_secs(5),
        images: Default::default(),
        auth: nekton::api::auth::AuthMode::On,
        metrics_listen: None,
        webhooks: Default::default(),
        bootstrap_token: None,
        cors_origins: Vec::new(),
        private_database: false,
    }
}

/// API + worker in this process on `pool` (a database the test set up itself), and an admin
/// client of it.
pub async fn start_on(pool: &sqlx::PgPool, state_dir: &std::path::Path) -> (Running, Client) {
    let running = server::start(pool.clone(), options(state_dir))
        .await
        .expect("service starts");
    let client = Client::with_token(
        &format!("http://{}", running.api_addr.expect("api address")),
        running.admin_token.as_deref(),
    )
    .expect("client");
    (running, client)
}

impl Harness {
    /// API + worker in this process.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ProcessOptions)) -> Self {
        if let Ok(filter) = std::env::var("NEKTON_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let db = TestDb::new().await;
        nekton::store::migrate(&db.pool)
            .await
            .expect("migrations apply");
        let state_dir = tempfile::tempdir().expect("temp dir");
        let mut opts = options(state_dir.path());
        tweak(&mut opts);
        let running = server::start(db.pool.clone(), opts)
            .await
            .expect("service starts");
        let base = format!("http://{}", running.api_addr.expect("api address"));
        let admin_token = running.admin_token.clone();
        let client = Client::with_token(&base, admin_token.as_deref()).expect("client");
        Harness {
            db,
            running: Some(running),
            base,
            client,
            http: http_client(admin_token.as_deref()),
            admin_token,
            state_dir,
        }
    }

    /// Creates tenant `name` (unless it exists) and a token of it with `scopes`; returns the token.
    pub async fn tenant_token(&self, name: &str, scopes: &[&str]) -> String {
        let r = self
            .http
            .post(format!("{}/v1/tenants", self.base))
            .json(&serde_json::json!({ "id": name }))
            .send()
            .await
            .expect("create tenant");
        assert!(
            r.status() == 201 || r.status() == 409,
            "creating tenant {name}: {}",
            r.status()
        );
        let r = self
            .http
            .post(format!("{}/v1/tokens", self.base))
            .json(&serde_json::json!({ "tenant": name, "scopes": scopes }))
            .send()
            .await
            .expect("create token");
        assert_eq!(r.status(), 201, "creating a token of {name}");
        let body: serde_json::Value = r.json().await.expect("token JSON");
        body["token"].as_str().expect("token").to_string()
    }

    /// A typed client and a raw HTTP client that send `token`.
    pub fn clients_for(&self, token: &str) -> (Client, reqwest::Client) {
        (
            Client::with_token(&self.base, Some(token)).expect("client"),
            http_client(Some(token)),
        )
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }

    /// Uploads a module, returns its digest.
    pub async fn push(&self, wasm: Vec<u8>) -> String {
        self.client
            .push_module(wasm)
            .await
            .expect("module upload")
            .digest
    }

    pub fn spec(digest: &str) -> JobSpec {
        JobSpec {
            module: Some(digest.to_string()),
            ..Default::default()
        }
    }

    pub fn spec_with_limits(digest: &str, limits: LimitsSpec) -> JobSpec {
        JobSpec {
            module: Some(digest.to_string()),
            limits: Some(limits),
            ..Default::default()
        }
    }

    pub async fn submit(&self, spec: &JobSpec) -> Job {
        self.client
            .submit(spec, None)
            .await
            .expect("job submission")
    }

    /// Polls until the job is in a final state (fails the test after `timeout`).
    pub async fn wait_finished(&self, id: Uuid, timeout: Duration) -> Job {
        wait_finished(&self.client, id, timeout).await
    }

    /// Polls until the job is running.
    pub async fn wait_running(&self, id: Uuid, timeout: Duration) -> Job {
        let start = Instant::now();
        loop {
            let job = self.client.get_job(id).await.expect("get job");
            if job.state == nekton::api::types::JobState::Running {
                return job;
            }
            assert!(
                !job.state.is_terminal(),
                "job {id} finished ({:?}) before it was seen running",
                job.state
            );
            assert!(
                start.elapsed() < timeout,
                "job {id} still {:?} after {timeout:?}",
                job.state
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Submits a JSON job body as is (the wire, not the typed spec); fails the test unless 201.
    pub async fn submit_json(&self, body: &serde_json::Value) -> Job {
        let r = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .json(body)
            .send()
            .await
            .expect("submit");
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 201, "submission refused: {text}");
        serde_json::from_str(&text).expect("a job")
    }

    /// The text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the metrics text")
    }

    /// `GET /v1/jobs/{id}/cases` of a test-suite job.
    pub async fn cases(&self, id: Uuid) -> nekton::api::types::CaseList {
        let r = self
            .http
            .get(format!("{}/v1/jobs/{id}/cases", self.base))
            .send()
            .await
            .expect("cases");
        assert_eq!(r.status(), 200);
        r.json().await.expect("a case list")
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.db.pool)
            .await
            .expect("count")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop_token().cancel();
        }
    }
}

/// A temp dir under /tmp for a `nekton serve` state dir on the embedded PostgreSQL: mode 0755,
/// because PostgreSQL's own account (nekton runs it unprivileged) must reach it.
pub fn serve_state_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
