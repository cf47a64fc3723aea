//! conversation-service: a gRPC service that owns helpdesk conversations.
//!
//! - [`proto`]: the generated messages, client and server of `helpdesk.v1`.
//! - [`domain`]: the rules (no transport or storage types).
//! - [`db`]: SeaORM entities, migrations and queries.
//! - [`grpc`]: handlers, auth interceptor and server assembly.
//! - [`cli`]: the admin commands.

pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod grpc;

/// The generated code of `proto/helpdesk/v1`.
pub mod proto {
    pub mod v1 {
        tonic::include_proto!("helpdesk.v1");
    }

    /// The encoded descriptor set that the reflection service serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("helpdesk_descriptor");
}

pub use grpc::server::{ServeSettings, serve};
