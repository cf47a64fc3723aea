//! Process-wide logs and traces, set up once by `main`.
//!
//! - Logs go to stderr, as text or as JSON lines (`--log-format`), filtered
//!   by `--log-filter`. The fields of the call's span, the request id among
//!   them, are on every line logged during a call.
//! - A panic is logged as an ERROR event in the same format, with its
//!   message and place (and a backtrace when `RUST_BACKTRACE` asks for
//!   one), in place of the default hook's unstructured line, which would
//!   break a stream of JSON lines.
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
    std::panic::set_hook(Box::new(log_panic));
    Ok(Telemetry { traces })
}

/// The panic hook [`init`] installs. During a call the event carries the
/// call's span, so its request id and method.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let location = info
        .location()
        .map(|at| format!("{}:{}:{}", at.file(), at.line(), at.column()));
    let backtrace = std::backtrace::Backtrace::capture();
    let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
        .then(|| backtrace.to_string());
    tracing::error!(
        panic.message = panic_message(info.payload()),
        panic.location = location.as_deref().unwrap_or("unknown"),
        panic.backtrace = backtrace,
        "panicked"
    );
}

/// What a panic said, when it said it with a string.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the child process of `a_panic_is_one_json_log_line_with_its_place`.
    const PANIC_CHILD: &str = "CONVERSATION_SERVICE_TEST_PANIC_CHILD";

    /// The hook is process-wide, so the panic happens in a child process:
    /// this test binary run again for this test alone, which sets up
    /// logging as `main` does and panics.
    #[test]
    fn a_panic_is_one_json_log_line_with_its_place() {
        if std::env::var_os(PANIC_CHILD).is_some() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let _telemetry = runtime
                .block_on(async { init("info", LogFormat::Json) })
                .unwrap();
            let line = line!() + 1;
            panic!("boom at line {line}");
        }
        let name = "telemetry::tests::a_panic_is_one_json_log_line_with_its_place";
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads", "1"])
            .env(PANIC_CHILD, "1")
            .env_remove("RUST_BACKTRACE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .output()
            .unwrap();
        assert!(!child.status.success(), "the child panicked");
        let stderr = String::from_utf8(child.stderr).unwrap();
        assert!(
            !stderr.contains("panicked at"),
            "the default hook's line is not printed: {stderr}"
        );
        let events: Vec<serde_json::Value> = stderr
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .filter(|event: &serde_json::Value| event["fields"]["message"] == "panicked")
            .collect();
        assert_eq!(events.len(), 1, "{stderr}");
        let fields = &events[0]["fields"];
        assert_eq!(events[0]["level"], "ERROR");
        let message = fields["panic.message"].as_str().unwrap();
        let line = message.strip_prefix("boom at line ").unwrap();
        assert_eq!(
            fields["panic.location"],
            format!("src/telemetry.rs:{line}:13"),
            "{stderr}"
        );
    }

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
