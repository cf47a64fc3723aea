//! API tokens: issued and revoked from the command line, loaded into memory
//! by the server (see `grpc::auth`).

use std::collections::HashMap;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
};
use uuid::Uuid;

use super::entity::api_token::{self, Column, Entity};
use crate::domain::{
    auth::{Abilities, Principal, TokenSecret, token_hash},
    time,
};

/// Issues a token. The secret is returned once and only its hash is stored.
pub async fn issue(
    db: &DatabaseConnection,
    workspace_id: Uuid,
    abilities: Abilities,
    name: Option<&str>,
) -> Result<(Uuid, TokenSecret), DbErr> {
    let id = Uuid::now_v7();
    let secret = TokenSecret::generate();
    Entity::insert(api_token::ActiveModel {
        id: Set(id),
        workspace_id: Set(workspace_id),
        name: Set(name.map(str::to_owned)),
        token_hash: Set(token_hash(secret.expose())),
        abilities: Set(abilities.to_string()),
        created_at: Set(time::now()),
        revoked_at: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    Ok((id, secret))
}

pub async fn list(
    db: &DatabaseConnection,
    workspace_id: Uuid,
) -> Result<Vec<api_token::Model>, DbErr> {
    Entity::find()
        .filter(Column::WorkspaceId.eq(workspace_id))
        .order_by_asc(Column::CreatedAt)
        .order_by_asc(Column::Id)
        .all(db)
        .await
}

/// Which token to revoke.
pub enum TokenRef<'a> {
    Secret(&'a str),
    Id(Uuid),
}

/// Revokes a token. Returns false when no such token exists; revoking a
/// revoked token keeps its first revocation time.
pub async fn revoke(db: &DatabaseConnection, token: TokenRef<'_>) -> Result<bool, DbErr> {
    let found = match token {
        TokenRef::Secret(secret) => {
            Entity::find()
                .filter(Column::TokenHash.eq(token_hash(secret)))
                .one(db)
                .await?
        }
        TokenRef::Id(id) => Entity::find_by_id(id).one(db).await?,
    };
    let Some(found) = found else {
        return Ok(false);
    };
    Entity::update_many()
        .col_expr(Column::RevokedAt, Some(time::now()).into())
        .filter(Column::Id.eq(found.id))
        .filter(Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(true)
}

/// Every unrevoked token, keyed by its hash.
pub async fn active_principals(
    db: &DatabaseConnection,
) -> Result<HashMap<String, Principal>, DbErr> {
    let rows = Entity::find()
        .filter(Column::RevokedAt.is_null())
        .all(db)
        .await?;
    let mut principals = HashMap::with_capacity(rows.len());
    for row in rows {
        // A row with abilities this version does not know grants nothing.
        let Ok(abilities) = Abilities::parse_list(&row.abilities) else {
            tracing::warn!(token_id = %row.id, "skipping token with unknown abilities");
            continue;
        };
        principals.insert(
            row.token_hash,
            Principal {
                workspace_id: row.workspace_id,
                token_id: row.id,
                abilities,
            },
        );
    }
    Ok(principals)
}
