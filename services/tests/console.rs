//! The browser side of the API: CORS (`--cors-origin`), the web console at `/ui`, and the
//! `nekton_token` cookie the console's EventSource uses (GET/HEAD only). The console itself is
//! driven in a real browser by `scripts/check-ui.sh`.

mod common;

use common::{Harness, guests};
use reqwest::{Method, StatusCode, header};

const ALLOWED: &str = "http://127.0.0.1:5173";

async fn preflight(h: &Harness, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, format!("{}/v1/jobs", h.base))
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type,idempotency-key",
        )
        .send()
        .await
        .expect("preflight")
}

fn header_list(r: &reqwest::Response, name: header::HeaderName) -> Vec<String> {
    r.headers()
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or_default().split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_exactly_the_configured_origins() {
    let h = Harness::start_with(|o| {
        o.cors_origins = vec![format!("{ALLOWED}/"), "https://console.example".into()]
    })
    .await;

    // A preflight from an allowed origin is answered without a token, with every header the
    // API's browser clients need.
    let r = preflight(&h, ALLOWED).await;
    assert!(r.status().is_success(), "preflight: {}", r.status());
    assert_eq!(
        r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        ALLOWED,
        "the origin is echoed exactly (normalised from the flag's trailing slash)"
    );
    let methods = header_list(&r, header::ACCESS_CONTROL_ALLOW_METHODS);
    for m in ["get", "post", "patch", "delete"] {
        assert!(methods.contains(&m.to_string()), "{m} in {methods:?}");
    }
    let headers = header_list(&r, header::ACCESS_CONTROL_ALLOW_HEADERS);
    for n in [
        "authorization",
        "content-type",
        "idempotency-key",
        "last-event-id",
    ] {
        assert!(headers.contains(&n.to_string()), "{n} in {headers:?}");
    }
    assert!(
        r.headers()
            .get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
            .is_none(),
        "credentials (the console's cookie) are never allowed cross-origin"
    );

    // Another origin gets no CORS headers at all (the browser then refuses the request).
    for other in ["http://127.0.0.1:5174", "http://evil.example", "null"] {
        let r = preflight(&h, other).await;
        assert_ne!(r.status(), StatusCode::UNAUTHORIZED, "{other}");
        assert!(
            r.headers()
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none(),
            "{other} was allowed"
        );
    }

    // The actual requests: allowed and exposing the headers a client must read, the 401 too
    // (so a browser app can see that its token is wrong).
    let token = h.admin_token.clone().expect("admin token");
    let r = reqwest::Client::new()
        .get(format!("{}/v1/me", h.base))
        .header(header::ORIGIN, ALLOWED)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], ALLOWED);
    let exposed = header_list(&r, header::ACCESS_CONTROL_EXPOSE_HEADERS);
    for n in ["retry-after", "location", "www-authenticate"] {
        assert!(exposed.contains(&n.to_string()), "{n} in {exposed:?}");
    }
    let r = reqwest::Client::new()
        .get(format!("{}/v1/me", h.base))
        .header(header::ORIGIN, "https://console.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://console.example"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cors_origin_means_no_cors_headers_and_a_wildcard_is_refused() {
    let h = Harness::start().await;
    let r = preflight(&h, ALLOWED).await;
    assert!(
        r.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    let r = h
        .http
        .get(format!("{}/v1/me", h.base))
        .header(header::ORIGIN, ALLOWED)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );

    let dir = tempfile::tempdir().unwrap();
    let mut opts = common::options(dir.path());
    opts.cors_origins = vec!["*".into()];
    let err = match nekton::server::start(h.db.pool.clone(), opts).await {
        Ok(_) => panic!("a server started with --cors-origin '*'"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("--cors-origin") && err.contains("`*`") && err.contains("exactly"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_and_its_cookie_only_reads() {
    let h = Harness::start().await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // The console's files need no token and load nothing from elsewhere.
    let r = plain.get(format!("{}/ui", h.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers()[header::LOCATION], "/ui/");
    for (path, ty, needle) in [
        ("/ui/", "text/html", "/ui/app.js"),
        ("/ui/app.js", "text/javascript", "EventSource"),
        ("/ui/style.css", "text/css", "font"),
    ] {
        let r = plain.get(format!("{}{path}", h.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let ct = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(ct.starts_with(ty), "{path}: {ct}");
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
            "{csp}"
        );
        let body = r.text().await.unwrap();
        assert!(body.contains(needle), "{path} lacks {needle}");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} names another site"
        );
    }

    let token = h.admin_token.clone().expect("admin token");
    let cookie = format!("theme=dark; nekton_token={token}");
    // GET with the cookie alone: the caller is the token's.
    let r = plain
        .get(format!("{}/v1/me", h.base))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let me: serde_json::Value = r.json().await.unwrap();
    assert_eq!(me["tenant"], "default");

    // The log stream, as the console's EventSource reads it.
    let digest = h.push(guests::hello()).await;
    let job = h.submit(&Harness::spec(&digest)).await;
    h.wait_finished(job.id, std::time::Duration::from_secs(30))
        .await;
    let r = plain
        .get(format!("{}/v1/jobs/{}/logs", h.base, job.id))
        .header(header::COOKIE, &cookie)
        .header(header::ACCEPT, "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("retry:") && body.contains("event: exit"),
        "{body}"
    );

    // Anything that changes state needs the header: a cookie cannot submit, cancel or delete.
    for (method, path) in [
        (Method::POST, "/v1/jobs".to_string()),
        (Method::POST, format!("/v1/jobs/{}/cancel", job.id)),
        (Method::POST, "/v1/modules".to_string()),
        (Method::DELETE, "/v1/images/busybox:latest".to_string()),
    ] {
        let r = plain
            .request(method.clone(), format!("{}{path}", h.base))
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({ "module": digest }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("only on GET and HEAD"),
            "{e}"
        );
    }
    assert_eq!(
        h.count("jobs").await,
        1,
        "no job was submitted with the cookie"
    );
}
