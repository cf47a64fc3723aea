//! Classifies database errors once: unreachable databases become
//! UNAVAILABLE, everything else INTERNAL (logged, never shown to callers).

use sea_orm::{DbErr, RuntimeErr, SqlErr, sqlx};

use crate::error::Error;

impl From<DbErr> for Error {
    fn from(err: DbErr) -> Self {
        if is_unavailable(&err) {
            Error::Unavailable(err.to_string())
        } else {
            Error::Internal(err.to_string())
        }
    }
}

/// Whether the database could not be reached or refused work for now, as
/// opposed to answering with an error about the statement.
pub fn is_unavailable(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            is_sqlx_unavailable(e)
        }
        _ => false,
    }
}

fn is_sqlx_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // PostgreSQL: class 08 connection exceptions, shutdown and
            // start-up (57P01-57P03), too many connections (53300).
            code.starts_with("08")
                || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
                // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their
                // extended codes, after the busy timeout ran out.
                || code.parse::<i32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
        }),
        _ => false,
    }
}

/// Whether a unique index refused the write (on either database).
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}
