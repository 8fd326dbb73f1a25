//! Lone jobs handed from an API to the worker in the same process (`nekton serve`), without a
//! claim — the in-memory counterpart of [`super::queue::claim`], here because both the API and
//! the worker use it (neither imports the other). The API sets one of the worker's slots aside
//! ([`Handoff::reserve`]), stores the job already `running` on the worker when a claim would have
//! taken it at once anyway ([`super::jobs::submit`] with a [`HandTo`]), and passes it here
//! ([`Handoff::hand`]). The job's path loses the claim statement, its commit and the wake-up in
//! between (docs/queue.md, "Handing a lone job to the worker beside the API").
//!
//! Slots are one semaphore shared by both paths: the claim loop takes a permit per slot it asks
//! the database to fill, the API one per job it may hand, and a job holds its permit until its
//! slot frees — so a worker never runs more jobs than it has slots, whichever path they came by.
//! Container slots are a second semaphore, used the same way: a job that may run in a container
//! ([`super::queue::runs_in_container`]) holds one of each, so a worker never runs more of them
//! than it has container slots either.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use uuid::Uuid;

use super::jobs::HandTo;
use super::queue::Claimed;

/// A job stored `running` on this worker by the API, with the slot set aside for it.
pub struct Handed {
    pub job: Claimed,
    pub slot: Slot,
}

/// One of the worker's slots, and for a job that may run in a container one of its container
/// slots too: set aside for a job the API is about to store, or held by a job the worker runs.
/// Dropping it frees both.
pub struct Slot {
    /// Held, never read: dropping it frees the slot.
    _slot: OwnedSemaphorePermit,
    container: Option<OwnedSemaphorePermit>,
}

impl Slot {
    pub(crate) fn new(slot: OwnedSemaphorePermit, container: Option<OwnedSemaphorePermit>) -> Self {
        Self {
            _slot: slot,
            container,
        }
    }

    /// Whether this slot includes a container slot.
    pub fn has_container(&self) -> bool {
        self.container.is_some()
    }
}

/// The API's side of a worker in the same process.
pub struct Handoff {
    worker: Uuid,
    queues: Vec<String>,
    lease: Duration,
    slots: Arc<Semaphore>,
    containers: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Handed>,
}

impl Handoff {
    /// A worker's slots (`slots` of them, `containers` of which may hold container jobs) and the
    /// channel its handed jobs arrive on (the worker's; `Worker::handoff` gives the API its side).
    pub fn new(
        worker: Uuid,
        queues: Vec<String>,
        slots: usize,
        containers: usize,
        lease: Duration,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Handed>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handoff = Handoff {
            worker,
            queues,
            lease,
            slots: Arc::new(Semaphore::new(slots)),
            containers: Arc::new(Semaphore::new(containers.min(slots))),
            tx,
        };
        (Arc::new(handoff), rx)
    }

    /// The worker's slots (its claim loop takes its permits here too).
    pub(crate) fn slots(&self) -> &Arc<Semaphore> {
        &self.slots
    }

    /// The worker's container slots (likewise).
    pub(crate) fn containers(&self) -> &Arc<Semaphore> {
        &self.containers
    }

    /// Sets a free slot aside for a job of `queue` — with a container slot when the job may run
    /// in a container — if the worker serves that queue, has such a slot free and is not
    /// shutting down.
    pub fn reserve(&self, queue: &str, container: bool) -> Option<Slot> {
        if !self.queues.iter().any(|q| q == queue) {
            return None;
        }
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        let container = match container {
            true => Some(self.containers.clone().try_acquire_owned().ok()?),
            false => None,
        };
        Some(Slot::new(slot, container))
    }

    /// Where the submission may store the job (`store::jobs::submit`).
    pub fn to(&self) -> HandTo<'_> {
        HandTo {
            worker: self.worker,
            queues: &self.queues,
            lease: self.lease,
        }
    }

    /// Passes a job stored `running` on this worker (attempt 1) to it, with the slot set aside
    /// for it. Gives the job back when the worker has stopped taking jobs (it is shutting down):
    /// the caller then puts it back in its queue (`store::queue::return_unstarted`).
    pub fn hand(&self, slot: Slot, job: Claimed) -> Result<(), Box<Claimed>> {
        self.tx
            .send(Handed { job, slot })
            .map_err(|e| Box::new(e.0.job))
    }

    /// The worker's id (a job stored `running` on it names it).
    pub fn worker(&self) -> Uuid {
        self.worker
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Claimed {
        Claimed {
            id: Uuid::now_v7(),
            attempt: 1,
            max_attempts: 1,
            queue_wait: Duration::ZERO,
            spec: serde_json::json!({}),
            tenant: "default".into(),
            trace: None,
        }
    }

    #[test]
    fn a_slot_is_set_aside_only_for_a_served_queue_and_while_one_is_free() {
        let (handoff, _rx) = Handoff::new(
            Uuid::now_v7(),
            vec!["default".into()],
            2,
            1,
            Duration::from_secs(30),
        );
        assert!(
            handoff.reserve("other", false).is_none(),
            "a queue the worker does not serve"
        );
        let a = handoff.reserve("default", false).expect("first slot");
        let b = handoff.reserve("default", false).expect("second slot");
        assert!(
            handoff.reserve("default", false).is_none(),
            "both slots are set aside"
        );
        drop(a);
        assert!(
            handoff.reserve("default", false).is_some(),
            "a dropped slot is free again"
        );
        drop(b);
        assert_eq!(handoff.slots().available_permits(), 2);
    }

    #[test]
    fn a_container_job_needs_a_container_slot_too_and_takes_nothing_without_one() {
        let (handoff, _rx) = Handoff::new(
            Uuid::now_v7(),
            vec!["default".into()],
            3,
            1,
            Duration::from_secs(30),
        );
        let boxed = handoff
            .reserve("default", true)
            .expect("a slot and a container slot");
        assert!(boxed.has_container());
        assert!(
            handoff.reserve("default", true).is_none(),
            "the only container slot is taken"
        );
        assert_eq!(
            handoff.slots().available_permits(),
            2,
            "a refused container job keeps no slot"
        );
        let plain = handoff
            .reserve("default", false)
            .expect("a Wasm job's slot");
        assert!(!plain.has_container());
        drop(boxed);
        assert_eq!(handoff.containers().available_permits(), 1);
        drop(plain);
        assert_eq!(handoff.slots().available_permits(), 3);
    }

    #[test]
    fn a_handed_job_arrives_with_its_slot_and_comes_back_once_the_worker_stopped() {
        let (handoff, mut rx) = Handoff::new(
            Uuid::now_v7(),
            vec!["default".into()],
            1,
            1,
            Duration::from_secs(30),
        );
        let sent = job();
        let id = sent.id;
        handoff
            .hand(handoff.reserve("default", false).unwrap(), sent)
            .unwrap();
        let handed = rx.try_recv().expect("the job arrived");
        assert_eq!(handed.job.id, id);
        assert!(
            handoff.reserve("default", false).is_none(),
            "the job holds the slot"
        );
        drop(handed);
        rx.close();
        let slot = handoff
            .reserve("default", false)
            .expect("the slot came back");
        let back = handoff
            .hand(slot, job())
            .expect_err("the worker stopped taking jobs");
        assert_ne!(back.id, id);
        assert_eq!(
            handoff.slots().available_permits(),
            1,
            "the refused job's slot is free"
        );
    }
}
