//! nekton's one nftables table, built as nft JSON documents (`nft -j -f -`) — never by gluing
//! command strings. Every rule matches traffic of the job bridge (or of one job's veth) only, so
//! the table changes nothing else on the host; every change is one nft transaction (atomic), and
//! [`remove`] deletes the table with one `delete table`.
//!
//! Two kinds of objects live in the table:
//!
//! - **The bridge rules** ([`ruleset`]): chains `forward`, `input` and `postrouting`, rewritten
//!   as a whole by [`install`] at every worker start (chains added if missing, flushed, filled, in
//!   one transaction) — without touching the objects below, which jobs of other workers of the
//!   host may own.
//! - **Per-job egress policies** ([`job_policy`]), only for jobs with an allow-list: a base chain
//!   `job_<addr hex>` on the `ingress` hook of the job's host-side veth (`nk<addr hex>`), with
//!   policy `drop`, and its two sets — `job_<hex>_n` (networks, any port and protocol) and
//!   `job_<hex>_p` (network . port pairs, TCP and UDP; the DNS resolvers' port 53 is one of
//!   them). Every packet the job sends enters the host through that veth, so the policy is bound
//!   to the job itself, not to an address another job could use (a job cannot forge its source
//!   without NET_RAW or NET_ADMIN; the chain requires the job's own anyway). It runs before the
//!   bridge rules, which still apply to what it lets through. Created in one
//!   transaction when the job's veth exists, before the job runs; removed in one transaction
//!   ([`job_policy_removal`]) once the veth is gone, before the address is leased again; what a
//!   crashed worker left is found by name ([`job_objects`]) and removed at the next start.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};

use runtime_core::egress::{Destination, IpNet};
use serde_json::{Value, json};

use super::{Allowed, BridgeConfig};

fn meta(key: &str, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": {"meta": {"key": key}}, "right": right}})
}

fn iif(bridge: &str) -> Value {
    meta("iifname", "==", json!(bridge))
}

fn oif(bridge: &str) -> Value {
    meta("oifname", "==", json!(bridge))
}

fn daddr(net: &super::Ipv4Net) -> Value {
    json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
        "right": {"prefix": {"addr": net.addr.to_string(), "len": net.prefix}}}})
}

fn ct_established() -> Value {
    json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}})
}

fn verdict(v: &str) -> Value {
    json!({ v: null })
}

fn allow_exprs(bridge: &str, a: &Allowed) -> Vec<Value> {
    let mut e = vec![iif(bridge), daddr(&a.net)];
    if let Some(port) = a.port {
        e.push(meta("l4proto", "==", json!({"set": ["tcp", "udp"]})));
        e.push(json!({"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": port}}));
    }
    e.push(verdict("accept"));
    e
}

/// The bridge rules as one transaction: the table and its three chains added if missing (an add
/// of an existing object is a no-op), the chains flushed and filled. Other objects of the table
/// (the per-job policies) are left as they are.
pub(crate) fn ruleset(cfg: &BridgeConfig) -> Value {
    let t = &cfg.table;
    let br = cfg.bridge.as_str();
    let mut cmds = vec![json!({"add": {"table": {"family": "inet", "name": t}}})];
    let chain = |name: &str, kind: &str, hook: &str, prio: i32| {
        json!({"add": {"chain": {"family": "inet", "table": t, "name": name, "type": kind,
            "hook": hook, "prio": prio, "policy": "accept"}}})
    };
    cmds.push(chain("forward", "filter", "forward", 0));
    cmds.push(chain("input", "filter", "input", 0));
    cmds.push(chain("postrouting", "nat", "postrouting", 100));
    for name in ["forward", "input", "postrouting"] {
        cmds.push(json!({"flush": {"chain": {"family": "inet", "table": t, "name": name}}}));
    }
    let rule = |chain: &str, expr: Vec<Value>| json!({"add": {"rule": {"family": "inet", "table": t, "chain": chain, "expr": expr}}});
    // forward: job -> job (routed through the host) never; allowed destinations; no link-local /
    // metadata; IPv6 never (jobs get no IPv6 address); everything else out; back in only as
    // replies.
    cmds.push(rule("forward", vec![iif(br), oif(br), verdict("drop")]));
    for a in &cfg.allow {
        cmds.push(rule("forward", allow_exprs(br, a)));
    }
    let link_local = super::Ipv4Net {
        addr: std::net::Ipv4Addr::new(169, 254, 0, 0),
        prefix: 16,
    };
    cmds.push(rule(
        "forward",
        vec![iif(br), daddr(&link_local), verdict("drop")],
    ));
    cmds.push(rule(
        "forward",
        vec![
            iif(br),
            meta("nfproto", "==", json!("ipv6")),
            verdict("drop"),
        ],
    ));
    cmds.push(rule("forward", vec![iif(br), verdict("accept")]));
    cmds.push(rule(
        "forward",
        vec![oif(br), ct_established(), verdict("accept")],
    ));
    cmds.push(rule("forward", vec![oif(br), verdict("drop")]));
    // input: a job reaches none of the host's own addresses (the API, PostgreSQL, a metadata
    // address bound on the host), except allowed destinations and replies to connections the
    // host opened.
    cmds.push(rule(
        "input",
        vec![iif(br), ct_established(), verdict("accept")],
    ));
    for a in &cfg.allow {
        cmds.push(rule("input", allow_exprs(br, a)));
    }
    cmds.push(rule("input", vec![iif(br), verdict("drop")]));
    // postrouting: the job subnet leaves through any other interface behind the host's address.
    cmds.push(rule(
        "postrouting",
        vec![
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                "right": {"prefix": {"addr": cfg.subnet.addr.to_string(), "len": cfg.subnet.prefix}}}}),
            meta("oifname", "!=", json!(br)),
            json!({"masquerade": null}),
        ],
    ));
    json!({ "nftables": cmds })
}

/// Runs `nft -j -f -` with `doc` on stdin; returns stdout.
pub(crate) fn run(doc: &Value) -> Result<String, String> {
    let mut child = Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run `nft` ({e}): install the nftables package (Debian: apt-get install \
                 nftables)"
            )
        })?;
    let body = doc.to_string();
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(body.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft refused the ruleset ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether table `inet <name>` exists.
pub(crate) fn table_exists(name: &str) -> Result<bool, String> {
    let out = run(&json!({"nftables": [{"list": {"tables": {}}}]}))?;
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("nft -j output: {e}"))?;
    Ok(v["nftables"].as_array().is_some_and(|items| {
        items
            .iter()
            .any(|i| i["table"]["family"] == "inet" && i["table"]["name"].as_str() == Some(name))
    }))
}

/// Installs the table, or rewrites the bridge rules of an existing one (one transaction: a
/// concurrent start of another worker of the host never sees a half-built table, and the
/// per-job policies of its running jobs stay).
pub(crate) fn install(cfg: &BridgeConfig) -> Result<(), String> {
    run(&ruleset(cfg)).map(|_| ())
}

/// Removes the table if it exists. Other tables are never touched.
pub(crate) fn remove(table: &str) -> Result<bool, String> {
    if !table_exists(table)? {
        return Ok(false);
    }
    run(&json!({"nftables": [{"delete": {"table": {"family": "inet", "name": table}}}]}))?;
    Ok(true)
}

/// The objects of one job's egress policy, named after its address (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobNames {
    /// The base chain on the ingress hook of the job's veth.
    pub chain: String,
    /// Networks the job reaches on any port and protocol.
    pub nets: String,
    /// (network . port) pairs the job reaches over TCP and UDP.
    pub ports: String,
}

impl JobNames {
    pub fn new(addr: Ipv4Addr) -> Self {
        let chain = format!("job_{:08x}", u32::from(addr));
        Self {
            nets: format!("{chain}_n"),
            ports: format!("{chain}_p"),
            chain,
        }
    }
}

/// The job address a per-job object's name stands for (`job_<hex>`, `job_<hex>_n`, `job_<hex>_p`).
pub(crate) fn job_object_addr(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_prefix("job_")?;
    let hex = match rest.len() {
        8 => rest,
        10 => rest
            .strip_suffix("_n")
            .or_else(|| rest.strip_suffix("_p"))?,
        _ => return None,
    };
    if !hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().map(Ipv4Addr::from)
}

/// An IPv4 network of the allow-list (IPv6 ones are refused before: bridge jobs have no IPv6).
type Net4 = (Ipv4Addr, u8);

/// A job's set elements: (networks, network . port pairs).
type Elements = (Vec<Net4>, Vec<(Net4, u16)>);

fn net4(n: &IpNet) -> Option<Net4> {
    match n.addr() {
        IpAddr::V4(a) => Some((a, n.prefix_len())),
        IpAddr::V6(_) => None,
    }
}

fn covers(outer: Net4, inner: Net4) -> bool {
    outer.1 <= inner.1 && {
        let mask = u32::MAX.checked_shl(32 - u32::from(outer.1)).unwrap_or(0);
        u32::from(inner.0) & mask == u32::from(outer.0)
    }
}

/// The sets' elements: (networks, network . port pairs), with every entry another one already
/// covers left out — the kernel refuses overlapping intervals in one set, and CIDR blocks either
/// nest or are disjoint, so what is left never overlaps. The resolvers' port 53 is added to the
/// pairs. Errors on an IPv6 destination.
pub(crate) fn policy_elements(
    allow: &[Destination],
    resolvers: &[Ipv4Addr],
) -> Result<Elements, String> {
    let mut nets: Vec<Net4> = Vec::new();
    let mut pairs: Vec<(Net4, u16)> = Vec::new();
    for d in allow {
        let n = net4(&d.net).ok_or_else(|| {
            format!("{d}: bridge jobs have no IPv6, an IPv6 destination cannot be allowed")
        })?;
        match d.port {
            None => nets.push(n),
            Some(p) => pairs.push((n, p)),
        }
    }
    pairs.extend(resolvers.iter().map(|r| ((*r, 32), 53)));
    // Widest first, so a kept entry is never covered by a later one.
    nets.sort_by_key(|n| (n.1, u32::from(n.0)));
    let mut kept_nets: Vec<Net4> = Vec::new();
    for n in nets {
        if !kept_nets.iter().any(|k| covers(*k, n)) {
            kept_nets.push(n);
        }
    }
    pairs.sort_by_key(|(n, p)| (*p, n.1, u32::from(n.0)));
    let mut kept_pairs: Vec<(Net4, u16)> = Vec::new();
    for (n, p) in pairs {
        let covered = kept_nets.iter().any(|k| covers(*k, n))
            || kept_pairs.iter().any(|(k, kp)| *kp == p && covers(*k, n));
        if !covered {
            kept_pairs.push((n, p));
        }
    }
    Ok((kept_nets, kept_pairs))
}

fn prefix(n: Net4) -> Value {
    json!({"prefix": {"addr": n.0.to_string(), "len": n.1}})
}

/// One transaction creating a job's egress policy (see the module docs): the two sets with their
/// elements, the base chain on the ingress hook of `veth` (policy drop) and its two rules.
/// `veth` must exist.
pub(crate) fn job_policy(
    table: &str,
    veth: &str,
    addr: Ipv4Addr,
    allow: &[Destination],
    resolvers: &[Ipv4Addr],
) -> Result<Value, String> {
    let (nets, pairs) = policy_elements(allow, resolvers)?;
    let n = JobNames::new(addr);
    let set = |name: &str, kind: Value| {
        json!({"add": {"set": {"family": "inet", "table": table, "name": name, "type": kind,
            "flags": ["interval"]}}})
    };
    let elements = |name: &str, elem: Vec<Value>| json!({"add": {"element": {"family": "inet", "table": table, "name": name, "elem": elem}}});
    let mut cmds = vec![
        set(&n.nets, json!("ipv4_addr")),
        set(&n.ports, json!(["ipv4_addr", "inet_service"])),
    ];
    if !nets.is_empty() {
        cmds.push(elements(&n.nets, nets.into_iter().map(prefix).collect()));
    }
    if !pairs.is_empty() {
        cmds.push(elements(
            &n.ports,
            pairs
                .into_iter()
                .map(|(net, port)| json!({"concat": [prefix(net), port]}))
                .collect(),
        ));
    }
    cmds.push(
        json!({"add": {"chain": {"family": "inet", "table": table, "name": n.chain,
        "type": "filter", "hook": "ingress", "dev": veth, "prio": 0, "policy": "drop"}}}),
    );
    let ip = |field: &str| json!({"payload": {"protocol": "ip", "field": field}});
    let own_source = json!({"match": {"op": "==", "left": ip("saddr"), "right": addr.to_string()}});
    let rule = |expr: Vec<Value>| json!({"add": {"rule": {"family": "inet", "table": table, "chain": n.chain, "expr": expr}}});
    cmds.push(rule(vec![
        own_source.clone(),
        json!({"match": {"op": "==", "left": ip("daddr"), "right": format!("@{}", n.nets)}}),
        json!({"accept": null}),
    ]));
    cmds.push(rule(vec![
        own_source,
        meta("l4proto", "==", json!({"set": ["tcp", "udp"]})),
        json!({"match": {"op": "==", "left": {"concat": [ip("daddr"),
            {"payload": {"protocol": "th", "field": "dport"}}]}, "right": format!("@{}", n.ports)}}),
        json!({"accept": null}),
    ]));
    Ok(json!({ "nftables": cmds }))
}

/// One transaction deleting the named per-job objects (chains first: their rules hold the sets).
pub(crate) fn job_policy_removal(table: &str, chains: &[String], sets: &[String]) -> Value {
    let mut cmds = Vec::new();
    for c in chains {
        cmds.push(json!({"delete": {"chain": {"family": "inet", "table": table, "name": c}}}));
    }
    for s in sets {
        cmds.push(json!({"delete": {"set": {"family": "inet", "table": table, "name": s}}}));
    }
    json!({ "nftables": cmds })
}

/// The per-job objects in the table: (address, chains, sets). Empty when the table is missing.
pub(crate) type JobObjects = Vec<(Ipv4Addr, Vec<String>, Vec<String>)>;

/// Lists the per-job objects of table `inet <table>` (see [`JobObjects`]).
pub(crate) fn job_objects(table: &str) -> Result<JobObjects, String> {
    if !table_exists(table)? {
        return Ok(Vec::new());
    }
    let out = run(&json!({"nftables": [{"list": {"table": {"family": "inet", "name": table}}}]}))?;
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("nft -j output: {e}"))?;
    Ok(parse_job_objects(&v))
}

fn parse_job_objects(v: &Value) -> JobObjects {
    let mut by_addr: std::collections::BTreeMap<Ipv4Addr, (Vec<String>, Vec<String>)> =
        Default::default();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for (kind, is_chain) in [("chain", true), ("set", false)] {
            let Some(name) = item[kind]["name"].as_str() else {
                continue;
            };
            if let Some(addr) = job_object_addr(name) {
                let e = by_addr.entry(addr).or_default();
                if is_chain { &mut e.0 } else { &mut e.1 }.push(name.to_string());
            }
        }
    }
    by_addr.into_iter().map(|(a, (c, s))| (a, c, s)).collect()
}

/// Removes a job's egress policy. The usual case is one transaction deleting the chain and both
/// sets; if that fails (an object already gone — an older kernel deletes a device's base chain
/// with the device), what is left of the job's objects is listed and deleted.
pub(crate) fn remove_job_policy(table: &str, addr: Ipv4Addr) -> Result<(), String> {
    let n = JobNames::new(addr);
    let first = match run(&job_policy_removal(
        table,
        std::slice::from_ref(&n.chain),
        &[n.nets.clone(), n.ports.clone()],
    )) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let left = job_objects(table)?;
    match left.into_iter().find(|(a, _, _)| *a == addr) {
        None => Ok(()),
        Some((_, chains, sets)) => run(&job_policy_removal(table, &chains, &sets))
            .map(|_| ())
            .map_err(|e| format!("{e} (after a first attempt: {first})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dests(list: &[&str]) -> Vec<Destination> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn job_object_names_round_trip() {
        let a = Ipv4Addr::new(10, 88, 0, 2);
        let n = JobNames::new(a);
        assert_eq!(n.chain, "job_0a580002");
        assert_eq!(n.nets, "job_0a580002_n");
        assert_eq!(n.ports, "job_0a580002_p");
        for name in [&n.chain, &n.nets, &n.ports] {
            assert_eq!(job_object_addr(name), Some(a));
        }
        for other in [
            "forward",
            "job_",
            "job_0a58000",
            "job_0A580002",
            "job_0a580002_x",
            "job_zz580002",
        ] {
            assert_eq!(job_object_addr(other), None, "{other}");
        }
    }

    #[test]
    fn covered_entries_are_left_out_and_dns_added() {
        let allow = dests(&[
            "10.1.0.0/16",
            "10.0.0.0/8",
            "10.0.0.0/8",
            "192.0.2.0/24:443",
            "192.0.2.7/32:443",
            "192.0.2.7/32:80",
            "10.9.9.9/32:53",
            "198.51.100.2/32:8000",
        ]);
        let (nets, pairs) = policy_elements(
            &allow,
            &[Ipv4Addr::new(198, 51, 100, 2), Ipv4Addr::new(10, 0, 0, 2)],
        )
        .unwrap();
        assert_eq!(nets, vec![(Ipv4Addr::new(10, 0, 0, 0), 8)]);
        let mut pairs: Vec<String> = pairs
            .iter()
            .map(|((a, l), p)| format!("{a}/{l}:{p}"))
            .collect();
        pairs.sort();
        assert_eq!(
            pairs,
            vec![
                "192.0.2.0/24:443",
                "192.0.2.7/32:80",
                "198.51.100.2/32:53",
                "198.51.100.2/32:8000",
            ]
        );
        assert!(
            policy_elements(&dests(&["[2001:db8::1]:443"]), &[])
                .unwrap_err()
                .contains("no IPv6")
        );
        let (nets, pairs) = policy_elements(&[], &[]).unwrap();
        assert!(nets.is_empty() && pairs.is_empty());
    }

    #[test]
    fn job_policy_text() {
        let doc = job_policy(
            "nekton",
            "nk0a580002",
            Ipv4Addr::new(10, 88, 0, 2),
            &dests(&["198.51.100.2/32:8000", "203.0.113.0/24"]),
            &[Ipv4Addr::new(192, 0, 2, 53)],
        )
        .unwrap();
        let expected = json!({"nftables": [
            {"add": {"set": {"family": "inet", "table": "nekton", "name": "job_0a580002_n",
                "type": "ipv4_addr", "flags": ["interval"]}}},
            {"add": {"set": {"family": "inet", "table": "nekton", "name": "job_0a580002_p",
                "type": ["ipv4_addr", "inet_service"], "flags": ["interval"]}}},
            {"add": {"element": {"family": "inet", "table": "nekton", "name": "job_0a580002_n",
                "elem": [{"prefix": {"addr": "203.0.113.0", "len": 24}}]}}},
            {"add": {"element": {"family": "inet", "table": "nekton", "name": "job_0a580002_p",
                "elem": [
                    {"concat": [{"prefix": {"addr": "192.0.2.53", "len": 32}}, 53]},
                    {"concat": [{"prefix": {"addr": "198.51.100.2", "len": 32}}, 8000]},
                ]}}},
            {"add": {"chain": {"family": "inet", "table": "nekton", "name": "job_0a580002",
                "type": "filter", "hook": "ingress", "dev": "nk0a580002", "prio": 0,
                "policy": "drop"}}},
            {"add": {"rule": {"family": "inet", "table": "nekton", "chain": "job_0a580002", "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                    "right": "10.88.0.2"}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                    "right": "@job_0a580002_n"}},
                {"accept": null}]}}},
            {"add": {"rule": {"family": "inet", "table": "nekton", "chain": "job_0a580002", "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                    "right": "10.88.0.2"}},
                {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}},
                    "right": {"set": ["tcp", "udp"]}}},
                {"match": {"op": "==", "left": {"concat": [
                    {"payload": {"protocol": "ip", "field": "daddr"}},
                    {"payload": {"protocol": "th", "field": "dport"}}]},
                    "right": "@job_0a580002_p"}},
                {"accept": null}]}}},
        ]});
        assert_eq!(doc, expected, "{doc:#}");
        // An empty list: the sets stay empty (no `add element` with nothing), the chain drops
        // everything.
        let doc = job_policy("t", "nk0a580003", Ipv4Addr::new(10, 88, 0, 3), &[], &[]).unwrap();
        let cmds = doc["nftables"].as_array().unwrap();
        assert_eq!(cmds.len(), 5, "{doc:#}");
        assert!(cmds.iter().all(|c| c["add"]["element"].is_null()));
    }

    #[test]
    fn job_policy_removal_and_listing() {
        let doc = job_policy_removal(
            "nekton",
            &["job_0a580002".into()],
            &["job_0a580002_n".into(), "job_0a580002_p".into()],
        );
        assert_eq!(
            doc,
            json!({"nftables": [
                {"delete": {"chain": {"family": "inet", "table": "nekton", "name": "job_0a580002"}}},
                {"delete": {"set": {"family": "inet", "table": "nekton", "name": "job_0a580002_n"}}},
                {"delete": {"set": {"family": "inet", "table": "nekton", "name": "job_0a580002_p"}}},
            ]})
        );
        // What `nft -j list table` prints, trimmed: base chains, a job's chain and sets, and the
        // sets of another job whose chain an older kernel removed with its device.
        let listed = json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "nekton"}},
            {"chain": {"family": "inet", "table": "nekton", "name": "forward"}},
            {"set": {"family": "inet", "table": "nekton", "name": "job_0a580002_n"}},
            {"set": {"family": "inet", "table": "nekton", "name": "job_0a580002_p"}},
            {"chain": {"family": "inet", "table": "nekton", "name": "job_0a580002"}},
            {"set": {"family": "inet", "table": "nekton", "name": "job_0a580009_p"}},
            {"rule": {"family": "inet", "table": "nekton", "chain": "job_0a580002"}},
        ]});
        assert_eq!(
            parse_job_objects(&listed),
            vec![
                (
                    Ipv4Addr::new(10, 88, 0, 2),
                    vec!["job_0a580002".to_string()],
                    vec!["job_0a580002_n".to_string(), "job_0a580002_p".to_string()]
                ),
                (
                    Ipv4Addr::new(10, 88, 0, 9),
                    vec![],
                    vec!["job_0a580009_p".to_string()]
                ),
            ]
        );
    }

    #[test]
    fn bridge_rules_keep_the_per_job_objects() {
        let doc = ruleset(&BridgeConfig::default());
        let cmds = doc["nftables"].as_array().unwrap();
        // Never a delete (of the table or anything in it): the rewrite is add + flush + add.
        assert!(cmds.iter().all(|c| c.get("delete").is_none()), "{doc:#}");
        let flushed: Vec<&str> = cmds
            .iter()
            .filter_map(|c| c["flush"]["chain"]["name"].as_str())
            .collect();
        assert_eq!(flushed, ["forward", "input", "postrouting"]);
        assert!(!doc.to_string().contains("job_"));
    }
}
