//! Webhooks: job and batch completion events POSTed to tenants' endpoints.
//!
//! - [`policy`]: the URL rules and the address policy (which addresses a delivery may reach);
//! - [`signing`]: Standard Webhooks signatures and endpoint secrets;
//! - [`schedule`]: the retry schedule (exponential backoff with jitter, at least 24 h);
//! - [`delivery`]: the loop every worker process runs, draining the outbox.
//!
//! The events themselves are written by a trigger on `jobs` (migration 0004) in the transaction
//! that finishes the job, so an event exists if and only if the job's final state committed.
//! docs/webhooks.md has the reasoning.

pub mod delivery;
pub mod policy;
pub mod schedule;
pub mod signing;

use std::time::Duration;

use ipnet::IpNet;

use schedule::RetrySchedule;

/// How a process delivers webhooks (only processes that run a worker do).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookOptions {
    /// Ranges deliveries may reach although the address policy refuses them
    /// (`--webhook-allow`).
    pub allow: Vec<IpNet>,
    pub retry: RetrySchedule,
    /// How long a claimed delivery is this process's; after it, another process may try it
    /// (must exceed `timeout`).
    pub lease: Duration,
    /// How often the outbox is checked for due deliveries.
    pub poll: Duration,
    /// Connecting to an endpoint.
    pub connect_timeout: Duration,
    /// A whole attempt: connect, send, and the answer's status line and headers.
    pub timeout: Duration,
    /// Attempts under way at once in this process.
    pub concurrency: usize,
}

impl Default for WebhookOptions {
    /// No extra ranges, the default retry schedule, a 60 s lease, polling every second, 5 s to
    /// connect, 15 s per attempt, 32 at once.
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            retry: RetrySchedule::default(),
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            concurrency: 32,
        }
    }
}

impl WebhookOptions {
    /// Refuses settings that would deliver twice in normal operation (a lease shorter than an
    /// attempt may take).
    pub fn check(&self) -> Result<(), String> {
        if self.lease <= self.timeout {
            return Err(format!(
                "the webhook lease ({:?}) must be longer than the attempt timeout ({:?}), or a slow \
                 endpoint would get each event twice",
                self.lease, self.timeout
            ));
        }
        if self.concurrency == 0 {
            return Err("webhook concurrency must be at least 1".to_string());
        }
        Ok(())
    }
}
