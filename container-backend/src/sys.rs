//! Thin wrappers over the Linux system calls the container setup needs and that neither `nix` nor
//! `libc` wrap: the new mount API (`fsopen`, `fsconfig`, `fsmount`, `move_mount`, `open_tree`,
//! `mount_setattr`), `openat2`, `pivot_root`, `close_range`, `pidfd_open` and `capset`.
//!
//! Every wrapper returns `Result<_, Errno>` and never allocates, so it is usable in a forked child.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

// <linux/mount.h>
pub const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
pub const FSCONFIG_SET_FLAG: libc::c_uint = 0;
pub const FSCONFIG_SET_STRING: libc::c_uint = 1;
pub const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
pub const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
/// The mount shows its files' owners through a user namespace's id map (idmapped mount).
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
pub const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
pub const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
pub const OPEN_TREE_CLONE: libc::c_uint = 0x1;
pub const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
pub const AT_EMPTY_PATH: libc::c_uint = 0x1000;
pub const AT_RECURSIVE: libc::c_uint = 0x8000;
// <linux/openat2.h>
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;
pub const RESOLVE_IN_ROOT: u64 = 0x10;
/// Mount targets: below the root, no symlink at all on the way (an image symlink there is refused).
pub const RESOLVE_TARGET: u64 = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
/// Image paths that may contain symlinks: followed, but clamped to the root like a chroot.
pub const RESOLVE_CONTAINED: u64 = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
// <linux/close_range.h>
pub const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn check(r: libc::c_long) -> Result<libc::c_long, Errno> {
    if r < 0 { Err(Errno::last()) } else { Ok(r) }
}

fn fd_result(r: libc::c_long) -> Result<OwnedFd, Errno> {
    let fd = check(r)? as RawFd;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fsopen(fs, FSOPEN_CLOEXEC)`: a filesystem context to configure.
pub fn fsopen(fs: &CStr) -> Result<OwnedFd, Errno> {
    // SAFETY: `fs` is a valid NUL-terminated string for the duration of the call.
    fd_result(unsafe { libc::syscall(libc::SYS_fsopen, fs.as_ptr(), FSOPEN_CLOEXEC) })
}

/// `fsconfig(FSCONFIG_SET_STRING, key, value)`.
pub fn fsconfig_str(fs: BorrowedFd<'_>, key: &CStr, value: &CStr) -> Result<(), Errno> {
    // SAFETY: both strings are valid NUL-terminated strings; `fs` is an open descriptor.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// `fsconfig(FSCONFIG_SET_FLAG, key)`.
pub fn fsconfig_flag(fs: BorrowedFd<'_>, key: &CStr) -> Result<(), Errno> {
    // SAFETY: `key` is a valid NUL-terminated string; a flag takes no value (NULL, 0).
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_FLAG,
            key.as_ptr(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })
    .map(drop)
}

/// `fsconfig(FSCONFIG_CMD_CREATE)`: creates the superblock.
pub fn fsconfig_create(fs: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: the command takes no key or value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })
    .map(drop)
}

/// `fsmount(fs, FSMOUNT_CLOEXEC, attrs)`: a detached mount of the created superblock.
pub fn fsmount(fs: BorrowedFd<'_>, attrs: u64) -> Result<OwnedFd, Errno> {
    // SAFETY: plain integer arguments.
    fd_result(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
}

/// `move_mount(mnt, "", target, "", F_EMPTY_PATH | T_EMPTY_PATH)`: attaches the detached mount
/// `mnt` on the directory (or file) that the descriptor `target` refers to.
pub fn move_mount_fd(mnt: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: the empty strings are valid NUL-terminated strings; both fds are open.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// `open_tree(fd, "", OPEN_TREE_CLONE | AT_EMPTY_PATH [| AT_RECURSIVE])`: a detached bind mount
/// of what `fd` refers to.
pub fn clone_tree(fd: BorrowedFd<'_>, recursive: bool) -> Result<OwnedFd, Errno> {
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: the empty path is a valid NUL-terminated string.
    fd_result(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) })
}

/// `open_tree(dir, path, OPEN_TREE_CLONE)`: a detached bind mount of the directory `path` names
/// (relative to `dir`; absolute paths ignore it). Not recursive: mounts below it are not cloned.
pub fn clone_path(dir: BorrowedFd<'_>, path: &CStr) -> Result<OwnedFd, Errno> {
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dir.as_raw_fd(),
            path.as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
        )
    })
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH, {MOUNT_ATTR_IDMAP, userns_fd})`: makes the detached
/// mount `mnt` an idmapped mount showing each on-disk id `n` as the host id the user namespace
/// `userns` maps its `n` to (so no file of the mounted tree is chowned or copied).
pub fn mount_idmap(mnt: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> Result<(), Errno> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `attr` lives across the call and its size is passed; the path is a valid string.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, {attr_set})` on a (detached) mount.
pub fn mount_setattr_fd(mnt: BorrowedFd<'_>, set: u64) -> Result<(), Errno> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `attr` lives across the call and its size is passed; the path is a valid string.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            AT_EMPTY_PATH | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// Makes every mount of this mount namespace private (`mount_setattr("/", AT_RECURSIVE,
/// propagation = MS_PRIVATE)`), so nothing we mount propagates to the host.
pub fn make_rprivate() -> Result<(), Errno> {
    let attr = MountAttr {
        attr_set: 0,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    // SAFETY: `attr` lives across the call; "/" is a valid NUL-terminated string.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// `openat2(dir, path, {flags | O_CLOEXEC, mode, resolve})`, retried on `EAGAIN` (which
/// `RESOLVE_IN_ROOT` returns when a concurrent rename might have let a lookup escape).
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
    resolve: u64,
) -> Result<OwnedFd, Errno> {
    // SAFETY: `open_how` is plain old data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
        u64::from(mode)
    } else {
        0
    };
    how.resolve = resolve;
    let mut tries = 0;
    loop {
        // SAFETY: `path` is a valid string and `how` lives across the call; its size is passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        match fd_result(r) {
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

/// `pivot_root(".", ".")` (the caller has `fchdir`ed into the new root).
pub fn pivot_root_dot() -> Result<(), Errno> {
    // SAFETY: both arguments are valid NUL-terminated strings.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) }).map(drop)
}

/// `close_range(first, ~0, flags)`.
pub fn close_range_from(first: libc::c_uint, flags: libc::c_uint) -> Result<(), Errno> {
    // SAFETY: plain integer arguments; closing descriptors we do not use is the point.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, flags) })
        .map(drop)
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: libc::pid_t) -> Result<OwnedFd, Errno> {
    // SAFETY: plain integer arguments.
    fd_result(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `capset` of the calling thread: effective = permitted = `caps` (a bit mask over capability
/// numbers), inheritable empty.
pub fn capset_self(caps: u64) -> Result<(), Errno> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let lo = caps as u32;
    let hi = (caps >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: header and data are valid for the call; version 3 takes two data elements.
    check(unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    })
    .map(drop)
}
