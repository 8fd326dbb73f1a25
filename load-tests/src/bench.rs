//! What every benchmark shares: the client and server handles, resource accounting around a
//! measured phase, and the shape of a benchmark's results.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use nekton::api::types::{JobSpec, LimitsSpec};
use nekton::cli::Client;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::dbstats::{self, DbSnapshot, DbUse};
use crate::procstat::{self, CpuSnapshot, CpuUse};
use crate::stats::Verdict;

/// Handles to the server under test.
pub struct Ctx {
    /// A client sending the API token (the admin token of a server load-tests started).
    pub client: Client,
    /// The token `client` sends, for benchmarks that make clients of their own.
    pub token: Option<String>,
    /// The server's base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The `nekton serve` process, when known (for CPU accounting).
    pub server_pid: Option<i32>,
    /// More process trees counted with the server's (an external PostgreSQL's postmaster,
    /// `nekton worker` processes): PostgreSQL ones as postgres, others as children.
    pub extra_pids: Vec<i32>,
    /// What `server_pid` is called in the CPU lines ("nekton"; "nekton api" beside workers).
    pub server_label: &'static str,
    /// Direct access to the server's database, when available (statistics, queue-only benchmark).
    pub db: Option<PgPool>,
    /// How long to let PostgreSQL's statistics settle before the "after" reading.
    pub settle: Duration,
}

/// Readings taken when a measured phase starts.
pub struct Mark {
    cpu: CpuSnapshot,
    db: Option<DbSnapshot>,
}

/// What the machine and the database did during a measured phase.
pub struct Resources {
    pub cpu: CpuUse,
    pub db: Option<DbUse>,
    /// Why there are no database figures.
    pub db_note: Option<String>,
    pub jobs: Option<u64>,
}

impl Ctx {
    pub async fn mark(&self) -> Mark {
        let db = match &self.db {
            Some(pool) => dbstats::snapshot(pool).await.ok(),
            None => None,
        };
        Mark {
            cpu: procstat::snapshot_with(self.server_pid, &self.extra_pids, self.server_label),
            db,
        }
    }

    /// Ends a measured phase: CPU at once, database counters after the settle time.
    pub async fn measure(&self, mark: &Mark, jobs: Option<u64>) -> Resources {
        let cpu = CpuUse::between(
            &mark.cpu,
            &procstat::snapshot_with(self.server_pid, &self.extra_pids, self.server_label),
        );
        let (db, db_note) = match (&self.db, &mark.db) {
            (None, _) => (
                None,
                Some("no database access (pass --database-url with --server)".to_string()),
            ),
            (Some(_), None) => (None, Some("the statistics query failed".to_string())),
            (Some(pool), Some(before)) => {
                tokio::time::sleep(self.settle).await;
                match dbstats::snapshot(pool).await {
                    Ok(after) => (Some(DbUse::between(before, &after)), None),
                    Err(e) => (None, Some(format!("{e:#}"))),
                }
            }
        };
        Resources {
            cpu,
            db,
            db_note,
            jobs,
        }
    }
}

impl Resources {
    pub fn lines(&self) -> Vec<String> {
        let mut out = self.cpu.lines(self.jobs);
        match (&self.db, &self.db_note) {
            (Some(db), _) => out.extend(db.lines(self.jobs)),
            (None, Some(note)) => out.push(format!("  postgres: {note}")),
            (None, None) => {}
        }
        out
    }

    pub fn json(&self) -> Value {
        json!({
            "cpu": self.cpu.json(self.jobs),
            "postgres": self.db.as_ref().map(|d| d.json(self.jobs)),
            "postgres_note": self.db_note,
        })
    }
}

/// The results of one benchmark.
pub struct Section {
    pub title: String,
    pub lines: Vec<String>,
    pub verdicts: Vec<Verdict>,
    pub json: Value,
}

/// A job spec running `digest` with a wall-time limit, labelled for the load tests.
pub fn module_spec(digest: &str, bench: &str, wall_time_ms: u64) -> JobSpec {
    JobSpec {
        module: Some(digest.to_string()),
        limits: Some(LimitsSpec {
            wall_time_ms: Some(wall_time_ms),
            ..Default::default()
        }),
        labels: [("load-test".to_string(), bench.to_string())].into(),
        ..Default::default()
    }
}

/// Milliseconds of a duration, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Realtime clock now, in ns since the epoch (the clock the guests read through WASI).
pub fn realtime_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `b - a` in milliseconds.
pub fn delta_ms(a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>) -> f64 {
    (b - a)
        .num_microseconds()
        .map_or(f64::NAN, |us| us as f64 / 1000.0)
}

/// Creates tenant `id` with `settings` through the admin API (as `ctx.client`, which must hold
/// an admin token) and a token of it that may run jobs; returns a client sending that token.
pub async fn tenant_client(ctx: &Ctx, id: &str, settings: Value) -> Result<Client> {
    let mut body = settings;
    body["id"] = json!(id);
    let r = ctx
        .client
        .http()
        .post(ctx.client.url("v1/tenants")?)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("creating tenant {id}"))?;
    let status = r.status();
    if status.as_u16() != 201 && status.as_u16() != 409 {
        bail!(
            "creating tenant {id}: {status}: {} (the benchmark needs the admin token: own server, \
             or --token with the admin scope)",
            r.text().await.unwrap_or_default()
        );
    }
    let r = ctx
        .client
        .http()
        .post(ctx.client.url("v1/tokens")?)
        .json(&json!({"tenant": id, "name": "load-tests", "scopes": ["jobs:read", "jobs:write", "modules:write"]}))
        .send()
        .await
        .with_context(|| format!("creating a token of tenant {id}"))?;
    let status = r.status();
    let body: Value = r
        .json()
        .await
        .with_context(|| format!("reading the token of tenant {id}"))?;
    let Some(token) = body["token"].as_str() else {
        bail!("creating a token of tenant {id}: {status}: {body}");
    };
    Client::with_token(&ctx.url, Some(token))
}
