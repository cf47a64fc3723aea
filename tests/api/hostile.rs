//! Bad input and overload: each yields a clear error and leaves the stored
//! state as it was.

use std::time::Duration;

use conversation_service::{ServeSettings, db::entity::conversation, proto::v1 as pb};
use prost_types::Timestamp;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tonic::{Code, Request};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use uuid::Uuid;

use crate::helpers::*;

async fn conversation_count(app: &TestApp) -> u64 {
    conversation::Entity::find()
        .filter(conversation::Column::WorkspaceId.eq(app.a.id))
        .count(&*app.db)
        .await
        .unwrap()
}

/// After a lock a timed-out create met is released, and after time for an
/// INSERT still waiting in the database to have committed, the workspace
/// still has `before` conversations.
async fn assert_timed_out_create_wrote_nothing(app: &TestApp, before: u64) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        conversation_count(app).await,
        before,
        "the timed-out create wrote nothing"
    );
}

/// Every case is refused with the given code and reason, and nothing changes.
#[tokio::test]
async fn bad_values_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let stored = app.create_email().await;
    let id = stored.id.clone();
    let before = conversation_count(&app).await;

    let far_future = Timestamp {
        seconds: 253_402_300_800,
        nanos: 0,
    };
    let updates: Vec<(&str, pb::Conversation, Vec<&str>, Code, &str)> = vec![
        (
            "10,000-character subject",
            pb::Conversation {
                subject: Some("s".repeat(10_000)),
                ..with_id(&id)
            },
            vec!["subject"],
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "NUL in the subject",
            pb::Conversation {
                subject: Some("\0".into()),
                ..with_id(&id)
            },
            vec!["subject"],
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "status outside the enum",
            pb::Conversation {
                status: 99,
                ..with_id(&id)
            },
            vec!["status"],
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "priority below the enum",
            pb::Conversation {
                priority: -1,
                ..with_id(&id)
            },
            vec!["priority"],
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "assignee type outside the enum",
            pb::Conversation {
                assignee_type: 7,
                ..with_id(&id)
            },
            vec!["assignee_type"],
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "timestamp after 9999",
            pb::Conversation {
                last_message_at: Some(far_future),
                ..with_id(&id)
            },
            vec!["last_message_at"],
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "negative nanos",
            pb::Conversation {
                first_response_at: Some(Timestamp {
                    seconds: 0,
                    nanos: -5,
                }),
                ..with_id(&id)
            },
            vec!["first_response_at"],
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "10,000 tags",
            pb::Conversation {
                tags: (0..10_000).map(|i| format!("t{i}")).collect(),
                ..with_id(&id)
            },
            vec!["tags"],
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "5,000 attributes",
            pb::Conversation {
                attributes: (0..5_000).map(|i| (format!("k{i}"), "v".into())).collect(),
                ..with_id(&id)
            },
            vec!["attributes"],
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "a 5 MiB request",
            pb::Conversation {
                subject: Some("x".repeat(5 * 1024 * 1024)),
                ..with_id(&id)
            },
            vec!["subject"],
            Code::ResourceExhausted,
            "MESSAGE_TOO_LARGE",
        ),
        (
            "an id in an odd spelling that names nothing",
            pb::Conversation {
                subject: Some("x".into()),
                ..with_id(&Uuid::new_v4().simple().to_string().to_uppercase())
            },
            vec!["subject"],
            Code::NotFound,
            "CONVERSATION_NOT_FOUND",
        ),
        (
            "a path with SQL in it",
            with_id(&id),
            vec!["subject; DROP TABLE conversations"],
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
    ];
    for (case, sent, mask, code, expected_reason) in updates {
        let status = app
            .update(&app.a.token, sent, Some(&mask))
            .await
            .expect_err(case);
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert_eq!(reason(&status), expected_reason, "{case}");
        assert_eq!(
            app.get(&app.a.token, &id).await.unwrap(),
            stored,
            "{case} changed the conversation"
        );
    }
    let creates: Vec<(&str, pb::Conversation)> = vec![
        (
            "customer id with SQL",
            pb::Conversation {
                customer_id: "' OR 1=1 --".into(),
                ..email(&app.a)
            },
        ),
        (
            "customer id with JSON",
            pb::Conversation {
                customer_id: r#"{"$ne": null}"#.into(),
                ..email(&app.a)
            },
        ),
        (
            "channel outside the enum",
            pb::Conversation {
                channel: 3,
                ..email(&app.a)
            },
        ),
    ];
    for (case, sent) in creates {
        let status = app.create(&app.a.token, sent).await.expect_err(case);
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    }
    assert_eq!(
        conversation_count(&app).await,
        before,
        "no bad create stored anything"
    );
}

#[tokio::test]
async fn sql_and_json_metacharacters_are_stored_verbatim() {
    let app = TestApp::spawn().await;
    let text = r#"'); DROP TABLE conversations; -- {"a": [1, "\u0000"]} %_\"#;
    let sent = pb::Conversation {
        subject: Some(text.into()),
        tags: vec![text.into()],
        attributes: [(r#"k"'\"#.to_string(), text.to_string())].into(),
        ..email(&app.a)
    };
    let created = app.create(&app.a.token, sent.clone()).await.unwrap();
    let fetched = app.get(&app.a.token, &created.id).await.unwrap();
    assert_eq!(fetched.subject, sent.subject);
    assert_eq!(fetched.tags, sent.tags);
    assert_eq!(fetched.attributes, sent.attributes);
}

#[tokio::test]
async fn invalid_utf8_and_odd_authorization_metadata_are_unauthenticated() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    for value in [
        &b"Bearer \xff\xfe"[..],
        b"Basic dXNlcjpwYXNz",
        b"Bearer",
        b"Bearer hdsk_\x80\x81",
    ] {
        let mut request = Request::new(pb::GetConversationRequest {
            id: Uuid::new_v4().to_string(),
        });
        // Built as raw HTTP so that bytes tonic's metadata type would refuse
        // (non-ASCII, invalid UTF-8) reach the server.
        let mut headers = tonic::codegen::http::HeaderMap::new();
        let raw =
            tonic::codegen::http::HeaderValue::from_bytes(value).expect("HTTP/2 can carry it");
        headers.insert("authorization", raw);
        *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
        let status = client.get_conversation(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{value:?}");
        assert_eq!(reason(&status), "TOKEN_MALFORMED", "{value:?}");
    }
}

/// A message with the wire shape of CreateConversationRequest, but whose
/// subject is raw bytes, so a test can send invalid UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawConversation {
    #[prost(int32, tag = "2")]
    channel: i32,
    #[prost(string, tag = "3")]
    customer_id: String,
    #[prost(bytes = "vec", tag = "4")]
    subject: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawCreateRequest {
    #[prost(message, optional, tag = "1")]
    conversation: Option<RawConversation>,
}

#[tokio::test]
async fn a_message_that_is_not_valid_protobuf_is_invalid_argument() {
    let app = TestApp::spawn().await;
    let before = conversation_count(&app).await;
    let mut grpc = tonic::client::Grpc::new(app.channel().await);
    grpc.ready().await.unwrap();
    let request = RawCreateRequest {
        conversation: Some(RawConversation {
            channel: pb::Channel::Email as i32,
            customer_id: app.a.customer.to_string(),
            subject: vec![0xff, 0xfe, b'x'],
        }),
    };
    let path = "/helpdesk.v1.ConversationService/CreateConversation"
        .parse()
        .unwrap();
    let codec =
        tonic_prost::ProstCodec::<RawCreateRequest, pb::CreateConversationResponse>::default();
    let status = grpc
        .unary(authed(&app.a.token, request), path, codec)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason(&status), "MALFORMED_MESSAGE");
    assert_eq!(conversation_count(&app).await, before);
}

#[tokio::test]
async fn an_unknown_method_still_carries_an_error_info() {
    let app = TestApp::spawn().await;
    let mut grpc = tonic::client::Grpc::new(app.channel().await);
    grpc.ready().await.unwrap();
    let path = "/helpdesk.v1.ConversationService/DeleteConversation"
        .parse()
        .unwrap();
    let codec =
        tonic_prost::ProstCodec::<pb::GetConversationRequest, pb::GetConversationResponse>::default(
        );
    let request = authed(&app.a.token, pb::GetConversationRequest::default());
    let status = grpc.unary(request, path, codec).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(reason(&status), "UNKNOWN_METHOD");
}

#[tokio::test]
async fn beyond_the_concurrency_limit_calls_are_shed_at_once_and_health_still_answers() {
    let settings = ServeSettings {
        concurrency_limit: 1,
        ..settings()
    };
    let app = std::sync::Arc::new(TestApp::spawn_with(settings).await);
    let created = app.create_email().await;
    let lock = lock_row(&app, &created.id).await;

    let blocked = {
        let app = app.clone();
        let sent = pb::Conversation {
            subject: Some("waits".into()),
            ..with_id(&created.id)
        };
        // A probe below may take the slot first and get this call shed:
        // retry until it holds the slot (and then waits on the lock).
        tokio::spawn(async move {
            loop {
                match app
                    .update(&app.a.token, sent.clone(), Some(&["subject"]))
                    .await
                {
                    Err(s) if s.code() == Code::ResourceExhausted => {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    result => return result,
                }
            }
        })
    };
    // Wait until the blocked call holds the only slot.
    eventually(Duration::from_secs(5), async || {
        matches!(app.get(&app.a.token, &created.id).await, Err(s) if s.code() == Code::ResourceExhausted)
    })
    .await;
    assert!(
        !blocked.is_finished(),
        "the first call still holds the only slot"
    );
    let shed = app.get(&app.a.token, &created.id).await.unwrap_err();
    assert_eq!(reason(&shed), "OVERLOADED");

    let mut health = HealthClient::new(app.channel().await);
    let answer = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        answer.into_inner().status(),
        ServingStatus::Serving,
        "probes are never shed"
    );

    drop(lock);
    let updated = blocked.await.unwrap().expect("the waiting call completes");
    assert_eq!(updated.subject.as_deref(), Some("waits"));
    assert!(
        app.get(&app.a.token, &created.id).await.is_ok(),
        "the slot is free again"
    );
}

#[tokio::test]
async fn a_call_past_the_request_timeout_is_deadline_exceeded_and_writes_nothing() {
    let app = app_with_request_timeout(Duration::from_millis(500)).await;
    let created = app.create_email().await;
    let lock = lock_row(&app, &created.id).await;
    let sent = pb::Conversation {
        subject: Some("too late".into()),
        ..with_id(&created.id)
    };
    let status = app
        .update(&app.a.token, sent, Some(&["subject"]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(reason(&status), "REQUEST_TIMEOUT");
    drop(lock);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.get(&app.a.token, &created.id).await.unwrap(),
        created,
        "the timed-out update rolled back"
    );
}

/// A plain create (a single INSERT) that waits for a lock past the request
/// timeout writes nothing, even when the lock is released soon after the
/// call has answered: an INSERT left waiting inside the database (in
/// SQLite's busy handler, in PostgreSQL's lock queue) would commit then,
/// after the caller was told it failed.
#[tokio::test]
async fn a_create_past_the_request_timeout_writes_nothing() {
    let app = app_with_request_timeout(Duration::from_millis(500)).await;
    // The connections the create will use are open before the clock starts.
    app.create_email().await;
    let lock = lock_writes(&app).await;
    let before = conversation_count(&app).await;
    assert_code(
        app.create(&app.a.token, email(&app.a)).await,
        Code::DeadlineExceeded,
        "REQUEST_TIMEOUT",
    );
    // Time for an attempt already handed to the database as the deadline
    // fell to meet the lock (and have no effect) before it goes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    lock.commit().await.unwrap();
    assert_timed_out_create_wrote_nothing(&app, before).await;
    // Nothing was left holding the writer or a broken connection.
    app.create_email().await;
    assert_eq!(conversation_count(&app).await, before + 1);
}

/// A write that meets a table lock (DDL, such as a migration's CREATE
/// INDEX) past the request timeout writes nothing, even when the lock is
/// released soon after the calls have answered: a statement running alone,
/// in autocommit, gives up on a lock at once rather than wait there (and
/// commit after its call was cut off), and the write waits in a transaction
/// instead, which is abandoned with its call. PostgreSQL only: SQLite has
/// no table locks apart from its write lock (`writes_wait_out_another_process_lock`).
#[tokio::test]
async fn writes_that_meet_a_table_lock_write_nothing_after_their_deadline() {
    use sea_orm::{ConnectionTrait, DbBackend, TransactionTrait};

    let app = app_with_request_timeout(Duration::from_millis(500)).await;
    if app.db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    let created = app.create_email().await;
    let before = conversation_count(&app).await;
    let lock = app.db.begin().await.unwrap();
    lock.execute_unprepared("LOCK TABLE conversations IN SHARE MODE")
        .await
        .unwrap();
    let renamed = pb::Conversation {
        subject: Some("too late".into()),
        ..with_id(&created.id)
    };
    let (create, update) = tokio::join!(
        app.create(&app.a.token, email(&app.a)),
        app.update(&app.a.token, renamed, Some(&["subject"]))
    );
    assert_code(create, Code::DeadlineExceeded, "REQUEST_TIMEOUT");
    assert_code(update, Code::DeadlineExceeded, "REQUEST_TIMEOUT");
    lock.commit().await.unwrap();
    assert_timed_out_create_wrote_nothing(&app, before).await;
    assert_eq!(
        app.get(&app.a.token, &created.id).await.unwrap(),
        created,
        "the timed-out update wrote nothing"
    );
}

/// A read that meets a table lock (DDL that locks out readers, such as
/// `ALTER TABLE`) waits for it and then answers, as writes do: outside a
/// transaction a direct connection waits for no lock, so the read goes on in
/// one that may. PostgreSQL only.
#[tokio::test]
async fn reads_wait_out_a_table_lock() {
    use sea_orm::{ConnectionTrait, DbBackend, TransactionTrait};

    let app = app_with_request_timeout(Duration::from_secs(10)).await;
    if app.db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    let created = app.create_email().await;
    let lock = app.db.begin().await.unwrap();
    lock.execute_unprepared("LOCK TABLE conversations IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let release = async {
        // The three reads wait in the lock queue...
        eventually(Duration::from_secs(5), async || {
            lock_waiters(&app).await >= 3
        })
        .await;
        lock.commit().await.unwrap();
    };
    // The first page as it opens (a statement built once), and filtered
    // (one SeaORM builds).
    let list = |filter: &str| {
        let request = pb::ListConversationsRequest {
            filter: filter.into(),
            ..Default::default()
        };
        async {
            let mut client = app.client().await;
            client
                .list_conversations(authed(&app.a.token, request))
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let (get, first, filtered, ()) = tokio::join!(
        app.get(&app.a.token, &created.id),
        list(""),
        list("assignee_id = null"),
        release
    );
    // ...and answer once it is gone.
    assert_eq!(get.unwrap(), created);
    assert_eq!(first.unwrap().conversations, std::slice::from_ref(&created));
    assert_eq!(filtered.unwrap().conversations, [created]);
}

/// A create the rules refuse is answered at once, even while another
/// process holds the write lock: it writes nothing, so it waits for no
/// writer.
#[tokio::test]
async fn a_refused_create_does_not_wait_for_the_writer() {
    let app = app_with_request_timeout(Duration::from_secs(2)).await;
    let lock = lock_writes(&app).await;
    let on_hold_without_time = pb::Conversation {
        status: pb::Status::OnHold as i32,
        ..email(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, on_hold_without_time).await,
        &["conversation.hold_until"],
    );
    lock.rollback().await.unwrap();
}

/// Holds what a create must wait for until the transaction ends: on SQLite
/// the write lock of the whole file; on PostgreSQL the row of workspace A's
/// customer, which the INSERT's foreign key check must share-lock.
async fn lock_writes(app: &TestApp) -> sea_orm::DatabaseTransaction {
    lock_customer(app).await
}

/// A write that finds the database locked by another process waits for it,
/// within the busy timeout, and then succeeds: on SQLite (its write lock)
/// both the create and the update wait; on PostgreSQL (the customer's row)
/// the create does. Each runs alone, so each meets the lock itself (on
/// SQLite a second write would wait for the writer connection instead).
#[tokio::test]
async fn writes_wait_out_another_process_lock() {
    use sea_orm::DbBackend;

    let app = TestApp::spawn().await;
    let created = app.create_email().await;

    let (create, waited) = while_locked(&app, app.create(&app.a.token, email(&app.a))).await;
    create.expect("the create waited for the lock");
    assert!(
        waited >= Duration::from_millis(250),
        "the create did not wait: {waited:?}"
    );

    // On SQLite the update's UPDATE (after a read, which WAL lets through)
    // is refused as busy and tried again.
    let renamed = pb::Conversation {
        subject: Some("after the lock".into()),
        ..with_id(&created.id)
    };
    let (update, waited) =
        while_locked(&app, app.update(&app.a.token, renamed, Some(&["subject"]))).await;
    let updated = update.expect("the update waited for the lock");
    assert_eq!(updated.subject.as_deref(), Some("after the lock"));
    if app.db.get_database_backend() == DbBackend::Sqlite {
        assert!(
            waited >= Duration::from_millis(250),
            "the update did not wait: {waited:?}"
        );
    }
}

/// Runs `write` while another connection holds the write lock
/// (`lock_writes`) for 300 ms; returns its result and how long it took.
async fn while_locked<T>(app: &TestApp, write: impl Future<Output = T>) -> (T, Duration) {
    let lock = lock_writes(app).await;
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        lock.commit().await.unwrap();
    };
    let started = std::time::Instant::now();
    let (done, ()) = tokio::join!(
        async {
            let result = write.await;
            (result, started.elapsed())
        },
        release
    );
    done
}

/// A server whose calls may run for `request_timeout` at most.
async fn app_with_request_timeout(request_timeout: Duration) -> TestApp {
    TestApp::spawn_with(ServeSettings {
        request_timeout,
        ..settings()
    })
    .await
}
