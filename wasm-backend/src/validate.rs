//! Checks on module bytes: digests, the binary header (core module or component), and full
//! validation for uploads.

use sha2::{Digest, Sha256};
use wasmparser::{Parser, Payload, Validator, WasmFeatures};

/// The `\0asm` magic every WebAssembly binary starts with.
const MAGIC: &[u8; 4] = b"\0asm";
/// Version and layer of a core module (`01 00 00 00`).
const CORE_MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
/// Version and layer of a component (`0d 00 01 00`).
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];

/// The digest naming a module: `sha256:<64 lowercase hex digits>` of its bytes.
pub fn module_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Returns the hex part of a well-formed `sha256:<64 lowercase hex>` digest.
pub(crate) fn digest_hex(digest: &str) -> Result<&str, String> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        format!("module digest {digest:?} is not of the form sha256:<64 lowercase hex digits>")
    })?;
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(hex)
    } else {
        Err(format!(
            "module digest {digest:?} is not of the form sha256:<64 lowercase hex digits>"
        ))
    }
}

/// What a WebAssembly binary is, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// A core module: a WASI preview 1 command exporting `_start`.
    Core,
    /// A component: a WASI 0.2 command exporting `wasi:cli/run`.
    Component,
}

/// The interface families a component may not import: jobs get no network.
const REFUSED_INTERFACES: [&str; 2] = ["wasi:sockets/", "wasi:http/"];
/// The WASI 0.2 packages the backend provides to components (besides the refused ones).
const PROVIDED_PACKAGES: [&str; 5] = [
    "wasi:io/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:random/",
    "wasi:cli/",
];
/// The export that makes a component a command.
const RUN_EXPORT: &str = "wasi:cli/run@0.2.";

/// Why a component may not import `name`, if it may not: the network interfaces are refused,
/// whatever the linker could provide.
pub(crate) fn refused_component_import(name: &str) -> Option<String> {
    REFUSED_INTERFACES.iter().any(|p| name.starts_with(p)).then(|| {
        format!(
            "the component imports `{name}`, but jobs have no network: `wasi:sockets` and              `wasi:http` are not provided; build the program without networking"
        )
    })
}

/// Checks that `bytes` start like a WebAssembly binary (core module or component), saying what
/// they are otherwise.
pub(crate) fn check_header(bytes: &[u8]) -> Result<ModuleKind, String> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        let trimmed = bytes.trim_ascii_start();
        if trimmed.starts_with(b"(module")
            || trimmed.starts_with(b"(component")
            || trimmed.starts_with(b";;")
        {
            return Err(
                "the bytes look like WebAssembly text (WAT), not a binary module; compile it with \
                        `wasm-tools parse` or `wat2wasm` first"
                    .into(),
            );
        }
        if bytes.len() < 8 && bytes.starts_with(&MAGIC[..bytes.len().min(4)]) && !bytes.is_empty() {
            return Err(format!(
                "the module is truncated: {} bytes, shorter than the 8-byte header",
                bytes.len()
            ));
        }
        return Err(
            "not a WebAssembly binary: it does not start with the \\0asm magic bytes".into(),
        );
    }
    let version = [bytes[4], bytes[5], bytes[6], bytes[7]];
    if version == COMPONENT_VERSION {
        return Ok(ModuleKind::Component);
    }
    if version != CORE_MODULE_VERSION {
        return Err(format!(
            "unsupported WebAssembly binary version {:02x} {:02x} {:02x} {:02x} (expected a core \
             module, 01 00 00 00, or a component, 0d 00 01 00)",
            version[0], version[1], version[2], version[3]
        ));
    }
    Ok(ModuleKind::Core)
}

/// The WebAssembly proposals the backend's engine accepts: wasmtime's defaults (the Wasm 3.0
/// feature set) minus what this build of wasmtime leaves out — GC types and exceptions (no `gc`
/// cargo feature) and shared-memory threads (no `threads` cargo feature).
fn supported_features() -> WasmFeatures {
    WasmFeatures::WASM3
        & !(WasmFeatures::GC_TYPES | WasmFeatures::EXCEPTIONS | WasmFeatures::THREADS)
}

/// Checks an uploaded module before it is stored: size, binary header (rejecting WAT text), full
/// validation with the proposals the engine accepts, and the shape of a command. A core module
/// must be a WASI preview 1 command (a `_start` function taking and returning nothing; imports
/// only from `wasi_snapshot_preview1`); a component a WASI 0.2 command (exporting
/// `wasi:cli/run@0.2.x`; importing only `wasi:io`, `wasi:clocks`, `wasi:filesystem`,
/// `wasi:random` and `wasi:cli` — never `wasi:sockets` or `wasi:http`). Returns what the bytes
/// are; the error says what is wrong, for a 4xx response.
///
/// A module that passes can still fail at run time for reasons only the engine sees (an unknown
/// WASI function name or interface version, compile-time limits), which the job reports as
/// `spec_error`.
pub fn validate_module(bytes: &[u8], max_bytes: usize) -> Result<ModuleKind, String> {
    if bytes.is_empty() {
        return Err("the module is empty".into());
    }
    if bytes.len() > max_bytes {
        return Err(format!(
            "the module is {} bytes, more than the {max_bytes} bytes allowed",
            bytes.len()
        ));
    }
    match check_header(bytes)? {
        ModuleKind::Core => {
            Validator::new_with_features(supported_features())
                .validate_all(bytes)
                .map_err(|e| format!("invalid WebAssembly module: {e}"))?;
            check_command_shape(bytes)?;
            Ok(ModuleKind::Core)
        }
        ModuleKind::Component => {
            Validator::new_with_features(supported_features() | WasmFeatures::COMPONENT_MODEL)
                .validate_all(bytes)
                .map_err(|e| format!("invalid WebAssembly component: {e}"))?;
            check_component_shape(bytes)?;
            Ok(ModuleKind::Component)
        }
    }
}

/// Checks the top-level imports and exports of an already validated component.
fn check_component_shape(bytes: &[u8]) -> Result<(), String> {
    let invalid = |e: wasmparser::BinaryReaderError| format!("invalid WebAssembly component: {e}");
    // Nested modules and components have their own header and end; only depth 1 is the
    // component's own interface.
    let mut depth = 0usize;
    let mut runs = false;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let name = import.map_err(invalid)?.name.name;
                    if let Some(refused) = refused_component_import(name) {
                        return Err(refused);
                    }
                    if !PROVIDED_PACKAGES.iter().any(|p| name.starts_with(p)) {
                        return Err(format!(
                            "the component imports `{name}`, but only the WASI 0.2 command \
                             interfaces (wasi:io, wasi:clocks, wasi:filesystem, wasi:random, \
                             wasi:cli) are provided"
                        ));
                    }
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    if export.name.name.starts_with(RUN_EXPORT)
                        && export.kind == wasmparser::ComponentExternalKind::Instance
                    {
                        runs = true;
                    }
                }
            }
            _ => {}
        }
    }
    if runs {
        Ok(())
    } else {
        Err(
            "the component does not export `wasi:cli/run@0.2.x`: only WASI 0.2 commands \
             (programs with a `main`, e.g. built for wasm32-wasip2) can run, not libraries"
                .into(),
        )
    }
}

/// Checks imports and the `_start` export of an already validated module.
fn check_command_shape(bytes: &[u8]) -> Result<(), String> {
    let mut func_types: Vec<(usize, usize)> = Vec::new(); // (params, results) per type index
    let mut func_type_of: Vec<u32> = Vec::new(); // type index per function index (imports first)
    let mut start: Option<u32> = None;
    let invalid = |e: wasmparser::BinaryReaderError| format!("invalid WebAssembly module: {e}");
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for sub in group.map_err(invalid)?.into_types() {
                        match &sub.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => {
                                func_types.push((f.params().len(), f.results().len()))
                            }
                            // Not a function type: never the type of `_start`.
                            _ => func_types.push((usize::MAX, usize::MAX)),
                        }
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(invalid)?;
                    if import.module != "wasi_snapshot_preview1" {
                        return Err(format!(
                            "the module imports `{}::{}`, but only WASI preview 1 (`wasi_snapshot_preview1`) \
                             functions are provided",
                            import.module, import.name
                        ));
                    }
                    if let wasmparser::TypeRef::Func(ty) = import.ty {
                        func_type_of.push(ty);
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    func_type_of.push(ty.map_err(invalid)?);
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    if export.name == "_start" {
                        if export.kind != wasmparser::ExternalKind::Func {
                            return Err("the module exports `_start`, but not as a function".into());
                        }
                        start = Some(export.index);
                    }
                }
            }
            _ => {}
        }
    }
    let Some(start) = start else {
        return Err(
            "the module has no `_start` export: only WASI preview 1 commands (programs with a \
                    `main`) can run, not reactors or libraries"
                .into(),
        );
    };
    let shape = usize::try_from(start)
        .ok()
        .and_then(|i| func_type_of.get(i))
        .and_then(|ty| usize::try_from(*ty).ok())
        .and_then(|ty| func_types.get(ty));
    match shape {
        Some((0, 0)) => Ok(()),
        _ => {
            Err("the module's `_start` function must take no parameters and return nothing".into())
        }
    }
}
