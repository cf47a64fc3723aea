//! Transport: the gRPC handlers, proto <-> domain conversion, the auth
//! interceptor, and server assembly.

pub mod admission;
pub mod auth;
pub mod codec;
pub mod convert;
pub mod health;
pub mod server;
pub mod service;
