//! Compiled modules, once per digest.
//!
//! Lookup order for a digest: the in-memory map (a ready [`InstancePre`]), then the on-disk cache
//! (`<cache_dir>/<engine hash>/<digest hex>.cwasm`, loaded with `Module::deserialize_file`), and only
//! then the [`ModuleStore`]. Bytes from the store are bounded in size, checked against the digest,
//! checked to be a core module, and compiled on a blocking thread under a time limit; the artifact
//! is written to disk through a temporary file and a rename, so a crash never leaves a torn file.
//!
//! Concurrent first loads of one digest share a single [`OnceCell`]: one fetch, one compile.
//! Failures that are the module's own (invalid, a component, not a command, too slow to compile)
//! are remembered so a bad module costs one compile, not one per job; failures of the store or the
//! host are not, so the next job retries.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use runtime_core::{ModuleStore, OutcomeReason};
use tokio::sync::OnceCell;
use wasmtime::{Engine, ExternType, InstancePre, Linker, Module, ModuleExport};

use crate::classify::render_error;
use crate::run::JobState;
use crate::validate::{check_header, digest_hex, module_digest};
use crate::{WasmConfig, WasmError};

/// Above this many entries, remembered failures are forgotten (bounds the map against a flood of
/// distinct bad modules; compiled modules are always kept).
const PRUNE_FAILURES_ABOVE: usize = 4096;

/// A module ready to instantiate.
pub(crate) struct Prepared {
    /// Imports resolved against the WASI linker once; instantiating is then cheap.
    pub pre: InstancePre<JobState>,
    /// The `_start` export, looked up by index at run time (no string lookup per job).
    pub start: ModuleExport,
}

/// Why a module could not be made ready. `Clone` so that every job waiting on one load gets it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("{0}")]
    BadDigest(String),
    #[error("the module store cannot provide {digest}: {reason}")]
    Store { digest: String, reason: String },
    #[error("the module store is unavailable while loading {digest} (retried): {reason}")]
    StoreUnavailable { digest: String, reason: String },
    #[error("the module store returned bytes whose digest is {actual}, not {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("the module is {size} bytes, more than the {max} bytes allowed")]
    TooLarge { size: usize, max: usize },
    #[error("{0}")]
    NotAModule(String),
    #[error("the module does not compile: {0}")]
    Compile(String),
    #[error("compiling the module took longer than the {0:?} allowed")]
    CompileTimeout(Duration),
    #[error("{0}")]
    NotACommand(String),
    #[error("the module cannot be linked against WASI preview 1: {0}")]
    Link(String),
    #[error("{0}")]
    Internal(String),
}

impl LoadError {
    /// The job outcome this failure gives.
    pub(crate) fn reason(&self) -> OutcomeReason {
        match self {
            Self::Store { .. } | Self::DigestMismatch { .. } => OutcomeReason::ImageError,
            Self::Internal(_) | Self::StoreUnavailable { .. } => OutcomeReason::InternalError,
            Self::BadDigest(_)
            | Self::TooLarge { .. }
            | Self::NotAModule(_)
            | Self::Compile(_)
            | Self::CompileTimeout(_)
            | Self::NotACommand(_)
            | Self::Link(_) => OutcomeReason::SpecError,
        }
    }

    /// True when retrying cannot help: the failure is remembered for the digest.
    fn is_permanent(&self) -> bool {
        self.reason() == OutcomeReason::SpecError
    }
}

type Slot = Arc<OnceCell<Result<Arc<Prepared>, LoadError>>>;

/// The digest → ready module map, backed by the disk cache and the module store.
pub(crate) struct ModuleCache {
    engine: Engine,
    linker: Linker<JobState>,
    modules: Arc<dyn ModuleStore>,
    dir: PathBuf,
    max_module_bytes: usize,
    max_compile_time: Duration,
    entries: Mutex<HashMap<String, Slot>>,
}

impl ModuleCache {
    pub(crate) fn new(
        config: &WasmConfig,
        engine: Engine,
        linker: Linker<JobState>,
        modules: Arc<dyn ModuleStore>,
    ) -> Result<Self, WasmError> {
        let dir = config
            .cache_dir
            .join(crate::engine::compatibility_hash_hex(&engine));
        // Private to the worker's user: what is in there is loaded as native code.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| WasmError::CacheDir {
                path: dir.clone(),
                source,
            })?;
        Ok(Self {
            engine,
            linker,
            modules,
            dir,
            max_module_bytes: config.max_module_bytes,
            max_compile_time: config.max_compile_time,
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// The directory of this engine's `.cwasm` files.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The ready module for `digest`, loading (and compiling) it on first use.
    pub(crate) async fn get(&self, digest: &str) -> Result<Arc<Prepared>, LoadError> {
        let hex = digest_hex(digest).map_err(LoadError::BadDigest)?;
        let slot = {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            match entries.get(digest) {
                Some(slot) => slot.clone(),
                None => {
                    if entries.len() >= PRUNE_FAILURES_ABOVE {
                        entries.retain(|_, slot| !matches!(slot.get(), Some(Err(_))));
                    }
                    let slot = Slot::default();
                    entries.insert(digest.to_owned(), slot.clone());
                    slot
                }
            }
        };
        if let Some(ready) = slot.get() {
            return ready.clone();
        }
        let result = slot.get_or_init(|| self.load(digest, hex)).await.clone();
        if let Err(error) = &result
            && !error.is_permanent()
        {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if entries
                .get(digest)
                .is_some_and(|current| Arc::ptr_eq(current, &slot))
            {
                entries.remove(digest);
            }
        }
        result
    }

    async fn load(&self, digest: &str, hex: &str) -> Result<Arc<Prepared>, LoadError> {
        let path = self.dir.join(format!("{hex}.cwasm"));
        if let Some(module) = self.load_from_disk(&path).await? {
            tracing::debug!(digest, path = %path.display(), "loaded compiled wasm module from the disk cache");
            return self.prepare(&module);
        }

        let bytes = self.modules.load(digest).await.map_err(|e| match e {
            runtime_core::ModuleStoreError::Missing(reason) => LoadError::Store {
                digest: digest.to_owned(),
                reason,
            },
            runtime_core::ModuleStoreError::Unavailable(reason) => LoadError::StoreUnavailable {
                digest: digest.to_owned(),
                reason,
            },
        })?;
        if bytes.len() > self.max_module_bytes {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                max: self.max_module_bytes,
            });
        }
        let actual = module_digest(&bytes);
        if actual != digest {
            return Err(LoadError::DigestMismatch {
                expected: digest.to_owned(),
                actual,
            });
        }
        check_header(&bytes).map_err(LoadError::NotAModule)?;

        let started = std::time::Instant::now();
        let engine = self.engine.clone();
        let compile = tokio::task::spawn_blocking(move || engine.precompile_module(&bytes));
        let compiled = match tokio::time::timeout(self.max_compile_time, compile).await {
            // The compiler thread cannot be interrupted; it finishes in the background and its
            // result is dropped. The failure is remembered, so the module is not compiled again.
            Err(_elapsed) => return Err(LoadError::CompileTimeout(self.max_compile_time)),
            Ok(Err(join)) => {
                return Err(LoadError::Internal(format!(
                    "the compiler thread failed: {join}"
                )));
            }
            Ok(Ok(Err(e))) => return Err(LoadError::Compile(render_error(&e))),
            Ok(Ok(Ok(compiled))) => compiled,
        };
        tracing::info!(digest, elapsed = ?started.elapsed(), size = compiled.len(), "compiled wasm module");
        let module = self.save_to_disk(path, compiled).await?;
        self.prepare(&module)
    }

    /// Loads `path` if it exists. A file that wasmtime refuses (another wasmtime build, damage) is
    /// removed and reported as absent, so the module is compiled again.
    async fn load_from_disk(&self, path: &Path) -> Result<Option<Module>, LoadError> {
        let engine = self.engine.clone();
        let path = path.to_path_buf();
        let loaded = tokio::task::spawn_blocking(move || {
            match std::fs::metadata(&path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot stat a cached wasm module");
                    return None;
                }
            }
            // SAFETY: `deserialize_file` trusts the file to be a wasmtime artifact. Files in this
            // directory are written only by `save_to_disk` (atomically, from `precompile_module`
            // output of an engine with the same compatibility hash, which names the directory);
            // the cache directory belongs to the backend (see `WasmConfig::cache_dir`), and
            // wasmtime still checks the header, version and engine configuration. Files are
            // replaced by rename, never modified in place, so the mapping stays valid.
            match unsafe { Module::deserialize_file(&engine, &path) } {
                Ok(module) => Some(module),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %render_error(&e), "discarding an unusable cached wasm module");
                    let _ = std::fs::remove_file(&path);
                    None
                }
            }
        });
        loaded
            .await
            .map_err(|join| LoadError::Internal(format!("the module loader thread failed: {join}")))
    }

    /// Writes the artifact to `path` (temporary file + rename) and loads it from there. If the disk
    /// write fails the module is still loaded from memory, and the failure logged.
    async fn save_to_disk(&self, path: PathBuf, compiled: Vec<u8>) -> Result<Module, LoadError> {
        let engine = self.engine.clone();
        let dir = self.dir.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let written = (|| -> std::io::Result<()> {
                let mut tmp = tempfile::Builder::new()
                    .prefix(".tmp-")
                    .suffix(".cwasm")
                    .tempfile_in(&dir)?;
                std::io::Write::write_all(&mut tmp, &compiled)?;
                tmp.as_file().sync_all()?;
                tmp.persist(&path).map_err(|e| e.error)?;
                Ok(())
            })();
            match written {
                // SAFETY: the file was just written from `precompile_module` output of this very
                // engine and is replaced only by rename (see `load_from_disk`).
                Ok(()) => match unsafe { Module::deserialize_file(&engine, &path) } {
                    Ok(module) => return Ok(module),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %render_error(&e), "cannot load a freshly cached wasm module; using the in-memory copy");
                    }
                },
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the wasm module cache; using the in-memory copy");
                }
            }
            // SAFETY: `compiled` is the unmodified output of `precompile_module` on this engine.
            unsafe { Module::deserialize(&engine, &compiled) }.map_err(|e| {
                LoadError::Internal(format!(
                    "cannot load a just-compiled module: {}",
                    render_error(&e)
                ))
            })
        });
        saved.await.map_err(|join| {
            LoadError::Internal(format!("the module writer thread failed: {join}"))
        })?
    }

    /// Checks that the module is a WASI command and resolves its imports.
    fn prepare(&self, module: &Module) -> Result<Arc<Prepared>, LoadError> {
        match module.get_export("_start") {
            Some(ExternType::Func(ty)) if ty.params().len() == 0 && ty.results().len() == 0 => {}
            Some(ExternType::Func(_)) => {
                return Err(LoadError::NotACommand(
                    "the module's `_start` function must take no parameters and return nothing"
                        .into(),
                ));
            }
            Some(_) => {
                return Err(LoadError::NotACommand(
                    "the module exports `_start`, but not as a function".into(),
                ));
            }
            None => {
                return Err(LoadError::NotACommand(
                    "the module has no `_start` export: only WASI preview 1 commands (programs with a `main`) \
                     can run, not reactors or libraries"
                        .into(),
                ));
            }
        }
        let start = module
            .get_export_index("_start")
            .ok_or_else(|| LoadError::Internal("the `_start` export has no index".into()))?;
        let pre = self
            .linker
            .instantiate_pre(module)
            .map_err(|e| LoadError::Link(render_error(&e)))?;
        Ok(Arc::new(Prepared { pre, start }))
    }
}
