//! Bridge networking for container jobs (`NetworkMode::Bridge`).
//!
//! # Shape
//!
//! ```text
//!  host netns                                        job netns (one per job)
//!  ┌───────────────────────────────────────────┐     ┌──────────────────────────┐
//!  │ nekton0 (bridge, 10.88.0.1/16)            │     │ lo (up)                  │
//!  │   └─ nk0a580002 (veth, port isolated) ◀───┼─────┼─▶ eth0 10.88.0.2/16      │
//!  │ table inet nekton: forward/input/nat      │     │   default via 10.88.0.1  │
//!  └───────────────────────────────────────────┘     └──────────────────────────┘
//! ```
//!
//! - [`Network::new`] (once per worker): checks `nft` and `conntrack`, sets
//!   `net.ipv4.ip_forward=1`, creates the bridge with the gateway address if missing, installs the
//!   `inet <table>` nftables table (one atomic transaction through `nft -j`, see [`nft`]) and
//!   cleans what a crashed worker left: leases of dead owners, their veths and conntrack entries.
//! - [`Network::prepare`] (per bridge job, ahead of time by [`pool`] or on the job's path when
//!   the pool has none ready): leases an address ([`lease`]), creates the job's network
//!   namespace on a short-lived thread (which also brings up its `lo` and opens a netlink socket
//!   inside it), creates the veth pair with its peer *directly in that namespace* as `eth0`,
//!   isolates the bridge port, and configures `eth0` (up, address, default route) through the
//!   in-namespace socket. [`Attachment::claim`] (per job, before the fork) makes it the job's:
//!   installs the job's egress policy if it has an allow-list (one nft transaction: a chain on
//!   the ingress hook of the job's veth, see [`nft`]) and, for a prepared one, reads the
//!   counters the job's bill starts from. P2 then `setns`es into the namespace instead of
//!   unsharing a new one, so the network is complete before any code of the job runs and `none`
//!   jobs pay nothing. An attachment is one job's, never reused.
//! - [`Attachment::teardown`] (per job, whatever the outcome): reads the veth's counters (the
//!   bill's `net_rx_bytes`/`net_tx_bytes`); then, in the background, drops the namespace (the
//!   kernel destroys it and the veth pair with it in its batched namespace cleanup; an explicit
//!   veth delete would hold the RTNL lock through RCU grace periods — 10-30 ms here — and stall
//!   the next job's setup), waits until the veth is gone (deleting it after 5 s if not), flushes
//!   the address's egress policy and conntrack entries (except TCP `TIME_WAIT`, see
//!   `flush_address`) and only then removes the lease, so the address is never handed out while anything of the previous job
//!   is left. Dropping an [`Attachment`] without `teardown` (an aborted job) does the same.
//!   [`Network::settle`] waits for all of it.
//!
//! # Isolation
//!
//! Port isolation (`IFLA_BRPORT_ISOLATED`) stops frames between job ports on the bridge itself,
//! independent of `br_netfilter`; the table drops what is routed: job → job through the host,
//! job → any address of the host (input chain: the API, PostgreSQL, a metadata address bound on
//! the host), job → 169.254.0.0/16, IPv6; and anything from outside to a job that is not a reply.
//! [`BridgeConfig::allow`] lists the destinations (CIDR, optional port) an operator opens.
//!
//! A job with an allow-list (`ContainerOptions::network_allow`) is narrowed further, before all
//! of that: its own chain on the ingress hook of its veth drops every packet that is not from its
//! address to a listed destination or to port 53 of the resolvers ([`nft`]'s module docs).

pub(crate) mod lease;
pub(crate) mod nft;
pub(crate) mod pool;

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoData, InfoVeth, LinkAttribute, LinkMessage,
};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth};
use runtime_core::owner::Owner;

/// How long a finished job's veth may take to vanish with its namespace before it is deleted.
const VETH_GONE_TIMEOUT: Duration = Duration::from_secs(5);

/// An IPv4 network: an address and a prefix length (`10.88.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == u32::from(self.network())
    }

    /// Usable host numbers (1..=count); 0 for /31 and /32.
    pub(crate) fn host_count(&self) -> u32 {
        if self.prefix >= 31 {
            0
        } else {
            (1u32 << (32 - u32::from(self.prefix))) - 2
        }
    }

    /// Host number `n` of the network (1 = the first host).
    pub(crate) fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) | n)
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("`{s}` is not an IPv4 network (like 10.88.0.0/16)"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("`{s}`: the prefix length must be 0..=32"))?;
        let net = Ipv4Net { addr, prefix };
        Ok(Ipv4Net {
            addr: net.network(),
            prefix,
        })
    }
}

/// A destination the operator opens to bridge jobs: a network, and optionally one port (TCP and
/// UDP). Written `CIDR` or `CIDR:PORT` (`10.0.0.53/32:53`, `192.0.2.10:443`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    pub net: Ipv4Net,
    pub port: Option<u16>,
}

impl std::str::FromStr for Allowed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (net, port) = match s.rsplit_once(':') {
            Some((n, p)) => (
                n,
                Some(
                    p.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("`{s}`: the port must be 1..=65535"))?,
                ),
            ),
            None => (s, None),
        };
        Ok(Allowed {
            net: net.parse()?,
            port,
        })
    }
}

/// Configuration of bridge networking on a worker host. Every worker of a host must use the same
/// values (they share the bridge, the table and the lease directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The bridge's name (≤ 15 characters). Default `nekton0`.
    pub bridge: String,
    /// The job subnet; its first host address is the bridge's (the jobs' gateway). Default
    /// `10.88.0.0/16`.
    pub subnet: Ipv4Net,
    /// DNS servers written to each job's `/etc/resolv.conf`. Empty (the default): the host's
    /// IPv4 resolvers from `/etc/resolv.conf` (loopback ones such as systemd-resolved's
    /// 127.0.0.53 are unreachable from a job; then `/run/systemd/resolve/resolv.conf` is used, or
    /// the start fails asking for servers). A server on one of the host's own addresses must
    /// also be in `allow`.
    pub dns: Vec<Ipv4Addr>,
    /// Destinations opened to jobs despite the isolation rules (host addresses, 169.254/16).
    pub allow: Vec<Allowed>,
    /// The nftables table (`inet <table>`) nekton owns. Default `nekton`.
    pub table: String,
    /// Lease directory, shared by the workers of the host. Default `/run/nekton/net/<bridge>`.
    pub lease_dir: Option<PathBuf>,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            bridge: "nekton0".into(),
            subnet: Ipv4Net {
                addr: Ipv4Addr::new(10, 88, 0, 0),
                prefix: 16,
            },
            dns: Vec::new(),
            allow: Vec::new(),
            table: "nekton".into(),
            lease_dir: None,
        }
    }
}

impl BridgeConfig {
    fn lease_dir(&self) -> PathBuf {
        self.lease_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/run/nekton/net").join(&self.bridge))
    }

    fn gateway(&self) -> Ipv4Addr {
        self.subnet.host(1)
    }

    fn validate(&self) -> Result<(), String> {
        let name_ok = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !name_ok(&self.bridge, 15) {
            return Err(format!(
                "bridge name `{}`: use 1-15 characters of [A-Za-z0-9_-]",
                self.bridge
            ));
        }
        if !name_ok(&self.table, 64) || self.table.contains('-') {
            return Err(format!(
                "nftables table name `{}`: use 1-64 characters of [A-Za-z0-9_]",
                self.table
            ));
        }
        if self.subnet.prefix < 8 || self.subnet.prefix > 29 {
            return Err(format!(
                "job subnet {}: the prefix length must be 8..=29",
                self.subnet
            ));
        }
        Ok(())
    }
}

/// The host end of a job's veth: `nk` + the job address in hex (unique per host, ≤ 15 chars).
pub(crate) fn veth_name(addr: Ipv4Addr) -> String {
    format!("nk{:08x}", u32::from(addr))
}

/// The job address a nekton veth name stands for.
fn veth_addr(name: &str) -> Option<Ipv4Addr> {
    let hex = name.strip_prefix("nk")?;
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().map(Ipv4Addr::from)
}

fn nl_code(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// The IPv4 nameservers of a resolv.conf text: (usable, loopback).
fn nameservers(text: &str) -> (Vec<Ipv4Addr>, Vec<Ipv4Addr>) {
    let mut usable = Vec::new();
    let mut loopback = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if it.next() != Some("nameserver") {
            continue;
        }
        if let Some(a) = it.next().and_then(|a| a.parse::<Ipv4Addr>().ok()) {
            if a.is_loopback() || a.is_unspecified() {
                loopback.push(a);
            } else {
                usable.push(a);
            }
        }
    }
    (usable, loopback)
}

/// The jobs' DNS servers: the configured ones, else the host's (see [`BridgeConfig::dns`]).
fn resolvers(configured: &[Ipv4Addr]) -> Result<Vec<Ipv4Addr>, String> {
    let servers = if !configured.is_empty() {
        configured.to_vec()
    } else {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let (usable, loopback) = nameservers(&host);
        if !usable.is_empty() {
            usable
        } else {
            let resolved = std::fs::read_to_string("/run/systemd/resolve/resolv.conf")
                .map(|t| nameservers(&t).0)
                .unwrap_or_default();
            if resolved.is_empty() {
                return Err(format!(
                    "no DNS server for bridge jobs: the host's /etc/resolv.conf lists {} — {} \
                     unreachable from a job's network namespace{}; give DNS servers explicitly \
                     (nekton: --network-dns)",
                    if loopback.is_empty() {
                        "no IPv4 nameserver".to_string()
                    } else {
                        format!("{loopback:?}")
                    },
                    if loopback.is_empty() {
                        "nothing"
                    } else {
                        "loopback addresses (systemd-resolved's stub?) are"
                    },
                    if loopback.is_empty() {
                        ""
                    } else {
                        ", and /run/systemd/resolve/resolv.conf has no upstream server"
                    }
                ));
            }
            resolved
        }
    };
    Ok(servers)
}

/// The jobs' `/etc/resolv.conf` naming `servers`.
fn resolv_conf(servers: &[Ipv4Addr]) -> Vec<u8> {
    let mut out = String::from("# written by nekton for this job\n");
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    out.into_bytes()
}

fn conntrack_flush(args: &[&str]) {
    match std::process::Command::new("conntrack")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
    {
        // Exit status 1 with "0 flow entries have been deleted" is the normal "nothing to do".
        Ok(out) if out.status.success() || out.status.code() == Some(1) => {}
        Ok(out) => tracing::warn!(
            ?args,
            status = %out.status,
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "conntrack flush failed"
        ),
        Err(e) => tracing::warn!(?args, error = %e, "cannot run conntrack"),
    }
}

/// Flushes the conntrack entries of a job address — except TCP connections in `TIME_WAIT`, on
/// purpose: those expire by themselves within 120 s, and while they exist MASQUERADE does not
/// hand their public port to a new connection; flushed, the next job could be given the same
/// port towards the same server, whose side of the old connection is still in `TIME_WAIT` and
/// answers the new SYN with an ACK, stalling the connect (seen in the 100-jobs test).
fn flush_address(addr: Ipv4Addr) {
    let a = addr.to_string();
    for state in [
        "SYN_SENT",
        "SYN_RECV",
        "ESTABLISHED",
        "FIN_WAIT",
        "CLOSE_WAIT",
        "LAST_ACK",
        "CLOSE",
        "SYN_SENT2",
    ] {
        conntrack_flush(&["-D", "-s", &a, "-p", "tcp", "--state", state]);
    }
    for proto in ["udp", "icmp", "sctp", "dccp", "udplite", "gre"] {
        conntrack_flush(&["-D", "-s", &a, "-p", proto]);
    }
    // Connections the host opened to the job (no NAT port involved).
    conntrack_flush(&["-D", "-d", &a]);
}

fn owner_alive(owner: Option<Owner>) -> bool {
    owner.is_some_and(|o| o.is_alive())
}

/// A runtime of its own drives the netlink connections, so job tasks on any runtime can use them.
/// Dropped with `shutdown_background`, so dropping it inside an async context (an error path of
/// [`Network::new`] called from a task) cannot panic.
struct NetRuntime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for NetRuntime {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &tokio::runtime::Runtime {
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only in drop"))
    }
}

impl Drop for NetRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn net_runtime() -> Result<NetRuntime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("nekton-net")
        .enable_all()
        .build()
        .map(|rt| NetRuntime(Some(rt)))
        .map_err(|e| format!("starting the network runtime: {e}"))
}

/// Runs `f` to completion on `rt` from a fresh thread (callable from inside another runtime).
fn block_on<F: std::future::Future + Send>(rt: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| rt.block_on(f))
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

async fn link_by_name(
    h: &rtnetlink::Handle,
    name: &str,
) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(m) => Ok(m),
        Err(e) if nl_code(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn all_links(h: &rtnetlink::Handle) -> Result<Vec<(u32, String)>, rtnetlink::Error> {
    let links: Vec<LinkMessage> = h.link().get().execute().try_collect().await?;
    Ok(links
        .into_iter()
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some((m.header.index, n.clone())),
                _ => None,
            })
        })
        .collect())
}

async fn delete_link(h: &rtnetlink::Handle, index: u32) -> Result<(), rtnetlink::Error> {
    match h.link().del(index).execute().await {
        Err(e) if nl_code(&e) == Some(libc::ENODEV) => Ok(()),
        r => r,
    }
}

/// The bridge's own MAC address: fixed (locally administered, derived from the bridge's name).
///
/// A Linux bridge whose address was never set takes the lowest MAC of its ports, so it changes
/// whenever a job's veth with a lower MAC joins or the lowest one leaves. A running job keeps the
/// gateway's old MAC in its neighbour cache (REACHABLE), and its frames to that MAC no longer
/// reach the bridge's IP stack: every connection of the job stalls mid-flight (seen as a fetch
/// hanging after its handshake in the 100-jobs test). An address set explicitly
/// (`addr_assign_type = set`) never follows the ports.
fn bridge_mac(bridge: &str) -> [u8; 6] {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(bridge.as_bytes());
    // 0x02: locally administered, unicast.
    [0x02, 0x6e, h[0], h[1], h[2], h[3]]
}

/// Creates the bridge (if missing), gives it the gateway address and its fixed MAC
/// ([`bridge_mac`]), brings it up. Returns its index.
async fn ensure_bridge(h: &rtnetlink::Handle, cfg: &BridgeConfig) -> Result<u32, String> {
    let nl = |what: &str| {
        let what = what.to_string();
        move |e: rtnetlink::Error| format!("{what}: {e}")
    };
    let bridge = match link_by_name(h, &cfg.bridge)
        .await
        .map_err(nl("looking up the bridge"))?
    {
        Some(m) => m,
        None => {
            match h
                .link()
                .add(LinkBridge::new(&cfg.bridge).build())
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if nl_code(&e) == Some(libc::EEXIST) => {}
                Err(e) => {
                    return Err(format!(
                        "creating bridge {}: {e} (is the `bridge` kernel module available? \
                         `modprobe bridge`)",
                        cfg.bridge
                    ));
                }
            }
            link_by_name(h, &cfg.bridge)
                .await
                .map_err(nl("looking up the new bridge"))?
                .ok_or_else(|| format!("bridge {} vanished after its creation", cfg.bridge))?
        }
    };
    let is_bridge = bridge.attributes.iter().any(|a| {
        matches!(a, LinkAttribute::LinkInfo(infos) if infos.iter().any(|i| matches!(i,
            rtnetlink::packet_route::link::LinkInfo::Kind(rtnetlink::packet_route::link::InfoKind::Bridge))))
    });
    if !is_bridge {
        return Err(format!(
            "interface {} exists and is not a bridge: choose another bridge name",
            cfg.bridge
        ));
    }
    let index = bridge.header.index;
    // The job subnet must not be routed elsewhere (another bridge, a VPN, Docker): replies to
    // the jobs would go there.
    let routes: Vec<_> = h
        .route()
        .get(rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing routes"))?;
    for r in &routes {
        use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
        let dst = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(*d),
            _ => None,
        });
        let oif = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        let Some(dst) = dst else { continue };
        let route = Ipv4Net {
            addr: dst,
            prefix: r.header.destination_prefix_length,
        };
        let overlaps = route.contains(cfg.subnet.network()) || cfg.subnet.contains(route.network());
        if overlaps && r.header.table == 254 && oif.is_some_and(|o| o != index) {
            return Err(format!(
                "the job subnet {} overlaps the route to {route} through interface #{} —                  choose another subnet (--network-subnet), or remove that interface/route",
                cfg.subnet,
                oif.unwrap_or(0)
            ));
        }
    }
    let gw = cfg.gateway();
    let addrs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing the bridge's addresses"))?;
    let has = addrs.iter().any(|m| {
        m.header.prefix_len == cfg.subnet.prefix
            && m.attributes.iter().any(|a| {
                matches!(a, rtnetlink::packet_route::address::AddressAttribute::Local(std::net::IpAddr::V4(v)) if *v == gw)
            })
    });
    if !has {
        match h
            .address()
            .add(index, gw.into(), cfg.subnet.prefix)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if nl_code(&e) == Some(libc::EEXIST) => {}
            Err(e) => {
                return Err(format!(
                    "adding {gw}/{} to the bridge: {e}",
                    cfg.subnet.prefix
                ));
            }
        }
    }
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .address(bridge_mac(&cfg.bridge).to_vec())
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(nl("setting the bridge's MAC address and bringing it up"))?;
    Ok(index)
}

/// The host's bridge networking, shared by the jobs of one backend. See the [module docs](self).
pub(crate) struct Network {
    config: BridgeConfig,
    rt: NetRuntime,
    handle: rtnetlink::Handle,
    bridge_index: u32,
    leases: lease::Leases,
    /// The jobs' DNS servers (what `resolv_conf` names; port 53 of each is open to a job with an
    /// allow-list).
    resolvers: Vec<Ipv4Addr>,
    resolv_conf: Vec<u8>,
    /// Attachments of jobs (claimed) not yet released, and releases under way (teardown runs
    /// partly in the background). Prepared attachments waiting in the pool are not counted.
    pending: tokio::sync::watch::Sender<usize>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn check_tools() -> Result<(), String> {
    for (tool, pkg) in [("nft", "nftables"), ("conntrack", "conntrack")] {
        let ok = std::process::Command::new(tool)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "`{tool}` is not installed: bridge networking needs it (Debian: apt-get install \
                 {pkg})"
            ));
        }
    }
    Ok(())
}

impl Network {
    /// Prepares the host (see the module docs). `owner` is this process.
    pub fn new(config: BridgeConfig, owner: Owner) -> Result<Arc<Self>, String> {
        config.validate()?;
        check_tools()?;
        let resolvers = resolvers(&config.dns)?;
        let resolv_conf = resolv_conf(&resolvers);
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| {
            format!(
                "cannot enable IPv4 forwarding ({e}): set net.ipv4.ip_forward=1 (sysctl) — bridge \
                 jobs need it for egress"
            )
        })?;
        let leases =
            lease::Leases::new(&config.lease_dir(), config.subnet, lease::owner_text(owner))
                .map_err(|e| format!("lease directory {}: {e}", config.lease_dir().display()))?;
        let rt = net_runtime()?;
        let (handle, bridge_index) = block_on(&rt, async {
            let (conn, handle, _) = rtnetlink::new_connection()
                .map_err(|e| format!("opening a netlink socket: {e}"))?;
            tokio::spawn(conn);
            let index = ensure_bridge(&handle, &config).await?;
            Ok::<_, String>((handle, index))
        })?;
        nft::install(&config)?;
        let (pending, _) = tokio::sync::watch::channel(0usize);
        let net = Self {
            config,
            rt,
            handle,
            bridge_index,
            leases,
            resolvers,
            resolv_conf,
            pending,
        };
        net.remove_stale()?;
        Ok(Arc::new(net))
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// Removes what dead owners left: their leases (after deleting their veth, their egress
    /// policy and flushing their conntrack entries), and nekton veths and egress policies in the
    /// subnet that no live lease accounts for.
    fn remove_stale(&self) -> Result<(), String> {
        // The policies are listed before the leases: a job of another worker creates its policy
        // only after its lease, so a policy seen here whose address has no live lease in the
        // later listing belongs to no running job.
        let policies = nft::job_objects(&self.config.table)?;
        let leases = self
            .leases
            .list()
            .map_err(|e| format!("reading {}: {e}", self.leases.dir().display()))?;
        let h = self.handle.clone();
        let subnet = self.config.subnet;
        let (stale, live): (Vec<_>, Vec<_>) = leases
            .into_iter()
            .partition(|(_, _, owner)| !owner_alive(*owner));
        let live: Vec<Ipv4Addr> = live.into_iter().map(|(a, _, _)| a).collect();
        let live_addrs = live.clone();
        let removed = block_on(self.rt(), async move {
            let mut removed = Vec::new();
            for (index, name) in all_links(&h)
                .await
                .map_err(|e| format!("listing links: {e}"))?
            {
                let Some(addr) = veth_addr(&name) else {
                    continue;
                };
                if subnet.contains(addr) && !live.contains(&addr) {
                    delete_link(&h, index)
                        .await
                        .map_err(|e| format!("deleting stale veth {name}: {e}"))?;
                    removed.push(name);
                }
            }
            Ok::<_, String>(removed)
        })?;
        for name in &removed {
            tracing::info!(veth = %name, "removed a stale job veth");
        }
        for (addr, chains, sets) in policies {
            if !self.config.subnet.contains(addr) || live_addrs.contains(&addr) {
                continue;
            }
            // A job of another worker may have removed it meanwhile: then listing again finds
            // nothing of it.
            nft::run(&nft::job_policy_removal(&self.config.table, &chains, &sets))
                .or_else(|_| {
                    nft::remove_job_policy(&self.config.table, addr).map(|_| String::new())
                })
                .map_err(|e| format!("removing the stale egress policy of {addr}: {e}"))?;
            tracing::info!(%addr, "removed a stale job egress policy");
        }
        for (addr, path, _) in stale {
            flush_address(addr);
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(%addr, "released a stale address lease"),
                Err(e) => {
                    return Err(format!("removing stale lease {}: {e}", path.display()));
                }
            }
        }
        Ok(())
    }

    /// Waits until every address released so far is free again (its conntrack entries flushed
    /// and its lease removed), and every job's attachment is released. Prepared attachments
    /// waiting in the pool hold their addresses meanwhile (see [`pool::BridgePool::settled`]).
    pub async fn settle(&self) {
        let mut rx = self.pending.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// The jobs' `/etc/resolv.conf`.
    pub fn resolv_conf(&self) -> &[u8] {
        &self.resolv_conf
    }

    /// Prepares a job's network namespace with `eth0` on the bridge (P2 `setns`es into it) —
    /// everything of a job's attachment that does not depend on the job: leases an address,
    /// creates the network namespace (`lo` up; for `rootless` jobs
    /// `net.ipv4.ip_unprivileged_port_start = 0`, what P2 would write) on a short-lived thread
    /// that also opens a netlink socket inside it, creates the veth pair with its peer in that
    /// namespace as `eth0`, isolates the bridge port, and configures `eth0` (up, address,
    /// default route). The result belongs to no job yet ([`Attachment::claim`] makes it one's,
    /// with the job's egress policy); dropped unclaimed, it is released like a job's. Called on
    /// a job's path when [`pool::BridgePool`] has none ready; `background` (the pool's): the
    /// thread making the namespace runs at nice 10.
    pub(crate) async fn prepare(
        self: &Arc<Self>,
        rootless: bool,
        background: bool,
    ) -> Result<Attachment, String> {
        let lease = self
            .leases
            .acquire()
            .map_err(|e| format!("leasing a job address: {e}"))?;
        let addr = lease.addr;
        let mut att = Attachment {
            net: self.clone(),
            lease: Some(lease),
            name: veth_name(addr),
            host_index: None,
            netns: None,
            policy: false,
            counted: false,
            baseline: (0, 0),
            addr,
        };
        // The namespace, and a netlink socket inside it, from a short-lived thread (a thread's
        // network namespace is its own; the socket stays in the namespace it was made in).
        let (tx, rx) = tokio::sync::oneshot::channel();
        let rt = self.rt().handle().clone();
        std::thread::Builder::new()
            .name("nekton-netns".into())
            .spawn(move || {
                if background {
                    // The pool's: the namespace's creation (the dearest part, in this thread's
                    // context) yields to the jobs' work. Linux keeps nice per thread, and `who`
                    // 0 is the calling thread. Best effort.
                    // SAFETY: setpriority of the calling thread.
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
                }
                let _ = tx.send(new_netns(&rt, rootless));
            })
            .map_err(|e| format!("starting a thread: {e}"))?;
        let (nsfd, conn, ns) = rx
            .await
            .map_err(|_| "the namespace thread ended without an answer".to_string())??;
        let ns_raw = nsfd.as_raw_fd();
        att.netns = Some(nsfd);
        self.rt().spawn(conn);

        let h = &self.handle;
        let peer = LinkMessageBuilder::<LinkUnspec>::default()
            .name("eth0".to_string())
            .setns_by_fd(ns_raw)
            .build();
        h.link()
            .add(
                LinkVeth::new(&att.name, "eth0")
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                    .controller(self.bridge_index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| format!("creating veth {}: {e}", att.name))?;
        let host = link_by_name(h, &att.name)
            .await
            .map_err(|e| format!("looking up veth {}: {e}", att.name))?
            .ok_or_else(|| format!("veth {} vanished after its creation", att.name))?;
        att.host_index = Some(host.header.index);
        h.link()
            .set_port(
                LinkBridgePort::new(host.header.index)
                    .append_info_data(InfoBridgePort::Isolated(true))
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| format!("isolating bridge port {}: {e}", att.name))?;

        let eth0 = link_by_name(&ns, "eth0")
            .await
            .map_err(|e| format!("looking up eth0 in the job namespace: {e}"))?
            .ok_or_else(|| "eth0 is missing from the job namespace".to_string())?
            .header
            .index;
        ns.link()
            .set(LinkUnspec::new_with_index(eth0).up().build())
            .execute()
            .await
            .map_err(|e| format!("bringing the job's eth0 up: {e}"))?;
        ns.address()
            .add(eth0, addr.into(), self.config.subnet.prefix)
            .execute()
            .await
            .map_err(|e| format!("adding {addr} to the job's eth0: {e}"))?;
        ns.route()
            .add(
                rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(self.config.gateway())
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| format!("adding the job's default route: {e}"))?;
        Ok(att)
    }

    /// The host end's counters (`rx`, `tx` of the veth on the host side), if readable.
    async fn veth_counters(&self, index: u32) -> Option<(u64, u64)> {
        let m = self
            .handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await
            .ok()??;
        m.attributes.iter().find_map(|a| match a {
            LinkAttribute::Stats64(s) => Some((s.rx_bytes, s.tx_bytes)),
            _ => None,
        })
    }
}

type NsConn = (
    OwnedFd,
    rtnetlink::proto::Connection<rtnetlink::packet_route::RouteNetlinkMessage>,
    rtnetlink::Handle,
);

/// On a fresh thread: a new network namespace (`lo` up, and for `rootless` jobs
/// `net.ipv4.ip_unprivileged_port_start = 0`), its descriptor, and a netlink connection in it
/// (registered with the network runtime `rt`). The thread ends after this: it never goes back.
fn new_netns(rt: &tokio::runtime::Handle, rootless: bool) -> Result<NsConn, String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("creating a network namespace: {}", e.desc()))?;
    let fd = crate::netpool::thread_netns()
        .map_err(|e| format!("opening the new network namespace: {}", e.desc()))?;
    // Jobs get no IPv6 address: no autoconfiguration chatter on eth0 either (best effort; /proc
    // /sys/net is the opener's namespace).
    let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
    // What P2 does for a namespace it makes itself (the job's P2 is told it is done).
    crate::spawn::loopback_up()
        .map_err(|e| format!("bringing up the job namespace's loopback: {}", e.desc()))?;
    if rootless {
        // Rootless: the job's root has no CAP_NET_BIND_SERVICE in a namespace the host's user
        // namespace owns; ports below 1024 are opened to every uid instead (see spawn.rs).
        crate::spawn::write_file(c"/proc/sys/net/ipv4/ip_unprivileged_port_start", b"0").map_err(
            |e| {
                format!(
                    "setting net.ipv4.ip_unprivileged_port_start=0 in the job namespace: {}",
                    e.desc()
                )
            },
        )?;
    }
    let _guard = rt.enter();
    let (conn, handle, _) = rtnetlink::new_connection()
        .map_err(|e| format!("opening a netlink socket in the job namespace: {e}"))?;
    Ok((fd, conn, handle))
}

/// A job's place on the bridge. Release with [`teardown`](Self::teardown); dropping it releases
/// in the background.
pub(crate) struct Attachment {
    net: Arc<Network>,
    lease: Option<lease::Lease>,
    name: String,
    host_index: Option<u32>,
    netns: Option<OwnedFd>,
    /// Whether the job has an egress policy in the table (removed before the lease).
    policy: bool,
    /// Counted in [`Network::pending`]: from [`claim`](Self::claim) (a job's), or from the start
    /// of its release (one the pool made and no job took).
    counted: bool,
    /// The host end's (`rx`, `tx`) when a job claimed it: a prepared attachment may have seen
    /// frames the bridge floods (the host's own broadcasts) before any job had it; those are
    /// not the job's traffic.
    baseline: (u64, u64),
    pub addr: Ipv4Addr,
}

impl Attachment {
    /// The job's network namespace (for P2's `setns`): `lo` is up and, for a rootless backend,
    /// the unprivileged-port sysctl is written (see [`Network::prepare`]).
    pub fn netns(&self) -> Option<&OwnedFd> {
        self.netns.as_ref()
    }

    /// Makes a prepared attachment a job's: counts it in [`Network::pending`] (so
    /// [`Network::settle`] waits for its release), with `baseline` reads the veth's counters the
    /// job's bill starts from (an attachment that waited in the pool), and with `allow`
    /// installs the job's egress policy on its veth (one nft transaction; before anything of the
    /// job runs, so it holds from the job's first packet). On error the attachment is released.
    pub async fn claim(
        mut self,
        allow: Option<&[runtime_core::egress::Destination]>,
        baseline: bool,
    ) -> Result<Self, String> {
        if !self.counted {
            self.counted = true;
            self.net.pending.send_modify(|n| *n += 1);
        }
        if baseline && let Some(index) = self.host_index {
            self.baseline = self.net.veth_counters(index).await.ok_or_else(|| {
                format!(
                    "reading the counters of veth {} (the bill's start)",
                    self.name
                )
            })?;
        }
        if let Some(allow) = allow {
            let net = &self.net;
            let doc = nft::job_policy(
                &net.config.table,
                &self.name,
                self.addr,
                allow,
                &net.resolvers,
            )?;
            net.rt()
                .spawn_blocking(move || nft::run(&doc))
                .await
                .map_err(|e| format!("the nft task failed: {e}"))?
                .map_err(|e| format!("installing the job's egress policy: {e}"))?;
            self.policy = true;
        }
        Ok(self)
    }

    /// Reads the job's traffic counters, then releases everything in the background (see
    /// `release`). Returns (`rx`, `tx`) from the job's point of view.
    pub async fn teardown(mut self) -> (Option<u64>, Option<u64>) {
        let mut counters = (None, None);
        if let Some(index) = self.host_index
            && let Some((rx, tx)) = self.net.veth_counters(index).await
        {
            let (rx0, tx0) = self.baseline;
            // The host end sends what the job receives.
            counters = (Some(tx.saturating_sub(tx0)), Some(rx.saturating_sub(rx0)));
        }
        self.release();
        counters
    }

    /// In the background, in this order: drops the job's network namespace — the kernel then
    /// destroys it with its `eth0`, and with that the host end, in its batched namespace
    /// cleanup — and waits until the veth is gone (deleting it explicitly only if it is still
    /// there after [`VETH_GONE_TIMEOUT`]: an explicit delete holds the RTNL lock through RCU
    /// grace periods, 10-30 ms here, and stalls the next job's setup); then removes the job's
    /// egress policy (only now: while the veth exists a process of the job may still send), flushes
    /// the address's conntrack entries and removes the lease. Until then the address is not
    /// handed out; [`Network::settle`] waits for all of it. A policy that cannot be removed keeps
    /// its lease (logged): the address stays out of use until the next worker start cleans it, so
    /// no later job meets a chain left on its veth's name.
    fn release(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let net = self.net.clone();
        let name = std::mem::take(&mut self.name);
        let netns = self.netns.take();
        let addr = self.addr;
        let policy = std::mem::take(&mut self.policy);
        self.host_index = None;
        if !std::mem::replace(&mut self.counted, true) {
            // Never a job's (the pool's, or a failed preparation): settle waits for it too.
            self.net.pending.send_modify(|n| *n += 1);
        }
        self.net.rt().spawn(async move {
            drop(netns);
            let h = &net.handle;
            let deadline = tokio::time::Instant::now() + VETH_GONE_TIMEOUT;
            loop {
                match link_by_name(h, &name).await {
                    Ok(None) => break,
                    Ok(Some(m)) if tokio::time::Instant::now() >= deadline => {
                        if let Err(e) = delete_link(h, m.header.index).await {
                            tracing::warn!(veth = %name, error = %e, "cannot delete a job veth");
                        }
                        break;
                    }
                    Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
                    Err(e) => {
                        tracing::warn!(veth = %name, error = %e, "cannot look up a job veth");
                        break;
                    }
                }
            }
            let _ = tokio::task::spawn_blocking(move || {
                let kept = policy
                    && match nft::remove_job_policy(&net.config.table, addr) {
                        Ok(()) => false,
                        Err(e) => {
                            tracing::error!(%addr, error = %e, "cannot remove a job's egress \
                                policy; its address stays leased until the next worker start");
                            true
                        }
                    };
                flush_address(addr);
                if kept {
                    std::mem::forget(lease);
                } else {
                    drop(lease);
                }
                net.pending.send_modify(|n| *n = n.saturating_sub(1));
            })
            .await;
        });
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        // Not torn down (setup failed, or the job's future was dropped): release now.
        self.release();
    }
}

/// What [`cleanup`] removed.
#[derive(Debug, Default)]
pub struct CleanupReport {
    pub table_removed: bool,
    pub bridge_removed: bool,
    pub veths_removed: Vec<String>,
    pub leases_removed: usize,
}

/// Removes nekton's bridge networking from the host: the nftables table (only `inet <table>`),
/// every nekton veth in the subnet, the bridge, the conntrack entries of the subnet and the
/// lease directory. Refuses while a live process holds a lease (stop the workers first).
pub fn cleanup(config: &BridgeConfig) -> Result<CleanupReport, String> {
    config.validate()?;
    let dir = config.lease_dir();
    let mut report = CleanupReport::default();
    if dir.exists() {
        let leases = lease::Leases::new(&dir, config.subnet, String::new())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let list = leases
            .list()
            .map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let me = std::process::id();
        if let Some((addr, _, Some(owner))) = list
            .iter()
            .find(|(_, _, owner)| owner_alive(*owner) && owner.is_some_and(|o| o.pid() != me))
        {
            let pid = owner.pid();
            return Err(format!(
                "process {pid} (a running worker) holds job address {addr}: stop the workers of \
                 this host before cleaning their network"
            ));
        }
        report.leases_removed = list.len();
    }
    report.table_removed = nft::remove(&config.table)?;
    let rt = net_runtime()?;
    let cfg = config.clone();
    let (veths, bridge) = block_on(&rt, async move {
        let (conn, h, _) =
            rtnetlink::new_connection().map_err(|e| format!("opening a netlink socket: {e}"))?;
        tokio::spawn(conn);
        let mut veths = Vec::new();
        let mut bridge = false;
        for (index, name) in all_links(&h)
            .await
            .map_err(|e| format!("listing links: {e}"))?
        {
            if veth_addr(&name).is_some_and(|a| cfg.subnet.contains(a)) {
                delete_link(&h, index)
                    .await
                    .map_err(|e| format!("deleting {name}: {e}"))?;
                veths.push(name);
            } else if name == cfg.bridge {
                delete_link(&h, index)
                    .await
                    .map_err(|e| format!("deleting bridge {name}: {e}"))?;
                bridge = true;
            }
        }
        Ok::<_, String>((veths, bridge))
    })?;
    drop(rt);
    report.veths_removed = veths;
    report.bridge_removed = bridge;
    let net = config.subnet.network().to_string();
    let mask = Ipv4Addr::from(if config.subnet.prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(config.subnet.prefix))
    })
    .to_string();
    conntrack_flush(&["-D", "-s", &net, "--mask-src", &mask]);
    conntrack_flush(&["-D", "-d", &net, "--mask-dst", &mask]);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_networks_and_destinations() {
        let n: Ipv4Net = "10.88.3.4/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.88.0.0/16");
        assert_eq!(n.host(1), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(n.host_count(), 65534);
        assert!(n.contains(Ipv4Addr::new(10, 88, 255, 1)));
        assert!(!n.contains(Ipv4Addr::new(10, 89, 0, 1)));
        assert!("10.0.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("x".parse::<Ipv4Net>().is_err());
        let a: Allowed = "192.0.2.10:443".parse().unwrap();
        assert_eq!(a.net.prefix, 32);
        assert_eq!(a.port, Some(443));
        let a: Allowed = "10.0.0.0/8".parse().unwrap();
        assert_eq!(a.port, None);
        assert!("10.0.0.0/8:0".parse::<Allowed>().is_err());
    }

    #[test]
    fn veth_names_round_trip() {
        let a = Ipv4Addr::new(10, 88, 0, 2);
        assert_eq!(veth_name(a), "nk0a580002");
        assert_eq!(veth_addr("nk0a580002"), Some(a));
        assert_eq!(veth_addr("nkx"), None);
        assert_eq!(veth_addr("eth0"), None);
    }

    #[test]
    fn resolvers_skip_loopback() {
        let (u, l) =
            nameservers("# x\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\n");
        assert_eq!(u, vec![Ipv4Addr::new(10, 0, 0, 2)]);
        assert_eq!(l, vec![Ipv4Addr::new(127, 0, 0, 53)]);
        let servers = resolvers(&[Ipv4Addr::new(198, 51, 100, 2)]).unwrap();
        assert_eq!(servers, vec![Ipv4Addr::new(198, 51, 100, 2)]);
        let conf = resolv_conf(&servers);
        assert!(
            String::from_utf8(conf)
                .unwrap()
                .contains("nameserver 198.51.100.2\n")
        );
    }

    #[test]
    fn config_is_validated() {
        let mut c = BridgeConfig::default();
        assert!(c.validate().is_ok());
        c.bridge = "a-very-long-bridge-name".into();
        assert!(c.validate().is_err());
        c = BridgeConfig {
            table: "bad name".into(),
            ..BridgeConfig::default()
        };
        assert!(c.validate().is_err());
        c = BridgeConfig {
            subnet: "10.0.0.0/31".parse().unwrap(),
            ..BridgeConfig::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn ruleset_matches_only_the_bridge() {
        let cfg = BridgeConfig {
            allow: vec!["10.0.0.53:53".parse().unwrap()],
            ..BridgeConfig::default()
        };
        let doc = nft::ruleset(&cfg).to_string();
        assert!(
            doc.starts_with(r#"{"nftables":[{"add":{"table":{"family":"inet","name":"nekton"}}}"#)
        );
        assert!(doc.contains(r#""masquerade":null"#));
        assert!(doc.contains(r#""addr":"169.254.0.0","len":16"#));
        assert!(doc.contains(r#""addr":"10.0.0.53","len":32"#));
    }
}
