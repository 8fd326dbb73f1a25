//! `/v1/webhooks`: a tenant's endpoints for job and batch completion events, their delivery
//! logs, and manual redelivery. Every query is filtered by the caller's tenant, so another
//! tenant's endpoint or delivery is a 404. Reading needs `jobs:read`; creating, deleting and
//! redelivering need `jobs:write`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ErrorCode, page_cursor, page_limit, parse_json};
use super::types::{CreatedWebhook, Delivery, DeliveryPage, ErrorBody, NewWebhook, Webhook};
use super::{AppState, Body};
use crate::model::auth::Scope;
use crate::model::webhooks::WebhookEvent;
use crate::store::webhooks::{self as store, MAX_WEBHOOKS_PER_TENANT, Redelivered, WebhookCreated};
use crate::webhooks::{policy, signing};

fn parse_webhook_id(s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidId,
            format!("`{s}` is not a webhook or delivery id (a UUID)"),
        )
    })
}

fn no_webhook(id: Uuid) -> ApiError {
    ApiError::not_found(format!(
        "no webhook {id}; list this tenant's webhooks with GET /v1/webhooks (`nekton webhook ls`)"
    ))
}

/// The events asked for: every event when absent; each named once.
fn parse_events(events: Option<Vec<String>>) -> Result<Vec<WebhookEvent>, ApiError> {
    let Some(names) = events else {
        return Ok(WebhookEvent::ALL.to_vec());
    };
    if names.is_empty() {
        return Err(ApiError::invalid(
            "events",
            "give at least one event (job.completed, batch.completed), or leave events out for all of them",
        ));
    }
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let e = WebhookEvent::parse(name).ok_or_else(|| {
            ApiError::invalid(
                format!("events[{i}]"),
                format!(
                    "unknown event {name:?}; events are {}",
                    WebhookEvent::ALL.map(|e| e.as_str()).join(", ")
                ),
            )
        })?;
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out.sort();
    Ok(out)
}

/// Create a webhook endpoint. The answer holds its signing secret, which is never shown again.
#[utoipa::path(post, path = "/v1/webhooks", operation_id = "createWebhook", tag = "webhooks", request_body = NewWebhook,
    security(("bearer" = ["jobs:write"])),
    responses(
        (status = 201, body = CreatedWebhook),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 422, description = "Bad URL or event, or the tenant has 50 webhooks", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    caller.require(Scope::JobsWrite)?;
    let new: NewWebhook = parse_json(&body.json_sized()?)?;
    let url = policy::check_url(&new.url).map_err(|m| ApiError::invalid("url", m))?;
    let events = parse_events(new.events)?;
    let secret = signing::new_secret().map_err(|e| {
        tracing::error!(error = %e, "the system's random generator failed");
        ApiError::internal()
    })?;
    match store::create(
        &state.pool,
        &caller.actor(),
        caller.tenant(),
        url.as_str(),
        &events,
        &secret,
    )
    .await?
    {
        WebhookCreated::Created(webhook) => Ok((
            StatusCode::CREATED,
            Json(CreatedWebhook { webhook, secret }),
        )),
        WebhookCreated::TooMany => Err(ApiError::invalid(
            "url",
            format!(
                "this tenant has {MAX_WEBHOOKS_PER_TENANT} webhooks, the most it may have; delete one first (`nekton webhook rm ID`)"
            ),
        )),
    }
}

/// List the tenant's webhook endpoints (never their secrets).
#[utoipa::path(get, path = "/v1/webhooks", operation_id = "listWebhooks", tag = "webhooks", security(("bearer" = ["jobs:read"])),
    responses((status = 200, body = Vec<Webhook>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Webhook>>, ApiError> {
    caller.require(Scope::JobsRead)?;
    Ok(Json(store::list(&state.pool, caller.tenant()).await?))
}

/// Get a webhook endpoint.
#[utoipa::path(get, path = "/v1/webhooks/{id}", operation_id = "getWebhook", tag = "webhooks", security(("bearer" = ["jobs:read"])),
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 200, body = Webhook), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Webhook>, ApiError> {
    caller.require(Scope::JobsRead)?;
    let id = parse_webhook_id(&id)?;
    store::get(&state.pool, caller.tenant(), id)
        .await?
        .map(Json)
        .ok_or_else(|| no_webhook(id))
}

/// Delete a webhook endpoint: no more events are written for it, and those not yet delivered
/// end `failed`.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", operation_id = "deleteWebhook", tag = "webhooks", security(("bearer" = ["jobs:write"])),
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 200, description = "Deleted", body = Webhook), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Webhook>, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let id = parse_webhook_id(&id)?;
    store::delete(&state.pool, &caller.actor(), caller.tenant(), id)
        .await?
        .map(Json)
        .ok_or_else(|| no_webhook(id))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryParams {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// The endpoint's delivery log, newest first: each event with its state and every attempt
/// (status, error, duration).
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", operation_id = "listWebhookDeliveries", tag = "webhooks",
    security(("bearer" = ["jobs:read"])),
    params(("id" = Uuid, Path, description = "Webhook id"), DeliveryParams),
    responses((status = 200, body = DeliveryPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Result<Query<DeliveryParams>, QueryRejection>,
) -> Result<Json<DeliveryPage>, ApiError> {
    caller.require(Scope::JobsRead)?;
    let id = parse_webhook_id(&id)?;
    let Query(p) = params.map_err(ApiError::from_query)?;
    let limit = page_limit(p.limit, 50, 200)?;
    let before = page_cursor(p.cursor.as_deref())?;
    let deliveries = store::deliveries(&state.pool, caller.tenant(), id, before, limit)
        .await?
        .ok_or_else(|| no_webhook(id))?;
    let next_cursor = if deliveries.len() as i64 == limit {
        deliveries.last().map(|d| d.id.to_string())
    } else {
        None
    };
    Ok(Json(DeliveryPage {
        deliveries,
        next_cursor,
    }))
}

/// Send a delivery again: due at once, with the same `webhook-id` and body and a fresh retry
/// window (also after it was delivered or gave up).
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", operation_id = "redeliverWebhook", tag = "webhooks",
    security(("bearer" = ["jobs:write"])),
    params(("id" = Uuid, Path, description = "Webhook id"),
        ("delivery_id" = Uuid, Path, description = "Delivery id (the `webhook-id` header)")),
    responses(
        (status = 202, description = "Queued; follow it in the delivery log", body = Delivery),
        (status = 404, body = ErrorBody),
        (status = 409, description = "An attempt is under way", body = ErrorBody),
    ))]
pub async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    caller.require(Scope::JobsWrite)?;
    let id = parse_webhook_id(&id)?;
    let delivery = parse_webhook_id(&delivery)?;
    match store::redeliver(&state.pool, &caller.actor(), caller.tenant(), id, delivery).await? {
        Redelivered::Queued(d) => Ok((StatusCode::ACCEPTED, Json(*d))),
        Redelivered::InFlight => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            format!(
                "delivery {delivery} is being attempted right now; look at its log again in a moment"
            ),
        )),
        Redelivered::NotFound => Err(ApiError::not_found(format!(
            "webhook {id} has no delivery {delivery}; see GET /v1/webhooks/{id}/deliveries"
        ))),
    }
}
