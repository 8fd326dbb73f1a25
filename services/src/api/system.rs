//! Health, readiness and metrics.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorCode};
use crate::model::auth::Scope;

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", operation_id = "getHealth", tag = "system", security(()), responses((status = 200, body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", operation_id = "getReadiness", tag = "system", security(()),
    responses((status = 200, body = String), (status = 503, body = super::types::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    // Bounded: a load balancer must learn of a lost database in about a second, not after the
    // pool's acquire timeout.
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the database does not answer",
        )
    };
    tokio::time::timeout(
        std::time::Duration::from_secs(1),
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await
    .map_err(|_| {
        tracing::warn!("readiness check: the database did not answer within 1 s");
        unavailable()
    })?
    .map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        unavailable()
    })?;
    Ok("ready")
}

/// The server's version: the `nekton` crate version, the git commit when the build recorded one,
/// the API version, and the database's migration level beside the newest this binary knows.
/// Any valid token may ask (no scope needed).
#[utoipa::path(get, path = "/v1/version", operation_id = "getVersion", tag = "system",
    responses(
        (status = 200, description = "The server's version", body = super::types::VersionInfo),
        (status = 401, description = "No valid token", body = super::types::ErrorBody),
    ))]
pub async fn version(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<axum::Json<super::types::VersionInfo>, ApiError> {
    let (migration, migration_latest) = crate::store::migration_level(&state.pool).await?;
    Ok(axum::Json(super::types::VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: option_env!("NEKTON_GIT_COMMIT")
            .filter(|c| !c.is_empty())
            .map(str::to_string),
        api_version: "v1".to_string(),
        migration,
        migration_latest,
    }))
}

/// Prometheus metrics (a token with the admin scope; or without a token on the separate
/// `--metrics-listen` address): OpenMetrics text when the client accepts it (Prometheus does),
/// else the Prometheus text format 0.0.4 (curl, promtool). The catalogue is docs/metrics.md.
#[utoipa::path(get, path = "/metrics", operation_id = "getMetrics", tag = "system", security(("bearer" = ["admin"])),
    responses((status = 200, body = String, content_type = "text/plain"), (status = 401, body = super::types::ErrorBody),
        (status = 403, body = super::types::ErrorBody)))]
pub async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::Admin)?;
    Ok(metrics_unauthenticated(State(state), headers).await)
}

/// `/metrics` as served on the metrics-only listener (no token: that address is the operator's).
pub async fn metrics_unauthenticated(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> impl IntoResponse {
    // The database figures are read now, bounded so a slow database cannot hang a scrape.
    match tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.metrics.refresh_from_db(&state.pool),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "reading queue figures for /metrics failed"),
        Err(_) => tracing::warn!(
            "reading queue figures for /metrics took over 2 s; served the previous values"
        ),
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            state.metrics.encode(),
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            state.metrics.encode_text(),
        )
    }
}
