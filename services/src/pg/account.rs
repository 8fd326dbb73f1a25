//! Which account the server runs as, and making the data root usable by it.
//!
//! PostgreSQL refuses to run as root. When nekton is root (workers must be, for namespaces and
//! cgroups) the server runs as the `postgres` system user, or `nobody` where there is none; the
//! data root is chowned to that account and every directory above it must be searchable by it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, Uid, User};

use super::error::PgError;

/// The account the server processes run as.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    /// Primary and supplementary groups, for the permission check.
    pub groups: Vec<Gid>,
    /// True when nekton is root and must switch to this account for the server.
    pub switch: bool,
}

/// The account to run PostgreSQL as: the current user, or when root `postgres` else `nobody`.
pub(crate) fn server_account() -> Result<Account, PgError> {
    let euid = Uid::effective();
    if !euid.is_root() {
        let name = User::from_uid(euid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| euid.to_string());
        return Ok(Account {
            name,
            uid: euid,
            gid: Gid::effective(),
            groups: Vec::new(),
            switch: false,
        });
    }
    for name in ["postgres", "nobody"] {
        let user = User::from_name(name).map_err(|source| PgError::UserLookup {
            user: name.to_string(),
            source,
        })?;
        if let Some(user) = user
            && !user.uid.is_root()
        {
            let groups = std::ffi::CString::new(name)
                .ok()
                .and_then(|c| nix::unistd::getgrouplist(&c, user.gid).ok())
                .unwrap_or_else(|| vec![user.gid]);
            return Ok(Account {
                name: user.name,
                uid: user.uid,
                gid: user.gid,
                groups,
                switch: true,
            });
        }
    }
    Err(PgError::NoUnprivilegedUser)
}

/// Checks that `account` can search (execute) every directory above `dir`. `dir` itself is not
/// checked: it is chowned to the account.
pub(crate) fn check_traversable(account: &Account, dir: &Path) -> Result<(), PgError> {
    for ancestor in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor)
            .map_err(|e| PgError::io("inspect directory", ancestor, e))?;
        let mode = meta.mode();
        let bit = if meta.uid() == account.uid.as_raw() {
            0o100
        } else if meta.gid() == account.gid.as_raw()
            || account.groups.iter().any(|g| g.as_raw() == meta.gid())
        {
            0o010
        } else {
            0o001
        };
        if mode & bit == 0 {
            return Err(PgError::NotTraversable {
                user: account.name.clone(),
                dir: ancestor.to_path_buf(),
                mode: mode & 0o7777,
                owner_uid: meta.uid(),
                data_root: dir.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Chowns `path` (not following symlinks) to the account.
pub(crate) fn chown(account: &Account, path: &Path) -> Result<(), PgError> {
    std::os::unix::fs::lchown(path, Some(account.uid.as_raw()), Some(account.gid.as_raw()))
        .map_err(|e| PgError::io("change owner of", path, e))
}

/// Chowns `path` and everything below it (not following symlinks) to the account.
pub(crate) fn chown_tree(account: &Account, path: &Path) -> Result<(), PgError> {
    chown(account, path)?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| PgError::io("inspect", path, e))?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| PgError::io("list", path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| PgError::io("list", path, e))?;
            chown_tree(account, &entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn stranger() -> Account {
        Account {
            name: "stranger".into(),
            uid: Uid::from_raw(54321),
            gid: Gid::from_raw(54321),
            groups: vec![Gid::from_raw(54321)],
            switch: true,
        }
    }

    #[test]
    fn closed_parent_is_reported() {
        let top = tempfile::tempdir().expect("tempdir");
        let closed = top.path().join("closed");
        let data = closed.join("pg");
        std::fs::create_dir_all(&data).expect("mkdir");
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        // tempdir itself is 0700 too; open it so the error names `closed`.
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let err = check_traversable(&stranger(), &data).expect_err("must not be traversable");
        let msg = err.to_string();
        assert!(msg.contains(&closed.display().to_string()), "{msg}");
        assert!(msg.contains("--state-dir /var/lib/nekton"), "{msg}");
        assert!(msg.contains("mode 700"), "{msg}");

        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        check_traversable(&stranger(), &data).expect("traversable with o+x");
    }
}
