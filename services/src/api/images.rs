//! `/v1/images`: the image store of this process's worker — pull (optionally with SSE progress),
//! list, inspect, delete, import an OCI image layout, gc.
//!
//! Images live on worker hosts (each worker keeps its own content-addressed cache), so these
//! endpoints are served by a process that runs both the API and a worker (`nekton serve`). An
//! API-only process answers 503 `images_unavailable`.
//!
//! In paths, `{reference}` is one URL path segment: percent-encode the reference's `/` as `%2F`
//! (`docker.io%2Flibrary%2Fbusybox:latest`; `:` and `@` may stay as they are). Short names work
//! too (`busybox:1.36` means `docker.io/library/busybox:1.36`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use image_store::{
    ImageError, ImageKind, ImageRecord, ImageRef, ImageService, PullEvent, PullOutcome, PullPolicy,
};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use utoipa::IntoParams;

use super::auth::Caller;
use super::error::{ApiError, ErrorCode, parse_json};
use super::types::{
    ErrorBody, GcResult, Image, ImageKindView, ImageLayer, ImageList, ImportResult, PullBlob,
    PullPolicyView, PullRequest, PullResolvedEvent, PullResult, PullStatsView,
};
use super::{AppState, Body};
use crate::images::describe_image_error;
use crate::model::auth::Scope;
use crate::store::tenants as store_tenants;

/// Bytes an import upload may carry beyond the largest image the store accepts (layout files).
const IMPORT_SLACK: u64 = 64 << 20;

fn service(state: &AppState) -> Result<&ImageService, ApiError> {
    state.images.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ImagesUnavailable,
            "images live on worker hosts and this process runs no worker; call a node started \
             with `nekton serve` (API and worker in one process)",
        )
    })
}

/// The API's view of a stored image.
pub fn image_view(r: &ImageRecord) -> Image {
    Image {
        reference: r.reference.clone(),
        kind: match r.kind {
            ImageKind::Container => ImageKindView::Container,
            ImageKind::Wasm => ImageKindView::Wasm,
        },
        manifest_digest: r.manifest_digest.to_string(),
        index_digest: r.index_digest.as_ref().map(ToString::to_string),
        platform: r.platform.as_ref().map(ToString::to_string),
        config_digest: r.config_digest.to_string(),
        size_bytes: r.size,
        unpacked_size_bytes: r.unpacked_size,
        layers: r
            .layers
            .iter()
            .map(|l| ImageLayer {
                digest: l.digest.to_string(),
                media_type: l.media_type.clone(),
                size_bytes: l.size,
            })
            .collect(),
        entrypoint: r.config.entrypoint.clone(),
        cmd: r.config.cmd.clone(),
        working_dir: r.config.working_dir.clone(),
        user: r.config.user.clone(),
        stored_at: DateTime::<Utc>::from_timestamp(i64::try_from(r.stored_at).unwrap_or(0), 0)
            .unwrap_or_default(),
    }
}

fn pull_result(p: &PullOutcome) -> PullResult {
    PullResult {
        image: image_view(&p.record),
        from_cache: p.from_cache,
        coalesced: p.coalesced,
        stats: PullStatsView {
            blobs_downloaded: p.stats.blobs_downloaded,
            bytes_downloaded: p.stats.bytes_downloaded,
            blobs_cached: p.stats.blobs_cached,
            layers_extracted: p.stats.layers_extracted,
        },
    }
}

/// Maps an image error to the API's answer: the client's mistakes and bad images are 4xx,
/// registry trouble 502, only the host's own faults 500.
pub fn image_api_error(e: &ImageError, images: &ImageService) -> ApiError {
    let message = describe_image_error(e, images.options());
    match e {
        ImageError::InvalidReference { .. } | ImageError::InvalidDigest(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidReference,
            message,
        )
        .with_field("reference"),
        ImageError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
        }
        ImageError::RegistryNotAllowed { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RegistryNotAllowed,
            format!("{message}; this service only pulls from the registries its operator allowed"),
        )
        .with_field("reference"),
        ImageError::Registry { message: m, .. } if registry_says_unknown(m) => ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ImageNotInRegistry,
            format!("{message}; check the repository name and tag"),
        ),
        ImageError::Registry { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::RegistryError, message)
        }
        ImageError::Import { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidLayout,
            message,
        ),
        e if e.is_content_error() => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidImage,
            message,
        ),
        _ => {
            tracing::error!(error = %e, "image store failure while handling a request");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::InternalError,
                format!("the worker's image store failed: {message}"),
            )
        }
    }
}

/// A registry's "no such manifest / repository" answer (as opposed to an outage).
fn registry_says_unknown(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("manifest unknown")
        || m.contains("manifest_unknown")
        || m.contains("name unknown")
        || m.contains("name_unknown")
        || m.contains("not found")
}

fn parse_reference(reference: &str) -> Result<ImageRef, ApiError> {
    ImageRef::parse(reference).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidReference,
            e.to_string(),
        )
        .with_field("reference")
    })
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// Pull an image into the worker host's store. Without SSE: waits for the pull and answers the
/// image. With `Accept: text/event-stream`: SSE events `resolved` (`PullResolvedEvent`),
/// `progress` (`PullBlob`: bytes `done` of `total` for one blob), `cached` (a blob already
/// stored), `extracting` / `extracted` (a layer being unpacked; `done` = unpacked bytes), then
/// `done` (`PullResult`) or `error` (`ErrorBody`). Concurrent pulls of one image share one
/// download; the pull goes on if the client disconnects.
#[utoipa::path(post, path = "/v1/images/pull", operation_id = "pullImage", tag = "images",
    request_body = PullRequest,
    responses(
        (status = 200, description = "The image (JSON `PullResult`), or with `Accept: text/event-stream` an SSE stream of the pull's progress whose events (`resolved`, `progress`, `cached`, `extracting`, `extracted`, then `done` or `error`) carry the payloads of `PullStreamEvent`",
            content((PullResult = "application/json"), (super::types::PullStreamEvent = "text/event-stream"))),
        (status = 400, body = ErrorBody),
        (status = 404, description = "The registry has no such image", body = ErrorBody),
        (status = 422, description = "Invalid reference, registry not allowed, or a bad image (digest mismatch, hostile layer, wrong platform)", body = ErrorBody),
        (status = 502, description = "The registry failed or is unreachable (also: a plain-HTTP registry not listed with --insecure-registry)", body = ErrorBody),
        (status = 503, description = "This process runs no worker", body = ErrorBody),
    ))]
pub async fn pull(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(Scope::ImagesWrite)?;
    let images = service(&state)?.clone();
    let req: PullRequest = parse_json(&body.json_sized()?)?;
    let image = parse_reference(&req.reference)?;
    if let Some(allowed) = &images.options().allowed_registries
        && !allowed.iter().any(|r| r == image.registry())
    {
        let e = ImageError::RegistryNotAllowed {
            registry: image.registry().to_string(),
        };
        return Err(image_api_error(&e, &images));
    }
    let policy = match req.policy.unwrap_or_default() {
        PullPolicyView::IfNotPresent => PullPolicy::IfNotPresent,
        PullPolicyView::Always => PullPolicy::Always,
    };
    let reference = image.to_string();
    {
        let mut conn = state
            .pool
            .acquire()
            .await
            .map_err(crate::store::StoreError::from)?;
        store_tenants::record_images(&mut conn, caller.tenant(), std::slice::from_ref(&reference))
            .await?;
    }
    if !wants_sse(&headers) {
        let outcome = images
            .pull(&reference, policy, None)
            .await
            .map_err(|e| image_api_error(&e, &images))?;
        return Ok(Json(pull_result(&outcome)).into_response());
    }

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let progress_tx = tx.clone();
    let progress: image_store::ProgressFn = Arc::new(move |ev: &PullEvent| {
        if let Some(event) = progress_event(ev) {
            let _ = progress_tx.send(event);
        }
    });
    tokio::spawn(async move {
        let event = match images.pull(&reference, policy, Some(progress)).await {
            Ok(outcome) => json_event("done", &pull_result(&outcome)),
            Err(e) => json_event("error", &image_api_error(&e, &images).body()),
        };
        let _ = tx.send(event);
    });
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn json_event<T: serde::Serialize>(name: &str, payload: &T) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(payload).unwrap_or_else(|_| "{}".into()))
}

fn progress_event(ev: &PullEvent) -> Option<Event> {
    let blob = |digest: &image_store::Digest, done: u64, total: u64| PullBlob {
        digest: digest.to_string(),
        done,
        total,
    };
    Some(match ev {
        PullEvent::Resolved {
            reference,
            manifest_digest,
            platform,
            layers,
        } => json_event(
            "resolved",
            &PullResolvedEvent {
                reference: reference.clone(),
                manifest_digest: manifest_digest.to_string(),
                platform: platform.as_ref().map(ToString::to_string),
                layers: layers.iter().map(|(d, size)| blob(d, 0, *size)).collect(),
            },
        ),
        PullEvent::Downloading {
            digest,
            done,
            total,
        } => json_event("progress", &blob(digest, *done, *total)),
        PullEvent::Downloaded { digest, total } => {
            json_event("progress", &blob(digest, *total, *total))
        }
        PullEvent::Cached { digest, total } => json_event("cached", &blob(digest, *total, *total)),
        PullEvent::Extracting { digest } => json_event("extracting", &blob(digest, 0, 0)),
        PullEvent::Extracted {
            digest,
            unpacked_bytes,
        } => json_event("extracted", &blob(digest, *unpacked_bytes, *unpacked_bytes)),
    })
}

/// List the images in the worker host's store, sorted by reference.
#[utoipa::path(get, path = "/v1/images", operation_id = "listImages", tag = "images",
    responses((status = 200, body = ImageList), (status = 503, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ImageList>, ApiError> {
    caller.require(Scope::ImagesWrite)?;
    let images = service(&state)?.clone();
    let store = images.store().clone();
    let records = tokio::task::spawn_blocking(move || store.list())
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| image_api_error(&e, &images))?;
    // A worker host's store is shared: a tenant sees the images it pulled, imported or ran.
    let mine = if caller.scopes().contains(Scope::Admin) {
        None
    } else {
        Some(store_tenants::tenant_images(&state.pool, caller.tenant()).await?)
    };
    Ok(Json(ImageList {
        images: records
            .iter()
            .filter(|r| mine.as_ref().is_none_or(|m| m.contains(&r.reference)))
            .map(image_view)
            .collect(),
    }))
}

/// Inspect one stored image. `reference` is one path segment: percent-encode its `/` as `%2F`.
#[utoipa::path(get, path = "/v1/images/{reference}", operation_id = "getImage", tag = "images",
    params(("reference" = String, Path, description = "Image reference, `/` percent-encoded as `%2F` (e.g. `docker.io%2Flibrary%2Fbusybox:latest`, or `busybox:latest`)")),
    responses(
        (status = 200, body = Image),
        (status = 404, description = "Not in this host's store", body = ErrorBody),
        (status = 422, description = "Invalid reference", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
) -> Result<Json<Image>, ApiError> {
    caller.require(Scope::ImagesWrite)?;
    let images = service(&state)?.clone();
    let image = parse_reference(&reference)?;
    let store = images.store().clone();
    let lookup = image.clone();
    let record = tokio::task::spawn_blocking(move || store.get_ref(&lookup))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| image_api_error(&e, &images))?;
    let visible = caller.scopes().contains(Scope::Admin)
        || store_tenants::tenant_images(&state.pool, caller.tenant())
            .await?
            .contains(&image.to_string());
    match record {
        Some(r) if visible => Ok(Json(image_view(&r))),
        _ => Err(ApiError::not_found(format!(
            "image {image} is not stored on this host; pull it with POST /v1/images/pull"
        ))),
    }
}

/// Remove an image's record. Its blobs and layers stay until `POST /v1/images/gc` (jobs running
/// on it keep what they use). Answers the removed image.
#[utoipa::path(delete, path = "/v1/images/{reference}", operation_id = "deleteImage", tag = "images",
    params(("reference" = String, Path, description = "Image reference, `/` percent-encoded as `%2F`")),
    responses(
        (status = 200, description = "Removed", body = Image),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
) -> Result<Json<Image>, ApiError> {
    caller.require(Scope::Admin)?;
    let images = service(&state)?.clone();
    let image = parse_reference(&reference)?;
    let store = images.store().clone();
    let name = image.to_string();
    let removed = tokio::task::spawn_blocking(move || store.remove(&name))
        .await
        .map_err(|_| ApiError::internal())?;
    match removed {
        Ok(r) => {
            tracing::info!(reference = %r.reference, "image removed");
            Ok(Json(image_view(&r)))
        }
        Err(ImageError::NotFound(_)) => Err(ApiError::not_found(format!(
            "image {image} is not stored on this host"
        ))),
        Err(e) => Err(image_api_error(&e, &images)),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    /// Store the layout's image under this reference (required when the layout names none, or
    /// holds several).
    pub reference: Option<String>,
}

/// Import an OCI image layout (for air-gapped hosts). The body is a tar of the layout (plain,
/// gzip or zstd: `oci-layout`, `index.json`, `blobs/sha256/...`); it is streamed to disk (up to
/// the store's image size cap) and every blob is verified as in a pull.
#[utoipa::path(post, path = "/v1/images/import", operation_id = "importImage", tag = "images",
    params(ImportParams),
    request_body(description = "A tar of an OCI image layout; `application/octet-stream` is accepted too",
        content((super::types::BinaryBody = "application/x-tar"))),
    responses(
        (status = 201, description = "Imported", body = ImportResult),
        (status = 413, body = ErrorBody),
        (status = 422, description = "Invalid reference, not an OCI layout, or a bad image", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ImportParams>, QueryRejection>,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<ImportResult>), ApiError> {
    caller.require(Scope::ImagesWrite)?;
    let images = service(&state)?.clone();
    let Query(params) = params.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidQuery,
            format!("{}; the only parameter is `reference`", e.body_text()),
        )
    })?;
    let reference = params
        .reference
        .as_deref()
        .map(parse_reference)
        .transpose()?
        .map(|r| r.to_string());
    let dir = images.store().root().join("uploads");
    tokio::fs::create_dir_all(&dir).await.map_err(|e| {
        tracing::error!(error = %e, dir = %dir.display(), "cannot create the upload directory");
        ApiError::internal()
    })?;
    let temp = tempfile::Builder::new()
        .prefix("import-")
        .suffix(".tar")
        .tempfile_in(&dir)
        .map_err(|e| {
            tracing::error!(error = %e, "cannot create an upload file");
            ApiError::internal()
        })?;
    let cap = images.store().limits().max_image_bytes + IMPORT_SLACK;
    let mut file = tokio::fs::File::from_std(temp.reopen().map_err(|_| ApiError::internal())?);
    let mut stream = body.into_data_stream();
    let mut received: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!("could not read the upload: {e}"),
            )
        })?;
        received += chunk.len() as u64;
        if received > cap {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                format!("the upload is larger than this host accepts ({cap} bytes)"),
            ));
        }
        file.write_all(&chunk).await.map_err(|e| {
            tracing::error!(error = %e, "writing an image upload failed");
            ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                ErrorCode::StorageFull,
                format!("the worker host could not store the upload: {e}"),
            )
        })?;
    }
    file.flush().await.map_err(|_| ApiError::internal())?;
    drop(file);
    if received == 0 {
        // Well-formed (any bytes are a body) but not an image layout: 422, like other archives
        // that hold no layout.
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidLayout,
            "the request body is empty; send a tar of an OCI image layout",
        ));
    }
    let records = images
        .import(temp.path(), reference.as_deref(), None)
        .await
        .map_err(|e| image_api_error(&e, &images))?;
    drop(temp);
    let references: Vec<String> = records.iter().map(|r| r.reference.clone()).collect();
    {
        let mut conn = state
            .pool
            .acquire()
            .await
            .map_err(crate::store::StoreError::from)?;
        store_tenants::record_images(&mut conn, caller.tenant(), &references).await?;
    }
    Ok((
        StatusCode::CREATED,
        Json(ImportResult {
            images: records.iter().map(image_view).collect(),
        }),
    ))
}

/// Delete blobs and extracted layers no stored image refers to (and none a running job uses).
#[utoipa::path(post, path = "/v1/images/gc", operation_id = "collectImageGarbage", tag = "images",
    responses((status = 200, body = GcResult), (status = 503, body = ErrorBody)))]
pub async fn gc(State(state): State<AppState>, caller: Caller) -> Result<Json<GcResult>, ApiError> {
    caller.require(Scope::Admin)?;
    let images = service(&state)?.clone();
    let report = images
        .gc()
        .await
        .map_err(|e| image_api_error(&e, &images))?;
    Ok(Json(GcResult {
        removed_blobs: report
            .removed_blobs
            .iter()
            .map(ToString::to_string)
            .collect(),
        removed_layers: report
            .removed_layers
            .iter()
            .map(ToString::to_string)
            .collect(),
        freed_bytes: report.freed_bytes,
    }))
}
