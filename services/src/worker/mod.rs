//! The worker: claims jobs for its free slots, runs each on the backend that accepts it, streams
//! output to the [`writer`], heartbeats its leases, obeys cancels, rescues jobs of dead workers,
//! prunes old jobs, and on shutdown stops claiming, lets running jobs finish for a grace period,
//! then stops and requeues them.
//!
//! The worker does not know which backend it drives: it only speaks `runtime_core::Backend`.

mod artifacts;
pub mod route;
pub mod spec;
mod suite;
pub mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime_core::{
    Backend, ExecReport, JobIo, Outcome, OutcomeReason, OutputChunk, OutputSink, OutputStats, Usage,
};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::config::QueueTiming;
use crate::images::ImageHost;
use crate::metrics::{Metrics, ResultLabels};
use crate::model::ChunkKind;
use crate::store::handoff::Slot;
use crate::store::partitions;
use crate::store::queue::{self, Claimed, NewChunk};
use crate::store::{self, CHANNEL_CANCEL, CHANNEL_JOBS};
use writer::{FLUSH_BYTES, WriterMsg};

/// Writer lanes for most jobs (plus the express lane). Two: a flush's statement is CPU work in
/// one PostgreSQL backend, and with one lane the next flush waited for it and for its commit;
/// with two, one computes while the other commits (load-tests/README.md, "Two writer lanes").
const WRITER_LANES: usize = 2;

/// How a worker is set up.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's identity in leases (a fresh UUIDv7 per process by default).
    pub id: Uuid,
    /// Queues to take jobs from.
    pub queues: Vec<String>,
    /// Jobs run at once.
    pub slots: usize,
    /// Of those, jobs that may run in a container (image jobs, see
    /// [`queue::runs_in_container`]) at once; [`Worker::new`] lowers it to `slots` if above.
    pub container_slots: usize,
    pub timing: QueueTiming,
    /// On shutdown, how long running jobs may go on before they are stopped and requeued.
    pub shutdown_grace: Duration,
}

/// Why the worker stopped a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopCause {
    /// A user asked (the job ends `cancelled`).
    Cancel,
    /// The worker is shutting down (the job is requeued).
    Shutdown,
    /// Our lease is gone: someone else owns the job now; write nothing.
    LeaseLost,
}

struct Running {
    cancel: CancellationToken,
    cause: Mutex<Option<StopCause>>,
    /// The job's completion went to the writer: its lease ends with that commit, so a heartbeat
    /// that no longer finds it is not a lost lease.
    completing: std::sync::atomic::AtomicBool,
    /// The job's tenant: the writer lane of the next claimed jobs depends on who holds the slots.
    tenant: String,
    /// The attempt this run is.
    attempt: i32,
}

/// Drops from a claim's jobs those this worker is running already. That happens only when
/// PostgreSQL lost a claim of ours (a crash before the claim's WAL reached disk: claims commit
/// without waiting for the flush) and we claimed the job again. With the same attempt, the
/// database now records exactly the run that is going on here (this worker, that attempt): it
/// carries on, its writes match the row again, and a second run would only mix its output
/// into the first's. With another attempt the run here is fenced out already (its heartbeat
/// stops it as lost); the new claim is not started either — it would share the run's entry — and
/// its lease runs out, after which a rescue hands the job out again.
fn skip_runs_already_here<S>(
    jobs: Vec<(queue::Claimed, S)>,
    running: &HashMap<Uuid, Arc<Running>>,
) -> Vec<(queue::Claimed, S)> {
    jobs.into_iter()
        .filter(|(job, _)| match running.get(&job.id) {
            None => true,
            Some(here) => {
                if here.attempt == job.attempt {
                    tracing::warn!(job = %job.id, attempt = job.attempt, "claimed a job this worker \
                        is running: the database lost the claim (a crash) and the job was claimed \
                        again; the run here carries on as that attempt");
                } else {
                    tracing::warn!(job = %job.id, attempt = job.attempt, running = here.attempt,
                        "claimed a job this worker runs as another attempt; not starting it \
                        (its lease runs out and a rescue hands it out again)");
                }
                false
            }
        })
        .collect()
}

impl Running {
    fn stop(&self, cause: StopCause) {
        let mut c = self.cause.lock().unwrap_or_else(|p| p.into_inner());
        if c.is_none() {
            *c = Some(cause);
        }
        self.cancel.cancel();
    }

    fn cause(&self) -> Option<StopCause> {
        *self.cause.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn completing(&self) -> bool {
        self.completing.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// What the heartbeat does with a running job whose lease it did not find.
#[derive(Debug, PartialEq, Eq)]
enum Unrenewed {
    /// Someone else owns the job now: stop it and record nothing.
    LeaseLost,
    /// Its completion was sent (and has likely just committed, which ends the lease), or it is
    /// already being stopped: nothing to do.
    Finishing,
}

fn unrenewed(entry: &Running) -> Unrenewed {
    if entry.cause().is_none() && !entry.completing() {
        Unrenewed::LeaseLost
    } else {
        Unrenewed::Finishing
    }
}

type RunningMap = Arc<Mutex<HashMap<Uuid, Arc<Running>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A worker process's job runner.
pub struct Worker {
    pool: PgPool,
    config: WorkerConfig,
    backends: Vec<Arc<dyn Backend>>,
    metrics: Metrics,
    /// Poked by an API in the same process when it stores a job (no NOTIFY round trip needed).
    local_wake: Arc<Notify>,
    /// Where sandboxes run: runtimes of their own, so CPU-bound guests never delay the queue's and
    /// the API's I/O.
    exec: ExecLanes,
    /// Image pulls and the container backend (None: image jobs end `image_error`).
    images: Option<ImageHost>,
    /// An API in the same process, told of each stored completion (see [`writer::OnStored`]).
    on_stored: Option<writer::OnStored>,
    /// Whether the writers NOTIFY what they store or tell only `on_stored`.
    notices: store::queue::Notices,
    /// The id an API in the same process names in its job NOTIFYs: those are skipped (that API
    /// pokes `local_wake` itself after every stored job).
    local_origin: Option<Uuid>,
    /// This worker's slots, shared with an API in the same process that hands it lone jobs.
    handoff: Arc<store::handoff::Handoff>,
    handed: mpsc::UnboundedReceiver<store::handoff::Handed>,
}

impl Worker {
    pub fn new(
        pool: PgPool,
        mut config: WorkerConfig,
        backends: Vec<Arc<dyn Backend>>,
        metrics: Metrics,
        local_wake: Arc<Notify>,
        exec: ExecLanes,
    ) -> Self {
        config.container_slots = config.container_slots.min(config.slots);
        let (handoff, handed) = store::handoff::Handoff::new(
            config.id,
            config.queues.clone(),
            config.slots,
            config.container_slots,
            config.timing.lease,
        );
        Self {
            pool,
            config,
            backends,
            metrics,
            local_wake,
            exec,
            images: None,
            on_stored: None,
            notices: store::queue::Notices::Notify,
            local_origin: None,
            handoff,
            handed,
        }
    }

    /// The handle an API in the same process hands this worker lone jobs through
    /// ([`store::handoff::Handoff`]).
    pub fn handoff(&self) -> Arc<store::handoff::Handoff> {
        self.handoff.clone()
    }

    /// Skips the job NOTIFYs of the API in this process, which names itself `origin` in them
    /// ([`crate::store::wake_payload`]) and pokes this worker directly instead: one claim per
    /// lone job, not two.
    pub fn with_local_origin(mut self, origin: Uuid) -> Self {
        self.local_origin = Some(origin);
        self
    }

    /// Tells `on_stored` of every completion this worker stores, right after its commit (an API
    /// in the same process wakes the job's waiters without the NOTIFY's round trip). With
    /// [`store::queue::Notices::InProcess`] (every follower of the database is in this process)
    /// it is told of stored output too, and the writers send no NOTIFY.
    pub fn with_on_stored(
        mut self,
        on_stored: writer::OnStored,
        notices: store::queue::Notices,
    ) -> Self {
        self.on_stored = Some(on_stored);
        self.notices = notices;
        self
    }

    /// Lets the worker run image jobs: pulls through `host.images`; the container backend (when
    /// it could start) joins the list of backends, chosen by `accepts` like every other.
    pub fn with_images(mut self, host: ImageHost) -> Self {
        if let Ok(container) = &host.container {
            self.backends.push(container.clone());
        }
        self.images = Some(host);
        self
    }

    /// Runs until `shutdown` fires, then drains as described in the module docs.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Worker {
            pool,
            config,
            backends,
            metrics,
            local_wake,
            exec,
            images,
            on_stored,
            notices,
            local_origin,
            handoff,
            mut handed,
        } = self;
        // Before any output is stored (see the function): the writers wait for it, the claims do
        // not (a claim at start takes every free slot while it runs, and an API beside this worker
        // hands it no job meanwhile).
        let (partitions_made, partitions_ready) = tokio::sync::watch::channel(false);
        tokio::spawn({
            let pool = pool.clone();
            let retention = config.timing.retention;
            async move {
                ensure_log_partitions(&pool, retention).await;
                partitions_made.send_replace(true);
            }
        });
        let slots = handoff.slots().clone();
        let containers = handoff.containers().clone();
        let running: RunningMap = Arc::new(Mutex::new(HashMap::new()));
        let slot_freed = Arc::new(Notify::new());
        let container_freed = Arc::new(Notify::new());
        // Completions recorded: tenants' running counts dropped, so capped or fairly held-back
        // tenants may be claimable now even though the last claim did not fill every slot.
        let completed = Arc::new(Notify::new());
        // Writer lanes, the same code each (docs/queue.md §12 and "Fair claims across tenants"):
        // [`WRITER_LANES`] for most jobs, a job's lane chosen by its id, so that one flush's
        // statement computes while another's commit waits for its WAL flush, on another core;
        // and an express lane: the jobs of tenants holding fewer of this worker's slots than the
        // average tenant here go through it, so a light tenant's job does not queue behind a
        // heavy one's saturated pipeline of outputs and completions. A job uses one lane for all
        // its writes, so its chunks still land before its completion.
        // Small on purpose: a job writing faster than the database stores waits here instead of
        // building a backlog that delays everyone's live output (each chunk is up to 64 KiB).
        let (normal_tx, normal_rx): (Vec<_>, Vec<_>) = (0..WRITER_LANES)
            .map(|_| mpsc::channel::<WriterMsg>(64))
            .unzip();
        let (express_tx, express_rx) = mpsc::channel::<WriterMsg>(64);
        let writers: Vec<_> = normal_rx
            .into_iter()
            .chain([express_rx])
            .map(|rx| {
                let run = writer::run(
                    pool.clone(),
                    config.id,
                    rx,
                    config.timing.log_flush,
                    metrics.clone(),
                    completed.clone(),
                    on_stored.clone(),
                    notices,
                );
                let mut ready = partitions_ready.clone();
                tokio::spawn(async move {
                    // Done or failed (then logged, and retried by the upkeep): either way on; and
                    // on after a bound, so that a partition lock held elsewhere cannot hold every
                    // job's output and completion back (their output then goes to the default
                    // partition, as when the partitions cannot be made).
                    let _ =
                        tokio::time::timeout(PARTITIONS_WAIT, ready.wait_for(|made| *made)).await;
                    run.await
                })
            })
            .collect();
        let background = CancellationToken::new();
        let listener = tokio::spawn(listen(
            pool.clone(),
            running.clone(),
            local_wake.clone(),
            local_origin,
            background.clone(),
        ));
        // Whether any tenant has a `max_running` cap: only then can a completion make a job
        // claimable that the last claim left (a capped tenant at its cap). Read every poll;
        // assumed until first read.
        let capped = Arc::new(AtomicBool::new(true));
        let caps = tokio::spawn(caps_loop(
            pool.clone(),
            capped.clone(),
            config.timing.poll,
            background.clone(),
        ));
        let beats = tokio::spawn(heartbeat_loop(
            pool.clone(),
            config.clone(),
            running.clone(),
            background.clone(),
        ));
        let upkeep = tokio::spawn(upkeep_loop(
            pool.clone(),
            config.timing.clone(),
            background.clone(),
            metrics.clone(),
        ));
        metrics.worker_slots.set(config.slots as i64);
        metrics
            .worker_container_slots
            .set(config.container_slots as i64);
        tracing::info!(worker = %config.id, slots = config.slots, container_slots = config.container_slots, queues = ?config.queues, "worker started");

        let ctx = JobContext {
            pool: pool.clone(),
            worker: config.id,
            exec,
            backends,
            images,
            writers: normal_tx.clone().into(),
            express: express_tx.clone(),
            running: running.clone(),
            slot_freed: slot_freed.clone(),
            container_freed: container_freed.clone(),
            metrics: metrics.clone(),
            slots: config.slots,
            container_slots: config.container_slots,
        };
        let mut tasks = tokio::task::JoinSet::new();
        let mut maybe_more = true;
        // The claims' own connection, kept while claims take jobs one after another
        // (`store::Held`).
        let mut held = crate::store::Held::new(pool.clone());
        // The last claim's container cap may have left container jobs waiting.
        let mut held_back = false;
        // `nekton_claims_total{result}`: [empty, jobs].
        let claims = ["empty", "jobs"].map(|result| {
            metrics
                .claims
                .get_or_create(&ResultLabels {
                    result: result.into(),
                })
                .clone()
        });
        // Starts jobs this worker now owns, each with the slot it holds until its slot frees.
        let start = |tasks: &mut tokio::task::JoinSet<()>, jobs: Vec<(Claimed, Slot)>| {
            let entries: Vec<Arc<Running>> = {
                let mut map = lock(&running);
                jobs.iter()
                    .map(|(job, _)| {
                        let entry = Arc::new(Running {
                            cancel: CancellationToken::new(),
                            cause: Mutex::new(None),
                            completing: Default::default(),
                            tenant: job.tenant.clone(),
                            attempt: job.attempt,
                        });
                        map.insert(job.id, entry.clone());
                        entry
                    })
                    .collect()
            };
            let shares = SlotShares::of(lock(&running).values().map(|e| e.tenant.as_str()));
            for ((job, slot), entry) in jobs.into_iter().zip(entries) {
                let express = shares.below_average(&job.tenant);
                metrics.jobs_running.inc();
                // Boxed: the task then holds a pointer, not the future, which is otherwise
                // copied into the task at its spawn and over at its end.
                tasks.spawn(Box::pin(run_job(job, entry, slot, express, ctx.clone())));
            }
        };
        loop {
            while tasks.try_join_next().is_some() {}
            if slots.available_permits() > 0 && maybe_more {
                maybe_more = false;
                held_back = false;
                // The free slots, taken for this claim (an API in this process may be setting
                // one aside at the same moment: whatever it took is not asked for here).
                let mut free: Vec<tokio::sync::OwnedSemaphorePermit> =
                    std::iter::from_fn(|| slots.clone().try_acquire_owned().ok()).collect();
                // The free container slots, as many as there are free slots at most: the claim
                // leaves the container jobs past them waiting.
                let mut boxes: Vec<tokio::sync::OwnedSemaphorePermit> =
                    std::iter::from_fn(|| containers.clone().try_acquire_owned().ok())
                        .take(free.len())
                        .collect();
                for queue in &config.queues {
                    if free.is_empty() {
                        // Slots ran out before every queue was asked: ask again when one frees.
                        maybe_more = true;
                        break;
                    }
                    let asked = free.len();
                    let claimed = match held.conn().await {
                        Ok(conn) => {
                            queue::claim_kinds(
                                conn,
                                config.id,
                                queue,
                                asked as i64,
                                Some(boxes.len() as i64),
                                config.timing.lease,
                            )
                            .await
                        }
                        Err(e) => Err(e.into()),
                    };
                    match &claimed {
                        // Claims that take jobs keep the connection for the next; one that finds
                        // none (an idle worker's poll) gives it back.
                        Ok(jobs) if !jobs.is_empty() => held.relieve(),
                        _ => held.discard(),
                    }
                    match claimed {
                        Ok(jobs) => {
                            claims[usize::from(!jobs.is_empty())].inc();
                            maybe_more |= jobs.len() == asked;
                            let given = boxes.len();
                            let jobs: Vec<_> = jobs
                                .into_iter()
                                .filter_map(|job| {
                                    let slot = free.pop()?;
                                    let container = match job.runs_in_container() {
                                        true => {
                                            let b = boxes.pop();
                                            if b.is_none() {
                                                // The claim keeps to the container slots it is
                                                // given: this would be a bug in it.
                                                tracing::error!(job = %job.id, "the claim returned more container jobs than it was given container slots; the job runs without one");
                                            }
                                            b
                                        }
                                        false => None,
                                    };
                                    Some((job, Slot::new(slot, container)))
                                })
                                .collect();
                            // Every container slot filled with fewer than all slots asked: the
                            // cap may have left container jobs waiting; claim again when a
                            // container slot frees.
                            held_back |= given < asked && boxes.is_empty();
                            let jobs = skip_runs_already_here(jobs, &lock(&running));
                            start(&mut tasks, jobs);
                        }
                        Err(e) => {
                            tracing::warn!(queue, error = %e, "claiming jobs failed; retrying after the poll interval");
                        }
                    }
                }
                // Slots no claim filled are free again.
                drop(free);
                drop(boxes);
            }
            // Biased: a stop is seen first, so a job handed in the same moment is put back in its
            // queue below, for a worker that goes on, instead of starting here.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(h) = handed.recv() => {
                    crate::timeline!(h.job.id, "worker.handed");
                    metrics.jobs_handed.inc();
                    start(&mut tasks, vec![(h.job, h.slot)]);
                }
                _ = local_wake.notified() => maybe_more = true,
                _ = slot_freed.notified() => {}
                _ = container_freed.notified() => maybe_more |= held_back,
                // A completion lowers its tenant's running count: claim again if a cap may
                // have held jobs back (with free slots and no cap, the last claim took all).
                _ = completed.notified() => maybe_more |= capped.load(Ordering::Relaxed),
                _ = tokio::time::sleep(config.timing.poll) => maybe_more = true,
                // Nothing to do for a while: the kept connection goes back to the pool.
                _ = tokio::time::sleep(crate::store::Held::IDLE), if held.is_kept() => held.discard(),
            }
        }

        // Shutdown: no more claims, and no more jobs from the API in this process (those it
        // stores from now on wait in their queue; those handed but not started go back to it
        // now, for another worker to claim at once).
        slots.close();
        handed.close();
        let mut unstarted = Vec::new();
        while let Ok(h) = handed.try_recv() {
            unstarted.push(h.job.id);
        }
        match queue::return_unstarted(&pool, config.id, &unstarted).await {
            Ok(ids) if ids.is_empty() => {}
            Ok(ids) => tracing::info!(
                returned = ids.len(),
                "jobs handed by the API but not started went back to their queue"
            ),
            Err(e) => {
                tracing::error!(error = %e, "returning jobs handed by the API to their queue failed; the rescuer will take them back when their leases expire")
            }
        }
        // Let running jobs finish for the grace period.
        tracing::info!(running = lock(&running).len(), grace = ?config.shutdown_grace, "worker shutting down");
        let drained = tokio::time::timeout(config.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            let entries: Vec<Arc<Running>> = lock(&running).values().cloned().collect();
            for e in entries {
                e.stop(StopCause::Shutdown);
            }
            while tasks.join_next().await.is_some() {}
        }
        // Everything the jobs wrote is flushed before their requeue.
        drop(ctx);
        drop(normal_tx);
        drop(express_tx);
        for writer in writers {
            let _ = writer.await;
        }
        background.cancel();
        let _ = tokio::join!(listener, beats, upkeep, caps);
        let leftover: Vec<Uuid> = lock(&running).keys().copied().collect();
        if !leftover.is_empty() {
            match queue::requeue(&pool, config.id, &leftover).await {
                Ok(ids) => tracing::info!(
                    requeued = ids.len(),
                    "jobs stopped by shutdown were requeued"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "requeueing stopped jobs failed; the rescuer will take them back when their leases expire")
                }
            }
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Where a worker's sandboxes run: the runtime for most jobs, and the express one for the jobs
/// of tenants below their share of the slots (see `Worker::run`).
#[derive(Clone)]
pub struct ExecLanes {
    pub normal: tokio::runtime::Handle,
    pub express: tokio::runtime::Handle,
}

/// What every job task of a worker shares.
#[derive(Clone)]
struct JobContext {
    /// For the artifacts, stored by the job's task before its completion goes to the writer.
    pool: PgPool,
    /// This worker's id (what the artifacts' fence checks).
    worker: Uuid,
    exec: ExecLanes,
    backends: Vec<Arc<dyn Backend>>,
    images: Option<ImageHost>,
    /// The writer lanes of most jobs (see `Worker::run`): a job's is chosen by its id.
    writers: Arc<[mpsc::Sender<WriterMsg>]>,
    /// The express writer lane (see `Worker::run`).
    express: mpsc::Sender<WriterMsg>,
    running: RunningMap,
    slot_freed: Arc<Notify>,
    /// Told when a job holding a container slot ends.
    container_freed: Arc<Notify>,
    metrics: Metrics,
    /// This worker's slots: the most cases a Wasm test suite runs at once here.
    slots: usize,
    /// This worker's container slots: the most cases a container test suite runs at once here.
    container_slots: usize,
}

/// How this worker's slots are shared among tenants at one moment.
struct SlotShares {
    per_tenant: HashMap<String, usize>,
    total: usize,
}

impl SlotShares {
    /// From the tenants of the running jobs, one per job.
    fn of<'a>(tenants: impl IntoIterator<Item = &'a str>) -> Self {
        let mut per_tenant: HashMap<String, usize> = HashMap::new();
        let mut total = 0;
        for tenant in tenants {
            // A tenant's name is copied once, not once per running job: this runs at every claim,
            // over every job running here.
            match per_tenant.get_mut(tenant) {
                Some(n) => *n += 1,
                None => {
                    per_tenant.insert(tenant.to_owned(), 1);
                }
            }
            total += 1;
        }
        SlotShares { per_tenant, total }
    }

    /// Whether `tenant` holds fewer slots than the average tenant with jobs here: its jobs take
    /// the express writer lane. A lone tenant, or tenants sharing evenly, are not below average,
    /// so the express lane carries only the light tenants' few jobs.
    fn below_average(&self, tenant: &str) -> bool {
        let mine = self.per_tenant.get(tenant).copied().unwrap_or(0);
        mine * self.per_tenant.len() < self.total
    }
}

/// The writer lane of job `id` among `lanes` (never empty): the same for all its writes. The
/// low bits of a UUIDv7 are random, so jobs spread evenly.
fn writer_lane(lanes: &[mpsc::Sender<WriterMsg>], id: Uuid) -> &mpsc::Sender<WriterMsg> {
    &lanes[(id.as_u128() % lanes.len() as u128) as usize]
}

/// Runs one claimed job to its end and hands its output and completion to the writer.
async fn run_job(job: Claimed, entry: Arc<Running>, slot: Slot, express: bool, ctx: JobContext) {
    let JobContext {
        pool,
        worker,
        exec,
        backends,
        images,
        writers,
        express: express_writer,
        running,
        slot_freed,
        container_freed,
        metrics,
        slots,
        container_slots,
    } = ctx;
    crate::timeline!(job.id, "worker.started");
    let (writer, exec) = if express {
        (express_writer, exec.express)
    } else {
        (writer_lane(&writers, job.id).clone(), exec.normal)
    };
    // The most cases a test suite runs at once: the worker's slots of the job's kind.
    let parallel = match slot.has_container() {
        true => container_slots,
        false => slots,
    };
    // The backend that ran the job, for the metrics; `none` when no backend got it.
    let mut backend_name = "none";
    // The attempt on this worker, from the claim to the completion stored: a child of the job's
    // `job.submit` span (its trace context came with the claim); `job.run` and `job.complete`
    // are its children (docs/operations.md, "Tracing").
    let claim_span = tracing::debug_span!(
        "job.claim",
        job.id = %job.id,
        job.attempt = job.attempt,
        tenant = %job.tenant,
        worker.id = %worker,
        job.queue_wait_ms = u64::try_from(job.queue_wait.as_millis()).unwrap_or(u64::MAX),
    );
    if let Some(parent) = &job.trace {
        crate::telemetry::set_parent(&claim_span, parent);
    }
    let finished = match spec::resolved_job(&job) {
        Err(e) => Some((
            ExecReport::new(
                Outcome::with_reason(OutcomeReason::SpecError, e.to_string()),
                Usage::default(),
            ),
            OutputStats::default(),
            None,
        )),
        Ok(mut resolved) => {
            let runtime = resolved.runtime;
            let suite = resolved.tests.take();
            let mut request = spec::exec_request(&job, resolved);
            // Boxed, as are a suite's run and the artifacts' storage below: a future is as large
            // as its largest step (the route may pull an image), and this task's would be that
            // large for every job (load-tests/README.md, "A job's task without its large steps").
            match Box::pin(route::route(
                &mut request,
                runtime,
                &backends,
                images.as_ref(),
                &entry.cancel,
            ))
            .instrument(claim_span.clone())
            .await
            {
                Err(not_routed) => {
                    tracing::debug!(job = %job.id, reason = not_routed.outcome.reason.as_str(), detail = ?not_routed.outcome.detail, "job not handed to a backend");
                    Some((
                        ExecReport::new(
                            not_routed.outcome,
                            Usage {
                                setup: not_routed.setup,
                                ..Usage::default()
                            },
                        ),
                        OutputStats::default(),
                        None,
                    ))
                }
                Ok(routed) => {
                    backend_name = routed.backend.name();
                    let run_span = tracing::debug_span!(
                        parent: &claim_span,
                        "job.run",
                        backend = backend_name,
                        job.outcome = tracing::field::Empty,
                        job.exit_code = tracing::field::Empty,
                    );
                    let (sink, rx) = OutputSink::channel(request.limits.output_bytes, 256);
                    let (events, events_rx) = mpsc::channel(64);
                    let pump = tokio::spawn(pump_output(
                        job.id,
                        job.attempt,
                        rx,
                        events_rx,
                        writer.clone(),
                    ));
                    let io = JobIo {
                        output: sink.clone(),
                        cancel: entry.cancel.clone(),
                    };
                    let backend = routed.backend.clone();
                    let job_id = job.id;
                    // A job outside a suite whose backend bounds a run's first poll (the Wasm
                    // backend) starts on this task (see `here_then_on`).
                    let here_first = suite.is_none() && routed.backend.first_poll_is_bounded();
                    let run = async move {
                        crate::timeline!(job_id, "sandbox.started");
                        let ran = match suite {
                            Some(suite) => {
                                let run = Box::pin(suite::run(
                                    backend, request, suite, parallel, io, events,
                                ))
                                .await;
                                (run.report, run.summary)
                            }
                            None => {
                                drop(events);
                                (backend.run(request, io).await, None)
                            }
                        };
                        crate::timeline!(job_id, "sandbox.ended");
                        ran
                    };
                    let run = run.instrument(run_span.clone());
                    let ran = if here_first {
                        here_then_on(run, &exec).await
                    } else {
                        exec.spawn(run).await.map_err(|e| e.to_string())
                    };
                    let (mut report, summary) = match ran {
                        Ok(done) => done,
                        Err(e) => (
                            ExecReport::new(
                                Outcome::with_reason(
                                    OutcomeReason::InternalError,
                                    format!("the sandbox task failed: {e}"),
                                ),
                                Usage::default(),
                            ),
                            None,
                        ),
                    };
                    crate::timeline!(job.id, "worker.ran");
                    run_span.record("job.outcome", report.outcome.reason.as_str());
                    if let Some(code) = report.outcome.exit_code {
                        run_span.record("job.exit_code", code);
                    }
                    drop(run_span);
                    // The image pull is part of the job's setup.
                    report.usage.setup += routed.setup;
                    tracing::debug!(job = %job.id, backend = routed.backend.name(), reason = report.outcome.reason.as_str(), "backend finished");
                    let stats = sink.stats();
                    drop(sink);
                    if let Err(e) = pump.await {
                        tracing::error!(job = %job.id, error = %e, "output pump failed");
                    }
                    Some((report, stats, summary))
                }
            }
        }
    };
    let complete_span = tracing::debug_span!(
        parent: &claim_span,
        "job.complete",
        job.state = tracing::field::Empty,
        job.outcome = tracing::field::Empty,
    );
    let completion = match finished {
        None => None,
        Some((mut report, stats, summary)) => match entry.cause() {
            // Shutdown: requeued by the worker; lease lost: not ours anymore.
            Some(StopCause::Shutdown) | Some(StopCause::LeaseLost) => None,
            cause => {
                if cause == Some(StopCause::Cancel)
                    && report.outcome.reason == OutcomeReason::Cancelled
                {
                    report.outcome.detail = Some("cancelled by request".into());
                }
                let ours = report.artifacts.is_empty()
                    || Box::pin(store_artifacts(&pool, worker, &job, &mut report))
                        .instrument(complete_span.clone())
                        .await;
                ours.then(|| spec::completion(&job, &report, stats, summary))
            }
        },
    };
    if let Some(c) = completion {
        metrics.observe_attempt(backend_name, &c);
        complete_span.record("job.state", c.state.as_str());
        complete_span.record("job.outcome", c.reason.as_str());
        // The slot frees once the completion is stored: until then the database still counts
        // the job as running here, and a claim in between would exceed the slots.
        let (stored_tx, stored) = tokio::sync::oneshot::channel();
        entry
            .completing
            .store(true, std::sync::atomic::Ordering::Release);
        async {
            if writer
                .send(WriterMsg::Complete(Box::new(c), stored_tx))
                .await
                .is_ok()
            {
                let _ = stored.await;
            }
        }
        .instrument(complete_span.clone())
        .await;
        lock(&running).remove(&job.id);
    } else if entry.cause() != Some(StopCause::Shutdown) {
        // Lease lost (seen by the heartbeat or by the artifacts' fence): nothing to record.
        lock(&running).remove(&job.id);
    }
    // Shutdown-stopped jobs stay in the map: the worker requeues them after the writer drained.
    metrics.jobs_running.dec();
    let container = slot.has_container();
    drop(slot);
    slot_freed.notify_one();
    if container {
        container_freed.notify_one();
    }
}

/// Stores the artifacts the backend collected (docs/artifacts.md), once the run is over and
/// before its completion is recorded, and drops their bytes from `report` (called only when the
/// report has some: `run_job` skips it, and its boxed future, otherwise). Returns false when
/// the attempt is no longer this worker's (nothing may be recorded for it then). A failure to
/// store ends the attempt `internal_error` (retried while attempts remain) with a detail saying
/// what the job itself did: the job asked for these files, and a success without them would
/// hide the loss; the usage bill is kept.
async fn store_artifacts(
    pool: &PgPool,
    worker: Uuid,
    job: &Claimed,
    report: &mut ExecReport,
) -> bool {
    let collected = std::mem::take(&mut report.artifacts);
    match artifacts::store(pool, job.id, job.attempt, worker, &collected).await {
        Ok(artifacts::Stored::Stored { files, skipped }) => {
            tracing::debug!(job = %job.id, attempt = job.attempt, files, skipped, "artifacts stored");
            true
        }
        Ok(artifacts::Stored::NotOurs) => {
            tracing::warn!(job = %job.id, attempt = job.attempt, "the job is no longer this worker's attempt; its artifacts and completion are not recorded");
            false
        }
        Err(e) => {
            tracing::error!(job = %job.id, attempt = job.attempt, error = %e, "storing the job's artifacts failed; ending the attempt internal_error");
            let ended = match (report.outcome.reason, report.outcome.exit_code) {
                (OutcomeReason::Exited, Some(code)) => format!("exited with code {code}"),
                (reason, _) => format!("ended {}", reason.as_str()),
            };
            report.outcome = Outcome::with_reason(
                OutcomeReason::InternalError,
                format!(
                    "the job {ended}, but its {} artifact file(s) could not be stored ({e}); \
                     the attempt counts as an infrastructure failure and is retried while \
                     attempts remain",
                    collected.files.len()
                ),
            );
            true
        }
    }
}

/// Runs `job` on the calling task until it first waits, and on the sandbox runtime `rt` from
/// then on; for a backend whose first poll is bounded (`Backend::first_poll_is_bounded`). A
/// hello-sized Wasm job ends within that first poll: it costs no hop to the sandbox
/// runtime's threads and back (each a thread woken from sleep, ≈ a fifth of the worker's CPU per
/// such job: load-tests/README.md, "A Wasm job's first slice on its own task"). What this
/// task's runtime lends a longer job is bounded: its setup and one fuel slice of guest code (the
/// Wasm backend yields every `FUEL_SLICE` units, wasm-backend/src/run.rs), after which the job moves
/// and the service's own I/O never waits behind it. A panic in the first poll is the job's
/// failure, as one on the sandbox runtime is (its `JoinError`).
async fn here_then_on<F>(job: F, rt: &tokio::runtime::Handle) -> Result<F::Output, String>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use futures::FutureExt as _;
    let panicked = |panic: Box<dyn std::any::Any + Send>| {
        let what = runtime_core::panic_message(&*panic).unwrap_or_else(|| "a panic".into());
        format!("it panicked: {what}")
    };
    let mut job = Box::pin(std::panic::AssertUnwindSafe(job).catch_unwind());
    match futures::poll!(job.as_mut()) {
        std::task::Poll::Ready(done) => done.map_err(panicked),
        std::task::Poll::Pending => match rt.spawn(job).await {
            Ok(done) => done.map_err(panicked),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// Moves a job's output from its sink to the writer, merging consecutive writes of one stream into
/// chunks of up to 64 KiB, numbered from 1 within the attempt. A test suite's events come on
/// `events` and are numbered in the same sequence; output already in the sink goes first, so an
/// event sent after a run returned follows that run's output.
async fn pump_output(
    job: Uuid,
    attempt: i32,
    mut rx: mpsc::Receiver<OutputChunk>,
    mut events: mpsc::Receiver<Vec<u8>>,
    writer: mpsc::Sender<WriterMsg>,
) {
    let mut seq = 0i32;
    let mut held: Option<OutputChunk> = None;
    let mut output_open = true;
    let mut events_open = true;
    loop {
        let next = match held.take() {
            Some(c) => Some(Ok(c)),
            None if !output_open && !events_open => None,
            None => tokio::select! {
                biased;
                c = rx.recv(), if output_open => match c {
                    Some(c) => Some(Ok(c)),
                    None => {
                        output_open = false;
                        continue;
                    }
                },
                e = events.recv(), if events_open => match e {
                    Some(e) => Some(Err(e)),
                    None => {
                        events_open = false;
                        continue;
                    }
                },
            },
        };
        let (stream, data) = match next {
            None => break,
            Some(Err(event)) => (ChunkKind::Event, event),
            Some(Ok(first)) => {
                let stream = first.stream;
                let mut data = first.data.to_vec();
                while data.len() < FLUSH_BYTES {
                    match rx.try_recv() {
                        Ok(c) if c.stream == stream => data.extend_from_slice(&c.data),
                        Ok(c) => {
                            held = Some(c);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                (ChunkKind::Output(stream), data)
            }
        };
        seq += 1;
        let chunk = NewChunk {
            job_id: job,
            attempt,
            seq,
            stream,
            data,
        };
        if writer.send(WriterMsg::Chunk(chunk)).await.is_err() {
            break;
        }
    }
}

/// One LISTEN connection: wake-ups for new jobs, and cancels of running jobs.
async fn listen(
    pool: PgPool,
    running: RunningMap,
    wake: Arc<Notify>,
    local_origin: Option<Uuid>,
    stop: CancellationToken,
) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; polling meanwhile");
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => continue }
            }
        };
        if let Err(e) = listener.listen_all([CHANNEL_JOBS, CHANNEL_CANCEL]).await {
            tracing::warn!(error = %e, "LISTEN failed; polling meanwhile");
            tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => continue }
        }
        // Notifications sent while we were away are lost: catch up.
        wake.notify_one();
        loop {
            let n = tokio::select! {
                _ = stop.cancelled() => return,
                n = listener.try_recv() => n,
            };
            match n {
                Ok(Some(n)) if n.channel() == CHANNEL_CANCEL => {
                    for id in crate::model::parse_ids(n.payload()) {
                        tracing::debug!(job = %id, "cancel notification");
                        if let Some(e) = lock(&running).get(&id) {
                            e.stop(StopCause::Cancel);
                        }
                    }
                }
                // A job stored by the API of this process: it has poked us already.
                Ok(Some(n))
                    if local_origin.is_some()
                        && store::wake_origin(n.payload()) == local_origin => {}
                Ok(Some(_)) => wake.notify_one(),
                Ok(None) => {
                    tracing::warn!("LISTEN connection lost; reconnecting");
                    wake.notify_one();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// Keeps `capped` telling whether any tenant has a `max_running` cap, read every `every` (a
/// failed read leaves it as it was).
async fn caps_loop(
    pool: PgPool,
    capped: Arc<AtomicBool>,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        match store::tenants::any_capped(&pool).await {
            Ok(any) => capped.store(any, Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, "reading the tenants' caps failed; will retry"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Renews leases (and reads cancel flags) every heartbeat; checks cancel flags more often.
async fn heartbeat_loop(
    pool: PgPool,
    config: WorkerConfig,
    running: RunningMap,
    stop: CancellationToken,
) {
    let mut last_beat = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(config.timing.cancel_poll) => {}
        }
        let ids: Vec<Uuid> = lock(&running).keys().copied().collect();
        if ids.is_empty() {
            last_beat = tokio::time::Instant::now();
            continue;
        }
        if last_beat.elapsed() >= config.timing.heartbeat {
            last_beat = tokio::time::Instant::now();
            match queue::heartbeat(&pool, config.id, &ids, config.timing.lease).await {
                Ok(held) => {
                    let held: HashMap<Uuid, bool> = held.into_iter().collect();
                    let map = lock(&running);
                    for id in &ids {
                        let Some(e) = map.get(id) else { continue };
                        match held.get(id) {
                            Some(true) => e.stop(StopCause::Cancel),
                            Some(false) => {}
                            // Taken over — or finished: its completion commits and ends the
                            // lease before the job leaves the map (the slot frees after that).
                            None => match unrenewed(e) {
                                Unrenewed::LeaseLost => {
                                    tracing::warn!(job = %id, "lease lost; stopping the job without recording anything");
                                    e.stop(StopCause::LeaseLost);
                                }
                                Unrenewed::Finishing => {
                                    tracing::debug!(job = %id, "lease ended by the job's completion");
                                }
                            },
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed; will retry"),
            }
        } else {
            match queue::cancel_requested(&pool, &ids).await {
                Ok(cancelled) => {
                    let map = lock(&running);
                    for id in cancelled {
                        tracing::debug!(job = %id, "cancel flag seen by polling");
                        if let Some(e) = map.get(&id) {
                            e.stop(StopCause::Cancel);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "checking cancel flags failed; will retry"),
            }
        }
    }
}

/// Rescue of expired leases and retention, on every worker (no leader needed).
async fn upkeep_loop(pool: PgPool, timing: QueueTiming, stop: CancellationToken, metrics: Metrics) {
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(timing.rescue_every) => {}
        }
        match queue::rescue(&pool, 100, timing.max_lost).await {
            Ok(r) if !r.is_empty() => {
                metrics.rescues.inc_by(r.len() as u64);
                tracing::info!(rescued = ?r, "took back jobs whose worker stopped renewing its lease")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "rescue failed; will retry"),
        }
        if last_prune.is_none_or(|t| t.elapsed() >= timing.retention_every) {
            last_prune = Some(tokio::time::Instant::now());
            loop {
                match queue::prune(&pool, timing.retention, 1000).await {
                    Ok(n) if n >= 1000 => continue,
                    Ok(n) => {
                        if n > 0 {
                            tracing::info!(deleted = n, "pruned finished jobs past retention");
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "retention failed; will retry");
                        break;
                    }
                }
            }
            log_partitions(&pool, timing.retention).await;
        }
    }
}

/// Partitions of `log_chunks` (store/partitions.rs): retires those past retention (after the
/// prune above removed their jobs), then creates the current period's and the next ones'.
/// Failures are logged and retried at the next pass; output goes to the DEFAULT partition
/// meanwhile, so nothing is lost.
async fn log_partitions(pool: &PgPool, retention: Duration) {
    match partitions::retire(pool, retention).await {
        Ok(r) => {
            if !r.dropped.is_empty() {
                tracing::info!(dropped = ?r.dropped, "dropped log partitions past retention");
            }
            if r.swept_chunks > 0 {
                tracing::info!(kept = ?r.kept, chunks = r.swept_chunks,
                    "deleted pruned jobs' output from log partitions past retention that still hold a job");
            }
        }
        Err(e) => tracing::warn!(error = %e, "retiring log partitions failed; will retry"),
    }
    ensure_log_partitions(pool, retention).await;
}

/// The longest a new worker's writers wait for [`ensure_log_partitions`] before they store output
/// anyway. Creating the partitions takes milliseconds; longer only while another transaction holds
/// their lock or `log_chunks` (each such wait gives up after 2 s) or while the database is
/// unreachable.
const PARTITIONS_WAIT: Duration = Duration::from_secs(10);

/// Creates the current period's partition of `log_chunks` and the next ones' where missing. Also
/// run once when the worker starts, before its writers store any output: output stored while its
/// period has no partition goes to the DEFAULT partition, and that period then never gets one
/// (store/partitions.rs), so without it a new installation's first period would all go there.
async fn ensure_log_partitions(pool: &PgPool, retention: Duration) {
    match partitions::ensure(pool, partitions::period_for(retention)).await {
        Ok(created) if !created.is_empty() => {
            tracing::info!(created = ?created, "created log partitions ahead of time")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "creating log partitions failed; will retry (output goes to the default partition meanwhile)")
        }
    }
}

/// The `ModuleStore` the Wasm backend uses: modules by digest from PostgreSQL.
use runtime_core::ModuleStoreError;

pub struct PgModuleStore {
    pub pool: PgPool,
}

#[async_trait::async_trait]
impl runtime_core::ModuleStore for PgModuleStore {
    async fn load(&self, digest: &str) -> Result<Vec<u8>, ModuleStoreError> {
        match store::modules::bytes(&self.pool, digest).await {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err(ModuleStoreError::Missing(format!(
                "module {digest} is not stored; upload it with POST /v1/modules"
            ))),
            // The database is the worker's, not the job's: a lost connection or a restarting
            // server is retried like any infrastructure failure.
            Err(e) => Err(ModuleStoreError::Unavailable(format!(
                "loading module {digest}: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Arc, CancellationToken, Duration, HashMap, Mutex, Running, SlotShares, StopCause,
        Unrenewed, Uuid, WRITER_LANES, here_then_on, queue, skip_runs_already_here, unrenewed,
        writer_lane,
    };

    /// The sandbox runtime of the tests below: its threads are named, so a job can tell where it
    /// runs.
    fn sandbox() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-sandbox")
            .enable_all()
            .build()
            .unwrap()
    }

    fn thread() -> String {
        std::thread::current().name().unwrap_or("").to_string()
    }

    /// A job that ends in its first poll runs wholly on the calling task; one that waits moves to
    /// the sandbox runtime at its first wait and ends there; a panic on either side is the job's
    /// error, not the caller's.
    #[tokio::test(flavor = "current_thread")]
    async fn a_job_starts_on_its_task_and_moves_to_the_sandbox_runtime_at_its_first_wait() {
        let rt = sandbox();
        let here = thread();
        assert_ne!(here, "test-sandbox");

        let quick = here_then_on(async { thread() }, rt.handle()).await;
        assert_eq!(
            quick.as_deref(),
            Ok(here.as_str()),
            "ended in its first poll"
        );

        let waits = here_then_on(
            async {
                let first = thread();
                tokio::task::yield_now().await;
                (first, thread())
            },
            rt.handle(),
        )
        .await
        .unwrap();
        assert_eq!(waits, (here.clone(), "test-sandbox".to_string()));

        let early: Result<(), String> =
            here_then_on(async { panic!("in the first poll") }, rt.handle()).await;
        assert_eq!(early, Err("it panicked: in the first poll".to_string()));
        let late: Result<(), String> = here_then_on(
            async {
                tokio::task::yield_now().await;
                panic!("on the sandbox runtime, {}", thread())
            },
            rt.handle(),
        )
        .await;
        assert_eq!(
            late,
            Err("it panicked: on the sandbox runtime, test-sandbox".to_string())
        );
        rt.shutdown_background();
    }

    #[test]
    fn jobs_spread_over_the_writer_lanes_and_each_keeps_to_one() {
        let lanes: Vec<_> = (0..WRITER_LANES)
            .map(|_| tokio::sync::mpsc::channel(1).0)
            .collect();
        let mut per_lane = vec![0usize; WRITER_LANES];
        for _ in 0..400 {
            let id = Uuid::now_v7();
            let lane = writer_lane(&lanes, id);
            // Every write of a job goes through the same lane (its chunks before its completion).
            assert!(lane.same_channel(writer_lane(&lanes, id)));
            let i = lanes.iter().position(|l| l.same_channel(lane)).unwrap();
            per_lane[i] += 1;
        }
        // Ids made in the same millisecond spread too: a lane is chosen by the id's random bits.
        assert!(
            per_lane.iter().all(|&n| n >= 400 / WRITER_LANES / 2),
            "jobs per lane: {per_lane:?}"
        );
    }

    #[test]
    fn a_lease_ended_by_the_jobs_own_completion_is_not_a_lost_lease() {
        let entry = Running {
            cancel: Default::default(),
            cause: Default::default(),
            completing: Default::default(),
            tenant: "t".into(),
            attempt: 1,
        };
        // Running, and its lease is gone: someone else owns the job.
        assert_eq!(unrenewed(&entry), Unrenewed::LeaseLost);
        // Its completion is on the way to the database: the commit ended the lease.
        entry
            .completing
            .store(true, std::sync::atomic::Ordering::Release);
        assert_eq!(unrenewed(&entry), Unrenewed::Finishing);
        // Already being stopped for another reason: not stopped again.
        let stopping = Running {
            cancel: Default::default(),
            cause: Default::default(),
            completing: Default::default(),
            tenant: "t".into(),
            attempt: 1,
        };
        stopping.stop(StopCause::Cancel);
        assert_eq!(unrenewed(&stopping), Unrenewed::Finishing);
    }

    #[test]
    fn only_tenants_below_the_average_share_take_the_express_lane() {
        // A heavy tenant and a light one: the light one is express, the heavy one is not.
        let mut tenants = vec!["a"; 31];
        tenants.push("b");
        let shares = SlotShares::of(tenants.iter().copied());
        assert!(shares.below_average("b"));
        assert!(!shares.below_average("a"));
        // A lone tenant is never below its own average.
        let shares = SlotShares::of(["a"; 32]);
        assert!(!shares.below_average("a"));
        // Even shares: nobody is express.
        let shares = SlotShares::of(["a", "b", "a", "b"]);
        assert!(!shares.below_average("a") && !shares.below_average("b"));
        // Uneven heavy tenants: the smaller share is express (it is below 12 / 2 = 6).
        let shares = SlotShares::of([["a"; 8].as_slice(), ["c"; 4].as_slice()].concat());
        assert!(shares.below_average("c"));
        assert!(!shares.below_average("a"));
        // A tenant with nothing running here yet (not possible once claimed, but harmless).
        assert!(SlotShares::of(["a"]).below_average("z"));
    }

    fn claimed(id: Uuid, attempt: i32) -> queue::Claimed {
        queue::Claimed {
            id,
            attempt,
            max_attempts: 3,
            queue_wait: Duration::ZERO,
            spec: serde_json::Value::Null,
            tenant: "default".into(),
            trace: None,
        }
    }

    fn running_as(attempt: i32) -> Arc<Running> {
        Arc::new(Running {
            cancel: CancellationToken::new(),
            cause: Mutex::new(None),
            completing: Default::default(),
            tenant: "default".into(),
            attempt,
        })
    }

    /// A claim PostgreSQL lost (a crash before its WAL flush) can hand this worker a job it is
    /// running: that job is not started a second time, whatever the attempt; others are.
    #[test]
    fn a_job_running_here_is_not_started_again_by_a_repeated_claim() {
        let (here, other, new) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let running = HashMap::from([(here, running_as(1)), (other, running_as(1))]);
        let kept = skip_runs_already_here(
            vec![
                (claimed(here, 1), 'a'),
                (claimed(new, 1), 'b'),
                (claimed(other, 2), 'c'),
            ],
            &running,
        );
        let ids: Vec<(Uuid, char)> = kept.iter().map(|(j, slot)| (j.id, *slot)).collect();
        assert_eq!(ids, vec![(new, 'b')], "a kept job keeps its own slot");
    }
}
