use sea_orm::entity::prelude::*;

/// A conversation row. Enums are stored as the lowercase words of
/// `domain::conversation`; tags and attributes as JSON.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "conversations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub channel: String,
    pub customer_id: Uuid,
    pub subject: Option<String>,
    pub status: String,
    pub priority: String,
    pub assignee_id: Option<Uuid>,
    pub assignee_type: Option<String>,
    pub origin_agent_id: Option<Uuid>,
    pub hold_until: Option<DateTimeUtc>,
    #[sea_orm(column_type = "JsonBinary")]
    pub tags: Json,
    #[sea_orm(column_type = "JsonBinary")]
    pub attributes: Json,
    pub is_spam: bool,
    #[sea_orm(column_type = "Double", nullable)]
    pub spam_score: Option<f64>,
    pub first_response_at: Option<DateTimeUtc>,
    pub last_message_at: Option<DateTimeUtc>,
    pub closed_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// Bumped by every write that changes something; the etag comes from it.
    pub version: i64,
    /// The idempotency key of the create request, unique per workspace.
    pub request_id: Option<Uuid>,
    /// Digest of the create request's writable fields, to tell a retry from
    /// a reuse of the key.
    pub request_fingerprint: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
