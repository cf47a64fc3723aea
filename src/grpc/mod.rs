//! Transport: the gRPC handlers, proto <-> domain conversion, the auth
//! interceptor, per-call observability (request ids, spans, metrics) and
//! server assembly.

pub mod admission;
pub mod auth;
pub mod codec;
pub mod convert;
pub mod health;
pub mod metrics;
pub mod observability;
pub mod server;
pub mod service;
