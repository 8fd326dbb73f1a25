//! Which backend runs a job, in two steps. First the job's program is resolved to a concrete
//! [`Program`]: a module stays `Program::WasmModule`; an image is pulled (`IfNotPresent`: a
//! stored image is used without contacting the registry, and concurrent jobs on one new image
//! share one pull) and becomes `Program::WasmModule` when it is a Wasm artifact (its module blob
//! is served from the image store, see [`ImageModuleStore`]) or `Program::Image` with the
//! normalised reference when it is a container image. Then the backend is always the first of the
//! worker's one list that [`Backend::accepts`] the program — the container backend is just an
//! entry of that list when it could start on this host (see `Worker::with_images`). No backend
//! accepting the program ends the job `spec_error` (for images: with the reason the container
//! backend could not start).
//!
//! A pull failure ends the job `image_error` with the error's text (never retried: a bad image
//! stays bad); an image of the wrong kind for the job's `runtime` ends it `spec_error`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use image_store::{Digest, ImageKind, ImageStore, PullPolicy};
use runtime_core::{Backend, ExecRequest, Outcome, OutcomeReason, Program};
use tokio_util::sync::CancellationToken;

use super::PgModuleStore;
use crate::images::{ImageHost, describe_image_error};
use crate::model::RuntimeKind;

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
/// `request.program` (a Wasm image becomes the module it carries, a container image's reference
/// the normalised one that was pulled).
pub async fn route(
    request: &mut ExecRequest,
    runtime: RuntimeKind,
    backends: &[Arc<dyn Backend>],
    images: Option<&ImageHost>,
    cancel: &CancellationToken,
) -> Result<Routed, NotRouted> {
    let started = Instant::now();
    let program = resolve_program(request, runtime, images, cancel, started).await?;
    let setup = started.elapsed();
    let Some(backend) = backends.iter().find(|b| b.accepts(&program)) else {
        let detail = match (&program, images.map(|h| &h.container)) {
            (Program::Image { .. }, Some(Err(reason))) => reason.clone(),
            (Program::Image { .. }, _) => "no backend on this worker runs container images".into(),
            (Program::WasmModule { .. }, _) => "no backend on this worker runs Wasm modules".into(),
        };
        return Err(fail(OutcomeReason::SpecError, detail, setup));
    };
    request.program = program;
    Ok(Routed {
        backend: backend.clone(),
        setup,
    })
}

/// The concrete program a job runs: its module, or what its (pulled) image turned out to be.
async fn resolve_program(
    request: &ExecRequest,
    runtime: RuntimeKind,
    images: Option<&ImageHost>,
    cancel: &CancellationToken,
    started: Instant,
) -> Result<Program, NotRouted> {
    let reference = match &request.program {
        Program::Image { reference } => reference.clone(),
        Program::WasmModule { .. } => return Ok(request.program.clone()),
    };
    let Some(host) = images else {
        return Err(fail(
            OutcomeReason::ImageError,
            "this worker has no image store",
            Duration::ZERO,
        ));
    };
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
            Ok(Program::WasmModule {
                digest: module.digest.to_string(),
            })
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
            Ok(Program::Image {
                reference: record.reference.clone(),
            })
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
    async fn load(&self, digest: &str) -> Result<Vec<u8>, runtime_core::ModuleStoreError> {
        use runtime_core::ModuleStoreError;
        if let (Some(store), Ok(d)) = (&self.images, Digest::parse(digest))
            && store.has_blob(&d)
        {
            let store = store.clone();
            let max = self.max_module_bytes;
            let read = tokio::task::spawn_blocking(move || store.read_blob(&d, max))
                .await
                .map_err(|e| {
                    ModuleStoreError::Unavailable(format!(
                        "reading module {digest} from the image store: {e}"
                    ))
                })?;
            match read {
                Ok(bytes) => return Ok(bytes),
                Err(e @ image_store::ImageError::TooLarge { .. }) => {
                    return Err(ModuleStoreError::Missing(e.to_string()));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A module source with nothing in it (routing never loads modules).
    struct EmptyModules;

    #[async_trait::async_trait]
    impl runtime_core::ModuleStore for EmptyModules {
        async fn load(&self, digest: &str) -> Result<Vec<u8>, runtime_core::ModuleStoreError> {
            Err(runtime_core::ModuleStoreError::Missing(format!(
                "no module {digest}"
            )))
        }
    }

    fn request(program: Program) -> ExecRequest {
        ExecRequest {
            job_id: "route-test".into(),
            program,
            args: Vec::new(),
            env: Vec::new(),
            stdin: Vec::new(),
            files: Vec::new(),
            limits: runtime_core::Limits {
                wall_time: Duration::from_secs(1),
                cpu_time: None,
                memory_bytes: 64 << 20,
                fuel: None,
                output_bytes: 1024,
                pids: None,
                disk_bytes: None,
            },
            container: Default::default(),
            chain: Default::default(),
            artifacts: Default::default(),
            wasm: Default::default(),
        }
    }

    fn module() -> Program {
        Program::WasmModule {
            digest: format!("sha256:{}", "a".repeat(64)),
        }
    }

    #[tokio::test]
    async fn a_program_goes_to_the_backend_that_accepts_it() {
        let wasm: Arc<dyn Backend> = Arc::new(
            wasm_backend::WasmBackend::new(
                wasm_backend::WasmConfig::default(),
                Arc::new(EmptyModules),
            )
            .expect("the Wasm backend starts"),
        );
        let cancel = CancellationToken::new();

        let mut req = request(module());
        let routed = route(
            &mut req,
            RuntimeKind::Auto,
            std::slice::from_ref(&wasm),
            None,
            &cancel,
        )
        .await
        .unwrap_or_else(|e| panic!("not routed: {:?}", e.outcome));
        assert_eq!(routed.backend.name(), "wasm");
        assert_eq!(req.program, module());

        // The same list without a backend accepting modules: spec_error, program untouched.
        let mut req = request(module());
        let Err(not) = route(&mut req, RuntimeKind::Auto, &[], None, &cancel).await else {
            panic!("routed without a backend");
        };
        assert_eq!(not.outcome.reason, OutcomeReason::SpecError);
        assert_eq!(
            not.outcome.detail.as_deref(),
            Some("no backend on this worker runs Wasm modules")
        );

        // An image on a worker without an image store is never offered to a backend.
        let image = Program::Image {
            reference: "127.0.0.1:1/x:1".into(),
        };
        let mut req = request(image.clone());
        let Err(not) = route(&mut req, RuntimeKind::Auto, &[wasm], None, &cancel).await else {
            panic!("an image was routed without an image store");
        };
        assert_eq!(not.outcome.reason, OutcomeReason::ImageError);
        assert_eq!(req.program, image);
    }
}
