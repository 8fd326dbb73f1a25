//! P2's construction of the job's root filesystem, inside the job's private mount namespace.
//! Every path below the new root is resolved relative to a directory descriptor with `openat2`
//! (see the module docs of [`super`]); no host path is ever built from image or job data.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode, SFlag};

use super::protocol::{ChildError, ErrorKind, FD_BASE, FD_SCRATCH, FD_USERNS, os};
use super::spawn::{ChildSpec, FileSpec, Prepared};
use super::sys::{self, RESOLVE_CONTAINED, RESOLVE_TARGET};
use super::users;

/// Docker's masked paths: files get `/dev/null` bound over them, directories an empty
/// read-only tmpfs.
const MASKED: [&CStr; 10] = [
    c"proc/acpi",
    c"proc/kcore",
    c"proc/keys",
    c"proc/latency_stats",
    c"proc/timer_list",
    c"proc/timer_stats",
    c"proc/sched_debug",
    c"proc/scsi",
    c"sys/firmware",
    c"sys/devices/virtual/powercap",
];

/// Docker's read-only paths: bound onto themselves read-only (nosuid, nodev, noexec).
const READ_ONLY: [&CStr; 5] = [
    c"proc/bus",
    c"proc/fs",
    c"proc/irq",
    c"proc/sys",
    c"proc/sysrq-trigger",
];

/// Character devices of the minimal `/dev`: (name, major, minor).
const DEVICES: [(&CStr, u64, u64); 6] = [
    (c"null", 1, 3),
    (c"zero", 1, 5),
    (c"full", 1, 7),
    (c"random", 1, 8),
    (c"urandom", 1, 9),
    (c"tty", 5, 0),
];

const DEV_LINKS: [(&CStr, &CStr); 5] = [
    (c"/proc/self/fd", c"fd"),
    (c"/proc/self/fd/0", c"stdin"),
    (c"/proc/self/fd/1", c"stdout"),
    (c"/proc/self/fd/2", c"stderr"),
    (c"pts/ptmx", c"ptmx"),
];

/// Largest `/etc/passwd` or `/etc/group` read from an image.
const MAX_USER_DB: usize = 1 << 20;

type Result<T> = std::result::Result<T, ChildError>;

fn internal(what: impl std::fmt::Display) -> impl FnOnce(Errno) -> ChildError {
    os(ErrorKind::Internal, what)
}

/// A filesystem mount made with the new mount API: `fsopen`, string options, flags, create,
/// `fsmount` with mount attributes. Returns the detached mount.
fn new_mount(fs: &CStr, options: &[(&CStr, Option<&CStr>)], attrs: u64) -> Result<OwnedFd> {
    let what = || fs.to_string_lossy().into_owned();
    let ctx = sys::fsopen(fs).map_err(|e| internal(format!("fsopen({})", what()))(e))?;
    for (key, value) in options {
        let r = match value {
            Some(v) => sys::fsconfig_str(ctx.as_fd(), key, v),
            None => sys::fsconfig_flag(ctx.as_fd(), key),
        };
        r.map_err(|e| {
            internal(format!(
                "{} option {}={}",
                what(),
                key.to_string_lossy(),
                value.map(|v| v.to_string_lossy()).unwrap_or_default()
            ))(e)
        })?;
    }
    sys::fsconfig_create(ctx.as_fd()).map_err(|e| internal(format!("creating {}", what()))(e))?;
    sys::fsmount(ctx.as_fd(), attrs).map_err(|e| internal(format!("fsmount({})", what()))(e))
}

fn attach(mnt: &OwnedFd, target: &OwnedFd, what: &str) -> Result<()> {
    attach_fd(mnt.as_fd(), target, what)
}

fn attach_fd(mnt: BorrowedFd<'_>, target: &OwnedFd, what: &str) -> Result<()> {
    sys::move_mount_fd(mnt, target.as_fd()).map_err(|e| internal(format!("mounting {what}"))(e))
}

/// Opens a directory below `dir` for use as a mount target, creating it if missing. No symlink
/// may appear on the way (an image symlink at a mount point is how runc CVE-2019-16884 and
/// CVE-2019-19921 started): that is refused as an image error.
fn mount_target_dir(dir: BorrowedFd<'_>, path: &CStr, mode: u32) -> Result<OwnedFd> {
    let open = || {
        sys::openat2(
            dir,
            path,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
            RESOLVE_TARGET,
        )
    };
    let r = match open() {
        Err(Errno::ENOENT) => {
            match nix::sys::stat::mkdirat(dir, path, Mode::from_bits_truncate(mode)) {
                Ok(()) | Err(Errno::EEXIST) => open(),
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    r.map_err(|e| refuse_image_path(path, e))
}

fn refuse_image_path(path: &CStr, e: Errno) -> ChildError {
    let p = path.to_string_lossy();
    match e {
        Errno::ELOOP | Errno::EXDEV => ChildError::new(
            ErrorKind::Image,
            format!("the image has a symlink at or above /{p}, where the runtime mounts; refused"),
        ),
        Errno::ENOTDIR => ChildError::new(
            ErrorKind::Image,
            format!("/{p} in the image is not a directory (the runtime mounts there)"),
        ),
        e => internal(format!("opening /{p}"))(e),
    }
}

fn fstat(fd: BorrowedFd<'_>) -> std::result::Result<FileStat, Errno> {
    nix::sys::stat::fstat(fd)
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn is_reg(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> std::result::Result<(), Errno> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads a small regular file of the image, resolving symlinks inside the root only.
/// `Ok(None)` when it does not exist.
fn read_image_file(root: BorrowedFd<'_>, path: &CStr) -> Result<Option<Vec<u8>>> {
    let fd = match sys::openat2(
        root,
        path,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
        0,
        RESOLVE_CONTAINED,
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(None),
        Err(e) => return Err(internal(format!("opening {}", path.to_string_lossy()))(e)),
    };
    let st = fstat(fd.as_fd()).map_err(internal("fstat"))?;
    if !is_reg(&st) {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match nix::unistd::read(fd.as_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > MAX_USER_DB {
                    return Err(ChildError::new(
                        ErrorKind::Image,
                        format!(
                            "{} in the image is larger than {MAX_USER_DB} bytes",
                            path.to_string_lossy()
                        ),
                    ));
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(internal(format!("reading {}", path.to_string_lossy()))(e)),
        }
    }
    Ok(Some(out))
}

/// Opens (creating missing components, owned by `owner`) the absolute directory `components`
/// inside the root. Existing components are resolved with `RESOLVE_IN_ROOT` (an image symlink is
/// followed but cannot leave the root: `/../../..` is the root); created ones are plain
/// directories made with `mkdirat` on the parent's descriptor.
fn open_dir_in_root(
    root: BorrowedFd<'_>,
    components: &[CString],
    owner: (u32, u32),
    kind: ErrorKind,
    what: &str,
) -> Result<OwnedFd> {
    let mut cur = sys::openat2(
        root,
        c".",
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        RESOLVE_TARGET,
    )
    .map_err(internal("opening the root"))?;
    let mut prefix: Vec<u8> = Vec::new();
    for comp in components {
        prefix.push(b'/');
        prefix.extend_from_slice(comp.as_bytes());
        let prefix_c = CString::new(prefix.clone())
            .map_err(|_| ChildError::new(kind, format!("{what}: path contains a NUL byte")))?;
        let open = || {
            sys::openat2(
                root,
                &prefix_c,
                libc::O_PATH | libc::O_DIRECTORY,
                0,
                RESOLVE_CONTAINED,
            )
        };
        cur = match open() {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                match nix::sys::stat::mkdirat(
                    cur.as_fd(),
                    comp.as_c_str(),
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) => {
                        let fd = sys::openat2(
                            cur.as_fd(),
                            comp,
                            libc::O_PATH | libc::O_DIRECTORY,
                            0,
                            RESOLVE_TARGET,
                        )
                        .map_err(internal(format!("{what}: reopening a created directory")))?;
                        nix::unistd::fchownat(
                            fd.as_fd(),
                            c"",
                            Some(owner.0.into()),
                            Some(owner.1.into()),
                            nix::fcntl::AtFlags::AT_EMPTY_PATH,
                        )
                        .map_err(internal(format!("{what}: chown")))?;
                        fd
                    }
                    Err(Errno::EEXIST) => {
                        return Err(ChildError::new(
                            kind,
                            format!(
                                "{what}: `{}` is a dangling symlink in the image",
                                String::from_utf8_lossy(&prefix)
                            ),
                        ));
                    }
                    Err(e) => {
                        return Err(os(
                            kind,
                            format!("{what}: creating `{}`", String::from_utf8_lossy(&prefix)),
                        )(e));
                    }
                }
            }
            Err(Errno::ENOTDIR) => {
                return Err(ChildError::new(
                    kind,
                    format!(
                        "{what}: `{}` is not a directory in the image",
                        String::from_utf8_lossy(&prefix)
                    ),
                ));
            }
            Err(e) => {
                return Err(os(
                    kind,
                    format!("{what}: `{}`", String::from_utf8_lossy(&prefix)),
                )(e));
            }
        };
    }
    // A real (non-O_PATH) descriptor, for the *at calls that write below it.
    sys::openat2(
        cur.as_fd(),
        c".",
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
        RESOLVE_TARGET,
    )
    .map_err(internal(format!("{what}: opening")))
}

/// Creates or truncates the regular file `leaf` in `dir` without following a symlink leaf, and
/// writes `content`. `replace_symlink`: an image symlink there is removed (for files the runtime
/// owns, like /etc/hosts) instead of being refused.
#[allow(clippy::too_many_arguments)]
fn write_leaf(
    dir: BorrowedFd<'_>,
    leaf: &CStr,
    content: &[u8],
    mode: u32,
    owner: (u32, u32),
    replace_symlink: bool,
    kind: ErrorKind,
    what: &str,
) -> Result<()> {
    let flags = OFlag::O_WRONLY
        | OFlag::O_CREAT
        | OFlag::O_TRUNC
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let open = || nix::fcntl::openat(dir, leaf, flags, Mode::from_bits_truncate(0o600));
    let fd = match open() {
        Err(Errno::ELOOP) if replace_symlink => {
            nix::unistd::unlinkat(dir, leaf, nix::unistd::UnlinkatFlags::NoRemoveDir)
                .map_err(os(kind, format!("{what}: removing the image's symlink")))?;
            open()
        }
        Err(Errno::ELOOP) => {
            return Err(ChildError::new(
                kind,
                format!("{what}: it is a symlink in the image; refusing to write through it"),
            ));
        }
        other => other,
    }
    .map_err(os(kind, what.to_string()))?;
    let st = fstat(fd.as_fd()).map_err(internal("fstat"))?;
    if !is_reg(&st) {
        return Err(ChildError::new(
            kind,
            format!("{what}: exists in the image and is not a regular file"),
        ));
    }
    write_all(fd.as_fd(), content).map_err(os(kind, format!("{what}: write")))?;
    nix::unistd::fchown(&fd, Some(owner.0.into()), Some(owner.1.into()))
        .map_err(internal(format!("{what}: chown")))?;
    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode))
        .map_err(internal(format!("{what}: chmod")))?;
    Ok(())
}

/// Writes one input file below the working directory. Intermediate directories are created
/// (owned by the job user) or entered without following any symlink: a path through an image
/// symlink is refused.
fn write_input(workdir: BorrowedFd<'_>, f: &FileSpec, owner: (u32, u32)) -> Result<()> {
    let what = format!("input file `{}`", f.display);
    let mut cur: Option<OwnedFd> = None;
    for comp in &f.parents {
        let parent = cur.as_ref().map(|c| c.as_fd()).unwrap_or(workdir);
        let open = || {
            sys::openat2(
                parent,
                comp,
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
                RESOLVE_TARGET,
            )
        };
        let fd = match open() {
            Err(Errno::ENOENT) => {
                match nix::sys::stat::mkdirat(
                    parent,
                    comp.as_c_str(),
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) => {
                        nix::unistd::fchownat(
                            parent,
                            comp.as_c_str(),
                            Some(owner.0.into()),
                            Some(owner.1.into()),
                            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                        .map_err(internal(format!("{what}: chown")))?;
                        open()
                    }
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        cur = Some(fd.map_err(|e| match e {
            Errno::ELOOP | Errno::EXDEV => ChildError::new(
                ErrorKind::Spec,
                format!(
                    "{what}: `{}` is a symlink in the image; refusing to write through it",
                    comp.to_string_lossy()
                ),
            ),
            Errno::ENOTDIR | Errno::EEXIST => ChildError::new(
                ErrorKind::Spec,
                format!("{what}: `{}` is not a directory", comp.to_string_lossy()),
            ),
            e => os(ErrorKind::Spec, what.clone())(e),
        })?);
    }
    let dir = cur.as_ref().map(|c| c.as_fd()).unwrap_or(workdir);
    write_leaf(
        dir,
        &f.leaf,
        &f.content,
        f.mode,
        owner,
        false,
        ErrorKind::Spec,
        &what,
    )
}

/// The job's scratch tmpfs (`size` bytes, 0700, nosuid, nodev), made by the worker as a detached
/// mount before the fork ([`super::protocol::FD_SCRATCH`]). `nr_inodes`: see [`inodes_for`].
pub(crate) fn scratch_mount(size: &CStr) -> std::result::Result<OwnedFd, String> {
    let inodes = inodes_for(size);
    new_mount(
        c"tmpfs",
        &[
            (c"size", Some(size)),
            (c"nr_inodes", Some(&inodes)),
            (c"mode", Some(c"0700")),
        ],
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
    )
    .map_err(|e| e.msg)
}

/// `nr_inodes` of a job tmpfs of `size` bytes: one inode per 4 KiB page (at least 1024). A
/// non-empty file needs a page anyway, so this only bounds what costs no pages — empty files,
/// directories, symlinks — whose inodes would otherwise be limited by nothing but kernel memory
/// (an inode flood ends in `ENOSPC` instead).
fn inodes_for(size: &CStr) -> CString {
    let bytes: u64 = size.to_str().ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    CString::new((bytes / 4096).max(1024).to_string()).unwrap_or_default()
}

/// Builds the root filesystem and pivots into it. Returns what P3 needs. `enter_cgroup` (the wait
/// for the job's cgroup and its namespace) is called once: before the cgroup2 mount of a job that
/// sees its hierarchy, whose root is the caller's cgroup namespace, otherwise after the pivot.
pub(crate) fn build(
    spec: &ChildSpec,
    enter_cgroup: impl FnOnce() -> Result<()>,
) -> Result<Prepared> {
    let mut enter_cgroup = Some(enter_cgroup);
    // 1. The job's scratch tmpfs — a detached mount the worker made and still holds (it reads
    //    the run's writable layer after the job, or keeps it as a chain's base) — attached on
    //    the (empty) host directory the worker created. It is attached in this private mount
    //    namespace only: a crash cannot leak a host mount.
    let job_dir = nix::fcntl::open(
        spec.job_dir.as_c_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(internal("opening the job directory"))?;
    // SAFETY: P2 put the scratch mount at FD_SCRATCH and it stays open in this process.
    let scratch = unsafe { BorrowedFd::borrow_raw(FD_SCRATCH) };
    attach_fd(scratch, &job_dir, "the scratch tmpfs")?;
    for (name, mode) in [(c"upper", 0o755), (c"work", 0o700), (c"rootfs", 0o755)] {
        nix::sys::stat::mkdirat(scratch, name, Mode::from_bits_truncate(mode))
            .map_err(internal(format!("mkdir {}", name.to_string_lossy())))?;
    }
    // Host ids of the job's ids: the identity without a user namespace.
    let ids = spec.ids;
    let host = |id: u32| ids.map_or(Some(id), |i| i.host(id));
    // The job's root (host id `start` when rootless) owns the root directory, the files the
    // runtime writes and what it creates on the job's behalf.
    let root_id = host(0).unwrap_or(0);
    let root_owner = (root_id, root_id);
    if ids.is_some() {
        // The writable layer's top directory is the container's `/`: the job's root owns it,
        // so what the job creates lands as its host ids.
        nix::unistd::fchownat(
            scratch,
            c"upper",
            Some(root_id.into()),
            Some(root_id.into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(internal("chown upper"))?;
    }
    // Rootless: each image layer through an idmapped mount of the job's user namespace (a
    // clone of the store's directory, nothing on disk changes), on `<job dir>/<name>`.
    for (source, name) in &spec.idmapped {
        let what = || format!("the idmapped image layer {}", source.to_string_lossy());
        nix::sys::stat::mkdirat(scratch, name.as_c_str(), Mode::from_bits_truncate(0o755))
            .map_err(|e| internal(format!("mkdir for {}", what()))(e))?;
        let target = sys::openat2(
            scratch,
            name,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
            RESOLVE_TARGET,
        )
        .map_err(|e| internal(format!("opening the mount point of {}", what()))(e))?;
        let layer = sys::clone_path(scratch, source)
            .map_err(|e| internal(format!("open_tree of {}", what()))(e))?;
        // SAFETY: P2 put the job's user namespace at FD_USERNS (`ids` is set when `idmapped`
        // is not empty) and it stays open in this process.
        let userns = unsafe { BorrowedFd::borrow_raw(FD_USERNS) };
        sys::mount_idmap(layer.as_fd(), userns)
            .map_err(|e| internal(format!("mount_setattr(MOUNT_ATTR_IDMAP) of {}", what()))(e))?;
        attach(&layer, &target, &what())?;
    }
    if spec.empty_lower {
        nix::sys::stat::mkdirat(scratch, c"empty", Mode::from_bits_truncate(0o755))
            .map_err(internal("mkdir empty"))?;
    }
    // A chained run: the base (a read-only clone of an earlier run's scratch mount) goes on
    // `<job dir>/base`, so its `upper/` can be named as the top lower layer.
    if spec.has_base {
        nix::sys::stat::mkdirat(scratch, c"base", Mode::from_bits_truncate(0o700))
            .map_err(internal("mkdir base"))?;
        let base_dir = sys::openat2(
            scratch,
            c"base",
            libc::O_PATH | libc::O_DIRECTORY,
            0,
            RESOLVE_TARGET,
        )
        .map_err(internal("opening base"))?;
        // SAFETY: P2 put the base mount at FD_BASE (`has_base`) and it stays open here.
        let base = unsafe { BorrowedFd::borrow_raw(FD_BASE) };
        attach_fd(base, &base_dir, "the chain's base")?;
    }

    // 2. The overlay: image layers below, the tmpfs above. One `lowerdir+` per layer, so the
    //    4 KiB limit of mount(2)'s data page never applies.
    let mut options: Vec<(&CStr, Option<&CStr>)> = spec
        .lowerdirs
        .iter()
        .map(|l| (c"lowerdir+", Some(l.as_c_str())))
        .collect();
    options.push((c"upperdir", Some(&spec.upper)));
    options.push((c"workdir", Some(&spec.work)));
    let overlay = new_mount(c"overlay", &options, 0)?;
    let rootfs_dir = sys::openat2(
        scratch,
        c"rootfs",
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        RESOLVE_TARGET,
    )
    .map_err(internal("opening rootfs"))?;
    attach(&overlay, &rootfs_dir, "the overlay root filesystem")?;
    let root = sys::openat2(
        overlay.as_fd(),
        c".",
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
        RESOLVE_TARGET,
    )
    .map_err(internal("opening the root"))?;
    let root = root.as_fd();

    // 3. Files, before anything is mounted inside the root: a symlink in the image (say
    //    /etc/hosts -> /proc/sys/kernel/core_pattern) can only reach the image's own files.
    let user = resolve_user(spec, root)?;
    let owner = match (host(user.uid), host(user.gid)) {
        (Some(u), Some(g)) => (u, g),
        _ => return Err(unmapped_user(spec, &user)),
    };
    if let Some(g) = user.groups.iter().find(|&&g| host(g).is_none()) {
        let mut e = unmapped_user(spec, &user);
        e.msg = format!("{} (supplementary group {g})", e.msg);
        return Err(e);
    }
    let etc = open_dir_in_root(
        root,
        &[c"etc".to_owned()],
        root_owner,
        ErrorKind::Image,
        "/etc",
    )?;
    write_leaf(
        etc.as_fd(),
        c"hostname",
        &spec.hostname,
        0o644,
        root_owner,
        true,
        ErrorKind::Image,
        "/etc/hostname",
    )?;
    write_leaf(
        etc.as_fd(),
        c"hosts",
        &spec.hosts,
        0o644,
        root_owner,
        true,
        ErrorKind::Image,
        "/etc/hosts",
    )?;
    if let Some(resolv) = &spec.resolv_conf {
        write_leaf(
            etc.as_fd(),
            c"resolv.conf",
            resolv,
            0o644,
            root_owner,
            true,
            ErrorKind::Image,
            "/etc/resolv.conf",
        )?;
    }
    drop(etc);
    let workdir = open_dir_in_root(
        root,
        &spec.workdir_components,
        owner,
        ErrorKind::Spec,
        &format!("working directory `{}`", spec.workdir.to_string_lossy()),
    )?;
    for f in &spec.files {
        write_input(workdir.as_fd(), f, owner)?;
    }
    drop(workdir);

    // 4. Kernel filesystems, each attached to a descriptor of its target.
    let proc_dir = mount_target_dir(root, c"proc", 0o555)?;
    let proc = new_mount(
        c"proc",
        &[],
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC,
    )?;
    attach(&proc, &proc_dir, "/proc")?;
    let sys_dir = mount_target_dir(root, c"sys", 0o555)?;
    let sysfs = new_mount(
        c"sysfs",
        &[],
        sys::MOUNT_ATTR_RDONLY
            | sys::MOUNT_ATTR_NOSUID
            | sys::MOUNT_ATTR_NODEV
            | sys::MOUNT_ATTR_NOEXEC,
    )?;
    attach(&sysfs, &sys_dir, "/sys")?;
    if spec.cgroup2_mount {
        if let Some(enter) = enter_cgroup.take() {
            enter()?;
        }
        // The job's own cgroup, read-only: this process is in the job's cgroup and its cgroup
        // namespace, so the new cgroup2 mount's root is the job's cgroup.
        let target = sys::openat2(
            sysfs.as_fd(),
            c"fs/cgroup",
            libc::O_PATH | libc::O_DIRECTORY,
            0,
            RESOLVE_TARGET,
        )
        .map_err(internal("opening /sys/fs/cgroup in the container's sysfs"))?;
        let cgroup = new_mount(
            c"cgroup2",
            &[],
            sys::MOUNT_ATTR_RDONLY
                | sys::MOUNT_ATTR_NOSUID
                | sys::MOUNT_ATTR_NODEV
                | sys::MOUNT_ATTR_NOEXEC,
        )?;
        attach(&cgroup, &target, "/sys/fs/cgroup")?;
    }

    let dev_dir = mount_target_dir(root, c"dev", 0o755)?;
    // The job's root owns /dev and /dev/shm; /dev/pts' tty group is the job's gid 5.
    let root_id_c = CString::new(root_id.to_string()).unwrap_or_default();
    let tty_gid = CString::new(host(5).unwrap_or(5).to_string()).unwrap_or_default();
    let dev = new_mount(
        c"tmpfs",
        &[
            (c"size", Some(c"65536")),
            (c"mode", Some(c"0755")),
            (c"nr_inodes", Some(c"64")),
            (c"uid", Some(&root_id_c)),
            (c"gid", Some(&root_id_c)),
        ],
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC,
    )?;
    attach(&dev, &dev_dir, "/dev")?;
    let devfd = dev.as_fd();
    for (name, major, minor) in DEVICES {
        nix::sys::stat::mknodat(
            devfd,
            name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            libc::makedev(major as u32, minor as u32),
        )
        .map_err(internal(format!("mknod /dev/{}", name.to_string_lossy())))?;
    }
    for (target, name) in DEV_LINKS {
        nix::unistd::symlinkat(target, devfd, name)
            .map_err(internal(format!("symlink /dev/{}", name.to_string_lossy())))?;
    }
    let pts_dir = mount_target_dir(devfd, c"pts", 0o755)?;
    let pts = new_mount(
        c"devpts",
        &[
            (c"newinstance", None),
            (c"ptmxmode", Some(c"0666")),
            (c"mode", Some(c"0620")),
            (c"gid", Some(&tty_gid)),
        ],
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC,
    )?;
    attach(&pts, &pts_dir, "/dev/pts")?;
    let shm_dir = mount_target_dir(devfd, c"shm", 0o1777)?;
    let shm_inodes = inodes_for(&spec.shm_size);
    let shm = new_mount(
        c"tmpfs",
        &[
            (c"size", Some(&spec.shm_size)),
            (c"nr_inodes", Some(&shm_inodes)),
            (c"mode", Some(c"1777")),
            (c"uid", Some(&root_id_c)),
            (c"gid", Some(&root_id_c)),
        ],
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC,
    )?;
    attach(&shm, &shm_dir, "/dev/shm")?;

    // Masked and read-only paths of /proc and /sys.
    let null = sys::openat2(devfd, c"null", libc::O_PATH, 0, RESOLVE_TARGET)
        .map_err(internal("opening /dev/null"))?;
    for path in MASKED {
        let Some(target) = open_kernel_path(root, path)? else {
            continue;
        };
        let st = fstat(target.as_fd()).map_err(internal("fstat"))?;
        let mask = if is_dir(&st) {
            new_mount(
                c"tmpfs",
                &[(c"size", Some(c"4096")), (c"nr_inodes", Some(c"1"))],
                sys::MOUNT_ATTR_RDONLY
                    | sys::MOUNT_ATTR_NOSUID
                    | sys::MOUNT_ATTR_NODEV
                    | sys::MOUNT_ATTR_NOEXEC,
            )?
        } else {
            sys::clone_tree(null.as_fd(), false).map_err(internal("binding /dev/null"))?
        };
        attach(
            &mask,
            &target,
            &format!("a mask over /{}", path.to_string_lossy()),
        )?;
    }
    for path in READ_ONLY {
        let Some(target) = open_kernel_path(root, path)? else {
            continue;
        };
        let what = format!("/{} read-only", path.to_string_lossy());
        let bind = sys::clone_tree(target.as_fd(), true).map_err(internal(what.clone()))?;
        sys::mount_setattr_fd(
            bind.as_fd(),
            sys::MOUNT_ATTR_RDONLY
                | sys::MOUNT_ATTR_NOSUID
                | sys::MOUNT_ATTR_NODEV
                | sys::MOUNT_ATTR_NOEXEC,
        )
        .map_err(internal(what.clone()))?;
        attach(&bind, &target, &what)?;
    }

    // 5. pivot_root into the overlay and detach the old root (with it the host's whole tree).
    nix::unistd::fchdir(root).map_err(internal("fchdir to the new root"))?;
    sys::pivot_root_dot().map_err(internal("pivot_root"))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(internal("detaching the old root"))?;
    nix::unistd::chdir("/").map_err(internal("chdir /"))?;
    nix::unistd::sethostname(std::ffi::OsStr::new(
        std::str::from_utf8(&spec.hostname)
            .unwrap_or("nekton")
            .trim_end(),
    ))
    .map_err(internal("sethostname"))?;
    if let Some(enter) = enter_cgroup.take() {
        enter()?;
    }

    let mut env = spec.env.clone();
    if spec.home_from_passwd
        && let Ok(home) = CString::new(format!("HOME={}", user.home))
    {
        env.push(home);
    }
    Ok(Prepared { user, env })
}

/// A path of the fresh /proc or /sys to mask or protect; `None` if this kernel does not have it.
fn open_kernel_path(root: BorrowedFd<'_>, path: &CStr) -> Result<Option<OwnedFd>> {
    match sys::openat2(
        root,
        path,
        libc::O_PATH | libc::O_NOFOLLOW,
        0,
        RESOLVE_TARGET,
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(internal(format!("opening /{}", path.to_string_lossy()))(e)),
    }
}

/// The job's user has an id its user namespace does not map (`0..size`).
fn unmapped_user(spec: &ChildSpec, user: &users::ResolvedUser) -> ChildError {
    let size = spec.ids.map_or(0, |i| i.size);
    ChildError::new(
        if spec.user_from_job {
            ErrorKind::Spec
        } else {
            ErrorKind::Image
        },
        format!(
            "user `{}` (uid {}, gid {}) is outside the job's user namespace, which maps ids 0 \
             to {}: use a smaller uid/gid (or ask the operator for a larger --userns-size)",
            spec.user,
            user.uid,
            user.gid,
            size.saturating_sub(1)
        ),
    )
}

fn resolve_user(spec: &ChildSpec, root: BorrowedFd<'_>) -> Result<users::ResolvedUser> {
    let passwd = read_image_file(root, c"/etc/passwd")?;
    let group = read_image_file(root, c"/etc/group")?;
    users::resolve(&spec.user, passwd.as_deref(), group.as_deref()).map_err(|msg| {
        ChildError::new(
            if spec.user_from_job {
                ErrorKind::Spec
            } else {
                ErrorKind::Image
            },
            msg,
        )
    })
}
