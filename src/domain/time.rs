//! Times are kept to the microsecond: PostgreSQL stores no finer, so a value
//! reads back exactly as it was written on either database.
//!
//! And only from 0001-01-01 to 9999-12-31 UTC, the range of a protobuf
//! Timestamp: SQLite compares times as the text SeaORM stores, which
//! orders correctly only with four-digit years, and PostgreSQL's
//! timestamps start in 4713 BC.

use chrono::{DateTime, SubsecRound, Utc};

/// 0001-01-01T00:00:00Z, in seconds since the epoch.
pub const MIN_SECONDS: i64 = -62_135_596_800;
/// 9999-12-31T23:59:59Z, in seconds since the epoch.
pub const MAX_SECONDS: i64 = 253_402_300_799;

/// Whether `at` falls in the range the service keeps times in.
pub fn is_supported(at: DateTime<Utc>) -> bool {
    (MIN_SECONDS..=MAX_SECONDS).contains(&at.timestamp())
}

pub fn truncate_to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

pub fn now() -> DateTime<Utc> {
    truncate_to_micros(Utc::now())
}
