//! Identities: API token secrets, scopes and tenant names.
//!
//! A token is `nk_` followed by 32 characters drawn uniformly from the 62 letters and digits
//! (190 bits from the operating system's generator): the fixed prefix lets secret scanners find
//! leaked tokens, the alphabet keeps them one double-click wide. Only the SHA-256 of a token is
//! stored; a slow password hash is not needed for a secret with that much entropy (nothing can be
//! guessed), and SHA-256 keeps every request's check to one hash.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// The prefix of every API token.
pub const TOKEN_PREFIX: &str = "nk_";
const TOKEN_CHARS: usize = 32;
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What a token may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
pub enum Scope {
    /// Read the tenant's jobs, batches, logs, usage and webhooks.
    #[serde(rename = "jobs:read")]
    JobsRead,
    /// Submit and cancel the tenant's jobs and batches; manage its webhooks.
    #[serde(rename = "jobs:write")]
    JobsWrite,
    /// Upload Wasm modules.
    #[serde(rename = "modules:write")]
    ModulesWrite,
    /// Pull, import and inspect images on worker hosts.
    #[serde(rename = "images:write")]
    ImagesWrite,
    /// Manage tenants, tokens and quotas; read the audit log and every tenant's usage.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::JobsRead,
        Scope::JobsWrite,
        Scope::ModulesWrite,
        Scope::ImagesWrite,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JobsRead => "jobs:read",
            Scope::JobsWrite => "jobs:write",
            Scope::ModulesWrite => "modules:write",
            Scope::ImagesWrite => "images:write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes (five bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Scopes {
        Scope::ALL.into_iter().collect()
    }

    pub fn contains(self, s: Scope) -> bool {
        self.0 & (1 << s as u8) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Parses stored scope names; unknown names are dropped (a newer server's scope grants
    /// nothing here).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Scopes {
        names
            .iter()
            .filter_map(|n| Scope::parse(n.as_ref()))
            .collect()
    }

    pub fn names(self) -> Vec<String> {
        self.iter().map(|s| s.as_str().to_string()).collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().fold(0, |acc, s| acc | (1 << s as u8)))
    }
}

/// A new token's secret (shown once) and what is stored of it.
pub struct NewSecret {
    pub token: String,
    pub hash: [u8; 32],
    pub hint: String,
}

/// Draws a new token from the operating system's generator.
pub fn new_token() -> std::io::Result<NewSecret> {
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + TOKEN_CHARS);
    token.push_str(TOKEN_PREFIX);
    let mut buf = [0u8; 64];
    while token.len() < TOKEN_PREFIX.len() + TOKEN_CHARS {
        getrandom::fill(&mut buf).map_err(std::io::Error::other)?;
        for b in buf {
            // 248 = 4 × 62: rejecting the rest keeps every character uniform.
            if b < 248 && token.len() < TOKEN_PREFIX.len() + TOKEN_CHARS {
                token.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    Ok(NewSecret {
        hash: hash_token(&token),
        hint: token_hint(&token),
        token,
    })
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What listings show of a token: its prefix and first four characters.
pub fn token_hint(token: &str) -> String {
    token.chars().take(TOKEN_PREFIX.len() + 4).collect()
}

/// True if `s` has the shape of a token (checked before any lookup).
pub fn looks_like_token(s: &str) -> bool {
    s.len() == TOKEN_PREFIX.len() + TOKEN_CHARS
        && s.starts_with(TOKEN_PREFIX)
        && s[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
}

/// Checks a tenant name: 1–63 characters, lowercase letters, digits, `-` and `_`, starting with a
/// letter or digit.
pub fn check_tenant_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant names are 1-63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit; got {name:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_uniform_and_distinct() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a.token, b.token);
        assert!(looks_like_token(&a.token), "{}", a.token);
        assert_eq!(a.hash, hash_token(&a.token));
        assert_eq!(a.hint.len(), 7);
        assert!(a.token.starts_with(&a.hint));
        // 32 characters of 62: log2(62) * 32 ≈ 190 bits, above the 128 required.
        assert!((62f64).log2() * TOKEN_CHARS as f64 >= 128.0);
        // Every alphabet character shows up over many draws (no bias to a subset).
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.extend(new_token().unwrap().token[3..].chars());
        }
        assert_eq!(seen.len(), 62);
    }

    #[test]
    fn token_shape_is_checked() {
        assert!(!looks_like_token("nk_short"));
        assert!(!looks_like_token(&format!("xx_{}", "a".repeat(32))));
        assert!(!looks_like_token(&format!("nk_{}-", "a".repeat(31))));
        assert!(looks_like_token(&format!("nk_{}", "a".repeat(32))));
    }

    #[test]
    fn scopes_round_trip() {
        let s = Scopes::from_names(&["jobs:read", "admin", "bogus"]);
        assert!(s.contains(Scope::JobsRead) && s.contains(Scope::Admin));
        assert!(!s.contains(Scope::JobsWrite));
        assert_eq!(s.names(), vec!["jobs:read", "admin"]);
        assert_eq!(Scopes::all().iter().count(), 5);
    }

    #[test]
    fn tenant_names() {
        assert!(check_tenant_name("acme-1").is_ok());
        assert!(check_tenant_name("").is_err());
        assert!(check_tenant_name("-x").is_err());
        assert!(check_tenant_name("Acme").is_err());
        assert!(check_tenant_name(&"a".repeat(64)).is_err());
    }
}
