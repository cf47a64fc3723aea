//! Storage: SeaORM entities, migrations and the queries the service runs.
//! Every query that reads or writes tenant data is scoped by workspace.

pub mod conversation;
pub mod directory;
pub mod entity;
pub mod error;
pub mod list;
pub mod migration;
pub mod token;

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};
use sea_orm_migration::MigratorTrait;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct DbSettings {
    pub url: String,
    pub max_connections: u32,
    /// How long a query waits for a pooled connection before the call fails
    /// with UNAVAILABLE.
    pub acquire_timeout: Duration,
}

/// Opens a pool. A `sqlite:` URL gets WAL (readers never block the writer), a
/// busy timeout (a second writer waits instead of failing), foreign keys,
/// and a pool larger than SeaORM's SQLite default of one connection.
pub async fn connect(settings: &DbSettings) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(settings.url.clone());
    options
        .max_connections(settings.max_connections)
        .min_connections(1)
        .connect_timeout(settings.acquire_timeout)
        .acquire_timeout(settings.acquire_timeout)
        // sqlx logs every statement at INFO by default; at TRACE they stay out
        // of the way unless asked for (LOG_FILTER=sqlx::query=trace).
        .sqlx_logging(true)
        .sqlx_logging_level(log::LevelFilter::Trace)
        .map_sqlx_sqlite_opts(|sqlite| {
            sqlite
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true)
        });
    Database::connect(options).await
}

/// Applies pending migrations in one transaction, so processes that start
/// together take turns and a crash leaves no half-applied schema. SQLite's
/// `BEGIN IMMEDIATE` serialises them by itself; PostgreSQL takes an advisory
/// lock.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    let txn = begin_write(db).await?;
    if db.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(727274)")
            .await?;
    }
    migration::Migrator::up(&txn, None).await?;
    txn.commit().await
}

/// Starts a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`,
/// which takes the write lock up front (waiting out the busy timeout) instead
/// of failing with "database is locked" when a read later turns into a write.
/// On PostgreSQL it is a plain transaction; row locks come from
/// `SELECT ... FOR UPDATE`.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// How full a pool is right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open, in use or idle.
    pub open: u32,
    pub idle: u32,
    /// The most the pool may open.
    pub max: u32,
}

pub fn pool_stats(db: &DatabaseConnection) -> PoolStats {
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
        _ => PoolStats {
            open: 0,
            idle: 0,
            max: 0,
        },
    }
}
