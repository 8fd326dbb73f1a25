//! Builds the container helper (`src/helper/helper.c`): a tiny freestanding static executable
//! the worker embeds and runs from a sealed memfd as the container's init and the job's
//! launcher, so no process a job can see is backed by the worker's binary (see `src/helper.rs`).
//! It needs the C compiler the workspace already needs (the `cc` crate finds it; `CC` and
//! `CFLAGS` are honoured as usual) and the kernel's uapi headers (`linux-libc-dev`).

use std::path::PathBuf;

fn main() {
    let src = "src/helper/helper.c";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("nekton-container-helper");
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .opt_level(2)
        .get_compiler();
    let mut cmd = compiler.to_command();
    cmd.args([
        "-std=gnu11",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-ffreestanding",
        "-fno-builtin",
        "-fno-stack-protector",
        "-fno-asynchronous-unwind-tables",
        "-fno-pie",
        "-no-pie",
        "-static",
        "-nostdlib",
        "-nostartfiles",
        "-Wl,--build-id=none",
        "-Wl,-z,noexecstack",
        "-s",
        "-o",
    ])
    .arg(&out)
    .arg(src);
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run the C compiler for {src} ({e}): install gcc (or set CC)")
    });
    assert!(
        status.success(),
        "compiling {src} failed ({status}): see the compiler's output above"
    );
}
