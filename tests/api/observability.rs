//! What on-call sees: metrics, request ids, and the client a Rust service
//! builds from this crate.

use conversation_service::proto::v1::{self as pb, conversation_service_client};
use tonic::{Code, Request, metadata::MetadataValue};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::helpers::*;

const CONVERSATIONS: &str = "helpdesk.v1.ConversationService";

/// The value of the sample `name{labels}`, or 0 when it is not there yet.
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}

fn method(name: &str) -> String {
    format!(r#"grpc_type="unary",grpc_service="{CONVERSATIONS}",grpc_method="{name}""#)
}

fn handled(name: &str, code: &str) -> String {
    format!(r#"{},grpc_code="{code}""#, method(name))
}

#[tokio::test]
async fn metrics_count_calls_by_method_code_and_auth_failure() {
    let app = TestApp::spawn().await;
    let before = app.scrape_metrics().await;
    assert_eq!(
        sample(
            &before,
            "grpc_server_started_total",
            &method("CreateConversation")
        ),
        0.0
    );

    let created = app.create_email().await;
    app.get(&app.a.token, &created.id).await.unwrap();
    app.get(&app.a.token, &created.id).await.unwrap();
    let missing = app
        .get(&app.a.token, &Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let unauthenticated = app
        .client()
        .await
        .get_conversation(Request::new(pb::GetConversationRequest {
            id: created.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    let denied = app
        .create(&app.a.read_token, email(&app.a))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let text = app.scrape_metrics().await;
    let count = |name: &str, labels: &str| sample(&text, name, labels);
    assert_eq!(
        count("grpc_server_started_total", &method("CreateConversation")),
        2.0,
        "{text}"
    );
    assert_eq!(
        count("grpc_server_started_total", &method("GetConversation")),
        4.0
    );
    assert_eq!(
        count(
            "grpc_server_handled_total",
            &handled("CreateConversation", "OK")
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        count(
            "grpc_server_handled_total",
            &handled("CreateConversation", "PermissionDenied")
        ),
        1.0
    );
    assert_eq!(
        count(
            "grpc_server_handled_total",
            &handled("GetConversation", "OK")
        ),
        2.0
    );
    assert_eq!(
        count(
            "grpc_server_handled_total",
            &handled("GetConversation", "NotFound")
        ),
        1.0
    );
    assert_eq!(
        count(
            "grpc_server_handled_total",
            &handled("GetConversation", "Unauthenticated")
        ),
        1.0
    );
    assert_eq!(
        count(
            "grpc_server_handling_seconds_count",
            &method("GetConversation")
        ),
        4.0
    );
    assert_eq!(
        count(
            "grpc_server_handling_seconds_bucket",
            &format!(r#"le="+Inf",{}"#, method("GetConversation"))
        ),
        4.0
    );
    assert_eq!(
        count("auth_failures_total", r#"reason="TOKEN_MISSING""#),
        1.0
    );
    assert_eq!(
        count("auth_failures_total", r#"reason="ABILITY_MISSING""#),
        1.0
    );
    assert!(
        !text.contains(&app.a.read_token),
        "a token reached the metrics"
    );

    // The pool gauges describe the server's pool: the calls opened at
    // least one connection, and the open ones (in use, or idle: a connection
    // goes back to sqlx's pool a moment after its call answers) stay within
    // the configured maximum. Waiters are tested below.
    let max = count("db_pool_max_connections", "");
    let in_use = count("db_pool_connections", r#"state="in_use""#);
    let idle = count("db_pool_connections", r#"state="idle""#);
    assert!(max >= 1.0, "{text}");
    assert!(
        in_use >= 0.0 && idle >= 0.0 && in_use + idle >= 1.0 && in_use + idle <= max,
        "{text}"
    );
    assert!(text.contains("# TYPE db_pool_waiters gauge"), "{text}");
}

#[tokio::test]
async fn request_ids_are_echoed_and_put_in_error_details() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;

    // The caller's id is kept, on success and on error.
    let mut request = authed(
        &app.a.token,
        pb::GetConversationRequest {
            id: Uuid::now_v7().to_string(),
        },
    );
    request
        .metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("checkout-7f3a"));
    let status = client.get_conversation(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.metadata().get("x-request-id").unwrap(),
        "checkout-7f3a"
    );
    let info = status.get_details_request_info().expect("a RequestInfo");
    assert_eq!(info.request_id, "checkout-7f3a");
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "CONVERSATION_NOT_FOUND",
        "the handler's details are kept beside it"
    );

    let created = app.create_email().await;
    let mut request = authed(&app.a.token, pb::GetConversationRequest { id: created.id });
    request
        .metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("checkout-7f3b"));
    let reply = client.get_conversation(request).await.unwrap();
    assert_eq!(
        reply.metadata().get("x-request-id").unwrap(),
        "checkout-7f3b"
    );

    // Without one, or with one that is not safe to log, the server makes
    // one up and says which.
    let mut request = authed(
        &app.a.token,
        pb::GetConversationRequest { id: "nope".into() },
    );
    request
        .metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("has spaces"));
    let status = client.get_conversation(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let echoed = status
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(Uuid::parse_str(&echoed).is_ok(), "{echoed}");
    assert_eq!(
        status.get_details_request_info().unwrap().request_id,
        echoed
    );
    assert!(
        status.get_details_bad_request().is_some(),
        "BadRequest is kept"
    );

    // Errors the server answers before any handler carry one too.
    let status = client
        .get_conversation(Request::new(pb::GetConversationRequest { id: "x".into() }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let echoed = status
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(
        status.get_details_request_info().unwrap().request_id,
        echoed
    );
}

/// The crate's documented way to call the service from Rust: a client whose
/// interceptor adds the bearer token to every call.
#[tokio::test]
async fn a_rust_client_with_a_bearer_interceptor() {
    let app = TestApp::spawn().await;
    let bearer: MetadataValue<_> = format!("Bearer {}", app.a.token).parse().unwrap();
    let mut client = conversation_service_client::ConversationServiceClient::with_interceptor(
        app.channel().await,
        move |mut call: Request<()>| {
            call.metadata_mut().insert("authorization", bearer.clone());
            Ok(call)
        },
    );
    let created = client
        .create_conversation(pb::CreateConversationRequest {
            conversation: Some(email(&app.a)),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .conversation
        .unwrap();
    let read = client
        .get_conversation(pb::GetConversationRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .conversation
        .unwrap();
    assert_eq!(read, created);
    let bad = client
        .get_conversation(pb::GetConversationRequest {
            id: "not-a-uuid".into(),
        })
        .await
        .unwrap_err();
    let violations = bad.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations[0].field, "id");
}

/// Calls queued for a connection show as pool waiters, and stop showing
/// once they are served.
#[tokio::test]
async fn calls_queued_for_a_connection_are_counted_as_waiters() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    let app = TestApp::spawn().await;
    let created = app.create_email().await;
    // Hold what every update of this conversation needs: the row lock on
    // PostgreSQL (each blocked update then holds one of the pool's 8
    // connections), the database's write lock on SQLite (the first update
    // holds the one writer connection). 12 updates leave some queued on
    // either.
    let blocker = conversation_service::db::begin_write(&app.db)
        .await
        .unwrap();
    if blocker.get_database_backend() == DbBackend::Postgres {
        blocker
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT id FROM conversations WHERE id = $1 FOR UPDATE",
                [Uuid::parse_str(&created.id).unwrap().into()],
            ))
            .await
            .unwrap();
    }
    let updates: Vec<_> = (0..12)
        .map(|i| {
            let conversation = pb::Conversation {
                id: created.id.clone(),
                subject: Some(format!("queued {i}")),
                ..Default::default()
            };
            let token = app.a.token.clone();
            let addr = app.addr;
            tokio::spawn(async move {
                let mut client = conversation_service_client::ConversationServiceClient::connect(
                    format!("http://{addr}"),
                )
                .await
                .unwrap();
                client
                    .update_conversation(authed(
                        &token,
                        pb::UpdateConversationRequest {
                            conversation: Some(conversation),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["subject".into()],
                            }),
                        },
                    ))
                    .await
            })
        })
        .collect();

    // Wait (without a time bound of its own) until the queue has formed:
    // connections in use, and at least the 4 calls the 8 connections leave
    // over waiting for one (on SQLite, 11 wait for the one writer). While
    // connections open, or between an update's statements, a call inside
    // storage holds none for a moment and counts as a waiter too, so only
    // the settled queue shows the gauge subtracting the connections in use.
    let mut formed = false;
    for _ in 0..200 {
        let text = app.scrape_metrics().await;
        let queued = sample(&text, "db_pool_waiters", "");
        let in_use = sample(&text, "db_pool_connections", r#"state="in_use""#);
        if queued >= 4.0 && in_use >= 1.0 && queued + in_use <= 12.0 {
            formed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        formed,
        "the queue of waiters beside connections in use never formed"
    );

    blocker.rollback().await.unwrap();
    for update in updates {
        update
            .await
            .unwrap()
            .expect("served once the lock was released");
    }
    let text = app.scrape_metrics().await;
    assert_eq!(sample(&text, "db_pool_waiters", ""), 0.0, "{text}");
}

/// Writes that wrote nothing alone and ran again in a transaction are
/// counted, by kind: on-call's sign that callers contend for the same rows.
/// On PostgreSQL a held row sends each kind down that path for certain: an
/// update of a locked conversation, a create for a locked customer. A
/// create refused for a missing customer is no contention and not counted.
#[tokio::test]
async fn writes_run_again_in_a_transaction_are_counted() {
    use sea_orm::DbBackend;

    let retried = |text: &str, write: &str| {
        sample(
            text,
            "db_writes_retried_total",
            &format!(r#"write="{write}""#),
        )
    };
    let app = TestApp::spawn().await;
    let created = app.create_email().await;
    let subject = |text: &str| pb::Conversation {
        subject: Some(text.into()),
        ..with_id(&created.id)
    };
    app.update(&app.a.token, subject("alone"), Some(&["subject"]))
        .await
        .unwrap();
    let text = app.scrape_metrics().await;
    // Both series are there from the start, at 0: nothing ran again.
    for write in ["update", "create"] {
        assert!(
            text.contains(&format!(r#"db_writes_retried_total{{write="{write}"}} 0"#)),
            "{text}"
        );
    }
    if app.db.get_database_backend() != DbBackend::Postgres {
        return;
    }

    let lock = lock_row(&app, &created.id).await;
    let release = async {
        eventually(std::time::Duration::from_secs(10), async || {
            lock_waiters(&app).await >= 1
        })
        .await;
        lock.commit().await.unwrap();
    };
    let (updated, ()) = tokio::join!(
        app.update(&app.a.token, subject("held"), Some(&["subject"])),
        release
    );
    assert_eq!(updated.unwrap().subject.as_deref(), Some("held"));
    let text = app.scrape_metrics().await;
    assert_eq!(retried(&text, "update"), 1.0, "{text}");
    assert_eq!(retried(&text, "create"), 0.0, "{text}");

    let lock = lock_customer(&app).await;
    let release = async {
        eventually(std::time::Duration::from_secs(10), async || {
            lock_waiters(&app).await >= 1
        })
        .await;
        lock.commit().await.unwrap();
    };
    let (created, ()) = tokio::join!(app.create(&app.a.token, email(&app.a)), release);
    created.unwrap();
    let text = app.scrape_metrics().await;
    assert_eq!(retried(&text, "update"), 1.0, "{text}");
    assert_eq!(retried(&text, "create"), 1.0, "{text}");

    // A customer that is not there also makes the first INSERT write
    // nothing; the create is refused, and that is no contention.
    let stranger = pb::Conversation {
        customer_id: Uuid::now_v7().to_string(),
        ..email(&app.a)
    };
    app.create(&app.a.token, stranger).await.unwrap_err();
    let text = app.scrape_metrics().await;
    assert_eq!(retried(&text, "create"), 1.0, "{text}");
}
