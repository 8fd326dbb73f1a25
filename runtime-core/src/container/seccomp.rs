//! The seccomp profile of container jobs: the reviewed data file `seccomp/profile.json`,
//! compiled with `seccompiler` once per backend (in the worker, before any fork) and installed
//! by the job's process (P3) as the last step before `execve`.
//!
//! The profile has three parts, installed as three filters in this order:
//! 1. the **allowlist** (`allow`): every syscall not listed fails with `EPERM`; some entries
//!    carry argument checks (`clone` and `unshare` without namespace flags, `socket` without
//!    `AF_VSOCK`, `personality` with Docker's values). One filter has one match action, so the
//!    two `ENOSYS` parts are filters of their own;
//! 2. **`enosys`** (`clone3`): its flags live in memory seccomp cannot read, so it must fail —
//!    with `ENOSYS`, which makes C libraries fall back to the checked `clone`;
//! 3. **`newer_than`**: syscall numbers above the newest one the profile was reviewed against
//!    get `ENOSYS` too, so libraries fall back as on an older kernel.
//!
//! When several filters answer `ERRNO`, the kernel keeps the most recently installed one's
//! value: that is why the `ENOSYS` filters come after the allowlist. Syscalls of another ABI
//! (i386, x32 — the arch check of seccompiler's programs) kill the process.
//!
//! `deny` lists what is deliberately not allowed, with reasons; it is validated (known names,
//! never also allowed) but not installed — the allowlist already refuses it.
//!
//! Cost: installing the three filters (~1,900 BPF instructions on x86_64) takes ≈ 0.9–1 ms per
//! job on the project's 2-core machine (`installed_filters_answer_as_the_profile_says` prints
//! it). It grows linearly with the program's length: on attach the kernel evaluates the filter
//! once per syscall number to build its allow cache, and seccompiler emits a linear chain. A
//! binary-search layout would cut that to tens of µs; allowed syscalls themselves then cost
//! nothing extra (cached).

use std::collections::{BTreeMap, BTreeSet};

use nix::errno::Errno;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use serde::Deserialize;
use serde_json::{Value, json};

/// The profile, as reviewed in the repository.
pub(crate) const PROFILE_JSON: &str = include_str!("seccomp/profile.json");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    version: u32,
    name: String,
    #[allow(dead_code)]
    description: String,
    allow: Vec<Group>,
    enosys: Group,
    newer_than: NewerThan,
    deny: Vec<Group>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    names: Vec<String>,
    /// Only on these architectures (seccompiler's names: `x86_64`, `aarch64`, `riscv64`).
    #[serde(default)]
    arches: Option<Vec<String>>,
    /// seccompiler argument conditions (all must hold), passed through as they are.
    #[serde(default)]
    args: Option<Value>,
    /// Why the entry is there: required on every group.
    comment: String,
}

impl Group {
    fn applies_to(&self, arch: &str) -> bool {
        self.arches
            .as_ref()
            .is_none_or(|a| a.iter().any(|x| x == arch))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewerThan {
    number: i64,
    count: i64,
    #[allow(dead_code)]
    comment: String,
}

/// The compiled profile: BPF programs to install in order.
pub(crate) struct Filters {
    pub name: String,
    pub version: u32,
    programs: Vec<BpfProgram>,
}

impl std::fmt::Debug for Filters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filters")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("instructions", &self.instructions())
            .finish()
    }
}

/// seccomp(2)'s program header (`struct sock_fprog`) over seccompiler's instructions.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const seccompiler::sock_filter,
}

fn compile_json(name: &str, filter: Value, arch: TargetArch) -> Result<BpfProgram, String> {
    let doc = serde_json::to_vec(&json!({ name: filter })).map_err(|e| e.to_string())?;
    let mut map = seccompiler::compile_from_json(&doc[..], arch)
        .map_err(|e| format!("the `{name}` part does not compile: {e}"))?;
    map.remove(name)
        .ok_or_else(|| format!("the `{name}` part compiled to nothing"))
}

impl Filters {
    /// Compiles the profile for the architecture this process runs on.
    pub fn compile() -> Result<Self, String> {
        Self::compile_for(std::env::consts::ARCH)
    }

    /// Compiles (and checks) the profile for `arch` (`x86_64`, `aarch64`, `riscv64`).
    pub fn compile_for(arch_name: &str) -> Result<Self, String> {
        let arch = TargetArch::try_from(arch_name).map_err(|_| {
            format!(
                "the seccomp profile has no syscall table for the `{arch_name}` architecture \
                 (supported: x86_64, aarch64, riscv64); container jobs cannot be confined here"
            )
        })?;
        let profile: Profile = serde_json::from_str(PROFILE_JSON)
            .map_err(|e| format!("seccomp/profile.json is not a valid profile: {e}"))?;
        let mut rules = Vec::new();
        let mut unconditional = BTreeSet::new();
        let mut conditional = BTreeSet::new();
        for g in profile.allow.iter().filter(|g| g.applies_to(arch_name)) {
            if g.comment.trim().is_empty() {
                return Err(format!("allow entry {:?} has no comment", g.names));
            }
            for n in &g.names {
                match &g.args {
                    Some(args) => {
                        conditional.insert(n.as_str());
                        rules.push(json!({"syscall": n, "args": args}));
                    }
                    None => {
                        if !unconditional.insert(n.as_str()) {
                            return Err(format!("`{n}` is allowed twice"));
                        }
                        rules.push(json!({"syscall": n}));
                    }
                }
            }
        }
        // seccompiler would turn "allowed" + "allowed if ..." into "allowed if ...": refuse the
        // ambiguity instead.
        if let Some(n) = unconditional.intersection(&conditional).next() {
            return Err(format!(
                "`{n}` is allowed both unconditionally and with argument checks"
            ));
        }
        let mut denied = Vec::new();
        for g in profile.deny.iter().filter(|g| g.applies_to(arch_name)) {
            for n in &g.names {
                if unconditional.contains(n.as_str()) || conditional.contains(n.as_str()) {
                    return Err(format!("`{n}` is both allowed and denied"));
                }
                denied.push(json!({"syscall": n}));
            }
        }
        for n in &profile.enosys.names {
            if unconditional.contains(n.as_str()) || conditional.contains(n.as_str()) {
                return Err(format!("`{n}` is both allowed and answered ENOSYS"));
            }
        }
        let allow = compile_json(
            "allow",
            json!({
                "mismatch_action": {"errno": libc::EPERM},
                "match_action": "allow",
                "filter": rules,
            }),
            arch,
        )?;
        // Validates the names of the deny list (a typo there would hide a decision).
        compile_json(
            "deny",
            json!({
                "mismatch_action": "allow",
                "match_action": {"errno": libc::EPERM},
                "filter": denied,
            }),
            arch,
        )?;
        let enosys = compile_json(
            "enosys",
            json!({
                "mismatch_action": "allow",
                "match_action": {"errno": libc::ENOSYS},
                "filter": profile.enosys.names.iter().map(|n| json!({"syscall": n})).collect::<Vec<_>>(),
            }),
            arch,
        )?;
        let nt = &profile.newer_than;
        if !(424..100_000).contains(&nt.number) || !(1..=256).contains(&nt.count) {
            return Err("newer_than: number must be >= 424 and count in 1..=256".into());
        }
        let newer: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = (nt.number + 1
            ..=nt.number + nt.count)
            .map(|n| (n, Vec::new()))
            .collect();
        let newer = SeccompFilter::new(
            newer,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .and_then(BpfProgram::try_from)
        .map_err(|e| format!("the `newer_than` part does not compile: {e}"))?;
        Ok(Self {
            name: profile.name,
            version: profile.version,
            programs: vec![allow, enosys, newer],
        })
    }

    /// Whether this kernel has seccomp filters with the actions the profile uses
    /// (`CONFIG_SECCOMP_FILTER`); the backend refuses to start without them.
    pub fn kernel_support() -> Result<(), String> {
        for action in [libc::SECCOMP_RET_ERRNO, libc::SECCOMP_RET_KILL_PROCESS] {
            // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32 from a valid pointer.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_GET_ACTION_AVAIL,
                    0 as libc::c_ulong,
                    &action as *const u32,
                )
            };
            if r != 0 {
                return Err(format!(
                    "the kernel cannot install seccomp filters ({}): container jobs cannot be \
                     confined; use a kernel built with CONFIG_SECCOMP_FILTER",
                    Errno::last().desc()
                ));
            }
        }
        Ok(())
    }

    /// Total BPF instructions of the installed programs.
    pub fn instructions(&self) -> usize {
        self.programs.iter().map(Vec::len).sum()
    }

    /// Installs the filters on the calling thread. Child-safe (no allocation, no lock): called
    /// by P3 after `no_new_privs`, as the last step before `execve`.
    pub fn install(&self) -> Result<(), Errno> {
        for p in &self.programs {
            let prog = SockFprog {
                // compile_for's programs are at most BPF_MAXINSNS (4096) long: seccompiler
                // refuses longer ones.
                len: p.len() as libc::c_ushort,
                filter: p.as_ptr(),
            };
            // SAFETY: `prog` points at `p`, which outlives the call; the kernel copies the
            // program. Flags 0: this process is single-threaded.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0 as libc::c_ulong,
                    &prog as *const SockFprog,
                )
            };
            if r != 0 {
                return Err(Errno::last());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_compiles_for_every_supported_architecture() {
        for arch in ["x86_64", "aarch64"] {
            let f = Filters::compile_for(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
            assert_eq!(f.programs.len(), 3);
            assert!(f.instructions() < 3 * 4096, "{arch}: {f:?}");
        }
        let e = Filters::compile_for("mips").unwrap_err();
        assert!(e.contains("`mips`"), "{e}");
    }

    /// Installs the compiled filters in a forked child and checks what the kernel answers; also
    /// reports what installing costs (once per job, in P3).
    #[test]
    fn installed_filters_answer_as_the_profile_says() {
        let f = Filters::compile().unwrap();
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only makes raw syscalls (no allocation, no locks) and `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let now = || {
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: `ts` is a valid timespec.
                unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
                ts.tv_sec * 1_000_000_000 + ts.tv_nsec
            };
            let errno = |r: libc::c_long| if r < 0 { Errno::last() as i64 } else { 0 };
            let mut out = [0i64; 6];
            // SAFETY: raw syscalls with integer or null arguments in a single-threaded child.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let t0 = now();
                out[0] = f.install().map(|()| 0).unwrap_or_else(|e| e as i64);
                out[1] = now() - t0;
                out[2] = errno(libc::syscall(libc::SYS_keyctl, 0, -3, 0));
                out[3] = errno(libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0));
                out[4] = errno(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER));
                out[5] = errno(libc::syscall(libc::SYS_getppid));
                libc::write(fds[1], out.as_ptr().cast(), std::mem::size_of_val(&out));
                libc::_exit(0);
            }
        }
        // SAFETY: closing our copy of the write end.
        unsafe { libc::close(fds[1]) };
        let mut out = [0i64; 6];
        // SAFETY: reading at most `out`'s size into it.
        let n = unsafe { libc::read(fds[0], out.as_mut_ptr().cast(), std::mem::size_of_val(&out)) };
        let mut status = 0;
        // SAFETY: reaping our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(n as usize, std::mem::size_of_val(&out), "status {status}");
        assert_eq!(out[0], 0, "install failed: errno {}", out[0]);
        assert_eq!(out[2], libc::EPERM as i64, "keyctl");
        assert_eq!(out[3], libc::ENOSYS as i64, "clone3");
        assert_eq!(out[4], libc::EPERM as i64, "unshare(CLONE_NEWUSER)");
        assert_eq!(out[5], 0, "getppid");
        println!(
            "seccomp: {} instructions in 3 filters, installed in {} µs",
            f.instructions(),
            out[1] / 1000
        );
    }

    #[test]
    fn the_profile_keeps_its_promises() {
        let p: Profile = serde_json::from_str(PROFILE_JSON).unwrap();
        assert!(p.version >= 1);
        let allowed: BTreeSet<&str> = p
            .allow
            .iter()
            .flat_map(|g| g.names.iter().map(String::as_str))
            .collect();
        let denied: BTreeSet<&str> = p
            .deny
            .iter()
            .flat_map(|g| g.names.iter().map(String::as_str))
            .collect();
        // What the design (sandbox.md) and issue 4 require to be refused outright.
        for must in [
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "userfaultfd",
            "perf_event_open",
            "mount",
            "umount2",
            "fsopen",
            "fsmount",
            "move_mount",
            "open_tree",
            "pivot_root",
            "open_by_handle_at",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "ptrace",
            "setns",
            "swapon",
            "swapoff",
            "reboot",
            "acct",
            "clock_settime",
            "settimeofday",
        ] {
            assert!(!allowed.contains(must), "{must} is allowed");
            assert!(denied.contains(must), "{must} is not in the deny list");
        }
        assert_eq!(p.enosys.names, ["clone3"]);
        // clone and unshare only with namespace-flag checks.
        for name in ["clone", "unshare"] {
            for g in p.allow.iter().filter(|g| g.names.iter().any(|n| n == name)) {
                let args = g.args.as_ref().expect("argument check");
                let mask = args[0]["op"]["masked_eq"].as_u64().unwrap();
                let ns = (libc::CLONE_NEWNS
                    | libc::CLONE_NEWCGROUP
                    | libc::CLONE_NEWUTS
                    | libc::CLONE_NEWIPC
                    | libc::CLONE_NEWUSER
                    | libc::CLONE_NEWPID
                    | libc::CLONE_NEWNET) as u64;
                assert_eq!(mask & ns, ns, "{name}");
                assert_eq!(args[0]["val"], 0, "{name}");
                if name == "unshare" {
                    assert_ne!(mask & libc::CLONE_NEWTIME as u64, 0);
                }
            }
        }
    }
}
