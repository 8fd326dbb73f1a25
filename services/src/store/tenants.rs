//! Tenants, API tokens, quota admission, the audit log and usage.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::StoreError;
use crate::model::auth::{NewSecret, Scopes};
use crate::model::tenancy::{AuditEntry, Tenant, TokenInfo, UsageReport, UsageTotals};

/// Who did something, for the audit log (`None`s: the server itself).
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub tenant: Option<String>,
    pub token: Option<Uuid>,
}

/// A stored token, as the authenticator needs it.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: Uuid,
    pub tenant_id: String,
    pub secret_hash: [u8; 32],
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The live token with this hash (not revoked), marking it used (at most every 10 s).
pub async fn lookup_token(
    pool: &PgPool,
    hash: &[u8; 32],
) -> Result<Option<TokenRecord>, StoreError> {
    let row = sqlx::query(
        "WITH t AS ( \
             SELECT id, tenant_id, secret_hash, scopes, expires_at, last_used_at FROM api_tokens \
             WHERE secret_hash = $1 AND revoked_at IS NULL \
         ), used AS ( \
             UPDATE api_tokens a SET last_used_at = now() FROM t \
             WHERE a.id = t.id AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '10 seconds') \
         ) \
         SELECT id, tenant_id, secret_hash, scopes, expires_at FROM t",
    )
    .bind(&hash[..])
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let stored: Vec<u8> = row.try_get("secret_hash")?;
    let secret_hash: [u8; 32] = stored
        .try_into()
        .map_err(|_| StoreError::Corrupt("api_tokens.secret_hash is not 32 bytes".into()))?;
    Ok(Some(TokenRecord {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        secret_hash,
        scopes: row.try_get("scopes")?,
        expires_at: row.try_get("expires_at")?,
    }))
}

/// Records an audit entry (inside the caller's transaction).
pub async fn audit(
    conn: &mut PgConnection,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, token_id, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&actor.tenant)
    .bind(actor.token)
    .bind(action)
    .bind(target)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

fn token_info(row: &sqlx::postgres::PgRow) -> Result<TokenInfo, StoreError> {
    Ok(TokenInfo {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        hint: row.try_get("hint")?,
        scopes: row.try_get("scopes")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

const TOKEN_COLUMNS: &str =
    "id, tenant_id, name, hint, scopes, created_at, expires_at, last_used_at, revoked_at";

/// Stores a new token of `tenant` (which must exist: `None` if it does not).
pub async fn create_token(
    pool: &PgPool,
    actor: &Actor,
    tenant: &str,
    name: &str,
    scopes: Scopes,
    expires_at: Option<DateTime<Utc>>,
    secret: &NewSecret,
) -> Result<Option<TokenInfo>, StoreError> {
    let mut tx = pool.begin().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)")
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Ok(None);
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_tokens (id, tenant_id, name, secret_hash, hint, scopes, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {TOKEN_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(name)
    .bind(&secret.hash[..])
    .bind(&secret.hint)
    .bind(scopes.names())
    .bind(expires_at)
    .fetch_one(&mut *tx)
    .await?;
    let info = token_info(&row)?;
    audit(
        &mut tx,
        actor,
        "token.create",
        &info.id.to_string(),
        serde_json::json!({ "tenant": tenant, "name": name, "scopes": info.scopes, "expires_at": expires_at }),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(info))
}

/// Tokens, newest first; of one tenant when given.
pub async fn list_tokens(
    pool: &PgPool,
    tenant: Option<&str>,
) -> Result<Vec<TokenInfo>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE ($1::text IS NULL OR tenant_id = $1) \
         ORDER BY created_at DESC, id DESC"
    )))
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    rows.iter().map(token_info).collect()
}

/// Revokes a token (idempotent). `None`: no such token.
pub async fn revoke_token(
    pool: &PgPool,
    actor: &Actor,
    id: Uuid,
) -> Result<Option<TokenInfo>, StoreError> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING {TOKEN_COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let info = token_info(&row)?;
    audit(
        &mut tx,
        actor,
        "token.revoke",
        &id.to_string(),
        serde_json::json!({ "tenant": info.tenant }),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(info))
}

/// Stores a token the operator chose (by its hash) unless one with that hash exists. Returns
/// whether it was new.
pub async fn adopt_token(
    pool: &PgPool,
    hash: &[u8; 32],
    hint: &str,
    tenant: &str,
    name: &str,
    scopes: Scopes,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO api_tokens (id, tenant_id, name, secret_hash, hint, scopes) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (secret_hash) DO NOTHING",
    )
    .bind(id)
    .bind(tenant)
    .bind(name)
    .bind(&hash[..])
    .bind(hint)
    .bind(scopes.names())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if inserted {
        audit(
            &mut tx,
            &Actor::default(),
            "token.create",
            &id.to_string(),
            serde_json::json!({ "tenant": tenant, "name": name, "scopes": scopes.names() }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// True if a live token has this hash.
pub async fn token_is_live(pool: &PgPool, hash: &[u8; 32]) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM api_tokens WHERE secret_hash = $1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > now()))",
    )
    .bind(&hash[..])
    .fetch_one(pool)
    .await?)
}

const TENANT_COLUMNS: &str = "id, weight, max_running, max_queued, submit_rate, submit_burst, \
    max_memory_bytes, max_wall_time_ms, max_cpu_time_ms, max_output_bytes, allow_bridge, created_at, updated_at";

/// Changes to a tenant's settings: `Some(None)` clears a quota, `None` leaves it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantPatch {
    pub weight: Option<i32>,
    pub max_running: Option<Option<i32>>,
    pub max_queued: Option<Option<i32>>,
    pub submit_rate: Option<Option<f64>>,
    pub submit_burst: Option<Option<i32>>,
    pub max_memory_bytes: Option<Option<i64>>,
    pub max_wall_time_ms: Option<Option<i64>>,
    pub max_cpu_time_ms: Option<Option<i64>>,
    pub max_output_bytes: Option<Option<i64>>,
    pub allow_bridge: Option<bool>,
}

/// What creating a tenant did.
pub enum TenantCreated {
    Created(Tenant),
    Exists,
}

/// Creates a tenant with `patch` applied.
pub async fn create_tenant(
    pool: &PgPool,
    actor: &Actor,
    id: &str,
    patch: &TenantPatch,
) -> Result<TenantCreated, StoreError> {
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query("INSERT INTO tenants (id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if inserted == 0 {
        return Ok(TenantCreated::Exists);
    }
    let tenant = apply_patch(&mut tx, id, patch)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("tenant {id} missing right after insert")))?;
    audit(&mut tx, actor, "tenant.create", id, patch_detail(patch)).await?;
    tx.commit().await?;
    Ok(TenantCreated::Created(tenant))
}

/// Changes a tenant's settings. `None`: no such tenant.
pub async fn update_tenant(
    pool: &PgPool,
    actor: &Actor,
    id: &str,
    patch: &TenantPatch,
) -> Result<Option<Tenant>, StoreError> {
    let mut tx = pool.begin().await?;
    let Some(tenant) = apply_patch(&mut tx, id, patch).await? else {
        return Ok(None);
    };
    audit(&mut tx, actor, "tenant.update", id, patch_detail(patch)).await?;
    tx.commit().await?;
    Ok(Some(tenant))
}

fn patch_detail(p: &TenantPatch) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    macro_rules! put {
        ($($f:ident),*) => {$(
            if let Some(v) = &p.$f {
                m.insert(stringify!($f).into(), serde_json::json!(v));
            }
        )*};
    }
    put!(
        weight,
        max_running,
        max_queued,
        submit_rate,
        submit_burst,
        max_memory_bytes,
        max_wall_time_ms,
        max_cpu_time_ms,
        max_output_bytes,
        allow_bridge
    );
    serde_json::Value::Object(m)
}

async fn apply_patch(
    conn: &mut PgConnection,
    id: &str,
    p: &TenantPatch,
) -> Result<Option<Tenant>, StoreError> {
    // Each column: keep unless the patch names it ($n flags it, $n+1 is the value).
    let row = sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(format!(
        "UPDATE tenants SET \
             weight = coalesce($2, weight), \
             max_running = CASE WHEN $3 THEN $4 ELSE max_running END, \
             max_queued = CASE WHEN $5 THEN $6 ELSE max_queued END, \
             submit_rate = CASE WHEN $7 THEN $8 ELSE submit_rate END, \
             submit_burst = CASE WHEN $9 THEN $10 ELSE submit_burst END, \
             max_memory_bytes = CASE WHEN $11 THEN $12 ELSE max_memory_bytes END, \
             max_wall_time_ms = CASE WHEN $13 THEN $14 ELSE max_wall_time_ms END, \
             max_cpu_time_ms = CASE WHEN $15 THEN $16 ELSE max_cpu_time_ms END, \
             max_output_bytes = CASE WHEN $17 THEN $18 ELSE max_output_bytes END, \
             allow_bridge = coalesce($19, allow_bridge), \
             updated_at = now() \
         WHERE id = $1 RETURNING {TENANT_COLUMNS}"
    )))
    .bind(id)
    .bind(p.weight)
    .bind(p.max_running.is_some())
    .bind(p.max_running.flatten())
    .bind(p.max_queued.is_some())
    .bind(p.max_queued.flatten())
    .bind(p.submit_rate.is_some())
    .bind(p.submit_rate.flatten())
    .bind(p.submit_burst.is_some())
    .bind(p.submit_burst.flatten())
    .bind(p.max_memory_bytes.is_some())
    .bind(p.max_memory_bytes.flatten())
    .bind(p.max_wall_time_ms.is_some())
    .bind(p.max_wall_time_ms.flatten())
    .bind(p.max_cpu_time_ms.is_some())
    .bind(p.max_cpu_time_ms.flatten())
    .bind(p.max_output_bytes.is_some())
    .bind(p.max_output_bytes.flatten())
    .bind(p.allow_bridge)
    .fetch_optional(&mut *conn)
    .await?;
    if row.is_some() && p.submit_rate.is_some() {
        // A new rate starts from a full bucket.
        sqlx::query("DELETE FROM tenant_buckets WHERE tenant_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(row)
}

/// Whether any tenant has a `max_running` cap (a worker claims again after a completion only
/// then: a cap is the one thing that leaves claimable-looking jobs behind while slots are free).
pub async fn any_capped(pool: &PgPool) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE max_running IS NOT NULL)")
            .fetch_one(pool)
            .await?,
    )
}

pub async fn get_tenant(pool: &PgPool, id: &str) -> Result<Option<Tenant>, StoreError> {
    Ok(sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

pub async fn list_tenants(pool: &PgPool) -> Result<Vec<Tenant>, StoreError> {
    Ok(sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(format!(
        "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id"
    )))
    .fetch_all(pool)
    .await?)
}

/// Why a submission was refused by the tenant's quotas.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    /// Waiting jobs would go past `max_queued`.
    QueueFull { max: i32, waiting: i64, adding: i64 },
    /// The submit rate is spent; a retry after this long may pass.
    Rate { retry_after: Duration, rate: f64 },
    /// More jobs in one request than the bucket can ever hold.
    LargerThanBurst { burst: f64, adding: i64 },
}

/// Checks `adding` new jobs (already inserted in `tx`, uncommitted) against the tenant's waiting
/// and rate quotas. The caller rolls back on a refusal, which also un-spends the bucket.
pub async fn admit(
    conn: &mut PgConnection,
    tenant: &Tenant,
    adding: i64,
) -> Result<Result<(), Refused>, StoreError> {
    if let Some(rate) = tenant.submit_rate {
        let burst = tenant
            .submit_burst
            .map(f64::from)
            .unwrap_or_else(|| rate.max(1.0));
        if adding as f64 > burst {
            return Ok(Err(Refused::LargerThanBurst { burst, adding }));
        }
        // Refill by elapsed time, capped at the burst, then spend. The row lock orders
        // concurrent submissions of one tenant.
        let left: f64 = sqlx::query_scalar(
            "INSERT INTO tenant_buckets AS b (tenant_id, tokens, updated_at) \
             VALUES ($1, $3 - $4, clock_timestamp()) \
             ON CONFLICT (tenant_id) DO UPDATE SET \
                 tokens = least($3, b.tokens + extract(epoch FROM clock_timestamp() - b.updated_at)::float8 * $2) - $4, \
                 updated_at = clock_timestamp() \
             RETURNING tokens",
        )
        .bind(&tenant.id)
        .bind(rate)
        .bind(burst)
        .bind(adding as f64)
        .fetch_one(&mut *conn)
        .await?;
        if left < 0.0 {
            let secs = (-left / rate).max(0.001);
            return Ok(Err(Refused::Rate {
                retry_after: Duration::from_secs_f64(secs),
                rate,
            }));
        }
    }
    if let Some(max) = tenant.max_queued {
        // One submission of this tenant counts at a time, so two cannot both fit in the last slot.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('nekton.tenant.' || $1, 0))")
            .bind(&tenant.id)
            .execute(&mut *conn)
            .await?;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE tenant_id = $1 AND state IN ('queued', 'scheduled')",
        )
        .bind(&tenant.id)
        .fetch_one(&mut *conn)
        .await?;
        if waiting > i64::from(max) {
            return Ok(Err(Refused::QueueFull {
                max,
                waiting: waiting - adding,
                adding,
            }));
        }
    }
    Ok(Ok(()))
}

/// The audit log, newest first, before `before` (an entry id) when given.
pub async fn list_audit(
    pool: &PgPool,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, at, tenant_id, token_id, action, target, detail FROM audit_log \
         WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                id: r.try_get("id")?,
                at: r.try_get("at")?,
                tenant: r.try_get("tenant_id")?,
                token_id: r.try_get("token_id")?,
                action: r.try_get("action")?,
                target: r.try_get("target")?,
                detail: r.try_get("detail")?,
            })
        })
        .collect()
}

/// The sums `usage_hourly` rows are read as (grouped by the caller).
const USAGE_SUMS: &str = "sum(attempts)::bigint AS attempts, sum(jobs_succeeded)::bigint AS s, \
    sum(jobs_failed)::bigint AS f, sum(jobs_cancelled)::bigint AS c, sum(jobs_error)::bigint AS e, \
    sum(cpu_ms)::bigint AS cpu, sum(memory_byte_ms)::float8 AS mem, sum(wall_ms)::bigint AS wall, \
    sum(output_bytes)::bigint AS out, sum(net_rx_bytes)::bigint AS rx, sum(net_tx_bytes)::bigint AS tx";

fn usage_totals(r: &sqlx::postgres::PgRow) -> Result<UsageTotals, StoreError> {
    Ok(UsageTotals {
        attempts: r.try_get("attempts")?,
        jobs_succeeded: r.try_get("s")?,
        jobs_failed: r.try_get("f")?,
        jobs_cancelled: r.try_get("c")?,
        jobs_error: r.try_get("e")?,
        cpu_seconds: r.try_get::<i64, _>("cpu")? as f64 / 1000.0,
        memory_byte_seconds: r.try_get::<f64, _>("mem")? / 1000.0,
        wall_seconds: r.try_get::<i64, _>("wall")? as f64 / 1000.0,
        output_bytes: r.try_get("out")?,
        network_rx_bytes: r.try_get("rx")?,
        network_tx_bytes: r.try_get("tx")?,
    })
}

impl std::ops::AddAssign<&UsageTotals> for UsageTotals {
    fn add_assign(&mut self, t: &UsageTotals) {
        self.attempts += t.attempts;
        self.jobs_succeeded += t.jobs_succeeded;
        self.jobs_failed += t.jobs_failed;
        self.jobs_cancelled += t.jobs_cancelled;
        self.jobs_error += t.jobs_error;
        self.cpu_seconds += t.cpu_seconds;
        self.memory_byte_seconds += t.memory_byte_seconds;
        self.wall_seconds += t.wall_seconds;
        self.output_bytes += t.output_bytes;
        self.network_rx_bytes += t.network_rx_bytes;
        self.network_tx_bytes += t.network_tx_bytes;
    }
}

/// A tenant's usage in `[from, to)` (hours; the bounds round down to the hour).
pub async fn usage(
    pool: &PgPool,
    tenant: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<UsageReport, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT outcome, {USAGE_SUMS} FROM usage_hourly WHERE tenant_id = $1 \
             AND hour >= date_trunc('hour', $2::timestamptz) AND hour < date_trunc('hour', $3::timestamptz) \
         GROUP BY outcome ORDER BY outcome"
    )))
    .bind(tenant)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let mut report = UsageReport {
        tenant: tenant.to_string(),
        from,
        to,
        total: UsageTotals::default(),
        by_outcome: Default::default(),
    };
    for r in &rows {
        let t = usage_totals(r)?;
        report.total += &t;
        report.by_outcome.insert(r.try_get("outcome")?, t);
    }
    Ok(report)
}

/// Usage of every tenant since it began, for `/metrics` (cumulative counters per tenant and
/// outcome).
pub async fn usage_counters(
    pool: &PgPool,
) -> Result<Vec<(String, String, UsageTotals)>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT tenant_id, outcome, {USAGE_SUMS} FROM usage_hourly GROUP BY tenant_id, outcome"
    )))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("tenant_id")?,
                r.try_get("outcome")?,
                usage_totals(r)?,
            ))
        })
        .collect()
}

/// Remembers that `tenant` pulled, imported or ran `references` (normalised image references).
pub async fn record_images(
    conn: &mut PgConnection,
    tenant: &str,
    references: &[String],
) -> Result<(), StoreError> {
    if references.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO tenant_images (tenant_id, reference) SELECT $1, r FROM UNNEST($2::text[]) AS r \
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(references)
    .execute(conn)
    .await?;
    Ok(())
}

/// The image references `tenant` pulled, imported or ran.
pub async fn tenant_images(
    pool: &PgPool,
    tenant: &str,
) -> Result<std::collections::HashSet<String>, StoreError> {
    let refs: Vec<String> =
        sqlx::query_scalar("SELECT reference FROM tenant_images WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(pool)
            .await?;
    Ok(refs.into_iter().collect())
}
