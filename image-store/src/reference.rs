//! Image references, normalised the way Docker does it (`github.com/distribution/reference`):
//!
//! - the first path component is a registry only if it contains `.` or `:`, is `localhost`, or has
//!   upper-case letters; otherwise the registry is `docker.io`;
//! - `index.docker.io` is spelled `docker.io`; single-component Docker Hub names get `library/`;
//! - no tag and no digest means `:latest`; a digest without a tag stays tagless.
//!
//! The normalised string (`docker.io/library/busybox:latest`) is the key of an image record.

use std::fmt;
use std::str::FromStr;

use super::{Digest, ImageError};

const DEFAULT_REGISTRY: &str = "docker.io";
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A normalised image reference.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses and normalises a reference as `docker pull` would.
    pub fn parse(input: &str) -> Result<Self, ImageError> {
        let fail = |reason: &str| ImageError::InvalidReference {
            reference: super::display_bytes(input.as_bytes()),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(fail("empty"));
        }
        if input.len() > 1024 {
            return Err(fail("too long"));
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((name_tag, digest)) => (name_tag, Some(Digest::parse(digest)?)),
            None => (input, None),
        };
        let last_slash = name_tag.rfind('/');
        let (name, tag) = match name_tag.rfind(':') {
            Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
                (&name_tag[..colon], Some(&name_tag[colon + 1..]))
            }
            _ => (name_tag, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(fail(
                "invalid tag (letters, digits, `_`, `.`, `-`; at most 128, not starting with `.` or `-`)",
            ));
        }
        if name.is_empty() {
            return Err(fail("empty name"));
        }
        if tag.is_none() && digest.is_none() && Digest::from_hex(name).is_some() {
            return Err(fail(
                "a bare 64-digit hex string is an image id, not a reference",
            ));
        }

        let (mut registry, mut repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if registry == LEGACY_DEFAULT_REGISTRY {
            registry = DEFAULT_REGISTRY.to_string();
        }
        if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            repository = format!("{OFFICIAL_PREFIX}{repository}");
        }
        if !valid_registry(&registry) {
            return Err(fail("invalid registry host"));
        }
        if repository.is_empty() || !repository.split('/').all(valid_path_component) {
            return Err(fail(
                "invalid repository name (lower-case letters, digits and separators `.`, `_`, `__`, `-` between them)",
            ));
        }
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(fail("name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host (with port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository, pinned to `digest` (no tag).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// The reference in `oci-client`'s terms.
    pub(crate) fn to_oci(&self) -> oci_client::Reference {
        match (&self.tag, &self.digest) {
            (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone(),
                digest.to_string(),
            ),
            (None, Some(digest)) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                digest.to_string(),
            ),
            (tag, None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone().unwrap_or_else(|| DEFAULT_TAG.to_string()),
            ),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({self})")
    }
}

impl FromStr for ImageRef {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(tag: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    tag.len() <= TAG_MAX
        && chars.next().is_some_and(word)
        && chars.all(|c| word(c) || c == '.' || c == '-')
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `host[:port]` where host is DNS labels (`[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?` joined by `.`)
/// or a bracketed IPv6 address.
fn valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("ipv6", Some(port)),
                None => return false,
            },
        }
    } else {
        match registry.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageRef::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    }

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn docker_hub_short_names() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("opensuse/leap:15.3"), "docker.io/opensuse/leap:15.3");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(norm("a/b/c"), "docker.io/a/b/c:latest");
        // `test.com:5000` is a name with a tag, not a registry: there is no `/`.
        assert_eq!(norm("test.com:5000"), "docker.io/library/test.com:5000");
    }

    #[test]
    fn registries_are_kept() {
        assert_eq!(norm("127.0.0.1:5000/x:1"), "127.0.0.1:5000/x:1");
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("localhost:5000/a/b"), "localhost:5000/a/b:latest");
        assert_eq!(norm("ghcr.io/org/img:v1"), "ghcr.io/org/img:v1");
        assert_eq!(norm("[::1]:5000/img"), "[::1]:5000/img:latest");
        assert_eq!(norm("Registry/img"), "Registry/img:latest");
        let r = ImageRef::parse("127.0.0.1:5000/x:1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "x");
        assert_eq!(r.tag(), Some("1"));
    }

    #[test]
    fn digests() {
        assert_eq!(
            norm(&format!("busybox@{D}")),
            format!("docker.io/library/busybox@{D}")
        );
        assert_eq!(
            norm(&format!("127.0.0.1:5000/x:1@{D}")),
            format!("127.0.0.1:5000/x:1@{D}")
        );
        let r = ImageRef::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), D);
        let oci = r.to_oci();
        assert_eq!(oci.digest(), Some(D));
        assert_eq!(oci.repository(), "library/busybox");
    }

    #[test]
    fn invalid_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            "a//b",
            "a/../b",
            "../x",
            "x/",
            "/x",
            "x y",
            "bad_-name",
            "host:port:x/y",
            "127.0.0.1:abc/x",
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("x/{}", "a".repeat(300));
        assert!(ImageRef::parse(&long).is_err());
    }

    #[test]
    fn component_grammar() {
        for ok in ["a", "a.b", "a_b", "a__b", "a-b", "a---b", "0x", "a.b-c_d"] {
            assert!(valid_path_component(ok), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "a___b", "a-_b", "A", "a b", ".."] {
            assert!(!valid_path_component(bad), "{bad}");
        }
    }
}
