//! Chained runs ([`runtime_core::Chain`]): a kept run's writable layer as the base of later runs.
//!
//! A run with `chain.keep` returns a [`Base`] holding [`Kept`]: the worker's descriptor of the
//! run's scratch tmpfs — the original detached mount, which stays in the anonymous mount
//! namespace `fsmount` gave it (the job's P2 only ever attached a *clone*), made read-only once
//! the run ended — with the image record and a lease on its layers. A run on that base gets
//! another clone of it (read-only, attached by P2 on `<job dir>/base`), whose `upper/` is its
//! overlay's top lower layer, above the image's layers; its own writes go to its own fresh
//! scratch tmpfs. Several runs may share one base at once (overlayfs never writes to a lower
//! layer). The tmpfs is freed when the last clone of the `Base` is dropped (the descriptor
//! closes, and with it the anonymous namespace and the superblock).
//!
//! Why the original is kept detached rather than moved into the job's namespace: a mount whose
//! namespace died (the job's, after it ended) can still be read through a descriptor, but can no
//! longer be cloned or used as an overlayfs layer (`EINVAL`); a mount in an anonymous namespace
//! can (Linux 6.15+: `open_tree(OPEN_TREE_CLONE)` of a detached mount). Runs without `keep` and
//! without a base still move their one mount, which works on every kernel the backend supports.

use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use image_store::{ImageRecord, ImageRef, Lease};
use nix::errno::Errno;
use runtime_core::{Base, Chain, OutcomeReason};

use super::sys;
use super::userns::{BaseIds, Range};

/// The worker's descriptor of a scratch tmpfs. Its last close frees the tmpfs — for a layer of a
/// GiB, a while of kernel work on the closing thread — so the drop closes it on a blocking
/// thread when there is an async runtime, never on one of its workers.
pub(crate) struct ScratchFd(ManuallyDrop<OwnedFd>);

impl ScratchFd {
    pub fn new(fd: OwnedFd) -> Self {
        Self(ManuallyDrop::new(fd))
    }
}

impl AsFd for ScratchFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Drop for ScratchFd {
    fn drop(&mut self) {
        // SAFETY: taken once, here, and `self.0` is never used again.
        let fd = unsafe { ManuallyDrop::take(&mut self.0) };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || drop(fd))),
            Err(_) => drop(fd),
        }
    }
}

/// The backend name a [`Base`] of this backend carries ([`runtime_core::Backend::name`]).
pub(crate) const BACKEND: &str = "container";

/// What a kept run leaves for the runs on it (the record inside its [`Base`]).
pub(crate) struct Kept {
    /// The run's scratch tmpfs (holding `upper/`), a detached read-only mount.
    pub scratch: ScratchFd,
    /// The image the run sat on; runs on this base use exactly these layers and this config.
    pub record: ImageRecord,
    /// Keeps the layers from being garbage-collected while the base exists.
    pub _lease: Lease,
    /// Rootless: the host id range the build ran in (its layer's ids), and the namespaces
    /// showing them to cases in other ranges.
    pub ids: BaseIds,
}

/// The kept record of `chain.base`, checked against the request: made by this backend, for the
/// same image reference. `Ok(None)` without a base. An error is the job's `spec_error` detail.
pub(crate) fn base_of<'a>(chain: &'a Chain, reference: &str) -> Result<Option<&'a Kept>, String> {
    let Some(base) = &chain.base else {
        return Ok(None);
    };
    if chain.keep {
        return Err(
            "a run on a base cannot itself be kept (chains are one level deep: keep \
                    the build, run the cases on its base)"
                .into(),
        );
    }
    if base.backend() != BACKEND {
        return Err(format!(
            "the chain's base was made by the {} backend; a container job can only start from \
             a container job's base",
            base.backend()
        ));
    }
    let Some(kept) = base.get::<Kept>() else {
        return Err("the chain's base is not a container base".into());
    };
    let wanted = ImageRef::parse(reference)
        .map(|r| r.to_string())
        .map_err(|e| e.to_string())?;
    if wanted != kept.record.reference {
        return Err(format!(
            "the chain's base was made on image `{}`, this job asks for `{wanted}`: run the \
             job on the base's image",
            kept.record.reference
        ));
    }
    Ok(Some(kept))
}

/// A clone of a detached mount (the kept original stays where it is). The error is the job's
/// outcome: a kernel without the clone of detached mounts cannot run chains (`spec_error`, like
/// any limit this host cannot enforce).
pub(crate) fn clone_detached(
    mnt: &impl AsFd,
    what: &str,
) -> Result<OwnedFd, (OutcomeReason, String)> {
    sys::clone_tree(mnt.as_fd(), false).map_err(|e| match e {
        Errno::EINVAL => (
            OutcomeReason::SpecError,
            format!(
                "{what} needs Linux 6.15 or newer (open_tree(OPEN_TREE_CLONE) of a detached \
                 mount: {})",
                e.desc()
            ),
        ),
        e => (
            OutcomeReason::InternalError,
            format!("{what}: cloning the scratch mount: {}", e.desc()),
        ),
    })
}

/// Rootless: makes `clone` (a detached clone of `kept`'s mount, for a case in `range`) show the
/// build's host ids as the case's: an idmapped mount through a namespace mapping the build's
/// range onto the case's. Nothing to do in the build's own range (or for a base without one).
pub(crate) fn map_ids(clone: &OwnedFd, kept: &Kept, range: &Range) -> Result<(), String> {
    let Some(ns) = kept.ids.translator(range.start, range.size)? else {
        return Ok(());
    };
    sys::mount_idmap(clone.as_fd(), ns.as_fd()).map_err(|e| {
        format!(
            "showing the base's ids to this run (mount_setattr(MOUNT_ATTR_IDMAP) of the base): {}",
            e.desc()
        )
    })
}

/// Turns a finished run's scratch mount into a [`Base`]: read-only from now on. `ids_start`:
/// the first host id of the run's user namespace range (`None` without one).
pub(crate) fn keep(
    scratch: ScratchFd,
    record: ImageRecord,
    lease: Lease,
    ids_start: Option<u32>,
) -> Result<Base, String> {
    sys::mount_setattr_fd(scratch.as_fd(), sys::MOUNT_ATTR_RDONLY)
        .map_err(|e| format!("making the kept layer read-only: {}", e.desc()))?;
    Ok(Base::new(
        BACKEND,
        Kept {
            scratch,
            record,
            _lease: lease,
            ids: BaseIds::new(ids_start),
        },
    ))
}
