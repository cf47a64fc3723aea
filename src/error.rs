//! The one error type of the service and its one mapping to `tonic::Status`.
//!
//! Callers branch on `ErrorInfo.reason`, so reasons are stable. Internal and
//! database errors are logged here with their context and reach the caller
//! only as a plain message: no SQL, no paths, no driver text.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::{Violations, auth::Ability};

/// The `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "conversation-service";

/// At most this many violations go into one BadRequest. Details travel in a
/// trailer, and gRPC clients refuse metadata past 8 to 16 KiB; a request with
/// thousands of bad tags must still get its INVALID_ARGUMENT.
pub const MAX_VIOLATIONS: usize = 25;

/// Why a call was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `authorization: Bearer` metadata.
    Missing,
    /// Not the shape or checksum of a token this service issues.
    Malformed,
    /// Well-formed, but unknown or revoked (the two are not told apart).
    Invalid,
}

/// A call refused before or around its handler: by admission control, by
/// tonic's transport, or by the codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// More calls in progress than `--concurrency-limit`.
    Overloaded,
    /// Shutdown has begun.
    ShuttingDown,
    /// The handler ran past `--request-timeout`.
    RequestTimeout,
    /// The handler ran past the caller's own deadline (`grpc-timeout`).
    CallerDeadline,
    /// The request is larger than `--max-message-size` (tonic's message).
    MessageTooLarge(String),
    /// The request is not valid protobuf (the decoder's message).
    MalformedMessage(String),
    /// No such method on this server.
    UnknownMethod,
    /// The caller's deadline passed or it cancelled the call.
    Cancelled,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0:?}")]
    InvalidArgument(Violations),
    #[error("conversation not found")]
    ConversationNotFound,
    #[error("etag does not match the stored conversation")]
    EtagMismatch,
    #[error("request_id was used with a different conversation")]
    RequestIdReused,
    #[error("unauthenticated: {0:?}")]
    Unauthenticated(AuthFailure),
    #[error("token lacks the {0} ability")]
    AbilityMissing(Ability),
    #[error("call rejected: {0:?}")]
    Rejected(Rejection),
    /// The database did not answer; the text is for the log only.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected database answer; the text is for the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Violations> for Error {
    fn from(violations: Violations) -> Self {
        Error::InvalidArgument(violations)
    }
}

impl Error {
    /// The stable `ErrorInfo.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "INVALID_ARGUMENT",
            Error::ConversationNotFound => "CONVERSATION_NOT_FOUND",
            Error::EtagMismatch => "ETAG_MISMATCH",
            Error::RequestIdReused => "REQUEST_ID_REUSED",
            Error::Unauthenticated(AuthFailure::Missing) => "TOKEN_MISSING",
            Error::Unauthenticated(AuthFailure::Malformed) => "TOKEN_MALFORMED",
            Error::Unauthenticated(AuthFailure::Invalid) => "TOKEN_INVALID",
            Error::AbilityMissing(_) => "ABILITY_MISSING",
            Error::Rejected(Rejection::Overloaded) => "OVERLOADED",
            Error::Rejected(Rejection::ShuttingDown) => "SHUTTING_DOWN",
            Error::Rejected(Rejection::RequestTimeout) => "REQUEST_TIMEOUT",
            Error::Rejected(Rejection::CallerDeadline) => "DEADLINE_EXCEEDED",
            Error::Rejected(Rejection::MessageTooLarge(_)) => "MESSAGE_TOO_LARGE",
            Error::Rejected(Rejection::MalformedMessage(_)) => "MALFORMED_MESSAGE",
            Error::Rejected(Rejection::UnknownMethod) => "UNKNOWN_METHOD",
            Error::Rejected(Rejection::Cancelled) => "CANCELLED",
            Error::Unavailable(_) => "DATABASE_UNAVAILABLE",
            Error::Internal(_) => "INTERNAL",
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let reason = error.reason();
        let mut metadata = HashMap::new();
        let (code, message) = match &error {
            Error::InvalidArgument(violations) => {
                let found = violations.as_slice().len();
                let message = if found > MAX_VIOLATIONS {
                    format!(
                        "the request has {found} invalid field(s); the BadRequest details list the first {MAX_VIOLATIONS}"
                    )
                } else {
                    format!("the request has {found} invalid field(s); see the BadRequest details")
                };
                (Code::InvalidArgument, message)
            }
            Error::ConversationNotFound => (Code::NotFound, "conversation not found".to_owned()),
            Error::EtagMismatch => (
                Code::Aborted,
                "the conversation changed since this etag was read; read it again and retry"
                    .to_owned(),
            ),
            Error::RequestIdReused => (
                Code::AlreadyExists,
                "request_id was already used to create a different conversation".to_owned(),
            ),
            Error::Unauthenticated(failure) => (
                Code::Unauthenticated,
                match failure {
                    AuthFailure::Missing => "missing `authorization: Bearer <token>` metadata",
                    AuthFailure::Malformed => "the bearer token is malformed",
                    AuthFailure::Invalid => "the bearer token is unknown or revoked",
                }
                .to_owned(),
            ),
            Error::AbilityMissing(ability) => {
                metadata.insert("ability".to_owned(), ability.as_str().to_owned());
                (
                    Code::PermissionDenied,
                    format!("the token lacks the {ability} ability"),
                )
            }
            Error::Rejected(rejection) => match rejection {
                Rejection::Overloaded => (
                    Code::ResourceExhausted,
                    "the server is at its concurrency limit; retry with backoff".to_owned(),
                ),
                Rejection::ShuttingDown => (
                    Code::Unavailable,
                    "the server is shutting down; retry on another replica".to_owned(),
                ),
                Rejection::RequestTimeout => (
                    Code::DeadlineExceeded,
                    "the call ran past the server's request timeout".to_owned(),
                ),
                Rejection::CallerDeadline => (
                    Code::DeadlineExceeded,
                    "the call ran past the caller's deadline".to_owned(),
                ),
                Rejection::MessageTooLarge(detail) => (Code::ResourceExhausted, detail.clone()),
                Rejection::MalformedMessage(detail) => (
                    Code::InvalidArgument,
                    format!("the request is not a valid protobuf message: {detail}"),
                ),
                Rejection::UnknownMethod => (Code::Unimplemented, "no such method".to_owned()),
                Rejection::Cancelled => (Code::Cancelled, "the call was cancelled".to_owned()),
            },
            Error::Unavailable(context) => {
                tracing::warn!(error = %context, "database unavailable");
                (
                    Code::Unavailable,
                    "the database is unavailable; retry with backoff".to_owned(),
                )
            }
            Error::Internal(context) => {
                tracing::error!(error = %context, "internal error");
                (Code::Internal, "internal error".to_owned())
            }
        };
        let mut details = ErrorDetails::new();
        details.set_error_info(reason, ERROR_DOMAIN, metadata);
        if let Error::InvalidArgument(violations) = &error {
            for violation in violations.as_slice().iter().take(MAX_VIOLATIONS) {
                details.add_bad_request_violation(&violation.field, &violation.description);
            }
        }
        Status::with_error_details(code, message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak_their_context() {
        let status = Status::from(Error::Internal("SELECT secret FROM /var/lib/x".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "INTERNAL"
        );
    }

    #[test]
    fn every_violation_is_listed() {
        let mut violations = Violations::new();
        violations.add("conversation.subject", "too long");
        violations.add("request_id", "not a UUID");
        let status = Status::from(Error::from(violations));
        let details = status.get_error_details();
        let bad_request = details.bad_request().unwrap();
        assert_eq!(bad_request.field_violations.len(), 2);
        assert_eq!(bad_request.field_violations[1].field, "request_id");
        let info = details.error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("INVALID_ARGUMENT", ERROR_DOMAIN)
        );
    }
}
