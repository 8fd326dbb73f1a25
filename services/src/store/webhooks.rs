//! Webhook endpoints and the delivery outbox.
//!
//! The outbox rows are written by the `jobs_finished` trigger (migration 0004) in the transaction
//! that moves a job into a final state. The delivery loop (`crate::webhooks::delivery`) claims
//! due rows like the worker claims jobs: `FOR UPDATE SKIP LOCKED`, `attempts + 1` as a fencing
//! token, and a lease (`next_attempt_at` while `delivering`) after which a claim whose process
//! died is taken again. Every query the API makes is filtered by the caller's tenant.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::StoreError;
use super::tenants::{Actor, audit};
use crate::model::webhooks::{Delivery, DeliveryAttempt, DeliveryState, Webhook, WebhookEvent};

/// Live endpoints a tenant may have.
pub const MAX_WEBHOOKS_PER_TENANT: i64 = 50;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn events_from(names: &[String]) -> Result<Vec<WebhookEvent>, StoreError> {
    names
        .iter()
        .map(|n| {
            WebhookEvent::parse(n)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown webhook event {n:?}")))
        })
        .collect()
}

fn webhook_from_row(r: &PgRow) -> Result<Webhook, StoreError> {
    let events: Vec<String> = r.try_get("events")?;
    Ok(Webhook {
        id: r.try_get("id")?,
        url: r.try_get("url")?,
        events: events_from(&events)?,
        created_at: r.try_get("created_at")?,
    })
}

/// What creating an endpoint did.
pub enum WebhookCreated {
    Created(Webhook),
    /// The tenant already has [`MAX_WEBHOOKS_PER_TENANT`] endpoints.
    TooMany,
}

/// Creates an endpoint of `tenant` (audited as `webhook.create`).
pub async fn create(
    pool: &PgPool,
    actor: &Actor,
    tenant: &str,
    url: &str,
    events: &[WebhookEvent],
    secret: &str,
) -> Result<WebhookCreated, StoreError> {
    let mut tx = pool.begin().await?;
    // One creation per tenant at a time, so two cannot both take the last place.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('nekton.webhooks.' || $1, 0))")
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhooks WHERE tenant_id = $1 AND deleted_at IS NULL",
    )
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    if live >= MAX_WEBHOOKS_PER_TENANT {
        return Ok(WebhookCreated::TooMany);
    }
    let names: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    let row = sqlx::query(
        "INSERT INTO webhooks (id, tenant_id, url, events, secret) VALUES ($1, $2, $3, $4, $5) \
         RETURNING id, url, events, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(url)
    .bind(&names)
    .bind(secret)
    .fetch_one(&mut *tx)
    .await?;
    let webhook = webhook_from_row(&row)?;
    audit(
        &mut tx,
        actor,
        "webhook.create",
        &webhook.id.to_string(),
        serde_json::json!({ "tenant": tenant, "url": url, "events": names }),
    )
    .await?;
    tx.commit().await?;
    Ok(WebhookCreated::Created(webhook))
}

/// A tenant's live endpoints, oldest first.
pub async fn list(pool: &PgPool, tenant: &str) -> Result<Vec<Webhook>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, url, events, created_at FROM webhooks \
         WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY created_at, id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    rows.iter().map(webhook_from_row).collect()
}

/// One live endpoint of a tenant.
pub async fn get(pool: &PgPool, tenant: &str, id: Uuid) -> Result<Option<Webhook>, StoreError> {
    let row = sqlx::query(
        "SELECT id, url, events, created_at FROM webhooks \
         WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(webhook_from_row).transpose()
}

/// Deletes an endpoint (audited as `webhook.delete`): no new events are written for it, and its
/// undelivered events end `failed`. `None`: the tenant has no such live endpoint.
pub async fn delete(
    pool: &PgPool,
    actor: &Actor,
    tenant: &str,
    id: Uuid,
) -> Result<Option<Webhook>, StoreError> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "UPDATE webhooks SET deleted_at = now() \
         WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL \
         RETURNING id, url, events, created_at",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let webhook = webhook_from_row(&row)?;
    // Waiting deliveries end here; one under way is failed too (its result, fenced by the
    // state, is then not recorded), so no attempt ever goes to a deleted endpoint again.
    let dropped = sqlx::query(
        "UPDATE webhook_deliveries SET state = 'failed', \
             last_error = 'the endpoint was deleted before this event was delivered' \
         WHERE webhook_id = $1 AND state IN ('pending', 'delivering')",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    audit(
        &mut tx,
        actor,
        "webhook.delete",
        &id.to_string(),
        serde_json::json!({ "tenant": tenant, "url": webhook.url, "undelivered": dropped }),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(webhook))
}

const DELIVERY_COLUMNS: &str = "d.id, d.webhook_id, d.event, d.state, d.payload, d.created_at, \
    d.next_attempt_at, d.delivered_at, d.last_status, d.last_error";

fn delivery_from_row(r: &PgRow) -> Result<Delivery, StoreError> {
    let event: String = r.try_get("event")?;
    let state: String = r.try_get("state")?;
    let state = DeliveryState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery state {state:?}")))?;
    let next: DateTime<Utc> = r.try_get("next_attempt_at")?;
    Ok(Delivery {
        id: r.try_get("id")?,
        webhook_id: r.try_get("webhook_id")?,
        event: WebhookEvent::parse(&event)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown webhook event {event:?}")))?,
        state,
        payload: r.try_get("payload")?,
        created_at: r.try_get("created_at")?,
        next_attempt_at: matches!(state, DeliveryState::Pending | DeliveryState::Delivering)
            .then_some(next),
        delivered_at: r.try_get("delivered_at")?,
        last_status: r.try_get("last_status")?,
        last_error: r.try_get("last_error")?,
        attempts: Vec::new(),
    })
}

/// Fills in the attempts of `deliveries` (one query).
async fn with_attempts(
    pool: &PgPool,
    mut deliveries: Vec<Delivery>,
) -> Result<Vec<Delivery>, StoreError> {
    let ids: Vec<Uuid> = deliveries.iter().map(|d| d.id).collect();
    let rows = sqlx::query(
        "SELECT delivery_id, attempt, at, status, error, duration_ms FROM webhook_attempts \
         WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    for r in &rows {
        let id: Uuid = r.try_get("delivery_id")?;
        if let Some(d) = deliveries.iter_mut().find(|d| d.id == id) {
            d.attempts.push(DeliveryAttempt {
                attempt: r.try_get("attempt")?,
                at: r.try_get("at")?,
                status: r.try_get("status")?,
                error: r.try_get("error")?,
                duration_ms: r.try_get("duration_ms")?,
            });
        }
    }
    Ok(deliveries)
}

/// An endpoint's deliveries, newest first, older than `before` when given, with their attempts.
/// `None`: the tenant has no such live endpoint.
pub async fn deliveries(
    pool: &PgPool,
    tenant: &str,
    webhook: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Option<Vec<Delivery>>, StoreError> {
    if get(pool, tenant, webhook).await?.is_none() {
        return Ok(None);
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
         WHERE d.webhook_id = $1 AND d.tenant_id = $2 AND ($3::uuid IS NULL OR d.id < $3) \
         ORDER BY d.id DESC LIMIT $4"
    )))
    .bind(webhook)
    .bind(tenant)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let list = rows
        .iter()
        .map(delivery_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(with_attempts(pool, list).await?))
}

/// What a redelivery request found.
pub enum Redelivered {
    /// Queued for an attempt now, with a fresh retry window.
    Queued(Box<Delivery>),
    /// An attempt is under way; it was left alone.
    InFlight,
    /// No such delivery of a live endpoint of the tenant.
    NotFound,
}

/// Queues a delivery again (any state but `delivering`): due now, with a new retry window, the
/// same id and body. Audited as `webhook.redeliver`.
pub async fn redeliver(
    pool: &PgPool,
    actor: &Actor,
    tenant: &str,
    webhook: Uuid,
    delivery: Uuid,
) -> Result<Redelivered, StoreError> {
    let mut tx = pool.begin().await?;
    let state: Option<String> = sqlx::query_scalar(
        "SELECT d.state FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
         WHERE d.id = $1 AND d.webhook_id = $2 AND d.tenant_id = $3 AND w.deleted_at IS NULL \
         FOR UPDATE OF d",
    )
    .bind(delivery)
    .bind(webhook)
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    match state.as_deref() {
        None => return Ok(Redelivered::NotFound),
        Some("delivering") => return Ok(Redelivered::InFlight),
        Some(_) => {}
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_deliveries d SET state = 'pending', next_attempt_at = now(), \
             retry_from = now(), retry_base = attempts, delivered_at = NULL \
         WHERE d.id = $1 RETURNING {DELIVERY_COLUMNS}"
    )))
    .bind(delivery)
    .fetch_one(&mut *tx)
    .await?;
    let d = delivery_from_row(&row)?;
    audit(
        &mut tx,
        actor,
        "webhook.redeliver",
        &webhook.to_string(),
        serde_json::json!({ "tenant": tenant, "delivery": delivery, "was": state }),
    )
    .await?;
    tx.commit().await?;
    let mut d = with_attempts(pool, vec![d]).await?;
    match d.pop() {
        Some(d) => Ok(Redelivered::Queued(Box::new(d))),
        None => Err(StoreError::Corrupt(format!(
            "delivery {delivery} vanished during its redelivery"
        ))),
    }
}

/// A delivery the loop now owns for one attempt.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    /// The fencing token: the result is recorded only if it still matches.
    pub attempt: i32,
    /// Failures in the current retry window before this attempt.
    pub failed_before: i32,
    /// How long the retry window has been open (by the database's clock).
    pub window_elapsed: Duration,
    pub url: String,
    pub secret: String,
    /// The exact body to send.
    pub body: String,
}

/// Claims up to `limit` due deliveries for `lease`: pending ones whose time has come, and
/// delivering ones whose lease ran out (their process died mid-attempt; that attempt is logged
/// as lost). One statement, `FOR UPDATE SKIP LOCKED`, so every worker process can run it.
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    lease: Duration,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "WITH picked AS ( \
             SELECT id, state AS was, attempts AS prev FROM webhook_deliveries \
             WHERE state IN ('pending', 'delivering') AND next_attempt_at <= now() \
             ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED \
         ), lost AS ( \
             INSERT INTO webhook_attempts (delivery_id, attempt, error) \
             SELECT id, prev, 'no result: the process making this attempt stopped before recording one \
                 (its lease ran out); the event is sent again' \
             FROM picked WHERE was = 'delivering' AND prev > 0 \
             ON CONFLICT DO NOTHING \
         ), claimed AS ( \
             UPDATE webhook_deliveries d SET state = 'delivering', attempts = d.attempts + 1, \
                 next_attempt_at = now() + $2 * interval '1 millisecond', \
                 last_error = CASE WHEN p.was = 'delivering' THEN 'the previous attempt was lost with its process' \
                     ELSE d.last_error END \
             FROM picked p WHERE d.id = p.id \
             RETURNING d.id, d.webhook_id, d.attempts, d.retry_base, d.payload::text AS body, \
                 greatest(0, extract(epoch FROM now() - d.retry_from) * 1000)::bigint AS elapsed_ms \
         ) \
         SELECT c.id, c.webhook_id, c.attempts, c.retry_base, c.body, c.elapsed_ms, w.url, w.secret \
         FROM claimed c JOIN webhooks w ON w.id = c.webhook_id",
    )
    .bind(limit)
    .bind(ms(lease))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let attempt: i32 = r.try_get("attempts")?;
            let base: i32 = r.try_get("retry_base")?;
            let elapsed: i64 = r.try_get("elapsed_ms")?;
            Ok(ClaimedDelivery {
                id: r.try_get("id")?,
                webhook_id: r.try_get("webhook_id")?,
                attempt,
                failed_before: (attempt - 1 - base).max(0),
                window_elapsed: Duration::from_millis(u64::try_from(elapsed).unwrap_or(0)),
                url: r.try_get("url")?,
                secret: r.try_get("secret")?,
                body: r.try_get("body")?,
            })
        })
        .collect()
}

/// What to do with a delivery after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again after this long.
    RetryAfter(Duration),
    /// Retries ran out.
    GiveUp,
}

/// The result of one attempt.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub id: Uuid,
    pub attempt: i32,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration: Duration,
    pub outcome: AttemptOutcome,
}

/// Records an attempt, fenced by `(id, attempt, state = 'delivering')`: a claim that was taken
/// over (its lease ran out) changes nothing. Returns whether it applied.
pub async fn record(pool: &PgPool, r: &AttemptResult) -> Result<bool, StoreError> {
    let (state, delay) = match &r.outcome {
        AttemptOutcome::Delivered => ("delivered", None),
        AttemptOutcome::RetryAfter(d) => ("pending", Some(ms(*d))),
        AttemptOutcome::GiveUp => ("failed", None),
    };
    let duration = i32::try_from(r.duration.as_millis()).unwrap_or(i32::MAX);
    let applied: i64 = sqlx::query_scalar(
        "WITH upd AS ( \
             UPDATE webhook_deliveries SET state = $3, \
                 next_attempt_at = CASE WHEN $4::bigint IS NULL THEN next_attempt_at \
                     ELSE now() + $4 * interval '1 millisecond' END, \
                 last_status = $5, last_error = $6, \
                 delivered_at = CASE WHEN $3 = 'delivered' THEN now() ELSE delivered_at END \
             WHERE id = $1 AND attempts = $2 AND state = 'delivering' \
             RETURNING id \
         ), log AS ( \
             INSERT INTO webhook_attempts (delivery_id, attempt, status, error, duration_ms) \
             SELECT id, $2, $5, $6, $7 FROM upd \
             ON CONFLICT (delivery_id, attempt) DO UPDATE SET at = now(), status = EXCLUDED.status, \
                 error = EXCLUDED.error, duration_ms = EXCLUDED.duration_ms \
         ) \
         SELECT count(*) FROM upd",
    )
    .bind(r.id)
    .bind(r.attempt)
    .bind(state)
    .bind(delay)
    .bind(r.status.map(i32::from))
    .bind(&r.error)
    .bind(duration)
    .fetch_one(pool)
    .await?;
    Ok(applied > 0)
}

/// Gives claims back at once (the process is shutting down mid-attempt): due now, the
/// interrupted attempt logged.
pub async fn release(pool: &PgPool, claims: &[(Uuid, i32)]) -> Result<u64, StoreError> {
    if claims.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = claims.iter().map(|c| c.0).collect();
    let attempts: Vec<i32> = claims.iter().map(|c| c.1).collect();
    let n: i64 = sqlx::query_scalar(
        "WITH input AS (SELECT * FROM UNNEST($1::uuid[], $2::int[]) AS t(id, attempt)), \
         upd AS ( \
             UPDATE webhook_deliveries d SET state = 'pending', next_attempt_at = now() \
             FROM input i WHERE d.id = i.id AND d.attempts = i.attempt AND d.state = 'delivering' \
             RETURNING d.id, d.attempts \
         ), log AS ( \
             INSERT INTO webhook_attempts (delivery_id, attempt, error) \
             SELECT id, attempts, 'interrupted: the delivering process shut down mid-attempt; the event is sent again' \
             FROM upd ON CONFLICT DO NOTHING \
         ) \
         SELECT count(*) FROM upd",
    )
    .bind(&ids)
    .bind(&attempts)
    .fetch_one(pool)
    .await?;
    Ok(n as u64)
}

/// Deletes up to `limit` finished deliveries (delivered or failed) older than `age`, with their
/// attempts, and deleted endpoints with nothing left. Returns the deliveries deleted.
pub async fn prune(pool: &PgPool, age: Duration, limit: i64) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "WITH victims AS ( \
             SELECT id FROM webhook_deliveries \
             WHERE state IN ('delivered', 'failed') AND created_at < now() - $1 * interval '1 millisecond' \
             ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED \
         ), gone AS ( \
             DELETE FROM webhook_deliveries d USING victims v WHERE d.id = v.id RETURNING d.id \
         ) \
         SELECT count(*) FROM gone",
    )
    .bind(ms(age))
    .bind(limit)
    .fetch_one(pool)
    .await?;
    sqlx::query(
        "DELETE FROM webhooks w WHERE w.deleted_at < now() - $1 * interval '1 millisecond' \
         AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.webhook_id = w.id)",
    )
    .bind(ms(age))
    .execute(pool)
    .await?;
    Ok(n as u64)
}
