//! A bridge job's egress allow-list: the destinations it may reach, written `CIDR[:PORT]`.
//!
//! The syntax, shared by the API's validation and the container backend:
//!
//! | form | meaning |
//! |---|---|
//! | `198.51.100.0/24` | any port, any protocol, of that IPv4 network |
//! | `198.51.100.2` | the same as `198.51.100.2/32` |
//! | `198.51.100.2/32:8000` | TCP and UDP port 8000 of that network only |
//! | `2001:db8::/32`, `[2001:db8::/32]` | an IPv6 network, any port |
//! | `[2001:db8::1]:443`, `[2001:db8::/32]:443` | an IPv6 network, one port (brackets are required with a port) |
//!
//! A network's host bits must be zero (`198.51.100.2/24` is refused: it would silently mean
//! `198.51.100.0/24`); ports are 1..=65535. [`Destination`]'s `Display` writes the canonical form
//! (the prefix length always present), which [`Destination::from_str`] reads back.

use std::net::IpAddr;
use std::str::FromStr;

/// The most destinations one job may list (the API refuses more; the nftables sets of a job stay
/// small).
pub const MAX_DESTINATIONS: usize = 64;

/// An IP network (the `ipnet` crate's, as the service's webhook address policy uses). Parsed
/// destinations always have their host bits zero.
pub use ipnet::IpNet;

/// One destination of an allow-list: a network and optionally one port (TCP and UDP). See the
/// [module docs](self) for the syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination {
    pub net: IpNet,
    /// `None`: every port and protocol of `net`.
    pub port: Option<u16>,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.net.addr(), self.port) {
            (_, None) => write!(f, "{}", self.net),
            (IpAddr::V4(_), Some(p)) => write!(f, "{}:{p}", self.net),
            (IpAddr::V6(_), Some(p)) => write!(f, "[{}]:{p}", self.net),
        }
    }
}

const SYNTAX: &str = "write `CIDR` or `CIDR:PORT`, e.g. `198.51.100.0/24`, `198.51.100.2/32:8000`, \
                      or for IPv6 `2001:db8::/32` and `[2001:db8::/32]:443`";

fn parse_port(s: &str, whole: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("`{whole}`: the port must be a number 1..=65535, got `{s}`"))
}

fn parse_net(s: &str, whole: &str) -> Result<IpNet, String> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("`{whole}`: `{a}` is not an IP address; {SYNTAX}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix =
        match len {
            None => max,
            Some(l) => l.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                format!("`{whole}`: the prefix length must be 0..={max}, got `{l}`")
            })?,
        };
    let net = IpNet::new(addr, prefix)
        .map_err(|_| format!("`{whole}`: the prefix length must be 0..={max}, got `{prefix}`"))?;
    if net.trunc() != net {
        let network = net.network();
        return Err(format!(
            "`{whole}`: {addr}/{prefix} has host bits set; write the network ({network}/{prefix}) \
             or the single address ({addr}/{max})"
        ));
    }
    Ok(net)
}

impl FromStr for Destination {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err(format!("an empty destination; {SYNTAX}"));
        }
        if s.trim() != s {
            return Err(format!("`{s}` has surrounding spaces; {SYNTAX}"));
        }
        if let Some(rest) = s.strip_prefix('[') {
            // IPv6 in brackets: `[net]` or `[net]:port`.
            let (inner, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{s}`: a `[` without its `]`; {SYNTAX}"))?;
            let net = parse_net(inner, s)?;
            if matches!(net, IpNet::V4(_)) {
                return Err(format!(
                    "`{s}`: brackets are for IPv6 only; write IPv4 as `198.51.100.2/32:8000`"
                ));
            }
            let port = match after {
                "" => None,
                p => Some(parse_port(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("`{s}`: expected `:PORT` after `]`; {SYNTAX}"))?,
                    s,
                )?),
            };
            return Ok(Destination { net, port });
        }
        match s.matches(':').count() {
            0 => Ok(Destination {
                net: parse_net(s, s)?,
                port: None,
            }),
            1 => {
                let (net, port) = s.split_once(':').unwrap_or((s, ""));
                Ok(Destination {
                    net: parse_net(net, s)?,
                    port: Some(parse_port(port, s)?),
                })
            }
            // Bare IPv6 (no port possible without brackets).
            _ => {
                let net = parse_net(s, s).map_err(|e| {
                    format!("{e} (an IPv6 destination with a port is written `[2001:db8::1]:443`)")
                })?;
                Ok(Destination { net, port: None })
            }
        }
    }
}

/// Parses every entry of an allow-list; the error names the entry's index.
pub fn parse_all<S: AsRef<str>>(entries: &[S]) -> Result<Vec<Destination>, (usize, String)> {
    entries
        .iter()
        .enumerate()
        .map(|(i, s)| s.as_ref().parse().map_err(|e| (i, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Destination {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        s.parse::<Destination>()
            .map(|d| panic!("{s} parsed as {d:?}"))
            .unwrap_err()
    }

    #[test]
    fn ipv4_forms() {
        let d = ok("198.51.100.2/32:8000");
        assert_eq!(d.net.addr(), "198.51.100.2".parse::<IpAddr>().unwrap());
        assert_eq!(d.net.prefix_len(), 32);
        assert_eq!(d.port, Some(8000));
        assert_eq!(d.to_string(), "198.51.100.2/32:8000");
        assert_eq!(ok("198.51.100.2").to_string(), "198.51.100.2/32");
        assert_eq!(ok("198.51.100.2:53").to_string(), "198.51.100.2/32:53");
        assert_eq!(ok("10.0.0.0/8").port, None);
        assert_eq!(ok("0.0.0.0/0").net.prefix_len(), 0);
        assert_eq!(ok("0.0.0.0/0:443").to_string(), "0.0.0.0/0:443");
    }

    #[test]
    fn ipv6_forms() {
        assert_eq!(ok("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(ok("[2001:db8::/32]").to_string(), "2001:db8::/32");
        assert_eq!(ok("2001:db8::1").to_string(), "2001:db8::1/128");
        let d = ok("[2001:db8::1]:443");
        assert_eq!(d.port, Some(443));
        assert_eq!(d.to_string(), "[2001:db8::1/128]:443");
        assert_eq!(ok("[2001:db8::/32]:443").to_string(), "[2001:db8::/32]:443");
        assert!(matches!(d.net, IpNet::V6(_)));
        assert_eq!(ok("::/0").net.prefix_len(), 0);
    }

    #[test]
    fn canonical_forms_read_back() {
        for s in [
            "198.51.100.2/32:8000",
            "198.51.100.0/24",
            "[2001:db8::/32]:443",
            "2001:db8::/32",
            "0.0.0.0/0",
        ] {
            assert_eq!(ok(s).to_string(), s);
            assert_eq!(ok(&ok(s).to_string()), ok(s));
        }
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        assert!(err("").contains("empty"));
        assert!(err(" 10.0.0.0/8").contains("spaces"));
        assert!(err("example.com:80").contains("not an IP address"));
        assert!(err("10.0.0.0/33").contains("0..=32"));
        assert!(err("10.0.0.0/x").contains("prefix length"));
        assert!(err("2001:db8::/129").contains("0..=128"));
        let e = err("198.51.100.2/24");
        assert!(
            e.contains("host bits") && e.contains("198.51.100.0/24") && e.contains("/32"),
            "{e}"
        );
        assert!(err("10.0.0.1:0").contains("1..=65535"));
        assert!(err("10.0.0.1:65536").contains("1..=65535"));
        assert!(err("10.0.0.1:http").contains("1..=65535"));
        assert!(err("[10.0.0.1]:80").contains("IPv6 only"));
        assert!(err("[2001:db8::1:443").contains("without its `]`"));
        assert!(err("[2001:db8::1]443").contains("`:PORT`"));
        assert!(err("2001:db8::1:443:x").contains("[2001:db8::1]:443"));
    }

    #[test]
    fn containment() {
        let n = ok("198.51.100.0/24").net;
        assert!(n.contains(&"198.51.100.77".parse::<IpAddr>().unwrap()));
        assert!(!n.contains(&"198.51.101.1".parse::<IpAddr>().unwrap()));
        assert!(!n.contains(&"2001:db8::1".parse::<IpAddr>().unwrap()));
        assert!(
            ok("0.0.0.0/0")
                .net
                .contains(&"192.0.2.1".parse::<IpAddr>().unwrap())
        );
    }

    #[test]
    fn lists_name_the_bad_entry() {
        assert_eq!(parse_all(&["10.0.0.0/8", "192.0.2.1:53"]).unwrap().len(), 2);
        let (i, e) = parse_all(&["10.0.0.0/8", "192.0.2.1:53", "nope"]).unwrap_err();
        assert_eq!(i, 2);
        assert!(e.contains("nope"));
    }
}
