//! Cross-origin access for browser apps served from other origins (`nekton serve --cors-origin`).
//!
//! Only exact origins are allowed, never `*`: the API is driven by bearer tokens, and a wildcard
//! would let any page a user visits use a token it obtained. Credentials (cookies) are never
//! allowed cross-origin, so the console's `nekton_token` cookie (see [`super::auth`]) works only
//! on the server's own origin; a cross-origin app sends `Authorization: Bearer`.
//!
//! The layer sits outside the authentication layer: a preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) is answered by it and never needs a token. Without any
//! configured origin there is no layer and no CORS header at all. docs/console.md has the rules.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Parses one `--cors-origin` value into the exact form browsers send in `Origin`
/// (`scheme://host[:port]`, the scheme's default port omitted). Refuses `*`, `null`, paths,
/// queries, user names and schemes other than http/https, each with the reason.
pub fn parse_origin(raw: &str) -> Result<HeaderValue, String> {
    let s = raw.trim();
    if s == "*" {
        return Err(
            "refusing the CORS origin `*`: the API is used with bearer tokens, so allow each \
             origin exactly (e.g. --cors-origin http://127.0.0.1:5173)"
                .into(),
        );
    }
    if s.eq_ignore_ascii_case("null") {
        return Err(
            "refusing the CORS origin `null` (sandboxed frames and file:// pages send it, so it \
             names no one); serve the app from an http(s) origin and allow that"
                .into(),
        );
    }
    let url = reqwest::Url::parse(s).map_err(|e| {
        format!("the CORS origin `{s}` is not an origin like http://127.0.0.1:5173 ({e})")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the CORS origin `{s}` must be http:// or https:// (an origin like http://127.0.0.1:5173)"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("the CORS origin `{s}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "the CORS origin `{s}` must not contain a user name or password"
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "the CORS origin `{s}` must be scheme://host[:port] only, without a path, query or fragment"
        ));
    }
    let origin = url.origin().ascii_serialization();
    HeaderValue::from_str(&origin).map_err(|_| format!("the CORS origin `{s}` is not valid"))
}

/// The CORS layer allowing exactly `origins` (None when there are none: no CORS headers).
pub fn layer(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([
                header::RETRY_AFTER,
                header::LOCATION,
                header::WWW_AUTHENTICATE,
            ])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_exact_and_normalised() {
        for (raw, want) in [
            ("http://127.0.0.1:5173", "http://127.0.0.1:5173"),
            ("http://127.0.0.1:5173/", "http://127.0.0.1:5173"),
            ("https://console.example:443", "https://console.example"),
            ("HTTP://LOCALHOST:8000", "http://localhost:8000"),
        ] {
            assert_eq!(parse_origin(raw).unwrap(), want, "{raw}");
        }
        for bad in [
            "*",
            "null",
            "127.0.0.1:5173",
            "ftp://host",
            "http://host/app",
            "http://host?x=1",
            "http://user@host",
            "",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_origin("*").unwrap_err().contains("bearer tokens"));
    }
}
