//! Connections for the hot statements (`db::hot`), kept outside sqlx's pool.
//!
//! sqlx's pool pings every connection it takes back, unconditionally: on
//! PostgreSQL a Sync and a wait for ReadyForQuery. For a call that is one
//! statement that is a second round trip, and the database wakes for it as
//! often as for the statement. These connections are opened with the pool's
//! own options and handed out by a deadpool pool that checks them without a
//! round trip:
//!
//! - a connection goes back into use only if its last statement ran to its
//!   end without error ([`Lease::settle`]); one whose call was cancelled or
//!   failed midway is closed as its lease drops, never reused in an unknown
//!   state, and never left holding a transaction's locks;
//! - one not handed out for longer than `db::PING_IF_IDLE_FOR` (a second)
//!   is pinged before it is, as the main pool does (see `db::options`);
//! - one older than [`MAX_LIFETIME`] is replaced, and one unused for
//!   [`IDLE_TIMEOUT`] closed, as sqlx's defaults do.
//!
//! Create's and Update's transactions run on one too ([`DirectTransaction`],
//! in `transaction`), so their COMMIT is not followed by a ping either: on
//! PostgreSQL one of the pool's, on SQLite the one writer connection, which
//! has no busy handler: a write that finds another process's write lock
//! waits between attempts instead (`transaction::while_busy!`), where its
//! call's deadline can end it.

use std::{
    ops::{Deref, DerefMut},
    time::Duration,
};

use deadpool::{
    Runtime,
    managed::{self, Metrics, Object, PoolError, QueueMode, RecycleError, RecycleResult},
};
use sea_orm::{
    ConnAcquireErr, DbErr, RuntimeErr, Statement, Values,
    sqlx::{self, AssertSqlSafe},
};
use sea_query_sqlx::SqlxValues;

use super::PING_IF_IDLE_FOR;

mod transaction;
pub use transaction::DirectTransaction;

/// How long a connection serves before it is replaced.
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// How long a connection may go unused before it is closed (sqlx's pool's
/// default), so that a burst's connections do not stay open for good.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// A pool of connections of type `C` (`PgConnection`, `SqliteConnection`).
pub struct DirectPool<C: sqlx::Connection> {
    pool: managed::Pool<Opener<C>>,
    acquire_timeout: Duration,
}

impl<C: sqlx::Connection> std::fmt::Debug for DirectPool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectPool")
            .field("status", &self.pool.status())
            .finish()
    }
}

impl<C: sqlx::Connection> Clone for DirectPool<C> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            acquire_timeout: self.acquire_timeout,
        }
    }
}

/// Opens connections with the main pool's options, and decides whether one
/// may be reused.
struct Opener<C: sqlx::Connection> {
    options: C::Options,
}

/// A pooled connection, whether its last use ran to its end, and whether
/// it holds a transaction that was neither committed nor rolled back.
struct Conn<C> {
    raw: C,
    settled: bool,
    in_transaction: bool,
}

impl<C: sqlx::Connection> managed::Manager for Opener<C> {
    type Type = Conn<C>;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<Conn<C>, sqlx::Error> {
        Ok(Conn {
            raw: C::connect_with(&self.options).await?,
            settled: true,
            in_transaction: false,
        })
    }

    async fn recycle(&self, conn: &mut Conn<C>, metrics: &Metrics) -> RecycleResult<sqlx::Error> {
        if !conn.settled {
            return Err(RecycleError::message("its last statement did not finish"));
        }
        if metrics.age() > MAX_LIFETIME {
            return Err(RecycleError::message("it reached its lifetime"));
        }
        if conn.in_transaction {
            // Not reached: a transaction ends in its COMMIT, its ROLLBACK
            // (see `DirectTransaction`'s drop), or a closed connection.
            return Err(RecycleError::message("it holds a transaction"));
        }
        if metrics.last_used() > PING_IF_IDLE_FOR {
            conn.raw.ping().await?;
        }
        Ok(())
    }
}

impl<C: sqlx::Connection> DirectPool<C> {
    /// At most `max_size` connections, opened on demand with `options`. A
    /// caller waits at most `acquire_timeout` for one, all told: for a free
    /// slot, opening a connection, and checking idle ones.
    pub fn new(options: C::Options, max_size: u32, acquire_timeout: Duration) -> Self {
        let pool = managed::Pool::builder(Opener { options })
            .max_size(usize::try_from(max_size).unwrap_or(usize::MAX))
            .wait_timeout(Some(acquire_timeout))
            .create_timeout(Some(acquire_timeout))
            .recycle_timeout(Some(acquire_timeout))
            // The connection used last goes out first: the busy ones stay
            // warm (not pinged), and the rest go idle and are closed.
            .queue_mode(QueueMode::Lifo)
            .runtime(Runtime::Tokio1)
            .build()
            // Only a timeout without a runtime fails to build.
            .expect("a runtime is set");
        Self {
            pool,
            acquire_timeout,
        }
    }

    /// A connection, for one use: call [`Lease::settle`] once it succeeded,
    /// or it is closed when the lease drops instead of reused.
    pub async fn get(&self) -> Result<Lease<C>, DbErr> {
        // deadpool times each step on its own, and tries the next idle
        // connection after one whose check timed out: one deadline for all.
        let mut conn = tokio::time::timeout(self.acquire_timeout, self.pool.get())
            .await
            .map_err(|_| DbErr::ConnectionAcquire(ConnAcquireErr::Timeout))?
            .map_err(acquire_err)?;
        conn.settled = false;
        Ok(Lease(Some(conn)))
    }

    /// Every `every`, closes the idle connections not handed out for
    /// `idle_for`, until the pool is closed or dropped.
    pub fn reap_idle(&self, idle_for: Duration, every: Duration)
    where
        C: 'static,
    {
        let pool = self.pool.weak();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade().filter(|pool| !pool.is_closed()) else {
                    return;
                };
                let idle = pool.retain(|_, metrics| metrics.last_used() < idle_for);
                drop(pool);
                for conn in idle.removed {
                    let _ = conn.raw.close().await;
                }
            }
        });
    }

    /// Connections open, connections idle, and the most there may be.
    pub fn stats(&self) -> (u32, u32, u32) {
        let status = self.pool.status();
        let n = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        (n(status.size), n(status.available), n(status.max_size))
    }

    /// Refuses new leases and closes the idle connections, each with its
    /// protocol's goodbye. A leased connection closes when it comes back.
    pub async fn close(&self) {
        let idle = self.pool.retain(|_, _| false).removed;
        self.pool.close();
        for conn in idle {
            let _ = conn.raw.close().await;
        }
    }
}

/// A leased connection; see [`DirectPool::get`]. Dropped unsettled, it
/// leaves the pool and closes at once: a statement cut off midway (a
/// cancelled call) or a failed one may have left the connection busy, or in
/// a transaction that holds row locks. The server ends that transaction when
/// it next reads from the connection: at once if it was idle, and for a
/// statement still waiting for a row lock, when the lock comes or its
/// `lock_timeout` passes (a write transaction's is a second past the request
/// timeout; see `DbSettings::lock_timeout`; outside one, a statement waits
/// for no lock). SQLite rolls back when sqlx's
/// worker, done with its statement, closes the connection.
pub struct Lease<C: sqlx::Connection>(Option<Object<Opener<C>>>);

impl<C: sqlx::Connection> Lease<C> {
    /// Marks the connection fit for reuse: its statement ran to its end.
    pub fn settle(&mut self) {
        self.state().settled = true;
    }

    fn state(&mut self) -> &mut Conn<C> {
        self.0.as_mut().expect("leased until dropped")
    }
}

impl<C: sqlx::Connection> Drop for Lease<C> {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take()
            && !conn.settled
        {
            // Out of the pool (which may open another), and closed.
            drop(Object::take(conn));
        }
    }
}

impl<C: sqlx::Connection> Deref for Lease<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.0.as_ref().expect("leased until dropped").raw
    }
}

impl<C: sqlx::Connection> DerefMut for Lease<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.state().raw
    }
}

/// A statement SeaORM built, as a sqlx query bound the way SeaORM binds it
/// (sea-query-sqlx, SeaORM's own binder).
pub(super) fn bound<DB: sqlx::Database>(
    statement: Statement,
) -> sqlx::query::Query<'static, DB, SqlxValues>
where
    SqlxValues: sqlx::IntoArguments<DB>,
{
    let values = SqlxValues(statement.values.unwrap_or(Values(Vec::new())));
    sqlx::query_with(AssertSqlSafe(statement.sql), values)
}

/// As SeaORM reports a failed statement, so `db::error` classifies it.
fn exec_err(err: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(err.into()))
}

pub(super) fn query_err(err: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(err.into()))
}

/// As SeaORM reports a connection that could not be had, so `db::error`
/// classifies it as UNAVAILABLE.
fn acquire_err(err: PoolError<sqlx::Error>) -> DbErr {
    match err {
        PoolError::Timeout(_) => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        PoolError::Closed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        PoolError::Backend(err) => DbErr::Conn(RuntimeErr::SqlxError(err.into())),
        PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            DbErr::Custom(format!("connection pool: {err}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{
        DbBackend,
        sqlx::{
            Connection, Executor, SqliteConnection,
            sqlite::{SqliteConnectOptions, SqliteJournalMode},
        },
    };

    use super::*;

    /// One connection at most, so every lease is that connection or its
    /// replacement. A TEMP table lives and dies with its connection, which
    /// tells the two apart.
    fn one_connection(dir: &tempfile::TempDir) -> DirectPool<SqliteConnection> {
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("direct.db"))
            .create_if_missing(true);
        DirectPool::new(options, 1, Duration::from_secs(5))
    }

    async fn has_marker(pool: &DirectPool<SqliteConnection>) -> bool {
        let mut conn = pool.get().await.unwrap();
        let found: Option<(i64,)> = sqlx::query_as(
            "SELECT 1 FROM sqlite_temp_master WHERE type = 'table' AND name = 'marker'",
        )
        .fetch_optional(&mut *conn)
        .await
        .unwrap();
        conn.settle();
        found.is_some()
    }

    #[tokio::test]
    async fn a_settled_connection_is_reused_and_an_unsettled_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let pool = one_connection(&dir);

        let mut conn = pool.get().await.unwrap();
        conn.execute("CREATE TEMP TABLE marker (x)").await.unwrap();
        conn.settle();
        drop(conn);
        assert!(has_marker(&pool).await, "a settled connection is reused");

        // A lease dropped before it settled: its statement may have been cut
        // off (a cancelled call, an error), so the connection is closed at
        // once, not left in the pool.
        let conn = pool.get().await.unwrap();
        drop(conn);
        assert_eq!(pool.stats(), (0, 0, 1), "closed as its lease dropped");
        assert!(
            !has_marker(&pool).await,
            "an unsettled connection is closed"
        );
        assert_eq!(pool.stats(), (1, 1, 1));
    }

    #[tokio::test]
    async fn connections_unused_for_the_idle_timeout_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let pool = one_connection(&dir);
        pool.reap_idle(Duration::from_millis(50), Duration::from_millis(10));
        assert!(!has_marker(&pool).await);
        assert_eq!(pool.stats(), (1, 1, 1));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(pool.stats(), (0, 0, 1), "the idle connection was closed");
        // The pool opens a new one when next asked.
        assert!(!has_marker(&pool).await);
        assert_eq!(pool.stats(), (1, 1, 1));
    }

    #[tokio::test]
    async fn a_closed_pool_refuses_leases_as_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let pool = one_connection(&dir);
        assert!(!has_marker(&pool).await);
        pool.close().await;
        let err = pool.get().await.err().unwrap();
        assert!(super::super::error::is_unavailable(&err), "{err:?}");
        assert_eq!(pool.stats().0, 0, "the idle connection was closed");
    }

    /// A write that finds another connection's write lock waits between
    /// attempts: cut off there, it writes nothing later, and its connection
    /// (the same one, with its TEMP table) is kept. Once the lock is gone,
    /// the write goes through.
    #[tokio::test]
    async fn a_write_cut_off_while_the_database_is_busy_writes_nothing_later() {
        let dir = tempfile::tempdir().unwrap();
        // As `db::Direct::of` opens SQLite's writer: WAL, no busy handler.
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("busy.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::ZERO);
        let pool = DirectPool::<SqliteConnection>::new(options.clone(), 1, Duration::from_secs(5));
        let mut conn = pool.get().await.unwrap();
        conn.execute("CREATE TABLE t (x INTEGER)").await.unwrap();
        conn.execute("CREATE TEMP TABLE marker (x)").await.unwrap();
        conn.settle();
        drop(conn);

        let mut other = SqliteConnection::connect_with(&options).await.unwrap();
        other.execute("BEGIN IMMEDIATE").await.unwrap();
        let insert = || Statement::from_string(DbBackend::Sqlite, "INSERT INTO t VALUES (1)");
        let write = pool.write_alone(insert(), Duration::from_secs(30));
        let cut_off = tokio::time::timeout(Duration::from_millis(200), write).await;
        assert!(cut_off.is_err(), "the write was still waiting");
        other.execute("COMMIT").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;

        let count = || sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM t");
        assert_eq!(count().fetch_one(&mut other).await.unwrap().0, 0);
        assert!(has_marker(&pool).await, "the connection was kept");
        pool.write_alone(insert(), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(count().fetch_one(&mut other).await.unwrap().0, 1);
    }
}
