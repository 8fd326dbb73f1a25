//! Where webhook deliveries may go: the URL rules and the address policy (SSRF defence).
//!
//! A tenant chooses the URL, and the worker — inside the operator's network — connects to it.
//! Without a policy, a tenant could make the worker POST to the cloud metadata service, the
//! database, an admin port on loopback or anything else on the private network, and read the
//! answer's status in the delivery log. So every address a URL leads to is checked *after* DNS
//! resolution (a name can point anywhere) and the connection is made to that checked address
//! only (see `delivery.rs`): only globally routable unicast addresses pass, unless the operator
//! allows a range with `--webhook-allow CIDR`.
//!
//! The check is pure: [`AddressPolicy::check`] takes an address and says yes, or why not. The
//! refused classes are IANA's special-purpose registries (RFC 6890 and successors) plus the
//! cloud metadata addresses. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) and the NAT64 prefix
//! `64:ff9b::/96` are judged by the IPv4 address they carry; other IPv6 addresses must be global
//! unicast (inside `2000::/3`, outside its special blocks).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// The address policy of one process: special-purpose addresses are refused unless the operator
/// allowed a range containing them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub addr: IpAddr,
    /// What kind of address it is, e.g. `loopback`, `private (RFC 1918)`.
    pub class: String,
}

impl Refusal {
    /// The `--webhook-allow` value that would let exactly this address through.
    pub fn allow_hint(&self) -> String {
        match self.addr {
            IpAddr::V4(a) => format!("{a}/32"),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => format!("{v4}/32"),
                None => format!("{a}/128"),
            },
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is {}", self.addr, self.class)
    }
}

impl std::error::Error for Refusal {}

impl AddressPolicy {
    /// A policy that also lets the addresses in `allow` through.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// `Ok` if a delivery may connect to `addr`.
    pub fn check(&self, addr: IpAddr) -> Result<(), Refusal> {
        let canonical = addr.to_canonical();
        if self
            .allow
            .iter()
            .any(|n| n.contains(&canonical) || n.contains(&addr))
        {
            return Ok(());
        }
        match classify(addr) {
            None => Ok(()),
            Some(class) => Err(Refusal { addr, class }),
        }
    }
}

/// The kind of a special-purpose address; `None` for a globally routable unicast address.
pub fn classify(addr: IpAddr) -> Option<String> {
    match addr {
        IpAddr::V4(a) => classify_v4(a).map(str::to_string),
        IpAddr::V6(a) => classify_v6(a),
    }
}

fn in_v4(a: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(a) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn classify_v4(a: Ipv4Addr) -> Option<&'static str> {
    // Most specific first: the metadata addresses sit inside wider blocks.
    const TABLE: &[([u8; 4], u32, &str)] = &[
        (
            [169, 254, 169, 254],
            32,
            "a cloud metadata address (169.254.169.254)",
        ),
        (
            [100, 100, 100, 200],
            32,
            "a cloud metadata address (100.100.100.200)",
        ),
        ([255, 255, 255, 255], 32, "the broadcast address"),
        ([0, 0, 0, 0], 8, "\"this network\" (0.0.0.0/8)"),
        ([10, 0, 0, 0], 8, "private (10.0.0.0/8, RFC 1918)"),
        (
            [100, 64, 0, 0],
            10,
            "shared address space (100.64.0.0/10, carrier-grade NAT)",
        ),
        ([127, 0, 0, 0], 8, "loopback (127.0.0.0/8)"),
        ([169, 254, 0, 0], 16, "link-local (169.254.0.0/16)"),
        ([172, 16, 0, 0], 12, "private (172.16.0.0/12, RFC 1918)"),
        (
            [192, 0, 0, 0],
            24,
            "IETF protocol assignments (192.0.0.0/24)",
        ),
        ([192, 0, 2, 0], 24, "documentation (192.0.2.0/24)"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast (192.88.99.0/24)"),
        ([192, 168, 0, 0], 16, "private (192.168.0.0/16, RFC 1918)"),
        ([198, 18, 0, 0], 15, "benchmarking (198.18.0.0/15)"),
        ([198, 51, 100, 0], 24, "documentation (198.51.100.0/24)"),
        ([203, 0, 113, 0], 24, "documentation (203.0.113.0/24)"),
        ([224, 0, 0, 0], 4, "multicast (224.0.0.0/4)"),
        ([240, 0, 0, 0], 4, "reserved (240.0.0.0/4)"),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in_v4(a, *net, *prefix))
        .map(|(_, _, class)| *class)
}

fn in_v6(a: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    (u128::from(a) & mask) == (u128::from(net) & mask)
}

fn classify_v6(a: Ipv6Addr) -> Option<String> {
    if let Some(v4) = a.to_ipv4_mapped() {
        return classify_v4(v4).map(|c| format!("IPv4-mapped {v4}, {c}"));
    }
    // The NAT64 well-known prefix reaches the IPv4 address in its last 32 bits.
    if in_v6(a, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        let v4 = Ipv4Addr::from(u128::from(a) as u32);
        return classify_v4(v4).map(|c| format!("NAT64 of {v4}, {c}"));
    }
    const TABLE: &[(Ipv6Addr, u32, &str)] = &[
        (Ipv6Addr::UNSPECIFIED, 128, "the unspecified address (::)"),
        (Ipv6Addr::LOCALHOST, 128, "loopback (::1)"),
        (
            Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254),
            128,
            "a cloud metadata address (fd00:ec2::254)",
        ),
        (
            Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
            96,
            "IPv4-compatible (::/96, deprecated)",
        ),
        (
            Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
            48,
            "NAT64 local use (64:ff9b:1::/48)",
        ),
        (
            Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
            64,
            "discard-only (100::/64)",
        ),
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
            32,
            "documentation (2001:db8::/32)",
        ),
        (
            Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
            23,
            "IETF protocol assignments (2001::/23, incl. Teredo)",
        ),
        (
            Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0),
            16,
            "6to4 (2002::/16)",
        ),
        (
            Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
            20,
            "documentation (3fff::/20)",
        ),
        (
            Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
            7,
            "unique local (fc00::/7, private)",
        ),
        (
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
            10,
            "link-local (fe80::/10)",
        ),
        (
            Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
            10,
            "site-local (fec0::/10, deprecated)",
        ),
        (
            Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
            8,
            "multicast (ff00::/8)",
        ),
    ];
    if let Some((_, _, class)) = TABLE
        .iter()
        .find(|(net, prefix, _)| in_v6(a, *net, *prefix))
    {
        return Some((*class).to_string());
    }
    if !in_v6(a, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
        return Some("not global unicast (outside 2000::/3)".to_string());
    }
    None
}

/// Checks a webhook URL's form (not where it leads: that is decided at delivery, after DNS).
/// Returns the URL normalised.
pub fn check_url(s: &str) -> Result<reqwest::Url, String> {
    if s.len() > MAX_URL_LEN {
        return Err(format!("URLs are up to {MAX_URL_LEN} bytes"));
    }
    let url = reqwest::Url::parse(s.trim())
        .map_err(|e| format!("not a URL ({e}); give one like https://example.com/hooks/nekton"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme is {:?}; webhooks are sent over http or https only",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "the URL carries a user name or password; webhooks are authenticated by their signature, \
             so leave credentials out of the URL"
                .to_string(),
        );
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_string());
    }
    if url.port() == Some(0) {
        return Err("port 0 cannot be connected to; give the endpoint's port".to_string());
    }
    if url.fragment().is_some() {
        return Err(
            "the URL has a #fragment, which is never sent to a server; remove it".to_string(),
        );
    }
    Ok(url)
}

/// The IP address a URL's host is written as, if it is one (then no DNS is involved). The URL
/// parser has already normalised other IPv4 spellings (`2130706433`, `0x7f.1`) to dotted form.
pub fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(addr: &str) -> String {
        let addr: IpAddr = addr.parse().unwrap();
        match AddressPolicy::default().check(addr) {
            Err(r) => r.to_string(),
            Ok(()) => panic!("{addr} passed the default policy"),
        }
    }

    fn passes(policy: &AddressPolicy, addr: &str) -> bool {
        policy.check(addr.parse().unwrap()).is_ok()
    }

    #[test]
    fn loopback_private_link_local_and_metadata_are_refused() {
        let cases = [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("::1", "loopback"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("169.254.0.1", "link-local"),
            ("169.254.169.254", "metadata"),
            ("100.100.100.200", "metadata"),
            ("fd00:ec2::254", "metadata"),
            ("fe80::1", "link-local"),
            ("febf:ffff::1", "link-local"),
            ("fc00::1", "unique local"),
            ("fdff:ffff::1", "unique local"),
            ("0.0.0.0", "this network"),
            ("0.1.2.3", "this network"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("ff02::1", "multicast"),
            ("ff0e::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("192.0.0.1", "IETF protocol assignments"),
            ("192.0.0.192", "IETF protocol assignments"),
            ("192.0.2.1", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("::", "unspecified"),
            ("2001:db8::1", "documentation"),
            ("2001::1", "Teredo"),
            ("2002:a00:1::1", "6to4"),
            ("fec0::1", "site-local"),
            ("100::1", "discard-only"),
            ("::2", "IPv4-compatible"),
            ("::10.0.0.1", "IPv4-compatible"),
            ("4000::1", "not global unicast"),
        ];
        for (addr, class) in cases {
            let why = refused(addr);
            assert!(why.contains(class), "{addr}: {why:?} should say {class:?}");
        }
    }

    #[test]
    fn ipv4_mapped_and_nat64_forms_are_judged_by_their_ipv4_address() {
        for (addr, class) in [
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:172.16.5.4", "private"),
            ("::ffff:192.168.0.1", "private"),
            ("::ffff:169.254.169.254", "metadata"),
            ("::ffff:100.64.1.1", "carrier-grade NAT"),
            ("::ffff:0.0.0.0", "this network"),
            ("::ffff:224.0.0.1", "multicast"),
            ("64:ff9b::10.0.0.1", "private"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::169.254.169.254", "metadata"),
        ] {
            let why = refused(addr);
            assert!(why.contains(class), "{addr}: {why:?} should say {class:?}");
        }
        let open = AddressPolicy::default();
        assert!(passes(&open, "::ffff:93.184.216.34"));
        assert!(passes(&open, "64:ff9b::93.184.216.34"));
    }

    #[test]
    fn public_unicast_passes() {
        // Policy only: nothing here connects anywhere.
        let open = AddressPolicy::default();
        for addr in [
            "93.184.216.34",
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.255.255",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2606:2800:220:1:248:1893:25c8:1946",
            "2a00:1450:4001:80b::200e",
        ] {
            assert!(passes(&open, addr), "{addr} should pass");
        }
    }

    #[test]
    fn an_allowed_range_lets_exactly_its_addresses_through() {
        let policy = AddressPolicy::new(vec!["127.0.0.1/32".parse().unwrap()]);
        assert!(passes(&policy, "127.0.0.1"));
        assert!(passes(&policy, "::ffff:127.0.0.1"), "the mapped form too");
        assert!(!passes(&policy, "127.0.0.2"));
        assert!(!passes(&policy, "::1"));
        assert!(!passes(&policy, "10.0.0.1"));
        assert!(!passes(&policy, "169.254.169.254"));

        let private = AddressPolicy::new(vec![
            "10.1.0.0/16".parse().unwrap(),
            "fd12::/16".parse().unwrap(),
        ]);
        assert!(passes(&private, "10.1.2.3"));
        assert!(!passes(&private, "10.2.0.1"));
        assert!(passes(&private, "fd12::1"));
        assert!(!passes(&private, "fd13::1"));
        assert!(passes(&private, "93.184.216.34"), "public stays open");
    }

    #[test]
    fn refusals_suggest_the_allow_flag_value() {
        let r = AddressPolicy::default()
            .check("127.0.0.1".parse().unwrap())
            .unwrap_err();
        assert_eq!(r.allow_hint(), "127.0.0.1/32");
        let r = AddressPolicy::default()
            .check("::ffff:10.0.0.1".parse().unwrap())
            .unwrap_err();
        assert_eq!(r.allow_hint(), "10.0.0.1/32");
        let r = AddressPolicy::default()
            .check("fe80::1".parse().unwrap())
            .unwrap_err();
        assert_eq!(r.allow_hint(), "fe80::1/128");
    }

    #[test]
    fn urls_must_be_http_without_credentials_or_port_zero() {
        assert!(check_url("https://example.com/hook").is_ok());
        assert!(check_url("http://example.com:8080/hook?x=1").is_ok());
        for (bad, why) in [
            ("ftp://example.com/", "http or https"),
            ("file:///etc/passwd", "http or https"),
            ("gopher://example.com/", "http or https"),
            ("https://user:pw@example.com/", "user name or password"),
            ("https://user@example.com/", "user name or password"),
            ("http://example.com:0/", "port 0"),
            ("https://example.com/#x", "fragment"),
            ("not a url", "not a URL"),
            ("http://", "not a URL"),
        ] {
            let err = check_url(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err:?} should say {why:?}");
        }
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn literal_hosts_are_recognised_in_every_spelling() {
        let ip = |s: &str| literal_ip(&check_url(s).unwrap());
        assert_eq!(
            ip("http://127.0.0.1:9/"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(ip("http://2130706433/"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(ip("http://0x7f.1/"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(ip("http://[::1]:80/"), Some("::1".parse().unwrap()));
        assert_eq!(
            ip("http://[::ffff:169.254.169.254]/"),
            Some("::ffff:169.254.169.254".parse().unwrap())
        );
        assert_eq!(ip("http://example.com/"), None);
        assert_eq!(ip("http://localhost/"), None);
    }
}
