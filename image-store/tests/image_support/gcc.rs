//! The files of a gcc image layer: the host's gcc driver, `cc1`, `collect2`, binutils' `as` and
//! `ld.bfd`, the shared libraries each of them loads (found with `ldd`), gcc's start files,
//! `libgcc` and its own headers, and what the programs it links need (the C library's start
//! files, `libc.so` + `libc_nonshared.a`, `libm`, the loader), taken from this host (Debian:
//! `apt-get install -y gcc libc6-dev`; scripts/setup-test.sh). Enough for
//! `gcc -o prog main.c [-lm]` on a program that needs no libc headers (the layer carries gcc's
//! freestanding headers, `stddef.h`, `stdarg.h`, …, not the C library's); no static linking
//! (`libc.a` is left out).
//!
//! Only std. It uses the [`Entry`] type of `tcc.rs`: the includer declares both, `tcc.rs` as a
//! module named `tcc` beside this one (`load-tests/src/grading.rs`):
//!
//! ```ignore
//! #[path = "../../image-store/tests/image_support/tcc.rs"]
//! mod tcc;
//! #[path = "../../image-store/tests/image_support/gcc.rs"]
//! mod gcc;
//! ```
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use super::tcc::{Entry, LIBDIR};

/// gcc's target triplet on Debian x86_64: its program and library directories are named by it.
pub const TRIPLET: &str = "x86_64-linux-gnu";

/// The layer's entries, read from this host; `Err` names what is missing and how to get it.
pub fn gcc_entries() -> Result<Vec<Entry>, String> {
    if std::env::consts::ARCH != "x86_64" {
        return Err(format!(
            "the gcc image is assembled from this host's x86_64 files; this host is {}",
            std::env::consts::ARCH
        ));
    }
    let version = gcc_version()?;
    let gccdir = format!("usr/lib/gcc/{TRIPLET}/{version}");
    let driver = format!("usr/bin/{TRIPLET}-gcc-{version}");
    let as_ = format!("usr/bin/{TRIPLET}-as");
    let ld = format!("usr/bin/{TRIPLET}-ld.bfd");
    let dir = |path: &str, mode: u32| Entry::Dir {
        path: format!("{path}/"),
        mode,
    };
    let symlink = |path: &str, target: &str| Entry::Symlink {
        path: path.to_string(),
        target: target.to_string(),
    };
    let file = |path: &str, mode: u32| -> Result<Entry, String> {
        Ok(Entry::File {
            data: host(&format!("/{path}"))?,
            path: path.to_string(),
            mode,
        })
    };

    let mut out = vec![
        dir("usr", 0o755),
        dir("usr/bin", 0o755),
        dir("usr/lib", 0o755),
        dir(LIBDIR, 0o755),
        dir("usr/lib/gcc", 0o755),
        dir(&format!("usr/lib/gcc/{TRIPLET}"), 0o755),
        dir(&gccdir, 0o755),
        symlink("lib", "usr/lib"),
        dir("lib64", 0o755),
        symlink(
            "lib64/ld-linux-x86-64.so.2",
            &format!("/{LIBDIR}/ld-linux-x86-64.so.2"),
        ),
        // gcc writes its intermediate files (`.s`, `.o`, the linker's `.res`) to $TMPDIR or /tmp.
        dir("tmp", 0o1777),
        dir("work", 0o777),
    ];

    // The programs, under their Debian names, and the names the driver looks for.
    for p in [&driver, &as_, &ld] {
        out.push(file(p, 0o755)?);
    }
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    out.push(symlink("usr/bin/gcc", &base(&driver)));
    out.push(symlink("usr/bin/cc", "gcc"));
    out.push(symlink("usr/bin/as", &base(&as_)));
    out.push(symlink(&format!("usr/bin/{TRIPLET}-ld"), &base(&ld)));
    out.push(symlink("usr/bin/ld", &format!("{TRIPLET}-ld")));

    // gcc's own programs and libraries.
    let programs = ["cc1", "collect2", "lto-wrapper"];
    for p in programs {
        out.push(file(&format!("{gccdir}/{p}"), 0o755)?);
    }
    for f in [
        "liblto_plugin.so",
        "crtbegin.o",
        "crtbeginS.o",
        "crtbeginT.o",
        "crtend.o",
        "crtendS.o",
        "libgcc.a",
        "libgcc_eh.a",
        "libgcc_s.so",
    ] {
        out.push(file(&format!("{gccdir}/{f}"), 0o644)?);
    }
    tree(&format!("{gccdir}/include"), &mut out)?;

    // The shared libraries every program loads, by file name (ldd's answer), plus what the
    // programs gcc links need: the C library, libm (its `libm.so` script names libmvec) and
    // libgcc_s (gcc's `libgcc_s.so` script names `libgcc_s.so.1`).
    let mut libs: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut binaries: Vec<String> = vec![driver.clone(), as_.clone(), ld.clone()];
    binaries.extend(programs.iter().map(|p| format!("{gccdir}/{p}")));
    binaries.push(format!("{gccdir}/liblto_plugin.so"));
    for b in &binaries {
        for lib in ldd(&format!("/{b}"))? {
            let name = base(&lib.to_string_lossy());
            libs.entry(name).or_insert(lib);
        }
    }
    for name in [
        "libc.so.6",
        "libm.so.6",
        "libmvec.so.1",
        "libgcc_s.so.1",
        "ld-linux-x86-64.so.2",
    ] {
        libs.entry(name.to_string())
            .or_insert_with(|| Path::new("/").join(LIBDIR).join(name));
    }
    for (name, from) in libs {
        out.push(Entry::File {
            data: host(&from.to_string_lossy())?,
            path: format!("{LIBDIR}/{name}"),
            mode: 0o755,
        });
    }
    // The C library's development files (libc6-dev): start files and linker scripts.
    for f in [
        "Scrt1.o",
        "crt1.o",
        "crti.o",
        "crtn.o",
        "libc.so",
        "libc_nonshared.a",
        "libm.so",
    ] {
        out.push(file(&format!("{LIBDIR}/{f}"), 0o644)?);
    }
    Ok(out)
}

/// A host file's bytes (symlinks followed); `Err` says which package provides it.
fn host(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "{path} is missing ({e}): the gcc image needs gcc, binutils and the C library's \
             development files (apt-get install -y gcc libc6-dev; scripts/setup-test.sh)"
        )
    })
}

/// The newest gcc under /usr/lib/gcc/x86_64-linux-gnu/ with both its `cc1` and its driver
/// `/usr/bin/x86_64-linux-gnu-gcc-N` (Debian 12: 12).
fn gcc_version() -> Result<String, String> {
    let root = format!("/usr/lib/gcc/{TRIPLET}");
    let listing = std::fs::read_dir(&root).map_err(|e| {
        format!("{root} is missing ({e}): apt-get install -y gcc (scripts/setup-test.sh)")
    })?;
    let mut best: Option<(u32, String)> = None;
    for entry in listing {
        let entry = entry.map_err(|e| format!("listing {root}: {e}"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(n) = name.parse::<u32>() else {
            continue;
        };
        let complete = Path::new(&root).join(&name).join("cc1").is_file()
            && Path::new(&format!("/usr/bin/{TRIPLET}-gcc-{name}")).is_file();
        if complete && best.as_ref().is_none_or(|(b, _)| n > *b) {
            best = Some((n, name));
        }
    }
    best.map(|(_, name)| name).ok_or_else(|| {
        format!(
            "no gcc under {root} with its cc1 and /usr/bin/{TRIPLET}-gcc-N: \
             apt-get install -y gcc (scripts/setup-test.sh)"
        )
    })
}

/// The shared libraries `binary` loads, as `ldd` resolves them on this host (the loader itself,
/// listed without `=>`, is added by the caller).
fn ldd(binary: &str) -> Result<Vec<PathBuf>, String> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("running ldd {binary}: {e} (ldd comes with libc-bin)"))?;
    if !out.status.success() {
        return Err(format!(
            "ldd {binary} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let Some((_, right)) = line.split_once("=> ") else {
            continue;
        };
        let path = right.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        } else {
            return Err(format!(
                "ldd {binary}: a library is not found on this host: {}",
                line.trim()
            ));
        }
    }
    Ok(libs)
}

/// `path` (relative to /) and everything below it, directories before what they hold, sorted.
fn tree(path: &str, out: &mut Vec<Entry>) -> Result<(), String> {
    let abs = format!("/{path}");
    out.push(Entry::Dir {
        path: format!("{path}/"),
        mode: 0o755,
    });
    let listing = std::fs::read_dir(&abs).map_err(|e| {
        format!("{abs} is missing ({e}): apt-get install -y gcc (scripts/setup-test.sh)")
    })?;
    let mut names = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| format!("listing {abs}: {e}"))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    for name in names {
        let rel = format!("{path}/{name}");
        let full = format!("/{rel}");
        let meta = std::fs::symlink_metadata(&full).map_err(|e| format!("{full}: {e}"))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full).map_err(|e| format!("{full}: {e}"))?;
            out.push(Entry::Symlink {
                path: rel,
                target: target.to_string_lossy().into_owned(),
            });
        } else if meta.is_dir() {
            tree(&rel, out)?;
        } else {
            out.push(Entry::File {
                data: host(&full)?,
                path: rel,
                mode: 0o644,
            });
        }
    }
    Ok(())
}
