//! The rules that hold across fields: assignment per channel, and status with
//! its hold and close times. They run on create, and on an update whose mask
//! writes a field they govern.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::conversation::{
    AgentKind, AssigneeType, Channel, Conversation, DirectoryEntry, NewConversation, Status,
};
use super::fields::{ConversationFields, check_attribute_count};
use super::violation::Violations;

/// Every assignment breach is reported on this field.
pub const ASSIGNEE_FIELD: &str = "conversation.assignee_id";
const HOLD_FIELD: &str = "conversation.hold_until";
const ORIGIN_FIELD: &str = "conversation.origin_agent_id";

/// After a write, `assignee_id` and `assignee_type` are both set or both
/// clear, and the assignee is allowed on this channel.
pub fn check_assignment(
    channel: Channel,
    origin_agent_id: Option<Uuid>,
    assignee_id: Option<Uuid>,
    assignee_type: Option<AssigneeType>,
    entry: Option<DirectoryEntry>,
    violations: &mut Violations,
) {
    match (assignee_id, assignee_type) {
        (None, None) => {}
        (Some(_), None) => violations.add(
            ASSIGNEE_FIELD,
            "an assignee needs an assignee_type (ASSIGNEE_TYPE_USER or ASSIGNEE_TYPE_AGENT)",
        ),
        (None, Some(_)) => violations.add(
            ASSIGNEE_FIELD,
            "assignee_type is set but assignee_id is null; clear both to unassign",
        ),
        (Some(_), Some(AssigneeType::User)) => {
            if entry != Some(DirectoryEntry::User) {
                violations.add(ASSIGNEE_FIELD, "is not a user of this workspace");
            }
        }
        (Some(id), Some(AssigneeType::Agent)) => match channel {
            Channel::Chat => {
                if origin_agent_id != Some(id) {
                    violations.add(
                        ASSIGNEE_FIELD,
                        "on a chat conversation an agent assignee must be the conversation's origin agent",
                    );
                }
            }
            Channel::Email => {
                let active_email_agent = DirectoryEntry::Agent {
                    kind: AgentKind::Email,
                    active: true,
                };
                if entry != Some(active_email_agent) {
                    violations.add(
                        ASSIGNEE_FIELD,
                        "on an email conversation an agent assignee must be the workspace's active email agent",
                    );
                }
            }
        },
    }
}

/// ON_HOLD needs a future `hold_until`; a `hold_until` written while the
/// result is not ON_HOLD is refused; leaving ON_HOLD clears it. Becoming
/// CLOSED stamps `closed_at`; leaving CLOSED clears it.
///
/// `previous` is the stored status (`None` on create).
pub fn apply_status_rules(
    previous: Option<Status>,
    hold_until_written: bool,
    fields: &mut ConversationFields,
    closed_at: &mut Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    violations: &mut Violations,
) {
    if fields.status == Status::OnHold {
        match fields.hold_until {
            Some(until) if until > now => {}
            Some(_) => violations.add(HOLD_FIELD, "must be in the future for STATUS_ON_HOLD"),
            None => violations.add(
                HOLD_FIELD,
                "STATUS_ON_HOLD needs a hold_until in the future",
            ),
        }
    } else if hold_until_written && fields.hold_until.is_some() {
        violations.add(HOLD_FIELD, "can be set only while status is STATUS_ON_HOLD");
    } else {
        fields.hold_until = None;
    }

    let was_closed = previous == Some(Status::Closed);
    match (was_closed, fields.status == Status::Closed) {
        (false, true) => *closed_at = Some(now),
        (_, false) => *closed_at = None,
        (true, true) => {}
    }
}

/// What the directory says about the ids a create request references.
#[derive(Debug, Clone, Copy)]
pub struct CreateReferences {
    pub customer_in_workspace: bool,
    pub origin_agent: Option<DirectoryEntry>,
    pub assignee: Option<DirectoryEntry>,
}

/// Checks a create request against the directory and the status rules, and
/// returns the conversation to store.
pub fn plan_create(
    new: &NewConversation,
    id: Uuid,
    workspace_id: Uuid,
    references: CreateReferences,
    now: DateTime<Utc>,
) -> Result<Conversation, Violations> {
    let mut violations = Violations::new();
    let mut fields = new.fields.clone();

    if !references.customer_in_workspace {
        violations.add(
            "conversation.customer_id",
            "no customer with this id in the workspace",
        );
    }
    if let Err(why) = check_attribute_count(&fields.attributes) {
        violations.add("conversation.attributes", why);
    }

    let mut origin_agent_id = new.origin_agent_id;
    let is_chat_agent = |entry: Option<DirectoryEntry>| {
        matches!(
            entry,
            Some(DirectoryEntry::Agent {
                kind: AgentKind::Chat,
                ..
            })
        )
    };
    match (new.channel, new.origin_agent_id) {
        (Channel::Email, Some(_)) => {
            violations.add(ORIGIN_FIELD, "only chat conversations have an origin agent")
        }
        (Channel::Chat, Some(_)) => {
            if !is_chat_agent(references.origin_agent) {
                violations.add(ORIGIN_FIELD, "is not a chat agent of this workspace");
            }
        }
        (Channel::Chat, None) => {
            // A chat started by an agent and assigned to it: the assignee is
            // the origin agent.
            if fields.assignee_type == Some(AssigneeType::Agent) && fields.assignee_id.is_some() {
                origin_agent_id = fields.assignee_id;
                if !is_chat_agent(references.assignee) {
                    violations.add(ASSIGNEE_FIELD, "is not a chat agent of this workspace");
                }
            }
        }
        (Channel::Email, None) => {}
    }

    check_assignment(
        new.channel,
        origin_agent_id,
        fields.assignee_id,
        fields.assignee_type,
        references.assignee,
        &mut violations,
    );
    let mut closed_at = None;
    apply_status_rules(
        None,
        true,
        &mut fields,
        &mut closed_at,
        now,
        &mut violations,
    );

    violations.into_result(Conversation {
        id,
        workspace_id,
        channel: new.channel,
        customer_id: new.customer_id,
        origin_agent_id,
        fields,
        closed_at,
        created_at: now,
        updated_at: now,
        version: 1,
    })
}
