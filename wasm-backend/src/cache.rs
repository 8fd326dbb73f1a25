//! Compiled modules, once per digest.
//!
//! Lookup order for a digest: the in-memory map (a ready [`InstancePre`]), then the on-disk cache
//! (`<cache_dir>/<engine hash>/<digest hex>.cwasm`, a core module or a component as the artifact's
//! header says, loaded with `deserialize_file`), and only then the [`ModuleStore`]. Bytes from the
//! store are bounded in size, checked against the digest, told apart by their header (core module
//! or component), and compiled on a blocking thread under a time limit; the artifact is written to
//! disk through a temporary file and a rename, so a crash never leaves a torn file.
//!
//! A component is checked before anything is instantiated: no import from `wasi:sockets` or
//! `wasi:http` (jobs have no network), and an export of `wasi:cli/run` (a command).
//!
//! Concurrent first loads of one digest share a single [`OnceCell`]: one fetch, one compile.
//! Failures that are the module's own (invalid, a component, not a command, too slow to compile)
//! are remembered so a bad module costs one compile, not one per job; failures of the store or the
//! host are not, so the next job retries.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use runtime_core::{ModuleStore, OutcomeReason};
use tokio::sync::OnceCell;
use wasmtime::component::Component;
use wasmtime::{Engine, ExternType, InstancePre, Module, ModuleExport, Precompiled};
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::classify::render_error;
use crate::run::{JobState, Linkers};
use crate::validate::{
    ModuleKind, check_header, digest_hex, module_digest, refused_component_import,
};
use crate::{WasmConfig, WasmError};

/// Above this many entries, remembered failures are forgotten (bounds the map against a flood of
/// distinct bad modules; compiled modules are always kept).
const PRUNE_FAILURES_ABOVE: usize = 4096;

/// A module or component ready to instantiate; imports resolved against the WASI linker once, so
/// instantiating is then cheap.
pub(crate) enum Prepared {
    /// A WASI preview 1 core module.
    Core {
        pre: InstancePre<JobState>,
        /// The `_start` export, looked up by index at run time (no string lookup per job).
        start: ModuleExport,
        /// Whether the module can find or use a preopened directory: it imports
        /// `fd_prestat_get` or a `path_*` function. One that cannot gets no default preopen
        /// (see [`uses_preopens`]).
        uses_preopens: bool,
    },
    /// A WASI 0.2 command component (`wasi:cli/run`).
    Component { pre: CommandPre<JobState> },
}

impl Prepared {
    /// Whether the program can find or use a preopened directory. A component always can: its
    /// preopens are only reachable through `wasi:filesystem/preopens`, so giving one to a
    /// component that does not import it changes nothing it can observe.
    pub(crate) fn uses_preopens(&self) -> bool {
        match self {
            Self::Core { uses_preopens, .. } => *uses_preopens,
            Self::Component { .. } => true,
        }
    }
}

/// A compiled artifact of either kind.
enum Compiled {
    Core(Module),
    Component(Component),
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
    #[error("the module cannot be linked against WASI: {0}")]
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
    linkers: Linkers,
    modules: Arc<dyn ModuleStore>,
    dir: PathBuf,
    max_module_bytes: usize,
    max_compile_time: Duration,
    entries: Mutex<HashMap<String, Slot>>,
    /// Compilations started (module store bytes handed to the compiler).
    compiles: AtomicU64,
}

impl ModuleCache {
    pub(crate) fn new(
        config: &WasmConfig,
        engine: Engine,
        linkers: Linkers,
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
            linkers,
            modules,
            dir,
            max_module_bytes: config.max_module_bytes,
            max_compile_time: config.max_compile_time,
            entries: Mutex::new(HashMap::new()),
            compiles: AtomicU64::new(0),
        })
    }

    /// How many compilations this cache started (a module loaded from memory or from the disk
    /// cache is not compiled again).
    pub(crate) fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
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
        if let Some(compiled) = self.load_from_disk(&path).await? {
            tracing::debug!(digest, path = %path.display(), "loaded compiled wasm module from the disk cache");
            return self.prepare(&compiled);
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
        let kind = check_header(&bytes).map_err(LoadError::NotAModule)?;

        let started = std::time::Instant::now();
        let engine = self.engine.clone();
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let compile = tokio::task::spawn_blocking(move || match kind {
            ModuleKind::Core => engine.precompile_module(&bytes),
            ModuleKind::Component => engine.precompile_component(&bytes),
        });
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
        tracing::info!(digest, ?kind, elapsed = ?started.elapsed(), size = compiled.len(), "compiled wasm module");
        let compiled = self.save_to_disk(path, kind, compiled).await?;
        self.prepare(&compiled)
    }

    /// Loads `path` if it exists. A file that wasmtime refuses (another wasmtime build, damage) is
    /// removed and reported as absent, so the module is compiled again.
    async fn load_from_disk(&self, path: &Path) -> Result<Option<Compiled>, LoadError> {
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
            // The artifact's header says whether it is a module or a component (a file that is
            // neither is tried as a module, which fails and is discarded below).
            let kind = match Engine::detect_precompiled_file(&path) {
                Ok(Some(Precompiled::Component)) => ModuleKind::Component,
                _ => ModuleKind::Core,
            };
            // SAFETY: `deserialize_file` trusts the file to be a wasmtime artifact. Files in this
            // directory are written only by `save_to_disk` (atomically, from `precompile_*`
            // output of an engine with the same compatibility hash, which names the directory);
            // the cache directory belongs to the backend (see `WasmConfig::cache_dir`), and
            // wasmtime still checks the header, version, kind and engine configuration. Files are
            // replaced by rename, never modified in place, so the mapping stays valid.
            let loaded = unsafe { deserialize_file(&engine, kind, &path) };
            match loaded {
                Ok(compiled) => Some(compiled),
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
    async fn save_to_disk(
        &self,
        path: PathBuf,
        kind: ModuleKind,
        compiled: Vec<u8>,
    ) -> Result<Compiled, LoadError> {
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
                // SAFETY: the file was just written from `precompile_*` output of this very
                // engine and is replaced only by rename (see `load_from_disk`).
                Ok(()) => match unsafe { deserialize_file(&engine, kind, &path) } {
                    Ok(compiled) => return Ok(compiled),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %render_error(&e), "cannot load a freshly cached wasm module; using the in-memory copy");
                    }
                },
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the wasm module cache; using the in-memory copy");
                }
            }
            let loaded = match kind {
                ModuleKind::Core => {
                    // SAFETY: `compiled` is the unmodified output of `precompile_module` on this
                    // engine.
                    unsafe { Module::deserialize(&engine, &compiled) }.map(Compiled::Core)
                }
                ModuleKind::Component => {
                    // SAFETY: `compiled` is the unmodified output of `precompile_component` on
                    // this engine.
                    unsafe { Component::deserialize(&engine, &compiled) }.map(Compiled::Component)
                }
            };
            loaded.map_err(|e| {
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

    fn prepare(&self, compiled: &Compiled) -> Result<Arc<Prepared>, LoadError> {
        match compiled {
            Compiled::Core(module) => self.prepare_module(module),
            Compiled::Component(component) => self.prepare_component(component),
        }
    }

    /// Checks that the component is a WASI 0.2 command without network imports and resolves its
    /// imports.
    fn prepare_component(&self, component: &Component) -> Result<Arc<Prepared>, LoadError> {
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.engine) {
            if let Some(refused) = refused_component_import(name) {
                return Err(LoadError::NotACommand(refused));
            }
        }
        let pre = self
            .linkers
            .component
            .instantiate_pre(component)
            .map_err(|e| LoadError::Link(render_error(&e)))?;
        let pre = CommandPre::new(pre).map_err(|e| {
            LoadError::NotACommand(format!(
                "the component is not a WASI 0.2 command (it must export `wasi:cli/run@0.2.x`, as \
                 programs built for wasm32-wasip2 do): {}",
                render_error(&e)
            ))
        })?;
        Ok(Arc::new(Prepared::Component { pre }))
    }

    /// Checks that the module is a WASI command and resolves its imports.
    fn prepare_module(&self, module: &Module) -> Result<Arc<Prepared>, LoadError> {
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
            .linkers
            .core
            .instantiate_pre(module)
            .map_err(|e| LoadError::Link(render_error(&e)))?;
        Ok(Arc::new(Prepared::Core {
            pre,
            start,
            uses_preopens: uses_preopens(module),
        }))
    }
}

/// Whether a core module can find or use a preopened directory. In preview 1 a program learns
/// its preopens with `fd_prestat_get` and reaches files only through the `path_*` calls; one
/// that imports neither (wasi-libc links them only into programs that open paths) can do
/// nothing with a preopen but stumble on an unexpected descriptor 3. Such a program gets none
/// by default, as under a runtime given no `--dir`.
pub(crate) fn uses_preopens(module: &Module) -> bool {
    module.imports().any(|import| {
        import.module() == "wasi_snapshot_preview1"
            && (import.name() == "fd_prestat_get" || import.name().starts_with("path_"))
    })
}

/// Loads an artifact of `kind` written by `save_to_disk`.
///
/// # Safety
/// As for [`Module::deserialize_file`]: `path` must hold `precompile_*` output of an engine with
/// the same configuration, and must not be modified while mapped.
unsafe fn deserialize_file(
    engine: &Engine,
    kind: ModuleKind,
    path: &Path,
) -> wasmtime::Result<Compiled> {
    // SAFETY: forwarded to the caller.
    unsafe {
        match kind {
            ModuleKind::Core => Module::deserialize_file(engine, path).map(Compiled::Core),
            ModuleKind::Component => {
                Component::deserialize_file(engine, path).map(Compiled::Component)
            }
        }
    }
}
