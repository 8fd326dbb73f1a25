//! Logs and traces of a service process (docs/operations.md, "Tracing").
//!
//! - Logs: text or JSON lines on stderr, filtered by `NEKTON_LOG`.
//! - Spans: `http.request` (the API's requests), `job.submit` (a job or a batch being stored),
//!   and on the worker `job.claim`, `job.run` and `job.complete` for each attempt.
//! - Every job carries the W3C trace context of its submission ([`TraceParent`], stored in
//!   `job_specs.traceparent`): the worker's spans of the job are children of its `job.submit`
//!   span, in the submitter's trace, even in another process on another host.
//! - With `--otlp-endpoint` (`OTEL_EXPORTER_OTLP_ENDPOINT`) spans are exported over OTLP/HTTP
//!   (JSON) by the OpenTelemetry SDK's batch processor on a thread of its own. Without it no
//!   exporter, thread or OpenTelemetry layer exists; jobs still get trace ids.
//! - A job's timeline: TRACE events of target `nekton::timeline` ([`timeline!`](crate::timeline))
//!   at each hand-over on a job's path through one process, for measuring where a lone job's time
//!   goes (`NEKTON_LOG=warn,nekton::timeline=trace`, then `load-tests/floor/steps.py`;
//!   load-tests/README.md, "Where a lone job's time goes, step by step"). Off, as by default, each
//!   costs one level check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// One step of a job's timeline: a TRACE event of target `nekton::timeline` naming the job and the
/// step (`api.received`, `api.stored`, `worker.handed`, `worker.started`, `sandbox.started`,
/// `sandbox.ended`, `worker.ran`, `writer.flushing`, `writer.stored`, `api.woken`,
/// `api.answered`). The log line's time is the step's; `load-tests/floor/steps.py` turns a log of
/// them into per-step medians.
#[macro_export]
macro_rules! timeline {
    ($job:expr, $step:literal) => {
        ::tracing::trace!(target: "nekton::timeline", job = %$job, step = $step)
    };
}

/// A W3C trace context (`traceparent`, <https://www.w3.org/TR/trace-context/>): the trace and the
/// span a piece of work belongs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    /// The parent span (for a job: its `job.submit` span).
    pub span_id: [u8; 8],
    /// The caller's sampling decision (flag 01).
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` header value. `None` for anything the W3C rules refuse: a version
    /// other than two lowercase hex digits or `ff`, a version-00 value of any length but 55, an
    /// all-zero trace or span id, uppercase hex. Later versions may append `-` fields.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim_matches(|c| c == ' ' || c == '\t');
        let b = s.as_bytes();
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let version = hex_bytes::<1>(s.get(0..2)?)?[0];
        if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        let trace_id = hex_bytes::<16>(s.get(3..35)?)?;
        let span_id = hex_bytes::<8>(s.get(36..52)?)?;
        let flags = hex_bytes::<1>(s.get(53..55)?)?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// A new trace with a random trace id and span id (sampled).
    pub fn random() -> Self {
        let mut bytes = [0u8; 24];
        if getrandom::fill(&mut bytes).is_err() || bytes[..16] == [0; 16] || bytes[16..] == [0; 8] {
            // No system randomness (never seen on Linux): a time-ordered unique id still makes
            // a valid, distinct trace id.
            bytes[..16].copy_from_slice(uuid::Uuid::now_v7().as_bytes());
            bytes[16..].copy_from_slice(&uuid::Uuid::now_v7().as_bytes()[8..]);
            bytes[23] |= 1;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        trace_id.copy_from_slice(&bytes[..16]);
        span_id.copy_from_slice(&bytes[16..]);
        Self {
            trace_id,
            span_id,
            sampled: true,
        }
    }

    /// The trace id as 32 lowercase hex digits (what the API shows as a job's `trace_id`).
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The span context of the parent, as OpenTelemetry takes it.
    fn span_context(&self) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            if self.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::default(),
        )
    }

    fn from_span_context(cx: &SpanContext) -> Option<Self> {
        cx.is_valid().then(|| Self {
            trace_id: cx.trace_id().to_bytes(),
            span_id: cx.span_id().to_bytes(),
            sampled: cx.is_sampled(),
        })
    }
}

impl std::fmt::Display for TraceParent {
    /// The `traceparent` header value (version 00).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            u8::from(self.sampled)
        )
    }
}

/// `N` bytes from exactly `2 * N` lowercase hex digits.
fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// The valid `traceparent` header of a request, if any (an invalid one is ignored, as the W3C
/// recommendation says: the request starts a trace of its own).
pub fn incoming(headers: &axum::http::HeaderMap) -> Option<TraceParent> {
    let mut values = headers.get_all("traceparent").iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    TraceParent::parse(first.to_str().ok()?)
}

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans (the OpenTelemetry layer is installed).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Makes `parent` the parent of `span` (a span not entered yet), when spans are exported:
/// `span` joins that trace. Without export, nothing to do.
pub fn set_parent(span: &tracing::Span, parent: &TraceParent) {
    if exporting() {
        let cx = opentelemetry::Context::new().with_remote_span_context(parent.span_context());
        if let Err(e) = span.set_parent(cx) {
            tracing::debug!(error = %e, "cannot set a span's trace parent");
        }
    }
}

/// The trace context a job submitted under `span` (its `job.submit` span) keeps: that span's
/// trace id and span id when spans are exported. Without export, the caller's `traceparent`
/// (`incoming`) as it came (the worker's spans then hang under the caller's span), or a new
/// random trace.
pub fn job_trace(span: &tracing::Span, incoming: Option<TraceParent>) -> TraceParent {
    if exporting() {
        let cx = span.context();
        if let Some(tp) = TraceParent::from_span_context(cx.span().span_context()) {
            return tp;
        }
    }
    incoming.unwrap_or_else(TraceParent::random)
}

/// What `init` set up: flush the exporter with [`Telemetry::shutdown`] before exiting.
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (waits up to 5 s) and stops the exporter.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let done = tokio::task::spawn_blocking(move || {
                provider.shutdown_with_timeout(Duration::from_secs(5))
            })
            .await;
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("nekton: exporting the last spans failed: {e}"),
                Err(e) => eprintln!("nekton: stopping the span exporter failed: {e}"),
            }
        }
    }
}

/// The URL spans are posted to: the OTLP base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`, e.g.
/// `http://collector:4318`) with the traces path, `/v1/traces`, appended as the OTLP
/// specification says for that variable.
pub fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let base = endpoint.trim();
    let parsed = reqwest::Url::parse(base).map_err(|e| {
        anyhow::anyhow!(
            "--otlp-endpoint {base:?} is not a URL ({e}); give the collector's OTLP/HTTP base \
             URL, e.g. http://127.0.0.1:4318"
        )
    })?;
    anyhow::ensure!(
        matches!(parsed.scheme(), "http" | "https"),
        "--otlp-endpoint {base:?}: only http:// and https:// are supported (OTLP over HTTP; \
         gRPC is not built in); give the collector's OTLP/HTTP base URL, e.g. http://127.0.0.1:4318"
    );
    Ok(format!("{}/v1/traces", base.trim_end_matches('/')))
}

/// Installs the process's subscriber: logs on stderr (`json`: JSON lines), filtered by
/// `NEKTON_LOG` (default `info,sqlx=warn,tower_http=warn`), and with `otlp_endpoint` the
/// OpenTelemetry layer and exporter. The spans exported are nekton's own (DEBUG: in the logs only
/// with `NEKTON_LOG=debug` or `nekton=debug`), whatever `NEKTON_LOG` says.
pub fn init(json: bool, otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    use std::io::IsTerminal as _;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("NEKTON_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=warn")
        })
    };
    let ansi = std::io::stderr().is_terminal();
    let endpoint = otlp_endpoint.map(str::trim).filter(|e| !e.is_empty());
    let Some(endpoint) = endpoint else {
        // No export: the filter applies to the whole subscriber, so every callsite it refuses
        // (the DEBUG spans included) is disabled once and for all and costs nothing. (With the
        // per-layer filters below, the DEBUG callsites of the hot path are checked at every
        // call: ~0.1 ms, 15-20 %, more nekton CPU per job in a debug build's load-tests
        // throughput; the price of export only.)
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(ansi)
            .with_writer(std::io::stderr);
        if json {
            builder.json().init();
        } else {
            builder.init();
        }
        return Ok(Telemetry { provider: None });
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    }
    .with_filter(filter());
    let provider = provider(endpoint)?;
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("nekton"))
        .with_location(false)
        .with_threads(false)
        .with_filter(tracing_subscriber::filter::filter_fn(exported));
    tracing_subscriber::registry().with(fmt).with(otel).init();
    EXPORTING.store(true, Ordering::Relaxed);
    tracing::info!(url = %traces_url(endpoint)?, "exporting spans over OTLP/HTTP");
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// What the OpenTelemetry layer sees: nekton's spans (they are DEBUG, so the logs leave them out
/// unless `NEKTON_LOG` asks for them, and without export they cost next to nothing), and its
/// events at INFO and above inside them (span events).
fn exported(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("nekton") && (meta.is_span() || *meta.level() <= tracing::Level::INFO)
}

/// The tracer provider: OTLP/HTTP JSON to `endpoint`, batched (the SDK's `OTEL_BSP_*`
/// variables apply), `service.name` = `nekton` unless `OTEL_SERVICE_NAME` says otherwise.
fn provider(endpoint: &str) -> anyhow::Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig as _;
    let url = traces_url(endpoint)?;
    // reqwest is built with rustls but without a default crypto provider (see cli::client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(10))
        .build()
        .context("setting up the OTLP span exporter")?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("nekton");
    }
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

#[cfg(test)]
mod tests {
    use super::TraceParent;

    #[test]
    fn traceparent_parses_what_the_w3c_allows_and_nothing_else() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(good).expect("the W3C example");
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(tp.span_id), "00f067aa0ba902b7");
        assert!(tp.sampled);
        assert_eq!(tp.to_string(), good);
        let unsampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled);
        // A later version may append fields.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
        for bad in [
            "",
            "garbage",
            // Uppercase hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Version ff, and version 00 with more after it.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz",
            // A later version whose extra part does not start with `-`.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01xyz",
            // Short ids, wrong separators, non-hex.
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            // Multibyte characters where the separators would be.
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?} must be refused");
        }
    }

    #[test]
    fn the_endpoint_is_a_base_url_that_gets_the_traces_path() {
        assert_eq!(
            super::traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            super::traces_url(" https://collector.example/otlp/ ").unwrap(),
            "https://collector.example/otlp/v1/traces"
        );
        for bad in ["127.0.0.1:4318", "grpc://127.0.0.1:4317", "not a url"] {
            let e = super::traces_url(bad).unwrap_err().to_string();
            assert!(
                e.contains("--otlp-endpoint") && e.contains("4318"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn random_trace_contexts_are_valid_and_distinct() {
        let a = TraceParent::random();
        let b = TraceParent::random();
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(TraceParent::parse(&a.to_string()), Some(a));
        assert_eq!(a.trace_id_hex().len(), 32);
    }
}
