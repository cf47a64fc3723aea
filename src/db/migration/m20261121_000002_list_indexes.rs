//! Indexes for ListConversations: one per order and per filterable column,
//! each led by workspace_id (every listing is scoped by workspace) and ending
//! in the sort key and id, so a keyset page is an index range scan.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261121_000002_list_indexes"
    }
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    WorkspaceId,
    UpdatedAt,
    CreatedAt,
    Id,
    Status,
    Priority,
    CustomerId,
    AssigneeId,
}

const INDEXES: [(&str, Conversations); 4] = [
    ("conversations_workspace_status_idx", Conversations::Status),
    (
        "conversations_workspace_priority_idx",
        Conversations::Priority,
    ),
    (
        "conversations_workspace_customer_idx",
        Conversations::CustomerId,
    ),
    (
        "conversations_workspace_assignee_idx",
        Conversations::AssigneeId,
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("conversations_workspace_updated_idx")
                    .table(Conversations::Table)
                    .col(Conversations::WorkspaceId)
                    .col(Conversations::UpdatedAt)
                    .col(Conversations::Id)
                    .to_owned(),
            )
            .await?;
        for (name, column) in INDEXES {
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
        if manager.get_database_backend() == DbBackend::Postgres {
            // `tags @> '["x"]'`; combined with the workspace indexes by a
            // bitmap AND (a GIN index cannot lead with workspace_id without
            // the btree_gin extension).
            manager
                .get_connection()
                .execute_unprepared(
                    "CREATE INDEX conversations_tags_idx ON conversations USING gin (tags jsonb_path_ops)",
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut names = vec!["conversations_workspace_updated_idx"];
        names.extend(INDEXES.map(|(name, _)| name));
        for name in names {
            manager
                .drop_index(
                    Index::drop()
                        .name(name)
                        .table(Conversations::Table)
                        .to_owned(),
                )
                .await?;
        }
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("DROP INDEX conversations_tags_idx")
                .await?;
        }
        Ok(())
    }
}
