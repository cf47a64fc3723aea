//! Server assembly: health, reflection, the authenticated
//! ConversationService, per-call tracing spans, and a graceful shutdown that
//! is bounded by a grace period.

use std::{future::Future, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tonic::{
    codegen::http,
    service::interceptor::InterceptedService,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;
use uuid::Uuid;

use super::{
    admission::{Admission, AdmissionLayer},
    auth::{Authenticator, TokenTable},
    health,
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

/// Serves on `listener` until `shutdown` completes, then shuts down within
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
/// the health probe, so that a pool busy with calls never reads as a
/// database that is down.
pub async fn serve(
    database: &DbSettings,
    settings: ServeSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let db = db::connect(database).await?;
    let probe = db::connect_reads(&DbSettings {
        max_connections: 1,
        ..database.clone()
    })
    .await?;
    let tokens = TokenTable::load(&db).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let refresher = tokio::spawn(tokens.clone().refresh(
        db.clone(),
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
        ConversationServiceServer::new(ConversationApi::new(db))
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
        .trace_fn(call_span)
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
    tracing::info!("stopped");
    result
}

/// One span per call, carrying the method and a request id: the caller's
/// `x-request-id` when it sent a sane one, a fresh UUID otherwise. The
/// fields are filled only when the span is recorded: with logs below INFO
/// a call costs no UUID and no formatting.
fn call_span(request: &http::Request<()>) -> tracing::Span {
    use tracing::field::{Empty, display};
    let span = tracing::info_span!("rpc", method = Empty, request_id = Empty);
    if span.is_disabled() {
        return span;
    }
    let sent = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()));
    span.record("method", display(request.uri().path()));
    match sent {
        Some(request_id) => span.record("request_id", display(request_id)),
        None => span.record("request_id", display(Uuid::new_v4())),
    };
    span
}
