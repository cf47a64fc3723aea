//! Business rules. Nothing here knows about tonic, prost or SeaORM: the
//! transport converts requests into these types and the storage layer
//! persists what the rules decide.

pub mod auth;
pub mod conversation;
pub mod fields;
pub mod list;
pub mod mask;
pub mod patch;
pub mod rules;
pub mod time;
pub mod violation;

pub use conversation::{
    AgentKind, AssigneeType, Channel, Conversation, DirectoryEntry, NewConversation, Priority,
    Status,
};
pub use fields::ConversationFields;
pub use mask::{FieldPath, Mask, WritableField};
pub use patch::{ConversationPatch, Write};
pub use violation::{FieldViolation, Violations};
