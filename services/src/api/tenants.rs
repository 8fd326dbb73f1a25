//! Administration and accounting: `/v1/tenants`, `/v1/tokens`, `/v1/audit` (admin scope),
//! `/v1/usage` and `/v1/me` (any token, about its own tenant).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};

use super::auth::{Caller, TtlCache};
use super::error::{ApiError, ErrorCode, page_limit, parse_json};
use super::jobs::parse_id;
use super::types::ErrorBody;
use super::{AppState, Body};
use crate::model::auth::{Scope, Scopes, check_tenant_name, new_token};
use crate::model::tenancy::{AuditEntry, Tenant, TokenInfo, UsageReport};
use crate::store::StoreError;
use crate::store::tenants::{self as store, TenantCreated, TenantPatch};

/// Tenants' settings, read at most once a second per tenant and process (a quota change takes
/// effect within a second).
pub struct TenantCache(TtlCache<String, Arc<Tenant>>);

impl Default for TenantCache {
    fn default() -> Self {
        Self(TtlCache::new(10_000))
    }
}

impl TenantCache {
    /// The tenant's settings; `None` if the tenant does not exist.
    pub async fn get(&self, pool: &PgPool, id: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
        if let Some(t) = self.0.get(id) {
            return Ok(Some(t));
        }
        let at = Instant::now();
        let Some(t) = store::get_tenant(pool, id).await? else {
            return Ok(None);
        };
        let t = Arc::new(t);
        self.0.insert(id.to_string(), at, t.clone());
        Ok(Some(t))
    }

    /// The caller's tenant (which exists: its token does).
    pub async fn of(&self, pool: &PgPool, caller: &Caller) -> Result<Arc<Tenant>, ApiError> {
        self.get(pool, caller.tenant()).await?.ok_or_else(|| {
            tracing::error!(tenant = caller.tenant(), "a token's tenant does not exist");
            ApiError::internal()
        })
    }
}

fn double<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// Declares a struct with the tenant settings fields (and any extra fields first), so the
/// creation body can list `id` beside them without `flatten` (whose schema would be an `allOf`
/// of two closed objects that nothing satisfies).
macro_rules! tenant_settings {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $extra:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Deserialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* pub $extra: $ty,)*
            /// Share of the workers when several tenants have work (1–1000).
            pub weight: Option<i32>,
            /// Jobs running at once (null: no cap).
            #[serde(default, deserialize_with = "double")]
            #[schema(value_type = Option<i32>, minimum = 0)]
            pub max_running: Option<Option<i32>>,
            /// Jobs waiting (queued or scheduled for a retry) at once.
            #[serde(default, deserialize_with = "double")]
            #[schema(value_type = Option<i32>, minimum = 0)]
            pub max_queued: Option<Option<i32>>,
            /// Submissions per second.
            #[serde(default, deserialize_with = "double")]
            #[schema(value_type = Option<f64>)]
            pub submit_rate: Option<Option<f64>>,
            /// Submissions allowed at once above the rate.
            #[serde(default, deserialize_with = "double")]
            #[schema(value_type = Option<i32>, minimum = 1)]
            pub submit_burst: Option<Option<i32>>,
            #[serde(default, deserialize_with = "double")]
            #[schema(value_type = Option<i64>, minimum = 1)]
            pub max_memory_bytes: Option<Option<i64>>,
            #[serde(default, deserialize_with = "double")]
            #[schema(value_type = Option<i64>, minimum = 1)]
            pub max_wall_time_ms: Option<Option<i64>>,
            #[serde(default, deserialize_with = "double")]
            #[schema(value_type = Option<i64>, minimum = 1)]
            pub max_cpu_time_ms: Option<Option<i64>>,
            #[serde(default, deserialize_with = "double")]
            #[schema(value_type = Option<i64>, minimum = 0)]
            pub max_output_bytes: Option<Option<i64>>,
            /// Whether jobs may use `network: bridge`.
            pub allow_bridge: Option<bool>,
        }
    };
}

tenant_settings! {
    /// Settings of a tenant. In a PATCH, an absent field is left as it is and `null` removes a
    /// quota.
    TenantSettings {}
}

tenant_settings! {
    /// A new tenant: its name and, optionally, its settings.
    NewTenant {
        /// 1–63 characters of a-z, 0-9, `-`, `_`.
        id: String,
    }
}

impl NewTenant {
    fn split(self) -> (String, TenantSettings) {
        (
            self.id,
            TenantSettings {
                weight: self.weight,
                max_running: self.max_running,
                max_queued: self.max_queued,
                submit_rate: self.submit_rate,
                submit_burst: self.submit_burst,
                max_memory_bytes: self.max_memory_bytes,
                max_wall_time_ms: self.max_wall_time_ms,
                max_cpu_time_ms: self.max_cpu_time_ms,
                max_output_bytes: self.max_output_bytes,
                allow_bridge: self.allow_bridge,
            },
        )
    }
}

impl TenantSettings {
    fn into_patch(self) -> Result<TenantPatch, ApiError> {
        fn at_least<T: PartialOrd + Copy + std::fmt::Display>(
            field: &str,
            v: Option<Option<T>>,
            min: T,
        ) -> Result<Option<Option<T>>, ApiError> {
            if let Some(Some(x)) = v
                && x < min
            {
                return Err(ApiError::invalid(
                    field,
                    format!("{field} must be at least {min}, or null for no limit"),
                ));
            }
            Ok(v)
        }
        if let Some(w) = self.weight
            && !(1..=1000).contains(&w)
        {
            return Err(ApiError::invalid("weight", "weight must be 1-1000"));
        }
        if let Some(Some(r)) = self.submit_rate
            && !(r.is_finite() && r > 0.0)
        {
            return Err(ApiError::invalid(
                "submit_rate",
                "submit_rate must be a positive number of submissions per second, or null for no limit",
            ));
        }
        Ok(TenantPatch {
            weight: self.weight,
            max_running: at_least("max_running", self.max_running, 0)?,
            max_queued: at_least("max_queued", self.max_queued, 0)?,
            submit_rate: self.submit_rate,
            submit_burst: at_least("submit_burst", self.submit_burst, 1)?,
            max_memory_bytes: at_least("max_memory_bytes", self.max_memory_bytes, 1)?,
            max_wall_time_ms: at_least("max_wall_time_ms", self.max_wall_time_ms, 1)?,
            max_cpu_time_ms: at_least("max_cpu_time_ms", self.max_cpu_time_ms, 1)?,
            max_output_bytes: at_least("max_output_bytes", self.max_output_bytes, 0)?,
            allow_bridge: self.allow_bridge,
        })
    }
}

/// Create a tenant (admin).
#[utoipa::path(post, path = "/v1/tenants", operation_id = "createTenant", tag = "admin", request_body = NewTenant,
    security(("bearer" = ["admin"])),
    responses((status = 201, body = Tenant), (status = 409, description = "The tenant exists", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    caller.require(Scope::Admin)?;
    let new: NewTenant = parse_json(&body.json_sized()?)?;
    let (id, settings) = new.split();
    check_tenant_name(&id).map_err(|m| ApiError::invalid("id", m))?;
    let patch = settings.into_patch()?;
    match store::create_tenant(&state.pool, &caller.actor(), &id, &patch).await? {
        TenantCreated::Created(t) => Ok((StatusCode::CREATED, Json(t))),
        TenantCreated::Exists => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            format!(
                "tenant {id} exists; change it with PATCH /v1/tenants/{id} (`nekton tenant set`)"
            ),
        )),
    }
}

/// List tenants (admin).
#[utoipa::path(get, path = "/v1/tenants", operation_id = "listTenants", tag = "admin", security(("bearer" = ["admin"])),
    responses((status = 200, body = Vec<Tenant>)))]
pub async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Tenant>>, ApiError> {
    caller.require(Scope::Admin)?;
    Ok(Json(store::list_tenants(&state.pool).await?))
}

/// Get a tenant (admin).
#[utoipa::path(get, path = "/v1/tenants/{id}", operation_id = "getTenant", tag = "admin", security(("bearer" = ["admin"])),
    params(("id" = String, Path, description = "Tenant name")),
    responses((status = 200, body = Tenant), (status = 404, body = ErrorBody)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    caller.require(Scope::Admin)?;
    store::get_tenant(&state.pool, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no tenant {id}")))
}

/// Change a tenant's quotas (admin). Absent fields are kept; `null` removes a quota.
#[utoipa::path(patch, path = "/v1/tenants/{id}", operation_id = "updateTenant", tag = "admin", request_body = TenantSettings,
    security(("bearer" = ["admin"])),
    params(("id" = String, Path, description = "Tenant name")),
    responses((status = 200, body = Tenant), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Tenant>, ApiError> {
    caller.require(Scope::Admin)?;
    let settings: TenantSettings = parse_json(&body.json_sized()?)?;
    let patch = settings.into_patch()?;
    store::update_tenant(&state.pool, &caller.actor(), &id, &patch)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no tenant {id}")))
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// The token's tenant (default: the caller's).
    pub tenant: Option<String>,
    /// A label for listings.
    #[serde(default)]
    pub name: String,
    /// What the token may do.
    #[schema(value_type = Vec<String>, example = json!(["jobs:read", "jobs:write", "modules:write"]))]
    pub scopes: Vec<String>,
    /// When it stops working (RFC 3339); absent: never.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A created token: the secret is in this answer only.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The secret (`nk_...`). It is not stored and cannot be shown again.
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// Create a token (admin). The answer holds the secret; it is never shown again.
#[utoipa::path(post, path = "/v1/tokens", operation_id = "createToken", tag = "admin", request_body = NewToken,
    security(("bearer" = ["admin"])),
    responses((status = 201, body = CreatedToken), (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    caller.require(Scope::Admin)?;
    let new: NewToken = parse_json(&body.json_sized()?)?;
    let mut scopes = Vec::new();
    for (i, s) in new.scopes.iter().enumerate() {
        scopes.push(Scope::parse(s).ok_or_else(|| {
            ApiError::invalid(
                format!("scopes[{i}]"),
                format!(
                    "unknown scope {s:?}; scopes are {}",
                    Scope::ALL.map(|s| s.as_str()).join(", ")
                ),
            )
        })?);
    }
    if scopes.is_empty() {
        return Err(ApiError::invalid(
            "scopes",
            "give the token at least one scope",
        ));
    }
    if new.name.len() > 200 {
        return Err(ApiError::invalid("name", "names are up to 200 bytes"));
    }
    if let Some(e) = new.expires_at
        && e <= Utc::now()
    {
        return Err(ApiError::invalid("expires_at", "expires_at is in the past"));
    }
    let tenant = new.tenant.unwrap_or_else(|| caller.tenant().to_string());
    let secret = new_token().map_err(|e| {
        tracing::error!(error = %e, "the system's random generator failed");
        ApiError::internal()
    })?;
    let info = store::create_token(
        &state.pool,
        &caller.actor(),
        &tenant,
        &new.name,
        scopes.into_iter().collect::<Scopes>(),
        new.expires_at,
        &secret,
    )
    .await?
    .ok_or_else(|| {
        ApiError::not_found(format!(
            "no tenant {tenant}; create it first (`nekton tenant create {tenant}`)"
        ))
    })?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: secret.token,
            info,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TokenListParams {
    /// Only this tenant's tokens.
    pub tenant: Option<String>,
}

/// List tokens (admin): never their secrets.
#[utoipa::path(get, path = "/v1/tokens", operation_id = "listTokens", tag = "admin", params(TokenListParams),
    security(("bearer" = ["admin"])),
    responses((status = 200, body = Vec<TokenInfo>), (status = 400, body = ErrorBody)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<TokenListParams>, QueryRejection>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    caller.require(Scope::Admin)?;
    let Query(p) = params.map_err(ApiError::from_query)?;
    Ok(Json(
        store::list_tokens(&state.pool, p.tenant.as_deref()).await?,
    ))
}

/// Revoke a token (admin). It stops working everywhere within a second.
#[utoipa::path(delete, path = "/v1/tokens/{id}", operation_id = "revokeToken", tag = "admin", security(("bearer" = ["admin"])),
    params(("id" = uuid::Uuid, Path, description = "Token id")),
    responses((status = 200, body = TokenInfo), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    caller.require(Scope::Admin)?;
    let id = parse_id(&id)?;
    store::revoke_token(&state.pool, &caller.actor(), id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no token {id}")))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Entries before this id (the last `id` of the previous page).
    pub before: Option<i64>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// The audit log, newest first (admin).
#[utoipa::path(get, path = "/v1/audit", operation_id = "listAuditEntries", tag = "admin", params(AuditParams),
    security(("bearer" = ["admin"])),
    responses((status = 200, body = Vec<AuditEntry>), (status = 400, body = ErrorBody)))]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    caller.require(Scope::Admin)?;
    let Query(p) = params.map_err(ApiError::from_query)?;
    let limit = page_limit(p.limit, 100, 1000)?;
    Ok(Json(store::list_audit(&state.pool, p.before, limit).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// Start (RFC 3339, inclusive; default: 30 days ago). Usage is kept per hour.
    pub from: Option<DateTime<Utc>>,
    /// End (RFC 3339, exclusive; default: now, including the current hour).
    pub to: Option<DateTime<Utc>>,
    /// Another tenant (admin only; default: the caller's).
    pub tenant: Option<String>,
}

/// A tenant's usage for billing: jobs by outcome, CPU-seconds, memory byte-seconds,
/// wall-seconds, output and network bytes.
#[utoipa::path(get, path = "/v1/usage", operation_id = "getUsage", tag = "admin", params(UsageParams),
    security(("bearer" = ["jobs:read"])),
    responses((status = 200, body = UsageReport), (status = 400, body = ErrorBody)))]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<UsageParams>, QueryRejection>,
) -> Result<Json<UsageReport>, ApiError> {
    let Query(p) = params.map_err(ApiError::from_query)?;
    let tenant = match p.tenant {
        Some(t) if t != caller.tenant() => {
            caller.require(Scope::Admin)?;
            t
        }
        _ => {
            if !caller.scopes().contains(Scope::Admin) {
                caller.require(Scope::JobsRead)?;
            }
            caller.tenant().to_string()
        }
    };
    let to =
        p.to.unwrap_or_else(|| Utc::now() + chrono::Duration::hours(1));
    let from = p.from.unwrap_or(to - chrono::Duration::days(30));
    if from > to {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidQuery,
            "from is after to",
        )
        .with_field("from"));
    }
    Ok(Json(store::usage(&state.pool, &tenant, from, to).await?))
}

/// Who the caller is.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub tenant: String,
    /// Absent when the server runs with `--auth off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<uuid::Uuid>,
    #[schema(value_type = Vec<String>)]
    pub scopes: Vec<String>,
}

/// The caller's tenant and scopes (any token).
#[utoipa::path(get, path = "/v1/me", operation_id = "getCaller", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(caller: Caller) -> Json<Me> {
    Json(Me {
        tenant: caller.tenant().to_string(),
        token_id: caller.token(),
        scopes: caller.scopes().names(),
    })
}
