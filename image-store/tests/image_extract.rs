//! Layer extraction through the store (`ImageStore::unpack_layer`), as root: normal layers,
//! whiteouts, and hostile layers — each refused with an error naming the entry, with nothing
//! written outside the store and nothing half-written inside it.

mod image_support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use image_store::{Digest, ExtractError, ImageError, ImageStore, LayerInfo, StoreLimits};
use image_support::*;

struct Fixture {
    tmp: tempfile::TempDir,
    store: ImageStore,
    sentinel: PathBuf,
}

fn fixture() -> Fixture {
    fixture_with(StoreLimits::default())
}

fn fixture_with(limits: StoreLimits) -> Fixture {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let sentinel = tmp.path().join("sentinel");
    fs::create_dir(&sentinel).unwrap();
    fs::write(sentinel.join("keep"), b"original").unwrap();
    let store = ImageStore::open(tmp.path().join("store"), limits).unwrap();
    Fixture {
        tmp,
        store,
        sentinel,
    }
}

impl Fixture {
    fn unpack(&self, blob: &[u8]) -> (Digest, Result<LayerInfo, ImageError>) {
        let d = self.store.put_blob(blob).unwrap();
        let r = self.store.unpack_layer(&d);
        (d, r)
    }

    fn unpack_ok(&self, blob: &[u8]) -> (PathBuf, LayerInfo) {
        let (d, r) = self.unpack(blob);
        let info = r.unwrap_or_else(|e| panic!("layer refused: {e}"));
        (self.store.layer_rootfs(&d), info)
    }

    fn assert_untouched(&self) {
        assert_eq!(tree(&self.sentinel), vec!["keep".to_string()]);
        assert_eq!(fs::read(self.sentinel.join("keep")).unwrap(), b"original");
        assert_eq!(
            tree(&self.store.root().join("tmp")),
            Vec::<String>::new(),
            "temp leftovers"
        );
    }

    /// Unpacks `blob`, expects an error about `entry`, and checks that nothing was left behind.
    fn refused(&self, blob: &[u8], entry: &str) -> String {
        let (d, r) = self.unpack(blob);
        let err = r.expect_err("hostile layer accepted");
        match &err {
            ImageError::Layer { source, .. } => {
                assert_eq!(source.entry(), Some(entry), "{err}");
                assert!(source.is_refusal(), "{err}");
            }
            other => panic!("unexpected error: {other}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(entry), "{msg}");
        assert!(!self.store.has_layer(&d));
        assert_eq!(
            tree(&self.store.root().join("layers")),
            Vec::<String>::new()
        );
        self.assert_untouched();
        msg
    }
}

fn meta(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn normal_layer_keeps_files_dirs_links_modes_and_owners() {
    let f = fixture();
    let mut t = TarBuilder::new();
    t.dir("./", 0o755)
        .dir("usr/", 0o755)
        .dir("usr/bin/", 0o750)
        .file_owned(
            "usr/bin/tool",
            b"#!/bin/sh\necho tool\n",
            0o4755,
            1000,
            1001,
        )
        .file("etc/conf", b"key=value\n", 0o640)
        .symlink("bin", "usr/bin")
        .symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
        .hardlink("usr/bin/tool2", "usr/bin/tool")
        .fifo("run/fifo")
        .pax(&[
            ("SCHILY.xattr.user.test", b"hello"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ])
        .file("usr/bin/withx", b"x", 0o644);
    let tar = t.finish();
    let (root, info) = f.unpack_ok(&tar);

    assert_eq!(info.diff_id.to_string(), sha(&tar));
    assert_eq!(
        fs::read(root.join("usr/bin/tool")).unwrap(),
        b"#!/bin/sh\necho tool\n"
    );
    let tool = meta(&root.join("usr/bin/tool"));
    assert_eq!(tool.mode() & 0o7777, 0o4755, "setuid bit kept as data");
    assert_eq!((tool.uid(), tool.gid()), (1000, 1001));
    assert_eq!(tool.mtime(), MTIME as i64);
    assert_eq!(meta(&root.join("etc/conf")).mode() & 0o7777, 0o640);
    assert_eq!(meta(&root.join("usr/bin")).mode() & 0o7777, 0o750);
    assert_eq!(
        meta(&root.join("usr")).mtime(),
        MTIME as i64,
        "dir mtimes set last"
    );
    // `etc` had no entry: created 0755 root.
    let etc = meta(&root.join("etc"));
    assert_eq!((etc.mode() & 0o7777, etc.uid()), (0o755, 0));
    assert_eq!(
        fs::read_link(root.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert_eq!(
        fs::read_link(root.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/UTC"),
        "absolute symlinks are stored as they are"
    );
    let tool2 = meta(&root.join("usr/bin/tool2"));
    assert_eq!(tool2.ino(), tool.ino(), "hardlink");
    assert_eq!(meta(&root.join("usr/bin/tool")).nlink(), 2);
    assert!(!root.join("run/fifo").exists());
    assert_eq!(info.skipped_total, 1);
    assert_eq!(info.skipped[0].path, "run/fifo");
    assert_eq!(
        xattr(&root.join("usr/bin/withx"), "user.test").unwrap(),
        b"hello"
    );
    assert!(xattr(&root.join("usr/bin/withx"), "trusted.overlay.redirect").is_none());
    assert_eq!(info.xattrs_dropped, 1);
    assert_eq!(info.entries, 10, "the PAX header is not an entry");

    // Extracted once: a second unpack returns the record without touching the tree.
    assert_eq!(f.store.unpack_layer(&info.digest).unwrap(), info);
    f.assert_untouched();
}

#[test]
fn gzip_zstd_and_plain_layers_give_the_same_tree_and_diff_id() {
    let f = fixture();
    let tar = TarBuilder::new()
        .dir("a/", 0o755)
        .file("a/b", b"same", 0o644)
        .symlink("c", "a/b")
        .finish();
    for blob in [tar.clone(), gzip(&tar), zstd(&tar)] {
        let (root, info) = f.unpack_ok(&blob);
        assert_eq!(info.diff_id.to_string(), sha(&tar));
        assert_eq!(fs::read(root.join("c")).unwrap(), b"same");
    }
}

#[test]
fn whiteouts_become_overlay_whiteouts_and_opaque_dirs() {
    let f = fixture();
    let tar = TarBuilder::new()
        .file(".wh.gone", b"", 0o644)
        .dir("d/", 0o755)
        .file("d/.wh..wh..opq", b"", 0o644)
        .file("d/new", b"n", 0o644)
        .file("e/.wh.x", b"", 0o644)
        // A file of this layer is not deleted by a whiteout of the same name.
        .file("f", b"kept", 0o644)
        .file(".wh.f", b"", 0o644)
        // A directory of this layer replaces the lower one: it becomes opaque.
        .dir("g/", 0o755)
        .file(".wh.g", b"", 0o644)
        .file(".wh..wh.plnk", b"", 0o644)
        .finish();
    let (root, info) = f.unpack_ok(&gzip(&tar));
    for w in ["gone", "e/x"] {
        let m = meta(&root.join(w));
        assert!(m.file_type().is_char_device(), "{w} is not a whiteout");
        assert_eq!(m.rdev(), 0, "{w}: whiteouts are 0/0 devices");
    }
    assert_eq!(
        xattr(&root.join("d"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert_eq!(
        xattr(&root.join("g"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert!(xattr(&root.join("e"), "trusted.overlay.opaque").is_none());
    assert_eq!(fs::read(root.join("f")).unwrap(), b"kept");
    assert_eq!(fs::read(root.join("d/new")).unwrap(), b"n");
    assert!(!root.join(".wh.gone").exists() && !root.join("d/.wh..wh..opq").exists());
    assert_eq!(info.whiteouts, vec!["e/x", "gone"]);
    assert_eq!(info.opaque_dirs, vec!["d", "g"]);
    assert_eq!(info.skipped[0].path, ".wh..wh.plnk");
}

#[test]
fn later_entries_replace_earlier_ones() {
    let f = fixture();
    let tar = TarBuilder::new()
        .file("a", b"file", 0o644)
        .dir("a/", 0o700)
        .dir("s/", 0o755)
        .file("s/child", b"c", 0o644)
        .symlink("s", "a")
        .file("w/.wh.z", b"", 0o644)
        .file("w", b"now a file", 0o644)
        .file("x", b"old", 0o644)
        .file("x", b"new", 0o600)
        .finish();
    let (root, info) = f.unpack_ok(&tar);
    assert!(meta(&root.join("a")).is_dir());
    assert_eq!(fs::read_link(root.join("s")).unwrap(), Path::new("a"));
    assert_eq!(fs::read(root.join("w")).unwrap(), b"now a file");
    assert!(info.whiteouts.is_empty(), "{:?}", info.whiteouts);
    assert_eq!(fs::read(root.join("x")).unwrap(), b"new");
}

#[test]
fn refuses_dotdot_paths() {
    let f = fixture();
    let tar = TarBuilder::new()
        .file("ok", b"fine", 0o644)
        .dir("dir/", 0o755)
        .file("../../x", b"evil", 0o644)
        .finish();
    let msg = f.refused(&tar, "../../x");
    assert!(msg.contains("`..`"), "{msg}");
    // Relative to the temp extraction dir, this is the sentinel directory.
    let tar = TarBuilder::new()
        .file("../../../../sentinel/x", b"evil", 0o644)
        .finish();
    f.refused(&tar, "../../../../sentinel/x");
    let tar = TarBuilder::new().file("a/../../x", b"evil", 0o644).finish();
    f.refused(&tar, "a/../../x");
    assert!(!f.tmp.path().join("x").exists());
    assert!(!f.store.root().join("x").exists());
}

#[test]
fn refuses_absolute_paths() {
    let f = fixture();
    let host = format!("/etc/nekton-escape-{}", std::process::id());
    let tar = TarBuilder::new().file(&host, b"evil", 0o644).finish();
    let msg = f.refused(&tar, &host);
    assert!(msg.contains("absolute"), "{msg}");
    assert!(!Path::new(&host).exists());
    let into_sentinel = format!("{}/x", f.sentinel.display());
    let tar = TarBuilder::new()
        .file(&into_sentinel, b"evil", 0o644)
        .finish();
    f.refused(&tar, &into_sentinel);
}

#[test]
fn refuses_writing_through_an_absolute_symlink() {
    let f = fixture();
    let target = f.sentinel.display().to_string();
    let tar = TarBuilder::new()
        .symlink("evil", &target)
        .file("evil/pwned", b"evil", 0o644)
        .finish();
    let msg = f.refused(&gzip(&tar), "evil/pwned");
    assert!(msg.contains("`evil` is a symlink"), "{msg}");
    // Deeper, and with a hardlink and a directory through the link.
    let tar = TarBuilder::new()
        .symlink("evil", &target)
        .file("evil/sub/pwned", b"evil", 0o644)
        .finish();
    f.refused(&tar, "evil/sub/pwned");
    let tar = TarBuilder::new()
        .file("real", b"x", 0o644)
        .symlink("evil", &target)
        .hardlink("evil/linked", "real")
        .finish();
    f.refused(&tar, "evil/linked");
    let tar = TarBuilder::new()
        .symlink("etc", "/etc")
        .file("etc/cron.d/pwned", b"* * * * * root id\n", 0o644)
        .finish();
    f.refused(&tar, "etc/cron.d/pwned");
    assert!(!Path::new("/etc/cron.d/pwned").exists());
}

#[test]
fn keeps_relative_symlinks_that_climb_but_refuses_writes_through_any_symlink() {
    let f = fixture();
    // The link is data and is kept; what is refused is writing through it.
    let tar = TarBuilder::new()
        .dir("a/", 0o755)
        .symlink("a/up", "../../../../sentinel")
        .file("a/up/pwned", b"evil", 0o644)
        .finish();
    let msg = f.refused(&tar, "a/up/pwned");
    assert!(msg.contains("`a/up` is a symlink"), "{msg}");
    // A symlink that stays inside is kept, but nothing is written through it either.
    let tar = TarBuilder::new()
        .dir("a/", 0o755)
        .symlink("link", "a")
        .file("link/x", b"x", 0o644)
        .finish();
    f.refused(&tar, "link/x");
    // Nor through a link to the layer root's parent, nor by hardlinking via one.
    let tar = TarBuilder::new()
        .symlink("up", "..")
        .file("up/sentinel/keep", b"evil", 0o644)
        .finish();
    let msg = f.refused(&tar, "up/sentinel/keep");
    assert!(msg.contains("`up` is a symlink"), "{msg}");
    let tar = TarBuilder::new()
        .symlink("up", "../..")
        .hardlink("passwd", "up/etc/passwd")
        .finish();
    let msg = f.refused(&tar, "passwd");
    assert!(msg.contains("symlink"), "{msg}");
}

#[test]
fn keeps_symlinks_of_real_images_with_their_exact_targets() {
    let f = fixture();
    let mut t = TarBuilder::new();
    t.dir("./", 0o755);
    let tar = add_real_world_links(&mut t).finish();
    let (root, info) = f.unpack_ok(&tar);
    assert_eq!(
        info.entries as usize,
        1 + REAL_WORLD_FILES.len() + REAL_WORLD_LINKS.len()
    );
    assert_real_world_links(&root);
    // Links that stay inside the layer resolve there on the host too.
    assert_eq!(
        fs::read(root.join("etc/ssl/cert.pem")).unwrap(),
        b"certificates\n"
    );
    f.assert_untouched();
}

#[test]
fn refuses_hardlinks_outside_the_layer() {
    let f = fixture();
    let before = meta(Path::new("/etc/passwd"));
    let tar = TarBuilder::new().hardlink("passwd", "/etc/passwd").finish();
    let msg = f.refused(&tar, "passwd");
    assert!(msg.contains("hardlink target `/etc/passwd`"), "{msg}");
    let tar = TarBuilder::new()
        .hardlink("passwd", "../../../../../../../../etc/passwd")
        .finish();
    f.refused(&tar, "passwd");
    let tar = TarBuilder::new()
        .symlink("etc", "/etc")
        .hardlink("passwd", "etc/passwd")
        .finish();
    let msg = f.refused(&tar, "passwd");
    assert!(msg.contains("symlink"), "{msg}");
    // Only regular files already extracted in this layer.
    let tar = TarBuilder::new()
        .symlink("s", "/etc/passwd")
        .hardlink("l", "s")
        .finish();
    let msg = f.refused(&tar, "l");
    assert!(msg.contains("not a regular file"), "{msg}");
    let tar = TarBuilder::new()
        .hardlink("early", "later")
        .file("later", b"x", 0o644)
        .finish();
    f.refused(&tar, "early");
    let after = meta(Path::new("/etc/passwd"));
    assert_eq!(before.nlink(), after.nlink());
    assert_eq!(before.ino(), after.ino());
}

#[test]
fn refuses_proc_sys_dev_as_symlinks() {
    let f = fixture();
    let tar = TarBuilder::new()
        .symlink("proc", "/proc")
        .file("proc/x", b"evil", 0o644)
        .finish();
    let msg = f.refused(&tar, "proc");
    assert!(msg.contains("must be a directory"), "{msg}");
    let tar = TarBuilder::new().symlink("./sys", "/sys").finish();
    f.refused(&tar, "./sys");
    let tar = TarBuilder::new().file("dev", b"", 0o644).finish();
    f.refused(&tar, "dev");
    // Directories there are fine, and so are links inside them.
    let tar = TarBuilder::new()
        .dir("proc/", 0o555)
        .symlink("proc/self", "/proc/1")
        .finish();
    f.unpack_ok(&tar);
}

#[test]
fn refuses_device_nodes() {
    let f = fixture();
    let tar = TarBuilder::new()
        .dir("dev/", 0o755)
        .char_dev("dev/mem", 1, 1)
        .finish();
    let msg = f.refused(&tar, "dev/mem");
    assert!(msg.contains("device"), "{msg}");
    let tar = TarBuilder::new().block_dev("sda").finish();
    f.refused(&tar, "sda");
}

#[test]
fn caps_decompression_bombs() {
    let mut limits = StoreLimits::default();
    limits.extract.max_bytes = 1 << 20;
    limits.extract.max_entries = 50;
    let f = fixture_with(limits);

    let bomb = TarBuilder::new().zeros("bomb", 64 << 20).finish();
    let gz = gzip(&bomb);
    assert!(
        gz.len() < 200 << 10,
        "the bomb should be small: {}",
        gz.len()
    );
    let msg = f.refused(&gz, "bomb");
    assert!(msg.contains("exceeds the limit"), "{msg}");
    f.refused(&zstd(&bomb), "bomb");

    // Many small files that together pass the cap.
    let mut t = TarBuilder::new();
    for i in 0..4 {
        t.zeros(&format!("part{i}"), 300 << 10);
    }
    f.refused(&gzip(&t.finish()), "part3");

    let mut t = TarBuilder::new();
    for i in 0..100 {
        t.file(&format!("f{i}"), b"", 0o644);
    }
    let msg = f.refused(&t.finish(), "f50");
    assert!(msg.contains("number of entries"), "{msg}");

    // A 2 MiB PAX record (extension data is read into memory by tar parsers).
    let big = vec![b'a'; 2 << 20];
    let tar = TarBuilder::new()
        .pax(&[("comment", &big)])
        .file("x", b"", 0o644)
        .finish();
    let (d, r) = f.unpack(&tar);
    let err = r.unwrap_err();
    assert!(
        matches!(
            &err,
            ImageError::Layer {
                source: ExtractError::TooLarge { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(!f.store.has_layer(&d));
    f.assert_untouched();
}

#[test]
fn refuses_over_deep_paths_and_malformed_streams() {
    let f = fixture();
    let deep = "a/".repeat(300) + "x";
    let tar = TarBuilder::new()
        .pax(&[("path", deep.as_bytes())])
        .file("placeholder", b"", 0o644)
        .finish();
    let (_, r) = f.unpack(&tar);
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("deeper than 256"), "{msg}");

    let mut tar = TarBuilder::new().file("a", b"x", 0o644).finish();
    tar[100] ^= 0xff; // breaks the header checksum
    let (_, r) = f.unpack(&tar);
    let err = r.unwrap_err();
    assert!(
        matches!(
            &err,
            ImageError::Layer {
                source: ExtractError::Malformed { .. },
                ..
            }
        ),
        "{err}"
    );
    f.assert_untouched();
}

#[test]
fn file_modes_are_not_subject_to_umask_and_root_is_0755() {
    let f = fixture();
    let tar = TarBuilder::new()
        .file("world", b"w", 0o777)
        .dir("open/", 0o777)
        .finish();
    let (root, _) = f.unpack_ok(&tar);
    assert_eq!(meta(&root.join("world")).mode() & 0o777, 0o777);
    assert_eq!(meta(&root.join("open")).mode() & 0o777, 0o777);
    assert_eq!(
        fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o755
    );
}

/// Snapshot of what a store holds: its layers, blobs and temp entries.
fn store_state(store: &ImageStore) -> (Vec<String>, Vec<String>, Vec<String>) {
    (
        tree(&store.root().join("layers")),
        tree(&store.root().join("blobs")),
        tree(&store.root().join("tmp")),
    )
}

/// Unpacks a stored blob, expects a size cap error naming `option`, and checks the store did not
/// change (the blob itself was put there by the test before the snapshot).
fn refused_at_cap(f: &Fixture, blob: &[u8], option: &str) {
    let d = f.store.put_blob(blob).unwrap();
    let before = store_state(&f.store);
    let used = f.store.unpacked_bytes();
    let err = f.store.unpack_layer(&d).expect_err("bomb accepted");
    assert!(
        matches!(
            &err,
            ImageError::Layer {
                source: ExtractError::TooLarge { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_content_error(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(option),
        "the error names the option to raise: {msg}"
    );
    assert!(!f.store.has_layer(&d));
    assert_eq!(
        store_state(&f.store),
        before,
        "store changed by a refused layer"
    );
    assert_eq!(f.store.unpacked_bytes(), used, "refused bytes stay charged");
    f.assert_untouched();
}

#[test]
fn a_4_gib_gzip_bomb_stops_at_the_layer_cap() {
    let mut limits = StoreLimits::default();
    limits.extract.max_bytes = 4 << 20;
    let f = fixture_with(limits);
    // 4096 files of 1 MiB: every header is fine, the total is not (caught while streaming).
    let bomb = gzip_bomb(4096, 0, 1 << 20);
    assert!(bomb.len() < 6 << 20, "a ~4 MiB bomb: {}", bomb.len());
    let started = std::time::Instant::now();
    refused_at_cap(&f, &bomb, "`StoreLimits.extract.max_bytes`");
    // One 4 GiB file: refused from its header, before any byte.
    refused_at_cap(
        &f,
        &gzip_bomb(0, 4096, 1 << 20),
        "`StoreLimits.extract.max_bytes`",
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "stopped at the cap, not after 4 GiB: {:?}",
        started.elapsed()
    );
}

#[test]
fn extraction_is_capped_per_store_and_gc_gives_the_bytes_back() {
    let limits = StoreLimits {
        max_store_unpacked_bytes: 5 << 20,
        ..StoreLimits::default()
    };
    let f = fixture_with(limits.clone());
    let two_mib = |name: &str| TarBuilder::new().zeros(name, 2 << 20).finish();
    let (_, a) = f.unpack_ok(&two_mib("a"));
    let (_, b) = f.unpack_ok(&two_mib("b"));
    assert_eq!(a.unpacked_bytes + b.unpacked_bytes, 4 << 20);
    assert_eq!(f.store.unpacked_bytes(), 4 << 20);

    // 1 MiB left: a 4 GiB bomb stops while streaming, as 1 MiB files or as one 4 GiB file.
    let option = "`StoreLimits.max_store_unpacked_bytes`";
    refused_at_cap(&f, &gzip_bomb(4096, 0, 1 << 20), option);
    refused_at_cap(&f, &gzip_bomb(0, 4096, 1 << 20), option);
    // So does an honest layer that does not fit.
    refused_at_cap(&f, &gzip(&two_mib("c")), option);

    // A store opened again counts what is there.
    let reopened = ImageStore::open(f.store.root(), limits).unwrap();
    assert_eq!(reopened.unpacked_bytes(), 4 << 20);
    drop(reopened);

    // gc removes the unreferenced layers and gives their bytes back: the layer fits now.
    let report = f.store.gc().unwrap();
    assert_eq!(report.removed_layers.len(), 2, "{report:?}");
    assert_eq!(f.store.unpacked_bytes(), 0);
    let (_, c) = f.unpack_ok(&gzip(&two_mib("c")));
    assert_eq!(f.store.unpacked_bytes(), c.unpacked_bytes);
}

#[test]
fn refuses_traversal_smuggled_in_pax_and_gnu_long_names() {
    let f = fixture();
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            TarBuilder::new()
                .pax(&[("path", b"../../etc/cron.d/x")])
                .file("ok", b"x", 0o644)
                .finish(),
            "../../etc/cron.d/x",
            "`..`",
        ),
        (
            TarBuilder::new()
                .pax(&[("path", b"/etc/cron.d/x")])
                .file("ok", b"x", 0o644)
                .finish(),
            "/etc/cron.d/x",
            "absolute",
        ),
        (
            TarBuilder::new()
                .gnu_long(b'L', b"a/../../../x")
                .file("ok", b"x", 0o644)
                .finish(),
            "a/../../../x",
            "`..`",
        ),
        (
            TarBuilder::new()
                .pax(&[("path", b"a\0b")])
                .file("ok", b"x", 0o644)
                .finish(),
            "a\\u{0}b",
            "NUL",
        ),
        (
            TarBuilder::new()
                .pax(&[("linkpath", b"/etc/passwd")])
                .hardlink("passwd", "ok")
                .finish(),
            "passwd",
            "hardlink target `/etc/passwd`",
        ),
        (
            TarBuilder::new()
                .gnu_long(b'K', b"../../../../etc/shadow")
                .hardlink("shadow", "ok")
                .finish(),
            "shadow",
            "hardlink target `../../../../etc/shadow`",
        ),
        (
            TarBuilder::new()
                .pax(&[("linkpath", "a/".repeat(2100).as_bytes())])
                .symlink("long", "ok")
                .finish(),
            "long",
            "over-long",
        ),
    ];
    let passwd = meta(Path::new("/etc/passwd"));
    for (tar, entry, why) in cases {
        let msg = f.refused(&tar, entry);
        assert!(msg.contains(why), "{entry}: {msg}");
    }
    assert_eq!(meta(Path::new("/etc/passwd")).nlink(), passwd.nlink());
}

#[test]
fn pax_owner_overflow_is_refused_not_truncated_to_root() {
    let f = fixture();
    // 2^32 would be uid 0 if truncated to 32 bits.
    let tar = TarBuilder::new()
        .pax(&[("uid", b"4294967296")])
        .file("x", b"x", 0o4755)
        .finish();
    let msg = f.refused(&tar, "x");
    assert!(msg.contains("uid out of range"), "{msg}");
    let tar = TarBuilder::new()
        .pax(&[("gid", b"4294967296")])
        .file("x", b"x", 0o2755)
        .finish();
    let msg = f.refused(&tar, "x");
    assert!(msg.contains("gid out of range"), "{msg}");
    // PAX owners in range apply.
    let tar = TarBuilder::new()
        .pax(&[("uid", b"70000"), ("gid", b"70001")])
        .file("x", b"x", 0o644)
        .finish();
    let (root, _) = f.unpack_ok(&tar);
    let m = meta(&root.join("x"));
    assert_eq!((m.uid(), m.gid()), (70000, 70001));
}

#[test]
fn caps_extension_headers_that_pass_the_cap_only_together() {
    let f = fixture();
    // Each record is under the 1 MiB cap; the three before one entry are not.
    let comment = vec![b'c'; 700 << 10];
    let long = "d/".repeat(350 << 9);
    let tar = TarBuilder::new()
        .pax(&[("comment", &comment)])
        .gnu_long(b'L', long.as_bytes())
        .gnu_long(b'K', long.as_bytes())
        .file("x", b"x", 0o644)
        .finish();
    let (d, r) = f.unpack(&tar);
    let err = r.unwrap_err();
    assert!(
        matches!(
            &err,
            ImageError::Layer {
                source: ExtractError::TooLarge { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("`StoreLimits.extract.max_metadata_bytes`"),
        "{err}"
    );
    assert!(!f.store.has_layer(&d));
    f.assert_untouched();
}

/// A zstd frame holding `data` in one raw block, declaring a window of 2^`window_log` bytes.
fn zstd_frame(window_log: u8, data: &[u8]) -> Vec<u8> {
    assert!((10..=41).contains(&window_log) && data.len() < 128 << 10);
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd];
    out.push(0x00); // no content size, not single-segment, no checksum: a window descriptor
    out.push((window_log - 10) << 3);
    let block = ((data.len() as u32) << 3) | 1; // raw, last
    out.extend_from_slice(&block.to_le_bytes()[..3]);
    out.extend_from_slice(data);
    out
}

#[test]
fn refuses_compression_headers_that_ask_for_unbounded_memory() {
    let f = fixture();
    let tar = TarBuilder::new().file("x", b"x", 0o644).finish();
    // zstd: a frame may demand a 2 GiB window; the decoder keeps its default 128 MiB ceiling.
    let (_, info) = f.unpack_ok(&zstd_frame(20, &tar));
    assert_eq!(
        info.diff_id.to_string(),
        sha(&tar),
        "the crafted frame is valid"
    );
    // gzip: flate2 caps header fields (64 KiB) instead of reading a 1 MiB file name.
    for (blob, why) in [
        (zstd_frame(31, &tar), "too much memory"),
        (
            gzip_with_name(&vec![b'n'; 1 << 20], &tar),
            "header field too long",
        ),
    ] {
        let (d, r) = f.unpack(&blob);
        let err = r.unwrap_err();
        assert!(
            matches!(
                &err,
                ImageError::Layer {
                    source: ExtractError::Malformed { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(why), "{err}");
        assert!(!f.store.has_layer(&d));
    }
    f.assert_untouched();
}

/// A gzip member whose header carries `name` as its FNAME field (gzip has no limit on it).
fn gzip_with_name(name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0x08, 0, 0, 0, 0, 0, 3];
    out.extend_from_slice(name);
    out.push(0);
    // The deflate stream and trailer of a normal member (after its 10-byte header, no FNAME).
    out.extend_from_slice(&gzip(data)[10..]);
    out
}
