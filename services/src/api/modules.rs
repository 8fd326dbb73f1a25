//! `/v1/modules`: upload and list Wasm modules.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Caller;
use super::error::{ApiError, ErrorCode, page_limit};
use super::types::{ErrorBody, Module, ModulePage};
use super::{AppState, Body};
use crate::model::auth::Scope;
use crate::store::modules;

/// Upload a Wasm module (a WASI preview 1 module or a WASI 0.2 component). Returns its digest, which jobs name as
/// `module`. Uploading the same bytes again returns the same digest.
#[utoipa::path(post, path = "/v1/modules", operation_id = "uploadModule", tag = "modules",
    request_body(description = "The module's bytes (binary .wasm); `application/octet-stream` is accepted too",
        content((super::types::BinaryBody = "application/wasm"))),
    responses(
        (status = 201, description = "Stored", body = Module),
        (status = 200, description = "Already stored", body = Module),
        (status = 413, body = ErrorBody),
        (status = 422, description = "Not a valid Wasm command module or component", body = ErrorBody),
    ))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Body(bytes): Body,
) -> Result<(StatusCode, Json<Module>), ApiError> {
    caller.require(Scope::ModulesWrite)?;
    let max = state.policy.max_module_bytes;
    if bytes.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!(
                "the module is {} bytes; this server accepts modules up to {max} bytes",
                bytes.len()
            ),
        ));
    }
    wasm_backend::validate_module(&bytes, max).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidModule,
            e,
        )
    })?;
    let digest = wasm_backend::module_digest(&bytes);
    let (module, created) = modules::put(&state.pool, caller.tenant(), &digest, &bytes).await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(module),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ModuleListParams {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// A page position as an opaque cursor: the last module's upload time and digest.
fn encode_cursor(m: &Module) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}|{}",
        m.created_at.timestamp_micros(),
        m.digest
    ))
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, String), ApiError> {
    let bad = super::error::bad_cursor;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, digest) = text.split_once('|').ok_or_else(bad)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .ok_or_else(bad)?;
    Ok((at, digest.to_string()))
}

/// List the tenant's uploaded modules, newest first, with keyset pagination.
#[utoipa::path(get, path = "/v1/modules", operation_id = "listModules", tag = "modules",
    params(ModuleListParams),
    responses(
        (status = 200, description = "One page of modules, newest first", body = ModulePage),
        (status = 400, description = "An unknown or malformed query parameter", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ModuleListParams>, QueryRejection>,
) -> Result<Json<ModulePage>, ApiError> {
    caller.require(Scope::JobsRead)?;
    let Query(p) = params.map_err(ApiError::from_query)?;
    let limit = page_limit(p.limit, 50, 500)?;
    let before = p.cursor.as_deref().map(decode_cursor).transpose()?;
    let modules = modules::list(&state.pool, caller.tenant(), before, limit).await?;
    let next_cursor = if modules.len() as i64 == limit {
        modules.last().map(encode_cursor)
    } else {
        None
    };
    Ok(Json(ModulePage {
        modules,
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let m = Module {
            digest: "sha256:ab".into(),
            size_bytes: 1,
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
        };
        assert_eq!(
            decode_cursor(&encode_cursor(&m)).unwrap(),
            (m.created_at, m.digest.clone())
        );
        for bad in ["", "!!", "bm8tc2VwYXJhdG9y", "eHx5"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
