//! A partial update: per field, keep the stored value or write a new one.
//!
//! For nullable fields the written value is itself an `Option`, which gives
//! the three states a field mask expresses: not in the mask (`Keep`), in the
//! mask and unset (`Set(None)`: clear), in the mask and set (`Set(Some(..))`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::conversation::{
    AssigneeType, Attributes, Channel, Conversation, DirectoryEntry, Priority, Status,
};
use super::fields::{ConversationFields, check_attribute_count};
use super::mask::{FieldPath, WritableField};
use super::rules;
use super::violation::Violations;

/// One field of a patch.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Write<T> {
    /// Not named by the mask: the stored value stays.
    #[default]
    Keep,
    /// Named by the mask: the stored value becomes this.
    Set(T),
}

impl<T: Clone> Write<T> {
    pub fn is_set(&self) -> bool {
        matches!(self, Write::Set(_))
    }

    fn apply_to(&self, target: &mut T) {
        if let Write::Set(value) = self {
            *target = value.clone();
        }
    }
}

/// Immutable fields that an update without a mask populated. They are not
/// written; each must equal the stored value (AIP-134).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImmutableChecks {
    pub channel: Option<Channel>,
    pub customer_id: Option<Uuid>,
    pub origin_agent_id: Option<Uuid>,
}

/// What an UpdateConversation writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationPatch {
    pub subject: Write<Option<String>>,
    pub status: Write<Status>,
    pub priority: Write<Priority>,
    pub assignee_id: Write<Option<Uuid>>,
    pub assignee_type: Write<Option<AssigneeType>>,
    pub hold_until: Write<Option<DateTime<Utc>>>,
    pub tags: Write<Vec<String>>,
    /// The whole map (`attributes` in the mask).
    pub attributes: Write<Attributes>,
    /// Single keys (`attributes.<key>`): `Some` sets the key, `None` deletes it.
    pub attribute_keys: BTreeMap<String, Option<String>>,
    pub is_spam: Write<bool>,
    pub spam_score: Write<Option<f64>>,
    /// Earliest wins; `Set(None)` leaves the stored value.
    pub first_response_at: Write<Option<DateTime<Utc>>>,
    /// Latest wins; `Set(None)` leaves the stored value.
    pub last_message_at: Write<Option<DateTime<Utc>>>,
    pub immutable_checks: ImmutableChecks,
}

impl ConversationPatch {
    /// The patch that writes `paths`, with values taken from `fields` (the
    /// request's fields, holding reset values where the request left them
    /// unset).
    pub fn from_paths(paths: &[FieldPath], fields: &ConversationFields) -> Self {
        let mut patch = ConversationPatch::default();
        for path in paths {
            match path {
                FieldPath::Field(field) => patch.take(*field, fields),
                FieldPath::Attribute(key) => {
                    patch
                        .attribute_keys
                        .insert(key.clone(), fields.attributes.get(key).cloned());
                }
            }
        }
        patch
    }

    fn take(&mut self, field: WritableField, f: &ConversationFields) {
        match field {
            WritableField::Subject => self.subject = Write::Set(f.subject.clone()),
            WritableField::Status => self.status = Write::Set(f.status),
            WritableField::Priority => self.priority = Write::Set(f.priority),
            WritableField::AssigneeId => self.assignee_id = Write::Set(f.assignee_id),
            WritableField::AssigneeType => self.assignee_type = Write::Set(f.assignee_type),
            WritableField::HoldUntil => self.hold_until = Write::Set(f.hold_until),
            WritableField::Tags => self.tags = Write::Set(f.tags.clone()),
            WritableField::Attributes => self.attributes = Write::Set(f.attributes.clone()),
            WritableField::IsSpam => self.is_spam = Write::Set(f.is_spam),
            WritableField::SpamScore => self.spam_score = Write::Set(f.spam_score),
            WritableField::FirstResponseAt => {
                self.first_response_at = Write::Set(f.first_response_at)
            }
            WritableField::LastMessageAt => self.last_message_at = Write::Set(f.last_message_at),
        }
    }

    fn writes_assignment(&self) -> bool {
        self.assignee_id.is_set() || self.assignee_type.is_set()
    }

    /// The assignee id whose directory entry the rules need, if this patch
    /// writes the assignment and an assignee remains after it.
    pub fn assignee_to_check(&self, current: &Conversation) -> Option<Uuid> {
        if !self.writes_assignment() {
            return None;
        }
        match &self.assignee_id {
            Write::Set(id) => *id,
            Write::Keep => current.fields.assignee_id,
        }
    }

    /// Applies this patch to `current` and checks the rules that govern the
    /// fields it writes. `assignee` is the directory entry of
    /// [`Self::assignee_to_check`]. The result is the conversation as it
    /// would be stored; equal to `current` when the update changes nothing.
    pub fn apply(
        &self,
        current: &Conversation,
        assignee: Option<DirectoryEntry>,
        now: DateTime<Utc>,
    ) -> Result<Conversation, Violations> {
        let mut violations = Violations::new();
        // Destructured in full: a field added to the patch does not compile
        // until it is handled here.
        let ConversationPatch {
            subject,
            status,
            priority,
            assignee_id,
            assignee_type,
            hold_until,
            tags,
            attributes,
            attribute_keys,
            is_spam,
            spam_score,
            first_response_at,
            last_message_at,
            immutable_checks,
        } = self;

        check_immutables(immutable_checks, current, &mut violations);

        let mut next = current.clone();
        let fields = &mut next.fields;
        subject.apply_to(&mut fields.subject);
        status.apply_to(&mut fields.status);
        priority.apply_to(&mut fields.priority);
        assignee_id.apply_to(&mut fields.assignee_id);
        assignee_type.apply_to(&mut fields.assignee_type);
        hold_until.apply_to(&mut fields.hold_until);
        tags.apply_to(&mut fields.tags);
        attributes.apply_to(&mut fields.attributes);
        for (key, value) in attribute_keys {
            match value {
                Some(value) => fields.attributes.insert(key.clone(), value.clone()),
                None => fields.attributes.remove(key),
            };
        }
        if (attributes.is_set() || !attribute_keys.is_empty())
            && let Err(why) = check_attribute_count(&fields.attributes)
        {
            violations.add("conversation.attributes", why);
        }
        is_spam.apply_to(&mut fields.is_spam);
        spam_score.apply_to(&mut fields.spam_score);
        if let Write::Set(Some(at)) = first_response_at {
            fields.first_response_at =
                Some(fields.first_response_at.map_or(*at, |old| old.min(*at)));
        }
        if let Write::Set(Some(at)) = last_message_at {
            fields.last_message_at = Some(fields.last_message_at.map_or(*at, |old| old.max(*at)));
        }

        if self.writes_assignment() {
            // Unassigning names only the id; the type goes with it.
            if *assignee_id == Write::Set(None) && !assignee_type.is_set() {
                fields.assignee_type = None;
            }
            rules::check_assignment(
                next.channel,
                next.origin_agent_id,
                next.fields.assignee_id,
                next.fields.assignee_type,
                assignee,
                &mut violations,
            );
        }
        if status.is_set() || hold_until.is_set() {
            rules::apply_status_rules(
                Some(current.fields.status),
                hold_until.is_set(),
                &mut next.fields,
                &mut next.closed_at,
                now,
                &mut violations,
            );
        }
        violations.into_result(next)
    }
}

fn check_immutables(checks: &ImmutableChecks, current: &Conversation, violations: &mut Violations) {
    if checks
        .channel
        .is_some_and(|channel| channel != current.channel)
    {
        violations.add(
            "conversation.channel",
            "is immutable and differs from the stored value",
        );
    }
    if checks
        .customer_id
        .is_some_and(|id| id != current.customer_id)
    {
        violations.add(
            "conversation.customer_id",
            "is immutable and differs from the stored value",
        );
    }
    if checks.origin_agent_id.is_some() && checks.origin_agent_id != current.origin_agent_id {
        violations.add(
            "conversation.origin_agent_id",
            "is immutable and differs from the stored value",
        );
    }
}
