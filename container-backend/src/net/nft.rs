//! nekton's one nftables table, built as an nft JSON document (`nft -j -f -`) — never by gluing
//! command strings. Every rule matches traffic of the job bridge only, so the table changes
//! nothing else on the host; it is replaced as a whole (one atomic nft transaction) and removed
//! with one `delete table`.

use std::io::Write;
use std::process::{Command, Stdio};

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

/// The whole table: `delete` (when `exists`) + `add` in one transaction.
pub(crate) fn ruleset(cfg: &BridgeConfig, exists: bool) -> Value {
    let t = &cfg.table;
    let br = cfg.bridge.as_str();
    let table = json!({"family": "inet", "name": t});
    let mut cmds = Vec::new();
    if exists {
        cmds.push(json!({"delete": {"table": table}}));
    }
    cmds.push(json!({"add": {"table": table}}));
    let chain = |name: &str, kind: &str, hook: &str, prio: i32| {
        json!({"add": {"chain": {"family": "inet", "table": t, "name": name, "type": kind,
            "hook": hook, "prio": prio, "policy": "accept"}}})
    };
    cmds.push(chain("forward", "filter", "forward", 0));
    cmds.push(chain("input", "filter", "input", 0));
    cmds.push(chain("postrouting", "nat", "postrouting", 100));
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

/// Installs (or replaces) the table.
pub(crate) fn install(cfg: &BridgeConfig) -> Result<(), String> {
    // Make sure it exists, then replace it atomically (delete + add in one transaction), so a
    // concurrent install by another worker of the host never sees a half-built table.
    run(&json!({"nftables": [{"add": {"table": {"family": "inet", "name": cfg.table}}}]}))?;
    run(&ruleset(cfg, true)).map(|_| ())
}

/// Removes the table if it exists. Other tables are never touched.
pub(crate) fn remove(table: &str) -> Result<bool, String> {
    if !table_exists(table)? {
        return Ok(false);
    }
    run(&json!({"nftables": [{"delete": {"table": {"family": "inet", "name": table}}}]}))?;
    Ok(true)
}
