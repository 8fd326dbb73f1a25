//! Builds the test component (`component.rs` beside this file) for `wasm32-wasip2` with the
//! toolchain's `rustc`. Shared by `wasm-backend/tests/components.rs` and
//! `services/tests/components.rs` (included with `#[path]`), so the two suites run the same guest.

use std::path::Path;

/// The component's bytes, built into `out_dir` (a test target's `CARGO_TARGET_TMPDIR`); `tag`
/// keeps concurrent test binaries' outputs apart. Fails the test, naming the missing target,
/// when it cannot be built.
pub fn build_component(out_dir: &Path, tag: &str) -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("wasm-backend/tests/guests/component.rs");
    let out = out_dir.join(format!("{tag}-component-{}.wasm", std::process::id()));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = std::process::Command::new(rustc)
        .args(["--edition", "2021", "-O", "--target", "wasm32-wasip2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run rustc");
    assert!(
        status.success(),
        "cannot build the test component: the wasm32-wasip2 target is needed \
         (`rustup target add wasm32-wasip2`, done by scripts/setup-test.sh)"
    );
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    bytes
}
