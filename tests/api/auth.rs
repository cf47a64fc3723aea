use std::time::Duration;

use conversation_service::{
    db::{self, token::TokenRef},
    domain::auth::{Abilities, TokenSecret},
    proto::v1 as pb,
};
use tonic::{Code, Request};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn missing_malformed_and_unknown_tokens_are_unauthenticated() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let request = || pb::GetConversationRequest {
        id: Uuid::new_v4().to_string(),
    };

    let status = client
        .get_conversation(Request::new(request()))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::Unauthenticated, "TOKEN_MISSING")
    );

    let status = client
        .get_conversation(authed("hdsk_not-a-token", request()))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::Unauthenticated, "TOKEN_MALFORMED")
    );

    let unknown = TokenSecret::generate();
    let status = client
        .get_conversation(authed(unknown.expose(), request()))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::Unauthenticated, "TOKEN_INVALID")
    );
}

#[tokio::test]
async fn each_method_needs_its_own_ability() {
    let app = TestApp::spawn().await;
    let created = app.create_email().await;

    let result = app.create(&app.a.read_token, email(&app.a)).await;
    let status = assert_code(result, Code::PermissionDenied, "ABILITY_MISSING");
    assert!(status.message().contains("external-api:write"));
    let sent = pb::Conversation {
        subject: Some("x".into()),
        ..with_id(&created.id)
    };
    assert_code(
        app.update(&app.a.read_token, sent.clone(), Some(&["subject"]))
            .await,
        Code::PermissionDenied,
        "ABILITY_MISSING",
    );
    assert_code(
        app.get(&app.a.write_token, &created.id).await,
        Code::PermissionDenied,
        "ABILITY_MISSING",
    );

    assert!(app.get(&app.a.read_token, &created.id).await.is_ok());
    assert!(app.create(&app.a.write_token, email(&app.a)).await.is_ok());
    assert!(
        app.update(&app.a.write_token, sent, Some(&["subject"]))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_permission_check_comes_before_validation() {
    let app = TestApp::spawn().await;
    let result = app
        .create(&app.a.read_token, pb::Conversation::default())
        .await;
    assert_code(result, Code::PermissionDenied, "ABILITY_MISSING");
}

#[tokio::test]
async fn issued_tokens_start_and_revoked_tokens_stop_working_within_five_seconds() {
    let app = TestApp::spawn().await;
    let created = app.create_email().await;

    let (token_id, secret) = db::token::issue(
        &app.db,
        app.a.id,
        Abilities {
            read: true,
            write: false,
        },
        Some("late"),
    )
    .await
    .unwrap();
    let token = secret.expose().to_owned();
    eventually(Duration::from_secs(5), async || {
        app.get(&token, &created.id).await.is_ok()
    })
    .await;

    assert!(
        db::token::revoke(&app.db, TokenRef::Id(token_id))
            .await
            .unwrap()
    );
    eventually(Duration::from_secs(5), async || {
        matches!(app.get(&token, &created.id).await, Err(s) if s.code() == Code::Unauthenticated)
    })
    .await;

    // Revoking by the secret works as well.
    assert!(
        db::token::revoke(&app.db, TokenRef::Secret(&app.a.write_token))
            .await
            .unwrap()
    );
    eventually(Duration::from_secs(5), async || {
        matches!(app.create(&app.a.write_token, email(&app.a)).await, Err(s) if s.code() == Code::Unauthenticated)
    })
    .await;
    assert!(
        !db::token::revoke(&app.db, TokenRef::Id(Uuid::new_v4()))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn tokens_are_stored_only_as_hashes() {
    let app = TestApp::spawn().await;
    use sea_orm::EntityTrait;
    let rows = db::entity::api_token::Entity::find()
        .all(&*app.db)
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        for secret in [&app.a.token, &app.a.read_token, &app.b.token] {
            assert!(
                !row.token_hash.contains(secret.as_str())
                    && !row.abilities.contains(secret.as_str())
            );
        }
        assert_eq!(row.token_hash.len(), 64);
    }
}

#[tokio::test]
async fn nothing_crosses_workspaces() {
    let app = TestApp::spawn().await;
    let theirs = app.create(&app.b.token, email(&app.b)).await.unwrap();
    let mine = app.create_email().await;

    let foreign = assert_code(
        app.get(&app.a.token, &theirs.id).await,
        Code::NotFound,
        "CONVERSATION_NOT_FOUND",
    );
    let unknown = assert_code(
        app.get(&app.a.token, &Uuid::new_v4().to_string()).await,
        Code::NotFound,
        "CONVERSATION_NOT_FOUND",
    );
    assert_eq!(
        foreign.message(),
        unknown.message(),
        "indistinguishable from an unknown id"
    );

    // A's conversation cannot reference B's user or agents.
    let mask: &[&str] = &["assignee_id", "assignee_type"];
    for (id, kind) in [
        (app.b.user, pb::AssigneeType::User),
        (app.b.email_agent, pb::AssigneeType::Agent),
    ] {
        let sent = pb::Conversation {
            assignee_id: Some(id.to_string()),
            assignee_type: kind as i32,
            ..with_id(&mine.id)
        };
        assert_invalid(
            app.update(&app.a.token, sent, Some(mask)).await,
            &["conversation.assignee_id"],
        );
    }
    assert_eq!(app.get(&app.b.token, &theirs.id).await.unwrap(), theirs);
}

#[tokio::test]
async fn health_and_reflection_need_no_token() {
    let app = TestApp::spawn().await;
    let mut health = HealthClient::new(app.channel().await);
    for service in ["", "helpdesk.v1.ConversationService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            response.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"helpdesk.v1.ConversationService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
}

/// For every RPC and every field that references another resource, an id of
/// workspace B answers exactly like an id that exists nowhere.
#[tokio::test]
async fn every_reference_to_another_workspace_reads_as_missing() {
    let app = TestApp::spawn().await;
    let theirs = app.create(&app.b.token, chat(&app.b)).await.unwrap();
    let mine = app.create_email().await;
    let my_chat = app.create(&app.a.token, chat(&app.a)).await.unwrap();
    let unknown = Uuid::new_v4();

    // (what, the call with B's id, the same call with an unknown id)
    type Call<'a> = Box<
        dyn Fn(
                String,
            ) -> std::pin::Pin<
                Box<dyn Future<Output = Result<pb::Conversation, tonic::Status>> + 'a>,
            > + 'a,
    >;
    let cases: Vec<(&str, String, Call)> = vec![
        (
            "Get id",
            theirs.id.clone(),
            Box::new(|id| {
                let app = &app;
                Box::pin(async move { app.get(&app.a.token, &id).await })
            }),
        ),
        (
            "Update id",
            theirs.id.clone(),
            Box::new(|id| {
                let sent = pb::Conversation {
                    subject: Some("x".into()),
                    ..with_id(&id)
                };
                Box::pin(app.update(&app.a.token, sent, Some(&["subject"])))
            }),
        ),
        (
            "Create customer_id",
            app.b.customer.to_string(),
            Box::new(|id| {
                Box::pin(app.create(
                    &app.a.token,
                    pb::Conversation {
                        customer_id: id,
                        ..email(&app.a)
                    },
                ))
            }),
        ),
        (
            "Create user assignee",
            app.b.user.to_string(),
            Box::new(|id| {
                let sent = pb::Conversation {
                    assignee_id: Some(id),
                    assignee_type: pb::AssigneeType::User as i32,
                    ..email(&app.a)
                };
                Box::pin(app.create(&app.a.token, sent))
            }),
        ),
        (
            "Create email agent assignee",
            app.b.email_agent.to_string(),
            Box::new(|id| {
                let sent = pb::Conversation {
                    assignee_id: Some(id),
                    assignee_type: pb::AssigneeType::Agent as i32,
                    ..email(&app.a)
                };
                Box::pin(app.create(&app.a.token, sent))
            }),
        ),
        (
            "Create origin_agent_id",
            app.b.chat_agent.to_string(),
            Box::new(|id| {
                Box::pin(app.create(
                    &app.a.token,
                    pb::Conversation {
                        origin_agent_id: Some(id),
                        ..chat(&app.a)
                    },
                ))
            }),
        ),
        (
            "Create chat agent assignee as origin",
            app.b.chat_agent.to_string(),
            Box::new(|id| {
                let sent = pb::Conversation {
                    origin_agent_id: None,
                    assignee_id: Some(id),
                    assignee_type: pb::AssigneeType::Agent as i32,
                    ..chat(&app.a)
                };
                Box::pin(app.create(&app.a.token, sent))
            }),
        ),
        (
            "Update user assignee",
            app.b.user.to_string(),
            Box::new(|id| {
                let sent = pb::Conversation {
                    assignee_id: Some(id),
                    assignee_type: pb::AssigneeType::User as i32,
                    ..with_id(&mine.id)
                };
                Box::pin(app.update(&app.a.token, sent, Some(&["assignee_id", "assignee_type"])))
            }),
        ),
        (
            "Update email agent assignee",
            app.b.email_agent.to_string(),
            Box::new(|id| {
                let sent = pb::Conversation {
                    assignee_id: Some(id),
                    assignee_type: pb::AssigneeType::Agent as i32,
                    ..with_id(&mine.id)
                };
                Box::pin(app.update(&app.a.token, sent, Some(&["assignee_id", "assignee_type"])))
            }),
        ),
        (
            "Update chat agent assignee",
            app.b.chat_agent.to_string(),
            Box::new(|id| {
                let sent = pb::Conversation {
                    assignee_id: Some(id),
                    assignee_type: pb::AssigneeType::Agent as i32,
                    ..with_id(&my_chat.id)
                };
                Box::pin(app.update(&app.a.token, sent, Some(&["assignee_id", "assignee_type"])))
            }),
        ),
    ];
    for (what, foreign_id, call) in &cases {
        let foreign = call(foreign_id.clone()).await.expect_err(what);
        let missing = call(unknown.to_string()).await.expect_err(what);
        assert_ne!(foreign.code(), Code::Ok);
        assert_eq!(foreign.code(), missing.code(), "{what}");
        assert_eq!(foreign.message(), missing.message(), "{what}");
        let details = |s: &tonic::Status| {
            let d = s.get_error_details();
            let violations: Vec<(String, String)> = d
                .bad_request()
                .map(|b| {
                    b.field_violations
                        .iter()
                        .map(|v| (v.field.clone(), v.description.clone()))
                        .collect()
                })
                .unwrap_or_default();
            (d.error_info().map(|i| i.reason.clone()), violations)
        };
        assert_eq!(
            details(&foreign),
            details(&missing),
            "{what}: B's id must read as an unknown one"
        );
    }
    assert_eq!(
        app.get(&app.b.token, &theirs.id).await.unwrap(),
        theirs,
        "B's data is untouched"
    );
}
