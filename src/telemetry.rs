//! Process-wide logs and traces, set up once by `main`.
//!
//! - Logs go to stderr, as text or as JSON lines (`--log-format`), filtered
//!   by `--log-filter`. The fields of the call's span, the request id among
//!   them, are on every line logged during a call.
//! - Spans are exported by OTLP over gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, configured by the
//!   standard `OTEL_*` variables; with neither set, nothing is exported and
//!   no exporter runs.

use std::{
    ffi::OsString,
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{
    EnvFilter, Layer, filter::LevelFilter, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::config::LogFormat;

const SERVICE_NAME: &str = "conversation-service";

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

/// Whether spans are exported (set once by [`init`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans go out by OTLP: callers record export-only span attributes
/// only then.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The longest the exit waits for buffered spans: a collector that does not
/// answer must not hold the process past its shutdown grace.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

impl Telemetry {
    /// Sends the spans still buffered, waiting at most `FLUSH_TIMEOUT` (2 s).
    /// Call before the process exits.
    pub async fn shutdown(self) {
        let Some(provider) = self.traces else {
            return;
        };
        // The flush blocks its thread; the exporter's channel needs the
        // runtime's workers meanwhile.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        if let Ok(Err(err)) = flushed {
            eprintln!("warning: could not flush traces: {err}");
        }
    }
}

/// Whether the environment asks for OTLP export: an endpoint is set.
pub fn otlp_requested() -> bool {
    otlp_requested_by(|name| std::env::var_os(name))
}

fn otlp_requested_by(var: impl Fn(&str) -> Option<OsString>) -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| var(name).is_some_and(|value| !value.is_empty()))
}

/// Installs the global subscriber. Must run inside the Tokio runtime: the
/// OTLP exporter's gRPC channel lives on it.
pub fn init(filter: &str, format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => logs.json().with_current_span(true).boxed(),
    }
    .with_filter(filter);

    let traces = if otlp_requested() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(SERVICE_NAME);
        }
        Some(
            SdkTracerProvider::builder()
                .with_resource(resource.build())
                .with_batch_exporter(exporter)
                .build(),
        )
    } else {
        None
    };
    // Spans are exported at INFO and above whatever the log filter says:
    // quieting the logs must not cut the traces.
    let export = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SERVICE_NAME))
            .with_filter(LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(export)
        .try_init()?;
    EXPORTING.store(traces.is_some(), Ordering::Relaxed);
    Ok(Telemetry { traces })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_only_when_an_endpoint_is_set() {
        let with = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, OsString)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), OsString::from(v)))
                .collect();
            otlp_requested_by(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        };
        assert!(!with(&[]));
        assert!(!with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]));
        assert!(!with(&[("OTEL_SERVICE_NAME", "x")]));
        assert!(with(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4317"
        )]));
        assert!(with(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4317"
        )]));
    }
}
