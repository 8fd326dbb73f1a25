//! Static C probes for the hostile-job tests: every `tests/hostile/*.c` is compiled once per
//! test binary with `gcc -static` into a temp dir, and [`probes_layer`] puts them into an image
//! layer (`/probe/<name>`, plus `/probe/probe-suid`, a setuid-root copy of `probe`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::image_support::TarBuilder;

fn build_dir() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, Vec<PathBuf>)> = OnceLock::new();
    let (dir, _) = DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("nkprobe")
            .tempdir()
            .unwrap();
        // From container-backend's tests and from other crates' tests that include this module.
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let src = [
            manifest.join("tests/hostile"),
            manifest.join("../container-backend/tests/hostile"),
        ]
        .into_iter()
        .find(|p| p.is_dir())
        .expect("container-backend/tests/hostile (the probe sources) not found");
        let mut built = Vec::new();
        for e in std::fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
            let path = e.unwrap().path();
            if path.extension().is_none_or(|x| x != "c") {
                continue;
            }
            let out = dir.path().join(path.file_stem().unwrap());
            let result = std::process::Command::new("gcc")
                .args(["-static", "-O1", "-Wall", "-Werror", "-pthread", "-o"])
                .arg(&out)
                .arg(&path)
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "the hostile-job tests compile C probes and need gcc with a static libc \
                         (run scripts/setup.sh, or apt-get install gcc libc6-dev): {e}"
                    )
                });
            assert!(
                result.status.success(),
                "gcc -static {} failed (needs gcc and libc6-dev: scripts/setup.sh):\n{}",
                path.display(),
                String::from_utf8_lossy(&result.stderr)
            );
            built.push(out);
        }
        (dir, built)
    });
    dir.path()
}

/// The bytes of the compiled probe `name` (`tests/hostile/<name>.c`).
pub fn probe_binary(name: &str) -> Vec<u8> {
    let p = build_dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("probe {}: {e}", p.display()))
}

/// A layer with `/probe/probe` (0755) and `/probe/probe-suid` (setuid root, 04755).
pub fn probes_layer() -> Vec<u8> {
    let probe = probe_binary("probe");
    TarBuilder::new()
        .dir("probe/", 0o755)
        .file("probe/probe", &probe, 0o755)
        .file("probe/probe-suid", &probe, 0o4755)
        .finish()
}

/// Parses `name=RESULT` lines.
pub fn results(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
