//! The writable fields of a conversation and the limits on each value.
//!
//! Limits come from the contract (`spec/conversation-api.md`): lengths are in
//! Unicode scalar values, not bytes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::conversation::{AssigneeType, Attributes, Priority, Status};
use super::violation::excerpt;

pub const SUBJECT_MAX_CHARS: usize = 500;
pub const TAG_MAX_CHARS: usize = 100;
pub const TAGS_MAX: usize = 50;
pub const ATTRIBUTES_MAX: usize = 100;
pub const ATTRIBUTE_KEY_MAX_CHARS: usize = 64;
pub const ATTRIBUTE_VALUE_MAX_CHARS: usize = 2_000;

/// Every field a caller may write, with defaults applied. A field that a
/// request leaves unset holds its reset value here (null, OPEN, NORMAL, empty,
/// false), which is what a masked but absent field becomes. Serialised only
/// for the idempotency fingerprint, which leaves defaults out.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ConversationFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "is_default")]
    pub status: Status,
    #[serde(skip_serializing_if = "is_default")]
    pub priority: Priority,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee_type: Option<AssigneeType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_until: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Attributes::is_empty")]
    pub attributes: Attributes,
    #[serde(skip_serializing_if = "is_default")]
    pub is_spam: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spam_score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_response_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_message_at: Option<DateTime<Utc>>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

pub fn check_subject(subject: &str) -> Result<(), String> {
    let chars = subject.chars().count();
    if chars > SUBJECT_MAX_CHARS {
        return Err(format!(
            "must be at most {SUBJECT_MAX_CHARS} characters, got {chars}"
        ));
    }
    Ok(())
}

/// Trims each tag, refuses empty, over-long and control-character tags, drops
/// duplicates keeping the first position, and caps the count.
pub fn normalize_tags(raw: &[String]) -> Result<Vec<String>, Vec<String>> {
    let mut problems = Vec::new();
    let mut tags: Vec<String> = Vec::with_capacity(raw.len());
    for (index, tag) in raw.iter().enumerate() {
        let tag = tag.trim();
        let chars = tag.chars().count();
        if chars == 0 {
            problems.push(format!("tag {index} is empty after trimming"));
        } else if chars > TAG_MAX_CHARS {
            problems.push(format!(
                "tag {index} must be at most {TAG_MAX_CHARS} characters, got {chars}"
            ));
        } else if tag.chars().any(char::is_control) {
            problems.push(format!("tag {index} contains a control character"));
        } else if !tags.iter().any(|seen| seen == tag) {
            tags.push(tag.to_owned());
        }
    }
    if problems.is_empty() && tags.len() > TAGS_MAX {
        problems.push(format!(
            "at most {TAGS_MAX} distinct tags are allowed, got {}",
            tags.len()
        ));
    }
    if problems.is_empty() {
        Ok(tags)
    } else {
        Err(problems)
    }
}

pub fn check_attribute_key(key: &str) -> Result<(), String> {
    let chars = key.chars().count();
    if chars == 0 || chars > ATTRIBUTE_KEY_MAX_CHARS {
        return Err(format!(
            "attribute key `{}` must be 1 to {ATTRIBUTE_KEY_MAX_CHARS} characters",
            excerpt(key)
        ));
    }
    Ok(())
}

pub fn check_attribute(key: &str, value: &str) -> Result<(), String> {
    check_attribute_key(key)?;
    let chars = value.chars().count();
    if chars > ATTRIBUTE_VALUE_MAX_CHARS {
        return Err(format!(
            "the value of attribute `{}` must be at most {ATTRIBUTE_VALUE_MAX_CHARS} characters, got {chars}",
            excerpt(key)
        ));
    }
    Ok(())
}

pub fn check_attribute_count(attributes: &Attributes) -> Result<(), String> {
    if attributes.len() > ATTRIBUTES_MAX {
        return Err(format!(
            "at most {ATTRIBUTES_MAX} attributes are allowed, got {}",
            attributes.len()
        ));
    }
    Ok(())
}

/// A spam score is finite and not negative. `-0.0` is read as `0.0` so that it
/// has one representation.
pub fn normalize_spam_score(score: f64) -> Result<f64, String> {
    if !score.is_finite() {
        return Err("must be a finite number".into());
    }
    if score < 0.0 {
        return Err(format!("must not be negative, got {score}"));
    }
    Ok(score + 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_counts_characters_not_bytes() {
        assert!(check_subject(&"é".repeat(500)).is_ok());
        assert!(check_subject(&"é".repeat(501)).is_err());
    }

    #[test]
    fn tags_are_trimmed_deduplicated_and_keep_first_order() {
        let raw = ["  b ", "a", "b", "a ", "c"].map(String::from);
        assert_eq!(normalize_tags(&raw).unwrap(), ["b", "a", "c"]);
    }

    #[test]
    fn tags_refuse_empty_long_and_control_characters_all_at_once() {
        let raw = ["   ".to_string(), "x".repeat(101), "a\u{7}b".to_string()];
        let problems = normalize_tags(&raw).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn tag_count_is_checked_after_deduplication() {
        let mut raw: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
        raw.push("t0".into());
        assert_eq!(normalize_tags(&raw).unwrap().len(), 50);
        raw.push("t50".into());
        assert!(normalize_tags(&raw).is_err());
    }

    #[test]
    fn spam_score_must_be_finite_and_not_negative() {
        assert!(normalize_spam_score(f64::NAN).is_err());
        assert!(normalize_spam_score(f64::INFINITY).is_err());
        assert!(normalize_spam_score(-0.5).is_err());
        assert_eq!(
            normalize_spam_score(-0.0).unwrap().to_bits(),
            0.0f64.to_bits()
        );
        assert_eq!(normalize_spam_score(0.75).unwrap(), 0.75);
    }

    #[test]
    fn attribute_limits() {
        assert!(check_attribute("", "v").is_err());
        assert!(check_attribute(&"k".repeat(65), "v").is_err());
        assert!(check_attribute("k", &"v".repeat(2001)).is_err());
        assert!(check_attribute(&"k".repeat(64), &"v".repeat(2000)).is_ok());
    }
}
