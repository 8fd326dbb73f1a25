//! The seccomp profile of container jobs: the reviewed data file `seccomp/profile.json`,
//! compiled once per backend (in the worker, before any fork) into one BPF program, which the
//! job's process (P3) installs as the last step before `execve`.
//!
//! The profile has three parts:
//! 1. the **allowlist** (`allow`): every syscall not listed fails with `EPERM`; some entries
//!    carry argument checks (`clone` and `unshare` without namespace flags, `socket` without
//!    `AF_VSOCK`, `personality` with Docker's values);
//! 2. **`enosys`** (`clone3`): its flags live in memory seccomp cannot read, so it must fail —
//!    with `ENOSYS`, which makes C libraries fall back to the checked `clone`;
//! 3. **`newer_than`**: syscall numbers above the newest one the profile was reviewed against
//!    get `ENOSYS` too, so libraries fall back as on an older kernel.
//!
//! `seccompiler` parses and checks the profile (syscall names of its per-architecture tables,
//! argument conditions) and compiles each part into a filter of its own, as they were installed
//! until these programs proved too slow to attach (below). Those three programs are now the
//! *reference*: the installed program is generated here and decides exactly what they decide
//! together (the kernel keeps the most restrictive answer, and of two `ERRNO` answers the later
//! filter's, so `ENOSYS` wins over the allowlist's answer). Its layout:
//! - the arch check, as seccompiler's: a syscall of another ABI (i386 `int 0x80`) kills the
//!   process. x32 syscalls carry x86_64's arch with bit 30 set in the number: they fall in the
//!   default range, `EPERM`, as with seccompiler's programs;
//! - a balanced binary search (`JGE`) on the syscall number over ranges with one answer each
//!   (allowed, `EPERM`, `ENOSYS`), down to `RET` leaves or, for a syscall with argument checks,
//!   seccompiler's conditions (64-bit comparisons as high and low words, masked checks)
//!   followed by `RET ALLOW`, then `RET EPERM` when no rule holds. A jump farther than a
//!   conditional jump's 8-bit offset goes through a `JA`.
//!
//! The tests check the equivalence with a classic-BPF interpreter: every syscall number
//! 0..=1023 (and x32's, and extremes), native and foreign arch values, and for syscalls with
//! argument checks every boundary of every condition
//! (`the_generated_program_decides_as_the_seccompiler_filters`); every operator seccompiler
//! has, beyond the ones the profile uses (`every_condition_operator_matches_seccompiler`).
//!
//! `deny` lists what is deliberately not allowed, with reasons; it is validated (known names,
//! never also allowed) but not installed — the allowlist already refuses it.
//!
//! Cost: on attach the kernel evaluates the filter once per syscall number to build its allow
//! cache, so attaching costs the number of syscalls times the path length. seccompiler's linear
//! chains (1,881 instructions in three filters on x86_64) took ≈ 0.9 ms per job on the
//! project's 2-core machine, +30 % on a `/bin/true` job; the generated program (169
//! instructions, at most ~20 on any path) takes ≈ 60–70 µs;
//! `installed_filters_answer_as_the_profile_says` prints both. Allowed syscalls without
//! argument checks cost nothing extra (cached).

use std::collections::{BTreeMap, BTreeSet};

use nix::errno::Errno;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompFilter, TargetArch,
    sock_filter,
};
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

/// One argument condition of an `allow` entry, in seccompiler's JSON form (the same fields and
/// types seccompiler parses).
#[derive(Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
struct Cond {
    index: u8,
    #[serde(rename = "type")]
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    val: u64,
    #[serde(default)]
    #[allow(dead_code)]
    comment: Option<Value>,
}

/// The compiled profile: one BPF program (see the module docs for its layout).
pub(crate) struct Filters {
    pub name: String,
    pub version: u32,
    program: BpfProgram,
    /// seccompiler's three programs for the same profile, installed in this order before the
    /// generated program replaced them: the reference the equivalence tests compare against.
    #[cfg(test)]
    reference: Vec<BpfProgram>,
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
    filter: *const sock_filter,
}

// Classic BPF opcodes (linux/bpf_common.h) of the generated program.
/// `BPF_LD | BPF_W | BPF_ABS`: A = 32-bit word at offset k of `struct seccomp_data`.
const LD_W_ABS: u16 = 0x20;
/// `BPF_ALU | BPF_AND | BPF_K`: A &= k.
const AND_K: u16 = 0x54;
/// `BPF_JMP | BPF_JA`: skip k instructions (32-bit offset).
const JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`: A == k ? skip jt : skip jf.
const JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGT | BPF_K`: A > k (unsigned).
const JGT_K: u16 = 0x25;
/// `BPF_JMP | BPF_JGE | BPF_K`: A >= k (unsigned).
const JGE_K: u16 = 0x35;
/// `BPF_RET | BPF_K`: the filter's answer is k.
const RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`: syscall number, audit arch, first argument. Arguments are
/// 64-bit; every supported architecture is little-endian, so an argument's low word comes first.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARGS: u32 = 16;
/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// `AUDIT_ARCH_*` (linux/audit.h) of the architectures seccompiler has tables for: the value
/// seccompiler's programs check `seccomp_data.arch` against.
fn audit_arch(arch: TargetArch) -> u32 {
    const EM_64BIT_LE: u32 = 0x8000_0000 | 0x4000_0000;
    match arch {
        TargetArch::x86_64 => 62 | EM_64BIT_LE,
        TargetArch::aarch64 => 183 | EM_64BIT_LE,
        TargetArch::riscv64 => 243 | EM_64BIT_LE,
    }
}

/// What the program answers for one syscall number (of the profile's architecture).
#[derive(Clone, PartialEq)]
enum Decision {
    /// This return value, whatever the arguments.
    Ret(u32),
    /// `ALLOW` if all conditions of one of the rules hold, else `EPERM`.
    Checked(Vec<Vec<Cond>>),
}

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

fn compile_json(name: &str, filter: Value, arch: TargetArch) -> Result<BpfProgram, String> {
    let doc = serde_json::to_vec(&json!({ name: filter })).map_err(|e| e.to_string())?;
    let mut map = seccompiler::compile_from_json(&doc[..], arch)
        .map_err(|e| format!("the `{name}` part does not compile: {e}"))?;
    map.remove(name)
        .ok_or_else(|| format!("the `{name}` part compiled to nothing"))
}

/// The numbers of `names` on `arch`, from seccompiler's syscall tables (which are private): one
/// single-syscall filter per name, whose syscall comparison (`LD nr; JEQ <number>`, right after
/// the arch check) carries the number.
fn syscall_numbers(
    names: &BTreeSet<&str>,
    arch: TargetArch,
) -> Result<BTreeMap<String, u32>, String> {
    let doc: serde_json::Map<String, Value> = names
        .iter()
        .map(|n| {
            let filter = json!({
                "mismatch_action": "allow",
                "match_action": {"errno": libc::EPERM},
                "filter": [{"syscall": n}],
            });
            (n.to_string(), filter)
        })
        .collect();
    let doc = serde_json::to_vec(&Value::Object(doc)).map_err(|e| e.to_string())?;
    let map = seccompiler::compile_from_json(&doc[..], arch)
        .map_err(|e| format!("the syscall names do not resolve: {e}"))?;
    names
        .iter()
        .map(|&n| match map.get(n).and_then(|p| p.get(3..5)) {
            Some([ld, cmp]) if ld.code == LD_W_ABS && ld.k == DATA_NR && cmp.code == JEQ_K => {
                Ok((n.to_string(), cmp.k))
            }
            _ => Err(format!(
                "seccompiler's program for `{n}` has an unexpected layout"
            )),
        })
        .collect()
}

/// Where a jump of an argument check goes.
#[derive(Clone, Copy)]
enum To {
    /// The next instruction.
    Next,
    /// The condition holds: the instruction after the check.
    Pass,
    /// The condition fails: the next rule (`fail_skip` instructions after the check).
    Fail,
}

/// The instructions of one argument condition, with seccompiler's semantics: `qword` compares
/// all 64 bits (high word, then low word), `dword` the low word only; `masked_eq` compares
/// `arg & mask` with `val & mask`. Falls through when the condition holds; jumps
/// `fail_skip` instructions past its end when it does not.
fn condition(c: &Cond, fail_skip: usize) -> Result<Vec<sock_filter>, String> {
    use To::{Fail, Next, Pass};
    if c.index > 5 {
        return Err(format!(
            "argument index {} (syscalls have 6 arguments)",
            c.index
        ));
    }
    let qword = c.len == SeccompCmpArgLen::Qword;
    if !qword && c.val > u64::from(u32::MAX) {
        return Err(format!(
            "a dword condition compares with {:#x}, which does not fit",
            c.val
        ));
    }
    let lo_at = DATA_ARGS + 8 * u32::from(c.index);
    let hi_at = lo_at + 4;
    let (val, mask) = match c.op {
        SeccompCmpOp::MaskedEq(m) => (c.val & m, m),
        _ => (c.val, u64::MAX),
    };
    let (hi, lo) = ((val >> 32) as u32, val as u32);
    let ld = |at| (LD_W_ABS, at, Next, Next);
    let mut ops: Vec<(u16, u32, To, To)> = Vec::new();
    match c.op {
        SeccompCmpOp::Eq => {
            if qword {
                ops.extend([ld(hi_at), (JEQ_K, hi, Next, Fail)]);
            }
            ops.extend([ld(lo_at), (JEQ_K, lo, Pass, Fail)]);
        }
        SeccompCmpOp::Ne => {
            if qword {
                ops.extend([ld(hi_at), (JEQ_K, hi, Next, Pass)]);
            }
            ops.extend([ld(lo_at), (JEQ_K, lo, Fail, Pass)]);
        }
        SeccompCmpOp::Gt | SeccompCmpOp::Ge => {
            if qword {
                ops.extend([ld(hi_at), (JGT_K, hi, Pass, Next), (JEQ_K, hi, Next, Fail)]);
            }
            let op = if c.op == SeccompCmpOp::Gt {
                JGT_K
            } else {
                JGE_K
            };
            ops.extend([ld(lo_at), (op, lo, Pass, Fail)]);
        }
        SeccompCmpOp::Lt | SeccompCmpOp::Le => {
            if qword {
                ops.extend([ld(hi_at), (JGT_K, hi, Fail, Next), (JEQ_K, hi, Next, Pass)]);
            }
            // a < v ⟺ !(a >= v); a <= v ⟺ !(a > v).
            let op = if c.op == SeccompCmpOp::Lt {
                JGE_K
            } else {
                JGT_K
            };
            ops.extend([ld(lo_at), (op, lo, Fail, Pass)]);
        }
        SeccompCmpOp::MaskedEq(_) => {
            if qword {
                ops.extend([
                    ld(hi_at),
                    (AND_K, (mask >> 32) as u32, Next, Next),
                    (JEQ_K, hi, Next, Fail),
                ]);
            }
            ops.extend([
                ld(lo_at),
                (AND_K, mask as u32, Next, Next),
                (JEQ_K, lo, Pass, Fail),
            ]);
        }
    }
    let len = ops.len();
    ops.iter()
        .enumerate()
        .map(|(at, &(code, k, jt, jf))| {
            // Only jumps (class BPF_JMP, which is JA's code) have targets.
            if code & 0x07 != JA {
                return Ok(stmt(code, k));
            }
            let skip = |to| {
                let n = match to {
                    Next => 0,
                    Pass => len - at - 1,
                    Fail => len - at - 1 + fail_skip,
                };
                u8::try_from(n).map_err(|_| "an argument check is too long".to_string())
            };
            Ok(jump(code, k, skip(jt)?, skip(jf)?))
        })
        .collect()
}

/// A leaf of the search: the answer for a range of syscall numbers.
fn leaf(d: &Decision) -> Result<Vec<sock_filter>, String> {
    let rules = match d {
        Decision::Ret(r) => return Ok(vec![stmt(RET_K, *r)]),
        Decision::Checked(rules) => rules,
    };
    // Built from the end: each rule's conditions fall through to its `RET ALLOW`, or jump to
    // the next rule; after the last rule, EPERM.
    let mut code = vec![stmt(RET_K, RET_EPERM)];
    for rule in rules.iter().rev() {
        let mut r = vec![stmt(RET_K, RET_ALLOW)];
        for c in rule.iter().rev() {
            let mut cond = condition(c, r.len())?;
            cond.extend(r);
            r = cond;
        }
        r.extend(code);
        code = r;
    }
    Ok(code)
}

/// A balanced binary search on the syscall number (in A) over `ranges` (`(first number,
/// decision)`, sorted, covering every number from the first's): `JGE` the middle range's first
/// number to the upper half, fall through to the lower half. Relative jumps stay inside the
/// subtree, so subtrees are built independently; when the lower half is longer than a
/// conditional jump reaches (255), the `JGE` jumps to a `JA` (32-bit offset) instead.
fn search(ranges: &[(u32, Decision)]) -> Result<Vec<sock_filter>, String> {
    let mid = ranges.len() / 2;
    if mid == 0 {
        return leaf(&ranges[0].1);
    }
    let (lower, upper) = (search(&ranges[..mid])?, search(&ranges[mid..])?);
    let first = ranges[mid].0;
    let mut code = match u8::try_from(lower.len()) {
        Ok(n) => vec![jump(JGE_K, first, n, 0)],
        Err(_) => vec![
            jump(JGE_K, first, 0, 1),
            stmt(JA, u32::try_from(lower.len()).map_err(|e| e.to_string())?),
        ],
    };
    code.extend(lower);
    code.extend(upper);
    Ok(code)
}

/// The program: the arch check (another ABI → `KILL_PROCESS`, as seccompiler's), then the
/// search over every syscall number (`0..=u32::MAX`: x32's numbers, with bit 30 set, fall in
/// the default range) of `decisions`; numbers not in it get `RET_EPERM`.
fn generate(audit_arch: u32, decisions: &BTreeMap<u32, Decision>) -> Result<BpfProgram, String> {
    let mut ranges: Vec<(u32, Decision)> = Vec::new();
    let mut push = |first: u32, d: Decision| {
        // Neighbours with the same constant answer are one range.
        if let Some((_, last)) = ranges.last()
            && *last == d
            && matches!(d, Decision::Ret(_))
        {
            return;
        }
        ranges.push((first, d));
    };
    let mut next = 0u64;
    for (&nr, d) in decisions {
        if u64::from(nr) > next {
            push(next as u32, Decision::Ret(RET_EPERM));
        }
        push(nr, d.clone());
        next = u64::from(nr) + 1;
    }
    if next <= u64::from(u32::MAX) {
        push(next as u32, Decision::Ret(RET_EPERM));
    }
    let mut program = vec![
        stmt(LD_W_ABS, DATA_ARCH),
        jump(JEQ_K, audit_arch, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_W_ABS, DATA_NR),
    ];
    program.extend(search(&ranges)?);
    if program.len() > MAX_INSNS {
        return Err(format!(
            "the seccomp program has {} instructions (the kernel takes {MAX_INSNS})",
            program.len()
        ));
    }
    Ok(program)
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
        // seccompiler's programs: they validate the names and argument conditions, and are
        // the reference of the equivalence tests (this is how the profile was installed
        // before the program below replaced them).
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

        // The installed program decides, for each syscall number, what the three programs
        // above decide together: the kernel keeps the most restrictive answer, and of two
        // ERRNO answers the later filter's, so ENOSYS (`enosys`, `newer_than`) overrides the
        // allowlist; other numbers are allowed, allowed after argument checks, or EPERM.
        let names: BTreeSet<&str> = unconditional
            .iter()
            .chain(&conditional)
            .copied()
            .chain(profile.enosys.names.iter().map(String::as_str))
            .collect();
        let numbers = syscall_numbers(&names, arch)?;
        let mut decisions = BTreeMap::new();
        for g in profile.allow.iter().filter(|g| g.applies_to(arch_name)) {
            let conds: Option<Vec<Cond>> = match &g.args {
                Some(args) => Some(
                    serde_json::from_value(args.clone())
                        .map_err(|e| format!("allow entry {:?}: {e}", g.names))?,
                ),
                None => None,
            };
            for n in &g.names {
                let nr = numbers[n.as_str()];
                match (
                    &conds,
                    decisions.entry(nr).or_insert(Decision::Checked(Vec::new())),
                ) {
                    (None, d @ Decision::Checked(_)) if *d == Decision::Checked(Vec::new()) => {
                        *d = Decision::Ret(RET_ALLOW)
                    }
                    (Some(c), Decision::Checked(rules)) if !c.is_empty() => rules.push(c.clone()),
                    _ => return Err(format!("`{n}` ({nr}) has conflicting allow entries")),
                }
            }
        }
        for n in &profile.enosys.names {
            decisions.insert(numbers[n.as_str()], Decision::Ret(RET_ENOSYS));
        }
        for nr in nt.number + 1..=nt.number + nt.count {
            decisions.insert(nr as u32, Decision::Ret(RET_ENOSYS));
        }
        let program = generate(audit_arch(arch), &decisions)?;
        #[cfg(not(test))]
        let _ = (allow, enosys, newer);
        Ok(Self {
            name: profile.name,
            version: profile.version,
            program,
            #[cfg(test)]
            reference: vec![allow, enosys, newer],
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

    /// BPF instructions of the installed program.
    pub fn instructions(&self) -> usize {
        self.program.len()
    }

    /// Installs the filter on the calling thread. Child-safe (no allocation, no lock): called
    /// by P3 after `no_new_privs`, as the last step before `execve`.
    pub fn install(&self) -> Result<(), Errno> {
        install_programs(std::slice::from_ref(&self.program))
    }
}

/// Installs `programs` in order (each at most `MAX_INSNS` long). Child-safe.
fn install_programs(programs: &[BpfProgram]) -> Result<(), Errno> {
    for p in programs {
        let prog = SockFprog {
            // At most MAX_INSNS (4096): `generate` and seccompiler refuse longer programs.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_compiles_for_every_supported_architecture() {
        for arch in ["x86_64", "aarch64"] {
            let f = Filters::compile_for(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
            assert!(f.instructions() < 1024, "{arch}: {f:?}");
            assert_eq!(f.reference.len(), 3);
        }
        let e = Filters::compile_for("mips").unwrap_err();
        assert!(e.contains("`mips`"), "{e}");
    }

    /// `struct seccomp_data` as the kernel hands it to a filter (little-endian, as every
    /// supported architecture).
    fn seccomp_data(nr: u32, arch: u32, args: &[u64; 6]) -> [u8; 64] {
        let mut d = [0u8; 64];
        d[0..4].copy_from_slice(&nr.to_le_bytes());
        d[4..8].copy_from_slice(&arch.to_le_bytes());
        d[8..16].copy_from_slice(&0x7f00_1234_5678u64.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            d[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        d
    }

    /// A classic-BPF interpreter for the opcodes seccomp programs here use; panics on anything
    /// else, on a load outside `seccomp_data` or unaligned, and on a jump past the end. Returns
    /// the filter's answer and whether it read an argument.
    fn run(program: &[sock_filter], data: &[u8; 64]) -> (u32, bool) {
        let (mut a, mut pc, mut read_args) = (0u32, 0usize, false);
        loop {
            let i = program
                .get(pc)
                .unwrap_or_else(|| panic!("ran off the end at {pc}"));
            pc += 1;
            let k = i.k as usize;
            let cond = |c: bool| usize::from(if c { i.jt } else { i.jf });
            match i.code {
                LD_W_ABS => {
                    assert!(k.is_multiple_of(4) && k + 4 <= data.len(), "load at {k}");
                    read_args |= k >= DATA_ARGS as usize;
                    a = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                }
                AND_K => a &= i.k,
                JA => pc += k,
                JEQ_K => pc += cond(a == i.k),
                JGT_K => pc += cond(a > i.k),
                JGE_K => pc += cond(a >= i.k),
                0x45 => pc += cond(a & i.k != 0), // BPF_JMP | BPF_JSET | BPF_K
                RET_K => return (i.k, read_args),
                code => panic!("opcode {code:#x} at {}", pc - 1),
            }
        }
    }

    /// What the kernel answers with `programs` installed in this order (seccomp_run_filters):
    /// every filter runs, newest first, and an answer replaces the current one only if its
    /// action is strictly more restrictive — `ACTION_ONLY` compared as signed, which orders
    /// KILL_PROCESS < KILL_THREAD < TRAP < ERRNO < USER_NOTIF < TRACE < LOG < ALLOW; so of two
    /// ERRNO answers, the newest filter's errno is kept.
    fn kernel(programs: &[BpfProgram], data: &[u8; 64]) -> (u32, bool) {
        let action = |r: u32| (r & libc::SECCOMP_RET_ACTION_FULL) as i32;
        let (mut ret, mut read_args) = (libc::SECCOMP_RET_ALLOW, false);
        for p in programs.iter().rev() {
            let (r, args) = run(p, data);
            read_args |= args;
            if action(r) < action(ret) {
                ret = r;
            }
        }
        (ret, read_args)
    }

    #[test]
    fn the_kernel_model_orders_actions_by_precedence() {
        let order = [
            libc::SECCOMP_RET_KILL_PROCESS,
            libc::SECCOMP_RET_KILL_THREAD,
            libc::SECCOMP_RET_TRAP,
            libc::SECCOMP_RET_ERRNO | 1,
            libc::SECCOMP_RET_USER_NOTIF,
            libc::SECCOMP_RET_TRACE,
            libc::SECCOMP_RET_LOG,
            libc::SECCOMP_RET_ALLOW,
        ];
        let ret = |r: u32| vec![stmt(RET_K, r)];
        let data = seccomp_data(0, 0, &[0; 6]);
        for (i, &strong) in order.iter().enumerate() {
            for &weak in &order[i..] {
                for programs in [[ret(strong), ret(weak)], [ret(weak), ret(strong)]] {
                    assert_eq!(
                        kernel(&programs, &data).0,
                        strong,
                        "{strong:#x} vs {weak:#x}"
                    );
                }
            }
        }
        // Two ERRNO answers: the newest filter's errno.
        let errno = |e: i32| ret(libc::SECCOMP_RET_ERRNO | e as u32);
        assert_eq!(kernel(&[errno(1), errno(38)], &data).0, RET_ENOSYS);
        assert_eq!(kernel(&[errno(38), errno(1)], &data).0, RET_EPERM);
    }

    /// Argument values on both sides of a condition comparing with `val` (under `mask`):
    /// equal, one above and below, each of the 64 bits flipped and alone, the high word set or
    /// changed, extremes.
    fn around(val: u64, mask: Option<u64>) -> BTreeSet<u64> {
        let mut values = BTreeSet::from([0, 1, u64::from(u32::MAX), 1 << 32, u64::MAX]);
        let mut vs = vec![val];
        if let Some(m) = mask {
            vs.extend([val & m, val | m, m, !m, val & !m]);
        }
        for v in vs {
            values.extend([v, v.wrapping_add(1), v.wrapping_sub(1), !v]);
            values.extend([v | 0xffff_ffff_0000_0000, v & 0xffff_ffff, v ^ (1 << 32)]);
            values.extend((0..64).flat_map(|b| [v ^ (1 << b), 1 << b]));
        }
        values
    }

    /// `around` every condition of the profile.
    fn boundary_values() -> BTreeSet<u64> {
        let p: Profile = serde_json::from_str(PROFILE_JSON).unwrap();
        let mut values = BTreeSet::new();
        for g in &p.allow {
            let Some(args) = &g.args else { continue };
            let conds: Vec<Cond> = serde_json::from_value(args.clone()).unwrap();
            for c in conds {
                let mask = match c.op {
                    SeccompCmpOp::MaskedEq(m) => Some(m),
                    _ => None,
                };
                values.extend(around(c.val, mask));
            }
        }
        values
    }

    /// Every operator seccompiler has, on dwords and qwords, alone and in rules of several
    /// conditions (AND) and several rules (OR), answers as seccompiler's program — not only
    /// the ones the profile uses today.
    #[test]
    fn every_condition_operator_matches_seccompiler() {
        use seccompiler::{SeccompCondition, SeccompRule};
        let ops = [
            SeccompCmpOp::Eq,
            SeccompCmpOp::Ne,
            SeccompCmpOp::Gt,
            SeccompCmpOp::Ge,
            SeccompCmpOp::Lt,
            SeccompCmpOp::Le,
            SeccompCmpOp::MaskedEq(0x0000_00ff_0000_ff00),
            SeccompCmpOp::MaskedEq(0xffff_ffff_0000_0001),
            SeccompCmpOp::MaskedEq(0x7e02_0000),
        ];
        let vals = [
            0,
            5,
            0x8000_0000,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0005,
            0xffff_ffff_ffff_fff0,
        ];
        let mut conds = Vec::new();
        for op in &ops {
            for len in [SeccompCmpArgLen::Dword, SeccompCmpArgLen::Qword] {
                for &val in &vals {
                    if len == SeccompCmpArgLen::Dword && val > u64::from(u32::MAX) {
                        continue;
                    }
                    let index = conds.len() as u8 % 6;
                    conds.push(Cond {
                        index,
                        len: len.clone(),
                        op: op.clone(),
                        val,
                        comment: None,
                    });
                }
            }
        }
        // Each condition alone; pairs in one rule; two such rules.
        let mut cases: Vec<Vec<Vec<Cond>>> = conds.iter().map(|c| vec![vec![c.clone()]]).collect();
        for (i, c) in conds.iter().enumerate() {
            let d = &conds[(i * 7 + 3) % conds.len()];
            let e = &conds[(i * 11 + 5) % conds.len()];
            cases.push(vec![vec![c.clone(), d.clone()], vec![e.clone()]]);
        }
        let arch = TargetArch::x86_64;
        let nr = 56;
        let mut checked = 0usize;
        for rules in cases {
            let seccompiler_rules = rules
                .iter()
                .map(|r| {
                    let cs = r.iter().map(|c| {
                        SeccompCondition::new(c.index, c.len.clone(), c.op.clone(), c.val).unwrap()
                    });
                    SeccompRule::new(cs.collect()).unwrap()
                })
                .collect();
            let reference: BpfProgram = SeccompFilter::new(
                BTreeMap::from([(i64::from(nr), seccompiler_rules)]),
                SeccompAction::Errno(libc::EPERM as u32),
                SeccompAction::Allow,
                arch,
            )
            .and_then(BpfProgram::try_from)
            .unwrap();
            let decisions = BTreeMap::from([(nr, Decision::Checked(rules.clone()))]);
            let program = generate(audit_arch(arch), &decisions).unwrap();
            let mut per_index: BTreeMap<u8, BTreeSet<u64>> = BTreeMap::new();
            for c in rules.iter().flatten() {
                let mask = match c.op {
                    SeccompCmpOp::MaskedEq(m) => Some(m),
                    _ => None,
                };
                per_index
                    .entry(c.index)
                    .or_default()
                    .extend(around(c.val, mask));
            }
            let indices: Vec<u8> = per_index.keys().copied().collect();
            let first = per_index[&indices[0]].clone();
            let second = indices.get(1).map(|i| per_index[i].clone());
            for &a in &first {
                let others: Vec<u64> = match &second {
                    // Two arguments: every pair would be large; the other one on its own
                    // boundaries against a few of this one's.
                    Some(s) if a % 7 == 0 || a == 0 || a == u64::MAX => s.iter().copied().collect(),
                    Some(s) => vec![*s.first().unwrap(), *s.last().unwrap()],
                    None => vec![0],
                };
                for b in others {
                    let mut args = [0u64; 6];
                    args[usize::from(indices[0])] = a;
                    if let Some(&i) = indices.get(1) {
                        args[usize::from(i)] = b;
                    }
                    for n in [nr - 1, nr, nr + 1] {
                        let data = seccomp_data(n, audit_arch(arch), &args);
                        let want = kernel(std::slice::from_ref(&reference), &data).0;
                        assert_eq!(
                            run(&program, &data).0,
                            want,
                            "rules {} args {args:x?}",
                            rules.len()
                        );
                        checked += 1;
                    }
                }
            }
        }
        println!("{checked} cases");
    }

    /// The generated program answers exactly what seccompiler's three programs, installed in
    /// order, answer together: for every syscall number 0..=1023, x32's (bit 30) and extreme
    /// numbers, on the profile's architecture and foreign ones; where either reads an argument,
    /// on every boundary value of every condition in each argument position.
    #[test]
    fn the_generated_program_decides_as_the_seccompiler_filters() {
        let values = boundary_values();
        let audit = |a: &str| audit_arch(TargetArch::try_from(a).unwrap());
        let foreign = [
            0,
            u32::MAX,
            0x4000_0003, // AUDIT_ARCH_I386 (int 0x80 on x86_64)
            0x4000_0028, // AUDIT_ARCH_ARM (aarch32)
            audit("x86_64"),
            audit("aarch64"),
            audit("riscv64"),
        ];
        let numbers: Vec<u32> = (0..=1023)
            .chain((0..=1023).map(|n| 0x4000_0000 | n))
            .chain([0x7fff_ffff, 0x8000_0000, u32::MAX - 1, u32::MAX])
            .collect();
        for arch in ["x86_64", "aarch64"] {
            let f = Filters::compile_for(arch).unwrap();
            assert_eq!(
                audit_arch(TargetArch::try_from(arch).unwrap()),
                f.reference[0][1].k
            );
            let native = audit(arch);
            let (mut cases, mut checked, mut answers) = (0usize, BTreeSet::new(), BTreeMap::new());
            for &arch_value in foreign.iter().filter(|&&a| a != native).chain([&native]) {
                for &nr in &numbers {
                    let mut compare = |args: &[u64; 6]| {
                        let data = seccomp_data(nr, arch_value, args);
                        let (want, want_args) = kernel(&f.reference, &data);
                        let (got, got_args) = run(&f.program, &data);
                        assert_eq!(
                            got, want,
                            "{arch}: nr {nr} arch {arch_value:#x} args {args:x?}: \
                             generated {got:#x}, seccompiler {want:#x}"
                        );
                        if arch_value != native {
                            assert_eq!(got, libc::SECCOMP_RET_KILL_PROCESS);
                        }
                        *answers.entry(got).or_insert(0usize) += 1;
                        cases += 1;
                        want_args || got_args
                    };
                    let mut reads_args = false;
                    for base in [[0; 6], [u64::MAX; 6], [0x0123_4567_89ab_cdef; 6]] {
                        reads_args |= compare(&base);
                    }
                    if !reads_args {
                        // Neither program read an argument: the answer does not depend on them.
                        continue;
                    }
                    checked.insert(nr);
                    for index in 0..6 {
                        for &v in &values {
                            for fill in [0, u64::MAX] {
                                let mut args = [fill; 6];
                                args[index] = v;
                                compare(&args);
                            }
                        }
                    }
                }
            }
            // socket, clone, unshare, personality: the syscalls with argument checks.
            assert_eq!(checked.len(), 4, "{arch}: {checked:?}");
            for want in [
                RET_ALLOW,
                RET_EPERM,
                RET_ENOSYS,
                libc::SECCOMP_RET_KILL_PROCESS,
            ] {
                assert!(answers.contains_key(&want), "{arch}: {answers:x?}");
            }
            println!(
                "{arch}: {cases} cases, {} values per argument, argument checks on syscalls \
                 {checked:?}; answers (return value: cases) {:?}",
                values.len(),
                answers
                    .iter()
                    .map(|(r, n)| format!("{r:#x}: {n}"))
                    .collect::<Vec<_>>()
            );
        }
    }

    /// Far targets: a search whose lower half is longer than a conditional jump reaches goes
    /// through a `JA`; checked against the decisions it was generated from.
    #[test]
    fn far_jumps_go_through_ja() {
        let checked = Decision::Checked(vec![vec![Cond {
            index: 1,
            len: SeccompCmpArgLen::Qword,
            op: SeccompCmpOp::Ge,
            val: 0x1_0000_0010,
            comment: None,
        }]]);
        let mut decisions = BTreeMap::new();
        for nr in (0..2000u32).step_by(3) {
            let d = match nr % 4 {
                0 => Decision::Ret(RET_ALLOW),
                1 => checked.clone(),
                _ => Decision::Ret(RET_ENOSYS),
            };
            decisions.insert(nr, d);
        }
        let program = generate(audit_arch(TargetArch::x86_64), &decisions).unwrap();
        assert!(
            program.iter().any(|i| i.code == JA),
            "no JA in {}",
            program.len()
        );
        for nr in 0..2100 {
            for (arg, ok) in [
                (0x1_0000_0010, true),
                (0x2_0000_0000, true),
                (0x1_0000_000f, false),
                (0x0_ffff_ffff, false),
            ] {
                let data = seccomp_data(nr, audit_arch(TargetArch::x86_64), &[0, arg, 0, 0, 0, 0]);
                let want = match decisions.get(&nr) {
                    Some(Decision::Ret(r)) => *r,
                    Some(Decision::Checked(_)) if ok => RET_ALLOW,
                    _ => RET_EPERM,
                };
                assert_eq!(run(&program, &data).0, want, "nr {nr} arg {arg:#x}");
            }
        }
    }

    /// Raw syscalls in a forked child after installing `install`: their errnos (0: allowed)
    /// and the install time in ns (last).
    fn probe(install: &dyn Fn() -> Result<(), Errno>) -> [i64; 10] {
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
            let mut out = [0i64; 10];
            // SAFETY: raw syscalls with integer or null arguments in a single-threaded child.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let t0 = now();
                out[0] = install().map(|()| 0).unwrap_or_else(|e| e as i64);
                out[9] = now() - t0;
                out[1] = errno(libc::syscall(libc::SYS_keyctl, 0, -3, 0));
                out[2] = errno(libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0));
                out[3] = errno(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER));
                out[4] = errno(libc::syscall(libc::SYS_getppid));
                out[5] = errno(libc::syscall(libc::SYS_socket, libc::AF_VSOCK, 1, 0));
                out[6] = errno(libc::syscall(libc::SYS_personality, 0xffff_ffffu32));
                out[7] = errno(libc::syscall(libc::SYS_personality, 0x0040_0000)); // READ_IMPLIES_EXEC
                // A number newer than the profile, and one past its ENOSYS range.
                out[8] = errno(libc::syscall(470)) * 1000 + errno(libc::syscall(600));
                libc::write(fds[1], out.as_ptr().cast(), std::mem::size_of_val(&out));
                libc::_exit(0);
            }
        }
        // SAFETY: closing our copy of the write end.
        unsafe { libc::close(fds[1]) };
        let mut out = [0i64; 10];
        // SAFETY: reading at most `out`'s size into it.
        let n = unsafe { libc::read(fds[0], out.as_mut_ptr().cast(), std::mem::size_of_val(&out)) };
        let mut status = 0;
        // SAFETY: reaping our child; closing our read end.
        unsafe {
            libc::waitpid(pid, &mut status, 0);
            libc::close(fds[0]);
        }
        assert_eq!(n as usize, std::mem::size_of_val(&out), "status {status}");
        assert_eq!(out[0], 0, "install failed: errno {}", out[0]);
        out
    }

    /// Installs the generated program in a forked child and checks what the kernel answers,
    /// against what seccompiler's three filters answer in another child; reports what
    /// installing costs (once per job, in P3), for both.
    #[test]
    fn installed_filters_answer_as_the_profile_says() {
        let f = Filters::compile().unwrap();
        let (mut new, mut old) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let got = probe(&|| f.install());
            let want = probe(&|| install_programs(&f.reference));
            assert_eq!(got[..9], want[..9], "generated vs seccompiler's");
            new.push(got[9]);
            old.push(want[9]);
        }
        let out = probe(&|| f.install());
        assert_eq!(out[1], libc::EPERM as i64, "keyctl");
        assert_eq!(out[2], libc::ENOSYS as i64, "clone3");
        assert_eq!(out[3], libc::EPERM as i64, "unshare(CLONE_NEWUSER)");
        assert_eq!(out[4], 0, "getppid");
        assert_eq!(out[5], libc::EPERM as i64, "socket(AF_VSOCK)");
        assert_eq!(out[6], 0, "personality(0xffffffff)");
        assert_eq!(out[7], libc::EPERM as i64, "personality(READ_IMPLIES_EXEC)");
        assert_eq!(
            out[8],
            libc::ENOSYS as i64 * 1000 + libc::EPERM as i64,
            "470, 600"
        );
        new.sort_unstable();
        old.sort_unstable();
        println!(
            "seccomp: generated program ({} instructions, 1 filter) installed in {} µs (median \
             of 5); seccompiler's ({} instructions, 3 filters) in {} µs",
            f.instructions(),
            new[2] / 1000,
            f.reference.iter().map(Vec::len).sum::<usize>(),
            old[2] / 1000
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
        // What docs/sandbox.md requires to be refused outright.
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
