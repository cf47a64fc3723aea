//! Times are kept to the microsecond: PostgreSQL stores no finer, so a value
//! reads back exactly as it was written on either database.

use chrono::{DateTime, SubsecRound, Utc};

pub fn truncate_to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

pub fn now() -> DateTime<Utc> {
    truncate_to_micros(Utc::now())
}
