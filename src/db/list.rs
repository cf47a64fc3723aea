//! ListConversations: a keyset page over the workspace's conversations.
//!
//! The cursor is the (sort value, id) of the last row of the previous page,
//! compared as a row value, so page 1,000 costs what page 1 costs and rows
//! inserted or updated meanwhile never shift the pages.

use sea_orm::{
    ColumnTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    sea_query::{Expr, ExprTrait, SimpleExpr},
};
use uuid::Uuid;

use super::Db;
use super::conversation::to_domain;
use super::entity::conversation::{Column, Entity};
use crate::domain::{
    Conversation,
    list::{Bound, Condition, Cursor, Equality, Filter, Order},
};
use crate::error::Error;

/// One page, and where the next one starts (`None` on the last page).
pub struct Page {
    pub conversations: Vec<Conversation>,
    pub next: Option<Cursor>,
}

pub async fn list(
    db: &Db,
    workspace_id: Uuid,
    filter: &Filter,
    order: Order,
    after: Option<Cursor>,
    page_size: u32,
) -> Result<Page, Error> {
    let snapshot = after.map_or_else(crate::domain::time::now, |cursor| cursor.snapshot);
    let backend = db.get_database_backend();
    let sort = if order.by_updated_at() {
        Column::UpdatedAt
    } else {
        Column::CreatedAt
    };
    let direction = if order.descending() {
        sea_orm::Order::Desc
    } else {
        sea_orm::Order::Asc
    };

    // One more than the page: whether it comes tells if a next page exists.
    let limit = page_size + 1;
    let rows = if filter.0.is_empty() && order == Order::CreatedDesc && after.is_none() {
        // The listing clients open with, from a statement built once.
        super::hot::newest(db, workspace_id, limit).await?
    } else {
        let mut query = Entity::find().filter(Column::WorkspaceId.eq(workspace_id));
        for condition in &filter.0 {
            query = query.filter(condition_expr(condition, backend));
        }
        if order.by_updated_at() {
            query = query.filter(Column::UpdatedAt.lte(snapshot));
        }
        if let Some(cursor) = after {
            let row = Expr::tuple([Expr::col(sort), Expr::col(Column::Id)]);
            let at = Expr::tuple([Expr::val(cursor.sort_value), Expr::val(cursor.id)]);
            query = query.filter(if order.descending() {
                row.lt(at)
            } else {
                row.gt(at)
            });
        }
        let query = query
            .order_by(sort, direction.clone())
            .order_by(Column::Id, direction);
        let statement = if filter.0.is_empty() {
            // Its best plan is the same index range whatever the values:
            // reused from the plan cache (see `hot::with_limit`).
            let mut statement = query.build(backend);
            statement.sql = super::hot::with_limit(&statement.sql, limit);
            statement
        } else {
            // A filter's best plan depends on its values (a rare tag is
            // found through the GIN index, a common one by walking the
            // order's index), so the LIMIT stays bound, and PostgreSQL keeps
            // planning the page for the values it is given.
            query.limit(u64::from(limit)).build(backend)
        };
        super::hot::select(db, statement).await?
    };

    let more = rows.len() > page_size as usize;
    let conversations = rows
        .into_iter()
        .take(page_size as usize)
        .map(to_domain)
        .collect::<Result<Vec<_>, _>>()?;
    let next = more
        .then(|| conversations.last())
        .flatten()
        .map(|last| Cursor {
            sort_value: if order.by_updated_at() {
                last.updated_at
            } else {
                last.created_at
            },
            id: last.id,
            snapshot,
        });
    Ok(Page {
        conversations,
        next,
    })
}

fn equality<T: Into<sea_orm::Value>>(column: Column, equality: Equality, value: T) -> SimpleExpr {
    match equality {
        Equality::Is => column.eq(value),
        Equality::IsNot => column.ne(value),
    }
}

fn condition_expr(condition: &Condition, backend: DbBackend) -> SimpleExpr {
    match condition {
        Condition::Status(eq, status) => equality(Column::Status, *eq, status.as_str()),
        Condition::Priority(eq, priority) => equality(Column::Priority, *eq, priority.as_str()),
        Condition::Channel(eq, channel) => equality(Column::Channel, *eq, channel.as_str()),
        Condition::CustomerId(eq, id) => equality(Column::CustomerId, *eq, *id),
        Condition::IsSpam(eq, spam) => equality(Column::IsSpam, *eq, *spam),
        Condition::AssigneeId(Equality::Is, None) => Column::AssigneeId.is_null(),
        Condition::AssigneeId(Equality::IsNot, None) => Column::AssigneeId.is_not_null(),
        Condition::AssigneeId(Equality::Is, Some(id)) => Column::AssigneeId.eq(*id),
        // The exact complement of `=`: unassigned conversations too.
        Condition::AssigneeId(Equality::IsNot, Some(id)) => {
            Column::AssigneeId.ne(*id).or(Column::AssigneeId.is_null())
        }
        Condition::CreatedAt(Bound::Before, at) => Column::CreatedAt.lt(*at),
        Condition::CreatedAt(Bound::After, at) => Column::CreatedAt.gt(*at),
        Condition::UpdatedAt(Bound::Before, at) => Column::UpdatedAt.lt(*at),
        Condition::UpdatedAt(Bound::After, at) => Column::UpdatedAt.gt(*at),
        Condition::HasTag(tag) => match backend {
            // jsonb containment, served by the GIN index on tags.
            DbBackend::Postgres => Expr::cust_with_values(
                r#""conversations"."tags" @> $1"#,
                [serde_json::json!([tag])],
            ),
            _ => Expr::cust_with_values(
                r#"EXISTS (SELECT 1 FROM json_each("conversations"."tags") WHERE json_each.value = ?)"#,
                [tag.clone()],
            ),
        },
    }
}
