//! The worker's own binary is out of the job's reach (the CVE-2019-5736 family): a job that
//! names `/proc/self/exe` (as its program, or as the interpreter of a `#!` script) while its
//! process is still a fork of the worker, `/proc/1/exe` (the container's init), or the
//! `map_files` of either, must never execute, read or open the worker's binary.
//!
//! "The worker's binary" is this test binary (it runs the backend): the job's image carries the
//! host's dynamic loader and libraries, so the binary *would* run inside the container, and a
//! constructor of this test binary then prints `HOST-BINARY-RAN <dev> <ino>` (before libtest's
//! `main`). Whatever the job manages to open is compared by device and inode with
//! `/proc/self/exe` of this process. The container's init is also inspected from the host: its
//! `/proc/<pid>/exe` and every `map_files` entry must not be this binary.
//! Root only; a missing prerequisite fails (never skips).

mod container_support;
#[path = "../../image-store/tests/image_support/mod.rs"]
mod image_support;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use container_support::*;
use image_support::TarBuilder;

/// The environment variable that makes this binary, run as a job, print who it is.
const PROBE_ENV: &[u8] = b"NEKTON_SELF_EXE_PROBE=1";

fn probe_env() -> Vec<(String, String)> {
    vec![("NEKTON_SELF_EXE_PROBE".into(), "1".into())]
}

/// Runs before libtest's `main` in every process of this binary: when it is a job (the probe
/// variable is set) it reports the device and inode of its own executable and exits.
extern "C" fn host_binary_probe(
    _argc: libc::c_int,
    _argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) {
    if envp.is_null() {
        return;
    }
    let mut p = envp;
    // SAFETY: glibc passes the NULL-terminated environment array to constructors.
    unsafe {
        while !(*p).is_null() {
            if std::ffi::CStr::from_ptr(*p).to_bytes() == PROBE_ENV {
                let mut st: libc::stat = std::mem::zeroed();
                let fd = libc::open(c"/proc/self/exe".as_ptr(), libc::O_RDONLY);
                let msg = if fd >= 0 && libc::fstat(fd, &mut st) == 0 {
                    format!("HOST-BINARY-RAN {} {}\n", st.st_dev, st.st_ino)
                } else {
                    "HOST-BINARY-RAN ? ?\n".to_string()
                };
                libc::write(1, msg.as_ptr().cast(), msg.len());
                libc::_exit(0);
            }
            p = p.add(1);
        }
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static HOST_BINARY_PROBE: extern "C" fn(
    libc::c_int,
    *const *const libc::c_char,
    *const *const libc::c_char,
) = host_binary_probe;

/// (device, inode) of the binary running these tests — the "worker binary".
fn host_binary() -> (u64, u64) {
    let m = std::fs::metadata("/proc/self/exe").expect("stat /proc/self/exe");
    (m.dev(), m.ino())
}

/// A layer with the dynamic loader and libraries this binary needs, at their host paths, so the
/// host binary can actually run inside the container (as in an attacker's glibc image).
fn host_libs_layer() -> Vec<u8> {
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let out = std::process::Command::new("ldd")
        .arg(&exe)
        .output()
        .expect("ldd (libc-bin) is needed by this test");
    assert!(out.status.success(), "ldd {}: {:?}", exe.display(), out);
    let mut t = TarBuilder::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        t.file(path.trim_start_matches('/'), &data, 0o755);
    }
    t.finish()
}

/// Every `HOST-BINARY-RAN` line and every `open <dev> <ino> <path>` line of `out` that names
/// the host binary.
fn host_binary_hits(out: &str) -> Vec<String> {
    let (dev, ino) = host_binary();
    out.lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["HOST-BINARY-RAN", ..] => true,
                ["open", d, i, ..] => d.parse::<u64>() == Ok(dev) && i.parse::<u64>() == Ok(ino),
                _ => false,
            }
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_cannot_execute_or_open_the_worker_binary() {
    let env = TestEnv::new();
    let mut script = TarBuilder::new();
    script.file("selfexe.sh", b"#!/proc/self/exe\necho script\n", 0o755);
    script.file("initexe.sh", b"#!/proc/1/exe\necho script\n", 0o755);
    let image = env
        .busybox(
            "selfexe",
            &[host_libs_layer(), script.finish()],
            default_config(),
        )
        .await;
    let mut failures = Vec::new();
    for entry in [
        "/proc/self/exe",
        "/proc/1/exe",
        "/selfexe.sh",
        "/initexe.sh",
    ] {
        let mut r = request(&image, &[]);
        r.container.entrypoint = Some(vec![entry.into()]);
        r.env = probe_env();
        let ran = run(&env, r).await;
        let hits = host_binary_hits(&ran.out());
        if !hits.is_empty() {
            failures.push(format!(
                "{entry}: the worker binary ran in the job: {hits:?} ({:?})",
                ran.report.outcome
            ));
        }
    }
    // Opening for reading (and through the descriptor, `stat`) every link to an executable the
    // job can name: its own exe and map_files, and the init's.
    let mut r = sh(
        &image,
        r#"for f in /proc/self/exe /proc/self/map_files/* /proc/1/exe /proc/1/map_files/* \
                 /proc/1/task/1/exe /proc/$$/exe; do
               (exec 3<"$f" && echo "open $(stat -L -c '%d %i' /proc/self/fd/3) $f") 2>/dev/null
           done
           echo done"#,
    );
    r.env = probe_env();
    let ran = run(&env, r).await;
    ran.assert_exited(0);
    assert!(ran.out().ends_with("done\n"), "{}", ran.out());
    let hits = host_binary_hits(&ran.out());
    if !hits.is_empty() {
        failures.push(format!("open: the job opened the worker binary: {hits:?}"));
    }
    // The loader is there: an honest dynamically linked program of the image runs (so the
    // entries above were really tried, not refused for a missing loader).
    let mut r = request(&image, &[]);
    r.container.entrypoint = Some(vec!["/bin/true".into()]);
    run(&env, r).await.assert_exited(0);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Host pid of the process whose command line is exactly `argv`, if one exists.
fn find_process(argv: &[&str]) -> Option<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        (std::fs::read(e.path().join("cmdline")).ok()? == want).then_some(pid)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_container_init_is_not_backed_by_the_worker_binary() {
    let env = TestEnv::new();
    let image = env.busybox("init-exe", &[], default_config()).await;
    let req = sh(&image, "echo ready; exec sleep 4711");
    // The job's program runs once it has printed: the init is in its final form by then.
    let mut job = Running::start(&env, req);
    job.until("ready\n").await;
    let mut job_pid = None;
    for _ in 0..300 {
        job_pid = find_process(&["sleep", "4711"]);
        if job_pid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let job_pid = job_pid.expect("the job's `sleep 4711` process");
    let init = ppid_of(job_pid);
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(
        nspid.ends_with("\t1"),
        "{init} is not the container's init: {nspid}"
    );
    let (dev, ino) = host_binary();
    let exe = std::fs::metadata(format!("/proc/{init}/exe")).unwrap();
    let exe_link = std::fs::read_link(format!("/proc/{init}/exe")).unwrap();
    let mut backed = Vec::new();
    if (exe.dev(), exe.ino()) == (dev, ino) {
        backed.push(format!("exe -> {}", exe_link.display()));
    }
    for e in std::fs::read_dir(format!("/proc/{init}/map_files"))
        .unwrap()
        .flatten()
    {
        if let Ok(m) = std::fs::metadata(e.path())
            && (m.dev(), m.ino()) == (dev, ino)
        {
            backed.push(format!("map_files/{}", e.file_name().to_string_lossy()));
        }
    }
    let report = job.stop().await;
    assert!(
        backed.is_empty(),
        "the container's init (host pid {init}) is backed by the worker binary: {backed:?}"
    );
    assert_eq!(
        report.outcome.reason,
        runtime_core::OutcomeReason::Cancelled,
        "{report:?}"
    );
}
