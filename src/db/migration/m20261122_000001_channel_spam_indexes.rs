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
//! index of that name): a valid index on the right columns is kept and
//! nothing is locked; one left invalid by an interrupted concurrent build,
//! or one on other columns, stops the migration with a message saying what
//! to drop.

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
#[derive(Debug, PartialEq)]
struct Existing {
    table: String,
    /// PostgreSQL's `indisvalid AND indisready`; SQLite has no other kind.
    valid: bool,
    partial: bool,
    /// Key columns in order; `None` for an expression.
    columns: Vec<Option<String>>,
}

impl Existing {
    /// `table (a, b)`, as in CREATE INDEX, for a message.
    fn shape(&self) -> String {
        let columns: Vec<&str> = self
            .columns
            .iter()
            .map(|c| c.as_deref().unwrap_or("<expression>"))
            .collect();
        let partial = if self.partial { " WHERE ..." } else { "" };
        format!("on {} ({}){partial}", self.table, columns.join(", "))
    }
}

async fn existing_index(
    manager: &SchemaManager<'_>,
    name: &str,
) -> Result<Option<Existing>, DbErr> {
    let backend = manager.get_database_backend();
    // One row per key column, in order.
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT t.relname::text AS tbl, (x.indisvalid AND x.indisready) AS valid, \
                    (x.indpred IS NOT NULL) AS partial, a.attname::text AS col \
             FROM pg_class c \
             JOIN pg_index x ON x.indexrelid = c.oid \
             JOIN pg_class t ON t.oid = x.indrelid \
             CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) \
             LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
             WHERE c.relname = $1 AND pg_table_is_visible(c.oid) AND k.n <= x.indnkeyatts \
             ORDER BY k.n"
        }
        _ => {
            "SELECT m.tbl_name AS tbl, true AS valid, \
                    (SELECT l.\"partial\" FROM pragma_index_list(m.tbl_name) AS l \
                     WHERE l.name = m.name) AS partial, i.name AS col \
             FROM sqlite_master AS m, pragma_index_info(m.name) AS i \
             WHERE m.type = 'index' AND m.name = ? \
             ORDER BY i.seqno"
        }
    };
    let rows = manager
        .get_connection()
        .query_all_raw(Statement::from_sql_and_values(backend, sql, [name.into()]))
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut existing = Existing {
        table: first.try_get("", "tbl")?,
        valid: first.try_get("", "valid")?,
        partial: first.try_get("", "partial")?,
        columns: Vec::with_capacity(rows.len()),
    };
    for row in &rows {
        existing.columns.push(row.try_get("", "col")?);
    }
    Ok(Some(existing))
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
            let wanted = Existing {
                table: Conversations::Table.to_string(),
                valid: true,
                partial: false,
                columns: [
                    Conversations::WorkspaceId,
                    column,
                    Conversations::CreatedAt,
                    Conversations::Id,
                ]
                .iter()
                .map(|c| Some(c.to_string()))
                .collect(),
            };
            match existing_index(manager, name).await? {
                None => {}
                Some(found) if found == wanted => continue,
                Some(found) => {
                    let what = if found.valid {
                        format!("is {}, not {}", found.shape(), wanted.shape())
                    } else {
                        "is invalid (an interrupted CREATE INDEX CONCURRENTLY)".to_owned()
                    };
                    let drop = match manager.get_database_backend() {
                        DbBackend::Postgres => "DROP INDEX CONCURRENTLY",
                        _ => "DROP INDEX",
                    };
                    return Err(DbErr::Migration(format!(
                        "index {name} already exists but {what}; drop it \
                         ({drop} {name}) and build it again, or let this \
                         migration build it"
                    )));
                }
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
