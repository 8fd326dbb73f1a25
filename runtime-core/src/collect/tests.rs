use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use super::*;

fn request(patterns: &[&str]) -> Artifacts {
    Artifacts {
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        max_file_bytes: 1 << 20,
        max_total_bytes: 8 << 20,
        max_files: 100,
    }
}

fn write(root: &Path, path: &str, data: &[u8]) {
    let p = root.join(path);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn open(root: &Path) -> OwnedFd {
    OwnedFd::from(fs::File::open(root).unwrap())
}

fn run(root: &Path, start: &str, req: &Artifacts) -> ArtifactReport {
    let fd = open(root);
    collect(fd.as_fd(), start, req)
}

fn paths(report: &ArtifactReport) -> Vec<&str> {
    report.files.iter().map(|f| f.path.as_str()).collect()
}

fn skipped<'a>(report: &'a ArtifactReport, path: &str) -> &'a str {
    report
        .skipped
        .iter()
        .find(|s| s.path == path)
        .map(|s| s.reason.as_str())
        .unwrap_or_else(|| panic!("{path} is not in skipped: {:?}", report.skipped))
}

/// A job root `root/` beside a file `outside` that is not the job's.
fn tree() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    write(&root, "a.txt", b"alpha");
    write(&root, "reports/x.xml", b"<x/>");
    write(&root, "reports/y.xml", b"<y/>");
    write(&root, "reports/notes.txt", b"n");
    write(&root, "reports/sub/z.xml", b"<z/>");
    write(&root, "reports/sub/deeper/w.xml", b"<w/>");
    write(&root, "out/app", b"\x7fELF binary");
    fs::set_permissions(root.join("out/app"), fs::Permissions::from_mode(0o751)).unwrap();
    (dir, root)
}

#[test]
fn globs_match_per_component_and_results_are_sorted_with_their_bytes_and_modes() {
    let (_d, root) = tree();
    let r = run(&root, "", &request(&["reports/*.xml", "out/app"]));
    assert_eq!(paths(&r), ["out/app", "reports/x.xml", "reports/y.xml"]);
    let app = &r.files[0];
    assert_eq!(app.data, b"\x7fELF binary");
    assert_eq!(app.size, 11);
    assert!(!app.truncated);
    assert_eq!(app.mode, 0o751);
    assert_eq!(r.files[1].data, b"<x/>");
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    // `?` and classes.
    let r = run(&root, "", &request(&["reports/[xz].xm?", "?.txt"]));
    assert_eq!(paths(&r), ["a.txt", "reports/x.xml"]);
}

#[test]
fn double_star_matches_any_depth_including_none() {
    let (_d, root) = tree();
    let r = run(&root, "", &request(&["reports/**/*.xml"]));
    assert_eq!(
        paths(&r),
        [
            "reports/sub/deeper/w.xml",
            "reports/sub/z.xml",
            "reports/x.xml",
            "reports/y.xml"
        ]
    );
    let r = run(&root, "", &request(&["**/z.xml", "**/deeper/**"]));
    assert_eq!(paths(&r), ["reports/sub/deeper/w.xml", "reports/sub/z.xml"]);
    // A final `**` is every file below; each path once however many patterns match it.
    let r = run(&root, "", &request(&["**", "reports/**", "a.txt"]));
    assert_eq!(
        paths(&r),
        [
            "a.txt",
            "out/app",
            "reports/notes.txt",
            "reports/sub/deeper/w.xml",
            "reports/sub/z.xml",
            "reports/x.xml",
            "reports/y.xml"
        ]
    );
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
}

#[test]
fn relative_patterns_start_in_the_working_directory_and_absolute_ones_at_the_root() {
    let (_d, root) = tree();
    let r = run(
        &root,
        "reports",
        &request(&["*.xml", "/out/app", "./sub/z.xml"]),
    );
    assert_eq!(paths(&r), ["/out/app", "sub/z.xml", "x.xml", "y.xml"]);
    // A working directory that does not exist: relative patterns say so, absolute ones work.
    let r = run(&root, "nowhere", &request(&["*.xml", "/a.txt"]));
    assert_eq!(paths(&r), ["/a.txt"]);
    assert!(skipped(&r, "*.xml").contains("working directory"));
}

#[test]
fn symlinks_are_never_followed_and_are_listed_as_skipped() {
    let (_d, root) = tree();
    symlink("/etc/passwd", root.join("leak")).unwrap();
    symlink("/etc", root.join("etc")).unwrap();
    symlink("a.txt", root.join("inside")).unwrap();
    symlink("reports", root.join("reports-link")).unwrap();
    let r = run(
        &root,
        "",
        &request(&["leak", "inside", "etc/passwd", "*", "reports-link/*.xml"]),
    );
    assert_eq!(paths(&r), ["a.txt"]);
    for p in ["leak", "inside", "etc", "reports-link"] {
        assert!(skipped(&r, p).contains("symlink"), "{p}: {:?}", r.skipped);
    }
    // A symlinked directory is not entered by `**` either.
    let r = run(&root, "", &request(&["**/passwd", "**/x.xml"]));
    assert_eq!(paths(&r), ["reports/x.xml"]);
    // Nor is the working directory reached through one.
    let r = run(&root, "etc", &request(&["passwd"]));
    assert!(r.files.is_empty());
    assert!(skipped(&r, "passwd").contains("working directory"));
}

#[test]
fn hard_links_are_skipped_whoever_made_them() {
    let (d, root) = tree();
    let outside = d.path().join("secret");
    fs::write(&outside, b"not the job's").unwrap();
    fs::hard_link(&outside, root.join("mine.txt")).unwrap();
    let r = run(&root, "", &request(&["*.txt"]));
    assert_eq!(paths(&r), ["a.txt"]);
    assert!(skipped(&r, "mine.txt").contains("hard link"));
}

#[test]
fn a_sparse_2gb_file_is_cut_at_the_cap_and_reports_its_real_size() {
    let (_d, root) = tree();
    let f = fs::File::create(root.join("big.bin")).unwrap();
    f.set_len(2 << 30).unwrap();
    drop(f);
    let started = std::time::Instant::now();
    let r = run(&root, "", &request(&["big.bin"]));
    assert_eq!(r.files.len(), 1);
    let big = &r.files[0];
    assert_eq!(big.size, 2 << 30);
    assert_eq!(big.data.len(), 1 << 20);
    assert!(big.truncated);
    assert!(big.data.iter().all(|&b| b == 0));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn caps_cut_files_past_the_total_and_list_files_past_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for name in ["1", "2", "3", "4", "5"] {
        write(root, name, &[b'x'; 100]);
    }
    let req = Artifacts {
        patterns: vec!["*".into()],
        max_file_bytes: 80,
        max_total_bytes: 200,
        max_files: 4,
    };
    let r = run(root, "", &req);
    let got: Vec<(&str, usize, u64, bool)> = r
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.data.len(), f.size, f.truncated))
        .collect();
    assert_eq!(
        got,
        [
            ("1", 80, 100, true),
            ("2", 80, 100, true),
            ("3", 40, 100, true),
            ("4", 0, 100, true)
        ]
    );
    assert!(skipped(&r, "5").contains("file count cap"));
    // An empty file is not truncated, even with nothing left.
    write(root, "0", b"");
    let r = run(root, "", &req);
    assert_eq!(r.files[0].path, "0");
    assert!(!r.files[0].truncated);
}

#[test]
fn fifos_devices_and_directories_are_not_collected() {
    let (_d, root) = tree();
    let fifo = CString::new(root.join("pipe").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid path; mkfifo creates a FIFO there.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // The FIFO has no writer: opening it for reading would block without the type check.
    let r = run(&root, "", &request(&["pipe", "reports", "out/*"]));
    assert_eq!(paths(&r), ["out/app"]);
    assert!(skipped(&r, "pipe").contains("FIFO"));
    assert!(skipped(&r, "reports").contains("DIR/**"));
    // A wildcard passes over directories silently.
    let r = run(&root, "", &request(&["reports/*"]));
    assert_eq!(
        paths(&r),
        ["reports/notes.txt", "reports/x.xml", "reports/y.xml"]
    );
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
}

#[test]
fn bad_patterns_are_reported_and_match_nothing() {
    let (_d, root) = tree();
    for bad in ["../x", "a/../b", "a**b/c", "[x", "", "/", "./."] {
        assert!(check_pattern(bad).is_err(), "{bad:?} accepted");
    }
    for good in ["a", "/a/b", "**", "a/**/b", "*.x", "[!a]?", "./a//b"] {
        assert_eq!(check_pattern(good), Ok(()), "{good:?}");
    }
    let r = run(&root, "", &request(&["../root/a.txt", "a.txt"]));
    assert_eq!(paths(&r), ["a.txt"]);
    assert!(skipped(&r, "../root/a.txt").contains("`..`"));
    assert!(run(&root, "", &request(&[])).files.is_empty());
}

#[test]
fn a_deep_tree_stops_the_walk_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = dir.path().to_path_buf();
    for _ in 0..MAX_DEPTH + 5 {
        p.push("d");
    }
    fs::create_dir_all(&p).unwrap();
    fs::write(p.join("f"), b"deep").unwrap();
    fs::write(dir.path().join("top"), b"top").unwrap();
    let r = run(dir.path(), "", &request(&["**"]));
    assert_eq!(paths(&r), ["top"]);
    assert!(
        r.skipped.iter().any(|s| s.reason.contains("deeper than")),
        "{:?}",
        r.skipped
    );
}

#[test]
fn whiteouts_and_other_special_files_have_their_reason() {
    // Making a character device needs CAP_MKNOD; the kind mapping is what decides.
    assert!(
        Kind::of(libc::S_IFCHR)
            .skip_reason()
            .unwrap()
            .contains("whiteout")
    );
    assert!(
        Kind::of(libc::S_IFBLK)
            .skip_reason()
            .unwrap()
            .contains("block device")
    );
    assert!(
        Kind::of(libc::S_IFSOCK)
            .skip_reason()
            .unwrap()
            .contains("socket")
    );
    assert_eq!(Kind::of(libc::S_IFREG | 0o644).skip_reason(), None);
}
