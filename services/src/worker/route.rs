//! Which backend runs a job. Modules go to the Wasm backend. Images are pulled first
//! (`IfNotPresent`: a stored image is used without contacting the registry, and concurrent jobs
//! on one new image share one pull) and routed by what the image is: a Wasm artifact runs on the
//! Wasm backend (its module blob is served from the image store, see [`ImageModuleStore`]), any
//! other image on the container backend.
//!
//! A pull failure ends the job `image_error` with the error's text (never retried: a bad image
//! stays bad); an image of the wrong kind for the job's `runtime` ends it `spec_error`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use image_store::{Digest, ImageKind, ImageStore, PullPolicy};
use runtime_core::{Backend, ExecRequest, Outcome, OutcomeReason, Program};
use tokio_util::sync::CancellationToken;

use super::PgModuleStore;
use crate::api::types::RuntimeKind;
use crate::images::{ImageHost, describe_image_error};

/// The backend chosen for a job, and the time spent getting its image.
pub struct Routed {
    pub backend: Arc<dyn Backend>,
    pub setup: Duration,
}

/// Why a job cannot be handed to a backend, and the time spent finding out.
pub struct NotRouted {
    pub outcome: Outcome,
    pub setup: Duration,
}

fn fail(reason: OutcomeReason, detail: impl Into<String>, setup: Duration) -> NotRouted {
    NotRouted {
        outcome: Outcome::with_reason(reason, detail),
        setup,
    }
}

/// Picks the backend for `request`, pulling its image if it names one. May rewrite
/// `request.program` (a Wasm image becomes the module it carries) and the image reference (to the
/// normalised one that was pulled).
pub async fn route(
    request: &mut ExecRequest,
    runtime: RuntimeKind,
    backends: &[Arc<dyn Backend>],
    images: Option<&ImageHost>,
    cancel: &CancellationToken,
) -> Result<Routed, NotRouted> {
    let reference = match &request.program {
        Program::Image { reference } => reference.clone(),
        Program::WasmModule { .. } => {
            return backends
                .iter()
                .find(|b| b.accepts(&request.program))
                .map(|b| Routed {
                    backend: b.clone(),
                    setup: Duration::ZERO,
                })
                .ok_or_else(|| {
                    fail(
                        OutcomeReason::SpecError,
                        "no backend on this worker runs Wasm modules",
                        Duration::ZERO,
                    )
                });
        }
    };
    let Some(host) = images else {
        return Err(fail(
            OutcomeReason::ImageError,
            "this worker has no image store",
            Duration::ZERO,
        ));
    };
    let started = Instant::now();
    let pulled = tokio::select! {
        r = host.images.pull(&reference, PullPolicy::IfNotPresent, None) => r,
        () = cancel.cancelled() => {
            return Err(fail(OutcomeReason::Cancelled, "cancelled while pulling the image", started.elapsed()));
        }
    };
    let setup = started.elapsed();
    let record = match pulled {
        Ok(p) => p.record,
        Err(e) => {
            return Err(fail(
                OutcomeReason::ImageError,
                describe_image_error(&e, host.images.options()),
                setup,
            ));
        }
    };
    match record.kind {
        ImageKind::Wasm => {
            if runtime == RuntimeKind::Container {
                return Err(fail(
                    OutcomeReason::SpecError,
                    format!(
                        "{} is a Wasm image; the container runtime cannot run it (use runtime `auto` or `wasm`)",
                        record.reference
                    ),
                    setup,
                ));
            }
            let c = &request.container;
            if c.entrypoint.is_some() || c.workdir.is_some() || c.user.is_some() {
                return Err(fail(
                    OutcomeReason::SpecError,
                    format!(
                        "{} is a Wasm image: `entrypoint`, `workdir` and `user` apply to container images \
                         (a Wasm job's arguments are `args`, its files appear under /data)",
                        record.reference
                    ),
                    setup,
                ));
            }
            if request.limits.cpu_time.is_some() {
                return Err(fail(
                    OutcomeReason::SpecError,
                    format!(
                        "{} is a Wasm image: `cpu_time_ms` applies to containers; bound a Wasm job's CPU \
                         with `fuel` (and `runtime: wasm`)",
                        record.reference
                    ),
                    setup,
                ));
            }
            let Some(module) = record.wasm_module() else {
                return Err(fail(
                    OutcomeReason::ImageError,
                    format!(
                        "{} is a Wasm image without a module layer",
                        record.reference
                    ),
                    setup,
                ));
            };
            request.program = Program::WasmModule {
                digest: module.digest.to_string(),
            };
            match backends.iter().find(|b| b.accepts(&request.program)) {
                Some(b) => Ok(Routed {
                    backend: b.clone(),
                    setup,
                }),
                None => Err(fail(
                    OutcomeReason::SpecError,
                    "no backend on this worker runs Wasm modules",
                    setup,
                )),
            }
        }
        ImageKind::Container => {
            if runtime == RuntimeKind::Wasm {
                return Err(fail(
                    OutcomeReason::SpecError,
                    format!(
                        "{} is a Linux container image, not a Wasm artifact; the Wasm runtime cannot run it \
                         (use runtime `auto` or `container`)",
                        record.reference
                    ),
                    setup,
                ));
            }
            match &host.container {
                Ok(backend) => {
                    request.program = Program::Image {
                        reference: record.reference.clone(),
                    };
                    Ok(Routed {
                        backend: backend.clone(),
                        setup,
                    })
                }
                Err(reason) => Err(fail(OutcomeReason::SpecError, reason.clone(), setup)),
            }
        }
    }
}

/// The Wasm backend's module source on a worker with an image store: a module blob of a pulled
/// Wasm image is read from the store; anything else comes from PostgreSQL (uploaded modules).
/// The backend checks the bytes against the digest either way.
pub struct ImageModuleStore {
    pub images: Option<Arc<ImageStore>>,
    pub pg: PgModuleStore,
    /// Largest module read from the image store (the operator's `--max-module-bytes`).
    pub max_module_bytes: u64,
}

#[async_trait::async_trait]
impl runtime_core::ModuleStore for ImageModuleStore {
    async fn load(&self, digest: &str) -> Result<Vec<u8>, String> {
        if let (Some(store), Ok(d)) = (&self.images, Digest::parse(digest))
            && store.has_blob(&d)
        {
            let store = store.clone();
            let max = self.max_module_bytes;
            let read = tokio::task::spawn_blocking(move || store.read_blob(&d, max))
                .await
                .map_err(|e| format!("reading module {digest} from the image store: {e}"))?;
            match read {
                Ok(bytes) => return Ok(bytes),
                Err(e @ image_store::ImageError::TooLarge { .. }) => {
                    return Err(e.to_string());
                }
                // Collected in between, or unreadable: PostgreSQL may still have it.
                Err(e) => {
                    tracing::debug!(digest, error = %e, "module not readable from the image store")
                }
            }
        }
        self.pg.load(digest).await
    }
}
