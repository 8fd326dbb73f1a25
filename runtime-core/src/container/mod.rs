//! The Linux container backend (work in progress: the public API only).

use std::path::PathBuf;

use crate::image::ImageService;
use crate::{Backend, ExecReport, ExecRequest, JobIo, Outcome, OutcomeReason, Program, Usage};

/// Configuration of a [`ContainerBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    /// Root for per-job dirs (`<state_dir>/jobs/<job_id>/`), created 0700 if missing.
    pub state_dir: PathBuf,
    /// Size cap of each job's writable layer (a tmpfs holding upper/work dirs). Default 1 GiB.
    pub scratch_bytes: u64,
    /// Size of /dev/shm. Default 64 MiB.
    pub shm_bytes: u64,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/nekton/containers"),
            scratch_bytes: 1 << 30,
            shm_bytes: 64 << 20,
        }
    }
}

/// Why a [`ContainerBackend`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A host prerequisite is missing; the text names it and how to fix it.
    #[error("container backend prerequisite missing: {0}")]
    Prerequisite(String),
    /// The state directory could not be prepared.
    #[error("container state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The spawner thread could not be started.
    #[error("cannot start the container spawner thread: {0}")]
    Spawner(#[source] std::io::Error),
}

/// Runs [`Program::Image`] jobs in Linux containers.
pub struct ContainerBackend {
    #[allow(dead_code)]
    config: ContainerConfig,
    #[allow(dead_code)]
    images: ImageService,
}

impl ContainerBackend {
    /// Checks prerequisites (root/CAP_SYS_ADMIN, overlayfs in /proc/filesystems, ...) with an
    /// error naming what is missing and how to fix it; creates `state_dir`; removes leftovers of a
    /// previous (crashed) process.
    pub fn new(config: ContainerConfig, images: ImageService) -> Result<Self, ContainerError> {
        Ok(Self { config, images })
    }
}

#[async_trait::async_trait]
impl Backend for ContainerBackend {
    fn name(&self) -> &'static str {
        "container"
    }

    fn accepts(&self, program: &Program) -> bool {
        matches!(program, Program::Image { .. })
    }

    async fn run(&self, _request: ExecRequest, _io: JobIo) -> ExecReport {
        ExecReport {
            outcome: Outcome::with_reason(OutcomeReason::InternalError, "not implemented yet"),
            usage: Usage::default(),
        }
    }
}
