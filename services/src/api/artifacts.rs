//! `GET /v1/jobs/{id}/artifacts` (the listing of the latest attempt's artifacts) and
//! `GET /v1/jobs/{id}/artifacts/{path}` (one file's stored bytes, streamed a chunk at a time).
//! Same rules as the job's logs: scope `jobs:read`, another tenant's job is a 404.
//! What is collected and why: docs/artifacts.md.

use axum::Json;
use axum::body::Body as HttpBody;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::jobs::parse_id;
use super::types::{ArtifactEntry, ArtifactList, ErrorBody, SkippedArtifactEntry};
use crate::model::auth::Scope;
use crate::store::artifacts::{self, StoredArtifact};
use crate::store::jobs as store_jobs;

/// The header carrying the stored bytes' SHA-256 in hex.
pub const SHA256_HEADER: &str = "x-nekton-sha256";
/// The header saying a cap cut the file (`true`; absent otherwise).
pub const TRUNCATED_HEADER: &str = "x-nekton-truncated";
/// The header carrying the file's size when it was collected (more than the body when cut).
pub const SIZE_HEADER: &str = "x-nekton-size";

/// List a job's artifacts.
///
/// The artifacts of the job's latest attempt: the files collected after it ended, each with its
/// size, the bytes stored, whether a cap cut it, its SHA-256 and mode; and the matches that were
/// not collected (symlinks, hard links, directories, past a cap), with why. Empty while the
/// job has not finished an attempt, or when its spec asked for none.
#[utoipa::path(get, path = "/v1/jobs/{id}/artifacts", operation_id = "listJobArtifacts", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, body = ArtifactList), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ArtifactList>, ApiError> {
    caller.require(Scope::JobsRead)?;
    let id = parse_id(&id)?;
    let job = store_jobs::get(&state.pool, caller.tenant(), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    let (files, skipped) = artifacts::list(&state.pool, id, job.attempt).await?;
    Ok(Json(ArtifactList {
        attempt: job.attempt,
        artifacts: files.into_iter().map(entry).collect(),
        skipped: skipped
            .into_iter()
            .map(|s| SkippedArtifactEntry {
                path: s.path,
                reason: s.reason,
            })
            .collect(),
    }))
}

fn entry(a: StoredArtifact) -> ArtifactEntry {
    ArtifactEntry {
        path: a.path,
        size: a.size,
        stored_bytes: a.stored_bytes,
        truncated: a.truncated,
        sha256: hex::encode(&a.sha256),
        mode: a.mode,
    }
}

/// Download one of a job's artifacts.
///
/// One artifact of the job's latest attempt: its stored bytes, with `Content-Length`, the
/// SHA-256 of those bytes (`X-Nekton-Sha256` in hex, `Repr-Digest` per RFC 9530), the file's
/// collected size (`X-Nekton-Size`) and `X-Nekton-Truncated: true` when a cap cut it. The path
/// is the listing's, slashes included (`reports/unit.xml`); for an absolute one
/// (`/tmp/out.log`) the leading slash may be left out.
#[utoipa::path(get, path = "/v1/jobs/{id}/artifacts/{path}", operation_id = "getJobArtifact", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id"),
        ("path" = String, Path, description = "The artifact's path as listed, slashes included (not encoded)")),
    responses(
        (status = 200, description = "The artifact's stored bytes",
            content((super::types::BinaryBody = "application/octet-stream")),
            headers(
                ("X-Nekton-Sha256" = String, description = "SHA-256 of the body, in hex"),
                ("Repr-Digest" = String, description = "SHA-256 of the body, as `sha-256=:BASE64:` (RFC 9530)"),
                ("X-Nekton-Size" = u64, description = "The file's size when it was collected"),
                ("X-Nekton-Truncated" = String, description = "`true` when a cap cut the file (the body is its first bytes); absent otherwise"),
            )),
        (status = 404, description = "No such job, or the latest attempt has no artifact at that path", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsRead)?;
    let id = parse_id(&id)?;
    let job = store_jobs::get(&state.pool, caller.tenant(), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    let mut found = artifacts::find(&state.pool, id, job.attempt, &path).await?;
    if found.is_none() && !path.starts_with('/') {
        found = artifacts::find(&state.pool, id, job.attempt, &format!("/{path}")).await?;
    }
    let Some(file) = found else {
        return Err(ApiError::not_found(format!(
            "job {id} has no artifact {path:?} in attempt {}; GET /v1/jobs/{id}/artifacts lists \
             the paths it has",
            job.attempt
        )));
    };
    Ok(download(state, id, job.attempt, file))
}

/// The file's bytes as a response body, read from the database a chunk at a time.
fn download(state: AppState, job: Uuid, attempt: i32, file: StoredArtifact) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let expected = file.stored_bytes;
    let idx = file.idx;
    let path = file.path.clone();
    tokio::spawn(async move {
        let mut sent = 0u64;
        let mut seq = 0i32;
        while sent < expected {
            let piece = match artifacts::chunk(&state.pool, job, attempt, idx, seq).await {
                Ok(Some(piece)) => piece,
                Ok(None) => {
                    tracing::error!(%job, attempt, path, seq, sent, expected, "an artifact's chunk is missing");
                    let _ = tx
                        .send(Err(std::io::Error::other(
                            "the artifact's bytes are incomplete",
                        )))
                        .await;
                    return;
                }
                Err(e) => {
                    tracing::error!(%job, attempt, path, error = %e, "reading an artifact failed");
                    let _ = tx
                        .send(Err(std::io::Error::other("reading the artifact failed")))
                        .await;
                    return;
                }
            };
            sent += piece.len() as u64;
            seq += 1;
            if tx.send(Ok(piece)).await.is_err() {
                return;
            }
        }
    });
    let digest = base64::engine::general_purpose::STANDARD.encode(&file.sha256);
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, file.stored_bytes.to_string()),
        ],
        HttpBody::from_stream(ReceiverStream::new(rx)),
    )
        .into_response();
    let headers = response.headers_mut();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = header::HeaderValue::from_str(&value) {
            headers.insert(header::HeaderName::from_static(name), v);
        }
    };
    put(SHA256_HEADER, hex::encode(&file.sha256));
    put("repr-digest", format!("sha-256=:{digest}:"));
    put(SIZE_HEADER, file.size.to_string());
    if file.truncated {
        put(TRUNCATED_HEADER, "true".into());
    }
    response
}
