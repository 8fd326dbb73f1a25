//! A job's timeline (`nekton::timeline` TRACE events, see `nekton::timeline!`): a lone job
//! submitted with `?wait=` to API and worker in one process passes every step, each after the
//! step that causes it. `load-tests/floor/steps.py` reads these steps by name from a server's
//! log; this test keeps the names and their order from drifting away from it.
//!
//! Its own test binary: it installs the process's global tracing subscriber.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Harness, guests};
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// The steps of a handed lone job, each with the step it must follow.
const STEPS: [(&str, Option<&str>); 11] = [
    ("api.received", None),
    ("api.stored", Some("api.received")),
    ("worker.handed", Some("api.stored")),
    ("worker.started", Some("worker.handed")),
    ("sandbox.started", Some("worker.started")),
    ("sandbox.ended", Some("sandbox.started")),
    ("worker.ran", Some("sandbox.ended")),
    ("writer.flushing", Some("worker.ran")),
    ("writer.stored", Some("writer.flushing")),
    // Woken by the writer's in-process call or by the flush's NOTIFY, whichever comes first:
    // after the flush began, not necessarily after the writer saw its result.
    ("api.woken", Some("writer.flushing")),
    ("api.answered", Some("api.woken")),
];

type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// Records (job, step) of every timeline event, in the order they happen. It picks its events
/// itself (`register_callsite`, `enabled`) rather than through a per-layer filter: wrapped in
/// `with_filter(Targets)` it missed some of them.
struct Steps(Seen);

#[derive(Default)]
struct Fields {
    job: Option<String>,
    step: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "step" {
            self.step = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "job" => self.job = Some(format!("{value:?}")),
            "step" => self.step = Some(format!("{value:?}").trim_matches('"').to_owned()),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Steps {
    fn register_callsite(&self, meta: &'static tracing::Metadata<'static>) -> Interest {
        match meta.target() == "nekton::timeline" {
            true => Interest::always(),
            false => Interest::never(),
        }
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        meta.target() == "nekton::timeline"
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "nekton::timeline" {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        if let (Some(job), Some(step)) = (f.job, f.step) {
            self.0.lock().unwrap().push((job, step));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_lone_job_passes_every_step_of_its_timeline_in_order() {
    let seen: Seen = Arc::default();
    tracing_subscriber::registry()
        .with(Steps(seen.clone()))
        .try_init()
        .expect("this test binary installs the only global subscriber");

    let h = Harness::start_with(|o| o.timing.poll = Duration::from_secs(600)).await;
    let hello = h.push(guests::hello()).await;
    let spec = serde_json::to_value(Harness::spec(&hello)).unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let job: Value = h
            .http
            .post(format!("{}/v1/jobs?wait=30", h.base))
            .json(&spec)
            .send()
            .await
            .expect("POST /v1/jobs?wait=30")
            .json()
            .await
            .unwrap();
        assert_eq!(job["state"], "succeeded", "{job}");
        ids.push(job["id"].as_str().unwrap().to_owned());
    }

    let seen = seen.lock().unwrap().clone();
    for id in &ids {
        // Each step's first position among all events.
        let mut at: HashMap<&str, usize> = HashMap::new();
        for (i, (job, step)) in seen.iter().enumerate() {
            if job == id {
                at.entry(step.as_str()).or_insert(i);
            }
        }
        for (step, after) in STEPS {
            let Some(&i) = at.get(step) else {
                panic!("job {id} has no `{step}` step; its steps: {at:?}");
            };
            if let Some(after) = after {
                assert!(
                    at.get(after).is_some_and(|&j| j < i),
                    "job {id}: `{step}` came before `{after}`; its steps: {at:?}"
                );
            }
        }
        assert_eq!(
            at.len(),
            STEPS.len(),
            "job {id} has steps this test does not know (add them to STEPS and to \
             load-tests/floor/steps.py): {at:?}"
        );
    }
}
