//! The hostile-job suite (docs/sandbox.md, "Testing the walls"), against the
//! container backend and the real kernel. Each hostile job runs beside an honest job; after
//! it, the honest job's verdict and output, the host (a sentinel process, a secret file,
//! `core_pattern`, the hostname) and the state dir (no job dirs, mounts or processes) are
//! checked, and the backend runs another job. Small static C probes (`tests/hostile/*.c`,
//! compiled with `gcc -static`) try the forbidden syscalls and print each result.
//! Root only; a missing prerequisite fails (never skips).

mod container_support;
#[path = "../../image-store/tests/image_support/mod.rs"]
mod image_support;
mod probe_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use container_support::*;
use image_support::TarBuilder;
use probe_support::{probes_layer, results};
use runtime_core::{
    Backend, CancellationToken, ExecReport, ExecRequest, JobIo, OutcomeReason, OutputSink,
    OutputStats, Stream,
};

/// What the host looks like before a hostile job; [`Host::assert_unaffected`] compares.
struct Host {
    sentinel: std::process::Child,
    secret_path: PathBuf,
    secret: String,
    core_pattern: Vec<u8>,
    hostname: Vec<u8>,
    release_agents: Vec<(PathBuf, Vec<u8>)>,
}

impl Host {
    fn new(env: &TestEnv) -> Self {
        let sentinel = std::process::Command::new("sleep")
            .arg("86400")
            .spawn()
            .expect("spawning a host sentinel process (sleep)");
        let secret = format!("nekton-host-secret-{}", std::process::id());
        let secret_path = env.tmp.path().join("host-secret");
        std::fs::write(&secret_path, &secret).unwrap();
        let release_agents = ["memory", "pids", "cpu", "systemd", "unified"]
            .iter()
            .map(|c| Path::new("/sys/fs/cgroup").join(c).join("release_agent"))
            .filter_map(|p| std::fs::read(&p).ok().map(|c| (p, c)))
            .collect();
        Self {
            sentinel,
            secret_path,
            secret,
            core_pattern: std::fs::read("/proc/sys/kernel/core_pattern").unwrap(),
            hostname: std::fs::read("/proc/sys/kernel/hostname").unwrap(),
            release_agents,
        }
    }

    #[track_caller]
    fn assert_unaffected(&mut self) {
        assert!(
            self.sentinel.try_wait().unwrap().is_none(),
            "a host process was killed"
        );
        let core = std::fs::read("/proc/sys/kernel/core_pattern").unwrap();
        if core != self.core_pattern {
            let _ = std::fs::write("/proc/sys/kernel/core_pattern", &self.core_pattern);
            panic!("a job changed the host's core_pattern to {core:?} (restored)");
        }
        assert_eq!(
            std::fs::read("/proc/sys/kernel/hostname").unwrap(),
            self.hostname
        );
        assert_eq!(
            std::fs::read_to_string(&self.secret_path).unwrap(),
            self.secret
        );
        for (p, c) in &self.release_agents {
            assert_eq!(&std::fs::read(p).unwrap(), c, "{}", p.display());
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
    }
}

struct Suite {
    env: TestEnv,
    host: Host,
    /// busybox + the probes; its default command is `sh`.
    img: String,
}

/// The honest job run beside every hostile one, and its exact output.
const HONEST: &str = "echo honest; sleep 0.3; seq 1 3000 | tail -n 1; echo done";
const HONEST_OUT: &str = "honest\n3000\ndone\n";

impl Suite {
    async fn new() -> Self {
        let env = TestEnv::new();
        let img = env
            .busybox("hostile", &[probes_layer()], default_config())
            .await;
        let host = Host::new(&env);
        Self { env, host, img }
    }

    fn sh(&self, script: &str) -> ExecRequest {
        sh(&self.img, script)
    }

    fn probe(&self, args: &[&str]) -> ExecRequest {
        let mut r = request(&self.img, args);
        r.container.entrypoint = Some(vec!["/probe/probe".into()]);
        r
    }

    /// Runs `req` beside an honest job; checks the honest job, the host and the leftovers; then
    /// checks that the backend still runs jobs.
    async fn hostile(&mut self, mut req: ExecRequest) -> Finished {
        req.job_id = "hostile-job".into();
        let mut honest = self.sh(HONEST);
        honest.job_id = "honest-job".into();
        let (ran, h) = tokio::join!(run(&self.env, req), run(&self.env, honest));
        h.assert_exited(0);
        assert_eq!(h.out(), HONEST_OUT, "the honest job was disturbed: {h:?}");
        assert_eq!(
            h.report.usage.pids_limit_hit,
            Some(false),
            "the honest job's pids limit: {h:?}"
        );
        self.assert_clean().await;
        let after = run(&self.env, self.sh("echo still-working")).await;
        after.assert_exited(0);
        assert_eq!(after.out(), "still-working\n");
        ran
    }

    async fn assert_clean(&mut self) {
        self.host.assert_unaffected();
        // Job directories are removed in the background, after the report.
        self.env.backend.settle().await;
        let left: Vec<_> = std::fs::read_dir(self.env.jobs_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "job directories left: {left:?}");
        assert!(
            host_mounts_under(&self.env.state_dir).is_empty(),
            "{:?}",
            host_mounts_under(&self.env.state_dir)
        );
        assert!(
            processes_under(self.env.tmp.path()).is_empty(),
            "{:?}",
            processes_under(self.env.tmp.path())
        );
    }
}

#[track_caller]
fn assert_reason(ran: &Finished, reason: OutcomeReason) {
    assert_eq!(
        ran.report.outcome.reason,
        reason,
        "{:?}\nstdout: {}\nstderr: {}",
        ran.report,
        ran.out(),
        ran.err()
    );
}

/// Processes whose command line is exactly `sleep <marker>`.
fn marker_processes(marker: &str) -> Vec<String> {
    let want = format!("sleep\0{marker}\0");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline"))
            && c == want.as_bytes()
        {
            out.push(format!("{:?}", e.file_name()));
        }
    }
    out
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn forbidden_syscalls_fail_with_the_profiles_errno() {
    let mut s = Suite::new().await;
    let ran = s.hostile(s.probe(&["syscalls"])).await;
    ran.assert_exited(0);
    let want = expect(&[
        ("unshare_user", "EPERM"),
        ("unshare_mount", "EPERM"),
        ("unshare_net", "EPERM"),
        ("unshare_pid", "EPERM"),
        ("unshare_time", "EPERM"),
        ("unshare_files", "OK"),
        ("clone_user", "EPERM"),
        ("clone_net", "EPERM"),
        ("clone_plain", "OK"),
        ("clone3_plain", "ENOSYS"),
        ("clone3_user", "ENOSYS"),
        ("setns", "EPERM"),
        ("pthread_create", "OK"),
        ("keyctl", "EPERM"),
        ("add_key", "EPERM"),
        ("request_key", "EPERM"),
        ("bpf", "EPERM"),
        ("perf_event_open", "EPERM"),
        ("userfaultfd", "EPERM"),
        ("io_uring_setup", "EPERM"),
        ("io_uring_enter", "EPERM"),
        ("io_uring_register", "EPERM"),
        ("mount", "EPERM"),
        ("umount2", "EPERM"),
        ("fsopen", "EPERM"),
        ("fsmount", "EPERM"),
        ("move_mount", "EPERM"),
        ("open_tree", "EPERM"),
        ("pivot_root", "EPERM"),
        ("open_by_handle_at", "EPERM"),
        ("kexec_load", "EPERM"),
        ("kexec_file_load", "EPERM"),
        ("init_module", "EPERM"),
        ("finit_module", "EPERM"),
        ("delete_module", "EPERM"),
        ("reboot", "EPERM"),
        ("swapon", "EPERM"),
        ("swapoff", "EPERM"),
        ("acct", "EPERM"),
        ("clock_settime", "EPERM"),
        ("settimeofday", "EPERM"),
        ("syslog", "EPERM"),
        ("ptrace_traceme", "EPERM"),
        ("process_vm_readv", "EPERM"),
        ("kcmp", "EPERM"),
        ("pidfd_getfd", "EPERM"),
        ("personality_query", "OK"),
        ("personality_read_implies_exec", "EPERM"),
        ("socket_vsock", "EPERM"),
        ("syscall_463", "ENOSYS"),
        ("fork", "OK"),
        ("chroot", "OK"),
        ("mmap", "OK"),
    ]);
    let mut want = want;
    if cfg!(target_arch = "x86_64") {
        want.insert("x32_getpid".into(), "EPERM".into());
    }
    assert_eq!(results(&ran.out()), want, "stderr: {}", ran.err());

    // The same as an unprivileged user, and the tools a job would reach for.
    let mut r = s.sh(
        "grep -E '^(Seccomp|Seccomp_filters|NoNewPrivs):' /proc/self/status
         unshare -U true 2>/dev/null && echo unshare-U-worked
         unshare -m true 2>/dev/null && echo unshare-m-worked
         unshare -n true 2>/dev/null && echo unshare-n-worked
         mount -t tmpfs t /mnt 2>/dev/null && echo mount-worked
         mount -t proc p /mnt 2>/dev/null && echo mount-proc-worked
         swapoff -a 2>/dev/null && echo swapoff-worked
         /probe/probe syscalls | grep -v -E '=(EPERM|ENOSYS)$'
         echo end",
    );
    r.container.user = Some("1000:1000".into());
    let ran = s.hostile(r).await;
    ran.assert_exited(0);
    assert_eq!(
        ran.out(),
        "NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n\
         unshare_files=OK\nclone_plain=OK\npthread_create=OK\npersonality_query=OK\n\
         fork=OK\nmmap=OK\nend\n",
        "stderr: {}",
        ran.err()
    );
}

/// x86_64 only: `int 0x80` is the i386 ABI.
#[cfg(target_arch = "x86_64")]
#[tokio::test(flavor = "multi_thread")]
async fn syscalls_of_another_abi_kill_the_job() {
    let mut s = Suite::new().await;
    let ran = s.hostile(s.probe(&["int80"])).await;
    assert_reason(&ran, OutcomeReason::Signaled);
    assert_eq!(ran.report.outcome.signal, Some(libc::SIGSYS), "{ran:?}");
    assert_eq!(ran.out(), "before\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_rlimits_raw_sockets_mknod_and_setuid() {
    let mut s = Suite::new().await;
    // As root: the capability sets, the rlimits, raw sockets, device nodes.
    let ran = s
        .hostile(s.sh("grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/self/status
             grep -E '^Max (core file size|open files)' /proc/self/limits | tr -s ' '
             /probe/probe sockets; /probe/probe nodes
             ls -l /tmp/fifo | cut -c1"))
        .await;
    ran.assert_exited(0);
    let out = ran.out();
    let mut caps = BTreeMap::new();
    for l in out.lines().filter(|l| l.starts_with("Cap")) {
        let (k, v) = l.split_once(":\t").unwrap();
        caps.insert(k.to_string(), u64::from_str_radix(v, 16).unwrap());
    }
    // Never granted: network admin and raw packets, devices, the kernel, other processes,
    // resources, the clock, the log, MAC, BPF, perf, checkpoint/restore, IPC ownership.
    let forbidden = [
        (2, "DAC_READ_SEARCH"),
        (9, "LINUX_IMMUTABLE"),
        (11, "NET_BROADCAST"),
        (12, "NET_ADMIN"),
        (13, "NET_RAW"),
        (14, "IPC_LOCK"),
        (15, "IPC_OWNER"),
        (16, "SYS_MODULE"),
        (17, "SYS_RAWIO"),
        (19, "SYS_PTRACE"),
        (20, "SYS_PACCT"),
        (21, "SYS_ADMIN"),
        (22, "SYS_BOOT"),
        (23, "SYS_NICE"),
        (24, "SYS_RESOURCE"),
        (25, "SYS_TIME"),
        (26, "SYS_TTY_CONFIG"),
        (27, "MKNOD"),
        (28, "LEASE"),
        (30, "AUDIT_CONTROL"),
        (32, "MAC_OVERRIDE"),
        (33, "MAC_ADMIN"),
        (34, "SYSLOG"),
        (35, "WAKE_ALARM"),
        (36, "BLOCK_SUSPEND"),
        (37, "AUDIT_READ"),
        (38, "PERFMON"),
        (39, "BPF"),
        (40, "CHECKPOINT_RESTORE"),
    ];
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let v = caps[set];
        for (bit, name) in forbidden {
            assert_eq!(v & (1 << bit), 0, "{set} has CAP_{name}: {out}");
        }
    }
    assert_eq!(caps["CapInh"], 0);
    assert_eq!(caps["CapAmb"], 0);
    assert_ne!(caps["CapEff"], 0, "root keeps the default set: {out}");
    let rest: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("Cap"))
        .map(str::trim_end)
        .collect();
    assert_eq!(
        rest,
        [
            "Max core file size 0 0 bytes",
            "Max open files 1024 4096 files",
            "raw_inet=EPERM",
            "raw_inet6=EPERM",
            "packet=EPERM",
            "vsock=EPERM",
            "tcp=OK",
            "udp=OK",
            "unix=OK",
            "mknod_char=EPERM",
            "mknod_block=EPERM",
            "mknod_fifo=OK",
            "p",
        ],
        "stderr: {}",
        ran.err()
    );

    // A setuid-root binary of the image run by uid 1000 does not gain euid 0 (no_new_privs):
    // the bit and the owner are really there, and the same binary as root does run as root.
    let mut r = s.sh("stat -c '%a %u' /probe/probe-suid; /probe/probe-suid ids");
    r.container.user = Some("1000:1000".into());
    let ran = s.hostile(r).await;
    ran.assert_exited(0);
    assert_eq!(
        ran.out(),
        "4755 0\nuid=1000 euid=1000 gid=1000 egid=1000\n",
        "stderr: {}",
        ran.err()
    );
    // And a job cannot setuid(0) its way back either.
    let mut r = s.sh("su -c id root 2>&1 | head -1; id -u");
    r.container.user = Some("1000:1000".into());
    let ran = s.hostile(r).await;
    ran.assert_exited(0);
    assert!(ran.out().ends_with("1000\n"), "{}", ran.out());
    assert!(!ran.out().contains("uid=0"), "{}", ran.out());
}

#[tokio::test(flavor = "multi_thread")]
async fn ptrace_of_the_init_and_of_a_sibling_fails() {
    let mut s = Suite::new().await;
    let ran = s.hostile(s.probe(&["ptrace"])).await;
    ran.assert_exited(0);
    assert_eq!(
        results(&ran.out()),
        expect(&[
            ("ptrace_attach_init", "EPERM"),
            ("ptrace_attach_sibling", "EPERM"),
            ("ptrace_seize_sibling", "EPERM"),
            // The init (the helper, with every capability) is non-dumpable: its memory stays closed.
            ("open_proc_1_mem", "EACCES"),
        ]),
        "stderr: {}",
        ran.err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_minus_one_kills_only_the_jobs_own_processes() {
    let mut s = Suite::new().await;
    let ran = s
        .hostile(s.sh("sleep 7001 & sleep 7002 & sleep 0.1
             kill -9 -1; sleep 0.2
             ps -o pid,comm > /tmp/ps; tail -n +2 /tmp/ps | sed 's/^ *//'; echo survived"))
        .await;
    ran.assert_exited(0);
    let out = ran.out();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1 nekton-init"), "{out}");
    assert_eq!(lines.next(), Some("2 sh"), "{out}");
    assert!(lines.next().unwrap().ends_with(" ps"), "{out}");
    assert_eq!(lines.next(), Some("survived"), "{out}");
    assert!(marker_processes("7001").is_empty() && marker_processes("7002").is_empty());
    // SIGKILL and SIGSTOP from inside to the namespace's init are ignored by the kernel (other
    // signals it forwards to the job, as an init should): the job goes on.
    let ran = s
        .hostile(s.sh("kill -9 1; kill -STOP 1; sleep 0.1; echo alive"))
        .await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "alive\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_files_stay_out_of_reach() {
    let mut s = Suite::new().await;
    let p = s.host.secret_path.display().to_string();
    let script = format!(
        "for f in {p} /proc/1/root{p} /proc/self/root{p} ../../../..{p} /proc/1/cwd{p} \
                  /proc/self/cwd/../..{p} /sys/../..{p}; do cat $f 2>/dev/null; done
         ln -s {p} /tmp/l; cat /tmp/l 2>/dev/null
         ln -s /proc/1/root /tmp/r; cat /tmp/r{p} 2>/dev/null
         ls /proc/1/root/ 2>&1 | head -1
         cd /; cd ..; cd ..; pwd -P; readlink /proc/self/cwd; readlink /proc/self/root
         [ \"$(ls /)\" = \"$(ls /../../..)\" ] && echo same-root
         /probe/probe fds
         ls /proc/self/fd/ | tr '\\n' ' '; echo
         cat /proc/1/environ 2>/dev/null | head -c 1; echo environ-done"
    );
    let mut r = s.sh(&script);
    r.container.workdir = Some("/tmp".into());
    let ran = s.hostile(r).await;
    ran.assert_exited(0);
    let out = ran.out();
    assert!(!out.contains(&s.host.secret), "{out}");
    assert_eq!(
        out,
        "ls: /proc/1/root/: Permission denied\n/\n/\n/\nsame-root\n0 1 2\n0 1 2 3 \nenviron-done\n",
        "stderr: {}",
        ran.err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kernel_knobs_and_cgroup_release_agents_are_out_of_reach() {
    let mut s = Suite::new().await;
    let ran = s
        .hostile(s.sh(
            "echo nekton-hostile-core > /proc/sys/kernel/core_pattern 2>/dev/null && echo core_pattern-written
             echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-written
             echo 3 > /proc/sys/vm/drop_caches 2>/dev/null && echo drop_caches-written
             echo nekton > /proc/sys/kernel/hostname 2>/dev/null && echo proc-hostname-written
             echo /tmp/x > /sys/kernel/uevent_helper 2>/dev/null && echo uevent_helper-written
             find / -xdev -name release_agent 2>/dev/null
             find /sys/fs/cgroup 2>/dev/null | head -3
             mkdir -p /tmp/cg; mount -t cgroup -o memory cg /tmp/cg 2>/dev/null && echo cgroup-mounted
             mount -t cgroup2 cg /tmp/cg 2>/dev/null && echo cgroup2-mounted
             echo end",
        ))
        .await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "/sys/fs/cgroup\nend\n", "stderr: {}", ran.err());
}

#[tokio::test(flavor = "multi_thread")]
async fn network_off_reaches_nothing_of_the_host() {
    let mut s = Suite::new().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    // An abstract Unix socket (abstract names are per network namespace).
    let name = format!("nekton-hostile-{}", std::process::id());
    let abs = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        std::os::unix::net::UnixListener::bind_addr(&addr).unwrap()
    };
    abs.set_nonblocking(true).unwrap();
    let port_s = port.to_string();
    let script = format!(
        "/probe/probe connect 127.0.0.1 {port_s}
         /probe/probe connect 169.254.169.254 80
         /probe/probe abstract {name}
         ls /sys/class/net | tr '\\n' ' '; echo
         ls /run/postgresql /var/run/postgresql 2>&1 | wc -l"
    );
    let ran = s.hostile(s.sh(&script)).await;
    ran.assert_exited(0);
    // 127.0.0.1 is the job's own loopback: refused when `lo` is up, unreachable while it is
    // down; never the host's listener.
    let out = ran.out().replace(
        "connect=ECONNREFUSED\nconnect=ENETUNREACH",
        "connect=ENETUNREACH\nconnect=ENETUNREACH",
    );
    assert_eq!(
        out,
        "connect=ENETUNREACH\nconnect=ENETUNREACH\n\
         connect_abstract=ECONNREFUSED\nlo \n2\n",
        "stderr: {}",
        ran.err()
    );
    assert!(
        listener.accept().is_err(),
        "the host's listener got a connection"
    );
    assert!(
        abs.accept().is_err(),
        "the host's abstract socket got a connection"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn daemons_and_time_bombs_die_with_the_job() {
    let mut s = Suite::new().await;
    let ran = s
        .hostile(s.sh("(sleep 7101; touch /tmp/bomb) &
             (setsid sh -c 'sleep 7102' &) ; nohup sleep 7103 >/dev/null 2>&1 &
             (trap '' TERM HUP; sleep 0.5; sleep 7104) &
             echo started; exit 0"))
        .await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "started\n");
    // Nothing of it runs now, nor a little later (the delayed bomb would start at 0.5 s).
    for _ in 0..2 {
        for m in ["7101", "7102", "7103", "7104"] {
            assert!(
                marker_processes(m).is_empty(),
                "{m}: {:?}",
                marker_processes(m)
            );
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_never_blocks_and_sleepers_and_loops_are_stopped() {
    let mut s = Suite::new().await;
    let ran = s
        .hostile(s.sh("cat; read x; echo \"[$x]\"; cat /dev/tty 2>/dev/null || echo no-tty"))
        .await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "[]\nno-tty\n");

    for script in [
        "mkfifo /tmp/f; cat /tmp/f",
        "sleep 100000",
        "while :; do :; done",
    ] {
        let mut r = s.sh(script);
        r.limits.wall_time = Duration::from_millis(500);
        let t = Instant::now();
        let ran = s.hostile(r).await;
        assert_reason(&ran, OutcomeReason::WallTimeout);
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{script}: {:?}",
            t.elapsed()
        );
    }
    let mut r = s.sh("while :; do :; done");
    r.limits.cpu_time = Some(Duration::from_secs(1));
    let ran = s.hostile(r).await;
    assert_reason(&ran, OutcomeReason::CpuTimeout);
}

/// Runs `req` with an output consumer that only counts and checks bytes (a test collecting a
/// gigabyte would measure itself, not the worker).
async fn run_counting(
    backend: &dyn Backend,
    req: ExecRequest,
    check: impl Fn(Stream, u64, &[u8]) + Send + 'static,
) -> (ExecReport, OutputStats) {
    let (sink, mut rx) = OutputSink::channel(req.limits.output_bytes, 64);
    let stats_sink = sink.clone();
    let consume = tokio::spawn(async move {
        let mut at = [0u64; 2];
        while let Some(c) = rx.recv().await {
            let i = (c.stream == Stream::Stderr) as usize;
            check(c.stream, at[i], &c.data);
            at[i] += c.data.len() as u64;
        }
    });
    let report = backend
        .run(
            req,
            JobIo {
                output: sink,
                cancel: CancellationToken::new(),
            },
        )
        .await;
    // The consumer ends when every sink clone is gone.
    let stats = stats_sink.stats();
    drop(stats_sink);
    consume.await.unwrap();
    (report, stats)
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gigabyte_of_nul_and_invalid_utf8_is_cut_at_the_cap_and_the_worker_stays_flat() {
    let mut s = Suite::new().await;
    // Warm up (first job's allocations), then measure.
    run(&s.env, s.sh("true")).await.assert_exited(0);
    let cap: u64 = 1 << 30;
    let mut r = s.sh(
        "head -c 1048576 /dev/urandom >&2; head -c 536870911 /dev/zero; printf '\\377'; \
         cat /dev/zero",
    );
    r.limits.output_bytes = cap;
    r.limits.wall_time = Duration::from_secs(300);
    let rss_before = vm_rss_kib();
    let zeros = vec![0u8; 1 << 20];
    let (report, stats) = run_counting(s.env.backend.as_ref(), r, move |stream, at, data| {
        if stream != Stream::Stdout {
            return;
        }
        let special = 536_870_911u64;
        if (at..at + data.len() as u64).contains(&special) {
            let i = (special - at) as usize;
            assert_eq!(data[i], 0xff, "stdout byte {special}");
            assert!(data[..i] == zeros[..i] && data[i + 1..] == zeros[..data.len() - i - 1]);
        } else {
            assert!(
                data == &zeros[..data.len()],
                "stdout bytes at {at} are not all NUL"
            );
        }
    })
    .await;
    let rss_after = vm_rss_kib();
    assert_eq!(
        report.outcome.reason,
        OutcomeReason::OutputLimit,
        "{report:?}"
    );
    assert_eq!(stats.stdout_bytes, cap, "{stats:?}");
    assert!(stats.stdout_truncated, "{stats:?}");
    assert_eq!(
        (stats.stderr_bytes, stats.stderr_truncated),
        (1 << 20, false)
    );
    // 1 GiB went through; the worker grew by far less than that.
    assert!(
        rss_after.saturating_sub(rss_before) < 128 * 1024,
        "worker RSS {rss_before} KiB -> {rss_after} KiB"
    );
    s.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_inode_and_shm_floods_end_in_enospc() {
    let mut s = Suite::new().await;
    // The test env's writable layer is a 64 MiB tmpfs, /dev/shm 8 MiB, /dev 64 inodes.
    let ran = s
        .hostile(s.sh(
            "dd if=/dev/zero of=/big bs=1M count=200 2>&1 | grep -o 'No space left on device' | head -1
             rm /big
             i=0; while printf '' 2>/dev/null > /f$i; do i=$((i+1)); done; echo files=$i
             dd if=/dev/zero of=/dev/shm/big bs=1M count=100 2>&1 | grep -o 'No space left on device' | head -1
             i=0; while printf '' 2>/dev/null > /dev/x$i; do i=$((i+1)); done; echo dev-files=$i
             echo still-fine",
        ))
        .await;
    ran.assert_exited(0);
    let out = ran.out();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "No space left on device", "{out}");
    let files: u64 = lines[1].strip_prefix("files=").unwrap().parse().unwrap();
    // nr_inodes = 64 MiB / 4 KiB = 16384, minus what the image and the runtime created.
    assert!((10_000..16_384).contains(&files), "{out}");
    assert_eq!(lines[2], "No space left on device", "{out}");
    let dev: u64 = lines[3]
        .strip_prefix("dev-files=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(dev < 64, "{out}");
    assert_eq!(lines[4], "still-fine");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_planted_for_the_next_job_are_gone() {
    let mut s = Suite::new().await;
    let store = s.env.tmp.path().join("s");
    let before = image_support::tree(&store);
    let ran = s
        .hostile(s.sh(
            "echo planted > /planted; echo x > /tmp/x; echo x > /dev/shm/x; mkdir -p /var/tmp
             echo x > /var/tmp/x; echo '#!/bin/sh' > /bin/evil; chmod +x /bin/evil
             echo 'echo hijacked' > /probe/probe; echo hijacked > /etc/profile; rm /bin/ls; echo ok",
        ))
        .await;
    ran.assert_exited(0);
    let ran = s
        .hostile(s.sh(
            "ls /planted /tmp/x /dev/shm/x /var/tmp/x /bin/evil 2>&1 | grep -c 'No such file'
             cat /etc/profile 2>/dev/null; ls /bin/ls; /probe/probe ids",
        ))
        .await;
    ran.assert_exited(0);
    assert_eq!(
        ran.out(),
        "5\n/bin/ls\nuid=0 euid=0 gid=0 egid=0\n",
        "stderr: {}",
        ran.err()
    );
    assert_eq!(
        image_support::tree(&store),
        before,
        "the image store changed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malicious_images_with_symlinked_proc_dev_or_sys_are_refused() {
    use futures::FutureExt;
    let mut s = Suite::new().await;
    let target = s.env.tmp.path().display().to_string();
    // A symlink where the runtime mounts is refused when the layer is extracted (the runtime's
    // own `openat2(RESOLVE_NO_SYMLINKS)` of its mount targets is the second line).
    for (what, layer) in [
        ("proc", TarBuilder::new().symlink("proc", "/").finish()),
        ("dev", TarBuilder::new().symlink("dev", &target).finish()),
        (
            "sys",
            TarBuilder::new()
                .dir("x/", 0o755)
                .symlink("sys", "x/../../../..")
                .finish(),
        ),
    ] {
        let imported = std::panic::AssertUnwindSafe(s.env.busybox(
            &format!("evil-{what}"),
            &[layer],
            default_config(),
        ))
        .catch_unwind()
        .await;
        let err = imported.expect_err("the image was imported");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains(&format!("`{what}` must be a directory")),
            "{what}: {msg}"
        );
    }
    // Nothing was created in the host directory the symlinked /dev pointed at, and the host
    // and the backend are fine.
    let names: Vec<_> = std::fs::read_dir(s.env.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| ["null", "zero", "pts", "shm", "ptmx"].contains(&n.as_str()))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    let ran = s.hostile(s.sh("echo fine")).await;
    ran.assert_exited(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn many_threads_work_and_clone3_falls_back() {
    let mut s = Suite::new().await;
    let ran = s.hostile(s.probe(&["threads", "50"])).await;
    ran.assert_exited(0);
    assert_eq!(ran.out(), "threads=50\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn fork_and_thread_bombs_stop_at_the_pids_limit() {
    let mut s = Suite::new().await;
    // Forks and threads as fast as it can, forever: held at the pids limit, stopped at the wall
    // limit; the honest job beside it runs normally.
    let mut r = s.probe(&["bomb"]);
    r.limits.pids = Some(64);
    r.limits.wall_time = Duration::from_secs(2);
    let t = Instant::now();
    let ran = s.hostile(r).await;
    assert_reason(&ran, OutcomeReason::WallTimeout);
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert_eq!(
        ran.report.usage.pids_peak,
        Some(64),
        "{:?}",
        ran.report.usage
    );
    assert_eq!(
        ran.report.usage.pids_limit_hit,
        Some(true),
        "{:?}",
        ran.report.usage
    );
    // A shell fork bomb too, started from a subshell: the job's own shell forks only that
    // subshell, before the bomb exists, then waits in a builtin loop. (Run by the job's shell
    // itself, the bomb's first pipeline could take every pid before the shell forked its second
    // member; a non-interactive shell that cannot fork exits 2 — seen in CI. `sleep` after the
    // bomb fails the same way.)
    let mut r = s.sh("(b(){ b | b & }; b); while :; do :; done");
    r.limits.pids = Some(32);
    r.limits.wall_time = Duration::from_secs(2);
    let ran = s.hostile(r).await;
    assert_reason(&ran, OutcomeReason::WallTimeout);
    assert_eq!(
        ran.report.usage.pids_peak,
        Some(32),
        "{:?}",
        ran.report.usage
    );
    assert_eq!(
        ran.report.usage.pids_limit_hit,
        Some(true),
        "{:?}",
        ran.report.usage
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_bombs_end_as_memory_limit() {
    let mut s = Suite::new().await;
    let limit: u64 = 64 << 20;
    // Heap, private and shared anonymous memory, by the main process or a child.
    for args in [
        &["alloc", "1024"][..],
        &["mmap", "1024"],
        &["shmem", "1024"],
    ] {
        let mut r = s.probe(args);
        r.limits.memory_bytes = limit;
        let ran = s.hostile(r).await;
        assert_reason(&ran, OutcomeReason::MemoryLimit);
        assert_eq!(ran.out(), "", "{args:?}");
        let peak = ran.report.usage.memory_peak_bytes.unwrap();
        assert!(peak <= limit, "{args:?}: peak {peak}");
    }
    let mut r = s.sh("/probe/probe alloc 1024; echo child=$?");
    r.limits.memory_bytes = limit;
    let ran = s.hostile(r).await;
    assert_reason(&ran, OutcomeReason::MemoryLimit);
    // Usually the child alone is killed and the shell reports it; under heavy load the kernel
    // may pick the shell as a second victim before the first one's memory is freed. Either way
    // the record says memory_limit.
    assert!(
        ["child=137\n", ""].contains(&ran.out().as_str()),
        "{}",
        ran.out()
    );
    // The writable layer is tmpfs: writing to it is memory too.
    let mut r = s.sh("head -c 200000000 /dev/zero > /big; echo wrote=$?");
    r.limits.memory_bytes = limit;
    r.limits.disk_bytes = Some(512 << 20);
    let ran = s.hostile(r).await;
    assert_reason(&ran, OutcomeReason::MemoryLimit);
}
