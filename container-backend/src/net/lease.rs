//! The per-host address allocator: one lease file per address, created with `O_EXCL` in a
//! directory every worker of the host shares (by default `/run/nekton/net/<bridge>`, a tmpfs
//! that a reboot empties together with the bridge). The file holds the owner's
//! `<pid> <process start time>` (an [`Owner`], written with a space as the versions before the
//! shared owner helper did: workers of both versions may share the directory during an upgrade,
//! and each must read the other's leases as live); a worker that starts removes the leases of
//! owners that are not [alive](Owner::is_alive) (a crashed predecessor, or a recycled pid), after
//! deleting their veth and flushing their conntrack entries. A lease file that does not parse has
//! no owner and is stale.
//!
//! `O_EXCL` makes the allocation safe across threads and processes: two workers can never hold
//! the same address, and an address is free again only when its lease file is removed — which a
//! job's teardown does last, after its veth is gone and its conntrack entries are flushed.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use runtime_core::owner::Owner;

use super::Ipv4Net;

/// Leases of one subnet in one directory.
#[derive(Debug)]
pub(crate) struct Leases {
    dir: PathBuf,
    subnet: Ipv4Net,
    /// `<pid> <start time>` of this process.
    owner: String,
    /// Where the next search starts (round robin: a released address is reused last, so late
    /// packets or conntrack entries of a finished job never meet the next job on that address).
    cursor: AtomicU32,
}

/// A lease file: its address, path and owner if readable.
pub(crate) type LeaseEntry = (Ipv4Addr, PathBuf, Option<Owner>);

/// One leased address. Dropping it removes the lease file.
#[derive(Debug)]
pub(crate) struct Lease {
    pub addr: Ipv4Addr,
    path: PathBuf,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove an address lease");
        }
    }
}

/// What a lease file holds for `owner`: `<pid> <start time>` (the on-disk format, see the
/// module docs).
pub(crate) fn owner_text(owner: Owner) -> String {
    format!("{} {}", owner.pid(), owner.start_time())
}

/// The owner recorded in a lease file, if it parses.
pub(crate) fn parse_owner(text: &str) -> Option<Owner> {
    let mut it = text.split_whitespace();
    let pid = it.next()?;
    let start = it.next()?;
    format!("{pid}.{start}").parse().ok()
}

impl Leases {
    pub fn new(dir: &Path, subnet: Ipv4Net, owner: String) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // Start at a point that depends on the owner, so concurrent workers rarely collide.
        let seed = owner
            .bytes()
            .fold(0u32, |h, b| h.rotate_left(5) ^ u32::from(b));
        Ok(Self {
            dir: dir.to_path_buf(),
            subnet,
            owner,
            cursor: AtomicU32::new(seed),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Leases an address that no one holds: the first host address of the subnet is the
    /// bridge's (the gateway), the network and broadcast addresses are never handed out.
    pub fn acquire(&self) -> std::io::Result<Lease> {
        let hosts = self.subnet.host_count();
        if hosts < 2 {
            return Err(std::io::Error::other(format!(
                "subnet {} has no room for jobs",
                self.subnet
            )));
        }
        // Host numbers 2..=hosts (1 is the gateway).
        let span = hosts - 1;
        for _ in 0..span {
            let n = 2 + self.cursor.fetch_add(1, Ordering::Relaxed) % span;
            let addr = self.subnet.host(n);
            let path = self.dir.join(addr.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    let lease = Lease { addr, path };
                    f.write_all(format!("{}\n", self.owner).as_bytes())?;
                    return Ok(lease);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other(format!(
            "every address of {} is leased (see {}): use a larger subnet or fewer concurrent \
             bridge jobs",
            self.subnet,
            self.dir.display()
        )))
    }

    /// Every lease file: its address and its owner (None when unreadable or malformed).
    pub fn list(&self) -> std::io::Result<Vec<LeaseEntry>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(addr) = name.to_str().and_then(|s| s.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let owner = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|t| parse_owner(&t));
            out.push((addr, entry.path(), owner));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_exclusive_and_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let subnet: Ipv4Net = "10.1.2.0/29".parse().unwrap();
        let a = Leases::new(tmp.path(), subnet, "1 2".into()).unwrap();
        let b = Leases::new(tmp.path(), subnet, "3 4".into()).unwrap();
        // /29: hosts .1-.6, .1 is the gateway: 5 addresses for jobs, shared by both allocators.
        let mut held = Vec::new();
        for i in 0..5 {
            let l = if i % 2 == 0 { a.acquire() } else { b.acquire() }.unwrap();
            assert!(l.addr != "10.1.2.1".parse::<Ipv4Addr>().unwrap());
            assert!(subnet.contains(l.addr));
            held.push(l);
        }
        let mut addrs: Vec<_> = held.iter().map(|l| l.addr).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 5);
        assert!(
            a.acquire()
                .unwrap_err()
                .to_string()
                .contains("every address")
        );
        let listed = a.list().unwrap();
        assert_eq!(listed.len(), 5);
        assert!(listed.iter().all(|(_, _, o)| o.is_some()));
        let freed = held.pop().unwrap().addr;
        assert_eq!(b.acquire().unwrap().addr, freed);
    }

    #[test]
    fn lease_owners_are_pid_and_start_time() {
        let tmp = tempfile::tempdir().unwrap();
        let subnet: Ipv4Net = "10.1.3.0/29".parse().unwrap();
        let me = Owner::current().expect("procfs");
        let leases = Leases::new(tmp.path(), subnet, owner_text(me)).unwrap();
        let held = leases.acquire().unwrap();
        // The on-disk format of the previous version: `<pid> <start time>\n`.
        assert_eq!(
            std::fs::read_to_string(tmp.path().join(held.addr.to_string())).unwrap(),
            format!("{} {}\n", me.pid(), me.start_time())
        );
        let others: Vec<String> = (2..=6)
            .map(|n| format!("10.1.3.{n}"))
            .filter(|a| *a != held.addr.to_string())
            .collect();
        // Our pid, another start time: a predecessor whose pid we were given (pid reuse).
        let recycled = Owner::new(me.pid(), me.start_time() + 1);
        std::fs::write(tmp.path().join(&others[0]), owner_text(recycled)).unwrap();
        std::fs::write(tmp.path().join(&others[1]), "garbage\n").unwrap();
        let listed = leases.list().unwrap();
        assert_eq!(listed.len(), 3);
        let owners: Vec<_> = listed.iter().map(|(a, _, o)| (a.to_string(), *o)).collect();
        assert!(owners.contains(&(held.addr.to_string(), Some(me))));
        assert!(owners.contains(&(others[0].clone(), Some(recycled))));
        assert!(owners.contains(&(others[1].clone(), None)));
        let live: Vec<_> = listed
            .iter()
            .filter(|(_, _, o)| super::super::owner_alive(*o))
            .map(|(a, _, _)| *a)
            .collect();
        assert_eq!(live, vec![held.addr], "only our own lease has a live owner");
    }
}
