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
pub mod telemetry;

/// The generated code of `proto/helpdesk/v1`.
pub mod proto {
    /// Messages, client and server of `helpdesk.v1`. A Rust service that
    /// calls conversation-service depends on this crate and uses the client:
    ///
    /// ```no_run
    /// use conversation_service::proto::v1::{
    ///     GetConversationRequest, conversation_service_client::ConversationServiceClient,
    /// };
    /// use tonic::{Code, Request, metadata::MetadataValue, transport::Channel};
    /// use tonic_types::StatusExt;
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// // A workspace token from `conversation-service token issue`.
    /// let bearer: MetadataValue<_> = format!("Bearer {}", std::env::var("HELPDESK_TOKEN")?).parse()?;
    /// let channel = Channel::from_static("http://127.0.0.1:50051").connect().await?;
    /// // The interceptor puts the token on every call of this client.
    /// let mut client = ConversationServiceClient::with_interceptor(channel, move |mut call: Request<()>| {
    ///     call.metadata_mut().insert("authorization", bearer.clone());
    ///     Ok(call)
    /// });
    ///
    /// let request = GetConversationRequest { id: "0193a5e2-7c1f-7d4e-9b1a-3f2e4d5c6b7a".into() };
    /// match client.get_conversation(request).await {
    ///     Ok(reply) => println!("{:?}", reply.into_inner().conversation),
    ///     // Bad input comes with a google.rpc.BadRequest naming each field.
    ///     Err(status) if status.code() == Code::InvalidArgument => {
    ///         for violation in status.get_details_bad_request().into_iter().flat_map(|b| b.field_violations) {
    ///             eprintln!("{}: {}", violation.field, violation.description);
    ///         }
    ///     }
    ///     Err(status) => eprintln!("{:?}: {}", status.code(), status.message()),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub mod v1 {
        tonic::include_proto!("helpdesk.v1");
    }

    /// The encoded descriptor set that the reflection service serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("helpdesk_descriptor");
}

pub use grpc::server::{Listeners, ServeSettings, serve};
