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
        let call = Call::begin(&request, self.metrics.clone());
        // Entered while `call` runs too: the auth interceptor logs there.
        let future = call.span.in_scope(|| inner.call(request));
        let span = call.span.clone();
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

/// One call in flight: ends when its status is known.
struct Call {
    method: Arc<MethodMetrics>,
    request_id: String,
    span: tracing::Span,
    started: Instant,
    metrics: Metrics,
}

impl Call {
    fn begin<B>(request: &http::Request<B>, metrics: Metrics) -> Self {
        let path = request.uri().path();
        let (service, method_name) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        let request_id = request_id(request.headers());
        let span = tracing::info_span!(
            "rpc",
            otel.name = path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method_name,
            %request_id,
            trace_id = tracing::field::Empty,
            rpc.grpc.status_code = tracing::field::Empty,
        );
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
        }
    }

    /// Echoes the request id; a trailers-only response is an error known
    /// now, any other's status comes in the trailers at the end of the body.
    fn respond(self, mut response: http::Response<Body>) -> http::Response<Body> {
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
                    call: Some(self),
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

    fn end(self, code: Code) {
        let seconds = self.started.elapsed().as_secs_f64();
        self.method.handled(code, seconds);
        self.span.record("rpc.grpc.status_code", code as i32);
        tracing::debug!(parent: &self.span, ?code, seconds, "call finished");
    }
}

/// A response body that ends its call when the trailers (and with them the
/// status) go out, or, if the body is dropped first, as CANCELLED: the
/// client went away.
struct ObservedBody {
    inner: Body,
    call: Option<Call>,
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
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|trailers| {
                Status::from_header_map(trailers).map_or(Code::Ok, |status| status.code())
            }),
            Poll::Ready(Some(Err(status))) => Some(status.code()),
            Poll::Ready(None) => Some(Code::Ok),
            Poll::Pending => None,
        };
        if let Some(code) = ended
            && let Some(call) = self.call.take()
        {
            call.end(code);
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

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.end(Code::Cancelled);
        }
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
}
