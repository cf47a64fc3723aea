use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261121_000001_initial"
    }
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    WorkspaceId,
    Email,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    Id,
    WorkspaceId,
    Kind,
    Active,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Customers {
    Table,
    Id,
    WorkspaceId,
    Email,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    WorkspaceId,
    Name,
    TokenHash,
    Abilities,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Id,
    WorkspaceId,
    Channel,
    CustomerId,
    Subject,
    Status,
    Priority,
    AssigneeId,
    AssigneeType,
    OriginAgentId,
    HoldUntil,
    Tags,
    Attributes,
    IsSpam,
    SpamScore,
    FirstResponseAt,
    LastMessageAt,
    ClosedAt,
    CreatedAt,
    UpdatedAt,
    Version,
    RequestId,
    RequestFingerprint,
}

/// A `workspace_id` column that references `workspaces(id)`.
fn workspace_fk(table: impl IntoIden, column: impl IntoIden) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(table, column)
        .to(Workspaces::Table, Workspaces::Id)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Workspaces::Table)
                    .col(pk_uuid(Workspaces::Id))
                    .col(string(Workspaces::Name))
                    .col(timestamp_with_time_zone(Workspaces::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(pk_uuid(Users::Id))
                    .col(uuid(Users::WorkspaceId))
                    .col(string(Users::Email))
                    .col(string_null(Users::Name))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .foreign_key(&mut workspace_fk(Users::Table, Users::WorkspaceId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("users_workspace_email_key")
                    .table(Users::Table)
                    .col(Users::WorkspaceId)
                    .col(Users::Email)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Agents::Table)
                    .col(pk_uuid(Agents::Id))
                    .col(uuid(Agents::WorkspaceId))
                    .col(string(Agents::Kind))
                    .col(boolean(Agents::Active))
                    .col(string_null(Agents::Name))
                    .col(timestamp_with_time_zone(Agents::CreatedAt))
                    .foreign_key(&mut workspace_fk(Agents::Table, Agents::WorkspaceId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("agents_workspace_idx")
                    .table(Agents::Table)
                    .col(Agents::WorkspaceId)
                    .to_owned(),
            )
            .await?;
        // At most one active email agent per workspace. Partial indexes read
        // the same on both databases; sea-query has no builder for them.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX agents_one_active_email_key ON agents (workspace_id) \
                 WHERE kind = 'email' AND active",
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Customers::Table)
                    .col(pk_uuid(Customers::Id))
                    .col(uuid(Customers::WorkspaceId))
                    .col(string(Customers::Email))
                    .col(string_null(Customers::Name))
                    .col(timestamp_with_time_zone(Customers::CreatedAt))
                    .foreign_key(&mut workspace_fk(Customers::Table, Customers::WorkspaceId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("customers_workspace_email_key")
                    .table(Customers::Table)
                    .col(Customers::WorkspaceId)
                    .col(Customers::Email)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiTokens::Table)
                    .col(pk_uuid(ApiTokens::Id))
                    .col(uuid(ApiTokens::WorkspaceId))
                    .col(string_null(ApiTokens::Name))
                    .col(string_uniq(ApiTokens::TokenHash))
                    .col(string(ApiTokens::Abilities))
                    .col(timestamp_with_time_zone(ApiTokens::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiTokens::RevokedAt))
                    .foreign_key(&mut workspace_fk(ApiTokens::Table, ApiTokens::WorkspaceId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("api_tokens_workspace_idx")
                    .table(ApiTokens::Table)
                    .col(ApiTokens::WorkspaceId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Conversations::Table)
                    .col(pk_uuid(Conversations::Id))
                    .col(uuid(Conversations::WorkspaceId))
                    .col(string(Conversations::Channel))
                    .col(uuid(Conversations::CustomerId))
                    .col(text_null(Conversations::Subject))
                    .col(string(Conversations::Status))
                    .col(string(Conversations::Priority))
                    .col(uuid_null(Conversations::AssigneeId))
                    .col(string_null(Conversations::AssigneeType))
                    .col(uuid_null(Conversations::OriginAgentId))
                    .col(timestamp_with_time_zone_null(Conversations::HoldUntil))
                    .col(json_binary(Conversations::Tags))
                    .col(json_binary(Conversations::Attributes))
                    .col(boolean(Conversations::IsSpam))
                    .col(double_null(Conversations::SpamScore))
                    .col(timestamp_with_time_zone_null(
                        Conversations::FirstResponseAt,
                    ))
                    .col(timestamp_with_time_zone_null(Conversations::LastMessageAt))
                    .col(timestamp_with_time_zone_null(Conversations::ClosedAt))
                    .col(timestamp_with_time_zone(Conversations::CreatedAt))
                    .col(timestamp_with_time_zone(Conversations::UpdatedAt))
                    .col(big_integer(Conversations::Version))
                    .col(uuid_null(Conversations::RequestId))
                    .col(string_null(Conversations::RequestFingerprint))
                    .foreign_key(&mut workspace_fk(
                        Conversations::Table,
                        Conversations::WorkspaceId,
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Conversations::Table, Conversations::CustomerId)
                            .to(Customers::Table, Customers::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Conversations::Table, Conversations::OriginAgentId)
                            .to(Agents::Table, Agents::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // Idempotency keys are unique per workspace; NULLs never collide.
        manager
            .create_index(
                Index::create()
                    .name("conversations_workspace_request_key")
                    .table(Conversations::Table)
                    .col(Conversations::WorkspaceId)
                    .col(Conversations::RequestId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("conversations_workspace_created_idx")
                    .table(Conversations::Table)
                    .col(Conversations::WorkspaceId)
                    .col(Conversations::CreatedAt)
                    .col(Conversations::Id)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Conversations::Table.into_iden(),
            ApiTokens::Table.into_iden(),
            Customers::Table.into_iden(),
            Agents::Table.into_iden(),
            Users::Table.into_iden(),
            Workspaces::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
