//! The delivery loop: claims due outbox rows, POSTs each event, records every attempt.
//!
//! Every process that runs a worker runs one loop ([`run`]); they share the outbox through
//! `FOR UPDATE SKIP LOCKED` claims with a lease, so a process killed mid-attempt loses nothing:
//! its claims come due again when their lease ends and another process (or the same one,
//! restarted) sends the event again, with the same `webhook-id` (at least once).
//!
//! Where a request may go is decided by [`AddressPolicy`] on every address it could reach:
//! - a host written as an IP address is checked before anything else happens;
//! - a host name is resolved by [`PolicyResolver`], which checks every address DNS returns and
//!   hands the HTTP client only the ones that passed — so the connection is made to a checked
//!   address and a DNS answer that changes between a check and the connect cannot slip past it;
//! - redirects are not followed (a 3xx is a failed attempt), no proxy is used, and every step
//!   has a timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::WebhookOptions;
use super::policy::{self, AddressPolicy, Refusal};
use super::schedule::{RetrySchedule, unit_random};
use super::signing;
use crate::store::webhooks::{self as store, AttemptOutcome, AttemptResult, ClaimedDelivery};

/// How often finished deliveries past retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// On shutdown, how long attempts under way may finish before they are stopped and given back.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Every address of a host was refused by the policy.
#[derive(Debug, Clone)]
pub struct Refused {
    pub host: String,
    pub refusals: Vec<Refusal>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let literal = self.refusals.len() == 1 && self.refusals[0].addr.to_string() == self.host;
        let list = self
            .refusals
            .iter()
            .map(Refusal::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let hint = self
            .refusals
            .first()
            .map(Refusal::allow_hint)
            .unwrap_or_default();
        if literal {
            write!(
                f,
                "refused: {list}; webhooks may only reach public addresses — an operator can allow it with --webhook-allow {hint}"
            )
        } else {
            write!(
                f,
                "refused: {} resolves only to addresses webhooks may not reach ({list}); an operator can allow one with --webhook-allow {hint}",
                self.host
            )
        }
    }
}

impl std::error::Error for Refused {}

/// A host name could not be resolved.
#[derive(Debug)]
struct LookupFailed {
    host: String,
    error: std::io::Error,
}

impl std::fmt::Display for LookupFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "could not resolve {}: {}", self.host, self.error)
    }
}

impl std::error::Error for LookupFailed {}

/// The HTTP client's DNS resolver: resolves with the system's resolver, then keeps only the
/// addresses the policy allows (none: the request fails with [`Refused`]).
pub struct PolicyResolver {
    policy: Arc<AddressPolicy>,
}

impl PolicyResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        Self { policy }
    }

    /// The addresses of `host` a delivery may connect to.
    pub async fn resolve_checked(
        policy: &AddressPolicy,
        host: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|error| LookupFailed {
                host: host.to_string(),
                error,
            })?
            .collect();
        let mut allowed = Vec::new();
        let mut refusals = Vec::new();
        for addr in found {
            match policy.check(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(r) => {
                    if !refusals.contains(&r) {
                        refusals.push(r);
                    }
                }
            }
        }
        if allowed.is_empty() {
            if refusals.is_empty() {
                return Err(Box::new(LookupFailed {
                    host: host.to_string(),
                    error: std::io::Error::other("no addresses"),
                }));
            }
            return Err(Box::new(Refused {
                host: host.to_string(),
                refusals,
            }));
        }
        Ok(allowed)
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = Self::resolve_checked(&policy, &host).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client of deliveries: the policy resolver, no redirects, no proxy, timeouts.
pub fn client(
    options: &WebhookOptions,
    policy: Arc<AddressPolicy>,
) -> anyhow::Result<reqwest::Client> {
    // reqwest is built with rustls but without a default crypto provider (see cli::client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .dns_resolver(PolicyResolver::new(policy))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(options.connect_timeout)
        .timeout(options.timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("nekton-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("setting up the webhook HTTP client")
}

/// The answer to one attempt: the endpoint's status if it answered, and why it failed (`None`:
/// delivered).
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// Makes one attempt to deliver `d`.
pub async fn send(
    client: &reqwest::Client,
    policy: &AddressPolicy,
    options: &WebhookOptions,
    d: &ClaimedDelivery,
) -> Sent {
    let fail = |error: String| Sent {
        status: None,
        error: Some(error),
    };
    let url = match policy::check_url(&d.url) {
        Ok(u) => u,
        Err(e) => return fail(format!("the endpoint's URL cannot be used: {e}")),
    };
    if let Some(ip) = policy::literal_ip(&url)
        && let Err(r) = policy.check(ip)
    {
        return fail(
            Refused {
                host: ip.to_string(),
                refusals: vec![r],
            }
            .to_string(),
        );
    }
    let key = match signing::secret_key(&d.secret) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let id = d.id.to_string();
    let timestamp = chrono::Utc::now().timestamp();
    let signature = match signing::sign(&key, &id, timestamp, d.body.as_bytes()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let host = url.host_str().unwrap_or_default().to_string();
    let result = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(d.body.clone())
        .send()
        .await;
    match result {
        Ok(resp) => {
            let status = resp.status();
            let code = Some(status.as_u16());
            if status.is_success() {
                Sent {
                    status: code,
                    error: None,
                }
            } else if status.is_redirection() {
                let to = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .map(|l| format!(" to {}", l.chars().take(200).collect::<String>()))
                    .unwrap_or_default();
                Sent {
                    status: code,
                    error: Some(format!(
                        "the endpoint answered {status} (a redirect{to}); redirects are not followed — register the final URL"
                    )),
                }
            } else {
                Sent {
                    status: code,
                    error: Some(format!(
                        "the endpoint answered {status}; only 2xx counts as delivered"
                    )),
                }
            }
        }
        Err(e) => fail(describe(&e, &host, options)),
    }
}

/// Why a request failed, in words for the delivery log (the policy's refusal when it was one).
fn describe(e: &reqwest::Error, host: &str, options: &WebhookOptions) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut root = e.to_string();
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return r.to_string();
        }
        if let Some(l) = s.downcast_ref::<LookupFailed>() {
            return l.to_string();
        }
        root = s.to_string();
        source = s.source();
    }
    if e.is_timeout() {
        format!(
            "no answer from {host} within {:?} (connect {:?}); the endpoint must answer quickly and do its work later",
            options.timeout, options.connect_timeout
        )
    } else if e.is_connect() {
        format!("could not connect to {host}: {root}")
    } else {
        format!("the request to {host} failed: {root}")
    }
}

/// What happens to a delivery after an attempt that ended as `sent`.
pub fn outcome(
    schedule: &RetrySchedule,
    d: &ClaimedDelivery,
    sent: &Sent,
    took: Duration,
) -> AttemptOutcome {
    if sent.error.is_none() {
        return AttemptOutcome::Delivered;
    }
    let failed = u32::try_from(d.failed_before + 1).unwrap_or(u32::MAX);
    match schedule.next(failed, d.window_elapsed + took, unit_random()) {
        Some(wait) => AttemptOutcome::RetryAfter(wait),
        None => AttemptOutcome::GiveUp,
    }
}

type Held = Arc<Mutex<HashMap<Uuid, i32>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One attempt, start to record.
async fn deliver(
    pool: PgPool,
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
    options: Arc<WebhookOptions>,
    held: Held,
    d: ClaimedDelivery,
    metrics: crate::metrics::Metrics,
) {
    let started = Instant::now();
    let sent = send(&client, &policy, &options, &d).await;
    let took = started.elapsed();
    let outcome = outcome(&options.retry, &d, &sent, took);
    metrics.webhook_delivery(match &outcome {
        AttemptOutcome::Delivered => "delivered",
        AttemptOutcome::RetryAfter(_) => "failed",
        AttemptOutcome::GiveUp => "gave_up",
    });
    match &outcome {
        AttemptOutcome::Delivered => {
            tracing::debug!(delivery = %d.id, webhook = %d.webhook_id, attempt = d.attempt, "webhook delivered")
        }
        AttemptOutcome::RetryAfter(wait) => {
            tracing::info!(delivery = %d.id, webhook = %d.webhook_id, attempt = d.attempt, error = sent.error.as_deref().unwrap_or(""), retry_in = ?wait, "webhook attempt failed")
        }
        AttemptOutcome::GiveUp => {
            tracing::warn!(delivery = %d.id, webhook = %d.webhook_id, attempt = d.attempt, error = sent.error.as_deref().unwrap_or(""), "webhook delivery failed for good: retries ran out")
        }
    }
    let result = AttemptResult {
        id: d.id,
        attempt: d.attempt,
        status: sent.status,
        error: sent.error,
        duration: took,
        outcome,
    };
    match store::record(&pool, &result).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(delivery = %d.id, attempt = d.attempt, "the delivery's claim was taken over before its result was recorded (lease too short?)")
        }
        Err(e) => {
            tracing::warn!(delivery = %d.id, error = %e, "recording a webhook attempt failed; the delivery is retried when its lease ends")
        }
    }
    lock(&held).remove(&d.id);
}

/// Drains the outbox until `stop` fires, then gives back the claims still under way. Also
/// deletes finished deliveries older than `retention`.
pub async fn run(
    pool: PgPool,
    options: WebhookOptions,
    retention: Duration,
    stop: CancellationToken,
    metrics: crate::metrics::Metrics,
) -> anyhow::Result<()> {
    options.check().map_err(anyhow::Error::msg)?;
    let policy = Arc::new(AddressPolicy::new(options.allow.clone()));
    let client = client(&options, policy.clone())?;
    let options = Arc::new(options);
    let held: Held = Arc::default();
    let mut inflight = tokio::task::JoinSet::new();
    let mut maybe_more = true;
    let mut last_prune: Option<Instant> = None;
    tracing::info!(allow = ?options.allow, "webhook delivery started");
    loop {
        while inflight.try_join_next().is_some() {}
        let free = options.concurrency.saturating_sub(inflight.len());
        if free > 0 && maybe_more {
            maybe_more = false;
            match store::claim(&pool, free as i64, options.lease).await {
                Ok(claims) => {
                    maybe_more = claims.len() == free;
                    for d in claims {
                        lock(&held).insert(d.id, d.attempt);
                        inflight.spawn(deliver(
                            pool.clone(),
                            client.clone(),
                            policy.clone(),
                            options.clone(),
                            held.clone(),
                            d,
                            metrics.clone(),
                        ));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming webhook deliveries failed; retrying after the poll interval")
                }
            }
        }
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            match store::prune(&pool, retention, 1000).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "pruned webhook deliveries past retention"),
                Err(e) => tracing::warn!(error = %e, "webhook retention failed; will retry"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
            _ = tokio::time::sleep(options.poll) => maybe_more = true,
        }
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while inflight.join_next().await.is_some() {}
    })
    .await;
    inflight.abort_all();
    while inflight.join_next().await.is_some() {}
    let left: Vec<(Uuid, i32)> = lock(&held).drain().collect();
    if !left.is_empty() {
        match store::release(&pool, &left).await {
            Ok(n) => tracing::info!(
                released = n,
                "webhook attempts stopped by shutdown were given back"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "giving back webhook claims failed; they are retried when their lease ends")
            }
        }
    }
    tracing::info!("webhook delivery stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_resolver_refuses_names_that_lead_only_to_forbidden_addresses() {
        // `localhost` is resolved from /etc/hosts; nothing is connected to.
        let open = AddressPolicy::default();
        let err = PolicyResolver::resolve_checked(&open, "localhost")
            .await
            .expect_err("localhost is loopback");
        let refused = err.downcast_ref::<Refused>().expect("a policy refusal");
        let text = refused.to_string();
        assert!(text.contains("localhost resolves only to"), "{text}");
        assert!(text.contains("loopback"), "{text}");
        assert!(text.contains("--webhook-allow"), "{text}");

        let allowed = AddressPolicy::new(vec!["127.0.0.1/32".parse().unwrap()]);
        let addrs = PolicyResolver::resolve_checked(&allowed, "localhost")
            .await
            .expect("127.0.0.1 is allowed");
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip() == std::net::IpAddr::from([127, 0, 0, 1])),
            "only checked addresses are handed to the client: {addrs:?}"
        );
    }

    #[test]
    fn a_literal_refusal_names_the_address_and_the_flag() {
        let r = AddressPolicy::default()
            .check("169.254.169.254".parse().unwrap())
            .unwrap_err();
        let text = Refused {
            host: "169.254.169.254".into(),
            refusals: vec![r],
        }
        .to_string();
        assert!(
            text.starts_with("refused: 169.254.169.254 is a cloud metadata address"),
            "{text}"
        );
        assert!(
            text.contains("--webhook-allow 169.254.169.254/32"),
            "{text}"
        );
    }
}
