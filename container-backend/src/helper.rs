//! The container helper: what keeps the worker's own binary out of the job's reach
//! (CVE-2019-5736 and its family).
//!
//! P2 and P3 run on the worker's memory (vfork-style children): until they `execve`,
//! `/proc/<pid>/exe` of each is the
//! worker's binary, and so is every `map_files` entry of its text. A job whose program is
//! `/proc/self/exe`, or a `#!/proc/self/exe` script, or an ELF whose `PT_INTERP` is that path,
//! would have the kernel resolve the link *during* P3's `execve` — while P3 is still the worker —
//! and run the worker's binary inside the container, where a job as root could open it through
//! `/proc/self/exe` and, once it is no longer being executed, overwrite it on the host. The same
//! holds for `/proc/1/exe` as long as the container's init is still on the worker's image.
//!
//! So no process of the container execs anything from the worker's binary, and the two that
//! start on its image leave it before the job runs:
//! - `helper/helper.c`, a freestanding static executable of a few KiB (no libc, no loader; built
//!   by `build.rs`), is embedded in the worker and copied **once per backend** into a memfd
//!   that is then sealed (`F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE`) and
//!   reopened read-only ([`SealedHelper::create`]). P2 moves it to
//!   [`FD_HELPER`](super::protocol::FD_HELPER) (close-on-exec) with the other descriptors.
//! - **P3**, as its last step (seccomp installed, credentials dropped), `execveat`s the memfd as
//!   `nekton-exec` ([`exec_argv`]), which waits for the init's "ready" byte on a pipe and only
//!   then `execve`s the job's program, so the job never runs beside an init that is still on
//!   the worker's image. At that `execve` `/proc/self/exe` is the sealed memfd: a job naming it
//!   runs the helper again (which refuses with exit status 127) under the job's own privileges;
//!   nothing it can open there is writable or the host's.
//! - **P2**, once P3 has left the worker's image (P3 is a vfork-style child of P2: see
//!   `spawn::spawn_p3`), `execveat`s the memfd as `nekton-init` ([`init_argv`]): the container's
//!   PID 1 is that tiny program (non-dumpable again from its first instruction), which writes the
//!   "ready" byte.
//!
//! Cost: one memfd of ≈ 9 KiB per backend, two extra `execve`s of a static 9 KiB program per job
//! (measured with `load-tests containers`: see `load-tests/README.md`).

use std::ffi::CString;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd as _, OwnedFd};

/// The helper executable, built by `build.rs` from `helper/helper.c`.
static HELPER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nekton-container-helper"));

/// `memfd_create` flag: the memfd may be executed (Linux 6.3+; older kernels make every memfd
/// executable and refuse the flag).
const MFD_EXEC: libc::c_uint = 0x0010;

/// A read-only, sealed memfd holding the helper executable.
#[derive(Debug)]
pub(crate) struct SealedHelper {
    fd: OwnedFd,
}

impl SealedHelper {
    /// Copies the helper into a new memfd, seals it and reopens it read-only. Errors name the
    /// step and, for the usual host policy causes, the fix.
    pub fn create() -> Result<Self, String> {
        let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        // SAFETY: memfd_create with a NUL-terminated name and flags.
        let mut raw = unsafe { libc::memfd_create(c"nekton-helper".as_ptr(), flags | MFD_EXEC) };
        if raw < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // SAFETY: as above, without MFD_EXEC (a kernel older than 6.3).
            raw = unsafe { libc::memfd_create(c"nekton-helper".as_ptr(), flags) };
        }
        if raw < 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!(
                "memfd_create of the container helper failed ({e}); if vm.memfd_noexec is 2, \
                 set it to 0 or 1 (`sysctl vm.memfd_noexec=1`): the worker runs its container \
                 init from an executable memfd"
            ));
        }
        // SAFETY: `raw` is a new descriptor nobody else owns.
        let rw = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut file = std::fs::File::from(rw);
        file.write_all(HELPER)
            .map_err(|e| format!("writing the container helper into its memfd: {e}"))?;
        let seals =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // SAFETY: fcntl on a descriptor we own.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(format!(
                "sealing the container helper's memfd: {}",
                std::io::Error::last_os_error()
            ));
        }
        // The copy every child inherits is read-only as well as sealed.
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let ro = std::fs::OpenOptions::new()
            .read(true)
            .open(&path)
            .map_err(|e| format!("reopening the container helper's memfd read-only: {e}"))?;
        Ok(Self { fd: ro.into() })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

/// Room [`init_argv`] needs: the name and three numbers of up to 11 characters, each with its NUL.
pub(crate) const INIT_ARGV_BYTES: usize = 12 + 3 * 12;

/// argv of the container's init, `nekton-init <job pid> <status fd> <ready fd>`, written into
/// `buf` without allocating (P2 builds it on the worker's memory right before its `execve`): the
/// NULL-terminated array of pointers into `buf`, valid while `buf` is. `None` if it does not fit
/// (it always does: the room is for the widest `i32`s).
pub(crate) fn init_argv(
    buf: &mut [u8; INIT_ARGV_BYTES],
    job: libc::pid_t,
    status_fd: i32,
    ready_fd: i32,
) -> Option<[*const libc::c_char; 5]> {
    let mut starts = [0usize; 4];
    let mut pos = 0;
    let mut digits = [0u8; 11];
    for (i, n) in [None, Some(job), Some(status_fd), Some(ready_fd)]
        .into_iter()
        .enumerate()
    {
        let word: &[u8] = match n {
            None => b"nekton-init",
            Some(n) => {
                // The decimal digits, from the right end of `digits`, and a sign.
                let mut at = digits.len();
                let mut v = n.unsigned_abs();
                loop {
                    at -= 1;
                    *digits.get_mut(at)? = b'0' + (v % 10) as u8;
                    v /= 10;
                    if v == 0 {
                        break;
                    }
                }
                if n < 0 {
                    at = at.checked_sub(1)?;
                    *digits.get_mut(at)? = b'-';
                }
                digits.get(at..)?
            }
        };
        starts[i] = pos;
        buf.get_mut(pos..pos + word.len())?.copy_from_slice(word);
        *buf.get_mut(pos + word.len())? = 0;
        pos += word.len() + 1;
    }
    let ptr = |at: usize| buf[at..].as_ptr().cast::<libc::c_char>();
    Some([
        ptr(starts[0]),
        ptr(starts[1]),
        ptr(starts[2]),
        ptr(starts[3]),
        std::ptr::null(),
    ])
}

/// argv of the job's launcher: `nekton-exec <error fd> <ready fd> <n> <candidates…> <job argv…>`.
pub(crate) fn exec_argv(
    err_fd: i32,
    ready_fd: i32,
    candidates: &[CString],
    argv: &[CString],
) -> Vec<CString> {
    let mut v = Vec::with_capacity(4 + candidates.len() + argv.len());
    v.push(c"nekton-exec".to_owned());
    for n in [
        err_fd.to_string(),
        ready_fd.to_string(),
        candidates.len().to_string(),
    ] {
        if let Ok(c) = CString::new(n) {
            v.push(c);
        }
    }
    v.extend(candidates.iter().cloned());
    v.extend(argv.iter().cloned());
    v
}

#[cfg(test)]
mod tests {
    //! The helper run directly (no container, no root): its exec and init modes against the
    //! worker's decoders in `protocol`.
    use super::*;
    use crate::protocol::{self, ErrorKind, Exit, Status};
    use std::io::Read as _;
    use std::os::unix::process::CommandExt as _;
    use std::process::{Command, Stdio};

    /// The helper as an executable path (its sealed memfd through /proc).
    fn helper() -> (SealedHelper, String) {
        let h = SealedHelper::create().expect("memfd");
        let path = format!("/proc/self/fd/{}", h.fd().as_raw_fd());
        (h, path)
    }

    fn pipe() -> (std::fs::File, OwnedFd) {
        let (r, w) = nix::unistd::pipe().unwrap();
        (std::fs::File::from(r), w)
    }

    /// Runs `nekton-exec` with the given candidates and argv, the init's "ready" byte sent;
    /// returns (stdout, error report).
    fn exec_mode(cands: &[&str], argv: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let (out, report, _) = exec_mode_ready(cands, argv, Some(protocol::LIFELINE_GO));
        (out, report)
    }

    /// [`exec_mode`] with `ready` written on the ready pipe first (`None`: the pipe is closed
    /// unwritten, as when the init failed); also returns the exit status.
    fn exec_mode_ready(
        cands: &[&str],
        argv: &[&str],
        ready: Option<u8>,
    ) -> (Vec<u8>, Vec<u8>, std::process::ExitStatus) {
        let (h, path) = helper();
        let (mut err_r, err_w) = pipe();
        // Close-on-exec: the helper must hold no write end of its own ready pipe.
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let errfd = err_w.as_raw_fd();
        let readyfd = ready_r.as_raw_fd();
        let mut cmd = Command::new(&path);
        cmd.arg0("nekton-exec")
            .arg(errfd.to_string())
            .arg(readyfd.to_string())
            .arg(cands.len().to_string())
            .args(cands)
            .args(argv)
            .stdout(Stdio::piped());
        // SAFETY: only clears close-on-exec on descriptors (async-signal-safe).
        unsafe {
            cmd.pre_exec(move || {
                libc::fcntl(errfd, libc::F_SETFD, 0);
                libc::fcntl(readyfd, libc::F_SETFD, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(err_w);
        drop(ready_r);
        let mut ready_w = std::fs::File::from(ready_w);
        if let Some(b) = ready {
            ready_w.write_all(&[b]).unwrap();
        }
        drop(ready_w);
        let out = child.wait_with_output().unwrap();
        drop(h);
        let mut report = Vec::new();
        err_r.read_to_end(&mut report).unwrap();
        (out.stdout, report, out.status)
    }

    /// The init's argv, written without allocating: the four words, then the NULL.
    #[test]
    fn init_argv_writes_the_words_into_the_buffer() {
        let words = |job, status, ready| {
            let mut buf = [0u8; INIT_ARGV_BYTES];
            let argv = init_argv(&mut buf, job, status, ready).expect("fits");
            assert!(argv[4].is_null());
            argv[..4]
                .iter()
                .map(|p| {
                    // SAFETY: pointers to NUL-terminated words of `buf`, which is alive here.
                    unsafe { std::ffi::CStr::from_ptr(*p) }
                        .to_str()
                        .unwrap()
                        .to_owned()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(words(2, 3, 14), ["nekton-init", "2", "3", "14"]);
        assert_eq!(
            words(i32::MIN, i32::MAX, 0),
            ["nekton-init", "-2147483648", "2147483647", "0"]
        );
    }

    #[test]
    fn the_helper_memfd_is_sealed_and_read_only() {
        let (h, _) = helper();
        // SAFETY: fcntl on an open descriptor.
        let seals = unsafe { libc::fcntl(h.fd().as_raw_fd(), libc::F_GET_SEALS) };
        let want = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        assert_eq!(seals & want, want, "seals {seals:#x}");
        // SAFETY: fcntl on an open descriptor.
        let mode = unsafe { libc::fcntl(h.fd().as_raw_fd(), libc::F_GETFL) } & libc::O_ACCMODE;
        assert_eq!(mode, libc::O_RDONLY);
        // Even a new writable descriptor cannot change it.
        let path = format!("/proc/self/fd/{}", h.fd().as_raw_fd());
        let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert!(w.write_all(b"x").is_err());
    }

    #[test]
    fn exec_mode_runs_the_first_candidate_that_exists_and_closes_the_error_pipe() {
        let (out, report) = exec_mode(&["/nonexistent/sh", "/bin/sh"], &["sh", "-c", "echo hi"]);
        assert_eq!(out, b"hi\n");
        assert_eq!(report, b"");
    }

    #[test]
    fn exec_mode_runs_nothing_until_the_init_is_ready() {
        // The init failed (its write end closed unwritten) or wrote something else: the job's
        // program never runs, and nothing is reported (the init's error is the job's).
        for ready in [None, Some(b'x')] {
            let (out, report, status) =
                exec_mode_ready(&["/bin/sh"], &["sh", "-c", "echo ran"], ready);
            assert_eq!(out, b"", "{ready:?}");
            assert_eq!(report, b"", "{ready:?}");
            assert_eq!(status.code(), Some(127), "{ready:?}");
        }
    }

    #[test]
    fn exec_mode_reports_failures_the_worker_decodes() {
        let (_, report) = exec_mode(&["/nonexistent/a", "/nonexistent/b"], &["nope"]);
        assert_eq!(
            protocol::decode_error(&report),
            Ok(Some((
                ErrorKind::NotFound,
                "`nope`: no such file in the image".into()
            )))
        );
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"data").unwrap();
        let plain = plain.to_str().unwrap();
        let (_, report) = exec_mode(&["/nonexistent/a", plain], &["x"]);
        assert_eq!(
            protocol::decode_error(&report),
            Ok(Some((
                ErrorKind::Spec,
                format!("exec `{plain}`: {}", nix::errno::Errno::EACCES.desc())
            )))
        );
        // A script whose interpreter is missing exists but "does not".
        let script = dir.path().join("script");
        std::fs::write(&script, b"#!/nonexistent/interp\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let script = script.to_str().unwrap();
        // Another test's fork may still hold a descriptor of the script open for writing (it was
        // just written; forked children keep it until they exec): `execve` then fails with
        // ETXTBSY, a race of this test process, not of the helper. Try again for up to 5 s.
        let busy = nix::errno::Errno::ETXTBSY.desc();
        let mut tries = 0;
        let report = loop {
            let (_, report) = exec_mode(&[script], &["s"]);
            let text = protocol::decode_error(&report)
                .ok()
                .flatten()
                .map(|(_, t)| t);
            if tries < 500 && text.is_some_and(|t| t.contains(busy)) {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            break report;
        };
        let (kind, text) = protocol::decode_error(&report).unwrap().unwrap();
        assert_eq!(kind, ErrorKind::Spec);
        assert!(text.contains("interpreter or dynamic loader"), "{text}");
        assert!(text.contains(script), "{text}");
    }

    #[test]
    fn other_invocations_are_refused() {
        let (h, path) = helper();
        for argv0 in ["/proc/self/exe", "nekton-init", "nekton-exec"] {
            let out = Command::new(&path).arg0(argv0).arg("x").output().unwrap();
            assert_eq!(out.status.code(), Some(127), "{argv0}");
        }
        drop(h);
    }

    /// `nekton-init` reaps its job (a child forked just before the exec, as P3 is) and writes
    /// the status record the worker decodes, after the "ready" byte.
    fn init_mode(code: i32) -> (Vec<u8>, Result<Status, protocol::StatusError>) {
        let (h, path) = helper();
        let path = CString::new(path).unwrap();
        let (mut status_r, status_w) = pipe();
        let (mut ready_r, ready_w) = pipe();
        let (sfd, rfd) = (status_w.as_raw_fd(), ready_w.as_raw_fd());
        let sfd_c = CString::new(sfd.to_string()).unwrap();
        let rfd_c = CString::new(rfd.to_string()).unwrap();
        let mut pid_buf = [0u8; 16];
        // SAFETY: the child only calls async-signal-safe functions (no allocation) and ends in
        // execve or _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                let job = libc::fork();
                if job == 0 {
                    if code < 0 {
                        libc::kill(libc::getpid(), libc::SIGKILL);
                    }
                    libc::_exit(code);
                }
                // The job's pid in decimal, NUL-terminated, without allocating.
                let mut digits = [0u8; 12];
                let (mut n, mut k) = (job as u32, 0);
                loop {
                    digits[k] = b'0' + (n % 10) as u8;
                    k += 1;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                for i in 0..k {
                    pid_buf[i] = digits[k - 1 - i];
                }
                libc::fcntl(sfd, libc::F_SETFD, 0);
                libc::fcntl(rfd, libc::F_SETFD, 0);
                let argv = [
                    c"nekton-init".as_ptr(),
                    pid_buf.as_ptr().cast(),
                    sfd_c.as_ptr(),
                    rfd_c.as_ptr(),
                    std::ptr::null(),
                ];
                let envp = [std::ptr::null()];
                libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(99);
            }
        }
        drop((status_w, ready_w));
        let mut ready = Vec::new();
        ready_r.read_to_end(&mut ready).unwrap();
        let mut rec = Vec::new();
        status_r.read_to_end(&mut rec).unwrap();
        let (_, status) = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None)
            .map(|s| ((), s))
            .unwrap();
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0)
        );
        drop(h);
        (ready, Status::decode(&rec))
    }

    #[test]
    fn init_mode_reports_the_jobs_exit_in_the_status_record() {
        let (ready, status) = init_mode(3);
        assert_eq!(ready, [protocol::LIFELINE_GO]);
        assert_eq!(status.unwrap().exit, Exit::Code(3));
        let (_, status) = init_mode(-1);
        assert_eq!(status.unwrap().exit, Exit::Signal(libc::SIGKILL));
    }
}
