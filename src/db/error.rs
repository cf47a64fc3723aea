//! Classifies database errors once: unreachable databases (and locks not
//! waited for) become UNAVAILABLE, everything else INTERNAL (logged, never
//! shown to callers).

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
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                is_sqlite_busy_code(&code)
            } else {
                is_postgres_unavailable(&code)
            }
        }
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs that mean "not now" rather than "not this statement":
/// class 08 (connection exception), shutdown and start-up (57P01-57P03), too
/// many connections (53300), and a lock not waited for (55P03; the hot
/// statements answer it themselves, see `db::Direct`).
fn is_postgres_unavailable(sqlstate: &str) -> bool {
    sqlstate.starts_with("08")
        || matches!(sqlstate, "57P01" | "57P02" | "57P03" | "53300" | "55P03")
}

/// SQLite result codes SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their
/// extended codes: another connection held the lock a write needed, past
/// the busy timeout (or a statement of the same connection held a table).
fn is_sqlite_busy_code(code: &str) -> bool {
    code.parse::<i32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
}

/// Whether SQLite answered SQLITE_BUSY (5, and its extended codes): another
/// connection held the lock the statement needed, and trying again later
/// may succeed. (SQLITE_LOCKED is a conflict within one connection, which
/// waiting does not clear.)
pub(super) fn is_sqlite_busy(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                && db
                    .code()
                    .and_then(|code| code.parse::<i32>().ok())
                    .is_some_and(|n| n & 0xff == 5)
        }
        _ => false,
    }
}

/// Whether PostgreSQL gave up waiting for a lock (SQLSTATE 55P03,
/// `lock_not_available`: `lock_timeout` passed, or `NOWAIT`).
pub(super) fn is_lock_not_available(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_none()
                && db.code().as_deref() == Some("55P03")
        }
        _ => false,
    }
}

/// [`is_lock_not_available`], for an error already in SeaORM's terms.
pub(super) fn is_lock_refused(err: &DbErr) -> bool {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            is_lock_not_available(e)
        }
        _ => false,
    }
}

/// Whether a unique index refused the write (on either database).
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_connection_trouble_is_unavailable() {
        for code in ["08006", "08001", "57P01", "57P03", "53300", "55P03"] {
            assert!(is_postgres_unavailable(code), "{code}");
        }
    }

    #[test]
    fn postgres_statement_errors_are_not_unavailable() {
        // 22021: invalid byte in text; 42501: permission denied; 23505: unique.
        for code in ["22021", "22022", "42501", "23505", "42P01"] {
            assert!(!is_postgres_unavailable(code), "{code}");
        }
    }

    #[test]
    fn sqlite_busy_and_locked_are_unavailable_with_extended_codes() {
        for code in ["5", "6", "517", "261", "262"] {
            assert!(is_sqlite_busy_code(code), "{code}");
        }
        for code in ["19", "2067", "1", "11"] {
            assert!(!is_sqlite_busy_code(code), "{code}");
        }
    }
}
