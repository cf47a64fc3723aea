//! Workspaces, users, agents and customers: created from the command line,
//! looked up by the conversation rules. Lookups are scoped by workspace, so
//! an id of another workspace reads as missing.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter,
};
use uuid::Uuid;

use super::entity::{agent, customer, user, workspace};
use crate::domain::{AgentKind, DirectoryEntry, time};

/// What `id` names in the workspace.
pub async fn entry(
    conn: &impl ConnectionTrait,
    workspace_id: Uuid,
    id: Uuid,
) -> Result<DirectoryEntry, DbErr> {
    let is_user = user::Entity::find_by_id(id)
        .filter(user::Column::WorkspaceId.eq(workspace_id))
        .count(conn)
        .await?
        > 0;
    if is_user {
        return Ok(DirectoryEntry::User);
    }
    let agent = agent::Entity::find_by_id(id)
        .filter(agent::Column::WorkspaceId.eq(workspace_id))
        .one(conn)
        .await?;
    Ok(
        match agent.and_then(|a| Some((AgentKind::parse(&a.kind)?, a.active))) {
            Some((kind, active)) => DirectoryEntry::Agent { kind, active },
            None => DirectoryEntry::Missing,
        },
    )
}

pub async fn customer_in_workspace(
    conn: &impl ConnectionTrait,
    workspace_id: Uuid,
    id: Uuid,
) -> Result<bool, DbErr> {
    Ok(customer::Entity::find_by_id(id)
        .filter(customer::Column::WorkspaceId.eq(workspace_id))
        .count(conn)
        .await?
        > 0)
}

pub async fn workspace_exists(db: &DatabaseConnection, id: Uuid) -> Result<bool, DbErr> {
    Ok(workspace::Entity::find_by_id(id).count(db).await? > 0)
}

pub async fn find_workspace_by_name(
    db: &DatabaseConnection,
    name: &str,
) -> Result<Option<Uuid>, DbErr> {
    Ok(workspace::Entity::find()
        .filter(workspace::Column::Name.eq(name))
        .one(db)
        .await?
        .map(|w| w.id))
}

pub async fn create_workspace(db: &DatabaseConnection, name: &str) -> Result<Uuid, DbErr> {
    let id = Uuid::now_v7();
    workspace::Entity::insert(workspace::ActiveModel {
        id: Set(id),
        name: Set(name.to_owned()),
        created_at: Set(time::now()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(id)
}

pub async fn create_user(
    db: &DatabaseConnection,
    workspace_id: Uuid,
    email: &str,
    name: Option<&str>,
) -> Result<Uuid, DbErr> {
    let id = Uuid::now_v7();
    user::Entity::insert(user::ActiveModel {
        id: Set(id),
        workspace_id: Set(workspace_id),
        email: Set(email.to_owned()),
        name: Set(name.map(str::to_owned)),
        created_at: Set(time::now()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(id)
}

pub async fn create_customer(
    db: &DatabaseConnection,
    workspace_id: Uuid,
    email: &str,
    name: Option<&str>,
) -> Result<Uuid, DbErr> {
    let id = Uuid::now_v7();
    customer::Entity::insert(customer::ActiveModel {
        id: Set(id),
        workspace_id: Set(workspace_id),
        email: Set(email.to_owned()),
        name: Set(name.map(str::to_owned)),
        created_at: Set(time::now()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(id)
}

/// Creates an agent. An active email agent replaces the workspace's previous
/// one, in one transaction, so a workspace never has two.
pub async fn create_agent(
    db: &super::Db,
    workspace_id: Uuid,
    kind: AgentKind,
    active: bool,
    name: Option<&str>,
) -> Result<Uuid, DbErr> {
    let id = Uuid::now_v7();
    let txn = super::begin_write(db).await?;
    if kind == AgentKind::Email && active {
        agent::Entity::update_many()
            .col_expr(agent::Column::Active, false.into())
            .filter(agent::Column::WorkspaceId.eq(workspace_id))
            .filter(agent::Column::Kind.eq(AgentKind::Email.as_str()))
            .filter(agent::Column::Active.eq(true))
            .exec(&txn)
            .await?;
    }
    agent::Entity::insert(agent::ActiveModel {
        id: Set(id),
        workspace_id: Set(workspace_id),
        kind: Set(kind.as_str().to_owned()),
        active: Set(active),
        name: Set(name.map(str::to_owned)),
        created_at: Set(time::now()),
    })
    .exec_without_returning(&txn)
    .await?;
    txn.commit().await?;
    Ok(id)
}

pub async fn find_customer_by_email(
    db: &DatabaseConnection,
    workspace_id: Uuid,
    email: &str,
) -> Result<Option<Uuid>, DbErr> {
    Ok(customer::Entity::find()
        .filter(customer::Column::WorkspaceId.eq(workspace_id))
        .filter(customer::Column::Email.eq(email))
        .one(db)
        .await?
        .map(|c| c.id))
}
