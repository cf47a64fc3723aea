//! The statements of the hot paths, on direct connections (`db::direct`),
//! without sqlx's ping after each use. Get, List and an update's first read
//! are plain reads. The update's UPDATE, over the version it read, runs
//! alone ([`write_without_waiting`]); should it find the row changed, the
//! locked read opens a transaction ([`begin_with_locked`]). A plain
//! create's INSERT runs alone too, and on PostgreSQL, should it skip a held
//! row, again in a transaction of its own ([`write_alone`]). The rows a
//! write returns come through `DirectTransaction::commit_with` (the locked
//! update's UPDATE, a keyed create's INSERT), [`write_alone`] or
//! [`write_without_waiting`].
//!
//! Get's, the first page's and the locked read's SQL text is built once per
//! backend with sea-query (the very text SeaORM would send), as are a
//! create's INSERT and, per set of changed columns, Update's UPDATE
//! (`db::conversation`); other pages are built by SeaORM per call and bound
//! as SeaORM binds them. An unfiltered page's LIMIT is written into its
//! text (`with_limit`).
//! Either way sqlx prepares a text once per connection and caches the
//! prepared statement. Rows from direct connections are decoded by column
//! position into the entity model, skipping SeaORM's generic per-column
//! lookup by name. The statements select (or return) `Entity::find()`'s
//! columns, which are the model's fields in order.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    Statement, sqlx,
};
use uuid::Uuid;

use super::entity::conversation::{Column, Entity, Model};
use super::{
    Db, Direct,
    direct::{DirectTransaction, Lease, bound, query_err},
    error::{is_lock_not_available, is_lock_refused},
};

/// One statement's SQL text for each backend.
struct Sql {
    postgres: String,
    sqlite: String,
}

impl Sql {
    fn for_backend(&'static self, backend: DbBackend) -> &'static str {
        match backend {
            DbBackend::Postgres => &self.postgres,
            _ => &self.sqlite,
        }
    }

    fn build(query: impl Fn() -> sea_orm::Select<Entity>) -> Self {
        Self {
            postgres: query().build(DbBackend::Postgres).sql,
            sqlite: query().build(DbBackend::Sqlite).sql,
        }
    }
}

/// Parameters: id, workspace id, 1 (the limit).
static BY_ID: LazyLock<Sql> = LazyLock::new(|| {
    Sql::build(|| {
        Entity::find_by_id(Uuid::nil())
            .filter(Column::WorkspaceId.eq(Uuid::nil()))
            .limit(1)
    })
});

/// `BY_ID` under a write lock (`FOR UPDATE` on PostgreSQL; SQLite's write
/// transaction holds the whole database). Same parameters.
static BY_ID_FOR_UPDATE: LazyLock<Sql> = LazyLock::new(|| {
    Sql::build(|| {
        Entity::find_by_id(Uuid::nil())
            .filter(Column::WorkspaceId.eq(Uuid::nil()))
            .lock_exclusive()
            .limit(1)
    })
});

/// The first page of a workspace's conversations, newest first, with no
/// filter: the listing a client opens with, less its LIMIT (see
/// [`with_limit`]). Parameter: workspace id.
static NEWEST: LazyLock<Sql> = LazyLock::new(|| {
    Sql::build(|| {
        Entity::find()
            .filter(Column::WorkspaceId.eq(Uuid::nil()))
            .order_by_desc(Column::CreatedAt)
            .order_by_desc(Column::Id)
    })
});

/// `select`, a SELECT that ends with its ORDER BY, with `LIMIT <limit>`
/// written into its text rather than bound. For a statement whose best plan
/// is the same whatever its values: an unfiltered List page.
///
/// A bound LIMIT defeats PostgreSQL's plan cache: the generic plan must
/// assume a tenth of the rows, so it never looks cheaper than a plan made
/// for the value, and every execution of a List page was planned anew
/// (40 to 110 us of the backend's CPU per page over 772,000 rows). With
/// the number in the text the generic plan costs what a custom one does,
/// and after its fifth run the prepared statement runs it without planning.
/// That is also why a filtered page keeps its LIMIT bound: its best plan
/// depends on the values (`db::list`). With the LIMIT written in, a generic
/// plan chosen after a few calls for a rare tag walked the whole workspace
/// for the next one (475 ms against 1 ms over 772,000 rows).
/// A page size gives one text per size, cached per connection like any
/// other (sqlx keeps a connection's 100 most recent); a limit is a number
/// the service computed, never a caller's text.
pub(super) fn with_limit(select: &str, limit: u32) -> String {
    debug_assert!(
        !select.contains(" LIMIT ") && !select.trim_end().ends_with(';'),
        "not a SELECT that ends with its ORDER BY: {select}"
    );
    format!("{select} LIMIT {limit}")
}

/// Runs `$sql` on a direct connection of `$db` (see `db::direct`) with the
/// bound `$args`, fetched with `$fetch` and decoded with `$decode`. Errors
/// are classified as SeaORM's own queries' are: acquiring, then running.
macro_rules! run {
    ($db:expr, $sql:expr, $fetch:ident, $decode:expr, $($arg:expr),+) => {
        match &$db.direct {
            Direct::Postgres { pool, .. } => run!(@on pool, $sql.postgres, $fetch, $decode, $($arg),+),
            Direct::Sqlite { read: pool, .. } => run!(@on pool, $sql.sqlite, $fetch, $decode, $($arg),+),
        }
    };
    (@on $pool:expr, $sql:expr, $fetch:ident, $decode:expr, $($arg:expr),+) => {
        async {
            let mut conn = $pool.get().await?;
            let fetched = sqlx::query($sql.as_str())
                $(.bind($arg))+
                .$fetch(&mut *conn)
                .await;
            $decode(settled(&mut conn, fetched)?)
        }
        .await
    };
}

/// `fetched`, the outcome of a statement that ran alone on `conn`, which
/// stays fit for reuse if the statement ran to its end, or met a lock it did
/// not wait for (55P03 on PostgreSQL; see `db::Direct`): that statement had
/// no effect and left no transaction open.
fn settled<C: sqlx::Connection, T>(
    conn: &mut Lease<C>,
    fetched: Result<T, sqlx::Error>,
) -> Result<T, DbErr> {
    match fetched {
        Ok(rows) => {
            conn.settle();
            Ok(rows)
        }
        Err(err) => {
            if is_lock_not_available(&err) {
                conn.settle();
            }
            Err(query_err(err))
        }
    }
}

/// On PostgreSQL a read outside a transaction waits for no lock (see
/// `db::Direct`). One that met a lock (DDL holds the table) runs again here,
/// in a transaction, which waits for it as writes do, until the call's
/// deadline: a read commits nothing, so it may wait.
async fn read_waiting(db: &Db, statement: impl FnOnce() -> Statement) -> Result<Vec<Model>, DbErr> {
    let Direct::Postgres { pool, begin } = &db.direct else {
        return Err(DbErr::Custom(
            "only PostgreSQL refuses to wait for a lock".into(),
        ));
    };
    let txn = DirectTransaction::begin_postgres(pool, begin).await?;
    let rows = txn.fetch_models(statement()).await?;
    txn.commit().await?;
    Ok(rows)
}

/// The conversation `id` of the workspace, if any.
pub async fn by_id(db: &Db, workspace_id: Uuid, id: Uuid) -> Result<Option<Model>, DbErr> {
    let read = run!(
        db,
        BY_ID,
        fetch_optional,
        |row: Option<_>| row.as_ref().map(model).transpose(),
        id,
        workspace_id,
        1_i64
    );
    match read {
        Err(err) if is_lock_refused(&err) => {
            let values = [id.into(), workspace_id.into(), 1_i64.into()];
            let statement =
                || Statement::from_sql_and_values(DbBackend::Postgres, &BY_ID.postgres, values);
            Ok(read_waiting(db, statement).await?.into_iter().next())
        }
        read => read,
    }
}

/// Opens a conversation's write transaction (see `db::begin_direct_write`)
/// and reads the conversation `id` of the workspace, locked for the rest of
/// it. On SQLite the BEGIN and the read go to the writer in one exchange.
pub async fn begin_with_locked(
    db: &Db,
    workspace_id: Uuid,
    id: Uuid,
) -> Result<(DirectTransaction, Option<Model>), DbErr> {
    let backend = db.get_database_backend();
    let statement = Statement::from_sql_and_values(
        backend,
        BY_ID_FOR_UPDATE.for_backend(backend),
        [id.into(), workspace_id.into(), 1_u64.into()],
    );
    match &db.direct {
        Direct::Sqlite {
            write,
            busy_timeout,
            ..
        } => {
            let (txn, rows) =
                DirectTransaction::begin_sqlite_with(write, *busy_timeout, statement).await?;
            Ok((txn, rows.into_iter().next()))
        }
        Direct::Postgres { pool, begin } => {
            let txn = DirectTransaction::begin_postgres(pool, begin).await?;
            let row = one_in(&txn, statement).await?;
            Ok((txn, row))
        }
    }
}

/// The workspace's `limit` newest conversations.
pub async fn newest(db: &Db, workspace_id: Uuid, limit: u32) -> Result<Vec<Model>, DbErr> {
    let backend = db.get_database_backend();
    let sql = with_limit(NEWEST.for_backend(backend), limit);
    select(
        db,
        Statement::from_sql_and_values(backend, sql, [workspace_id.into()]),
    )
    .await
}

/// Runs a statement SeaORM built on a direct connection of `$pool`, bound as
/// SeaORM binds it, and returns its rows decoded with `model`.
macro_rules! fetch_models {
    ($pool:expr, $statement:expr) => {
        async {
            let query = bound($statement);
            let mut conn = $pool.get().await?;
            let fetched = query.fetch_all(&mut *conn).await;
            settled(&mut conn, fetched)?
                .iter()
                .map(model)
                .collect::<Result<Vec<Model>, DbErr>>()
        }
        .await
    };
}

/// Runs `statement`, a SELECT of `Entity::find()`'s columns (any filter,
/// order and limit), on a direct connection.
pub async fn select(db: &Db, statement: Statement) -> Result<Vec<Model>, DbErr> {
    match &db.direct {
        Direct::Postgres { pool, .. } => match fetch_models!(pool, statement.clone()) {
            Err(err) if is_lock_refused(&err) => read_waiting(db, || statement).await,
            read => read,
        },
        Direct::Sqlite { read: pool, .. } => fetch_models!(pool, statement),
    }
}

/// Runs `statement`, a write that is a transaction by itself and returns
/// `Entity::find()`'s columns, and returns its first row, decoded by
/// position. It commits only if its call, still running, gets that far:
///
/// - on SQLite it runs alone, in autocommit, on the writer, which never
///   waits inside a statement (see `direct::transaction::while_busy!`);
/// - on PostgreSQL it runs between BEGIN and COMMIT: alone, in autocommit,
///   a statement that waits for a lock goes on waiting after its call is
///   cut off, and commits after the caller was told DEADLINE_EXCEEDED.
pub async fn write_alone(db: &Db, statement: Statement) -> Result<Option<Model>, DbErr> {
    match &db.direct {
        Direct::Postgres { pool, begin } => {
            let txn = DirectTransaction::begin_postgres(pool, begin).await?;
            Ok(txn.commit_with(statement).await?.into_iter().next())
        }
        Direct::Sqlite { .. } => write_without_waiting(db, statement).await,
    }
}

/// As [`write_alone`], for a statement that skips held rows on PostgreSQL
/// (an update's UPDATE over the version it read, a plain create's INSERT;
/// see `db::conversation`): there it runs alone too, in autocommit, without
/// the BEGIN and COMMIT around it, where its `lock_timeout` is a millisecond
/// (`Direct::Postgres`). A lock it would still have to wait for (DDL's table
/// lock, a row being changed) ends it at once, with no row, as a held row
/// does.
pub async fn write_without_waiting(db: &Db, statement: Statement) -> Result<Option<Model>, DbErr> {
    match &db.direct {
        Direct::Sqlite {
            write,
            busy_timeout,
            ..
        } => {
            // All rows: see `one_in`.
            let rows = write.write_alone(statement, *busy_timeout).await?;
            rows.first().map(model).transpose()
        }
        Direct::Postgres { pool, .. } => match fetch_models!(pool, statement) {
            Ok(rows) => Ok(rows.into_iter().next()),
            // A lock it would have waited for (a table lock taken by DDL, a
            // row being changed): as if the row were held. The statement had
            // no effect, and its connection stays in the pool (`settled`).
            Err(err) if is_lock_refused(&err) => Ok(None),
            Err(err) => Err(err),
        },
    }
}

/// Runs `statement`, which returns `Entity::find()`'s columns, in the write
/// transaction `txn`, and returns its first row, decoded by position.
pub async fn one_in(txn: &DirectTransaction, statement: Statement) -> Result<Option<Model>, DbErr> {
    // All rows, not the first: the statement is stepped to its end, so any
    // error it meets is reported (sqlx drops the error of a statement reset
    // after its first row).
    Ok(txn.fetch_models(statement).await?.into_iter().next())
}

/// Decodes a row of `Entity::find()`'s columns, by position.
pub(super) fn model<'r, R>(row: &'r R) -> Result<Model, DbErr>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    Uuid: sqlx::Decode<'r, R::Database>,
    String: sqlx::Decode<'r, R::Database>,
    DateTime<Utc>: sqlx::Decode<'r, R::Database>,
    serde_json::Value: sqlx::Decode<'r, R::Database>,
    bool: sqlx::Decode<'r, R::Database>,
    f64: sqlx::Decode<'r, R::Database>,
    i64: sqlx::Decode<'r, R::Database>,
{
    let mut column = 0..;
    let mut next = || column.next().expect("unbounded");
    // Unchecked: SQLite declares these columns with SeaORM's own type names
    // (`uuid_text`, `jsonb_text`), which sqlx's type check does not know;
    // the values decode as SeaORM stored them.
    macro_rules! get {
        () => {
            row.try_get_unchecked(next()).map_err(query_err)?
        };
    }
    Ok(Model {
        id: get!(),
        workspace_id: get!(),
        channel: get!(),
        customer_id: get!(),
        subject: get!(),
        status: get!(),
        priority: get!(),
        assignee_id: get!(),
        assignee_type: get!(),
        origin_agent_id: get!(),
        hold_until: get!(),
        tags: get!(),
        attributes: get!(),
        is_spam: get!(),
        spam_score: get!(),
        first_response_at: get!(),
        last_message_at: get!(),
        closed_at: get!(),
        created_at: get!(),
        updated_at: get!(),
        version: get!(),
        request_id: get!(),
        request_fingerprint: get!(),
    })
}
