//! Storage: SeaORM entities, migrations and the queries the service runs.
//! Every query that reads or writes tenant data is scoped by workspace.

pub mod conversation;
pub mod direct;
pub mod directory;
pub mod entity;
pub mod error;
pub mod hot;
pub mod list;
pub mod migration;
pub mod token;

use std::{
    ops::Deref,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
    sqlx::{
        self, PgConnection, SqliteConnection,
        sqlite::{SqliteJournalMode, SqliteSynchronous},
    },
};
use sea_orm_migration::MigratorTrait;

use direct::{DirectPool, DirectTransaction};

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct DbSettings {
    pub url: String,
    pub max_connections: u32,
    /// How long a query waits for a pooled connection before the call fails
    /// with UNAVAILABLE.
    pub acquire_timeout: Duration,
    /// SQLite only: how long a write waits for another process's write lock
    /// (the CLI while `serve` runs) before it fails with UNAVAILABLE.
    pub sqlite_busy_timeout: Duration,
    /// PostgreSQL, write transactions on direct connections: the longest a
    /// statement waits for a lock (`SET LOCAL lock_timeout`). `serve` sets
    /// it a second past the request timeout, so a call never sees it (its
    /// deadline comes first), but the server-side statement of a call cut
    /// off while it waited gives up by then instead of waiting on in the
    /// lock queue after its connection is closed. (Outside a transaction a
    /// direct connection waits for no lock at all; see `Direct::Postgres`.)
    pub lock_timeout: Option<Duration>,
}

/// The database: SeaORM's pool, the connection its write transactions run
/// on, and the direct connections of the hot statements and conversations'
/// writes.
///
/// SQLite allows one writer at a time. Writers that each took `BEGIN
/// IMMEDIATE` on their own connection would wait in SQLite's busy handler,
/// which sleeps in growing steps (p99 in the hundreds of milliseconds), so on
/// SQLite conversations' writes share one direct connection: the writers of
/// this process queue for it first come, first served, and only the one
/// holding it waits, between attempts, for another process's writer (see
/// `direct::transaction::while_busy!`). The connection goes back to the
/// queue only after a dropped transaction has rolled back. SeaORM's writer
/// is a second one-connection pool, for migrations and the admin commands,
/// which run before `serve` starts or in another process. PostgreSQL locks
/// rows, so there the writer is the same pool.
///
/// It dereferences to the read pool. Write transactions start with
/// [`begin_write`], or, for conversations, [`begin_direct_write`] (an
/// update's with its locked read, `hot::begin_with_locked`). The hot
/// statements (`db::hot`) and conversations' write transactions run on
/// connections of their own, which are not pinged after each use (see
/// `db::direct`).
#[derive(Debug, Clone)]
pub struct Db {
    pool: DatabaseConnection,
    writer: DatabaseConnection,
    direct: Direct,
    retried: Arc<Retried>,
}

/// Conversation writes that ran alone, in autocommit, wrote nothing, and ran
/// again in a transaction that waits (`db::conversation`): since this `Db`
/// was connected, by the write's kind. An update goes on under the row's
/// lock when another write changed or held its row between its read and its
/// UPDATE; a plain create on PostgreSQL runs its INSERT again when its
/// customer's or workspace's row was held, and is counted once that INSERT
/// inserted (the first also writes nothing for a missing customer, which is
/// no contention). Many of them mean callers contend for the same rows, each
/// paying the round trips twice.
#[derive(Debug, Default)]
struct Retried {
    updates: AtomicU64,
    creates: AtomicU64,
}

/// A snapshot of [`Db::retried_writes`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetriedWrites {
    pub updates: u64,
    pub creates: u64,
}

/// How long a statement on a direct PostgreSQL connection may wait for a
/// lock outside a write transaction (see `Direct::Postgres`): PostgreSQL
/// reads 0 as "no limit", so the least it can be.
const UNWAITING_LOCK_TIMEOUT: Duration = Duration::from_millis(1);

/// The direct connections of the hot statements and of conversations' write
/// transactions, of the pool's backend. SQLite's writes have one connection
/// of their own.
#[derive(Debug, Clone)]
pub(crate) enum Direct {
    Postgres {
        /// Connections whose `lock_timeout` is [`UNWAITING_LOCK_TIMEOUT`]: a
        /// statement that runs alone, in autocommit, must not wait for a lock
        /// (one still waiting when its call is cut off would commit after
        /// the caller was told DEADLINE_EXCEEDED), so a lock it would wait
        /// for ends it at once: a write then goes on in a transaction
        /// (`hot::write_without_waiting`), and so does a read
        /// (`hot::read_waiting`).
        pool: DirectPool<PgConnection>,
        /// How a write transaction begins: `BEGIN` and, in the same
        /// exchange, `SET LOCAL lock_timeout` to `DbSettings::lock_timeout`
        /// (0, no limit, when unset). A transaction may wait for a lock: its
        /// call's deadline abandons it before COMMIT.
        begin: Arc<str>,
    },
    Sqlite {
        read: DirectPool<SqliteConnection>,
        /// The writer: one connection, without a busy handler.
        write: DirectPool<SqliteConnection>,
        /// How long a write waits out another process's write lock.
        busy_timeout: Duration,
    },
}

impl Direct {
    /// As many connections as the read pool may open, with its options (on
    /// SQLite, and a writer: one connection without a busy handler); those
    /// unused for `direct::IDLE_TIMEOUT` are closed, checked each minute.
    fn of(pool: &DatabaseConnection, settings: &DbSettings) -> Result<Self, DbErr> {
        fn open<C: sqlx::Connection + 'static>(
            options: &C::Options,
            max_connections: u32,
            settings: &DbSettings,
        ) -> DirectPool<C> {
            let pool = DirectPool::new(options.clone(), max_connections, settings.acquire_timeout);
            pool.reap_idle(direct::IDLE_TIMEOUT, Duration::from_secs(60));
            pool
        }
        match pool.get_database_backend() {
            DbBackend::Postgres => {
                let millis = UNWAITING_LOCK_TIMEOUT.as_millis().to_string();
                let options = (*pool.get_postgres_connection_pool().connect_options())
                    .clone()
                    .options([("lock_timeout", millis)]);
                // PostgreSQL takes at most i32::MAX milliseconds (about 24 days).
                let waits = settings
                    .lock_timeout
                    .map_or(0, |t| t.as_millis().clamp(1, i32::MAX as u128));
                Ok(Self::Postgres {
                    pool: open::<PgConnection>(&options, settings.max_connections, settings),
                    begin: format!("BEGIN; SET LOCAL lock_timeout = {waits}").into(),
                })
            }
            DbBackend::Sqlite => {
                let options = pool.get_sqlite_connection_pool().connect_options();
                // The writer waits for another process's write lock between
                // attempts, where a cut-off call stops it, not in SQLite's
                // busy handler (see `direct::transaction::while_busy!`).
                let unwaiting = (*options).clone().busy_timeout(Duration::ZERO);
                Ok(Self::Sqlite {
                    read: open::<SqliteConnection>(&options, settings.max_connections, settings),
                    write: open::<SqliteConnection>(&unwaiting, 1, settings),
                    busy_timeout: settings.sqlite_busy_timeout,
                })
            }
            backend => Err(DbErr::BackendNotSupported {
                db: backend.as_str(),
                ctx: "direct connections",
            }),
        }
    }

    fn stats(&self) -> PoolStats {
        fn of<C: sqlx::Connection>(pool: &DirectPool<C>) -> PoolStats {
            let (open, idle, max) = pool.stats();
            PoolStats { open, idle, max }
        }
        match self {
            Self::Postgres { pool, .. } => of(pool),
            Self::Sqlite { read, write, .. } => of(read) + of(write),
        }
    }

    async fn close(&self) {
        match self {
            Self::Postgres { pool, .. } => pool.close().await,
            Self::Sqlite { read, write, .. } => {
                read.close().await;
                write.close().await;
            }
        }
    }
}

impl Deref for Db {
    type Target = DatabaseConnection;

    fn deref(&self) -> &DatabaseConnection {
        &self.pool
    }
}

impl Db {
    pub async fn close(self) -> Result<(), DbErr> {
        self.direct.close().await;
        self.writer.close().await?;
        self.pool.close().await
    }
}

/// Opens the pools. A `sqlite:` URL gets WAL (readers never block the
/// writer), a busy timeout (a writer of another process is waited for
/// instead of failing; see `Direct` for the direct writer's), foreign keys,
/// a read pool larger than SeaORM's SQLite default of one connection, and
/// one-connection writers (`Db`).
pub async fn connect(settings: &DbSettings) -> Result<Db, DbErr> {
    let pool = Database::connect(options(settings, settings.max_connections)).await?;
    let writer = match pool.get_database_backend() {
        DbBackend::Sqlite => {
            require_wal(&pool).await?;
            Database::connect(options(settings, 1)).await?
        }
        _ => pool.clone(),
    };
    let direct = Direct::of(&pool, settings)?;
    Ok(Db {
        pool,
        writer,
        direct,
        retried: Arc::default(),
    })
}

/// Refuses a SQLite database that is not in WAL mode. `connect` asks for
/// WAL, but SQLite keeps another mode without a word where WAL cannot work
/// (an in-memory database, a file system without shared memory). Writes
/// depend on it: without WAL a COMMIT waits for readers, and SQLite's
/// writer has no busy handler to wait with (see
/// `direct::transaction::while_busy!`).
async fn require_wal(pool: &DatabaseConnection) -> Result<(), DbErr> {
    let statement = Statement::from_string(DbBackend::Sqlite, "PRAGMA journal_mode");
    let mode = match pool.query_one_raw(statement).await? {
        Some(row) => row.try_get_by_index::<String>(0)?,
        None => String::new(),
    };
    if mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(DbErr::Custom(format!(
            "SQLite is in `{mode}` journal mode, not WAL: use a database file on a local disk"
        )))
    }
}

/// A pool for reads alone (the health probe): no writer connection.
pub async fn connect_reads(settings: &DbSettings) -> Result<DatabaseConnection, DbErr> {
    Database::connect(options(settings, settings.max_connections)).await
}

/// How long a pooled connection may sit idle before it is pinged on acquire.
pub(crate) const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

fn options(settings: &DbSettings, max_connections: u32) -> ConnectOptions {
    let busy_timeout = settings.sqlite_busy_timeout;
    let mut options = ConnectOptions::new(settings.url.clone());
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(settings.acquire_timeout)
        .acquire_timeout(settings.acquire_timeout)
        // sqlx pings every connection it hands out: a round trip to the
        // database before each call's statements, as many as a Get has. A
        // connection busy in the last second is known alive, so only one
        // idle longer is pinged (pgxpool's default rule). A connection the
        // server dropped within that second fails one call, which answers
        // UNAVAILABLE and is closed when released.
        .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
        // sqlx logs every statement at INFO by default; at TRACE they stay out
        // of the way unless asked for (LOG_FILTER=sqlx::query=trace).
        .sqlx_logging(true)
        .sqlx_logging_level(log::LevelFilter::Trace)
        .map_sqlx_sqlite_opts(move |sqlite| {
            sqlite
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(busy_timeout)
                .foreign_keys(true)
        });
    options
}

/// Applies pending migrations in one transaction, so processes that start
/// together take turns and a crash leaves no half-applied schema. SQLite's
/// `BEGIN IMMEDIATE` serialises them by itself; PostgreSQL takes an advisory
/// lock.
pub async fn migrate(db: &Db) -> Result<(), DbErr> {
    let txn = begin_write(db).await?;
    if db.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(727274)")
            .await?;
    }
    migration::Migrator::up(&txn, None).await?;
    txn.commit().await
}

/// Starts a transaction that will write, on SeaORM's writer (see [`Db`]): on
/// SQLite it waits its turn for the writer connection, then takes `BEGIN
/// IMMEDIATE`, which holds the write lock up front (waiting out the busy
/// timeout only for other processes) instead of failing with "database is
/// locked" when a read later turns into a write. On PostgreSQL it is a plain
/// transaction; row locks come from `SELECT ... FOR UPDATE`.
pub async fn begin_write(db: &Db) -> Result<DatabaseTransaction, DbErr> {
    db.writer
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await
}

/// A write transaction of a conversation, on a direct connection (see
/// `db::direct`): on PostgreSQL one of the pool's, on SQLite the direct
/// writer (see [`Db`]).
pub async fn begin_direct_write(db: &Db) -> Result<DirectTransaction, DbErr> {
    match &db.direct {
        Direct::Postgres { pool, begin } => DirectTransaction::begin_postgres(pool, begin).await,
        Direct::Sqlite {
            write,
            busy_timeout,
            ..
        } => DirectTransaction::begin_sqlite(write, *busy_timeout).await,
    }
}

/// How full the pools are right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open, in use or idle.
    pub open: u32,
    pub idle: u32,
    /// The most the pools may open.
    pub max: u32,
}

impl Db {
    /// How many conversation writes ran again in a transaction (see
    /// `Retried`).
    pub fn retried_writes(&self) -> RetriedWrites {
        RetriedWrites {
            updates: self.retried.updates.load(Ordering::Relaxed),
            creates: self.retried.creates.load(Ordering::Relaxed),
        }
    }

    fn count_retried(&self, counter: impl Fn(&Retried) -> &AtomicU64) {
        counter(&self.retried).fetch_add(1, Ordering::Relaxed);
    }

    /// The read pool, the direct connections and, on SQLite, SeaORM's writer
    /// connection, together: a call waiting for any is waiting for a
    /// connection.
    pub fn pool_stats(&self) -> PoolStats {
        let mut stats = pool_stats(&self.pool) + self.direct.stats();
        if self.pool.get_database_backend() == DbBackend::Sqlite {
            // Elsewhere the writer is the read pool.
            stats = stats + pool_stats(&self.writer);
        }
        stats
    }
}

impl std::ops::Add for PoolStats {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            open: self.open + other.open,
            idle: self.idle + other.idle,
            max: self.max + other.max,
        }
    }
}

fn pool_stats(db: &DatabaseConnection) -> PoolStats {
    fn of<DB: sea_orm::sqlx::Database>(pool: &sea_orm::sqlx::Pool<DB>) -> PoolStats {
        PoolStats {
            open: pool.size(),
            idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            max: pool.options().get_max_connections(),
        }
    }
    match db.get_database_backend() {
        DbBackend::Postgres => of(db.get_postgres_connection_pool()),
        DbBackend::Sqlite => of(db.get_sqlite_connection_pool()),
        // `connect` opens nothing else.
        _ => PoolStats::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sqlite_database_without_wal_is_refused() {
        let settings = DbSettings {
            url: "sqlite::memory:".into(),
            max_connections: 2,
            acquire_timeout: Duration::from_secs(3),
            sqlite_busy_timeout: Duration::from_secs(3),
            lock_timeout: None,
        };
        let err = connect(&settings).await.expect_err("refused");
        assert!(err.to_string().contains("not WAL"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let file = format!("sqlite://{}", dir.path().join("wal.db").display());
        let db = connect(&DbSettings {
            url: file,
            ..settings
        })
        .await
        .unwrap();
        db.close().await.unwrap();
    }

    /// Get and an update's reads bind their LIMIT. Without the query planner
    /// stability guarantee, SQLite marks such a statement stale each time
    /// that parameter is bound and parses it again on every call, so the
    /// prepared-statement cache saves nothing (`.cargo/config.toml` sets the
    /// flag for the bundled SQLite).
    #[tokio::test]
    async fn sqlite_keeps_query_plans_stable() {
        let dir = tempfile::tempdir().unwrap();
        let db = connect(&DbSettings {
            url: format!("sqlite://{}", dir.path().join("qpsg.db").display()),
            max_connections: 2,
            acquire_timeout: Duration::from_secs(3),
            sqlite_busy_timeout: Duration::from_secs(3),
            lock_timeout: None,
        })
        .await
        .unwrap();
        let statement = Statement::from_string(
            DbBackend::Sqlite,
            "SELECT count(*) FROM pragma_compile_options WHERE compile_options = 'ENABLE_QPSG'",
        );
        let row = db.query_one_raw(statement).await.unwrap().unwrap();
        assert_eq!(row.try_get_by_index::<i64>(0).unwrap(), 1);
        db.close().await.unwrap();
    }

    #[test]
    fn only_connections_idle_past_the_threshold_are_pinged_on_acquire() {
        let settings = DbSettings {
            url: "postgres://localhost/x".into(),
            max_connections: 4,
            acquire_timeout: Duration::from_secs(3),
            sqlite_busy_timeout: Duration::from_secs(3),
            lock_timeout: None,
        };
        let options = options(&settings, 4);
        // Pinging every acquire would add a round trip to every call.
        assert!(!options.get_test_before_acquire());
        assert_eq!(
            options.get_test_before_acquire_if_idle_for(),
            Some(PING_IF_IDLE_FOR)
        );
    }
}
