//! Checks on module bytes: digests, the binary header, and full validation for uploads.

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

/// Checks that `bytes` start like a WebAssembly *core module* binary, saying what they are otherwise.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), String> {
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
        return Err(
            "this is a WebAssembly component (preview 2), not a core module: only WASI preview 1 \
                    core modules are supported"
                .into(),
        );
    }
    if version != CORE_MODULE_VERSION {
        return Err(format!(
            "unsupported WebAssembly binary version {:02x} {:02x} {:02x} {:02x} (expected a core module, 01 00 00 00)",
            version[0], version[1], version[2], version[3]
        ));
    }
    Ok(())
}

/// The WebAssembly proposals the backend's engine accepts: wasmtime's defaults (the Wasm 3.0
/// feature set) minus what this build of wasmtime leaves out — GC types and exceptions (no `gc`
/// cargo feature) and shared-memory threads (no `threads` cargo feature).
fn supported_features() -> WasmFeatures {
    WasmFeatures::WASM3
        & !(WasmFeatures::GC_TYPES | WasmFeatures::EXCEPTIONS | WasmFeatures::THREADS)
}

/// Checks an uploaded module before it is stored: size, binary header (rejecting WAT text and
/// components), full validation with the proposals the engine accepts, and the shape of a WASI
/// preview 1 command (a `_start` function taking and returning nothing; imports only from
/// `wasi_snapshot_preview1`). The error says what is wrong, for a 4xx response.
///
/// A module that passes can still fail at run time for reasons only the engine sees (an unknown
/// WASI function name, compile-time limits), which the job reports as `spec_error`.
pub fn validate_module(bytes: &[u8], max_bytes: usize) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("the module is empty".into());
    }
    if bytes.len() > max_bytes {
        return Err(format!(
            "the module is {} bytes, more than the {max_bytes} bytes allowed",
            bytes.len()
        ));
    }
    check_header(bytes)?;
    Validator::new_with_features(supported_features())
        .validate_all(bytes)
        .map_err(|e| format!("invalid WebAssembly module: {e}"))?;
    check_command_shape(bytes)
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
