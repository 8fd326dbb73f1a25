//! Authentication: who is calling, for which tenant, with which scopes.
//!
//! Every `/v1` request passes [`authenticate`] (a router layer, so a handler cannot forget it):
//! `Authorization: Bearer nk_...` is hashed and looked up; the result, a [`Caller`], goes into the
//! request's extensions, where handlers take it as an extractor. A missing, malformed, unknown,
//! revoked or expired token is a 401 with `WWW-Authenticate: Bearer`. A scope a handler needs and
//! the token lacks is a 403 ([`Caller::require`]); another tenant's object is a 404 because every
//! store query is filtered by the caller's tenant.
//!
//! The web console (`/ui`) also reads log streams with `EventSource`, which cannot send headers:
//! for a `GET`/`HEAD` of a `/v1` path, and only then, the token may come in the `nekton_token`
//! cookie ([`presented_token`]; docs/console.md explains why that is not a CSRF hole).
//!
//! Lookups are cached per process for at most [`CACHE_TTL`] (1 s), so a revoked or expired token
//! stops working within a second everywhere; the cache keys are the tokens' SHA-256 hashes, and
//! the stored hash is compared with the presented one in constant time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::config::DEFAULT_TENANT;
use crate::model::auth::{Scope, Scopes, hash_token, looks_like_token};
use crate::store::tenants::{self, Actor};

/// How long a token lookup is trusted (a revocation takes effect within this).
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// Cached lookups kept per process (the cache is emptied when it fills).
const CACHE_MAX: usize = 50_000;

/// Whether requests must carry a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every `/v1` request needs a token (the default).
    On,
    /// No tokens: every request acts as the default tenant with every scope. Allowed only when
    /// every listen address is loopback.
    Off,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    tenant: Arc<str>,
    token: Option<Uuid>,
    scopes: Scopes,
}

impl Caller {
    /// The caller when authentication is off.
    pub fn anonymous_default() -> Caller {
        Caller {
            tenant: Arc::from(DEFAULT_TENANT),
            token: None,
            scopes: Scopes::all(),
        }
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn token(&self) -> Option<Uuid> {
        self.token
    }

    pub fn scopes(&self) -> Scopes {
        self.scopes
    }

    /// 403 unless the token has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                format!(
                    "this token lacks the {scope} scope; create one with it (`nekton token create --scope {scope}`)"
                ),
            ))
        }
    }

    /// Who to record in the audit log.
    pub fn actor(&self) -> Actor {
        Actor {
            tenant: Some(self.tenant.to_string()),
            token: self.token,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            tracing::error!(path = %parts.uri.path(), "a handler needs a caller but the route is not authenticated");
            ApiError::internal()
        })
    }
}

/// A per-process map of values read from the database, each trusted for [`CACHE_TTL`]; emptied
/// when it holds `max` entries (a flood of distinct keys costs memory once, not without bound).
pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
    max: usize,
}

impl<K: std::hash::Hash + Eq, V: Clone> TtlCache<K, V> {
    pub fn new(max: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// The value stored for `key` less than [`CACHE_TTL`] ago.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, v)| v.clone())
    }

    /// Stores `value` as read at `at` (taken before the read, so the TTL never outlives it).
    pub fn insert(&self, key: K, at: Instant, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max {
            entries.clear();
        }
        entries.insert(key, (at, value));
    }
}

#[derive(Clone)]
struct Found {
    hash: [u8; 32],
    caller: Caller,
    expires_at: Option<DateTime<Utc>>,
}

/// Token lookups with a short cache (`None`: no such token, or revoked).
pub struct Authenticator {
    mode: AuthMode,
    cache: TtlCache<[u8; 32], Option<Found>>,
}

impl Authenticator {
    pub fn new(mode: AuthMode) -> Self {
        Self {
            mode,
            cache: TtlCache::new(CACHE_MAX),
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The caller a request identifies: by `Authorization: Bearer`, or — for a `GET`/`HEAD` of
    /// a `/v1` path only — by the console's [`TOKEN_COOKIE`] (see [`presented_token`]).
    pub async fn caller(
        &self,
        pool: &PgPool,
        method: &Method,
        path: &str,
        headers: &axum::http::HeaderMap,
    ) -> Result<Caller, ApiError> {
        if self.mode == AuthMode::Off {
            return Ok(Caller::anonymous_default());
        }
        let token = presented_token(method, path, headers)?;
        if !looks_like_token(token) {
            return Err(unauthorized(
                "that is not an API token (they are `nk_` and 32 letters or digits)",
            ));
        }
        let hash = hash_token(token);
        let found = match self.cache.get(&hash) {
            Some(found) => found,
            None => {
                let at = Instant::now();
                let found = tenants::lookup_token(pool, &hash).await?.map(|t| Found {
                    hash: t.secret_hash,
                    caller: Caller {
                        tenant: Arc::from(t.tenant_id.as_str()),
                        token: Some(t.id),
                        scopes: Scopes::from_names(&t.scopes),
                    },
                    expires_at: t.expires_at,
                });
                self.cache.insert(hash, at, found.clone());
                found
            }
        };
        let Some(found) = found else {
            return Err(unauthorized(
                "this API token is unknown or was revoked; ask an admin for a new one",
            ));
        };
        if !bool::from(found.hash.ct_eq(&hash)) {
            return Err(unauthorized("this API token is unknown or was revoked"));
        }
        if found.expires_at.is_some_and(|e| e <= Utc::now()) {
            return Err(unauthorized(
                "this API token has expired; ask an admin for a new one",
            ));
        }
        Ok(found.caller)
    }
}

/// The cookie the web console sets so that its `EventSource` (which cannot send headers) can
/// read a job's log stream. Accepted only on `GET`/`HEAD` of `/v1` paths: nothing that changes
/// state can ride on a cookie, so a cross-site request cannot use it (no CSRF), and the console
/// sets it `SameSite=Strict; Path=/v1` (docs/console.md).
pub const TOKEN_COOKIE: &str = "nekton_token";

/// The token a request presents. `Authorization: Bearer` wins; without it, a `GET` or `HEAD` of
/// a `/v1` path may carry the token in the [`TOKEN_COOKIE`] cookie; any other request with only
/// the cookie is a 401 saying so.
pub fn presented_token<'a>(
    method: &Method,
    path: &str,
    headers: &'a axum::http::HeaderMap,
) -> Result<&'a str, ApiError> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        return value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .ok_or_else(|| {
                unauthorized("the Authorization header must be `Bearer nk_...` (an API token)")
            });
    }
    let cookie = token_cookie(headers);
    let read_only = *method == Method::GET || *method == Method::HEAD;
    let under_v1 = path == "/v1" || path.starts_with("/v1/");
    match cookie {
        Some(token) if read_only && under_v1 => Ok(token),
        Some(_) if under_v1 => Err(unauthorized(
            "the nekton_token cookie is accepted only on GET and HEAD requests; send `Authorization: Bearer nk_...` for anything that changes state",
        )),
        _ => Err(unauthorized(
            "this endpoint needs an API token: send `Authorization: Bearer nk_...` (the server's first start wrote an admin token to <state-dir>/admin.token; `nekton token create` makes more)",
        )),
    }
}

/// The value of the [`TOKEN_COOKIE`] cookie, if the request has one (`Cookie: a=1; nekton_token=nk_...`).
fn token_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message).with_challenge()
}

/// True for the paths that need a token: every `/v1` endpoint and `/metrics` (the health probes
/// and the OpenAPI document stay open).
pub fn needs_token(path: &str) -> bool {
    path.starts_with("/v1/") || path == "/v1" || path == "/metrics"
}

/// The router layer: authenticates [`needs_token`] paths and stores the [`Caller`] in the request.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if !needs_token(req.uri().path()) {
        return next.run(req).await;
    }
    match state
        .auth
        .caller(&state.pool, req.method(), req.uri().path(), req.headers())
        .await
    {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, header};

    const T: &str = "nk_0123456789abcdefghijABCDEFGHIJ01";

    fn cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn the_cookie_is_a_token_only_for_reads_under_v1() {
        let h = cookie(&format!("theme=dark; nekton_token={T}"));
        assert_eq!(presented_token(&Method::GET, "/v1/jobs", &h).unwrap(), T);
        assert_eq!(presented_token(&Method::HEAD, "/v1/me", &h).unwrap(), T);
        for m in [Method::POST, Method::PATCH, Method::DELETE, Method::PUT] {
            let e = presented_token(&m, "/v1/jobs", &h).unwrap_err();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        }
        assert!(presented_token(&Method::GET, "/metrics", &h).is_err());
        assert!(presented_token(&Method::GET, "/v1/jobs", &cookie("nekton_token=")).is_err());
        assert!(presented_token(&Method::GET, "/v1/jobs", &cookie("other=1")).is_err());
    }

    #[test]
    fn the_header_wins_over_the_cookie() {
        let mut h = cookie("nekton_token=nk_cookie");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {T}")).unwrap(),
        );
        assert_eq!(presented_token(&Method::POST, "/v1/jobs", &h).unwrap(), T);
    }
}
