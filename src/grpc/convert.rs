//! Proto <-> domain conversion, with the field paths that violations name.
//!
//! Every writable field of a request is read and checked, but a problem only
//! counts if the field is written: on Update, a field outside the mask is
//! ignored whatever it carries.

use chrono::{DateTime, Utc};
use prost_types::{FieldMask, Timestamp};
use uuid::Uuid;

use crate::domain::{
    AssigneeType, Channel, Conversation, ConversationFields, ConversationPatch, FieldPath, Mask,
    NewConversation, Priority, Status, Violations, WritableField,
    fields::{check_attribute, check_subject, normalize_spam_score, normalize_tags},
    list::{self, Cursor, Filter, Order, PageToken},
    patch::ImmutableChecks,
    time::{MAX_SECONDS, MIN_SECONDS, truncate_to_micros},
    violation::excerpt,
};
use crate::error::Error;
use crate::proto::v1 as pb;

/// A problem with one writable field, kept until we know if it is written.
struct FieldProblem {
    field: WritableField,
    /// For `attributes`, the key concerned.
    key: Option<String>,
    description: String,
}

fn path(field: WritableField) -> String {
    format!("conversation.{field}")
}

/// Reads every writable field of `msg`; an unset field reads as its reset
/// value.
fn read_fields(msg: &pb::Conversation) -> (ConversationFields, Vec<FieldProblem>) {
    let mut problems = Vec::new();
    let mut problem = |field, description: String| {
        problems.push(FieldProblem {
            field,
            key: None,
            description,
        })
    };

    let subject = msg.subject.clone();
    if let Some(subject) = &subject {
        if let Err(why) = check_subject(subject) {
            problem(WritableField::Subject, why);
        } else if subject.contains('\0') {
            problem(
                WritableField::Subject,
                "must not contain NUL characters".into(),
            );
        }
    }
    let status = match msg.status {
        0 => Some(Status::default()),
        n => match pb::Status::try_from(n) {
            Ok(pb::Status::Open) => Some(Status::Open),
            Ok(pb::Status::OnHold) => Some(Status::OnHold),
            Ok(pb::Status::Closed) => Some(Status::Closed),
            _ => None,
        },
    }
    .unwrap_or_else(|| {
        problem(
            WritableField::Status,
            format!("unknown Status value {}", msg.status),
        );
        Status::default()
    });
    let priority = match msg.priority {
        0 => Some(Priority::default()),
        n => match pb::Priority::try_from(n) {
            Ok(pb::Priority::Low) => Some(Priority::Low),
            Ok(pb::Priority::Normal) => Some(Priority::Normal),
            Ok(pb::Priority::High) => Some(Priority::High),
            Ok(pb::Priority::Urgent) => Some(Priority::Urgent),
            _ => None,
        },
    }
    .unwrap_or_else(|| {
        problem(
            WritableField::Priority,
            format!("unknown Priority value {}", msg.priority),
        );
        Priority::default()
    });
    let assignee_id = msg.assignee_id.as_deref().and_then(|raw| {
        uuid(raw)
            .map_err(|why| problem(WritableField::AssigneeId, why))
            .ok()
    });
    let assignee_type = match pb::AssigneeType::try_from(msg.assignee_type) {
        Ok(pb::AssigneeType::Unspecified) => None,
        Ok(pb::AssigneeType::User) => Some(AssigneeType::User),
        Ok(pb::AssigneeType::Agent) => Some(AssigneeType::Agent),
        Err(_) => {
            problem(
                WritableField::AssigneeType,
                format!("unknown AssigneeType value {}", msg.assignee_type),
            );
            None
        }
    };
    let mut time = |field, ts: &Option<Timestamp>| {
        ts.as_ref()
            .and_then(|ts| timestamp(ts).map_err(|why| problem(field, why)).ok())
    };
    let hold_until = time(WritableField::HoldUntil, &msg.hold_until);
    let first_response_at = time(WritableField::FirstResponseAt, &msg.first_response_at);
    let last_message_at = time(WritableField::LastMessageAt, &msg.last_message_at);
    let tags = normalize_tags(&msg.tags).unwrap_or_else(|whys| {
        for why in whys {
            problem(WritableField::Tags, why);
        }
        Vec::new()
    });
    let spam_score = msg.spam_score.and_then(|score| {
        normalize_spam_score(score)
            .map_err(|why| problem(WritableField::SpamScore, why))
            .ok()
    });
    for (key, value) in &msg.attributes {
        let checked = check_attribute(key, value).and_then(|()| {
            if key.contains('\0') || value.contains('\0') {
                Err(format!(
                    "attribute `{}` must not contain NUL characters",
                    excerpt(key)
                ))
            } else {
                Ok(())
            }
        });
        if let Err(description) = checked {
            problems.push(FieldProblem {
                field: WritableField::Attributes,
                key: Some(key.clone()),
                description,
            });
        }
    }

    let fields = ConversationFields {
        subject,
        status,
        priority,
        assignee_id,
        assignee_type,
        hold_until,
        tags,
        attributes: msg.attributes.clone(),
        is_spam: msg.is_spam,
        spam_score,
        first_response_at,
        last_message_at,
    };
    (fields, problems)
}

fn uuid(raw: &str) -> Result<Uuid, String> {
    Uuid::try_parse(raw).map_err(|_| format!("`{}` is not a UUID", excerpt(raw)))
}

fn timestamp(ts: &Timestamp) -> Result<DateTime<Utc>, String> {
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) {
        return Err("is outside 0001-01-01 to 9999-12-31".into());
    }
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or("has nanos outside 0 to 999,999,999")?;
    DateTime::from_timestamp(ts.seconds, nanos)
        .map(truncate_to_micros)
        .ok_or_else(|| "is not a valid time".into())
}

fn to_timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

fn channel(raw: i32) -> Result<Option<Channel>, String> {
    match pb::Channel::try_from(raw) {
        Ok(pb::Channel::Unspecified) => Ok(None),
        Ok(pb::Channel::Email) => Ok(Some(Channel::Email)),
        Ok(pb::Channel::Chat) => Ok(Some(Channel::Chat)),
        Err(_) => Err(format!("unknown Channel value {raw}")),
    }
}

/// A CreateConversation request, validated.
pub fn create_request(
    request: pb::CreateConversationRequest,
) -> Result<(NewConversation, Option<Uuid>), Error> {
    let mut violations = Violations::new();
    let request_id = match request.request_id.as_str() {
        "" => None,
        raw => uuid(raw)
            .map_err(|why| violations.add("request_id", why))
            .ok(),
    };
    let Some(msg) = request.conversation else {
        violations.add("conversation", "is required");
        return Err(violations.into());
    };

    let (fields, problems) = read_fields(&msg);
    for problem in problems {
        violations.add(path(problem.field), problem.description);
    }
    let channel = match channel(msg.channel) {
        Ok(Some(channel)) => Some(channel),
        Ok(None) => {
            violations.add(
                "conversation.channel",
                "is required (CHANNEL_EMAIL or CHANNEL_CHAT)",
            );
            None
        }
        Err(why) => {
            violations.add("conversation.channel", why);
            None
        }
    };
    let customer_id = if msg.customer_id.is_empty() {
        violations.add("conversation.customer_id", "is required");
        None
    } else {
        uuid(&msg.customer_id)
            .map_err(|why| violations.add("conversation.customer_id", why))
            .ok()
    };
    let origin_agent_id = msg.origin_agent_id.as_deref().and_then(|raw| {
        uuid(raw)
            .map_err(|why| violations.add("conversation.origin_agent_id", why))
            .ok()
    });

    match (channel, customer_id) {
        (Some(channel), Some(customer_id)) if violations.is_empty() => Ok((
            NewConversation {
                channel,
                customer_id,
                origin_agent_id,
                fields,
            },
            request_id,
        )),
        _ => Err(violations.into()),
    }
}

/// An UpdateConversation request, validated.
pub struct UpdateCommand {
    pub id: Uuid,
    pub expected_etag: Option<String>,
    pub patch: ConversationPatch,
}

pub fn update_request(request: pb::UpdateConversationRequest) -> Result<UpdateCommand, Error> {
    let mut violations = Violations::new();
    let Some(msg) = request.conversation else {
        violations.add("conversation", "is required");
        return Err(violations.into());
    };
    let id = if msg.id.is_empty() {
        violations.add("conversation.id", "is required");
        None
    } else {
        uuid(&msg.id)
            .map_err(|why| violations.add("conversation.id", why))
            .ok()
    };

    let mask_paths = request
        .update_mask
        .map(|FieldMask { paths }| paths)
        .unwrap_or_default();
    let (paths, immutable_checks) = if mask_paths.is_empty() {
        populated_paths(&msg, &mut violations)
    } else {
        match Mask::parse(&mask_paths) {
            Ok(mask) => (mask.paths(), ImmutableChecks::default()),
            Err(mask_violations) => {
                violations.extend(mask_violations);
                (Vec::new(), ImmutableChecks::default())
            }
        }
    };

    let (fields, problems) = read_fields(&msg);
    for problem in problems {
        let written = paths.iter().any(|path| match path {
            FieldPath::Field(field) => *field == problem.field,
            FieldPath::Attribute(key) => problem.key.as_ref() == Some(key),
        });
        if written {
            violations.add(path(problem.field), problem.description);
        }
    }

    let mut patch = ConversationPatch::from_paths(&paths, &fields);
    patch.immutable_checks = immutable_checks;
    match id {
        Some(id) if violations.is_empty() => Ok(UpdateCommand {
            id,
            expected_etag: Some(msg.etag).filter(|etag| !etag.is_empty()),
            patch,
        }),
        _ => Err(violations.into()),
    }
}

/// AIP-134: with no mask, every populated field is written, and populated
/// immutable fields must match the stored values. Output-only fields are
/// ignored.
fn populated_paths(
    msg: &pb::Conversation,
    violations: &mut Violations,
) -> (Vec<FieldPath>, ImmutableChecks) {
    let populated = [
        (WritableField::Subject, msg.subject.is_some()),
        (WritableField::Status, msg.status != 0),
        (WritableField::Priority, msg.priority != 0),
        (WritableField::AssigneeId, msg.assignee_id.is_some()),
        (WritableField::AssigneeType, msg.assignee_type != 0),
        (WritableField::HoldUntil, msg.hold_until.is_some()),
        (WritableField::Tags, !msg.tags.is_empty()),
        (WritableField::Attributes, !msg.attributes.is_empty()),
        (WritableField::IsSpam, msg.is_spam),
        (WritableField::SpamScore, msg.spam_score.is_some()),
        (
            WritableField::FirstResponseAt,
            msg.first_response_at.is_some(),
        ),
        (WritableField::LastMessageAt, msg.last_message_at.is_some()),
    ];
    let paths = populated
        .into_iter()
        .filter(|(_, is_populated)| *is_populated)
        .map(|(field, _)| FieldPath::Field(field))
        .collect();

    let mut checks = ImmutableChecks::default();
    match channel(msg.channel) {
        Ok(channel) => checks.channel = channel,
        Err(why) => violations.add("conversation.channel", why),
    }
    if !msg.customer_id.is_empty() {
        match uuid(&msg.customer_id) {
            Ok(id) => checks.customer_id = Some(id),
            Err(why) => violations.add("conversation.customer_id", why),
        }
    }
    if let Some(raw) = &msg.origin_agent_id {
        match uuid(raw) {
            Ok(id) => checks.origin_agent_id = Some(id),
            Err(why) => violations.add("conversation.origin_agent_id", why),
        }
    }
    (paths, checks)
}

/// A ListConversations request, validated.
pub struct ListQuery {
    pub filter: Filter,
    pub order: Order,
    pub after: Option<Cursor>,
    pub page_size: u32,
}

pub fn list_request(request: &pb::ListConversationsRequest) -> Result<ListQuery, Error> {
    let mut violations = Violations::new();
    let page_size = list::page_size(request.page_size)
        .map_err(|why| violations.add("page_size", why))
        .ok();
    let filter = Filter::parse(&request.filter)
        .map_err(|why| violations.add("filter", why))
        .ok();
    let order = Order::parse(&request.order_by)
        .map_err(|why| violations.add("order_by", why))
        .ok();
    let after = match (&filter, order, request.page_token.as_str()) {
        (_, _, "") => None,
        (Some(filter), Some(order), token) => PageToken::decode(token, filter, order)
            .map_err(|why| violations.add("page_token", why))
            .ok(),
        // The token is checked once the filter and order it is bound to parse.
        _ => None,
    };
    match (filter, order, page_size) {
        (Some(filter), Some(order), Some(page_size)) if violations.is_empty() => Ok(ListQuery {
            filter,
            order,
            after,
            page_size,
        }),
        _ => Err(violations.into()),
    }
}

/// Parses the id of a Get request.
pub fn conversation_id(raw: &str, field: &str) -> Result<Uuid, Error> {
    let mut violations = Violations::new();
    if raw.is_empty() {
        violations.add(field, "is required");
        return Err(violations.into());
    }
    uuid(raw).map_err(|why| {
        violations.add(field, why);
        violations.into()
    })
}

pub fn conversation_to_proto(c: Conversation) -> pb::Conversation {
    let etag = c.etag();
    let f = c.fields;
    pb::Conversation {
        id: c.id.to_string(),
        channel: match c.channel {
            Channel::Email => pb::Channel::Email,
            Channel::Chat => pb::Channel::Chat,
        } as i32,
        customer_id: c.customer_id.to_string(),
        subject: f.subject,
        status: match f.status {
            Status::Open => pb::Status::Open,
            Status::OnHold => pb::Status::OnHold,
            Status::Closed => pb::Status::Closed,
        } as i32,
        priority: match f.priority {
            Priority::Low => pb::Priority::Low,
            Priority::Normal => pb::Priority::Normal,
            Priority::High => pb::Priority::High,
            Priority::Urgent => pb::Priority::Urgent,
        } as i32,
        assignee_id: f.assignee_id.map(|id| id.to_string()),
        assignee_type: match f.assignee_type {
            None => pb::AssigneeType::Unspecified,
            Some(AssigneeType::User) => pb::AssigneeType::User,
            Some(AssigneeType::Agent) => pb::AssigneeType::Agent,
        } as i32,
        origin_agent_id: c.origin_agent_id.map(|id| id.to_string()),
        hold_until: f.hold_until.map(to_timestamp),
        tags: f.tags,
        attributes: f.attributes,
        is_spam: f.is_spam,
        spam_score: f.spam_score,
        first_response_at: f.first_response_at.map(to_timestamp),
        last_message_at: f.last_message_at.map(to_timestamp),
        closed_at: c.closed_at.map(to_timestamp),
        created_at: Some(to_timestamp(c.created_at)),
        updated_at: Some(to_timestamp(c.updated_at)),
        etag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_outside_the_protobuf_range_are_refused() {
        assert!(
            timestamp(&Timestamp {
                seconds: MAX_SECONDS + 1,
                nanos: 0
            })
            .is_err()
        );
        assert!(
            timestamp(&Timestamp {
                seconds: MIN_SECONDS - 1,
                nanos: 0
            })
            .is_err()
        );
        assert!(
            timestamp(&Timestamp {
                seconds: 0,
                nanos: -1
            })
            .is_err()
        );
        assert!(
            timestamp(&Timestamp {
                seconds: 0,
                nanos: 1_000_000_000
            })
            .is_err()
        );
    }

    #[test]
    fn timestamps_are_kept_to_the_microsecond() {
        let at = timestamp(&Timestamp {
            seconds: 10,
            nanos: 123_456_789,
        })
        .unwrap();
        assert_eq!(
            to_timestamp(at),
            Timestamp {
                seconds: 10,
                nanos: 123_456_000
            }
        );
    }

    #[test]
    fn update_ignores_invalid_values_outside_the_mask() {
        let request = pb::UpdateConversationRequest {
            conversation: Some(pb::Conversation {
                id: Uuid::nil().to_string(),
                subject: Some("x".repeat(600)),
                priority: 99,
                status: pb::Status::Closed as i32,
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["status".into()],
            }),
        };
        let command = update_request(request).map_err(|e| e.to_string()).unwrap();
        assert_eq!(
            command.patch.status,
            crate::domain::Write::Set(Status::Closed)
        );
        assert_eq!(command.patch.subject, crate::domain::Write::Keep);
    }

    #[test]
    fn create_reports_every_violation_at_once() {
        let request = pb::CreateConversationRequest {
            conversation: Some(pb::Conversation {
                subject: Some("x".repeat(501)),
                spam_score: Some(-1.0),
                tags: vec!["  ".into()],
                ..Default::default()
            }),
            request_id: "nope".into(),
        };
        let Err(Error::InvalidArgument(violations)) = create_request(request) else {
            panic!("expected INVALID_ARGUMENT");
        };
        let fields: Vec<&str> = violations
            .as_slice()
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        for expected in [
            "request_id",
            "conversation.subject",
            "conversation.spam_score",
            "conversation.tags",
            "conversation.channel",
            "conversation.customer_id",
        ] {
            assert!(
                fields.contains(&expected),
                "{expected} missing from {fields:?}"
            );
        }
    }
}
