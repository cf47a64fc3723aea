//! What every call leaves behind for whoever runs the service, added by one
//! tower layer outside all others:
//!
//! - a **request id**: the caller's `x-request-id` when it is well-formed,
//!   a fresh UUID otherwise. It is echoed in the response metadata, is a
//!   field of the call's span (so every log line of the call carries it),
//!   and an error's details carry it as `google.rpc.RequestInfo`;
//! - a **span** per call, the child of the caller's W3C `traceparent` when
//!   one came, exported by OTLP when an exporter is installed
//!   (see `crate::telemetry`);
//! - the go-grpc-prometheus **metrics**, and authentication failures by
//!   reason.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body as HttpBody, Frame, SizeHint};
use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::{
    Code, Status,
    body::Body,
    codegen::{Bytes, http},
};
use tonic_types::{ErrorDetail, RequestInfo, StatusExt};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use super::metrics::{MethodMetrics, Metrics};

/// The metadata key a request id travels in, both ways.
pub const REQUEST_ID_KEY: &str = "x-request-id";

/// The caller's request id if it is one we can echo and log safely: 1 to
/// 128 visible ASCII characters. Anything else is replaced, not rejected, so
/// a client with odd ids still gets served.
pub fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID_KEY)
        .and_then(|value| value.to_str().ok())
        .filter(|value| {
            !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::new_v4().to_string())
}

#[derive(Clone)]
pub struct ObservabilityLayer(pub Metrics);

impl<S> Layer<S> for ObservabilityLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observed {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    metrics: Metrics,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for Observed<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone takes the place of the service that was polled ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let mut call = Call::begin(&request, self.metrics.clone());
        // Entered while `call` runs too: the auth interceptor logs there.
        let future = call.span.in_scope(|| inner.call(request));
        let span = call.span.clone();
        // If this future is dropped before an answer (the client reset the
        // stream, the connection closed), dropping `call` ends it CANCELLED.
        Box::pin(
            async move {
                match future.await {
                    Ok(response) => Ok(call.respond(response)),
                    Err(err) => {
                        call.end(Code::Unknown);
                        Err(err)
                    }
                }
            }
            .instrument(span),
        )
    }
}

/// One call in flight. It ends once, when its status is known, or as
/// CANCELLED when it is dropped before that.
struct Call {
    method: Arc<MethodMetrics>,
    request_id: String,
    span: tracing::Span,
    started: Instant,
    metrics: Metrics,
    ended: bool,
}

impl Call {
    fn begin<B>(request: &http::Request<B>, metrics: Metrics) -> Self {
        let path = request.uri().path();
        let request_id = request_id(request.headers());
        // Log lines show the method and the request id; the attributes of
        // OpenTelemetry's gRPC conventions are recorded only for export, so
        // text logs stay short and a call without export formats less.
        let span = tracing::info_span!(
            "rpc",
            method = path,
            %request_id,
            trace_id = tracing::field::Empty,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            rpc.system = tracing::field::Empty,
            rpc.service = tracing::field::Empty,
            rpc.method = tracing::field::Empty,
        );
        if crate::telemetry::exporting() {
            let name = path.trim_start_matches('/');
            let (service, method_name) = name.split_once('/').unwrap_or((name, ""));
            span.record("otel.name", name);
            span.record("otel.kind", "server");
            span.record("rpc.system", "grpc");
            span.record("rpc.service", service);
            span.record("rpc.method", method_name);
        }
        if request.headers().contains_key("traceparent") {
            let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
            let remote = parent.span().span_context().clone();
            if remote.is_valid() {
                span.record("trace_id", tracing::field::display(remote.trace_id()));
                // Fails only when no OpenTelemetry layer is installed, which
                // is the no-export case: nothing to join then.
                let _ = span.set_parent(parent);
            }
        }
        let method = metrics.method(path);
        method.started();
        Self {
            method,
            request_id,
            span,
            started: Instant::now(),
            metrics,
            ended: false,
        }
    }

    /// Echoes the request id; a trailers-only response is an error known
    /// now, any other's status comes in the trailers at the end of the body.
    fn respond(mut self, mut response: http::Response<Body>) -> http::Response<Body> {
        if let Ok(value) = http::HeaderValue::from_str(&self.request_id) {
            response.headers_mut().insert(REQUEST_ID_KEY, value);
        }
        match Status::from_header_map(response.headers()) {
            Some(status) => {
                let status = self.with_request_info(status);
                // `add_header` fails only for a message that cannot be a
                // header value, and this one already was one.
                let _ = status.add_header(response.headers_mut());
                self.end(status.code());
                response
            }
            None => response.map(|body| {
                Body::new(ObservedBody {
                    inner: body,
                    call: self,
                })
            }),
        }
    }

    /// The error with `RequestInfo` added to its details; authentication
    /// failures are counted here, by the reason the caller is told.
    fn with_request_info(&self, status: Status) -> Status {
        if status.code() == Code::Ok {
            return status;
        }
        let mut details = status.get_error_details_vec();
        if matches!(
            status.code(),
            Code::Unauthenticated | Code::PermissionDenied
        ) && let Some(ErrorDetail::ErrorInfo(info)) = details
            .iter()
            .find(|detail| matches!(detail, ErrorDetail::ErrorInfo(_)))
        {
            self.metrics.auth_failed(&info.reason);
        }
        details.push(ErrorDetail::RequestInfo(RequestInfo::new(
            self.request_id.clone(),
            String::new(),
        )));
        Status::with_error_details_vec(status.code(), status.message(), details)
    }

    fn end(&mut self, code: Code) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let seconds = self.started.elapsed().as_secs_f64();
        self.method.handled(code, seconds);
        self.span.record("rpc.grpc.status_code", code as i32);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        tracing::debug!(parent: &self.span, ?code, seconds, "call finished");
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.end(Code::Cancelled);
    }
}

/// The codes OpenTelemetry's gRPC conventions mark a server span failed
/// with: the server's fault, not the caller's.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// A response body that ends its call when the trailers (and with them the
/// status) go out, or, if the body is dropped first, as CANCELLED: the
/// client went away.
struct ObservedBody {
    inner: Body,
    call: Call,
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            // Only the code is needed: no Status (and its details) is built.
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|trailers| {
                trailers
                    .get("grpc-status")
                    .map_or(Code::Unknown, |code| Code::from_bytes(code.as_bytes()))
            }),
            Poll::Ready(Some(Err(status))) => Some(status.code()),
            // A gRPC response that ends without a status is UNKNOWN.
            Poll::Ready(None) => Some(Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = ended {
            self.call.end(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(REQUEST_ID_KEY, value.parse().unwrap());
        headers
    }

    #[test]
    fn well_formed_request_ids_are_kept_and_others_replaced() {
        assert_eq!(request_id(&headers("req-42")), "req-42");
        let long = "a".repeat(128);
        assert_eq!(request_id(&headers(&long)), long);
        for bad in ["", "has space", &"a".repeat(129)] {
            let replaced = request_id(&headers(bad));
            assert!(Uuid::parse_str(&replaced).is_ok(), "{bad:?} -> {replaced}");
        }
        assert!(Uuid::parse_str(&request_id(&http::HeaderMap::new())).is_ok());
    }

    fn handled_line(code: &str, count: u32) -> String {
        format!(
            r#"grpc_server_handled_total{{grpc_type="unary",grpc_service="helpdesk.v1.ConversationService",grpc_method="GetConversation",grpc_code="{code}"}} {count}"#
        )
    }

    fn get_request() -> http::Request<()> {
        http::Request::builder()
            .uri("/helpdesk.v1.ConversationService/GetConversation")
            .body(())
            .unwrap()
    }

    #[test]
    fn a_call_dropped_before_its_answer_ends_cancelled() {
        let metrics = Metrics::new(None, &[crate::proto::FILE_DESCRIPTOR_SET]);
        let never = tower::service_fn(|_: http::Request<()>| {
            std::future::pending::<Result<http::Response<Body>, std::convert::Infallible>>()
        });
        let mut service = ObservabilityLayer(metrics.clone()).layer(never);
        let in_flight = service.call(get_request());
        let text = metrics.render();
        assert!(text.contains(&handled_line("Canceled", 0)), "{text}");
        drop(in_flight);
        let text = metrics.render();
        assert!(text.contains(&handled_line("Canceled", 1)), "{text}");
    }

    #[tokio::test]
    async fn the_status_in_the_trailers_ends_the_call_once() {
        use http_body_util::BodyExt;
        let metrics = Metrics::new(None, &[crate::proto::FILE_DESCRIPTOR_SET]);
        let answer = tower::service_fn(|_: http::Request<()>| async {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "5".parse().unwrap());
            let body = http_body_util::StreamBody::new(tokio_stream::iter([
                Ok::<_, Status>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                Ok(Frame::trailers(trailers)),
            ]));
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::new(body)))
        });
        let mut service = ObservabilityLayer(metrics.clone()).layer(answer);
        let response = service.call(get_request()).await.unwrap();
        assert!(response.headers().contains_key(REQUEST_ID_KEY));
        let body = response.into_body().collect().await.unwrap();
        assert_eq!(body.trailers().unwrap()["grpc-status"], "5");
        let text = metrics.render();
        assert!(text.contains(&handled_line("NotFound", 1)), "{text}");
        assert!(text.contains(&handled_line("Canceled", 0)), "{text}");
    }
}
