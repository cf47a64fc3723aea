//! Admission control in front of every service but health and reflection:
//!
//! - **Load shedding.** At most `concurrency_limit` calls run at once; one
//!   more is refused at once with RESOURCE_EXHAUSTED (reason `OVERLOADED`)
//!   instead of waiting in a queue (tonic's own `concurrency_limit` queues
//!   without bound).
//! - **Deadlines.** A call still running after `request_timeout`, or after
//!   the caller's own deadline (`grpc-timeout`), is answered
//!   DEADLINE_EXCEEDED (reason `REQUEST_TIMEOUT` or `DEADLINE_EXCEEDED`); its
//!   transaction rolls back. The caller's deadline is honoured 1 ms early,
//!   so that this answer, the gRPC convention, wins over tonic's own timer,
//!   which would answer CANCELLED.
//! - **Shutdown.** Once shutdown has begun, a call that still arrives on an
//!   open connection is refused with UNAVAILABLE (reason `SHUTTING_DOWN`).
//! - **Panics.** A call whose handler panics is answered INTERNAL (reason
//!   `INTERNAL`) and logged, rather than its stream being reset with no
//!   status; the other calls on the connection go on either way.
//! - **ErrorInfo on every error.** tonic answers some calls itself (unknown
//!   method, message over the size limit, deadline passed) with a bare
//!   status; those get an ErrorInfo too, so every error carries a reason.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::FutureExt;
use tokio::sync::Semaphore;
use tonic::{Code, Status, body::Body, codegen::http};
use tower::{Layer, Service};

use crate::error::{Error, Rejection};

/// Paths that are never shed, timed out or refused: probes must keep
/// answering under overload and during shutdown.
const EXEMPT_PREFIXES: [&str; 3] = [
    "/grpc.health.v1.",
    "/grpc.reflection.v1.",
    "/grpc.reflection.v1alpha.",
];

/// Shared state of the layer; the server flips `shutting_down`.
#[derive(Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    request_timeout: Duration,
    shutting_down: AtomicBool,
}

impl Admission {
    pub fn new(concurrency_limit: usize, request_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(concurrency_limit)),
            request_timeout,
            shutting_down: AtomicBool::new(false),
        })
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }
}

#[derive(Clone)]
pub struct AdmissionLayer(pub Arc<Admission>);

impl<S> Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService {
            inner,
            admission: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AdmissionService<S> {
    inner: S,
    admission: Arc<Admission>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for AdmissionService<S>
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
        let path = request.uri().path();
        if EXEMPT_PREFIXES
            .iter()
            .any(|prefix| path.starts_with(prefix))
        {
            return Box::pin(inner.call(request));
        }
        if self.admission.shutting_down.load(Ordering::SeqCst) {
            return reject(Rejection::ShuttingDown);
        }
        let Ok(permit) = self.admission.permits.clone().try_acquire_owned() else {
            tracing::warn!("concurrency limit reached; shedding a call");
            return reject(Rejection::Overloaded);
        };
        let (timeout, expired) = match caller_timeout(request.headers()) {
            Some(deadline) if deadline < self.admission.request_timeout => (
                deadline.saturating_sub(Duration::from_millis(1)),
                Rejection::CallerDeadline,
            ),
            _ => (self.admission.request_timeout, Rejection::RequestTimeout),
        };
        Box::pin(async move {
            let _permit = permit;
            // Nothing the handler shares outlives the call but the database
            // pools, whose connections a dropped call already abandons.
            // `call` itself may panic before it returns a future, so it
            // runs inside the guarded one.
            let call = std::panic::AssertUnwindSafe(async move { inner.call(request).await })
                .catch_unwind();
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(result)) => result.map(with_error_info),
                Ok(Err(panic)) => Ok(Status::from(Error::Internal(format!(
                    "the handler panicked: {}",
                    crate::telemetry::panic_message(panic.as_ref())
                )))
                .into_http()),
                Err(_) => {
                    tracing::warn!(?timeout, reason = ?expired, "call ran past its deadline");
                    Ok(rejection_response(expired))
                }
            }
        })
    }
}

/// The caller's deadline, from `grpc-timeout`: up to 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`), as the gRPC HTTP/2 protocol defines it.
fn caller_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn reject<E: Send + 'static>(rejection: Rejection) -> BoxFuture<Result<http::Response<Body>, E>> {
    Box::pin(std::future::ready(Ok(rejection_response(rejection))))
}

fn rejection_response(rejection: Rejection) -> http::Response<Body> {
    Status::from(Error::Rejected(rejection)).into_http()
}

/// An error answered in the headers (a trailers-only response) without
/// details came from tonic itself, not from a handler: give it an ErrorInfo.
fn with_error_info(response: http::Response<Body>) -> http::Response<Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() == Code::Ok || !status.details().is_empty() {
        return response;
    }
    let rejection = match status.code() {
        // Handlers never answer OUT_OF_RANGE; tonic does, for a message over
        // the size limit. RESOURCE_EXHAUSTED is what other gRPC stacks say.
        Code::OutOfRange => Rejection::MessageTooLarge(status.message().to_owned()),
        Code::Unimplemented => Rejection::UnknownMethod,
        Code::Cancelled | Code::DeadlineExceeded => Rejection::Cancelled,
        _ => return response,
    };
    rejection_response(rejection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    #[test]
    fn bare_transport_errors_get_an_error_info() {
        let bare =
            Status::out_of_range("Error, decoded message length too large").into_http::<Body>();
        let mapped = Status::from_header_map(with_error_info(bare).headers()).unwrap();
        assert_eq!(mapped.code(), Code::ResourceExhausted);
        assert_eq!(
            mapped.get_error_details().error_info().unwrap().reason,
            "MESSAGE_TOO_LARGE"
        );

        let unknown = Status::unimplemented("").into_http::<Body>();
        let mapped = Status::from_header_map(with_error_info(unknown).headers()).unwrap();
        assert_eq!(
            mapped.get_error_details().error_info().unwrap().reason,
            "UNKNOWN_METHOD"
        );
    }

    #[test]
    fn grpc_timeout_values() {
        let parse = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().unwrap());
            caller_timeout(&headers)
        };
        assert_eq!(parse("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(caller_timeout(&http::HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn a_handler_that_panics_answers_internal_and_the_service_goes_on() {
        let handler = tower::service_fn(|request: http::Request<Body>| {
            // A panic in `call` itself, before there is a future to poll.
            if request.uri().path().ends_with("/PanicEarly") {
                panic!("boom before the future");
            }
            async move {
                if request.uri().path().ends_with("/Panic") {
                    panic!("boom");
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
            }
        });
        let mut service = AdmissionLayer(Admission::new(4, Duration::from_secs(5))).layer(handler);
        let call = |path: &str| {
            http::Request::builder()
                .uri(format!(
                    "http://localhost/helpdesk.v1.ConversationService{path}"
                ))
                .body(Body::empty())
                .unwrap()
        };
        for path in ["/Panic", "/PanicEarly"] {
            let response = service.call(call(path)).await.unwrap();
            let status = Status::from_header_map(response.headers()).expect("a gRPC status");
            assert_eq!(status.code(), Code::Internal, "{path}");
            assert_eq!(
                status.message(),
                "internal error",
                "the panic stays in the log"
            );
            assert_eq!(
                status.get_error_details().error_info().unwrap().reason,
                "INTERNAL"
            );
        }
        let after = service.call(call("/Get")).await.unwrap();
        assert_eq!(after.status(), http::StatusCode::OK);
        assert!(Status::from_header_map(after.headers()).is_none());
        assert_eq!(
            service.admission.permits.available_permits(),
            4,
            "the panicked call gave its permit back"
        );
    }

    #[test]
    fn handler_errors_keep_their_details() {
        let handler = Status::from(Error::ConversationNotFound).into_http::<Body>();
        let kept = Status::from_header_map(with_error_info(handler).headers()).unwrap();
        assert_eq!(kept.code(), Code::NotFound);
        assert_eq!(
            kept.get_error_details().error_info().unwrap().reason,
            "CONVERSATION_NOT_FOUND"
        );
    }
}
