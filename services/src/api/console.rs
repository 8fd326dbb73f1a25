//! The web console at `/ui`: one HTML page, a style sheet and a script (`services/console/`),
//! compiled into the binary with `include_str!` — no build step, nothing fetched from elsewhere,
//! works offline. The page talks to `/v1` like any client (`Authorization: Bearer`, the token
//! kept in the tab's `sessionStorage`); its log view uses `EventSource` with the `nekton_token`
//! cookie ([`super::auth::TOKEN_COOKIE`]). docs/console.md describes it.
//!
//! `/ui` is outside `/v1`: the assets need no token (they hold no data) and are not part of the
//! OpenAPI document. The Content-Security-Policy allows only this origin's scripts, styles and
//! connections, so the page can load nothing from anywhere else.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/app.js");
const STYLE: &str = include_str!("../../console/style.css");

/// Only this origin's scripts, styles and connections; no frames, no plugins, no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Where the console lives (printed by `nekton serve`).
pub const PATH: &str = "/ui/";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // The binary is the version: always revalidate, so an upgrade is seen at once.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        body,
    )
        .into_response()
}

/// The console's routes (merged into the API's router, outside `/v1`).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent(PATH) }))
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}
