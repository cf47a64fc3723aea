//! The ConversationService handlers: authorize, convert, call storage,
//! convert back. Errors travel as `crate::error::Error` and become a Status
//! in one place.

use tonic::{Request, Response, Status};

use super::auth::authorize;
use super::convert::{self, UpdateCommand};
use super::metrics::Metrics;
use crate::db::{self, Db};
use crate::domain::{auth::Ability, list::PageToken};
use crate::proto::v1::{self as pb, conversation_service_server::ConversationService};

pub struct ConversationApi {
    db: Db,
    /// Each handler marks its time in storage, for the pool-waiters gauge.
    metrics: Metrics,
}

impl ConversationApi {
    pub fn new(db: Db, metrics: Metrics) -> Self {
        Self { db, metrics }
    }
}

#[tonic::async_trait]
impl ConversationService for ConversationApi {
    async fn create_conversation(
        &self,
        request: Request<pb::CreateConversationRequest>,
    ) -> Result<Response<pb::CreateConversationResponse>, Status> {
        let principal = authorize(&request, Ability::Write)?;
        let (new, request_id) = convert::create_request(request.into_inner())?;
        let _storage = self.metrics.database_call();
        let conversation =
            db::conversation::create(&self.db, principal.workspace_id, new, request_id).await?;
        tracing::info!(conversation_id = %conversation.id, "conversation created");
        Ok(Response::new(pb::CreateConversationResponse {
            conversation: Some(convert::conversation_to_proto(conversation)),
        }))
    }

    async fn update_conversation(
        &self,
        request: Request<pb::UpdateConversationRequest>,
    ) -> Result<Response<pb::UpdateConversationResponse>, Status> {
        let principal = authorize(&request, Ability::Write)?;
        let UpdateCommand {
            id,
            expected_etag,
            patch,
        } = convert::update_request(request.into_inner())?;
        let _storage = self.metrics.database_call();
        let conversation = db::conversation::update(
            &self.db,
            principal.workspace_id,
            id,
            &patch,
            expected_etag.as_deref(),
        )
        .await?;
        Ok(Response::new(pb::UpdateConversationResponse {
            conversation: Some(convert::conversation_to_proto(conversation)),
        }))
    }

    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let principal = authorize(&request, Ability::Read)?;
        let query = convert::list_request(request.get_ref())?;
        let _storage = self.metrics.database_call();
        let page = db::list::list(
            &self.db,
            principal.workspace_id,
            &query.filter,
            query.order,
            query.after,
            query.page_size,
        )
        .await?;
        let next_page_token = page
            .next
            .map(|cursor| PageToken::new(cursor, &query.filter, query.order).encode())
            .unwrap_or_default();
        Ok(Response::new(pb::ListConversationsResponse {
            conversations: page
                .conversations
                .into_iter()
                .map(convert::conversation_to_proto)
                .collect(),
            next_page_token,
        }))
    }

    async fn get_conversation(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::GetConversationResponse>, Status> {
        let principal = authorize(&request, Ability::Read)?;
        let id = convert::conversation_id(&request.get_ref().id, "id")?;
        let _storage = self.metrics.database_call();
        let conversation = db::conversation::get(&self.db, principal.workspace_id, id).await?;
        Ok(Response::new(pb::GetConversationResponse {
            conversation: Some(convert::conversation_to_proto(conversation)),
        }))
    }
}
