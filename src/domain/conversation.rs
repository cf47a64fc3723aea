//! The conversation resource as the rules see it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::fields::ConversationFields;

/// The medium a customer wrote through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Chat,
}

/// Where a conversation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Open,
    OnHold,
    Closed,
}

/// How urgent a conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

/// What an assignee id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AssigneeType {
    User,
    Agent,
}

/// The two kinds of automated agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    Chat,
    Email,
}

/// What an id names in the caller's workspace: the facts the assignment rules
/// need, looked up by the storage layer and handed to the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryEntry {
    User,
    Agent {
        kind: AgentKind,
        active: bool,
    },
    /// Nothing of the caller's workspace has this id (it may exist in another
    /// workspace; the rules cannot tell, and must not).
    Missing,
}

/// A stored conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub channel: Channel,
    pub customer_id: Uuid,
    pub origin_agent_id: Option<Uuid>,
    pub fields: ConversationFields,
    pub closed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped on every change; the etag is derived from it.
    pub version: i64,
}

impl Conversation {
    /// The opaque etag of this version. It carries random bits of the id
    /// too, so an etag copied from another conversation does not match.
    pub fn etag(&self) -> String {
        let mut id = [0; uuid::fmt::Simple::LENGTH];
        let id = self.id.simple().encode_lower(&mut id);
        let mut etag = self.version.to_string();
        etag.push('-');
        etag.push_str(&id[24..]);
        etag
    }
}

/// A validated create request, before the directory rules run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewConversation {
    pub channel: Channel,
    pub customer_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_agent_id: Option<Uuid>,
    pub fields: ConversationFields,
}

impl NewConversation {
    /// A digest of every writable field after normalisation: a retry with the
    /// same `request_id` must carry the same digest (AIP-155). It is stored,
    /// so it must not change between versions of the service: fields at their
    /// default are left out (a field added later does not change the digest
    /// of requests that do not use it), enums use their stored words, and the
    /// format is versioned.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(b"fingerprint-v1\n")
            .chain_update(self.canonical())
            .finalize();
        hex::encode(digest)
    }

    /// serde_json writes struct fields in declaration order and BTreeMaps in
    /// key order, so equal requests give equal bytes.
    fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a NewConversation always serialises")
    }
}

/// Each enum is stored as a short lowercase word; one table per enum keeps
/// the word and the variant side by side.
macro_rules! stored_as_words {
    ($($ty:ident { $($variant:ident => $word:literal),+ $(,)? })+) => {$(
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $word),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($word => Some($ty::$variant),)+ _ => None }
            }
        }
    )+};
}

stored_as_words! {
    Channel { Email => "email", Chat => "chat" }
    Status { Open => "open", OnHold => "on_hold", Closed => "closed" }
    Priority { Low => "low", Normal => "normal", High => "high", Urgent => "urgent" }
    AssigneeType { User => "user", Agent => "agent" }
    AgentKind { Chat => "chat", Email => "email" }
}

/// Attributes are kept sorted by key.
pub type Attributes = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etag_is_the_version_and_the_ids_last_hex_digits() {
        let conversation = Conversation {
            id: Uuid::parse_str("01a1fdf3-e14b-714c-8b89-5e8f7e815ea9").unwrap(),
            workspace_id: Uuid::nil(),
            channel: Channel::Email,
            customer_id: Uuid::nil(),
            origin_agent_id: None,
            fields: ConversationFields::default(),
            closed_at: None,
            created_at: crate::domain::time::now(),
            updated_at: crate::domain::time::now(),
            version: 42,
        };
        assert_eq!(conversation.etag(), "42-7e815ea9");
    }

    fn minimal() -> NewConversation {
        NewConversation {
            channel: Channel::Email,
            customer_id: Uuid::nil(),
            origin_agent_id: None,
            fields: ConversationFields::default(),
        }
    }

    #[test]
    fn canonical_form_leaves_out_defaults() {
        let canonical = String::from_utf8(minimal().canonical()).unwrap();
        assert_eq!(
            canonical,
            r#"{"channel":"email","customer_id":"00000000-0000-0000-0000-000000000000","fields":{}}"#
        );
    }

    #[test]
    fn fingerprint_changes_with_any_written_value() {
        let base = minimal().fingerprint();
        let mut on_hold = minimal();
        on_hold.fields.status = Status::OnHold;
        let mut spam = minimal();
        spam.fields.is_spam = true;
        let mut chat = minimal();
        chat.channel = Channel::Chat;
        let mut tagged = minimal();
        tagged.fields.tags = vec!["a".into()];
        let digests = [
            base.clone(),
            on_hold.fingerprint(),
            spam.fingerprint(),
            chat.fingerprint(),
            tagged.fingerprint(),
        ];
        let distinct: std::collections::HashSet<_> = digests.iter().collect();
        assert_eq!(distinct.len(), digests.len());
        assert_eq!(minimal().fingerprint(), base, "deterministic");
    }
}
