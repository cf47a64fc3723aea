//! Indexes for the two filterable columns `m20261121_000002_list_indexes`
//! left out: `channel` and `is_spam`. Both have few values, but one of them
//! is often rare in a workspace (chat in an email desk, spam), and without
//! an index a page of the rare value reads much of the workspace (on
//! PostgreSQL, over 1,150,000 rows, a scan of the whole table). Like the
//! others, each is led by workspace_id and ends in the default sort key
//! and id.
//!
//! An index may already exist: migrations run in one transaction, and a
//! plain CREATE INDEX holds off every write to the table until it commits,
//! so over a large PostgreSQL table an operator builds both with `CREATE
//! INDEX CONCURRENTLY` before upgrading (README, "Command line and
//! configuration"). The migration reads the catalog rather than trusting
//! `IF NOT EXISTS` (which still takes the table's lock, and accepts any
//! index of that name): an index that is ready and defined exactly as this
//! migration would build it is kept, and nothing is locked. One that is not
//! ready (a concurrent build that failed, was cancelled or is still
//! running), or is defined otherwise (other columns, order, collation,
//! method, a WHERE, another table), stops the migration with a message
//! saying what was found.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{DbBackend, Statement};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000001_channel_spam_indexes"
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Conversations {
    Table,
    WorkspaceId,
    CreatedAt,
    Id,
    Channel,
    IsSpam,
}

/// An index of the wanted name as the catalog describes it.
struct Existing {
    table: String,
    /// PostgreSQL's `indisvalid AND indisready`; SQLite has no other kind.
    ready: bool,
    /// From `USING` on, as PostgreSQL's `pg_get_indexdef` writes it (`btree
    /// (a, b DESC) WHERE ...`); SQLite's is written the same way from
    /// `pragma_index_xinfo`.
    definition: String,
}

async fn existing_index(
    manager: &SchemaManager<'_>,
    name: &str,
) -> Result<Option<Existing>, DbErr> {
    let backend = manager.get_database_backend();
    let connection = manager.get_connection();
    if backend == DbBackend::Postgres {
        // In the schema of the `conversations` the migration builds on,
        // which is where CREATE INDEX puts an index.
        let sql = "SELECT t.relname::text AS tbl, (x.indisvalid AND x.indisready) AS ready, \
                          substring(pg_get_indexdef(c.oid) from ' USING (.*)$') AS definition \
                   FROM pg_class c \
                   JOIN pg_index x ON x.indexrelid = c.oid \
                   JOIN pg_class t ON t.oid = x.indrelid \
                   WHERE c.relname = $1 AND c.relnamespace = \
                         (SELECT relnamespace FROM pg_class WHERE oid = to_regclass('conversations'))";
        let row = connection
            .query_one_raw(Statement::from_sql_and_values(backend, sql, [name.into()]))
            .await?;
        return row
            .map(|row| {
                Ok(Existing {
                    table: row.try_get("", "tbl")?,
                    ready: row.try_get("", "ready")?,
                    definition: row.try_get("", "definition")?,
                })
            })
            .transpose();
    }
    // SQLite: one row per key column, in order.
    let sql = "SELECT m.tbl_name AS tbl, i.name AS col, i.\"desc\" AS descending, \
                      i.coll AS coll, \
                      (SELECT l.\"partial\" FROM pragma_index_list(m.tbl_name) AS l \
                       WHERE l.name = m.name) AS partial \
               FROM sqlite_master AS m, pragma_index_xinfo(m.name) AS i \
               WHERE m.type = 'index' AND m.name = ? AND i.key = 1 \
               ORDER BY i.seqno";
    let rows = connection
        .query_all_raw(Statement::from_sql_and_values(backend, sql, [name.into()]))
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut key = Vec::with_capacity(rows.len());
    for row in &rows {
        let column: Option<String> = row.try_get("", "col")?;
        let mut column = column.unwrap_or_else(|| "<expression>".to_owned());
        let collation: String = row.try_get("", "coll")?;
        if !collation.eq_ignore_ascii_case("BINARY") {
            column.push_str(&format!(" COLLATE {collation}"));
        }
        if row.try_get::<bool>("", "descending")? {
            column.push_str(" DESC");
        }
        key.push(column);
    }
    let mut definition = format!("btree ({})", key.join(", "));
    if first.try_get::<bool>("", "partial")? {
        definition.push_str(" WHERE ...");
    }
    Ok(Some(Existing {
        table: first.try_get("", "tbl")?,
        ready: true,
        definition,
    }))
}

fn drop_advice(manager: &SchemaManager<'_>, name: &str) -> String {
    match manager.get_database_backend() {
        DbBackend::Postgres => {
            format!("once no build of it is running, DROP INDEX CONCURRENTLY {name}")
        }
        _ => format!("DROP INDEX {name}"),
    }
}

const INDEXES: [(&str, Conversations); 2] = [
    (
        "conversations_workspace_channel_idx",
        Conversations::Channel,
    ),
    ("conversations_workspace_spam_idx", Conversations::IsSpam),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, column) in INDEXES {
            let table = Conversations::Table.to_string();
            let key = [
                Conversations::WorkspaceId,
                column,
                Conversations::CreatedAt,
                Conversations::Id,
            ]
            .map(|c| c.to_string());
            let wanted = format!("btree ({})", key.join(", "));
            if let Some(found) = existing_index(manager, name).await? {
                if found.ready && found.table == table && found.definition == wanted {
                    continue;
                }
                let (what, remedy) = if found.table != table {
                    (
                        format!("is on table {}", found.table),
                        "rename that index".to_owned(),
                    )
                } else if !found.ready {
                    (
                        "is not ready: a CREATE INDEX CONCURRENTLY that failed, was \
                         cancelled, or is still running (pg_stat_progress_create_index)"
                            .to_owned(),
                        drop_advice(manager, name),
                    )
                } else {
                    (
                        format!("is {}, not {wanted}", found.definition),
                        drop_advice(manager, name),
                    )
                };
                return Err(DbErr::Migration(format!(
                    "index {name} already exists but {what}; {remedy}, \
                     then migrate again to build it"
                )));
            }
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Conversations::Table)
                        .col(Conversations::WorkspaceId)
                        .col(column)
                        .col(Conversations::CreatedAt)
                        .col(Conversations::Id)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, _) in INDEXES {
            manager
                .drop_index(
                    Index::drop()
                        .name(name)
                        .table(Conversations::Table)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
