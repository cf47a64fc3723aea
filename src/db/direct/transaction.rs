//! Write transactions on direct connections ([`DirectTransaction`]), and
//! SQLite's writer, which waits for another process's write lock between
//! attempts rather than inside a statement (`while_busy!`).

use std::{sync::Arc, time::Duration};

use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, Statement,
    sqlx::{self, AssertSqlSafe, Executor, PgConnection, SqliteConnection, sqlite::SqliteRow},
};
use tokio::sync::Mutex;
use tracing::Instrument;

use super::{DirectPool, Lease, bound, exec_err, query_err};
use crate::db::{entity::conversation::Model, error::is_sqlite_busy, hot::model};

/// A write transaction on a direct connection, which runs SeaORM's
/// statements as `DatabaseTransaction` does, without the pool's ping after
/// it.
///
/// Dropped without [`commit`](Self::commit) (an early return), it is rolled
/// back at once, in a task of its own, so its locks do not wait for the
/// connection's next use. One dropped while a statement ran (a cancelled
/// call) or after a failed statement closes its connection, which ends the
/// transaction in the database.
pub struct DirectTransaction {
    /// `None` once committed or handed to the rollback.
    conn: Mutex<Option<WriteLease>>,
    backend: DbBackend,
    /// How long the rollback of a dropped transaction may take before its
    /// connection is closed instead.
    rollback_timeout: Duration,
}

/// The connection of a [`DirectTransaction`].
enum WriteLease {
    Postgres(Lease<PgConnection>),
    Sqlite(Lease<SqliteConnection>),
}

/// `$body` with `$conn` bound to the lease's connection, for each backend
/// (the body is compiled once per connection type).
macro_rules! on_lease {
    ($lease:expr, $conn:ident => $body:expr) => {
        match $lease {
            WriteLease::Postgres($conn) => $body,
            WriteLease::Sqlite($conn) => $body,
        }
    };
}

/// Runs `$query` on the transaction's connection with `$method` (`execute`,
/// `fetch_all`...) and passes the result to `$then`. The connection is
/// marked unsettled until the statement has succeeded.
macro_rules! run {
    ($txn:expr, $query:expr, $method:ident, $err:expr, $then:expr) => {{
        let mut guard = $txn.conn.lock().await;
        on_lease!(guard.as_mut().expect("open until committed"), conn => {
            conn.state().settled = false;
            let result = $query.$method(&mut **conn).await.map_err($err)?;
            conn.settle();
            $then(result)
        })
    }};
}

/// The longest pause between two attempts of a write SQLite found busy.
const MAX_BUSY_PAUSE: Duration = Duration::from_millis(25);

/// Evaluates `$attempt`, a statement on `$lease`, again while SQLite answers
/// that the database is busy (another process holds the write lock), after
/// a pause that grows to [`MAX_BUSY_PAUSE`], until `$busy_timeout` has
/// passed. SQLite's writer connection has no busy handler of its own
/// (`db::Direct::of`): its busy handler waits inside the statement, where a
/// cut-off call cannot stop it, and the statement would then write after
/// the caller was told DEADLINE_EXCEEDED. Waiting here, between attempts,
/// ends with the call. A busy statement had no effect (SQLite rolls it back
/// and sqlx resets it before its next command), so the connection stays
/// fit for reuse, while it waits and after the last busy answer.
macro_rules! while_busy {
    ($busy_timeout:expr, $lease:ident, $attempt:expr) => {{
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            $lease.state().settled = false;
            match $attempt {
                Err(err) if is_sqlite_busy(&err) => {
                    $lease.settle();
                    let left = $busy_timeout.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        break Err(err);
                    }
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(MAX_BUSY_PAUSE);
                }
                result => break result,
            }
        }
    }};
}

impl DirectPool<SqliteConnection> {
    /// Runs `statement`, a write, alone, in autocommit, on this pool's
    /// connection (SQLite's writer), again while another process holds the
    /// write lock, for up to `busy_timeout` (see `while_busy!`).
    pub async fn write_alone(
        &self,
        statement: Statement,
        busy_timeout: Duration,
    ) -> Result<Vec<SqliteRow>, DbErr> {
        let mut lease = self.get().await?;
        let rows = while_busy!(
            busy_timeout,
            lease,
            bound(statement.clone()).fetch_all(&mut *lease).await
        )
        .map_err(query_err)?;
        lease.settle();
        Ok(rows)
    }
}

impl DirectTransaction {
    /// Begins a transaction on a direct PostgreSQL connection with `begin`,
    /// `BEGIN` and the `SET LOCAL`s that go with it (see `db::Direct`), in
    /// one exchange; row locks come from `SELECT ... FOR UPDATE`.
    pub async fn begin_postgres(
        pool: &DirectPool<PgConnection>,
        begin: &Arc<str>,
    ) -> Result<Self, DbErr> {
        let mut lease = pool.get().await?;
        lease
            .execute(sqlx::raw_sql(AssertSqlSafe(Arc::clone(begin))))
            .await
            .map_err(exec_err)?;
        Ok(Self::begun(
            WriteLease::Postgres(lease),
            pool.acquire_timeout,
        ))
    }

    /// BEGIN IMMEDIATE on SQLite's writer connection: the write lock up
    /// front, rather than "database is locked" when a read turns into a
    /// write. Another process's writer is waited out for up to
    /// `busy_timeout` (see `while_busy!`).
    pub async fn begin_sqlite(
        pool: &DirectPool<SqliteConnection>,
        busy_timeout: Duration,
    ) -> Result<Self, DbErr> {
        let mut lease = pool.get().await?;
        while_busy!(busy_timeout, lease, lease.execute("BEGIN IMMEDIATE").await)
            .map_err(exec_err)?;
        Ok(Self::begun(WriteLease::Sqlite(lease), pool.acquire_timeout))
    }

    /// As [`begin_sqlite`](Self::begin_sqlite), with `first`, a statement
    /// returning `Entity::find()`'s columns, in the same exchange with the
    /// connection: one hand-over to sqlx's worker thread instead of two,
    /// while every other write waits for the writer. Returns `first`'s rows,
    /// decoded by position.
    pub async fn begin_sqlite_with(
        pool: &DirectPool<SqliteConnection>,
        busy_timeout: Duration,
        first: Statement,
    ) -> Result<(Self, Vec<Model>), DbErr> {
        let mut lease = pool.get().await?;
        let both = Statement {
            sql: format!("BEGIN IMMEDIATE; {}", first.sql),
            ..first
        };
        let rows = while_busy!(busy_timeout, lease, {
            match bound(both.clone()).fetch_all(&mut *lease).await {
                // In WAL mode only the BEGIN can be busy: it takes the
                // snapshot and the write lock, and `first` then runs under
                // them. `while_busy!` reuses a connection after a busy
                // answer, so should `first` ever be the one refused, this
                // ends the transaction BEGIN opened. After a busy BEGIN
                // there is none, and SQLite says so.
                Err(busy) if is_sqlite_busy(&busy) => match lease.execute("ROLLBACK").await {
                    Err(err) if !no_transaction(&err) => Err(err),
                    _ => Err(busy),
                },
                result => result,
            }
        })
        .map_err(query_err)?;
        let models = rows.iter().map(model).collect::<Result<_, _>>()?;
        let txn = Self::begun(WriteLease::Sqlite(lease), pool.acquire_timeout);
        Ok((txn, models))
    }

    /// The transaction `lease`'s BEGIN has opened.
    fn begun(mut lease: WriteLease, rollback_timeout: Duration) -> Self {
        let backend = match lease {
            WriteLease::Postgres(_) => DbBackend::Postgres,
            WriteLease::Sqlite(_) => DbBackend::Sqlite,
        };
        on_lease!(&mut lease, conn => {
            conn.state().in_transaction = true;
            conn.settle();
        });
        Self {
            conn: Mutex::new(Some(lease)),
            backend,
            rollback_timeout,
        }
    }

    /// Commits. After a statement that failed or was cut off it refuses
    /// instead (and the connection is closed, which rolls back):
    /// PostgreSQL answers COMMIT in a failed transaction with a rollback,
    /// and no error.
    pub async fn commit(mut self) -> Result<(), DbErr> {
        let mut lease = self.conn.get_mut().take().expect("open until committed");
        on_lease!(&mut lease, conn => {
            if !conn.state().settled {
                return Err(refused_commit());
            }
            conn.state().settled = false;
            conn.execute("COMMIT").await.map_err(exec_err)?;
            conn.state().in_transaction = false;
            conn.settle();
        });
        Ok(())
    }

    /// Runs `last`, which returns `Entity::find()`'s columns, then commits;
    /// returns `last`'s rows, decoded by position. On SQLite the two go to
    /// the connection in one exchange (one hand-over to sqlx's worker
    /// thread), on PostgreSQL one after the other. The rows are decoded
    /// after the COMMIT, so a decoding error comes after a write that holds.
    pub async fn commit_with(mut self, last: Statement) -> Result<Vec<Model>, DbErr> {
        let mut lease = match self.conn.get_mut().take() {
            Some(WriteLease::Sqlite(lease)) => lease,
            postgres => {
                *self.conn.get_mut() = postgres;
                let models = self.fetch_models(last).await?;
                self.commit().await?;
                return Ok(models);
            }
        };
        if !lease.state().settled {
            return Err(refused_commit());
        }
        lease.state().settled = false;
        let both = Statement {
            sql: format!("{}; COMMIT", last.sql),
            ..last
        };
        // `fetch_all`: sqlx's worker runs every statement of the text only
        // when asked for all rows (`fetch_optional` stops at the first row,
        // and the COMMIT would not run).
        let rows = bound(both)
            .fetch_all(&mut *lease)
            .await
            .map_err(query_err)?;
        lease.state().in_transaction = false;
        lease.settle();
        rows.iter().map(model).collect()
    }

    /// Runs `statement`, which returns `Entity::find()`'s columns, and
    /// decodes its rows by position.
    pub async fn fetch_models(&self, statement: Statement) -> Result<Vec<Model>, DbErr> {
        run!(self, bound(statement), fetch_all, query_err, |rows: Vec<
            _,
        >| {
            rows.iter().map(model).collect()
        })
    }
}

/// Whether `err` is SQLite refusing a ROLLBACK with no transaction open.
fn no_transaction(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|err| err.message().contains("no transaction is active"))
}

fn refused_commit() -> DbErr {
    DbErr::Custom("COMMIT refused: a statement of the transaction failed".into())
}

impl Drop for DirectTransaction {
    fn drop(&mut self) {
        let Some(lease) = self.conn.get_mut().take() else {
            return;
        };
        let timeout = self.rollback_timeout;
        on_lease!(lease, conn => {
            let mut conn = conn;
            if !conn.state().settled {
                // Closed when dropped, and the database rolls back.
                return;
            }
            conn.state().settled = false;
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                // No runtime to roll back on: closed, which rolls back.
                return;
            };
            let rollback = async move {
                match tokio::time::timeout(timeout, conn.execute("ROLLBACK")).await {
                    Ok(Ok(_)) => {
                        conn.state().in_transaction = false;
                        conn.settle();
                    }
                    // The lease drops unsettled: the connection is closed.
                    Ok(Err(error)) => tracing::warn!(%error, "rollback failed; connection closed"),
                    Err(_) => tracing::warn!(?timeout, "rollback timed out; connection closed"),
                }
            };
            runtime.spawn(rollback.instrument(tracing::Span::current()));
        })
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for DirectTransaction {
    fn get_database_backend(&self) -> DbBackend {
        self.backend
    }

    async fn execute_raw(&self, statement: Statement) -> Result<ExecResult, DbErr> {
        run!(self, bound(statement), execute, exec_err, |done| Ok(
            ExecResult::from(done)
        ))
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        run!(
            self,
            sqlx::raw_sql(AssertSqlSafe(sql.to_owned())),
            execute,
            exec_err,
            |done| Ok(ExecResult::from(done))
        )
    }

    async fn query_one_raw(&self, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
        run!(
            self,
            bound(statement),
            fetch_optional,
            query_err,
            |row: Option<_>| { Ok(row.map(QueryResult::from)) }
        )
    }

    async fn query_all_raw(&self, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
        run!(self, bound(statement), fetch_all, query_err, |rows: Vec<
            _,
        >| {
            Ok(rows.into_iter().map(QueryResult::from).collect())
        })
    }
}
