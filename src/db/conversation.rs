//! Create, update and get conversations.
//!
//! An update reads the row, lets the domain rules compute the result, and
//! writes back only the columns whose values changed (a subset of the
//! masked fields and the columns the rules derive from them), and only over
//! the version it read: should another write come first, it reads the row
//! again under a write lock (`FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE`
//! on SQLite) and computes the result again. Two updates of different
//! fields therefore never overwrite each other.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, RwLock},
};

use sea_orm::{
    ActiveModelTrait,
    ActiveValue::{self, NotSet, Set, Unchanged},
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, Iterable, ModelTrait, QueryFilter,
    QueryTrait, Statement,
    sea_query::{Expr, InsertStatement, LockBehavior, LockType, Query, UpdateStatement},
};
use uuid::Uuid;

use super::entity::conversation::{ActiveModel, Column, Entity, Model};
use super::entity::{customer, workspace};
use super::{Db, begin_direct_write, directory, error::is_unique_violation};
use crate::domain::{
    AssigneeType, Channel, Conversation, ConversationFields, ConversationPatch, NewConversation,
    Priority, Status,
    rules::{self, CreateReferences},
    time,
    violation::Violations,
};
use crate::error::Error;

/// Returns a conversation of the workspace; any other id, including one of
/// another workspace, is `ConversationNotFound`.
pub async fn get(db: &Db, workspace_id: Uuid, id: Uuid) -> Result<Conversation, Error> {
    let row = super::hot::by_id(db, workspace_id, id).await?;
    to_domain(row.ok_or(Error::ConversationNotFound)?)
}

/// Creates a conversation, or, for a retried `request_id`, returns the one
/// the first attempt created (AIP-155).
pub async fn create(
    db: &Db,
    workspace_id: Uuid,
    new: NewConversation,
    request_id: Option<Uuid>,
) -> Result<Conversation, Error> {
    // The key and the digest a retry must match; computed only when asked for.
    let key = request_id.map(|id| (id, new.fingerprint()));
    // Lookups (a retried request_id, the agent or assignee named) share a
    // transaction with the INSERT.
    let looks_up =
        key.is_some() || new.origin_agent_id.is_some() || new.fields.assignee_id.is_some();
    let txn = if looks_up {
        Some(begin_direct_write(db).await?)
    } else {
        None
    };
    let mut references = CreateReferences {
        customer_in_workspace: true,
        origin_agent: None,
        assignee: None,
    };
    if let Some(txn) = &txn {
        if let Some((request_id, fingerprint)) = &key
            && let Some(existing) = find_by_request_id(txn, workspace_id, *request_id).await?
        {
            return replay(existing, fingerprint);
        }
        if let Some(id) = new.origin_agent_id {
            references.origin_agent = Some(directory::entry(txn, workspace_id, id).await?);
        }
        if let Some(id) = new.fields.assignee_id {
            references.assignee = Some(directory::entry(txn, workspace_id, id).await?);
        }
    }
    let (id, now) = (Uuid::now_v7(), time::now());
    let plan = |customer_in_workspace| {
        let references = CreateReferences {
            customer_in_workspace,
            ..references
        };
        rules::plan_create(&new, id, workspace_id, references, now)
    };
    // The INSERT checks that the customer is in the workspace (one statement
    // instead of two), so the plan assumes it is. A refusal names every
    // problem, so then the customer is looked up after all.
    let conversation = match plan(true) {
        Ok(conversation) => conversation,
        Err(_) => {
            let customer = new.customer_id;
            plan(match &txn {
                Some(txn) => directory::customer_in_workspace(txn, workspace_id, customer).await?,
                None => directory::customer_in_workspace(&**db, workspace_id, customer).await?,
            })?
        }
    };
    let mut row = to_model(&conversation);
    row.request_id = request_id;
    row.request_fingerprint = key.as_ref().map(|(_, fingerprint)| fingerprint.clone());

    let backend = db.get_database_backend();
    // Without lookups the INSERT is the whole write (a refused create has
    // returned by now, having opened no transaction).
    let inserted = match txn {
        Some(txn) => txn
            .commit_with(insert_for_customer(backend, &row, OnHeld::Wait))
            .await
            .map(|rows| rows.into_iter().next()),
        // Alone, in autocommit, it must not wait for a lock (see `OnHeld`).
        // On PostgreSQL no row means a customer missing or held: the INSERT
        // runs again in a transaction, which may wait.
        None => match super::hot::write_without_waiting(
            db,
            insert_for_customer(backend, &row, OnHeld::Skip),
        )
        .await
        {
            Ok(None) if backend == DbBackend::Postgres => {
                let again =
                    super::hot::write_alone(db, insert_for_customer(backend, &row, OnHeld::Wait))
                        .await;
                // Counted once it inserted: a missing customer is no
                // contention.
                if let Ok(Some(_)) = again {
                    db.count_retried(|retried| &retried.creates);
                }
                again
            }
            inserted => inserted,
        },
    };
    match inserted {
        Ok(Some(row)) => to_domain(row),
        Ok(None) => Err(refusal(plan(false))),
        Err(err) => match &key {
            // Another replica committed the same request_id between our
            // lookup and our insert: answer as a retry would be answered.
            // Our transaction is given up (its connection is closed).
            Some((request_id, fingerprint)) if is_unique_violation(&err) => {
                let existing = find_by_request_id(&**db, workspace_id, *request_id)
                    .await?
                    .ok_or_else(|| Error::Internal("request_id conflict without a row".into()))?;
                replay(existing, fingerprint)
            }
            _ => Err(err.into()),
        },
    }
}

/// The error of a plan the rules were expected to refuse.
fn refusal(plan: Result<Conversation, Violations>) -> Error {
    plan.err().map_or_else(
        || Error::Internal("a create expected to be refused was not".into()),
        Error::from,
    )
}

/// What a create's INSERT does about a row another transaction holds: the
/// customer's, which its foreign key check share-locks, or the workspace's.
#[derive(Clone, Copy, Debug, PartialEq)]
enum OnHeld {
    /// Waits for it: in a transaction, which its call's deadline can still
    /// abandon before COMMIT.
    Wait,
    /// Inserts nothing instead (`FOR KEY SHARE SKIP LOCKED` on PostgreSQL):
    /// alone, in autocommit, an INSERT still waiting when its call is cut
    /// off would commit after the caller was told DEADLINE_EXCEEDED. Any
    /// other lock it would wait for ends it at once (`db::Direct`), which
    /// counts the same. (SQLite has no row locks, and its writer never waits
    /// inside a statement: the text is the same as `Wait`'s.)
    Skip,
}

/// The statement that inserts `row` if its customer is in its workspace:
/// `INSERT INTO conversations (...) SELECT $1, ... WHERE EXISTS (SELECT 1
/// FROM customers WHERE id = ... AND workspace_id = ...) RETURNING ...`,
/// one statement instead of two. It returns no row when the customer is not
/// there (or, with [`OnHeld::Skip`], held); the row it returns has
/// `Entity::find()`'s columns, in order.
///
/// Every value is a placeholder, so the text is the same for every row and
/// is built once per backend; building it with sea-query on each call was
/// a quarter of a create's instructions. The values are bound in the order
/// the builder would put them: the columns, then the customer's id and
/// workspace id (and, to skip held rows, the workspace id again).
fn insert_for_customer(backend: DbBackend, row: &Model, on_held: OnHeld) -> Statement {
    static SQL: LazyLock<[String; 3]> = LazyLock::new(|| {
        let shape = |on_held| {
            insert_query(
                Column::iter().map(|_| sea_orm::Value::Bool(None)),
                Uuid::nil(),
                Uuid::nil(),
                on_held,
            )
        };
        [
            DbBackend::Postgres.build(&shape(OnHeld::Wait)).sql,
            DbBackend::Postgres.build(&shape(OnHeld::Skip)).sql,
            DbBackend::Sqlite.build(&shape(OnHeld::Wait)).sql,
        ]
    });
    let skips = backend == DbBackend::Postgres && on_held == OnHeld::Skip;
    let sql = match backend {
        DbBackend::Postgres if skips => &SQL[1],
        DbBackend::Postgres => &SQL[0],
        _ => &SQL[2],
    };
    let (customer_id, workspace_id) = (row.customer_id, row.workspace_id);
    let values = Column::iter()
        .map(|column| row.get(column))
        .chain([customer_id.into(), workspace_id.into()])
        .chain(skips.then(|| workspace_id.into()));
    Statement::from_sql_and_values(backend, sql, values)
}

/// [`insert_for_customer`]'s statement, with `values` for the columns.
fn insert_query(
    values: impl IntoIterator<Item = sea_orm::Value>,
    customer_id: Uuid,
    workspace_id: Uuid,
    on_held: OnHeld,
) -> InsertStatement {
    let mut customer_in_workspace = Query::select()
        .expr(Expr::cust("1"))
        .from(customer::Entity)
        .and_where(customer::Column::Id.eq(customer_id))
        .and_where(customer::Column::WorkspaceId.eq(workspace_id))
        .to_owned();
    // To skip held rows: the rows the foreign key checks share-lock, locked
    // first, or skipped if held (SQLite's builder writes no lock clause).
    let skips = on_held == OnHeld::Skip;
    if skips {
        customer_in_workspace.lock_with_behavior(LockType::KeyShare, LockBehavior::SkipLocked);
    }
    let mut select = Query::select();
    select
        .exprs(values.into_iter().map(Expr::val))
        .and_where(Expr::exists(customer_in_workspace));
    if skips {
        let workspace = Query::select()
            .expr(Expr::cust("1"))
            .from(workspace::Entity)
            .and_where(workspace::Column::Id.eq(workspace_id))
            .lock_with_behavior(LockType::KeyShare, LockBehavior::SkipLocked)
            .to_owned();
        select.and_where(Expr::exists(workspace));
    }
    Query::insert()
        .into_table(Entity)
        .columns(Column::iter())
        .select_from(select)
        .expect("one value for each column")
        .returning(Query::returning().columns(Column::iter()))
        .to_owned()
}

async fn find_by_request_id(
    conn: &impl ConnectionTrait,
    workspace_id: Uuid,
    request_id: Uuid,
) -> Result<Option<Model>, Error> {
    Ok(Entity::find()
        .filter(Column::WorkspaceId.eq(workspace_id))
        .filter(Column::RequestId.eq(request_id))
        .one(conn)
        .await?)
}

fn replay(existing: Model, fingerprint: &str) -> Result<Conversation, Error> {
    if existing.request_fingerprint.as_deref() == Some(fingerprint) {
        to_domain(existing)
    } else {
        Err(Error::RequestIdReused)
    }
}

/// Applies `patch` to a conversation of the workspace. A non-empty
/// `expected_etag` that differs from the stored one aborts without writing.
///
/// The first attempt reads the row as Get does, without a lock, and writes
/// only if the row is still the version it read and no other writer holds
/// it (`WriteIf::Unchanged`): a read and a write, in autocommit. Should
/// another write have come between them, or hold the row, the update starts
/// again under the row's write lock and waits for it there, inside a
/// transaction its deadline can still abandon.
pub async fn update(
    db: &Db,
    workspace_id: Uuid,
    id: Uuid,
    patch: &ConversationPatch,
    expected_etag: Option<&str>,
) -> Result<Conversation, Error> {
    let backend = db.get_database_backend();
    let row = super::hot::by_id(db, workspace_id, id).await?;
    let read = to_domain(row.ok_or(Error::ConversationNotFound)?)?;
    let Some(changes) = plan_changes(&**db, &read, patch, expected_etag).await? else {
        return Ok(read);
    };
    let write = update_returning(backend, &read, changes, WriteIf::Unchanged);
    if let Some(row) = super::hot::write_without_waiting(db, write).await? {
        return to_domain(row);
    }

    db.count_retried(|retried| &retried.updates);
    let (txn, row) = super::hot::begin_with_locked(db, workspace_id, id).await?;
    let locked = to_domain(row.ok_or(Error::ConversationNotFound)?)?;
    let Some(changes) = plan_changes(&txn, &locked, patch, expected_etag).await? else {
        return Ok(locked);
    };
    let write = update_returning(backend, &locked, changes, WriteIf::Locked);
    // The row is locked, so it is still there.
    let row = txn.commit_with(write).await?.into_iter().next();
    to_domain(row.ok_or(Error::ConversationNotFound)?)
}

/// Checks the etag precondition and the rules against `current`, and
/// returns the columns an update must write over it, or `None` when nothing
/// changes (`updated_at` and the etag then stay as they were). `conn` looks
/// up a newly named assignee.
async fn plan_changes(
    conn: &impl ConnectionTrait,
    current: &Conversation,
    patch: &ConversationPatch,
    expected_etag: Option<&str>,
) -> Result<Option<ActiveModel>, Error> {
    if expected_etag.is_some_and(|etag| etag != current.etag()) {
        return Err(Error::EtagMismatch);
    }
    let assignee = match patch.assignee_to_check(current) {
        Some(assignee_id) => Some(directory::entry(conn, current.workspace_id, assignee_id).await?),
        None => None,
    };
    let now = time::now();
    let mut next = patch.apply(current, assignee, now)?;
    if next == *current {
        return Ok(None);
    }
    next.version = current.version + 1;
    next.updated_at = now;
    Ok(Some(changed_columns(&to_model(current), to_model(&next))))
}

/// The condition under which an update's UPDATE writes.
#[derive(Clone, Copy, Debug)]
enum WriteIf {
    /// Always: its transaction holds the row's write lock.
    Locked,
    /// Only while the row is the version the update read, and, on
    /// PostgreSQL, no other transaction holds it (`FOR NO KEY UPDATE SKIP
    /// LOCKED`, the lock an UPDATE that changes no key takes).
    /// Either way it matches no row rather than wait for a lock: alone, in
    /// autocommit, a statement still waiting when its call is cut off would
    /// commit after the caller was told DEADLINE_EXCEEDED. Any other lock it
    /// would wait for ends it at once (`db::Direct`), which counts the same.
    /// (SQLite's writer never waits inside a statement: see
    /// `db::direct::transaction`.)
    Unchanged,
}

/// `UPDATE conversations SET <changes> WHERE id = ... AND workspace_id = ...
/// [AND <the condition of `write_if`>] RETURNING <Entity::find()'s columns,
/// in order>`.
///
/// Every value is a placeholder, so the text depends only on the backend,
/// `write_if` and which columns change: it is built by sea-query once for
/// each (a fifth of an update's instructions when built on every call), and
/// later calls bind their values in the order the builder would
/// (`update_values`).
fn update_returning(
    backend: DbBackend,
    current: &Conversation,
    changes: ActiveModel,
    write_if: WriteIf,
) -> Statement {
    /// Enough for every set of columns real callers change; past it, an
    /// update's text is built each time rather than kept (masks are the
    /// caller's to choose).
    const MOST_KEPT: usize = 256;
    type Key = (bool, bool, u64);
    static TEXTS: LazyLock<RwLock<HashMap<Key, Arc<str>>>> = LazyLock::new(Default::default);

    let changed = Column::iter()
        .enumerate()
        .filter(|(_, column)| changes.get(*column).is_set())
        .fold(0_u64, |mask, (i, _)| mask | 1 << i);
    let key = (
        backend == DbBackend::Postgres,
        matches!(write_if, WriteIf::Unchanged),
        changed,
    );
    let kept = TEXTS.read().ok().and_then(|texts| texts.get(&key).cloned());
    if let Some(sql) = kept {
        let values = update_values(backend, current, &changes, write_if);
        return Statement::from_sql_and_values(backend, &*sql, values);
    }
    let statement = backend.build(&update_query(backend, current, changes, write_if));
    if let Ok(mut texts) = TEXTS.write()
        && texts.len() < MOST_KEPT
    {
        texts.insert(key, statement.sql.as_str().into());
    }
    statement
}

/// The values of [`update_query`]'s statement, in the order the builder
/// binds them: the changed columns' (in column order), then the conditions'.
fn update_values(
    backend: DbBackend,
    current: &Conversation,
    changes: &ActiveModel,
    write_if: WriteIf,
) -> Vec<sea_orm::Value> {
    let mut values: Vec<sea_orm::Value> = Column::iter()
        .filter_map(|column| match changes.get(column) {
            ActiveValue::Set(value) => Some(value),
            _ => None,
        })
        .collect();
    let mut conditions = vec![current.id.into(), current.workspace_id.into()];
    if let WriteIf::Unchanged = write_if {
        conditions.push(current.version.into());
    }
    values.extend(conditions.iter().cloned());
    if let (WriteIf::Unchanged, DbBackend::Postgres) = (write_if, backend) {
        values.extend(conditions);
    }
    values
}

/// [`update_returning`]'s statement, built by sea-query.
fn update_query(
    backend: DbBackend,
    current: &Conversation,
    changes: ActiveModel,
    write_if: WriteIf,
) -> UpdateStatement {
    // The row, and for `WriteIf::Unchanged` the version read.
    let mut conditions = vec![
        Column::Id.eq(current.id),
        Column::WorkspaceId.eq(current.workspace_id),
    ];
    if let WriteIf::Unchanged = write_if {
        conditions.push(Column::Version.eq(current.version));
    }
    let mut update = Entity::update_many().set(changes);
    for condition in &conditions {
        update = update.filter(condition.clone());
    }
    if let (WriteIf::Unchanged, DbBackend::Postgres) = (write_if, backend) {
        let mut unheld = Query::select();
        unheld.column(Column::Id).from(Entity);
        for condition in conditions {
            unheld.and_where(condition);
        }
        unheld.lock_with_behavior(LockType::NoKeyUpdate, LockBehavior::SkipLocked);
        update = update.filter(Column::Id.in_subquery(unheld));
    }
    let mut update = update.into_query();
    update.returning(Query::returning().columns(Column::iter()));
    update
}

/// An active model that sets exactly the columns whose values differ.
/// Destructured in full, so a new column does not compile until it is
/// decided here.
fn changed_columns(old: &Model, new: Model) -> ActiveModel {
    fn changed<T: PartialEq + Into<sea_orm::Value>>(old: &T, new: T) -> sea_orm::ActiveValue<T> {
        if *old == new { NotSet } else { Set(new) }
    }
    let Model {
        id,
        workspace_id: _,
        channel: _,
        customer_id: _,
        origin_agent_id: _,
        request_id: _,
        request_fingerprint: _,
        created_at: _,
        subject,
        status,
        priority,
        assignee_id,
        assignee_type,
        hold_until,
        tags,
        attributes,
        is_spam,
        spam_score,
        first_response_at,
        last_message_at,
        closed_at,
        updated_at,
        version,
    } = new;
    ActiveModel {
        id: Unchanged(id),
        subject: changed(&old.subject, subject),
        status: changed(&old.status, status),
        priority: changed(&old.priority, priority),
        assignee_id: changed(&old.assignee_id, assignee_id),
        assignee_type: changed(&old.assignee_type, assignee_type),
        hold_until: changed(&old.hold_until, hold_until),
        tags: changed(&old.tags, tags),
        attributes: changed(&old.attributes, attributes),
        is_spam: changed(&old.is_spam, is_spam),
        spam_score: changed(&old.spam_score, spam_score),
        first_response_at: changed(&old.first_response_at, first_response_at),
        last_message_at: changed(&old.last_message_at, last_message_at),
        closed_at: changed(&old.closed_at, closed_at),
        updated_at: Set(updated_at),
        version: Set(version),
        ..Default::default()
    }
}

fn to_model(c: &Conversation) -> Model {
    let f = &c.fields;
    Model {
        id: c.id,
        workspace_id: c.workspace_id,
        channel: c.channel.as_str().to_owned(),
        customer_id: c.customer_id,
        subject: f.subject.clone(),
        status: f.status.as_str().to_owned(),
        priority: f.priority.as_str().to_owned(),
        assignee_id: f.assignee_id,
        assignee_type: f.assignee_type.map(|t| t.as_str().to_owned()),
        origin_agent_id: c.origin_agent_id,
        hold_until: f.hold_until,
        tags: serde_json::json!(f.tags),
        attributes: serde_json::json!(f.attributes),
        is_spam: f.is_spam,
        spam_score: f.spam_score,
        first_response_at: f.first_response_at,
        last_message_at: f.last_message_at,
        closed_at: c.closed_at,
        created_at: c.created_at,
        updated_at: c.updated_at,
        version: c.version,
        request_id: None,
        request_fingerprint: None,
    }
}

pub(super) fn to_domain(row: Model) -> Result<Conversation, Error> {
    fn word<T>(parsed: Option<T>, column: &str, value: &str) -> Result<T, Error> {
        parsed.ok_or_else(|| Error::Internal(format!("unknown {column} `{value}` in storage")))
    }
    fn json<T: serde::de::DeserializeOwned>(
        value: serde_json::Value,
        column: &str,
    ) -> Result<T, Error> {
        serde_json::from_value(value)
            .map_err(|e| Error::Internal(format!("malformed {column} in storage: {e}")))
    }
    let assignee_type = match row.assignee_type.as_deref() {
        Some(t) => Some(word(AssigneeType::parse(t), "assignee_type", t)?),
        None => None,
    };
    Ok(Conversation {
        id: row.id,
        workspace_id: row.workspace_id,
        channel: word(Channel::parse(&row.channel), "channel", &row.channel)?,
        customer_id: row.customer_id,
        origin_agent_id: row.origin_agent_id,
        fields: ConversationFields {
            subject: row.subject,
            status: word(Status::parse(&row.status), "status", &row.status)?,
            priority: word(Priority::parse(&row.priority), "priority", &row.priority)?,
            assignee_id: row.assignee_id,
            assignee_type,
            hold_until: row.hold_until,
            tags: json(row.tags, "tags")?,
            attributes: json(row.attributes, "attributes")?,
            is_spam: row.is_spam,
            spam_score: row.spam_score,
            first_response_at: row.first_response_at,
            last_message_at: row.last_message_at,
        },
        closed_at: row.closed_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
        version: row.version,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;

    /// A row with every optional column empty, and one with all of them set.
    fn rows() -> [Model; 2] {
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
        let bare = Model {
            id: Uuid::now_v7(),
            workspace_id: Uuid::now_v7(),
            channel: "email".into(),
            customer_id: Uuid::now_v7(),
            subject: None,
            status: "open".into(),
            priority: "normal".into(),
            assignee_id: None,
            assignee_type: None,
            origin_agent_id: None,
            hold_until: None,
            tags: json!([]),
            attributes: json!({}),
            is_spam: false,
            spam_score: None,
            first_response_at: None,
            last_message_at: None,
            closed_at: None,
            created_at: at,
            updated_at: at,
            version: 1,
            request_id: None,
            request_fingerprint: None,
        };
        let full = Model {
            subject: Some("Refund".into()),
            status: "on_hold".into(),
            assignee_id: Some(Uuid::now_v7()),
            assignee_type: Some("agent".into()),
            origin_agent_id: Some(Uuid::now_v7()),
            hold_until: Some(at),
            tags: json!(["vip", "billing"]),
            attributes: json!({"plan": "pro", "seats": 3}),
            is_spam: true,
            spam_score: Some(0.25),
            first_response_at: Some(at),
            last_message_at: Some(at),
            closed_at: Some(at),
            version: 7,
            request_id: Some(Uuid::now_v7()),
            request_fingerprint: Some("digest".into()),
            ..bare.clone()
        };
        [bare, full]
    }

    /// An UPDATE whose text was kept sends exactly what building it for the
    /// change sends: the same text and the same values, in the same order,
    /// for changes that set values, clear them, and touch every column.
    #[test]
    fn a_kept_update_text_is_the_update_built_for_the_change() {
        let [bare, full] = rows();
        // Attribute values are strings in the domain.
        let full = Model {
            attributes: json!({"plan": "pro", "seats": "3"}),
            ..full
        };
        let later = |model: &Model| Model {
            version: model.version + 1,
            updated_at: model.updated_at + chrono::Duration::seconds(1),
            ..model.clone()
        };
        let renamed = Model {
            subject: Some("Renamed".into()),
            priority: "high".into(),
            ..later(&bare)
        };
        let emptied = Model {
            id: full.id,
            workspace_id: full.workspace_id,
            ..later(&bare)
        };
        let filled = Model {
            id: bare.id,
            workspace_id: bare.workspace_id,
            ..later(&full)
        };
        let cases = [(&bare, renamed), (&full, emptied), (&bare, filled)];
        for backend in [DbBackend::Postgres, DbBackend::Sqlite] {
            for write_if in [WriteIf::Locked, WriteIf::Unchanged] {
                for (old, new) in &cases {
                    let current = to_domain((*old).clone()).unwrap();
                    let changes = changed_columns(old, new.clone());
                    let built =
                        backend.build(&update_query(backend, &current, changes.clone(), write_if));
                    // The first call may build and keep the text; the
                    // second finds it kept.
                    for _ in 0..2 {
                        let sent = update_returning(backend, &current, changes.clone(), write_if);
                        assert_eq!(sent.sql, built.sql, "{backend:?} {write_if:?}");
                        assert_eq!(sent.values, built.values, "{backend:?} {write_if:?}");
                    }
                }
            }
        }
    }

    /// The insert built once sends exactly what building it for the row
    /// sends: the same text and the same values, in the same order.
    #[test]
    fn the_prebuilt_insert_is_the_insert_built_for_the_row() {
        for backend in [DbBackend::Postgres, DbBackend::Sqlite] {
            for row in rows() {
                for on_held in [OnHeld::Wait, OnHeld::Skip] {
                    // SQLite has no row locks: it always sends `Wait`'s text.
                    let shape = match backend {
                        DbBackend::Postgres => on_held,
                        _ => OnHeld::Wait,
                    };
                    let built = backend.build(&insert_query(
                        Column::iter().map(|column| row.get(column)),
                        row.customer_id,
                        row.workspace_id,
                        shape,
                    ));
                    let prebuilt = insert_for_customer(backend, &row, on_held);
                    assert_eq!(prebuilt.sql, built.sql, "{backend:?} {on_held:?}");
                    assert_eq!(prebuilt.values, built.values, "{backend:?} {on_held:?}");
                }
            }
        }
    }
}
