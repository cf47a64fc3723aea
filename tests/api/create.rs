use conversation_service::proto::v1 as pb;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn create_applies_defaults_and_ignores_output_only_fields() {
    let app = TestApp::spawn().await;
    let sent = pb::Conversation {
        id: Uuid::new_v4().to_string(),
        closed_at: Some(in_future(10)),
        created_at: Some(in_future(10)),
        updated_at: Some(in_future(10)),
        etag: "made-up".into(),
        ..email(&app.a)
    };
    let created = app.create(&app.a.token, sent.clone()).await.unwrap();
    assert_ne!(created.id, sent.id, "id is output only");
    assert_eq!(created.status, pb::Status::Open as i32);
    assert_eq!(created.priority, pb::Priority::Normal as i32);
    assert_eq!(created.closed_at, None);
    assert_ne!(created.etag, "made-up");
    assert_eq!(created.created_at, created.updated_at);
    assert!(
        created.subject.is_none() && created.assignee_id.is_none() && created.spam_score.is_none()
    );
    assert_eq!(created.assignee_type, pb::AssigneeType::Unspecified as i32);

    let fetched = app.get(&app.a.read_token, &created.id).await.unwrap();
    assert_eq!(fetched, created, "Get returns what Create returned");
}

#[tokio::test]
async fn create_stores_every_writable_field() {
    let app = TestApp::spawn().await;
    let sent = pb::Conversation {
        subject: Some("Refund".into()),
        status: pb::Status::OnHold as i32,
        hold_until: Some(in_future(3600)),
        priority: pb::Priority::Urgent as i32,
        assignee_id: Some(app.a.user.to_string()),
        assignee_type: pb::AssigneeType::User as i32,
        tags: vec![" vip ".into(), "billing".into(), "vip".into()],
        attributes: [("plan".to_string(), "pro".to_string())].into(),
        is_spam: true,
        spam_score: Some(0.25),
        first_response_at: Some(in_future(-60)),
        last_message_at: Some(in_future(-30)),
        ..email(&app.a)
    };
    let created = app.create(&app.a.token, sent.clone()).await.unwrap();
    assert_eq!(created.subject.as_deref(), Some("Refund"));
    assert_eq!(created.status, pb::Status::OnHold as i32);
    assert_eq!(created.priority, pb::Priority::Urgent as i32);
    assert_eq!(created.assignee_id, sent.assignee_id);
    assert_eq!(created.assignee_type, pb::AssigneeType::User as i32);
    assert_eq!(
        created.tags,
        ["vip", "billing"],
        "trimmed, deduplicated, first order kept"
    );
    assert_eq!(created.attributes, sent.attributes);
    assert!(created.is_spam);
    assert_eq!(created.spam_score, Some(0.25));
    assert_eq!(
        created.hold_until.unwrap().seconds,
        sent.hold_until.unwrap().seconds
    );
    assert_eq!(
        created.first_response_at.unwrap().seconds,
        sent.first_response_at.unwrap().seconds
    );
    assert!(created.last_message_at.is_some());
}

#[tokio::test]
async fn create_reports_every_violation_in_one_bad_request() {
    let app = TestApp::spawn().await;
    let sent = pb::Conversation {
        subject: Some("é".repeat(501)),
        spam_score: Some(f64::NAN),
        tags: vec!["".into()],
        status: 42,
        ..Default::default()
    };
    let result = app
        .create_with_request_id(&app.a.token, sent, "not-a-uuid")
        .await;
    assert_invalid(
        result,
        &[
            "conversation.channel",
            "conversation.customer_id",
            "conversation.subject",
            "conversation.spam_score",
            "conversation.tags",
            "conversation.status",
            "request_id",
        ],
    );
}

#[tokio::test]
async fn subject_limit_counts_characters_not_bytes() {
    let app = TestApp::spawn().await;
    let ok = pb::Conversation {
        subject: Some("é".repeat(500)),
        ..email(&app.a)
    };
    assert!(app.create(&app.a.token, ok).await.is_ok());
}

/// The customer check runs inside the INSERT; a create refused for another
/// reason still names a foreign customer too, and a refused create stores
/// nothing.
#[tokio::test]
async fn a_foreign_customer_is_named_beside_other_refusals() {
    let app = TestApp::spawn().await;
    let sent = pb::Conversation {
        origin_agent_id: Some(app.a.chat_agent.to_string()),
        ..email(&app.b)
    };
    assert_invalid(
        app.create(&app.a.token, sent).await,
        &["conversation.customer_id", "conversation.origin_agent_id"],
    );
    assert_invalid(
        app.create(&app.a.token, email(&app.b)).await,
        &["conversation.customer_id"],
    );
    let listed = app
        .client()
        .await
        .list_conversations(authed(
            &app.a.token,
            pb::ListConversationsRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.conversations.is_empty());
}

#[tokio::test]
async fn malformed_and_foreign_customers_are_invalid_argument() {
    let app = TestApp::spawn().await;
    let malformed = pb::Conversation {
        customer_id: "42".into(),
        ..email(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, malformed).await,
        &["conversation.customer_id"],
    );
    // A customer of workspace B reads as "no such customer" to workspace A.
    let foreign = email(&app.b);
    let descriptions = assert_invalid(
        app.create(&app.a.token, foreign).await,
        &["conversation.customer_id"],
    );
    let unknown = pb::Conversation {
        customer_id: Uuid::new_v4().to_string(),
        ..email(&app.a)
    };
    let unknown_descriptions = assert_invalid(
        app.create(&app.a.token, unknown).await,
        &["conversation.customer_id"],
    );
    assert_eq!(
        descriptions, unknown_descriptions,
        "foreign and unknown are indistinguishable"
    );
}

#[tokio::test]
async fn tags_and_attributes_limits() {
    let app = TestApp::spawn().await;
    let control = pb::Conversation {
        tags: vec!["a\nb".into()],
        ..email(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, control).await,
        &["conversation.tags"],
    );
    let too_many_tags = pb::Conversation {
        tags: (0..51).map(|i| format!("t{i}")).collect(),
        ..email(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, too_many_tags).await,
        &["conversation.tags"],
    );
    let fifty = pb::Conversation {
        tags: (0..50).map(|i| format!("t{i}")).collect(),
        ..email(&app.a)
    };
    assert_eq!(
        app.create(&app.a.token, fifty).await.unwrap().tags.len(),
        50
    );

    let too_many_attributes = pb::Conversation {
        attributes: (0..101)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect(),
        ..email(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, too_many_attributes).await,
        &["conversation.attributes"],
    );
    let long_value = pb::Conversation {
        attributes: [("k".to_string(), "v".repeat(2001))].into(),
        ..email(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, long_value).await,
        &["conversation.attributes"],
    );
}

#[tokio::test]
async fn spam_score_must_be_finite_and_not_negative() {
    let app = TestApp::spawn().await;
    for bad in [f64::INFINITY, -0.1, f64::NAN] {
        let sent = pb::Conversation {
            spam_score: Some(bad),
            ..email(&app.a)
        };
        assert_invalid(
            app.create(&app.a.token, sent).await,
            &["conversation.spam_score"],
        );
    }
}

#[tokio::test]
async fn status_rules_on_create() {
    let app = TestApp::spawn().await;
    let hold_without_time = pb::Conversation {
        status: pb::Status::OnHold as i32,
        ..email(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, hold_without_time).await,
        &["conversation.hold_until"],
    );
    let hold_in_past = pb::Conversation {
        status: pb::Status::OnHold as i32,
        hold_until: Some(in_future(-5)),
        ..email(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, hold_in_past).await,
        &["conversation.hold_until"],
    );
    let time_without_hold = pb::Conversation {
        hold_until: Some(in_future(60)),
        ..email(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, time_without_hold).await,
        &["conversation.hold_until"],
    );

    let closed = pb::Conversation {
        status: pb::Status::Closed as i32,
        ..email(&app.a)
    };
    let created = app.create(&app.a.token, closed).await.unwrap();
    assert_eq!(
        created.closed_at, created.created_at,
        "becoming CLOSED stamps closed_at"
    );
}

#[tokio::test]
async fn assignment_rules_on_create() {
    let app = TestApp::spawn().await;
    let user = |id: Uuid| pb::Conversation {
        assignee_id: Some(id.to_string()),
        assignee_type: pb::AssigneeType::User as i32,
        ..email(&app.a)
    };
    assert!(app.create(&app.a.token, user(app.a.user)).await.is_ok());
    assert_invalid(
        app.create(&app.a.token, user(app.b.user)).await,
        &["conversation.assignee_id"],
    );
    assert_invalid(
        app.create(&app.a.token, user(app.a.email_agent)).await,
        &["conversation.assignee_id"],
    );

    let id_without_type = pb::Conversation {
        assignee_id: Some(app.a.user.to_string()),
        ..email(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, id_without_type).await,
        &["conversation.assignee_id"],
    );
    let type_without_id = pb::Conversation {
        assignee_type: pb::AssigneeType::User as i32,
        ..email(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, type_without_id).await,
        &["conversation.assignee_id"],
    );

    let email_agent = |id: Uuid| pb::Conversation {
        assignee_id: Some(id.to_string()),
        assignee_type: pb::AssigneeType::Agent as i32,
        ..email(&app.a)
    };
    assert!(
        app.create(&app.a.token, email_agent(app.a.email_agent))
            .await
            .is_ok()
    );
    assert_invalid(
        app.create(&app.a.token, email_agent(app.a.chat_agent))
            .await,
        &["conversation.assignee_id"],
    );
    assert_invalid(
        app.create(&app.a.token, email_agent(app.b.email_agent))
            .await,
        &["conversation.assignee_id"],
    );
}

#[tokio::test]
async fn origin_agent_rules_on_create() {
    let app = TestApp::spawn().await;
    let created = app.create(&app.a.token, chat(&app.a)).await.unwrap();
    assert_eq!(created.origin_agent_id, Some(app.a.chat_agent.to_string()));

    let on_email = pb::Conversation {
        origin_agent_id: Some(app.a.chat_agent.to_string()),
        ..email(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, on_email).await,
        &["conversation.origin_agent_id"],
    );
    let not_chat_agent = pb::Conversation {
        origin_agent_id: Some(app.a.email_agent.to_string()),
        ..chat(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, not_chat_agent).await,
        &["conversation.origin_agent_id"],
    );
    let foreign = pb::Conversation {
        origin_agent_id: Some(app.b.chat_agent.to_string()),
        ..chat(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, foreign).await,
        &["conversation.origin_agent_id"],
    );

    // An agent assignee on a chat without an origin becomes the origin.
    let assigned = pb::Conversation {
        origin_agent_id: None,
        assignee_id: Some(app.a.chat_agent.to_string()),
        assignee_type: pb::AssigneeType::Agent as i32,
        ..chat(&app.a)
    };
    let created = app.create(&app.a.token, assigned).await.unwrap();
    assert_eq!(created.origin_agent_id, Some(app.a.chat_agent.to_string()));
    // ... but only a chat agent can be that.
    let wrong_kind = pb::Conversation {
        origin_agent_id: None,
        assignee_id: Some(app.a.email_agent.to_string()),
        assignee_type: pb::AssigneeType::Agent as i32,
        ..chat(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, wrong_kind).await,
        &["conversation.assignee_id"],
    );
    // With an origin, an agent assignee must be that origin.
    let other_agent = pb::Conversation {
        assignee_id: Some(Uuid::new_v4().to_string()),
        assignee_type: pb::AssigneeType::Agent as i32,
        ..chat(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, other_agent).await,
        &["conversation.assignee_id"],
    );
}

#[tokio::test]
async fn request_id_makes_retries_return_the_first_conversation() {
    let mut app = TestApp::spawn().await;
    let key = Uuid::new_v4().to_string();
    let sent = pb::Conversation {
        subject: Some("Once".into()),
        tags: vec!["a".into()],
        ..email(&app.a)
    };
    let first = app
        .create_with_request_id(&app.a.token, sent.clone(), &key)
        .await
        .unwrap();

    // Same writable fields after normalisation; output-only values differ.
    let retry = pb::Conversation {
        tags: vec![" a ".into(), "a".into()],
        etag: "ignored".into(),
        id: Uuid::new_v4().to_string(),
        ..sent.clone()
    };
    let second = app
        .create_with_request_id(&app.a.token, retry, &key)
        .await
        .unwrap();
    assert_eq!(second, first);

    // It holds across a restart.
    app.restart().await;
    let third = app
        .create_with_request_id(&app.a.token, sent.clone(), &key)
        .await
        .unwrap();
    assert_eq!(third.id, first.id);

    // A different body with the same key is refused.
    let different = pb::Conversation {
        subject: Some("Twice".into()),
        ..sent.clone()
    };
    let result = app
        .create_with_request_id(&app.a.token, different, &key)
        .await;
    assert_code(result, Code::AlreadyExists, "REQUEST_ID_REUSED");

    // Keys are scoped to the workspace.
    let other = app
        .create_with_request_id(&app.b.token, email(&app.b), &key)
        .await
        .unwrap();
    assert_ne!(other.id, first.id);
}

#[tokio::test]
async fn request_id_still_matches_after_the_conversation_changed() {
    let app = TestApp::spawn().await;
    let key = Uuid::new_v4().to_string();
    let first = app
        .create_with_request_id(&app.a.token, email(&app.a), &key)
        .await
        .unwrap();
    let changed = pb::Conversation {
        subject: Some("later".into()),
        ..with_id(&first.id)
    };
    app.update(&app.a.token, changed, Some(&["subject"]))
        .await
        .unwrap();
    let retry = app
        .create_with_request_id(&app.a.token, email(&app.a), &key)
        .await
        .unwrap();
    assert_eq!(retry.id, first.id);
    assert_eq!(
        retry.subject.as_deref(),
        Some("later"),
        "the retry returns the conversation as stored"
    );
}

#[tokio::test]
async fn concurrent_creates_with_one_request_id_create_one_conversation() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let key = Uuid::new_v4().to_string();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let app = app.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            app.create_with_request_id(&app.a.token, email(&app.a), &key)
                .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().expect("every attempt succeeds").id);
    }
    assert_eq!(ids.len(), 1, "one key, one conversation: {ids:?}");
}

#[tokio::test]
async fn uuids_in_other_spellings_are_accepted_and_normalised() {
    let app = TestApp::spawn().await;
    let upper = pb::Conversation {
        customer_id: app.a.customer.to_string().to_uppercase(),
        ..email(&app.a)
    };
    let created = app.create(&app.a.token, upper).await.unwrap();
    assert_eq!(created.customer_id, app.a.customer.to_string());
    let fetched = app
        .get(&app.a.token, &created.id.to_uppercase())
        .await
        .unwrap();
    assert_eq!(fetched.id, created.id);
}

#[tokio::test]
async fn nul_bytes_are_refused_not_stored() {
    let app = TestApp::spawn().await;
    let sent = pb::Conversation {
        subject: Some("a\0b".into()),
        attributes: [("k".to_string(), "v\0".to_string())].into(),
        ..email(&app.a)
    };
    assert_invalid(
        app.create(&app.a.token, sent).await,
        &["conversation.subject", "conversation.attributes"],
    );
}

#[tokio::test]
async fn huge_bad_input_still_gets_a_compact_invalid_argument() {
    let app = TestApp::spawn().await;
    let huge_id = pb::Conversation {
        customer_id: "x".repeat(20_000),
        ..email(&app.a)
    };
    let descriptions = assert_invalid(
        app.create(&app.a.token, huge_id).await,
        &["conversation.customer_id"],
    );
    assert!(
        descriptions[0].len() < 200,
        "the value is quoted in short: {}",
        descriptions[0].len()
    );

    let many_bad_tags = pb::Conversation {
        tags: vec![String::new(); 5_000],
        ..email(&app.a)
    };
    let status = app
        .create(&app.a.token, many_bad_tags)
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("5000"), "{}", status.message());
    use tonic_types::StatusExt;
    let violations = status
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .len();
    assert_eq!(violations, conversation_service::error::MAX_VIOLATIONS);
}
