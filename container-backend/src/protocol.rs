//! The protocol between the worker and the container's processes (P2, the init, started by the
//! worker; P3, the job; see the crate docs for the process tree). Everything both sides must agree
//! on lives here and nowhere else: the descriptor numbers after P2 rearranged them, the byte on the
//! lifeline, the error report on the error pipe, and the status record P2 (by then the container
//! helper's init) writes when the job's process has ended. The child side only *encodes* (no
//! allocation needed for the status record); the worker side only *decodes*, and decoding never
//! panics: a short, long or garbled message is an error value the worker words as an internal
//! error.
//!
//! # Child code on the worker's memory
//!
//! P2 and P3 (everything `spawn.rs` and `rootfs.rs` run between `clone` and `execve`/`_exit`)
//! are vfork-style children: P2 of a spawner thread, P3 of P2, each with `CLONE_VM`, so both run
//! on the worker's address space, beside the worker's other threads, until their `execve`. They
//! allocate (`format!` for error messages, the rootfs builder's buffers, P3's `execve` arrays,
//! which P2 builds), and that is sound under these rules:
//!
//! - **One user of the thread's state.** A child uses the thread pointer of the thread that
//!   started it — errno, Rust's thread-locals, and glibc malloc's per-thread cache and arena —
//!   and that thread waits in `clone` (`CLONE_VFORK`) until the child has exec'd or exited. The
//!   arena locks are real locks, shared with the worker's other threads, so an allocation just
//!   waits for them. This is why the worker keeps glibc's malloc: its per-thread state is found
//!   through the thread pointer. An allocator that keys it on the kernel's thread id, or that
//!   relies on fork hooks, would need this checked first. The test
//!   `no_global_allocator_in_the_workspace` below scans every `*.rs` of the workspace and fails if
//!   a `#[global_allocator]` appears (but the counting wrapper around glibc's malloc of
//!   `tests/heap.rs`).
//! - **Everything allocated is freed before `execve` or `_exit`.** What a child leaves stays
//!   allocated in the worker, once per job. The setup runs in functions that return (their locals
//!   are dropped), the failure reports free themselves (`spawn::report_and_exit`), P3's `execve`
//!   arrays belong to P2 (freed once P3 has exec'd), and P2's own arguments are on its stack.
//!   Tested by `tests/heap.rs`, which counts the bytes P2 and P3 allocate and free over 30 jobs
//!   (succeeding and failing ones) and expects the difference to be 0.
//! - **Never killed holding a lock.** A child killed inside `malloc` would leave an arena locked
//!   for the worker's threads. The worker learns P2's pid only after its `execve` (the mover
//!   thread has it earlier, and only moves it between cgroups). The OOM killer skips a vfork
//!   child that shares its parent's memory (since Linux 4.8). `PR_SET_PDEATHSIG` fires only when the starting
//!   thread ends, and that thread is waiting in `clone`. P3 takes the job's ids before its
//!   `execve`; from there on it allocates nothing, except to report a failure, and the worker's
//!   memory is non-dumpable (no ptrace). The job's own processes do not exist yet.

use std::os::fd::RawFd;
use std::time::Duration;

/// Descriptor numbers in P2/P3 after P2 rearranged them (everything else is closed).
/// P2 (the helper's init) writes the job's [`Status`] here.
pub(crate) const FD_STATUS: RawFd = 3;
pub(crate) const FD_STDOUT: RawFd = 4;
pub(crate) const FD_STDERR: RawFd = 5;
pub(crate) const FD_STDIN: RawFd = 6;
/// The error pipe: one [`encode_error`] message, or EOF at `execve` (close-on-exec).
pub(crate) const FD_ERR: RawFd = 7;
/// The lifeline, P2's end of a socket pair (close-on-exec): P2 writes [`LIFELINE_STARTED`] first
/// thing, the worker writes [`LIFELINE_GO`] once P2 is in the job's cgroup and holds its end
/// until the job has ended, so EOF or a hang-up means the worker is gone.
pub(crate) const FD_LIFELINE: RawFd = 8;
/// The sealed, read-only memfd of the container helper (see [`super::helper`]): P2 and P3
/// `execveat` it (close-on-exec: neither the helper nor the job keeps it).
pub(crate) const FD_HELPER: RawFd = 9;
/// The job's scratch tmpfs, a detached mount the worker made (`fsmount`): P2 attaches it on the
/// job directory in the job's mount namespace (close-on-exec: neither the helper nor the job
/// keeps it). The worker keeps its own descriptor of the same mount (or, for a kept run, of the
/// original the child's is a clone of).
pub(crate) const FD_SCRATCH: RawFd = 10;
/// A chained run's base: a clone of the kept scratch mount of an earlier run, read-only, which P2
/// attaches below the job directory and whose `upper/` becomes the top lower layer. Absent (the
/// number unused) for a run without a base.
pub(crate) const FD_BASE: RawFd = 11;
/// The job's user namespace (rootless jobs, see [`super::userns`]): P2 makes the image layers'
/// idmapped mounts with it and enters it before becoming the init, P3 enters it before dropping
/// capabilities (close-on-exec: neither the helper nor the job keeps it). Absent (the number
/// unused) when user namespaces are off.
pub(crate) const FD_USERNS: RawFd = 12;
/// The first descriptor number P2 closes from.
pub(crate) const FD_FIRST_FREE: RawFd = 13;

/// The worker writes this on the lifeline once P2 is in the job's cgroup: P2 may go on. The
/// helper in `nekton-init` mode writes the same byte on P3's "ready" pipe once it is the
/// container's init (`helper/helper.c`, `READY_BYTE`).
pub(crate) const LIFELINE_GO: u8 = b'g';

/// P2 writes this on the lifeline as its first step: it runs, and the kernel has stored its pid
/// where the worker's cgroup mover reads it.
pub(crate) const LIFELINE_STARTED: u8 = b's';

/// Longest message text a child reports (longer texts are cut, at a byte boundary; the worker
/// displays the bytes lossily).
pub(crate) const ERROR_TEXT_MAX: usize = 2000;

/// Kinds of setup failure, the first byte of a message on the error pipe.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The job's request is at fault (working directory, user, input file, exec failure).
    Spec = b'S',
    /// The image is at fault (a hostile symlink, a broken `/etc/passwd`, …).
    Image = b'I',
    /// The container setup failed for a reason that is neither's (a syscall the host refused).
    Internal = b'X',
    /// `execve` found no such file: the worker words it as a spec error naming the command.
    /// Written by the helper (`nekton-exec`): the text is the command (argv\[0\]) only.
    NotFound = b'N',
}

/// The helper's report of a failed `execve` of the job's program (`helper/helper.c`,
/// `REPORT_EXEC`): this byte, a reason byte ([`EXEC_ERRNO`] or [`EXEC_NO_INTERPRETER`]), the
/// errno as an `i32` (little endian), then the candidate path. Decoded into a
/// [`ErrorKind::Spec`] message.
pub(crate) const REPORT_EXEC: u8 = b'E';
/// `exec `path`: <errno text>`.
pub(crate) const EXEC_ERRNO: u8 = b'e';
/// The file exists but `execve` says ENOENT: its interpreter or loader is missing.
pub(crate) const EXEC_NO_INTERPRETER: u8 = b'i';

impl TryFrom<u8> for ErrorKind {
    type Error = u8;

    fn try_from(b: u8) -> Result<Self, u8> {
        Ok(match b {
            b'S' => Self::Spec,
            b'I' => Self::Image,
            b'X' => Self::Internal,
            b'N' => Self::NotFound,
            other => return Err(other),
        })
    }
}

/// An error of the container setup, reported on the error pipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChildError {
    pub kind: ErrorKind,
    pub msg: String,
}

impl ChildError {
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> Self {
        Self {
            kind,
            msg: msg.into(),
        }
    }
}

/// `map_err` helper: `what: <errno text>`.
pub(crate) fn os(
    kind: ErrorKind,
    what: impl std::fmt::Display,
) -> impl FnOnce(nix::errno::Errno) -> ChildError {
    move |e| ChildError::new(kind, format!("{what}: {}", e.desc()))
}

/// The bytes a child writes on the error pipe for `err`: the kind byte, then at most
/// [`ERROR_TEXT_MAX`] bytes of text.
pub(crate) fn encode_error(err: &ChildError) -> Vec<u8> {
    let text = err.msg.as_bytes();
    let text = &text[..text.len().min(ERROR_TEXT_MAX)];
    let mut msg = Vec::with_capacity(text.len() + 1);
    msg.push(err.kind as u8);
    msg.extend_from_slice(text);
    msg
}

/// A message read from the error pipe that is not an [`encode_error`] message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ErrorReportError {
    /// The first byte names no [`ErrorKind`].
    UnknownKind(u8),
    /// A [`REPORT_EXEC`] message too short for its reason and errno, or of an unknown reason.
    ShortExecReport,
}

/// Decodes a non-empty error-pipe message into its kind and (lossily displayed) text. An empty
/// message is not an error report (the pipe closed at `execve`): `Ok(None)`.
pub(crate) fn decode_error(msg: &[u8]) -> Result<Option<(ErrorKind, String)>, ErrorReportError> {
    let Some((kind, text)) = msg.split_first() else {
        return Ok(None);
    };
    if *kind == REPORT_EXEC {
        let (Some(&reason), Some(errno)) = (text.first(), text.get(1..5)) else {
            return Err(ErrorReportError::ShortExecReport);
        };
        let errno = i32::from_le_bytes(errno.try_into().unwrap_or_default());
        let path = image_store::display_bytes(text.get(5..).unwrap_or_default());
        let text = match reason {
            EXEC_NO_INTERPRETER => format!(
                "exec `{path}`: the file exists but its interpreter or dynamic loader is missing \
                 from the image"
            ),
            EXEC_ERRNO => format!(
                "exec `{path}`: {}",
                nix::errno::Errno::from_raw(errno).desc()
            ),
            _ => return Err(ErrorReportError::ShortExecReport),
        };
        return Ok(Some((ErrorKind::Spec, text)));
    }
    let kind = ErrorKind::try_from(*kind).map_err(ErrorReportError::UnknownKind)?;
    let text = image_store::display_bytes(text);
    if kind == ErrorKind::NotFound {
        return Ok(Some((kind, format!("`{text}`: no such file in the image"))));
    }
    Ok(Some((kind, text)))
}

/// How the job's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// `exit(code)` (the low 8 bits, as `WEXITSTATUS`).
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// The status record P2 (the helper's init, `helper/helper.c`) writes when the job's process has exited: how it ended and
/// `getrusage(RUSAGE_CHILDREN)` of the init (the job and every reaped orphan), and the bytes the
/// job's writable layer (its scratch tmpfs) held then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    pub exit: Exit,
    pub user: Duration,
    pub system: Duration,
    pub maxrss_kib: u64,
    pub disk_used_bytes: u64,
}

/// Wire layout of [`Status`] (little endian): kind u32 (1 = exited, 2 = signaled), value i32,
/// user µs u64, system µs u64, maxrss KiB u64, writable layer bytes u64.
pub(crate) const STATUS_LEN: usize = 40;
const KIND_EXITED: u32 = 1;
const KIND_SIGNALED: u32 = 2;

/// Why a status record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusError {
    /// Not exactly [`STATUS_LEN`] bytes (P2 died while writing it, or wrote nothing).
    Length(usize),
    /// The kind field is neither exited nor signaled.
    Kind(u32),
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Length(0) => write!(f, "no status record"),
            Self::Length(n) => write!(f, "a status record of {n} bytes (expected {STATUS_LEN})"),
            Self::Kind(k) => write!(f, "a status record of unknown kind {k}"),
        }
    }
}

impl Status {
    /// From a `waitpid` status and the init's `RUSAGE_CHILDREN`. The record itself is written by
    /// the container helper's init (`helper/helper.c`, `report_and_exit`); this encoder is the
    /// reference its output is tested against.
    #[cfg(test)]
    pub fn from_wait(status: libc::c_int, ru: &libc::rusage) -> Self {
        let exit = if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        };
        let dur = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Self {
            exit,
            user: dur(ru.ru_utime),
            system: dur(ru.ru_stime),
            maxrss_kib: ru.ru_maxrss.max(0) as u64,
            disk_used_bytes: 0,
        }
    }

    /// Whether the job was killed by a signal, and the exit code or signal number.
    pub fn signaled_value(&self) -> (bool, i32) {
        match self.exit {
            Exit::Code(c) => (false, c),
            Exit::Signal(s) => (true, s),
        }
    }

    #[cfg(test)]
    pub fn encode(&self) -> [u8; STATUS_LEN] {
        let (kind, value) = match self.exit {
            Exit::Code(c) => (KIND_EXITED, c),
            Exit::Signal(s) => (KIND_SIGNALED, s),
        };
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut b = [0u8; STATUS_LEN];
        b[0..4].copy_from_slice(&kind.to_le_bytes());
        b[4..8].copy_from_slice(&value.to_le_bytes());
        b[8..16].copy_from_slice(&micros(self.user).to_le_bytes());
        b[16..24].copy_from_slice(&micros(self.system).to_le_bytes());
        b[24..32].copy_from_slice(&self.maxrss_kib.to_le_bytes());
        b[32..40].copy_from_slice(&self.disk_used_bytes.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, StatusError> {
        let b: &[u8; STATUS_LEN] = b.try_into().map_err(|_| StatusError::Length(b.len()))?;
        let (kind, rest) = b.split_at(4);
        let (value, rest) = rest.split_at(4);
        let (user, rest) = rest.split_at(8);
        let (system, rest) = rest.split_at(8);
        let (maxrss, disk) = rest.split_at(8);
        // The slices have the lengths of the split points above: the conversions cannot fail.
        let u32_of = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap_or_default());
        let u64_of = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or_default());
        let value = u32_of(value) as i32;
        let exit = match u32_of(kind) {
            KIND_EXITED => Exit::Code(value),
            KIND_SIGNALED => Exit::Signal(value),
            k => return Err(StatusError::Kind(k)),
        };
        Ok(Self {
            exit,
            user: Duration::from_micros(u64_of(user)),
            system: Duration::from_micros(u64_of(system)),
            maxrss_kib: u64_of(maxrss),
            disk_used_bytes: u64_of(disk),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kind_bytes_round_trip_and_unknown_bytes_are_refused() {
        for k in [
            ErrorKind::Spec,
            ErrorKind::Image,
            ErrorKind::Internal,
            ErrorKind::NotFound,
        ] {
            assert_eq!(ErrorKind::try_from(k as u8), Ok(k));
        }
        // The wire bytes are fixed: a worker and a child of different builds never meet, but a
        // reordering must be deliberate.
        assert_eq!(ErrorKind::Spec as u8, b'S');
        assert_eq!(ErrorKind::Image as u8, b'I');
        assert_eq!(ErrorKind::Internal as u8, b'X');
        assert_eq!(ErrorKind::NotFound as u8, b'N');
        for b in [0u8, b's', b'Z', 0xff] {
            assert_eq!(ErrorKind::try_from(b), Err(b));
        }
    }

    #[test]
    fn error_reports_round_trip_and_are_bounded() {
        let e = ChildError::new(ErrorKind::Image, "bad /etc/passwd: ünïcode");
        assert_eq!(
            decode_error(&encode_error(&e)),
            Ok(Some((ErrorKind::Image, e.msg.clone())))
        );
        assert_eq!(decode_error(b""), Ok(None));
        assert_eq!(
            decode_error(b"?what"),
            Err(ErrorReportError::UnknownKind(b'?'))
        );
        let long = ChildError::new(ErrorKind::Spec, "é".repeat(ERROR_TEXT_MAX));
        let wire = encode_error(&long);
        assert_eq!(wire.len(), ERROR_TEXT_MAX + 1);
        // Cut inside a character: decoding still works (lossily).
        let (kind, text) = decode_error(&wire).unwrap().unwrap();
        assert_eq!(kind, ErrorKind::Spec);
        assert!(text.starts_with("éé"), "{text}");
    }

    #[test]
    fn status_round_trips() {
        for exit in [
            Exit::Code(0),
            Exit::Code(255),
            Exit::Signal(libc::SIGKILL),
            Exit::Signal(libc::SIGXCPU),
        ] {
            let s = Status {
                exit,
                user: Duration::from_micros(1_234_567),
                system: Duration::from_micros(89),
                maxrss_kib: u64::MAX - 1,
                disk_used_bytes: 4096 * 3,
            };
            assert_eq!(Status::decode(&s.encode()), Ok(s));
        }
    }

    #[test]
    fn status_from_wait_reads_the_wait_status() {
        // SAFETY: a zeroed rusage is valid.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        ru.ru_utime = libc::timeval {
            tv_sec: 2,
            tv_usec: 500_000,
        };
        ru.ru_maxrss = 77;
        // The encodings `waitpid` uses: exit code in bits 8-15, signal in the low 7 bits.
        let exited = Status::from_wait(3 << 8, &ru);
        assert_eq!(exited.exit, Exit::Code(3));
        assert_eq!(exited.user, Duration::from_millis(2500));
        assert_eq!(exited.maxrss_kib, 77);
        assert_eq!(
            Status::from_wait(libc::SIGKILL, &ru).exit,
            Exit::Signal(libc::SIGKILL)
        );
        assert_eq!(
            Status::from_wait(libc::SIGKILL, &ru).signaled_value(),
            (true, libc::SIGKILL)
        );
    }

    #[test]
    fn truncated_or_garbage_status_is_an_error() {
        let good = Status {
            exit: Exit::Code(1),
            user: Duration::ZERO,
            system: Duration::ZERO,
            maxrss_kib: 0,
            disk_used_bytes: 0,
        }
        .encode();
        for n in 0..STATUS_LEN {
            assert_eq!(Status::decode(&good[..n]), Err(StatusError::Length(n)));
        }
        let mut long = good.to_vec();
        long.push(0);
        assert_eq!(
            Status::decode(&long),
            Err(StatusError::Length(STATUS_LEN + 1))
        );
        let mut bad = good;
        bad[0] = 7;
        assert_eq!(Status::decode(&bad), Err(StatusError::Kind(7)));
        // Arbitrary bytes of every length never panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..100 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = Status::decode(&bytes);
            let _ = decode_error(&bytes);
        }
        assert!(StatusError::Length(0).to_string().contains("no status"));
    }

    /// Whether `source` declares a global allocator (an attribute line, not a mention).
    fn declares_global_allocator(source: &str) -> bool {
        let needle = concat!("#[", "global_allocator", "]");
        source.lines().any(|l| l.trim_start().starts_with(needle))
    }

    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(ty) = entry.file_type() else { continue };
            if ty.is_dir() {
                if name.starts_with('.') || name == "target" {
                    continue;
                }
                rust_files(&path, out);
            } else if ty.is_file() && name.ends_with(".rs") {
                out.push(path);
            }
        }
    }

    /// The allocation rules of the module docs ("Child code on the worker's memory"), enforced:
    /// glibc malloc stays the allocator of every binary built from this workspace (the heap
    /// test's counting wrapper passes every call on to it).
    #[test]
    fn no_global_allocator_in_the_workspace() {
        assert!(declares_global_allocator(
            "use x::A;\n  #[global_allocator]\nstatic A: A = A;\n"
        ));
        assert!(!declares_global_allocator(
            "// a comment on global_allocator\n"
        ));
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the crate lives in the workspace root");
        assert!(
            root.join("Cargo.toml").is_file(),
            "workspace root not found at {}",
            root.display()
        );
        let mut files = Vec::new();
        rust_files(root, &mut files);
        let this = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protocol.rs");
        assert!(
            files.contains(&this) && files.len() > 50,
            "the scan of {} found only {} Rust files",
            root.display(),
            files.len()
        );
        // The one allowed: the heap test's counting wrapper, which passes every call on to
        // glibc's malloc (`System`) and keeps no per-thread state.
        let heap_test = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/heap.rs");
        assert!(
            files.contains(&heap_test),
            "{} is gone",
            heap_test.display()
        );
        let offenders: Vec<_> = files
            .iter()
            .filter(|f| **f != heap_test)
            .filter(|f| {
                let text = std::fs::read_to_string(f)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", f.display()));
                declares_global_allocator(&text)
            })
            .collect();
        assert!(
            offenders.is_empty(),
            "a #[global_allocator] breaks the allocation rules of \
             container-backend/src/protocol.rs (container code on the worker's memory allocates \
             as the thread that started it, as glibc malloc allows): {offenders:?}"
        );
    }
}
