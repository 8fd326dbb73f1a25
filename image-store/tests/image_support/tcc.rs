//! The files of a C compiler image layer: tcc and what it and the programs it builds need at run
//! time, taken from this host (`apt-get install -y tcc libc6-dev`; scripts/setup-test.sh). Only
//! std: included with `#[path]` by `services/tests/grading_containers.rs` (with the test
//! `TarBuilder`) and by `load-tests/src/grading.rs` (with `tar::Builder`), so both build the same
//! image.
#![allow(dead_code)]

use std::path::Path;

/// Where Debian keeps the C library and tcc's own files (x86_64).
pub const LIBDIR: &str = "usr/lib/x86_64-linux-gnu";

/// One entry of the layer, in order (directories before what they hold). Paths are relative.
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// The layer's entries, read from this host; `Err` names what is missing and how to get it.
pub fn tcc_entries() -> Result<Vec<Entry>, String> {
    if std::env::consts::ARCH != "x86_64" {
        return Err(format!(
            "the compiler image is assembled from this host's x86_64 files; this host is {}",
            std::env::consts::ARCH
        ));
    }
    let host = |p: &str| -> Result<Vec<u8>, String> {
        std::fs::read(Path::new("/").join(p)).map_err(|e| {
            format!(
                "/{p} is missing ({e}): the C compiler image needs tcc and the C library's \
                 development files (apt-get install -y tcc libc6-dev; scripts/setup-test.sh)"
            )
        })
    };
    let dir = |path: &str, mode: u32| Entry::Dir {
        path: path.to_string(),
        mode,
    };
    let mut out = vec![
        dir("usr/", 0o755),
        dir("usr/bin/", 0o755),
        dir("usr/lib/", 0o755),
        dir(&format!("{LIBDIR}/"), 0o755),
        dir(&format!("{LIBDIR}/tcc/"), 0o755),
        dir(&format!("{LIBDIR}/tcc/include/"), 0o755),
        Entry::File {
            path: "usr/bin/tcc".into(),
            data: host("usr/bin/tcc")?,
            mode: 0o755,
        },
        Entry::Symlink {
            path: "lib".into(),
            target: "usr/lib".into(),
        },
        dir("lib64/", 0o755),
        Entry::Symlink {
            path: "lib64/ld-linux-x86-64.so.2".into(),
            target: format!("/{LIBDIR}/ld-linux-x86-64.so.2"),
        },
    ];
    for lib in [
        "libc.so.6",
        "libm.so.6",
        "libpthread.so.0",
        "libdl.so.2",
        "ld-linux-x86-64.so.2",
        "crt1.o",
        "crti.o",
        "crtn.o",
        "libc.so",
        "libc_nonshared.a",
    ] {
        let path = format!("{LIBDIR}/{lib}");
        out.push(Entry::File {
            data: host(&path)?,
            path,
            mode: 0o755,
        });
    }
    for f in ["libtcc1.a", "bcheck.o", "bt-exe.o", "bt-log.o"] {
        let path = format!("{LIBDIR}/tcc/{f}");
        out.push(Entry::File {
            data: host(&path)?,
            path,
            mode: 0o644,
        });
    }
    let include = format!("/{LIBDIR}/tcc/include");
    let listing = std::fs::read_dir(&include).map_err(|e| {
        format!("{include} is missing ({e}): apt-get install -y tcc (scripts/setup-test.sh)")
    })?;
    let mut names = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| format!("listing {include}: {e}"))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    for name in names {
        let path = format!("{LIBDIR}/tcc/include/{name}");
        out.push(Entry::File {
            data: host(&path)?,
            path,
            mode: 0o644,
        });
    }
    out.push(dir("work/", 0o777));
    Ok(out)
}
