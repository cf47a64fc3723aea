//! Server assembly: health, reflection, the authenticated
//! ConversationService, per-call tracing spans, and a graceful shutdown that
//! is bounded by a grace period.

use std::{future::Future, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;

use super::{
    admission::{Admission, AdmissionLayer},
    auth::{Authenticator, TokenTable},
    health,
    metrics::{self, Metrics},
    observability::ObservabilityLayer,
    service::ConversationApi,
};
use crate::db::{self, DbSettings};
use crate::proto::{
    FILE_DESCRIPTOR_SET, v1::conversation_service_server::ConversationServiceServer,
};

/// How the server behaves over time.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// After shutdown begins, how long calls in flight may take before the
    /// remaining connections are closed.
    pub shutdown_grace: Duration,
    /// How often verified tokens are reloaded from the database.
    pub token_refresh_interval: Duration,
    /// How often the database is pinged for health.
    pub health_check_interval: Duration,
    /// Calls running at once before more are shed with RESOURCE_EXHAUSTED.
    pub concurrency_limit: usize,
    /// Longest a call may run before it is answered DEADLINE_EXCEEDED.
    pub request_timeout: Duration,
    /// Largest request message accepted, in bytes.
    pub max_message_size: usize,
    /// HTTP/2 PING interval on idle connections, and how long to wait for the
    /// answer before closing the connection.
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(10),
            token_refresh_interval: Duration::from_secs(1),
            health_check_interval: Duration::from_secs(1),
            concurrency_limit: 1024,
            request_timeout: Duration::from_secs(30),
            max_message_size: 4 * 1024 * 1024,
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// Where the server listens: the gRPC API, and optionally the Prometheus
/// metrics (`GET /metrics`). A bare listener converts into one with no
/// metrics.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub metrics: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(grpc: TcpListener) -> Self {
        Self {
            grpc,
            metrics: None,
        }
    }
}

/// Serves on the listeners until `shutdown` completes, then shuts down within
/// the grace period:
///
/// 1. health turns NOT_SERVING and every new call is answered UNAVAILABLE
///    (`SHUTTING_DOWN`) while connections stay open, for a quarter of the
///    grace period (at most 1 s), so that clients and load balancers move on
///    without a connection reset under a call;
/// 2. then GOAWAY: calls in flight finish, connections close;
/// 3. when the grace period is over, whatever is still open (a health Watch
///    never ends by itself) is closed and `serve` returns.
///
/// It opens its own pools: one for the calls, and a one-connection pool for
/// the background work (the health probe and token reloads), so that a pool
/// busy with calls never reads as a database that is down, and the calls'
/// pool gauges count calls alone.
pub async fn serve(
    database: &DbSettings,
    settings: ServeSettings,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Listeners {
        grpc: listener,
        metrics: metrics_listener,
    } = listeners.into();
    let db = db::connect(&DbSettings {
        // A second past the request timeout: the call's deadline always
        // comes first (at the request timeout itself they race).
        lock_timeout: Some(settings.request_timeout + Duration::from_secs(1)),
        ..database.clone()
    })
    .await?;
    let probe = db::connect_reads(&DbSettings {
        max_connections: 1,
        ..database.clone()
    })
    .await?;
    let tokens = TokenTable::load(&db).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics = Metrics::new(
        Some(db.clone()),
        &[
            FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ],
    );
    // Scrapes keep working through the shutdown, until `serve` returns.
    let metrics_server =
        metrics_listener.map(|listener| tokio::spawn(metrics::serve(metrics.clone(), listener)));
    // Reloads share the probe's connection: the calls' pool then serves
    // only calls, which is what its metrics (waiters above all) describe.
    let refresher = tokio::spawn(tokens.clone().refresh(
        probe.clone(),
        settings.token_refresh_interval,
        stop_rx.clone(),
    ));

    let (reporter, health_service) = tonic_health::server::health_reporter();
    health::report(&reporter, ServingStatus::Serving).await;
    let watcher = tokio::spawn(health::watch_database(
        probe,
        reporter.clone(),
        settings.health_check_interval,
        stop_rx,
    ));

    // Health and the google.rpc error details are described too, so grpcurl
    // can call Health/Check and print BadRequest violations with no proto
    // files at hand.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    // Only ConversationService is behind the interceptor: health and
    // reflection stay open.
    let conversations = InterceptedService::new(
        ConversationServiceServer::new(ConversationApi::new(db, metrics.clone()))
            .max_decoding_message_size(settings.max_message_size),
        Authenticator::new(tokens),
    );
    let admission = Admission::new(settings.concurrency_limit, settings.request_timeout);

    let (began_tx, began_rx) = tokio::sync::oneshot::channel::<()>();
    let drain = (settings.shutdown_grace / 4).min(Duration::from_secs(1));
    let signal = {
        let reporter = reporter.clone();
        let admission = admission.clone();
        async move {
            shutdown.await;
            tracing::info!("shutdown started; health NOT_SERVING");
            admission.begin_shutdown();
            let _ = stop_tx.send(true);
            health::report(&reporter, ServingStatus::NotServing).await;
            let _ = began_tx.send(());
            tokio::time::sleep(drain).await;
            tracing::info!("closing connections (GOAWAY)");
        }
    };
    let local_addr = listener.local_addr()?;
    // tonic applies its own tcp_nodelay and TCP keepalive only to listeners
    // it binds; this one was handed in. Without TCP_NODELAY a response of
    // more than one segment waits out the peer's delayed ACK (~40 ms).
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(settings.http2_keepalive_interval));
    let server = Server::builder()
        .http2_keepalive_interval(Some(settings.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(settings.http2_keepalive_timeout))
        // Outermost first: every call, shed or not, is observed.
        .layer(ObservabilityLayer(metrics))
        .layer(AdmissionLayer(admission))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(conversations)
        .serve_with_incoming_shutdown(incoming, signal);
    tracing::info!(%local_addr, "serving");

    // tonic's graceful shutdown waits for every open stream, and a health
    // Watch never ends by itself: bound the wait.
    let grace = settings.shutdown_grace;
    let grace_over = async move {
        if began_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        result = server => result.map_err(anyhow::Error::from),
        () = grace_over => {
            tracing::warn!(?grace, "grace period over; closing the remaining connections");
            Ok(())
        }
    };
    refresher.abort();
    watcher.abort();
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    tracing::info!("stopped");
    result
}
