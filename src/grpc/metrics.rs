//! Prometheus metrics, named as go-grpc-prometheus names them so that the
//! dashboards and alerts on-call already has work unchanged:
//!
//! - `grpc_server_started_total{grpc_type,grpc_service,grpc_method}`
//! - `grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}`
//! - `grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}`
//!   (a histogram with go-grpc-prometheus's default buckets)
//!
//! and beside them the database pool (`db_pool_*`), conversation writes
//! that ran again in a transaction because their row was changed or held
//! (`db_writes_retried_total{write}`), and authentication failures by
//! reason (`auth_failures_total{reason}`; the reason is the ErrorInfo
//! reason the caller got, never anything of the token).
//!
//! Each server owns its own registry, so servers in one process (tests,
//! replicas) never mix their counts.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{
        TypedMetric,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
        histogram::Histogram,
    },
    registry::Registry,
};
use prost::Message;
use tokio::net::TcpListener;

use crate::db::Db;

/// go-grpc-prometheus's default `grpc_server_handling_seconds` buckets.
const HANDLING_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Which method a call is, as go-grpc-prometheus labels it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
}

/// The labels of every path that is not a served method. They share one
/// series, so that callers probing random paths cannot grow the registry.
const UNKNOWN: &str = "unknown";

/// The methods described by `descriptor_sets` (encoded
/// `FileDescriptorSet`s), by request path, with their gRPC type.
fn methods_of(descriptor_sets: &[&[u8]]) -> Vec<(String, MethodLabels)> {
    let mut methods = Vec::new();
    for encoded in descriptor_sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*encoded) else {
            continue;
        };
        for file in set.file {
            for service in &file.service {
                let service_name = match file.package() {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                for method in &service.method {
                    let grpc_type = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => "unary",
                        (true, false) => "client_stream",
                        (false, true) => "server_stream",
                        (true, true) => "bidi_stream",
                    };
                    methods.push((
                        format!("/{service_name}/{}", method.name()),
                        MethodLabels {
                            grpc_type,
                            grpc_service: service_name.clone(),
                            grpc_method: method.name().to_owned(),
                        },
                    ));
                }
            }
        }
    }
    methods
}

/// One method's series, looked up once at start, so that a call costs a
/// map lookup by path and atomic adds, with no label allocation.
pub struct MethodMetrics {
    started: Counter,
    /// By `tonic::Code` number: every code is pre-registered at zero, as
    /// go-grpc-prometheus's `InitializeMetrics` does, so rates and alerts
    /// work before the first error.
    handled: [Counter; 17],
    handling_seconds: Histogram,
}

impl MethodMetrics {
    pub fn started(&self) {
        self.started.inc();
    }

    pub fn handled(&self, code: tonic::Code, seconds: f64) {
        self.handled[code as usize].inc();
        self.handling_seconds.observe(seconds);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    write: &'static str,
}

/// `db_writes_retried_total{write}`, read from the storage layer's own
/// counts (`Db::retried_writes`) at each scrape.
#[derive(Debug)]
struct WriteRetriesCollector(Db);

impl Collector for WriteRetriesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let retried = self.0.retried_writes();
        let mut family = encoder.encode_descriptor(
            "db_writes_retried",
            "Conversation writes that ran alone, found their row changed or held (a create: its customer's or workspace's row), and ran again in a transaction that waits.",
            None,
            ConstCounter::<u64>::TYPE,
        )?;
        for (write, count) in [("update", retried.updates), ("create", retried.creates)] {
            ConstCounter::new(count).encode(family.encode_family(&WriteLabels { write })?)?;
        }
        Ok(())
    }
}

/// The server's metrics. Cheap to clone; every clone counts into the same
/// registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    methods: HashMap<String, Arc<MethodMetrics>>,
    unknown_method: Arc<MethodMetrics>,
    auth_failures: Family<AuthLabels, Counter>,
    pool_connections: Family<PoolLabels, Gauge>,
    pool_max: Gauge,
    pool_waiters: Gauge,
    /// Calls inside the storage layer right now (see [`Metrics::database_call`]).
    database_calls: AtomicI64,
    db: Option<Db>,
}

impl Metrics {
    /// Metrics for the methods `descriptor_sets` describe, whose pool
    /// gauges read `db`'s pool at each scrape.
    pub fn new(db: Option<Db>, descriptor_sets: &[&[u8]]) -> Self {
        let mut registry = Registry::default();
        let started = Family::<MethodLabels, Counter>::default();
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server",
            started.clone(),
        );
        let handled = Family::<HandledLabels, Counter>::default();
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            handled.clone(),
        );
        let handling_seconds: Family<MethodLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(HANDLING_BUCKETS));
        registry.register(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server",
            handling_seconds.clone(),
        );
        let series = |labels: &MethodLabels| {
            Arc::new(MethodMetrics {
                started: started.get_or_create(labels).clone(),
                handled: std::array::from_fn(|code| {
                    handled
                        .get_or_create(&HandledLabels {
                            grpc_type: labels.grpc_type,
                            grpc_service: labels.grpc_service.clone(),
                            grpc_method: labels.grpc_method.clone(),
                            grpc_code: code_name(tonic::Code::from_i32(code as i32)),
                        })
                        .clone()
                }),
                handling_seconds: handling_seconds.get_or_create(labels).clone(),
            })
        };
        let methods = methods_of(descriptor_sets)
            .into_iter()
            .map(|(path, labels)| (path, series(&labels)))
            .collect();
        let unknown_method = series(&MethodLabels {
            grpc_type: "unary",
            grpc_service: UNKNOWN.to_owned(),
            grpc_method: UNKNOWN.to_owned(),
        });
        let auth_failures = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Calls refused by authentication or authorization, by ErrorInfo reason",
            auth_failures.clone(),
        );
        let pool_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Open database connections, by state (in_use or idle)",
            pool_connections.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "db_pool_max_connections",
            "Most connections the database pool may open",
            pool_max.clone(),
        );
        let pool_waiters = Gauge::default();
        registry.register(
            "db_pool_waiters",
            "Calls in the storage layer that hold no database connection: waiting for one",
            pool_waiters.clone(),
        );
        if let Some(db) = &db {
            registry.register_collector(Box::new(WriteRetriesCollector(db.clone())));
        }
        Self {
            inner: Arc::new(Inner {
                registry,
                methods,
                unknown_method,
                auth_failures,
                pool_connections,
                pool_max,
                pool_waiters,
                database_calls: AtomicI64::new(0),
                db,
            }),
        }
    }

    /// The series of the method at `path`, or the shared `unknown` ones.
    pub fn method(&self, path: &str) -> Arc<MethodMetrics> {
        self.inner
            .methods
            .get(path)
            .unwrap_or(&self.inner.unknown_method)
            .clone()
    }

    pub fn auth_failed(&self, reason: &str) {
        self.inner
            .auth_failures
            .get_or_create(&AuthLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Marks a call as inside the storage layer until the guard drops. Every
    /// call holds at most one connection at a time, so the calls inside
    /// minus the connections in use are the calls waiting for a connection
    /// (or, for a moment, between two of their statements): sqlx's pool does
    /// not count its waiters itself.
    pub fn database_call(&self) -> DatabaseCall {
        self.inner.database_calls.fetch_add(1, Ordering::Relaxed);
        DatabaseCall(self.inner.clone())
    }

    /// The registry in the text exposition format, pool gauges read now.
    pub fn render(&self) -> String {
        if let Some(db) = &self.inner.db {
            let pool = db.pool_stats();
            let in_use = i64::from(pool.open) - i64::from(pool.idle);
            let gauge = |state| {
                self.inner
                    .pool_connections
                    .get_or_create(&PoolLabels { state })
            };
            gauge("in_use").set(in_use);
            gauge("idle").set(i64::from(pool.idle));
            self.inner.pool_max.set(i64::from(pool.max));
            let inside = self.inner.database_calls.load(Ordering::Relaxed);
            self.inner.pool_waiters.set((inside - in_use).max(0));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.inner.registry);
        text
    }
}

/// See [`Metrics::database_call`].
pub struct DatabaseCall(Arc<Inner>);

impl Drop for DatabaseCall {
    fn drop(&mut self) {
        self.0.database_calls.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The code's name as grpc-go spells it, which is what go-grpc-prometheus
/// puts in `grpc_code`.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(metrics: Metrics, listener: TcpListener) -> std::io::Result<()> {
    let local_addr: SocketAddr = listener.local_addr()?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
                    .into_response()
            }
        }),
    );
    tracing::info!(%local_addr, "serving metrics on /metrics");
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Metrics {
        Metrics::new(
            None,
            &[
                crate::proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ],
        )
    }

    #[test]
    fn methods_and_their_types_come_from_the_descriptors() {
        let methods: HashMap<_, _> = methods_of(&[
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ])
        .into_iter()
        .collect();
        let get = &methods["/helpdesk.v1.ConversationService/GetConversation"];
        assert_eq!(get.grpc_service, "helpdesk.v1.ConversationService");
        assert_eq!(get.grpc_method, "GetConversation");
        assert_eq!(get.grpc_type, "unary");
        assert_eq!(
            methods["/grpc.health.v1.Health/Watch"].grpc_type,
            "server_stream"
        );
        assert_eq!(methods["/grpc.health.v1.Health/Check"].grpc_type, "unary");
        assert_eq!(methods.len(), 4 + 2);
    }

    #[test]
    fn exposition_uses_go_grpc_prometheus_names() {
        let metrics = served();
        let get = metrics.method("/helpdesk.v1.ConversationService/GetConversation");
        get.started();
        get.handled(tonic::Code::NotFound, 0.003);
        metrics.auth_failed("TOKEN_MISSING");
        let text = metrics.render();
        let labels = r#"grpc_type="unary",grpc_service="helpdesk.v1.ConversationService",grpc_method="GetConversation""#;
        for line in [
            format!("grpc_server_started_total{{{labels}}} 1"),
            format!(r#"grpc_server_handled_total{{{labels},grpc_code="NotFound"}} 1"#),
            // Every code of every method is there from the start.
            format!(r#"grpc_server_handled_total{{{labels},grpc_code="Unauthenticated"}} 0"#),
            format!(r#"grpc_server_handling_seconds_bucket{{le="0.005",{labels}}} 1"#),
            r#"auth_failures_total{reason="TOKEN_MISSING"} 1"#.to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn unknown_paths_share_one_series() {
        let metrics = served();
        for path in ["/nope.Service/Method", "/x/y", "garbage"] {
            metrics
                .method(path)
                .handled(tonic::Code::Unimplemented, 0.0);
        }
        let text = metrics.render();
        assert!(
            text.lines().any(|l| l == r#"grpc_server_handled_total{grpc_type="unary",grpc_service="unknown",grpc_method="unknown",grpc_code="Unimplemented"} 3"#),
            "{text}"
        );
        assert!(!text.contains("nope"), "{text}");
    }

    #[test]
    fn waiters_are_calls_inside_without_a_connection() {
        let metrics = served();
        let first = metrics.database_call();
        let second = metrics.database_call();
        assert_eq!(metrics.inner.database_calls.load(Ordering::Relaxed), 2);
        drop(first);
        drop(second);
        assert_eq!(metrics.inner.database_calls.load(Ordering::Relaxed), 0);
    }
}
