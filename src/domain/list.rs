//! ListConversations: the AIP-160 filter subset, the four orders, and the
//! keyset cursor that a page token carries.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::conversation::{Channel, Priority, Status};
use super::time::{is_supported, truncate_to_micros};

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 1_000;

/// The most terms a filter may join with AND. Each term is one condition of
/// the page's WHERE clause; SQLite refuses an expression about a thousand
/// deep, and no useful filter repeats a field this often.
pub const MAX_FILTER_TERMS: usize = 50;

/// The page size a request asks for: 0 means the default, anything above the
/// maximum is cut to it, a negative one is refused.
pub fn page_size(requested: i32) -> Result<u32, String> {
    match requested {
        n if n < 0 => Err(format!("must not be negative, got {n}")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as u32).min(MAX_PAGE_SIZE)),
    }
}

/// The order of a listing. Ties are broken by id in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    CreatedDesc,
    CreatedAsc,
    UpdatedDesc,
    UpdatedAsc,
}

impl Order {
    pub fn parse(raw: &str) -> Result<Order, String> {
        let words: Vec<&str> = raw.split_whitespace().collect();
        match words.as_slice() {
            [] | ["created_at", "desc"] => Ok(Order::CreatedDesc),
            ["created_at"] => Ok(Order::CreatedAsc),
            ["updated_at", "desc"] => Ok(Order::UpdatedDesc),
            ["updated_at"] => Ok(Order::UpdatedAsc),
            _ => Err(format!(
                "`{}` is not one of `created_at desc`, `created_at`, `updated_at desc`, `updated_at`",
                super::violation::excerpt(raw)
            )),
        }
    }

    pub fn by_updated_at(self) -> bool {
        matches!(self, Order::UpdatedDesc | Order::UpdatedAsc)
    }

    pub fn descending(self) -> bool {
        matches!(self, Order::CreatedDesc | Order::UpdatedDesc)
    }

    fn code(self) -> &'static str {
        match self {
            Order::CreatedDesc => "cd",
            Order::CreatedAsc => "ca",
            Order::UpdatedDesc => "ud",
            Order::UpdatedAsc => "ua",
        }
    }
}

/// `=` or `!=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Equality {
    Is,
    IsNot,
}

/// `<` or `>`, both strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Before,
    After,
}

/// One term of a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Status(Equality, Status),
    Priority(Equality, Priority),
    Channel(Equality, Channel),
    CustomerId(Equality, Uuid),
    /// `None` is `null`: unassigned.
    AssigneeId(Equality, Option<Uuid>),
    IsSpam(Equality, bool),
    CreatedAt(Bound, DateTime<Utc>),
    UpdatedAt(Bound, DateTime<Utc>),
    /// `tags:"x"`: a whole tag.
    HasTag(String),
}

/// Terms joined by AND; empty matches everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter(pub Vec<Condition>);

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Op(&'static str),
}

/// Splits a filter into tokens with their character offsets.
fn tokenize(raw: &str) -> Result<Vec<(usize, Token)>, String> {
    let chars: Vec<char> = raw.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("at character {}: unterminated string", start + 1)),
                    Some('"') => break,
                    Some('\\') if i + 1 < chars.len() => {
                        text.push(chars[i + 1]);
                        i += 2;
                    }
                    Some(&other) => {
                        text.push(other);
                        i += 1;
                    }
                }
            }
            i += 1;
            tokens.push((start, Token::Text(text)));
        } else if c == '!' && chars.get(i + 1) == Some(&'=') {
            tokens.push((start, Token::Op("!=")));
            i += 2;
        } else if let Some(op) = ["=", "<", ">", ":"]
            .into_iter()
            .find(|op| op.starts_with(c))
        {
            tokens.push((start, Token::Op(op)));
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let mut word = String::new();
            while let Some(&w) = chars
                .get(i)
                .filter(|w| w.is_alphanumeric() || **w == '_' || **w == '-' || **w == '.')
            {
                word.push(w);
                i += 1;
            }
            tokens.push((start, Token::Word(word)));
        } else {
            return Err(format!("at character {}: unexpected `{c}`", start + 1));
        }
    }
    Ok(tokens)
}

impl Filter {
    /// Parses the filter; the error says where it broke and why.
    pub fn parse(raw: &str) -> Result<Filter, String> {
        let tokens = tokenize(raw)?;
        let end = raw.chars().count() + 1;
        let mut conditions = Vec::new();
        let mut rest = tokens.as_slice();
        while !rest.is_empty() {
            if !conditions.is_empty() {
                match rest {
                    [(_, Token::Word(and)), tail @ ..] if and == "AND" => rest = tail,
                    [(at, _), ..] => {
                        return Err(format!(
                            "at character {}: expected `AND` between terms",
                            at + 1
                        ));
                    }
                    [] => unreachable!(),
                }
            }
            if conditions.len() == MAX_FILTER_TERMS {
                // `rest` is empty after a trailing AND.
                let at = rest.first().map_or(end, |(at, _)| at + 1);
                return Err(format!(
                    "at character {at}: more than {MAX_FILTER_TERMS} terms"
                ));
            }
            let (condition, tail) = term(rest, end)?;
            conditions.push(condition);
            rest = tail;
        }
        Ok(Filter(conditions))
    }

    /// A canonical spelling, so that equal filters bind page tokens alike
    /// however they were spaced.
    pub fn canonical(&self) -> String {
        self.0
            .iter()
            .map(|c| format!("{c:?}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }
}

/// Tokens with their character offsets.
type Tokens<'a> = &'a [(usize, Token)];

fn term(tokens: Tokens<'_>, end: usize) -> Result<(Condition, Tokens<'_>), String> {
    let (at, field) = match tokens.first() {
        Some((at, Token::Word(field))) => (*at, field.as_str()),
        Some((at, _)) => return Err(format!("at character {}: expected a field name", at + 1)),
        None => return Err(format!("at character {end}: expected a term after `AND`")),
    };
    let Some((op_at, Token::Op(op))) = tokens.get(1) else {
        let where_ = tokens.get(1).map_or(end, |(p, _)| p + 1);
        return Err(format!(
            "at character {where_}: expected an operator after `{}`",
            super::violation::excerpt(field)
        ));
    };
    let (value_at, value) = match tokens.get(2) {
        Some((p, value)) => (p + 1, value),
        None => {
            return Err(format!(
                "at character {end}: expected a value after `{} {op}`",
                super::violation::excerpt(field)
            ));
        }
    };
    let bad_op = || {
        format!(
            "at character {}: `{op}` does not apply to `{field}`",
            op_at + 1
        )
    };
    let equality = || match *op {
        "=" => Ok(Equality::Is),
        "!=" => Ok(Equality::IsNot),
        _ => Err(bad_op()),
    };
    let bound = || match *op {
        "<" => Ok(Bound::Before),
        ">" => Ok(Bound::After),
        _ => Err(bad_op()),
    };
    let bare = |what: &str| match value {
        Token::Word(word) => Ok(word.as_str()),
        _ => Err(format!("at character {value_at}: expected {what}")),
    };
    let text = |what: &str| match value {
        Token::Text(text) => Ok(text.as_str()),
        _ => Err(format!(
            "at character {value_at}: expected {what} in double quotes"
        )),
    };
    let uuid = |raw: &str| {
        Uuid::try_parse(raw).map_err(|_| {
            format!(
                "at character {value_at}: `{}` is not a UUID",
                super::violation::excerpt(raw)
            )
        })
    };
    let time = |bound: Bound, raw: &str| {
        let t = DateTime::parse_from_rfc3339(raw)
            .map(|t| to_stored_precision(bound, t.with_timezone(&Utc)))
            .map_err(|_| {
                format!(
                    "at character {value_at}: `{}` is not an RFC 3339 time",
                    super::violation::excerpt(raw)
                )
            })?;
        if !is_supported(t) {
            return Err(format!(
                "at character {value_at}: `{}` is outside 0001-01-01 to 9999-12-31 UTC",
                super::violation::excerpt(raw)
            ));
        }
        Ok(t)
    };
    let unknown_value = |raw: &str| {
        format!(
            "at character {value_at}: `{}` is not a value of `{field}`",
            super::violation::excerpt(raw)
        )
    };

    let condition = match field {
        "status" => {
            let word = bare("a Status value")?;
            let value = match word {
                "STATUS_OPEN" => Status::Open,
                "STATUS_ON_HOLD" => Status::OnHold,
                "STATUS_CLOSED" => Status::Closed,
                _ => return Err(unknown_value(word)),
            };
            Condition::Status(equality()?, value)
        }
        "priority" => {
            let word = bare("a Priority value")?;
            let value = match word {
                "PRIORITY_LOW" => Priority::Low,
                "PRIORITY_NORMAL" => Priority::Normal,
                "PRIORITY_HIGH" => Priority::High,
                "PRIORITY_URGENT" => Priority::Urgent,
                _ => return Err(unknown_value(word)),
            };
            Condition::Priority(equality()?, value)
        }
        "channel" => {
            let word = bare("a Channel value")?;
            let value = match word {
                "CHANNEL_EMAIL" => Channel::Email,
                "CHANNEL_CHAT" => Channel::Chat,
                _ => return Err(unknown_value(word)),
            };
            Condition::Channel(equality()?, value)
        }
        "customer_id" => Condition::CustomerId(equality()?, uuid(text("a UUID")?)?),
        "assignee_id" => {
            let value = match value {
                Token::Word(word) if word == "null" => None,
                _ => Some(uuid(text("a UUID or null")?)?),
            };
            Condition::AssigneeId(equality()?, value)
        }
        "is_spam" => {
            let word = bare("true or false")?;
            let value = match word {
                "true" => true,
                "false" => false,
                _ => return Err(unknown_value(word)),
            };
            Condition::IsSpam(equality()?, value)
        }
        "created_at" => {
            let bound = bound()?;
            Condition::CreatedAt(bound, time(bound, text("a time")?)?)
        }
        "updated_at" => {
            let bound = bound()?;
            Condition::UpdatedAt(bound, time(bound, text("a time")?)?)
        }
        "tags" => {
            if *op != ":" {
                return Err(bad_op());
            }
            // Tags are stored trimmed; so is the one asked for.
            Condition::HasTag(text("a tag")?.trim().to_owned())
        }
        _ => {
            return Err(format!(
                "at character {}: `{}` cannot be filtered on",
                at + 1,
                super::violation::excerpt(field)
            ));
        }
    };
    Ok((condition, &tokens[3..]))
}

/// `t` in whole microseconds, as times are stored, on the same side of
/// every stored time: `> t` holds for what `> t cut to the microsecond`
/// holds for, and `< t` for what `< the next microsecond` holds for when `t`
/// has a finer fraction (cutting it down would leave out a time stored at
/// exactly the microsecond cut to).
fn to_stored_precision(bound: Bound, t: DateTime<Utc>) -> DateTime<Utc> {
    let cut = truncate_to_micros(t);
    match bound {
        Bound::Before if cut < t => cut + chrono::TimeDelta::microseconds(1),
        _ => cut,
    }
}

/// Where a page ends: the sort value and id of its last conversation, and
/// when the first page of this pass was read.
///
/// The snapshot matters for the `updated_at` orders: an update moves a
/// conversation in that order, so a pass lists only conversations with
/// `updated_at <= snapshot`. A conversation updated during the pass is left
/// to the next pass instead of being returned twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub sort_value: DateTime<Utc>,
    pub id: Uuid,
    pub snapshot: DateTime<Utc>,
}

/// What a page token carries: the cursor, and the filter and order it is
/// valid for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    pub cursor: Cursor,
    binding: String,
}

fn binding(filter: &Filter, order: Order) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(order.code())
        .chain_update(filter.canonical())
        .finalize();
    hex::encode(&digest[..8])
}

impl PageToken {
    pub fn new(cursor: Cursor, filter: &Filter, order: Order) -> PageToken {
        PageToken {
            cursor,
            binding: binding(filter, order),
        }
    }

    /// Opaque: `v1.<binding>.<micros>.<id>.<snapshot micros>`, base64url.
    pub fn encode(&self) -> String {
        use base64::Engine;
        let plain = format!(
            "v1.{}.{}.{}.{}",
            self.binding,
            self.cursor.sort_value.timestamp_micros(),
            self.cursor.id.simple(),
            self.cursor.snapshot.timestamp_micros()
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(plain)
    }

    /// Decodes a token and checks it was issued for this filter and order.
    pub fn decode(raw: &str, filter: &Filter, order: Order) -> Result<Cursor, String> {
        use base64::Engine;
        let garbage = || "is not a page token issued by this service".to_owned();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .map_err(|_| garbage())?;
        let plain = String::from_utf8(bytes).map_err(|_| garbage())?;
        let parts: Vec<&str> = plain.split('.').collect();
        let ["v1", bound_to, micros, id, snapshot] = parts.as_slice() else {
            return Err(garbage());
        };
        // The service issues only times it keeps (`time::is_supported`);
        // a token edited past them would reach the database.
        let time = |raw: &str| {
            raw.parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_micros)
                .filter(|t| is_supported(*t))
                .ok_or_else(garbage)
        };
        let sort_value = time(micros)?;
        let snapshot = time(snapshot)?;
        let id = Uuid::try_parse(id).map_err(|_| garbage())?;
        if *bound_to != binding(filter, order) {
            return Err("was issued for a different filter or order_by".into());
        }
        Ok(Cursor {
            sort_value,
            id,
            snapshot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0), Ok(50));
        assert_eq!(page_size(7), Ok(7));
        assert_eq!(page_size(1_000), Ok(1_000));
        assert_eq!(page_size(5_000), Ok(1_000));
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn orders() {
        assert_eq!(Order::parse("").unwrap(), Order::CreatedDesc);
        assert_eq!(Order::parse("created_at desc").unwrap(), Order::CreatedDesc);
        assert_eq!(
            Order::parse("  updated_at   desc ").unwrap(),
            Order::UpdatedDesc
        );
        assert_eq!(Order::parse("updated_at").unwrap(), Order::UpdatedAsc);
        for bad in [
            "id",
            "created_at asc",
            "created_at DESC",
            "updated_at desc, id",
        ] {
            assert!(Order::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_term_kind_parses() {
        let id = Uuid::from_u128(9);
        let raw = format!(
            r#"status = STATUS_OPEN AND priority != PRIORITY_LOW AND channel = CHANNEL_CHAT AND customer_id = "{id}" AND assignee_id = null AND assignee_id != "{id}" AND is_spam = false AND created_at > "2026-01-01T00:00:00+02:00" AND updated_at < "2026-02-01T00:00:00Z" AND tags:"vip""#
        );
        let filter = Filter::parse(&raw).unwrap();
        assert_eq!(filter.0.len(), 10);
        assert_eq!(
            filter.0[7],
            Condition::CreatedAt(Bound::After, "2025-12-31T22:00:00Z".parse().unwrap())
        );
        assert_eq!(filter.0[4], Condition::AssigneeId(Equality::Is, None));
        assert_eq!(filter.0[9], Condition::HasTag("vip".into()));
        assert_eq!(Filter::parse("").unwrap(), Filter::default());
    }

    #[test]
    fn errors_say_where_and_why() {
        let cases = [
            ("nope = 1", "character 1", "cannot be filtered on"),
            ("status = STATUS_MAYBE", "character 10", "not a value"),
            ("status > STATUS_OPEN", "character 8", "does not apply"),
            (
                "created_at = \"2026-01-01T00:00:00Z\"",
                "character 12",
                "does not apply",
            ),
            (
                "status = STATUS_OPEN priority = PRIORITY_LOW",
                "character 22",
                "expected `AND`",
            ),
            (
                "status = STATUS_OPEN AND",
                "character 25",
                "expected a term",
            ),
            ("customer_id = \"x\"", "character 15", "not a UUID"),
            ("customer_id = abc", "character 15", "double quotes"),
            ("tags = \"x\"", "character 6", "does not apply"),
            ("subject = \"x", "character 11", "unterminated"),
            ("status", "character 7", "expected an operator"),
            ("is_spam = maybe", "character 11", "not a value"),
            ("created_at > \"yesterday\"", "character 14", "RFC 3339"),
            (
                "status = STATUS_OPEN OR status = STATUS_CLOSED",
                "character 22",
                "expected `AND`",
            ),
            ("(status = STATUS_OPEN)", "character 1", "unexpected"),
        ];
        for (raw, position, why) in cases {
            let error = Filter::parse(raw).unwrap_err();
            assert!(
                error.contains(position) && error.contains(why),
                "{raw:?}: {error}"
            );
        }
    }

    #[test]
    fn errors_quote_at_most_an_excerpt_of_the_filter() {
        let long = "a".repeat(20_000);
        for raw in [long.clone(), format!("{long} ="), format!("{long} = ")] {
            let error = Filter::parse(&raw).unwrap_err();
            assert!(error.len() < 200, "{} bytes: {error:.100}", error.len());
        }
    }

    #[test]
    fn a_filter_has_at_most_fifty_terms() {
        let terms = |n: usize| vec!["is_spam = false"; n].join(" AND ");
        assert_eq!(Filter::parse(&terms(50)).unwrap().0.len(), 50);
        let error = Filter::parse(&terms(51)).unwrap_err();
        // The 51st term starts after 50 terms of 15 characters and 50 " AND ".
        assert!(
            error.contains("character 1001") && error.contains("more than 50 terms"),
            "{error}"
        );
        // Nothing after the last AND: the position is the end.
        let error = Filter::parse(&format!("{} AND", terms(50))).unwrap_err();
        assert!(error.contains("character 1000"), "{error}");
    }

    #[test]
    fn time_bounds_keep_stored_microseconds_on_their_side() {
        let at = |raw: &str| raw.parse::<DateTime<Utc>>().unwrap();
        let cases = [
            // A finer fraction: `<` rounds up, `>` down.
            (
                "created_at < \"2026-01-01T00:00:00.0000005Z\"",
                Bound::Before,
                "2026-01-01T00:00:00.000001Z",
            ),
            (
                "created_at > \"2026-01-01T00:00:00.0000005Z\"",
                Bound::After,
                "2026-01-01T00:00:00Z",
            ),
            (
                "updated_at < \"2026-01-01T00:00:00.000000999Z\"",
                Bound::Before,
                "2026-01-01T00:00:00.000001Z",
            ),
            // With an offset, and before 1970 (chrono's fraction is never
            // negative, so cutting it goes down there too).
            (
                "created_at < \"2026-01-01T02:00:00.0000005+02:00\"",
                Bound::Before,
                "2026-01-01T00:00:00.000001Z",
            ),
            (
                "created_at < \"1969-12-31T23:59:59.9999995Z\"",
                Bound::Before,
                "1970-01-01T00:00:00Z",
            ),
            (
                "created_at > \"1969-12-31T23:59:59.9999995Z\"",
                Bound::After,
                "1969-12-31T23:59:59.999999Z",
            ),
            // Whole microseconds stay as they are.
            (
                "updated_at < \"2026-01-01T00:00:00.000007Z\"",
                Bound::Before,
                "2026-01-01T00:00:00.000007Z",
            ),
            (
                "created_at > \"2026-01-01T01:00:00.000007+01:00\"",
                Bound::After,
                "2026-01-01T00:00:00.000007Z",
            ),
        ];
        for (raw, bound, expected) in cases {
            let parsed = Filter::parse(raw).unwrap().0;
            let (Condition::CreatedAt(b, t) | Condition::UpdatedAt(b, t)) = parsed[0] else {
                panic!("{raw}: {parsed:?}");
            };
            assert_eq!((b, t), (bound, at(expected)), "{raw}");
        }
    }

    #[test]
    fn time_bounds_outside_the_years_kept_are_refused() {
        for raw in [
            // Rounded up, or moved by its offset, past 9999-12-31 UTC.
            "created_at < \"9999-12-31T23:59:59.9999995Z\"",
            "updated_at > \"9999-12-31T23:30:00-01:00\"",
            "created_at > \"0000-12-31T23:59:59Z\"",
            "created_at < \"0001-01-01T00:30:00+01:00\"",
        ] {
            let error = Filter::parse(raw).unwrap_err();
            assert!(
                error.contains("character 14")
                    && error.contains("outside 0001-01-01 to 9999-12-31"),
                "{raw}: {error}"
            );
        }
        for raw in [
            "created_at < \"9999-12-31T23:59:59.999999Z\"",
            "created_at > \"0001-01-01T00:00:00Z\"",
        ] {
            assert!(Filter::parse(raw).is_ok(), "{raw}");
        }
    }

    #[test]
    fn a_token_edited_to_a_time_the_service_never_writes_is_refused() {
        use base64::Engine;
        let filter = Filter::default();
        let bound_to = binding(&filter, Order::CreatedDesc);
        let id = Uuid::from_u128(7).simple();
        let token = |micros: i64, snapshot: i64| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!("v1.{bound_to}.{micros}.{id}.{snapshot}"))
        };
        let now = Utc::now().timestamp_micros();
        assert!(PageToken::decode(&token(now, now), &filter, Order::CreatedDesc).is_ok());
        // About 5953 BC, and past the year 9999.
        for (micros, snapshot) in [
            (-250_000_000_000_000_000, now),
            (now, 253_402_300_800_000_000),
        ] {
            assert!(
                PageToken::decode(&token(micros, snapshot), &filter, Order::CreatedDesc)
                    .unwrap_err()
                    .contains("not a page token"),
                "{micros} {snapshot}"
            );
        }
    }

    #[test]
    fn page_tokens_round_trip_and_are_bound_to_filter_and_order() {
        let filter = Filter::parse("status = STATUS_OPEN").unwrap();
        let cursor = Cursor {
            sort_value: "2026-03-04T05:06:07.123456Z".parse().unwrap(),
            id: Uuid::from_u128(42),
            snapshot: "2026-03-05T00:00:00Z".parse().unwrap(),
        };
        let token = PageToken::new(cursor, &filter, Order::CreatedDesc).encode();
        assert_eq!(
            PageToken::decode(&token, &filter, Order::CreatedDesc),
            Ok(cursor)
        );
        let spaced = Filter::parse("  status=STATUS_OPEN ").unwrap();
        assert_eq!(
            PageToken::decode(&token, &spaced, Order::CreatedDesc),
            Ok(cursor),
            "spacing does not matter"
        );
        assert!(
            PageToken::decode(&token, &Filter::default(), Order::CreatedDesc)
                .unwrap_err()
                .contains("different")
        );
        assert!(
            PageToken::decode(&token, &filter, Order::UpdatedDesc)
                .unwrap_err()
                .contains("different")
        );
        for garbage in ["", "abc", "djEuMTIzLjQ1Ng", "!!!"] {
            assert!(
                PageToken::decode(garbage, &filter, Order::CreatedDesc)
                    .unwrap_err()
                    .contains("not a page token")
            );
        }
    }
}
