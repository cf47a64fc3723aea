//! Field violations, collected so that a caller learns every problem with a
//! request at once rather than one per round trip.

/// A caller's value as quoted in a violation: escaped, and cut to 64
/// characters so that error details stay far below gRPC metadata limits.
pub fn excerpt(raw: &str) -> String {
    const MAX: usize = 64;
    let mut quoted: String = raw
        .chars()
        .take(MAX)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if raw.chars().nth(MAX).is_some() {
        quoted.push('…');
    }
    quoted
}

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, e.g. `conversation.subject`.
    pub field: String,
    /// What is wrong, in words a caller can act on.
    pub description: String,
}

/// Every violation found in one request, in the order found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    pub fn extend(&mut self, other: Violations) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[FieldViolation] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<FieldViolation> {
        self.0
    }

    /// `Ok(value)` when nothing was found, else every violation.
    pub fn into_result<T>(self, value: T) -> Result<T, Violations> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}
