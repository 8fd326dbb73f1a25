//! File-descriptor-relative filesystem operations that never follow symlinks.
//!
//! Everything here takes a directory fd and a *single* path component (no `/`, not `.` or `..` —
//! callers validate names first) or walks components one at a time, so a symlink planted by an
//! image can never redirect an operation outside the directory it started from.

use std::ffi::{CStr, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Flags for opening a directory we will read, create in, or set xattrs on.
fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn strict_resolve() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
        | ResolveFlag::RESOLVE_NO_XDEV
}

/// Opens `path` (trusted: chosen by the operator or by the store) as a directory fd, refusing a
/// symlink as its last component.
pub(crate) fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    Ok(nix::fcntl::open(path, dir_flags(), Mode::empty())?)
}

/// Opens `rel` (one or more components) beneath `dir` with `flags`, following no symlink and never
/// leaving `dir`: `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | …)`, or a component-by-component
/// `openat(O_NOFOLLOW)` walk where `openat2` is not available (old kernels, seccomp).
pub(crate) fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlag,
) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let how = OpenHow::new().flags(flags).resolve(strict_resolve());
    match openat2(dir, rel, how) {
        Err(Errno::ENOSYS) | Err(Errno::EPERM) => open_beneath_walk(dir, rel, flags),
        other => other,
    }
}

/// The fallback of [`open_beneath`]: one `openat(O_NOFOLLOW)` per component; every component but
/// the last must be a real directory; absolute paths and `..` are refused.
pub(crate) fn open_beneath_walk(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlag,
) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if rel.is_absolute() {
        return Err(Errno::EXDEV);
    }
    let components: Vec<&OsStr> = rel.iter().filter(|c| *c != OsStr::new(".")).collect();
    let Some((last, parents)) = components.split_last() else {
        return Err(Errno::EINVAL);
    };
    let mut cur: Option<OwnedFd> = None;
    for c in parents {
        if *c == OsStr::new("..") {
            return Err(Errno::EXDEV);
        }
        let at = cur.as_ref().map_or(dir, |fd| fd.as_fd());
        cur = Some(openat(at, *c, dir_flags(), Mode::empty())?);
    }
    if *last == OsStr::new("..") {
        return Err(Errno::EXDEV);
    }
    let at = cur.as_ref().map_or(dir, |fd| fd.as_fd());
    openat(at, *last, flags, Mode::empty())
}

/// Opens the directory `name` inside `dir` without following a symlink.
pub(crate) fn open_child_dir(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    debug_assert!(is_plain_name(name.as_bytes()));
    open_beneath(dir, Path::new(name), dir_flags())
}

/// `lstat` relative to `dir`; `None` if there is nothing there.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<FileStat>, Errno> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

pub(crate) fn is_dir(st: &FileStat) -> bool {
    file_type(st) == SFlag::S_IFDIR
}

/// A name that is safe to pass to `*at` calls as a single component.
pub(crate) fn is_plain_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// Removes `name` from `dir`, recursively for directories, without following symlinks. Recursion
/// depth is bounded by the depth of the tree, which extraction caps.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if !is_dir(&st) {
        return unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
    }
    let child = open_child_dir(dir, name)?;
    let mut names: Vec<OsString> = Vec::new();
    {
        let mut listing = nix::dir::Dir::from_fd(child.try_clone().map_err(io_to_errno)?)?;
        for entry in listing.iter() {
            let entry = entry?;
            let n = entry.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_os_string());
            }
        }
    }
    for n in names {
        remove_at(child.as_fd(), &n)?;
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

fn io_to_errno(e: io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// `fsetxattr(fd, name, value, 0)`.
pub(crate) fn set_xattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> Result<(), Errno> {
    // SAFETY: `fd` is a live descriptor borrowed for the duration of the call; `name` is a valid
    // NUL-terminated string and `value` a valid buffer of `value.len()` bytes, both outliving the
    // call; the kernel copies them and keeps no pointer.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn open_beneath_refuses_symlinks_and_dotdot() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"x").unwrap();
        symlink("/etc", root.join("evil")).unwrap();
        symlink("a", root.join("rel")).unwrap();
        let fd = open_dir_path(&root).unwrap();
        for open in [open_beneath, open_beneath_walk] {
            assert!(open(fd.as_fd(), Path::new("a/b/f"), OFlag::O_RDONLY).is_ok());
            assert!(open(fd.as_fd(), Path::new("./a/b/f"), OFlag::O_RDONLY).is_ok());
            for bad in [
                "evil/passwd",
                "rel/b/f",
                "../root/a/b/f",
                "a/../../x",
                "evil",
                "/etc/passwd",
            ] {
                assert!(
                    open(fd.as_fd(), Path::new(bad), OFlag::O_RDONLY).is_err(),
                    "{bad} opened"
                );
            }
        }
        assert!(open_child_dir(fd.as_fd(), OsStr::new("evil")).is_err());
        assert!(open_child_dir(fd.as_fd(), OsStr::new("a")).is_ok());
    }

    #[test]
    fn remove_at_does_not_follow_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        symlink(&outside, root.join("d/link")).unwrap();
        symlink(&outside, root.join("d/e/link2")).unwrap();
        let fd = open_dir_path(&root).unwrap();
        remove_at(fd.as_fd(), OsStr::new("d")).unwrap();
        assert!(!root.join("d").exists());
        assert!(outside.join("keep").exists());
    }

    #[test]
    fn plain_names() {
        assert!(is_plain_name(b"abc"));
        assert!(is_plain_name(b".wh.x"));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert!(!is_plain_name(bad));
        }
    }
}
