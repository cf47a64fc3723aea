//! Storage checks the API alone would not pin down.

use conversation_service::{
    db::{entity::conversation, hot},
    proto::v1 as pb,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use uuid::Uuid;

use crate::helpers::*;

/// The prebuilt statements decode rows by column position: every column
/// must come back as SeaORM's own query returns it, NULLs and JSON included.
#[tokio::test]
async fn prebuilt_statements_decode_every_column_as_seaorm_does() {
    let app = TestApp::spawn().await;
    let bare = app.create_email().await;
    let full = pb::Conversation {
        subject: Some("Subject".into()),
        status: pb::Status::OnHold as i32,
        priority: pb::Priority::High as i32,
        assignee_id: Some(app.a.user.to_string()),
        assignee_type: pb::AssigneeType::User as i32,
        hold_until: Some(in_future(3600)),
        tags: vec!["t".into(), "u".into()],
        attributes: [("a".to_string(), "1".to_string())].into(),
        is_spam: true,
        spam_score: Some(0.25),
        first_response_at: Some(in_future(-100)),
        last_message_at: Some(in_future(-50)),
        ..email(&app.a)
    };
    let full = app
        .create_with_request_id(&app.a.token, full, &Uuid::new_v4().to_string())
        .await
        .unwrap();
    let closed = app.create_email().await;
    app.update(
        &app.a.token,
        pb::Conversation {
            status: pb::Status::Closed as i32,
            ..with_id(&closed.id)
        },
        Some(&["status"]),
    )
    .await
    .unwrap();

    for created in [&bare, &full, &closed] {
        let id = Uuid::parse_str(&created.id).unwrap();
        let expected = conversation::Entity::find_by_id(id)
            .one(&*app.db)
            .await
            .unwrap()
            .unwrap();
        let found = hot::by_id(&app.db, app.a.id, id).await.unwrap();
        assert_eq!(found, Some(expected.clone()));
        assert_eq!(hot::by_id(&app.db, app.b.id, id).await.unwrap(), None);
        for (workspace, expected) in [(app.a.id, Some(expected)), (app.b.id, None)] {
            let (txn, locked) = hot::begin_with_locked(&app.db, workspace, id)
                .await
                .unwrap();
            assert_eq!(locked, expected);
            txn.commit().await.unwrap();
        }
    }

    let expected = conversation::Entity::find()
        .filter(conversation::Column::WorkspaceId.eq(app.a.id))
        .order_by_desc(conversation::Column::CreatedAt)
        .order_by_desc(conversation::Column::Id)
        .all(&*app.db)
        .await
        .unwrap();
    assert_eq!(expected.len(), 3);
    assert_eq!(hot::newest(&app.db, app.a.id, 10).await.unwrap(), expected);
    assert_eq!(
        hot::newest(&app.db, app.a.id, 2).await.unwrap(),
        expected[..2]
    );
}

/// A write transaction whose statement failed does not report a COMMIT as
/// done: PostgreSQL answers COMMIT in a failed transaction with a rollback
/// and no error, so the direct transaction refuses it. (SQLite keeps a
/// transaction going after a failed statement, so there COMMIT stands.)
#[tokio::test]
async fn a_commit_after_a_failed_statement_is_an_error() {
    use sea_orm::{ConnectionTrait, DbBackend};

    let app = TestApp::spawn().await;
    let created = app.create_email().await;
    let id = Uuid::parse_str(&created.id).unwrap();
    let (txn, row) = hot::begin_with_locked(&app.db, app.a.id, id).await.unwrap();
    if txn.get_database_backend() != DbBackend::Postgres {
        return;
    }
    assert!(row.is_some());
    assert!(txn.execute_unprepared("SELECT 1 / 0").await.is_err());
    assert!(txn.commit().await.is_err(), "the COMMIT was refused");
    // The row lock went with the transaction.
    let (locked, row) = hot::begin_with_locked(&app.db, app.a.id, id).await.unwrap();
    assert!(row.is_some());
    locked.commit().await.unwrap();
}

/// `commit_with` refuses too: after a failed statement, the last
/// statement's COMMIT must not make the writes before the failure hold. On
/// SQLite, which keeps a transaction going after a failed statement, the
/// refusal is the direct transaction's own; PostgreSQL refuses the last
/// statement itself.
#[tokio::test]
async fn a_last_statement_after_a_failed_one_does_not_commit() {
    use sea_orm::{ConnectionTrait, QueryTrait, sea_query::Expr};

    let app = TestApp::spawn().await;
    let created = app.create_email().await;
    let id = Uuid::parse_str(&created.id).unwrap();
    let (txn, row) = hot::begin_with_locked(&app.db, app.a.id, id).await.unwrap();
    assert!(row.is_some());
    let backend = txn.get_database_backend();
    let rename = conversation::Entity::update_many()
        .col_expr(conversation::Column::Subject, Expr::value("not kept"))
        .filter(conversation::Column::Id.eq(id))
        .build(backend);
    txn.execute_raw(rename).await.unwrap();
    assert!(
        txn.execute_unprepared("SELECT * FROM no_such_table")
            .await
            .is_err()
    );
    let last = conversation::Entity::find_by_id(id).build(backend);
    assert!(txn.commit_with(last).await.is_err(), "refused");

    let row = hot::by_id(&app.db, app.a.id, id).await.unwrap().unwrap();
    assert_eq!(row.subject, created.subject);
}

/// The columns of each index on `conversations`, in order, comma-joined.
async fn conversation_indexes(app: &TestApp) -> Vec<String> {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    use std::collections::BTreeMap;

    let backend = app.db.get_database_backend();
    // One row per indexed column: the index, the column's place, its name.
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT x.indexrelid::regclass::text AS idx, k.n::bigint AS seqno, \
                    a.attname::text AS name \
             FROM pg_index x \
             JOIN pg_class t ON t.oid = x.indrelid \
             CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) \
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
             WHERE t.relname = 'conversations' AND pg_table_is_visible(t.oid)"
        }
        _ => {
            "SELECT l.name AS idx, i.seqno AS seqno, i.name AS name \
             FROM pragma_index_list('conversations') AS l, pragma_index_info(l.name) AS i"
        }
    };
    let mut indexes: BTreeMap<String, BTreeMap<i64, String>> = BTreeMap::new();
    for row in app
        .db
        .query_all_raw(Statement::from_string(backend, sql))
        .await
        .unwrap()
    {
        indexes
            .entry(row.try_get("", "idx").unwrap())
            .or_default()
            .insert(
                row.try_get("", "seqno").unwrap(),
                row.try_get("", "name").unwrap(),
            );
    }
    indexes
        .into_values()
        .map(|columns| columns.into_values().collect::<Vec<_>>().join(","))
        .collect()
}

/// Every List order, and every column a filter compares with `=`, has an
/// index led by workspace_id that ends in the order's key and id: a page,
/// even of a value rare in its workspace, is a range scan of one index.
#[tokio::test]
async fn every_order_and_filtered_column_has_a_workspace_index() {
    let app = TestApp::spawn().await;
    let indexes = conversation_indexes(&app).await;
    let mut wanted = vec![
        "workspace_id,created_at,id".to_owned(),
        "workspace_id,updated_at,id".to_owned(),
    ];
    for column in [
        "status",
        "priority",
        "channel",
        "customer_id",
        "assignee_id",
        "is_spam",
    ] {
        wanted.push(format!("workspace_id,{column},created_at,id"));
    }
    for columns in wanted {
        assert!(
            indexes.contains(&columns),
            "no index on ({columns}); indexes: {indexes:?}"
        );
    }
}

/// A database migrated up to the list indexes, one step short of the
/// channel and is_spam indexes.
async fn before_the_filter_index_migration(
    dir: &tempfile::TempDir,
) -> (String, sea_orm::DatabaseConnection) {
    use conversation_service::db::migration::Migrator;
    use sea_orm::Database;
    use sea_orm_migration::MigratorTrait;

    let mut url = fresh_database_url(dir).await;
    if url.starts_with("sqlite:") {
        url.push_str("?mode=rwc");
    }
    let conn = Database::connect(url.as_str()).await.unwrap();
    Migrator::up(&conn, Some(2)).await.unwrap();
    (url, conn)
}

const CHANNEL_INDEX: &str = "CREATE INDEX conversations_workspace_channel_idx \
     ON conversations (workspace_id, channel, created_at, id)";

/// Runs the remaining migrations and returns the refusal's message, if any,
/// after checking that a refused migration is still pending.
async fn finish_migrating(conn: &sea_orm::DatabaseConnection) -> Option<String> {
    use conversation_service::db::migration::Migrator;
    use sea_orm_migration::MigratorTrait;

    let result = Migrator::up(conn, None).await;
    let pending = Migrator::get_pending_migrations(conn).await.unwrap();
    match result {
        Ok(()) => {
            assert!(pending.is_empty());
            None
        }
        Err(error) => {
            assert_eq!(pending.len(), 1, "the refused migration is still pending");
            Some(error.to_string())
        }
    }
}

/// The channel and is_spam indexes may be built before the upgrade (the
/// README's CONCURRENTLY step for a large table): their migration then
/// finds them and completes.
#[tokio::test]
async fn the_filter_index_migration_keeps_an_index_built_beforehand() {
    use sea_orm::ConnectionTrait;

    let dir = tempfile::tempdir().unwrap();
    let (_, conn) = before_the_filter_index_migration(&dir).await;
    conn.execute_unprepared(CHANNEL_INDEX).await.unwrap();
    assert_eq!(finish_migrating(&conn).await, None);
    conn.close().await.unwrap();
}

/// An index with the right name but another definition is not taken for
/// the one the migration builds: List would scan without it, or could not
/// read its order from it. The migration stops and says what it found.
#[tokio::test]
async fn the_filter_index_migration_refuses_an_index_defined_otherwise() {
    use sea_orm::ConnectionTrait;

    let dir = tempfile::tempdir().unwrap();
    let (_, conn) = before_the_filter_index_migration(&dir).await;
    conn.execute_unprepared(
        "CREATE TABLE decoy (workspace_id TEXT, channel TEXT, created_at TEXT, id TEXT)",
    )
    .await
    .unwrap();
    for (on, found) in [
        (
            "conversations (workspace_id, channel)",
            "(workspace_id, channel), not",
        ),
        (
            "conversations (workspace_id, channel DESC, created_at, id)",
            "channel DESC",
        ),
        (
            "conversations (workspace_id, channel, created_at, id) WHERE is_spam",
            "WHERE",
        ),
        (
            "decoy (workspace_id, channel, created_at, id)",
            "is on table decoy",
        ),
    ] {
        conn.execute_unprepared(&format!(
            "CREATE INDEX conversations_workspace_channel_idx ON {on}"
        ))
        .await
        .unwrap();
        let refusal = finish_migrating(&conn).await.expect(on);
        assert!(
            refusal.contains("index conversations_workspace_channel_idx already exists")
                && refusal.contains(found),
            "{on}: {refusal}"
        );
        conn.execute_unprepared("DROP INDEX conversations_workspace_channel_idx")
            .await
            .unwrap();
    }
    assert_eq!(finish_migrating(&conn).await, None, "built once dropped");
    conn.close().await.unwrap();
}

/// A CREATE INDEX CONCURRENTLY that was interrupted leaves an invalid index
/// that PostgreSQL keeps up to date but never reads. The migration does not
/// take it for a built one. PostgreSQL only: SQLite has no such state.
#[tokio::test]
async fn the_filter_index_migration_refuses_an_invalid_index() {
    use sea_orm::{ConnectOptions, ConnectionTrait, Database, DbBackend, TransactionTrait};

    let dir = tempfile::tempdir().unwrap();
    let (url, conn) = before_the_filter_index_migration(&dir).await;
    if conn.get_database_backend() != DbBackend::Postgres {
        return;
    }
    // A concurrent build enters the index in the catalog, then waits for
    // every transaction that may write the table; a lock timeout in that
    // wait leaves the entry behind, invalid.
    let writer = conn.begin().await.unwrap();
    writer
        .execute_unprepared("LOCK TABLE conversations IN ROW EXCLUSIVE MODE")
        .await
        .unwrap();
    let builder = Database::connect(
        ConnectOptions::new(url.as_str())
            .max_connections(1)
            .to_owned(),
    )
    .await
    .unwrap();
    builder
        .execute_unprepared("SET lock_timeout = '300ms'")
        .await
        .unwrap();
    let concurrently = CHANNEL_INDEX.replace("CREATE INDEX", "CREATE INDEX CONCURRENTLY");
    let cut_short = builder.execute_unprepared(&concurrently).await.unwrap_err();
    assert!(
        cut_short.to_string().contains("lock timeout"),
        "{cut_short}"
    );
    builder.close().await.unwrap();
    writer.rollback().await.unwrap();
    let left = conn
        .query_one_raw(sea_orm::Statement::from_string(
            DbBackend::Postgres,
            "SELECT indisvalid FROM pg_index \
             WHERE indexrelid = 'conversations_workspace_channel_idx'::regclass",
        ))
        .await
        .unwrap()
        .expect("the interrupted build left its index");
    assert!(!left.try_get::<bool>("", "indisvalid").unwrap());

    let refusal = finish_migrating(&conn).await.expect("refused");
    assert!(
        refusal.contains("conversations_workspace_channel_idx") && refusal.contains("not ready"),
        "{refusal}"
    );
    conn.close().await.unwrap();
}
