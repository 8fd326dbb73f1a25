//! Tenants, their quotas, tokens (as listed, never their secrets), the audit log and usage.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A tenant and its quotas. A quota that is absent (null) does not apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Tenant {
    pub id: String,
    /// Share of the workers when several tenants have work (1–1000; default 1).
    pub weight: i32,
    /// Jobs of this tenant running at once.
    #[schema(required = true)]
    pub max_running: Option<i32>,
    /// Jobs of this tenant waiting (queued or scheduled for a retry). A submission that would go
    /// past it is refused whole with 429.
    #[schema(required = true)]
    pub max_queued: Option<i32>,
    /// Sustained submissions per second (a token bucket; 429 with Retry-After past it).
    #[schema(required = true)]
    pub submit_rate: Option<f64>,
    /// Submissions allowed at once above the rate (default: the rate, at least 1).
    #[schema(required = true)]
    pub submit_burst: Option<i32>,
    /// Per-job maxima, below the operator's: a job asking for more is refused with 422.
    #[schema(required = true)]
    pub max_memory_bytes: Option<i64>,
    #[schema(required = true)]
    pub max_wall_time_ms: Option<i64>,
    #[schema(required = true)]
    pub max_cpu_time_ms: Option<i64>,
    #[schema(required = true)]
    pub max_output_bytes: Option<i64>,
    /// Whether jobs may use `network: bridge`.
    pub allow_bridge: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: Uuid,
    pub tenant: String,
    pub name: String,
    /// `nk_` and the first four characters of the secret.
    pub hint: String,
    #[schema(value_type = Vec<String>, example = json!(["jobs:read", "jobs:write"]))]
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The actor's tenant (absent: the server itself, e.g. the first start's admin token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The actor's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<Uuid>,
    /// What happened: `tenant.create`, `tenant.update`, `token.create`, `token.revoke`,
    /// `job.cancel`, `webhook.create`, ...
    pub action: String,
    /// What it happened to (a tenant name, token id, job id, ...).
    pub target: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// Usage of one tenant over a time range, for billing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, Default)]
pub struct UsageTotals {
    /// Attempts that ended in the range (a retried job counts each attempt).
    pub attempts: i64,
    /// Jobs that reached a final state in the range, by state.
    pub jobs_succeeded: i64,
    pub jobs_failed: i64,
    pub jobs_cancelled: i64,
    pub jobs_error: i64,
    /// CPU time (user + system), seconds.
    pub cpu_seconds: f64,
    /// Peak memory × wall time, byte-seconds.
    pub memory_byte_seconds: f64,
    /// Wall time of the attempts, seconds.
    pub wall_seconds: f64,
    /// Output kept (stdout + stderr), bytes.
    pub output_bytes: i64,
    pub network_rx_bytes: i64,
    pub network_tx_bytes: i64,
}

/// Usage of a tenant: totals and the same split by the attempts' outcome reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    pub tenant: String,
    /// Start of the range (inclusive; usage is kept per hour, so bounds round down to the hour).
    pub from: DateTime<Utc>,
    /// End of the range (exclusive).
    pub to: DateTime<Utc>,
    pub total: UsageTotals,
    /// Keyed by outcome reason (`exited`, `wall_timeout`, `cancelled`, ...).
    pub by_outcome: std::collections::BTreeMap<String, UsageTotals>,
}
