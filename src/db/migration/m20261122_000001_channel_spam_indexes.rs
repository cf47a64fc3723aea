//! Indexes for the two filterable columns `m20261121_000002_list_indexes`
//! left out: `channel` and `is_spam`. Both have few values, but one of them
//! is often rare in a workspace (chat in an email desk, spam), and without
//! an index a page of the rare value reads much of the workspace (on
//! PostgreSQL, over 1,150,000 rows, a scan of the whole table). Like the
//! others, each is led by workspace_id and ends in the default sort key
//! and id.
//!
//! `IF NOT EXISTS`: migrations run in one transaction, and a plain CREATE
//! INDEX holds off every write to the table until it commits. Over a large
//! PostgreSQL table, build both with `CREATE INDEX CONCURRENTLY` before
//! upgrading (README, "Command line and configuration"); this migration
//! then finds them and builds nothing.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000001_channel_spam_indexes"
    }
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    WorkspaceId,
    CreatedAt,
    Id,
    Channel,
    IsSpam,
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
            manager
                .create_index(
                    Index::create()
                        .if_not_exists()
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
