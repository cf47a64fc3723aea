//! Round trips: the statements each RPC sends to the database, read from
//! sqlx's own statement log and grouped by the call's request id (the `rpc`
//! span's field). Each extra statement is a round trip on every call, so the
//! counts are pinned here.
//!
//! The writes' transactions run on direct connections (`db::direct`), whose
//! BEGIN and COMMIT the driver logs like any statement, so each call's
//! transaction statements are pinned exactly, on both backends. On
//! PostgreSQL, the List pages' statements are checked to keep their plan.

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
};

use prost_types::FieldMask;
use sea_orm::DbBackend;
use tonic::Request;
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{
    Layer,
    filter::filter_fn,
    layer::{Context, SubscriberExt},
    registry::LookupSpan,
};
use uuid::Uuid;

use crate::helpers::*;
use conversation_service::proto::v1 as pb;

/// What each call sent, by request id: one entry per exchange with the
/// driver ("BEGIN", `SELECT "conversations"."id", …`, or, where SQLite's
/// writer takes several statements at once, `BEGIN IMMEDIATE; SELECT …`).
fn statements() -> &'static Mutex<HashMap<String, Vec<String>>> {
    static STATEMENTS: OnceLock<Mutex<HashMap<String, Vec<String>>>> = OnceLock::new();
    STATEMENTS.get_or_init(Default::default)
}

/// Installs the capturing subscriber once for this test binary. It listens
/// only to `rpc` spans and `sqlx::query` events, so other tests are not
/// slowed or changed.
fn capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let layer = Capture.with_filter(filter_fn(|metadata| {
            metadata.name() == "rpc" || metadata.target() == "sqlx::query"
        }));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("no other global subscriber in the api tests");
    });
}

struct RequestId(String);

/// Reads one named field as text.
struct FieldText {
    name: &'static str,
    value: Option<String>,
}

impl Visit for FieldText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == self.name {
            self.value = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == self.name {
            self.value = Some(format!("{value:?}"));
        }
    }
}

struct Capture;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut field = FieldText {
            name: "request_id",
            value: None,
        };
        attrs.record(&mut field);
        if let (Some(request_id), Some(span)) = (field.value, ctx.span(id)) {
            span.extensions_mut().insert(RequestId(request_id));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(request_id) = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .find_map(|span| span.extensions().get::<RequestId>().map(|r| r.0.clone()))
        }) else {
            return;
        };
        // sqlx logs a long statement's text in full beside its summary (its
        // first four words), and a short one as the summary alone.
        let mut text = FieldText {
            name: "db.statement",
            value: None,
        };
        event.record(&mut text);
        let text = match text.value.map(|sql| sql.trim().to_owned()) {
            Some(sql) if !sql.is_empty() => sql,
            _ => {
                let mut summary = FieldText {
                    name: "summary",
                    value: None,
                };
                event.record(&mut summary);
                summary.value.unwrap_or_default()
            }
        };
        statements()
            .lock()
            .unwrap()
            .entry(request_id)
            .or_default()
            .push(text);
    }
}

/// A request carrying the token and a fresh request id, and that id.
fn tagged<T>(token: &str, message: T) -> (Request<T>, String) {
    let request_id = format!("round-trips-{}", Uuid::new_v4());
    let mut request = authed(token, message);
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    (request, request_id)
}

/// The statements a call sent; sqlx logs a statement when it completes,
/// before the call answers. A connection the pool opens during the call
/// logs its setup (SQLite's PRAGMAs) there too; that is not the call's.
fn sent(request_id: &str) -> Vec<String> {
    let setup = |s: &String| s.starts_with("PRAGMA") || s.starts_with("SET");
    statements()
        .lock()
        .unwrap()
        .get(request_id)
        .map(|sent| sent.iter().filter(|s| !setup(s)).cloned().collect())
        .unwrap_or_default()
}

/// Waits until the call `request_id` has sent BEGIN: its statement alone
/// found a row held, and it goes on in a transaction.
async fn began(request_id: &str) {
    let started = std::time::Instant::now();
    while !sent(request_id).iter().any(|s| s.starts_with("BEGIN")) {
        assert!(started.elapsed().as_secs() < 5, "{request_id} never began");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Each exchange by the first word of its first statement, and a locked
/// read as `SELECT … FOR UPDATE`.
fn kinds(sent: &[String]) -> Vec<&str> {
    sent.iter()
        .map(|s| s.split(';').next().unwrap_or_default())
        .map(|s| match s.split_whitespace().next() {
            Some("SELECT") if s.ends_with("FOR UPDATE") => "SELECT … FOR UPDATE",
            Some(first) => first,
            None => "",
        })
        .collect()
}

/// Checks a call's exchanges with the driver (`exchanges`: a round trip to
/// PostgreSQL, a hand-over to SQLite's worker thread) and the statements in
/// them: `data` statements, and exactly the transaction statements `control`
/// around them, BEGIN first and COMMIT last when there ("BEGIN" stands for
/// the backend's: SQLite's writes take `BEGIN IMMEDIATE`).
fn assert_statements(
    backend: DbBackend,
    call: &str,
    sent: &[String],
    exchanges: usize,
    data: usize,
    control: &[&str],
) {
    assert_eq!(sent.len(), exchanges, "{call}: {sent:?}");
    let begin = match backend {
        DbBackend::Sqlite => "BEGIN IMMEDIATE",
        _ => "BEGIN",
    };
    let is_txn = |s: &&str| [begin, "COMMIT", "ROLLBACK"].contains(s);
    // The statements are sea-query's, with every value bound (an
    // unfiltered List page's LIMIT, a number, is written in): a `;` in their
    // text only ever separates two of them.
    // PostgreSQL's BEGIN carries its transaction's `SET LOCAL lock_timeout`
    // in the same exchange; that is part of beginning.
    let sent: Vec<&str> = sent
        .iter()
        .flat_map(|exchange| exchange.split(';'))
        .map(str::trim)
        .filter(|s| !s.starts_with("SET LOCAL"))
        .collect();
    let data_sent = sent.iter().filter(|s| !is_txn(s)).count();
    assert_eq!(data_sent, data, "{call}: {sent:?}");
    let control_sent: Vec<&str> = sent.iter().copied().filter(|s| is_txn(s)).collect();
    let control: Vec<&str> = control
        .iter()
        .map(|s| if *s == "BEGIN" { begin } else { s })
        .collect();
    assert_eq!(control_sent, control, "{call}: {sent:?}");
    if control.first() == Some(&begin) {
        assert_eq!(sent.first(), Some(&begin), "{call}");
    }
    if control.last() == Some(&"COMMIT") {
        assert_eq!(sent.last(), Some(&"COMMIT"), "{call}");
    }
}

#[tokio::test]
async fn each_rpc_makes_the_fewest_round_trips() {
    capture();
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let token = &app.a.token;
    let backend = app.db.get_database_backend();

    // A plain create is its INSERT (the customer check rides in it), alone.
    // It must not wait for a lock there (a call cut off while it waited
    // would commit later): on PostgreSQL it skips a customer or workspace
    // row another transaction holds (below); SQLite's writer never waits
    // inside a statement.
    let (request, plain) = tagged(
        token,
        pb::CreateConversationRequest {
            conversation: Some(email(&app.a)),
            request_id: String::new(),
        },
    );
    let created = client
        .create_conversation(request)
        .await
        .unwrap()
        .into_inner()
        .conversation
        .unwrap();
    let sent_plain = sent(&plain);
    assert_statements(backend, "plain create", &sent_plain, 1, 1, &[]);
    assert!(sent_plain[0].starts_with("INSERT"), "{sent_plain:?}");
    if backend == DbBackend::Postgres {
        assert_eq!(
            sent_plain[0].matches("FOR KEY SHARE SKIP LOCKED").count(),
            2,
            "the customer's and the workspace's rows are skipped if held: {sent_plain:?}"
        );

        // With the customer's row held by another transaction, the INSERT
        // inserts nothing, and runs again in a transaction, which waits.
        let lock = lock_customer(&app).await;
        let (request, held) = tagged(
            token,
            pb::CreateConversationRequest {
                conversation: Some(email(&app.a)),
                request_id: String::new(),
            },
        );
        let release = async {
            began(&held).await;
            lock.commit().await.unwrap();
        };
        let (result, ()) = tokio::join!(client.create_conversation(request), release);
        result.unwrap();
        let sent_held = sent(&held);
        assert_eq!(
            kinds(&sent_held),
            ["INSERT", "BEGIN", "INSERT", "COMMIT"],
            "create with the customer held: {sent_held:?}"
        );
    }

    // A request_id is looked up first, in the same transaction.
    let (request, keyed) = tagged(
        token,
        pb::CreateConversationRequest {
            conversation: Some(email(&app.a)),
            request_id: Uuid::new_v4().to_string(),
        },
    );
    client.create_conversation(request).await.unwrap();
    assert_statements(
        backend,
        "create with a request_id",
        &sent(&keyed),
        match backend {
            DbBackend::Postgres => 4,
            _ => 3,
        },
        2,
        &["BEGIN", "COMMIT"],
    );

    // Get and the first page of a list: one SELECT each.
    let (request, get) = tagged(
        token,
        pb::GetConversationRequest {
            id: created.id.clone(),
        },
    );
    client.get_conversation(request).await.unwrap();
    assert_statements(backend, "get", &sent(&get), 1, 1, &[]);
    let (request, list) = tagged(
        token,
        pb::ListConversationsRequest {
            page_size: 10,
            ..Default::default()
        },
    );
    client.list_conversations(request).await.unwrap();
    assert_statements(backend, "list", &sent(&list), 1, 1, &[]);

    // An update with an etag: a read and an UPDATE ... RETURNING that
    // writes only over the version read, with no read after the write and no
    // transaction around them (see `db::conversation::update`).
    let (request, update) = tagged(
        token,
        pb::UpdateConversationRequest {
            conversation: Some(pb::Conversation {
                subject: Some("Renamed".into()),
                priority: pb::Priority::High as i32,
                etag: created.etag.clone(),
                ..with_id(&created.id)
            }),
            update_mask: Some(FieldMask {
                paths: vec!["subject".into(), "priority".into()],
            }),
        },
    );
    client.update_conversation(request).await.unwrap();
    let sent_update = sent(&update);
    assert_statements(backend, "update", &sent_update, 2, 2, &[]);
    let write = sent_update.last().unwrap();
    let condition = write.split_once(" WHERE ").map_or("", |(_, after)| after);
    assert!(
        write.starts_with("UPDATE") && condition.contains(r#""version" = "#),
        "the UPDATE writes only over the version read: {write}"
    );
    if backend == DbBackend::Postgres {
        assert!(
            write.contains("FOR NO KEY UPDATE SKIP LOCKED"),
            "the UPDATE does not wait for a held row: {write}"
        );
    }

    // An update of a row another transaction holds (PostgreSQL's row locks):
    // its UPDATE matches nothing rather than wait, and it starts again in a
    // transaction, under the lock, which it waits for there.
    if backend == DbBackend::Postgres {
        let lock = lock_row(&app, &created.id).await;
        let (request, held) = tagged(
            token,
            pb::UpdateConversationRequest {
                conversation: Some(pb::Conversation {
                    subject: Some("After the lock".into()),
                    ..with_id(&created.id)
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["subject".into()],
                }),
            },
        );
        let release = async {
            began(&held).await;
            lock.commit().await.unwrap();
        };
        let (updated, ()) = tokio::join!(client.update_conversation(request), release);
        let updated = updated.unwrap().into_inner().conversation.unwrap();
        assert_eq!(updated.subject.as_deref(), Some("After the lock"));
        let sent_held = sent(&held);
        assert_eq!(
            kinds(&sent_held),
            [
                "SELECT",
                "UPDATE",
                "BEGIN",
                "SELECT … FOR UPDATE",
                "UPDATE",
                "COMMIT"
            ],
            "update of a held row: {sent_held:?}"
        );
    }
}

/// An unfiltered List page is a statement PostgreSQL plans once per
/// connection: after its fifth run, the prepared statement runs its generic
/// plan. A LIMIT bound as a parameter prevents that (the generic plan then
/// assumes a tenth of the rows, looks costlier than a plan for the value,
/// and is never chosen), so every page was planned anew; the service writes
/// the LIMIT into the text (`db::hot::with_limit`). Each unfiltered page the
/// service sent is prepared here on one connection and run as often as a
/// busy pool connection would run it. A filtered page keeps its LIMIT bound,
/// so that PostgreSQL goes on planning it for its values: over 772,000 rows,
/// once a few calls for a rare tag had made a generic plan win, that plan
/// walked the workspace's newest-first index for the next rare tag (475 ms)
/// where the tags' GIN index finds it at once (1 ms).
#[tokio::test]
async fn list_pages_reuse_their_plan_on_postgres() {
    use sea_orm::{ConnectionTrait, Database, Statement, TransactionTrait};

    capture();
    let app = TestApp::spawn().await;
    if app.db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    for _ in 0..3 {
        app.create_email().await;
    }
    // Enough rows that a plan's cost depends on how many the LIMIT lets
    // through (with a handful, every plan costs next to nothing).
    app.db
        .execute_unprepared(&format!(
            r#"INSERT INTO conversations (id, workspace_id, channel, customer_id, status, priority,
                 tags, attributes, is_spam, created_at, updated_at, version)
             SELECT gen_random_uuid(), '{ws}', 'email', '{customer}', 'open', 'normal',
                 '[]', '{{}}', false,
                 now() - n * interval '1 second', now() - n * interval '1 second', 1
             FROM generate_series(1, 5000) AS n;
             ANALYZE conversations"#,
            ws = app.a.id,
            customer = app.a.customer,
        ))
        .await
        .unwrap();
    let client = app.client().await;
    let page = |page_token: String, filter: &str, order_by: &str| {
        let (request, id) = tagged(
            &app.a.token,
            pb::ListConversationsRequest {
                page_size: 2,
                page_token,
                filter: filter.into(),
                order_by: order_by.into(),
            },
        );
        let mut client = client.clone();
        async move {
            let next = client
                .list_conversations(request)
                .await
                .unwrap()
                .into_inner()
                .next_page_token;
            let sent = sent(&id);
            assert_eq!(sent.len(), 1, "{sent:?}");
            (sent[0].clone(), next)
        }
    };
    let (first, next) = page(String::new(), "", "").await;
    let (second, _) = page(next, "", "").await;
    let (by_update, _) = page(String::new(), "", "updated_at desc").await;
    let (tagged_page, _) = page(String::new(), r#"tags:"rare""#, "").await;
    let limit_bound = format!("LIMIT ${}", tagged_page.matches('$').count());
    assert!(
        tagged_page.ends_with(&limit_bound),
        "a filtered page's LIMIT is bound: {tagged_page}"
    );

    // A cursor at the moment of the call, as a first page's would be.
    let (ws, at, id) = (app.a.id.to_string(), "now", Uuid::max().to_string());
    let cases: [(&str, &str, Vec<&str>); 3] = [
        ("the first page", &first, vec![&ws]),
        ("a next page", &second, vec![&ws, at, &id]),
        ("a page by update time", &by_update, vec![&ws, at]),
    ];
    let db = Database::connect(app.database_url.as_str()).await.unwrap();
    for (what, sql, args) in cases {
        assert_eq!(
            sql.matches('$').count(),
            args.len(),
            "{what}: the parameters are not what this test binds: {sql}"
        );
        let txn = db.begin().await.unwrap();
        // PostgreSQL's default, whatever the cluster says.
        txn.execute_unprepared("SET LOCAL plan_cache_mode = auto")
            .await
            .unwrap();
        txn.execute_unprepared(&format!("PREPARE page AS {sql}"))
            .await
            .unwrap();
        let values: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let execute = format!("EXECUTE page({})", values.join(", "));
        for _ in 0..10 {
            txn.execute_unprepared(&execute).await.unwrap();
        }
        let plans = txn
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = 'page'",
            ))
            .await
            .unwrap()
            .unwrap();
        let generic: i64 = plans.try_get_by_index(0).unwrap();
        let custom: i64 = plans.try_get_by_index(1).unwrap();
        assert!(
            generic >= 5 && custom <= 5,
            "{what} was planned on each run ({generic} runs of the generic plan, {custom} custom plans): {sql}"
        );
        // A prepared statement outlives the transaction.
        txn.execute_unprepared("DEALLOCATE page").await.unwrap();
        txn.rollback().await.unwrap();
    }
    db.close().await.unwrap();
}
