//! Field-mask paths for UpdateConversation (AIP-134 and AIP-161).
//!
//! A path is a dot-separated list of segments. A segment of letters, digits
//! and `_` may stand bare; any other segment is quoted in backticks, with a
//! literal backtick written twice: ``attributes.`order id` ``. Only
//! `attributes` has sub-paths (one map key each); `*` alone names every
//! writable field.

use std::fmt;

use super::violation::{Violations, excerpt};

/// The request field that every mask violation names.
pub const MASK_FIELD: &str = "update_mask";

/// A field a caller may name in an update mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WritableField {
    Subject,
    Status,
    Priority,
    AssigneeId,
    AssigneeType,
    HoldUntil,
    Tags,
    Attributes,
    IsSpam,
    SpamScore,
    FirstResponseAt,
    LastMessageAt,
}

impl WritableField {
    pub const ALL: [WritableField; 12] = [
        WritableField::Subject,
        WritableField::Status,
        WritableField::Priority,
        WritableField::AssigneeId,
        WritableField::AssigneeType,
        WritableField::HoldUntil,
        WritableField::Tags,
        WritableField::Attributes,
        WritableField::IsSpam,
        WritableField::SpamScore,
        WritableField::FirstResponseAt,
        WritableField::LastMessageAt,
    ];

    /// The proto field name, which is also the mask path.
    pub fn name(self) -> &'static str {
        match self {
            WritableField::Subject => "subject",
            WritableField::Status => "status",
            WritableField::Priority => "priority",
            WritableField::AssigneeId => "assignee_id",
            WritableField::AssigneeType => "assignee_type",
            WritableField::HoldUntil => "hold_until",
            WritableField::Tags => "tags",
            WritableField::Attributes => "attributes",
            WritableField::IsSpam => "is_spam",
            WritableField::SpamScore => "spam_score",
            WritableField::FirstResponseAt => "first_response_at",
            WritableField::LastMessageAt => "last_message_at",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|field| field.name() == name)
    }
}

impl fmt::Display for WritableField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const OUTPUT_ONLY: [&str; 5] = ["id", "closed_at", "created_at", "updated_at", "etag"];
const IMMUTABLE: [&str; 3] = ["channel", "customer_id", "origin_agent_id"];

/// One accepted path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldPath {
    Field(WritableField),
    /// `attributes.<key>`: one key of the map.
    Attribute(String),
}

/// What an update writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mask {
    /// `*`: every writable field.
    All,
    /// The named paths, duplicates dropped, in first-seen order.
    Paths(Vec<FieldPath>),
}

impl Mask {
    /// Parses every path, reporting every refused one at once.
    pub fn parse<S: AsRef<str>>(paths: &[S]) -> Result<Mask, Violations> {
        let mut violations = Violations::new();
        let mut accepted: Vec<FieldPath> = Vec::new();
        let has_star = paths.iter().any(|p| p.as_ref() == "*");
        let has_other = paths.iter().any(|p| p.as_ref() != "*");
        if has_star && has_other {
            violations.add(MASK_FIELD, "path `*` must be the only path in the mask");
        }
        for raw in paths.iter().map(AsRef::as_ref).filter(|p| *p != "*") {
            match parse_path(raw) {
                Ok(path) if !accepted.contains(&path) => accepted.push(path),
                Ok(_) => {}
                Err(why) => violations.add(MASK_FIELD, format!("path `{}`: {why}", excerpt(raw))),
            }
        }
        let mask = if has_star {
            Mask::All
        } else {
            Mask::Paths(accepted)
        };
        violations.into_result(mask)
    }

    /// The paths this mask writes, with `*` expanded.
    pub fn paths(&self) -> Vec<FieldPath> {
        match self {
            Mask::All => WritableField::ALL
                .into_iter()
                .map(FieldPath::Field)
                .collect(),
            Mask::Paths(paths) => paths.clone(),
        }
    }
}

fn parse_path(raw: &str) -> Result<FieldPath, String> {
    let segments = split_segments(raw)?;
    let (head, rest) = segments
        .split_first()
        .expect("split_segments never returns none");
    if OUTPUT_ONLY.contains(&head.as_str()) {
        return Err(format!("`{}` is output only", excerpt(head)));
    }
    if IMMUTABLE.contains(&head.as_str()) {
        return Err(format!("`{}` is immutable", excerpt(head)));
    }
    let field = WritableField::from_name(head)
        .ok_or_else(|| format!("`{}` is not a field of Conversation", excerpt(head)))?;
    match (field, rest) {
        (field, []) => Ok(FieldPath::Field(field)),
        (WritableField::Attributes, [key]) => {
            super::fields::check_attribute_key(key)?;
            Ok(FieldPath::Attribute(key.clone()))
        }
        (WritableField::Attributes, _) => Err(
            "an attribute path names exactly one key; quote a key containing `.` in backticks"
                .into(),
        ),
        (field, _) => Err(format!(
            "`{field}` has no sub-paths; only `attributes` does"
        )),
    }
}

/// Splits a path into its segments, unquoting backticked ones.
fn split_segments(raw: &str) -> Result<Vec<String>, String> {
    if raw.is_empty() {
        return Err("empty path".into());
    }
    let mut segments = Vec::new();
    let mut chars = raw.chars().peekable();
    loop {
        let mut segment = String::new();
        if chars.peek() == Some(&'`') {
            chars.next();
            loop {
                match chars.next() {
                    Some('`') if chars.peek() == Some(&'`') => {
                        chars.next();
                        segment.push('`');
                    }
                    Some('`') => break,
                    Some(c) => segment.push(c),
                    None => return Err("unterminated backtick quote".into()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if !(c.is_alphanumeric() || c == '_') {
                    return Err(format!("`{c}` must be inside a backtick-quoted segment"));
                }
                segment.push(c);
                chars.next();
            }
            if segment.is_empty() {
                return Err("empty segment".into());
            }
        }
        segments.push(segment);
        match chars.next() {
            None => return Ok(segments),
            Some('.') => {}
            Some(c) => return Err(format!("unexpected `{c}` after a quoted segment")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(paths: &[&str]) -> Result<Mask, Vec<String>> {
        Mask::parse(paths).map_err(|v| {
            v.into_vec()
                .into_iter()
                .map(|violation| {
                    assert_eq!(violation.field, MASK_FIELD);
                    violation.description
                })
                .collect()
        })
    }

    fn attr(key: &str) -> FieldPath {
        FieldPath::Attribute(key.into())
    }

    #[test]
    fn plain_fields() {
        assert_eq!(
            parse(&["subject", "assignee_id"]).unwrap(),
            Mask::Paths(vec![
                FieldPath::Field(WritableField::Subject),
                FieldPath::Field(WritableField::AssigneeId)
            ])
        );
    }

    #[test]
    fn every_writable_field_parses_by_its_name() {
        for field in WritableField::ALL {
            assert_eq!(
                parse(&[field.name()]).unwrap(),
                Mask::Paths(vec![FieldPath::Field(field)])
            );
        }
    }

    #[test]
    fn attribute_keys_bare_and_quoted() {
        assert_eq!(
            parse(&[
                "attributes.plan",
                "attributes.`order id`",
                "attributes.`a.b`"
            ])
            .unwrap(),
            Mask::Paths(vec![attr("plan"), attr("order id"), attr("a.b")])
        );
    }

    #[test]
    fn doubled_backtick_is_a_literal_backtick() {
        assert_eq!(
            parse(&["attributes.`it``s`"]).unwrap(),
            Mask::Paths(vec![attr("it`s")])
        );
    }

    #[test]
    fn quoted_field_name_is_the_same_field() {
        assert_eq!(
            parse(&["`subject`"]).unwrap(),
            Mask::Paths(vec![FieldPath::Field(WritableField::Subject)])
        );
    }

    #[test]
    fn unquoted_special_characters_are_refused() {
        let errors = parse(&["attributes.order id", "attributes.order-id"]).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("`attributes.order id`"), "{errors:?}");
    }

    #[test]
    fn malformed_quoting_is_refused() {
        for bad in [
            "attributes.`open",
            "attributes.`a`b",
            "attributes.",
            ".subject",
            "",
        ] {
            assert!(parse(&[bad]).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn empty_quoted_key_is_refused() {
        let errors = parse(&["attributes.``"]).unwrap_err();
        assert!(errors[0].contains("1 to 64"), "{errors:?}");
    }

    #[test]
    fn nesting_is_refused_except_one_attribute_key() {
        let errors = parse(&["hold_until.seconds", "attributes.a.b", "subject.x"]).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("`hold_until.seconds`"));
        assert!(errors[0].contains("no sub-paths"));
    }

    #[test]
    fn star_alone_is_everything() {
        assert_eq!(parse(&["*"]).unwrap(), Mask::All);
        assert_eq!(parse(&["*", "*"]).unwrap(), Mask::All);
        assert_eq!(Mask::All.paths().len(), WritableField::ALL.len());
    }

    #[test]
    fn star_mixed_with_other_paths_is_refused() {
        let errors = parse(&["*", "subject"]).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("`*`"));
    }

    #[test]
    fn duplicates_are_dropped_keeping_first_order() {
        assert_eq!(
            parse(&["tags", "subject", "tags", "attributes.k", "attributes.`k`"]).unwrap(),
            Mask::Paths(vec![
                FieldPath::Field(WritableField::Tags),
                FieldPath::Field(WritableField::Subject),
                attr("k"),
            ])
        );
    }

    #[test]
    fn output_only_immutable_and_unknown_are_each_named() {
        let errors = parse(&[
            "etag",
            "created_at",
            "channel",
            "origin_agent_id",
            "nope",
            "Subject",
        ])
        .unwrap_err();
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert!(errors[0].contains("`etag`") && errors[0].contains("output only"));
        assert!(errors[2].contains("`channel`") && errors[2].contains("immutable"));
        assert!(errors[4].contains("`nope`") && errors[4].contains("not a field"));
        assert!(errors[5].contains("`Subject`"), "paths are case-sensitive");
    }

    #[test]
    fn over_long_attribute_key_is_refused() {
        let path = format!("attributes.{}", "k".repeat(65));
        assert!(parse(&[path.as_str()]).is_err());
    }
}
