//! Prometheus metrics (served at `/metrics`), shared by the API and the worker of one process.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedLabels {
    pub state: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// The backend that ran the attempt (`wasm`, `container`), `none` if none got it.
    pub backend: String,
    /// The attempt's outcome reason (`exited`, `wall_timeout`, …).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ItemLabels {
    /// `chunk` (a piece of a job's output) or `completion` (an attempt's result).
    pub item: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `flush` (read back by the flush that stored the job's end) or `read` (read after it).
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantStateLabels {
    pub tenant: String,
    pub state: String,
}

type GaugeF64 = Gauge<f64, std::sync::atomic::AtomicU64>;
type CounterF64 = Counter<f64, std::sync::atomic::AtomicU64>;

/// Per-tenant usage, read from the database's usage rollup at scrape time (what a platform bills
/// from; every API process exposes the same totals).
#[derive(Clone, Default)]
pub struct TenantUsage {
    pub attempts: Family<TenantLabels, Counter>,
    pub jobs: Family<TenantStateLabels, Counter>,
    pub cpu_seconds: Family<TenantLabels, CounterF64>,
    pub memory_byte_seconds: Family<TenantLabels, CounterF64>,
    pub wall_seconds: Family<TenantLabels, CounterF64>,
    pub output_bytes: Family<TenantLabels, Counter>,
    pub network_rx_bytes: Family<TenantLabels, Counter>,
    pub network_tx_bytes: Family<TenantLabels, Counter>,
}

/// Raises a counter to `target` (database totals only grow; a smaller value changes nothing).
fn raise(c: &Counter, target: i64) {
    let target = u64::try_from(target).unwrap_or(0);
    let now = c.get();
    if target > now {
        c.inc_by(target - now);
    }
}

fn raise_f64(c: &CounterF64, target: f64) {
    let now = c.get();
    if target > now {
        c.inc_by(target - now);
    }
}

/// All metrics of a process. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub jobs_submitted: Counter,
    pub jobs_finished: Family<FinishedLabels, Counter>,
    pub jobs_running: Gauge,
    pub worker_slots: Gauge,
    pub worker_container_slots: Gauge,
    pub job_wall_seconds: Family<AttemptLabels, Histogram>,
    pub job_wait_seconds: Family<AttemptLabels, Histogram>,
    pub retries: Family<ReasonLabels, Counter>,
    pub rescues: Counter,
    /// Claims this worker made, by result (`jobs`: it took some; `empty`: none were claimable).
    pub claims: Family<ResultLabels, Counter>,
    /// Lone jobs the API in this process handed to this worker without a claim.
    pub jobs_handed: Counter,
    pub webhook_deliveries: Family<ResultLabels, Counter>,
    pub log_bytes_stored: Counter,
    /// Items the writer stored in a substitute form or dropped because PostgreSQL refused their
    /// values (see `worker::writer`).
    pub writes_refused: Family<ItemLabels, Counter>,
    pub sse_clients: Gauge,
    pub sse_refused: Counter,
    pub sse_job_reads: Counter,
    pub wait_answers: Family<SourceLabels, Counter>,
    pub http_responses: Family<RequestLabels, Counter>,
    pub queue_depth: Family<QueueLabels, Gauge>,
    pub queue_oldest_age_seconds: Family<QueueLabels, GaugeF64>,
    pub table_dead_tuple_ratio: Family<TableLabels, GaugeF64>,
    pub tenant: TenantUsage,
    /// Serialises scrape-time refreshes of the database figures.
    refresh: Arc<tokio::sync::Mutex<()>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("nekton");
        let jobs_submitted = Counter::default();
        registry.register(
            "jobs_submitted",
            "Jobs accepted by this API process",
            jobs_submitted.clone(),
        );
        let jobs_finished = Family::<FinishedLabels, Counter>::default();
        registry.register(
            "jobs_finished",
            "Attempts finished by this worker, by resulting state and reason",
            jobs_finished.clone(),
        );
        let jobs_running = Gauge::default();
        registry.register(
            "jobs_running",
            "Jobs running on this worker now",
            jobs_running.clone(),
        );
        let worker_slots = Gauge::default();
        registry.register(
            "worker_slots",
            "Jobs this worker runs at once (--slots); 0 without a worker",
            worker_slots.clone(),
        );
        let worker_container_slots = Gauge::default();
        registry.register(
            "worker_container_slots",
            "Of those, jobs that may run in a container at once (--container-slots); 0 without a worker",
            worker_container_slots.clone(),
        );
        let job_wall_seconds =
            Family::<AttemptLabels, Histogram>::new_with_constructor(wall_buckets as fn() -> _);
        registry.register(
            "job_wall_seconds",
            "Wall time of attempts this worker finished, by backend and outcome",
            job_wall_seconds.clone(),
        );
        let job_wait_seconds =
            Family::<AttemptLabels, Histogram>::new_with_constructor(wait_buckets as fn() -> _);
        registry.register(
            "job_wait_seconds",
            "Time attempts this worker finished waited in the queue (submission or retry time to claim), by backend and outcome",
            job_wait_seconds.clone(),
        );
        let retries = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "retries",
            "Attempts this worker ended that were scheduled to run again, by the attempt's reason",
            retries.clone(),
        );
        let rescues = Counter::default();
        registry.register(
            "rescues",
            "Jobs this process's rescuer took back from a worker whose lease expired",
            rescues.clone(),
        );
        let claims = Family::<ResultLabels, Counter>::default();
        registry.register(
            "claims",
            "Claims this worker made, by result: jobs (it took some) or empty (none were claimable: a wake-up or poll that found nothing)",
            claims.clone(),
        );
        let jobs_handed = Counter::default();
        registry.register(
            "jobs_handed",
            "Lone jobs the API in this process stored running on this process's worker and handed to it in memory, without a claim",
            jobs_handed.clone(),
        );
        let webhook_deliveries = Family::<ResultLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts this process made, by result (delivered, failed, gave_up)",
            webhook_deliveries.clone(),
        );
        let log_bytes_stored = Counter::default();
        registry.register(
            "log_bytes_stored",
            "Output bytes this worker stored",
            log_bytes_stored.clone(),
        );
        let writes_refused = Family::<ItemLabels, Counter>::default();
        registry.register(
            "writes_refused",
            "Items the worker's writer could not store as they were because PostgreSQL refused \
             their values, by item: a `chunk` of output dropped, or a `completion` stored as an \
             internal error instead",
            writes_refused.clone(),
        );
        let sse_clients = Gauge::default();
        registry.register(
            "sse_clients",
            "Open log and batch event streams",
            sse_clients.clone(),
        );
        let sse_refused = Counter::default();
        registry.register(
            "sse_refused",
            "Event streams refused with 503 because --max-streams were open",
            sse_refused.clone(),
        );
        let sse_job_reads = Counter::default();
        registry.register(
            "sse_job_reads",
            "Job records log event streams read from the database (one read shared by the followers woken by one notification counts once)",
            sse_job_reads.clone(),
        );
        let wait_answers = Family::<SourceLabels, Counter>::default();
        for source in ["flush", "read"] {
            // Both exposed from the start (at 0): a rate of either is meaningful at once.
            drop(wait_answers.get_or_create(&SourceLabels {
                source: source.into(),
            }));
        }
        registry.register(
            "wait_answers",
            "Answers of finished jobs to POST /v1/jobs?wait=, by where the final record came from",
            wait_answers.clone(),
        );
        let http_responses = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_responses",
            "HTTP responses by status",
            http_responses.clone(),
        );
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Jobs waiting (queued or scheduled) per queue, read from the database at scrape time",
            queue_depth.clone(),
        );
        let queue_oldest_age_seconds = Family::<QueueLabels, GaugeF64>::default();
        registry.register(
            "queue_oldest_age_seconds",
            "Seconds since the oldest waiting job of each queue was submitted",
            queue_oldest_age_seconds.clone(),
        );
        let table_dead_tuple_ratio = Family::<TableLabels, GaugeF64>::default();
        registry.register(
            "table_dead_tuple_ratio",
            "Dead tuples over all tuples of the queue's hot tables (PostgreSQL statistics)",
            table_dead_tuple_ratio.clone(),
        );
        let tenant = TenantUsage::default();
        registry.register(
            "tenant_attempts",
            "Attempts ended per tenant and outcome reason (usage rollup, read at scrape time)",
            tenant.attempts.clone(),
        );
        registry.register(
            "tenant_jobs",
            "Jobs that reached a final state per tenant and state",
            tenant.jobs.clone(),
        );
        registry.register(
            "tenant_cpu_seconds",
            "CPU time (user + system) of a tenant's attempts",
            tenant.cpu_seconds.clone(),
        );
        registry.register(
            "tenant_memory_byte_seconds",
            "Peak memory times wall time of a tenant's attempts",
            tenant.memory_byte_seconds.clone(),
        );
        registry.register(
            "tenant_wall_seconds",
            "Wall time of a tenant's attempts",
            tenant.wall_seconds.clone(),
        );
        registry.register(
            "tenant_output_bytes",
            "Output kept (stdout + stderr) of a tenant's attempts",
            tenant.output_bytes.clone(),
        );
        registry.register(
            "tenant_network_rx_bytes",
            "Bytes a tenant's jobs received over bridge networking",
            tenant.network_rx_bytes.clone(),
        );
        registry.register(
            "tenant_network_tx_bytes",
            "Bytes a tenant's jobs sent over bridge networking",
            tenant.network_tx_bytes.clone(),
        );
        Self {
            tenant,
            registry: Arc::new(registry),
            queue_depth,
            queue_oldest_age_seconds,
            table_dead_tuple_ratio,
            refresh: Arc::new(tokio::sync::Mutex::new(())),
            jobs_submitted,
            jobs_finished,
            jobs_running,
            worker_slots,
            worker_container_slots,
            job_wall_seconds,
            job_wait_seconds,
            retries,
            rescues,
            claims,
            jobs_handed,
            webhook_deliveries,
            log_bytes_stored,
            writes_refused,
            sse_clients,
            sse_refused,
            sse_job_reads,
            wait_answers,
            http_responses,
        }
    }

    pub fn job_finished(&self, state: &str, reason: &str) {
        self.jobs_finished
            .get_or_create(&FinishedLabels {
                state: state.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Records an attempt this worker ended (its completion as stored): wait and wall time by
    /// backend and outcome, and a retry when the job goes back to the queue.
    pub fn observe_attempt(&self, backend: &str, c: &crate::store::queue::Completion) {
        let labels = AttemptLabels {
            backend: backend.to_owned(),
            outcome: c.reason.as_str().to_owned(),
        };
        if let Some(wall) = c.usage.wall_ms {
            self.job_wall_seconds
                .get_or_create(&labels)
                .observe(wall as f64 / 1000.0);
        }
        if let Some(wait) = c.usage.queue_wait_ms {
            self.job_wait_seconds
                .get_or_create(&labels)
                .observe(wait as f64 / 1000.0);
        }
        if !c.state.is_terminal() {
            self.retries
                .get_or_create(&ReasonLabels {
                    reason: c.reason.as_str().to_owned(),
                })
                .inc();
        }
    }

    /// Records one webhook delivery attempt.
    pub fn webhook_delivery(&self, result: &str) {
        self.webhook_deliveries
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Reads the database-wide figures (queue depth and age, dead tuples) into their gauges. A
    /// queue that has emptied drops out of the series. Errors leave the previous values and are
    /// returned for the caller to log.
    pub async fn refresh_from_db(&self, pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
        let _one_at_a_time = self.refresh.lock().await;
        let queues = crate::store::stats::queue_stats(pool).await?;
        let tables = crate::store::stats::dead_tuple_ratios(pool).await?;
        self.queue_depth.clear();
        self.queue_oldest_age_seconds.clear();
        for q in queues {
            let labels = QueueLabels { queue: q.queue };
            self.queue_depth.get_or_create(&labels).set(q.depth);
            self.queue_oldest_age_seconds
                .get_or_create(&labels)
                .set(q.oldest_age_seconds);
        }
        for (table, ratio) in tables {
            self.table_dead_tuple_ratio
                .get_or_create(&TableLabels { table })
                .set(ratio);
        }
        let usage = crate::store::tenants::usage_counters(pool)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Db(e) => e,
                other => sqlx::Error::Protocol(other.to_string()),
            })?;
        let mut jobs: std::collections::HashMap<(String, &str), i64> = Default::default();
        for (tenant, outcome, u) in usage {
            let l = TenantLabels {
                tenant: tenant.clone(),
                outcome,
            };
            let t = &self.tenant;
            raise(&t.attempts.get_or_create(&l), u.attempts);
            raise_f64(&t.cpu_seconds.get_or_create(&l), u.cpu_seconds);
            raise_f64(
                &t.memory_byte_seconds.get_or_create(&l),
                u.memory_byte_seconds,
            );
            raise_f64(&t.wall_seconds.get_or_create(&l), u.wall_seconds);
            raise(&t.output_bytes.get_or_create(&l), u.output_bytes);
            raise(&t.network_rx_bytes.get_or_create(&l), u.network_rx_bytes);
            raise(&t.network_tx_bytes.get_or_create(&l), u.network_tx_bytes);
            for (state, n) in [
                ("succeeded", u.jobs_succeeded),
                ("failed", u.jobs_failed),
                ("cancelled", u.jobs_cancelled),
                ("error", u.jobs_error),
            ] {
                *jobs.entry((tenant.clone(), state)).or_default() += n;
            }
        }
        for ((tenant, state), n) in jobs {
            raise(
                &self.tenant.jobs.get_or_create(&TenantStateLabels {
                    tenant,
                    state: state.to_string(),
                }),
                n,
            );
        }
        Ok(())
    }

    /// The Prometheus text exposition (format 0.0.4), for clients that do not ask for
    /// OpenMetrics: `curl`, `promtool check metrics`, older scrapers. Same families and samples;
    /// a counter's HELP and TYPE name its `_total` sample, as that format requires.
    pub fn encode_text(&self) -> String {
        openmetrics_to_text(&self.encode())
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Wall-time buckets: sub-millisecond Wasm jobs to five-minute builds.
fn wall_buckets() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0,
    ])
}

/// Queue-wait buckets: an idle worker's milliseconds to a deep backlog's minutes.
fn wait_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
    ])
}

/// Rewrites an OpenMetrics exposition as Prometheus text format 0.0.4: counter families are named
/// by their `_total` sample in HELP and TYPE, `# UNIT` and `# EOF` are dropped. Families of other
/// types keep their names.
fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut pending_help: Option<(&str, &str)> = None;
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name, text));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let shown = if kind == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            if let Some((help_name, text)) = pending_help.take()
                && help_name == name
            {
                out.push_str(&format!("# HELP {shown} {text}\n"));
            }
            let kind = match kind {
                "counter" | "gauge" | "histogram" | "summary" => kind,
                _ => "untyped",
            };
            out.push_str(&format!("# TYPE {shown} {kind}\n"));
            continue;
        }
        if let Some((name, text)) = pending_help.take() {
            out.push_str(&format!("# HELP {name} {text}\n"));
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_names_counters_by_their_total_sample() {
        let m = Metrics::new();
        m.jobs_submitted.inc();
        m.job_finished("succeeded", "exited");
        m.observe_attempt(
            "wasm",
            &crate::store::queue::Completion {
                job_id: uuid::Uuid::nil(),
                attempt: 1,
                state: crate::model::JobState::Scheduled,
                retry_after: None,
                reason: crate::model::OutcomeReason::InternalError,
                exit_code: None,
                signal: None,
                detail: None,
                usage: crate::model::Usage {
                    wall_ms: Some(3),
                    queue_wait_ms: Some(2000),
                    ..Default::default()
                },
                tests: None,
            },
        );
        m.writes_refused
            .get_or_create(&ItemLabels {
                item: "chunk".into(),
            })
            .inc();
        let text = m.encode_text();
        assert!(
            text.contains("nekton_writes_refused_total{item=\"chunk\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP nekton_jobs_submitted_total Jobs accepted"),
            "{text}"
        );
        assert!(
            text.contains(
                "# TYPE nekton_jobs_submitted_total counter\nnekton_jobs_submitted_total 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE nekton_jobs_running gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE nekton_job_wall_seconds histogram\n"),
            "{text}"
        );
        let labels = r#"{backend="wasm",outcome="internal_error"}"#;
        assert!(
            text.contains(&format!("nekton_job_wall_seconds_count{labels} 1\n")),
            "{text}"
        );
        // 2 s of waiting: in the 5 s bucket, not the 1 s one.
        let bucket = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("nekton_job_wait_seconds_bucket{")
                        && l.contains("backend=\"wasm\"")
                        && l.contains(&format!("le=\"{le}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(bucket("1.0").as_deref(), Some("0"), "{text}");
        assert_eq!(bucket("5.0").as_deref(), Some("1"), "{text}");
        assert!(
            text.contains("nekton_retries_total{reason=\"internal_error\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            m.encode().ends_with("# EOF\n"),
            "OpenMetrics keeps its terminator"
        );
    }
}
