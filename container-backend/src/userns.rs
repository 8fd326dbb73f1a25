//! Rootless container jobs: the user namespaces jobs run in and the host id ranges they map.
//!
//! With user namespaces on (the default where the host supports them), every running
//! container takes one *range* of host ids for as long as its init lives: `ranges` ranges of
//! `size` ids each, the first starting at `base` (defaults: 3840 ranges of 65,536 ids from
//! 1,879,048,192 = `0x7000_0000`, the block systemd documents as unused — above the nspawn
//! container ranges, below 2^31 — so they collide with no user a distribution or systemd
//! makes). Two containers that run at the same time never share a host id. Each range has one
//! user namespace mapping its ids `0..size` to the range (`uid_map` = `gid_map` = `0 <start>
//! <size>`), made by the worker the first time the range is used and kept for the backend's
//! life (a user namespace holds nothing of a job once the job's processes are gone: its
//! other namespaces are the job's own and die with it, and `keyctl` — the keyrings a user
//! namespace owns — is refused by seccomp). The worker writes the maps itself (it is root in
//! the initial user namespace), so `setgroups` stays allowed in the job.
//!
//! The namespace is entered (`setns`) by the container's init and by the job's process after
//! the root filesystem is built: the mounts, the job's mount/UTS/IPC/network/pid namespaces
//! and its `/dev` stay owned by the host's user namespace, so the job's root holds its
//! capabilities over its own processes and files only — never over a mount, its hostname or
//! its network. Image layers become the overlay's lower layers through idmapped mounts
//! (`open_tree(OPEN_TREE_CLONE)` + `mount_setattr(MOUNT_ATTR_IDMAP)` with the range's
//! namespace), so a layer file owned by 0 on disk is owned by the range's first id in the
//! container, and nothing on disk is chowned or copied. The writable layer stores host ids:
//! a file the job's root creates is owned by `<start>` on the host.
//!
//! A chained run's base holds the host ids of the range its build ran in; a case in another
//! range sees it through an idmapped clone whose namespace maps the build's range onto the
//! case's (`uid_map` = `<build start> <case start> <size>`, plus `0 0 1`: what the runtime
//! made there as the host's root stays root's, so P2 can still reach the layer), made once per
//! pair of ranges and kept with the base.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;

use super::sys;

/// Whether container jobs get user namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UsernsMode {
    /// On where the host supports it (idmapped mounts on the image store's filesystem, user
    /// namespaces enabled); otherwise off, said once in the startup log and the preflight.
    #[default]
    Auto,
    /// Always on: a host that cannot do it refuses to start the backend (with the reason).
    On,
    /// Off: the job's root is the host's root, confined by the other walls (the operator's
    /// fallback, `--userns off`).
    Off,
}

impl std::str::FromStr for UsernsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "`{other}` is not a user namespace mode: auto, on or off"
            )),
        }
    }
}

/// The user namespaces of container jobs ([`ContainerConfig::userns`](super::ContainerConfig)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsernsConfig {
    pub mode: UsernsMode,
    /// The first host id of the first range. Default 1,879,048,192 (`0x7000_0000`).
    pub base: u32,
    /// Ids per range: a job sees ids `0..size` (uid and gid). Default 65,536.
    pub size: u32,
    /// How many containers can run at once with ids of their own (a job waits for a free range
    /// beyond that). Default 64; the worker uses its slots × slots (a test suite runs up to
    /// `slots` cases at once), capped at what fits below 2^31.
    pub ranges: u32,
}

/// The default first host id: the start of the block systemd leaves unused
/// (1879048192…2130706431, between the nspawn container ranges and its magic ids).
pub const DEFAULT_BASE: u32 = 0x7000_0000;
/// The default range size: every 16-bit id.
pub const DEFAULT_SIZE: u32 = 65_536;
/// The end of the block the default base starts (exclusive).
pub const DEFAULT_END: u64 = 2_130_706_432;

impl Default for UsernsConfig {
    fn default() -> Self {
        Self {
            mode: UsernsMode::Auto,
            base: DEFAULT_BASE,
            size: DEFAULT_SIZE,
            ranges: 64,
        }
    }
}

impl UsernsConfig {
    /// The number of ranges that fit from `base` up to the end of the default block (or 2^31
    /// for another base), at least 1: a cap for `ranges` computed from a worker's slots.
    pub fn ranges_that_fit(base: u32, size: u32) -> u32 {
        let end = if u64::from(base) < DEFAULT_END {
            DEFAULT_END
        } else {
            1 << 31
        };
        (end.saturating_sub(u64::from(base)) / u64::from(size.max(1))).clamp(1, u64::from(u32::MAX))
            as u32
    }

    /// Refuses a configuration that would map host root or wrap around.
    pub fn check(&self) -> Result<(), String> {
        if self.mode == UsernsMode::Off {
            return Ok(());
        }
        if self.base == 0 {
            return Err("userns base must be above 0 (id 0 is the host's root)".into());
        }
        if self.size == 0 || self.ranges == 0 {
            return Err("userns size and ranges must be at least 1".into());
        }
        let end = u64::from(self.base) + u64::from(self.size) * u64::from(self.ranges);
        if end > u64::from(u32::MAX) {
            return Err(format!(
                "userns ranges end past the last host id: {} + {} × {} > {}; lower the base, \
                 the size or the number of ranges",
                self.base,
                self.size,
                self.ranges,
                u32::MAX
            ));
        }
        Ok(())
    }
}

/// A user namespace whose `uid_map` and `gid_map` are `map` (`(inside, outside, count)` lines),
/// as a descriptor of its `/proc/<pid>/ns/user`. Made by a short-lived child that unshares the
/// namespace and waits while this process writes the maps (root in the initial namespace may
/// map any ids). Blocking, about a millisecond.
pub(crate) fn make_userns(map: &[(u32, u32, u32)]) -> Result<OwnedFd, String> {
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("pipe: {}", e.desc()))?;
    let (hold_r, hold_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("pipe: {}", e.desc()))?;
    let (ready_w_raw, hold_r_raw) = (ready_w.as_raw_fd(), hold_r.as_raw_fd());
    // SAFETY: fork in a multi-threaded process: the child only makes raw system calls (no
    // allocation, no locks) and ends in `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", Errno::last().desc()));
    }
    if pid == 0 {
        userns_child(ready_w_raw, hold_r_raw);
    }
    drop(ready_w);
    drop(hold_r);
    let result = (|| {
        let mut b = [0u8; 5];
        let n = nix::unistd::read(&ready_r, &mut b).map_err(|e| format!("read: {}", e.desc()))?;
        if n != 1 || b[0] != b'u' {
            let errno = if n == 5 {
                Errno::from_raw(i32::from_le_bytes([b[1], b[2], b[3], b[4]]))
            } else {
                Errno::UnknownErrno
            };
            return Err(format!(
                "unshare(CLONE_NEWUSER): {} (is user.max_user_namespaces 0?)",
                errno.desc()
            ));
        }
        let line: String = map
            .iter()
            .map(|(inside, outside, count)| format!("{inside} {outside} {count}\n"))
            .collect();
        for map in ["uid_map", "gid_map"] {
            let path = format!("/proc/{pid}/{map}");
            std::fs::write(&path, &line).map_err(|e| format!("writing {path} ({line:?}): {e}"))?;
        }
        let path = format!("/proc/{pid}/ns/user");
        std::fs::File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| format!("opening {path}: {e}"))
    })();
    // EOF on its pipe ends the child; reap it.
    drop(hold_w);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    result
}

/// The child of [`make_userns`]: unshares a user namespace, says so, waits for EOF, exits.
/// Every other inherited descriptor is closed first: the hold pipe's EOF must come from the
/// parent alone, and the other end of a concurrent call's pipes must not stay open here (two
/// such children would each keep the other waiting).
fn userns_child(ready: RawFd, hold: RawFd) -> ! {
    let (a, b) = (
        ready.min(hold) as libc::c_uint,
        ready.max(hold) as libc::c_uint,
    );
    for (first, last) in [
        (3, a.wrapping_sub(1)),
        (a + 1, b - 1),
        (b + 1, libc::c_uint::MAX),
    ] {
        if first <= last {
            // SAFETY: closing inherited descriptors this child does not use.
            unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
        }
    }
    // SAFETY: raw system calls on descriptors this child owns; `_exit` ends it.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER) != 0 {
            let e = Errno::last_raw().to_le_bytes();
            let msg = [b'e', e[0], e[1], e[2], e[3]];
            libc::write(ready, msg.as_ptr().cast(), msg.len());
            libc::_exit(1);
        }
        libc::write(ready, b"u".as_ptr().cast(), 1);
        let mut b = 0u8;
        while libc::read(hold, (&mut b as *mut u8).cast(), 1) < 0 && Errno::last() == Errno::EINTR {
        }
        libc::_exit(0)
    }
}

/// Whether `dir`'s filesystem takes idmapped mounts: a clone of it made idmapped with
/// `userns` (then dropped). The error names the step and the kernel's reason.
pub(crate) fn probe_idmap(dir: &Path, userns: &OwnedFd) -> Result<(), String> {
    let path = CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} contains a NUL byte", dir.display()))?;
    let cwd = super::rustix_cwd();
    let clone = sys::clone_path(cwd, &path).map_err(|e| {
        format!(
            "open_tree(OPEN_TREE_CLONE) of {}: {}",
            dir.display(),
            e.desc()
        )
    })?;
    sys::mount_idmap(clone.as_fd(), userns.as_fd()).map_err(|e| {
        format!(
            "idmapped mounts are not supported on {} (mount_setattr(MOUNT_ATTR_IDMAP): {})",
            dir.display(),
            e.desc()
        )
    })
}

/// The ranges of a backend with user namespaces on, and their namespaces.
pub(crate) struct Ranges {
    pub config: UsernsConfig,
    /// Free range indices (a permit of `available` is held for each taken one).
    free: Mutex<Vec<u32>>,
    available: Arc<tokio::sync::Semaphore>,
    /// Each range's namespace, made at first use.
    namespaces: Mutex<HashMap<u32, Arc<OwnedFd>>>,
}

impl Ranges {
    /// The ranges of `config`, with range 0's namespace already made (`first`).
    pub fn new(config: UsernsConfig, first: OwnedFd) -> Self {
        Self {
            config,
            free: Mutex::new((0..config.ranges).rev().collect()),
            available: Arc::new(tokio::sync::Semaphore::new(config.ranges as usize)),
            namespaces: Mutex::new(HashMap::from([(0, Arc::new(first))])),
        }
    }

    /// The first host id of range `index`.
    fn start(&self, index: u32) -> u32 {
        self.config.base + index * self.config.size
    }

    /// Takes a free range (waiting for one if every range is in use) until the lease drops.
    pub async fn take(self: &Arc<Self>) -> Result<Range, String> {
        let permit = self
            .available
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "the user namespace ranges are closed".to_string())?;
        let index = self
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .ok_or("no free user namespace range (a bug: a permit without a range)")?;
        let lease = RangeLease {
            ranges: self.clone(),
            index,
            _permit: permit,
        };
        let existing = self
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&index)
            .cloned();
        let userns = match existing {
            Some(ns) => ns,
            None => {
                let (start, size) = (self.start(index), self.config.size);
                let ns = tokio::task::spawn_blocking(move || make_userns(&[(0, start, size)]))
                    .await
                    .map_err(|e| format!("making a user namespace: {e}"))?
                    .map_err(|e| format!("making the user namespace of host ids {start}+: {e}"))?;
                let ns = Arc::new(ns);
                self.namespaces
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(index, ns.clone());
                ns
            }
        };
        Ok(Range {
            start: self.start(index),
            size: self.config.size,
            userns,
            _lease: lease,
        })
    }
}

/// Gives a range back when dropped.
struct RangeLease {
    ranges: Arc<Ranges>,
    index: u32,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for RangeLease {
    fn drop(&mut self) {
        // Back in the free list before the permit is released (field order: `_permit` last).
        self.ranges
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self.index);
    }
}

/// One running container's host ids: `start..start + size`, and the namespace mapping them.
pub(crate) struct Range {
    pub start: u32,
    pub size: u32,
    pub userns: Arc<OwnedFd>,
    _lease: RangeLease,
}

impl std::fmt::Debug for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Range({}+{})", self.start, self.size)
    }
}

/// What a chained run's base remembers of its build's range: its first host id, and the
/// namespaces that show it to cases in other ranges (one per case range, made at first use).
#[derive(Default)]
pub(crate) struct BaseIds {
    pub start: Option<u32>,
    translators: Mutex<HashMap<u32, Arc<OwnedFd>>>,
}

impl BaseIds {
    pub fn new(start: Option<u32>) -> Self {
        Self {
            start,
            translators: Mutex::default(),
        }
    }

    /// The namespace mapping the build's ids onto a case's range starting at `to` (`None`: the
    /// same range, or a base without a range — nothing to map).
    pub fn translator(&self, to: u32, size: u32) -> Result<Option<Arc<OwnedFd>>, String> {
        let Some(from) = self.start.filter(|&from| from != to) else {
            return Ok(None);
        };
        let mut map = self.translators.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ns) = map.get(&to) {
            return Ok(Some(ns.clone()));
        }
        // Host root keeps its id: what the runtime made in the layer as root (the tmpfs's own
        // root directory, whiteouts) stays root's, so the worker's P2 can still reach the layer.
        let ns = Arc::new(make_userns(&[(0, 0, 1), (from, to, size)])?);
        map.insert(to, ns.clone());
        Ok(Some(ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_that_map_root_or_wrap_are_refused() {
        assert!(UsernsConfig::default().check().is_ok());
        let c = |base, size, ranges| UsernsConfig {
            mode: UsernsMode::On,
            base,
            size,
            ranges,
        };
        assert!(c(0, 65536, 1).check().unwrap_err().contains("host's root"));
        assert!(c(1, 0, 1).check().is_err());
        assert!(
            c(u32::MAX - 10, 65536, 1)
                .check()
                .unwrap_err()
                .contains("past")
        );
        let off = UsernsConfig {
            mode: UsernsMode::Off,
            base: 0,
            size: 0,
            ranges: 0,
        };
        assert!(off.check().is_ok());
        assert_eq!(
            UsernsConfig::ranges_that_fit(DEFAULT_BASE, DEFAULT_SIZE),
            3840
        );
        assert_eq!(UsernsConfig::ranges_that_fit(100_000, 65_536), 32_510);
        assert_eq!(UsernsConfig::ranges_that_fit(u32::MAX - 5, 65_536), 1);
        assert_eq!("off".parse::<UsernsMode>(), Ok(UsernsMode::Off));
        assert!("yes".parse::<UsernsMode>().is_err());
    }
}
