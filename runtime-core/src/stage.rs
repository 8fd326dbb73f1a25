//! Runs that build on each other, and the files a run leaves behind.
//!
//! A test suite builds once and runs many cases on the build's result: the build's request sets
//! [`Chain::keep`] and its report returns a [`Base`]; each case's request carries that base in
//! [`Chain::base`] and starts from the build's files with a writable layer of its own, so no case
//! sees another's writes. A base is opaque: only the backend that made it can use it, and what it
//! holds (a container's writable layer, a Wasm job's directory) is released when the last clone
//! is dropped.
//!
//! Any run can also ask for [`Artifacts`]: files collected from its writable state after it
//! ended, read without following a symlink or leaving the job's root, capped per file and per run.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// The writable state a finished run left, kept for later runs of the same backend.
#[derive(Clone)]
pub struct Base {
    backend: &'static str,
    inner: Arc<dyn Any + Send + Sync>,
}

impl Base {
    /// Wraps a backend's own record of the kept state; `backend` is its [`crate::Backend::name`].
    pub fn new<T: Any + Send + Sync>(backend: &'static str, inner: T) -> Self {
        Base {
            backend,
            inner: Arc::new(inner),
        }
    }

    /// The name of the backend that made it.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The backend's record, if `T` is its type.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.inner.downcast_ref::<T>()
    }
}

impl fmt::Debug for Base {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Base({})", self.backend)
    }
}

impl PartialEq for Base {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Base {}

/// How a run relates to the runs before and after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// Start from this base (made by the same backend): its files are there, read-only below the
    /// run's own writable layer (containers), or copied into the run's directory (Wasm). A base
    /// of another backend is a `spec_error`.
    pub base: Option<Base>,
    /// Keep this run's writable state and return it as [`crate::ExecReport::kept`].
    pub keep: bool,
}

/// Files to collect from a run's writable state once it has ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Artifacts {
    /// Paths or glob patterns (`*`, `?`, `[...]` within one path component; `**` for any depth).
    /// Relative ones are taken from the working directory (containers; the job's `/` for Wasm),
    /// absolute ones from the job's root. Validated by the service: no `..`, no empty component.
    pub patterns: Vec<String>,
    /// Bytes kept of one file; a larger file is cut here and flagged.
    pub max_file_bytes: u64,
    /// Bytes kept over all files of the run; files past it are cut (or kept empty) and flagged.
    pub max_total_bytes: u64,
    /// The most files collected; matches past it are listed in [`ArtifactReport::skipped`].
    pub max_files: usize,
}

/// One collected file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Where it was found: relative to the working directory for a relative pattern, absolute for
    /// an absolute one; always normalised (`/`-separated, no `.`).
    pub path: String,
    /// The file's size when collected.
    pub size: u64,
    /// Its bytes, up to the caps.
    pub data: Vec<u8>,
    /// True when `data` is shorter than `size` (a cap cut it).
    pub truncated: bool,
    /// Unix permission bits.
    pub mode: u32,
}

/// A match that was not collected, and why (a symlink, a hard link, not a regular file, the file
/// count cap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedArtifact {
    pub path: String,
    pub reason: String,
}

/// What a run's [`Artifacts`] request found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactReport {
    pub files: Vec<Artifact>,
    pub skipped: Vec<SkippedArtifact>,
}

impl ArtifactReport {
    /// Nothing collected and nothing skipped: the run had no artifacts to record.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.skipped.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_is_its_backends_record_and_equal_only_to_its_clones() {
        let a = Base::new("wasm", 7u32);
        let b = Base::new("wasm", 7u32);
        assert_eq!(a.backend(), "wasm");
        assert_eq!(a.get::<u32>(), Some(&7));
        assert_eq!(a.get::<String>(), None);
        assert_eq!(a, a.clone());
        assert_ne!(a, b);
    }
}
