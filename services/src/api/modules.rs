//! `/v1/modules`: upload Wasm modules.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::auth::Caller;
use super::error::{ApiError, ErrorCode};
use super::types::{ErrorBody, Module};
use super::{AppState, Body};
use crate::model::auth::Scope;
use crate::store::modules;

/// Upload a Wasm module (a WASI preview 1 core module). Returns its digest, which jobs name as
/// `module`. Uploading the same bytes again returns the same digest.
#[utoipa::path(post, path = "/v1/modules", operation_id = "uploadModule", tag = "modules",
    request_body(description = "The module's bytes (binary .wasm); `application/octet-stream` is accepted too",
        content((super::types::BinaryBody = "application/wasm"))),
    responses(
        (status = 201, description = "Stored", body = Module),
        (status = 200, description = "Already stored", body = Module),
        (status = 413, body = ErrorBody),
        (status = 422, description = "Not a valid Wasm core module", body = ErrorBody),
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
