use std::{collections::BTreeMap, sync::Arc};

use conversation_service::proto::v1 as pb;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

/// A conversation with every resettable field set.
async fn full(app: &TestApp) -> pb::Conversation {
    let sent = pb::Conversation {
        subject: Some("Subject".into()),
        status: pb::Status::Closed as i32,
        priority: pb::Priority::High as i32,
        assignee_id: Some(app.a.user.to_string()),
        assignee_type: pb::AssigneeType::User as i32,
        tags: vec!["t".into()],
        attributes: [
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]
        .into(),
        is_spam: true,
        spam_score: Some(0.9),
        first_response_at: Some(in_future(-100)),
        last_message_at: Some(in_future(-50)),
        ..email(&app.a)
    };
    app.create(&app.a.token, sent).await.unwrap()
}

#[tokio::test]
async fn a_field_outside_the_mask_is_never_touched() {
    let app = TestApp::spawn().await;
    let created = full(&app).await;
    let sent = pb::Conversation {
        subject: Some("New".into()),
        priority: pb::Priority::Low as i32,
        tags: vec![],
        ..with_id(&created.id)
    };
    let updated = app
        .update(&app.a.token, sent, Some(&["subject"]))
        .await
        .unwrap();
    assert_eq!(updated.subject.as_deref(), Some("New"));
    assert_eq!(updated.priority, created.priority);
    assert_eq!(updated.tags, created.tags);
    assert_eq!(updated.assignee_id, created.assignee_id);
}

#[tokio::test]
async fn a_masked_but_absent_field_is_reset() {
    let app = TestApp::spawn().await;
    let created = full(&app).await;
    let mask = [
        "subject",
        "status",
        "priority",
        "assignee_id",
        "assignee_type",
        "tags",
        "attributes",
        "is_spam",
        "spam_score",
        "first_response_at",
        "last_message_at",
    ];
    let updated = app
        .update(&app.a.token, with_id(&created.id), Some(&mask))
        .await
        .unwrap();
    assert_eq!(updated.subject, None);
    assert_eq!(updated.status, pb::Status::Open as i32);
    assert_eq!(updated.closed_at, None, "leaving CLOSED clears closed_at");
    assert_eq!(updated.priority, pb::Priority::Normal as i32);
    assert_eq!(updated.assignee_id, None);
    assert_eq!(updated.assignee_type, pb::AssigneeType::Unspecified as i32);
    assert!(updated.tags.is_empty() && updated.attributes.is_empty());
    assert!(!updated.is_spam);
    assert_eq!(updated.spam_score, None);
    assert_eq!(
        updated.first_response_at, created.first_response_at,
        "never cleared"
    );
    assert_eq!(
        updated.last_message_at, created.last_message_at,
        "never cleared"
    );
}

#[tokio::test]
async fn unassigning_by_id_alone_clears_the_type() {
    let app = TestApp::spawn().await;
    let created = full(&app).await;
    let updated = app
        .update(&app.a.token, with_id(&created.id), Some(&["assignee_id"]))
        .await
        .unwrap();
    assert_eq!(updated.assignee_id, None);
    assert_eq!(updated.assignee_type, pb::AssigneeType::Unspecified as i32);
}

#[tokio::test]
async fn half_cleared_assignments_are_refused() {
    let app = TestApp::spawn().await;
    let created = full(&app).await;
    let type_with_cleared_id = pb::Conversation {
        assignee_type: pb::AssigneeType::User as i32,
        ..with_id(&created.id)
    };
    let result = app
        .update(
            &app.a.token,
            type_with_cleared_id,
            Some(&["assignee_id", "assignee_type"]),
        )
        .await;
    assert_invalid(result, &["conversation.assignee_id"]);
    let result = app
        .update(&app.a.token, with_id(&created.id), Some(&["assignee_type"]))
        .await;
    assert_invalid(result, &["conversation.assignee_id"]);
    assert_eq!(
        app.get(&app.a.token, &created.id).await.unwrap(),
        created,
        "nothing was written"
    );
}

#[tokio::test]
async fn assignment_rules_per_channel_on_update() {
    let app = TestApp::spawn().await;
    let conversation = app.create_email().await;
    let assign = |id: Uuid, kind: pb::AssigneeType| pb::Conversation {
        assignee_id: Some(id.to_string()),
        assignee_type: kind as i32,
        ..with_id(&conversation.id)
    };
    let mask: &[&str] = &["assignee_id", "assignee_type"];
    let result = app
        .update(
            &app.a.token,
            assign(app.b.user, pb::AssigneeType::User),
            Some(mask),
        )
        .await;
    assert_invalid(result, &["conversation.assignee_id"]);
    let result = app
        .update(
            &app.a.token,
            assign(app.a.chat_agent, pb::AssigneeType::Agent),
            Some(mask),
        )
        .await;
    assert_invalid(result, &["conversation.assignee_id"]);
    let updated = app
        .update(
            &app.a.token,
            assign(app.a.email_agent, pb::AssigneeType::Agent),
            Some(mask),
        )
        .await
        .unwrap();
    assert_eq!(updated.assignee_id, Some(app.a.email_agent.to_string()));

    // A new active email agent replaces the old one; the old one can no
    // longer be assigned, but updates of other fields are not refused.
    let new_agent = conversation_service::db::directory::create_agent(
        &app.db,
        app.a.id,
        conversation_service::domain::AgentKind::Email,
        true,
        None,
    )
    .await
    .unwrap();
    let result = app
        .update(
            &app.a.token,
            assign(app.a.email_agent, pb::AssigneeType::Agent),
            Some(mask),
        )
        .await;
    assert_invalid(result, &["conversation.assignee_id"]);
    let priority = pb::Conversation {
        priority: pb::Priority::High as i32,
        ..with_id(&conversation.id)
    };
    assert!(
        app.update(&app.a.token, priority, Some(&["priority"]))
            .await
            .is_ok()
    );
    assert!(
        app.update(
            &app.a.token,
            assign(new_agent, pb::AssigneeType::Agent),
            Some(mask)
        )
        .await
        .is_ok()
    );

    // Chat: only the origin agent.
    let chat_conversation = app.create(&app.a.token, chat(&app.a)).await.unwrap();
    let assign_chat = |id: Uuid| pb::Conversation {
        assignee_id: Some(id.to_string()),
        assignee_type: pb::AssigneeType::Agent as i32,
        ..with_id(&chat_conversation.id)
    };
    assert!(
        app.update(&app.a.token, assign_chat(app.a.chat_agent), Some(mask))
            .await
            .is_ok()
    );
    let result = app
        .update(&app.a.token, assign_chat(new_agent), Some(mask))
        .await;
    assert_invalid(result, &["conversation.assignee_id"]);
}

#[tokio::test]
async fn attribute_paths_write_one_key_each() {
    let app = TestApp::spawn().await;
    let created = full(&app).await; // a=1, b=2
    let sent = pb::Conversation {
        attributes: [
            ("a".to_string(), "one".to_string()),
            ("order id".to_string(), "77".to_string()),
            ("ignored".to_string(), "x".to_string()),
        ]
        .into(),
        ..with_id(&created.id)
    };
    let updated = app
        .update(
            &app.a.token,
            sent,
            Some(&["attributes.a", "attributes.`order id`", "attributes.b"]),
        )
        .await
        .unwrap();
    let expected: BTreeMap<String, String> = [
        ("a".to_string(), "one".to_string()),
        ("order id".to_string(), "77".to_string()),
    ]
    .into();
    assert_eq!(
        updated.attributes, expected,
        "a set, `order id` added, b deleted, `ignored` untouched"
    );
}

#[tokio::test]
async fn star_replaces_every_writable_field() {
    let app = TestApp::spawn().await;
    let created = full(&app).await;
    let sent = pb::Conversation {
        subject: Some("Only this".into()),
        ..with_id(&created.id)
    };
    let updated = app.update(&app.a.token, sent, Some(&["*"])).await.unwrap();
    assert_eq!(updated.subject.as_deref(), Some("Only this"));
    assert_eq!(updated.status, pb::Status::Open as i32);
    assert_eq!(updated.priority, pb::Priority::Normal as i32);
    assert_eq!(updated.assignee_id, None);
    assert!(updated.tags.is_empty() && updated.attributes.is_empty() && !updated.is_spam);
    assert_eq!(updated.first_response_at, created.first_response_at);
    assert_eq!(updated.channel, created.channel, "immutable fields stay");
}

#[tokio::test]
async fn no_mask_writes_the_populated_fields() {
    let app = TestApp::spawn().await;
    let created = full(&app).await;
    let sent = pb::Conversation {
        priority: pb::Priority::Low as i32,
        attributes: [("c".to_string(), "3".to_string())].into(),
        // Immutable and equal to the stored values: accepted.
        channel: created.channel,
        customer_id: created.customer_id.clone(),
        // Output only: ignored.
        created_at: Some(in_future(99)),
        ..with_id(&created.id)
    };
    for mask in [None, Some(&[][..])] {
        let updated = app.update(&app.a.token, sent.clone(), mask).await.unwrap();
        assert_eq!(updated.priority, pb::Priority::Low as i32);
        assert_eq!(
            updated.attributes, sent.attributes,
            "a populated map replaces the whole map"
        );
        assert_eq!(updated.subject, created.subject, "unpopulated fields stay");
        assert_eq!(updated.is_spam, created.is_spam);
        assert_eq!(updated.created_at, created.created_at);
    }
}

#[tokio::test]
async fn no_mask_with_a_different_immutable_field_is_refused() {
    let app = TestApp::spawn().await;
    let created = app.create_email().await;
    let sent = pb::Conversation {
        channel: pb::Channel::Chat as i32,
        customer_id: Uuid::new_v4().to_string(),
        origin_agent_id: Some(app.a.chat_agent.to_string()),
        ..with_id(&created.id)
    };
    assert_invalid(
        app.update(&app.a.token, sent, None).await,
        &[
            "conversation.channel",
            "conversation.customer_id",
            "conversation.origin_agent_id",
        ],
    );
}

#[tokio::test]
async fn refused_masks_name_update_mask_and_quote_the_path() {
    let app = TestApp::spawn().await;
    let created = app.create_email().await;
    let mask = [
        "nope",
        "etag",
        "channel",
        "hold_until.seconds",
        "attributes.a.b",
    ];
    let descriptions = assert_invalid(
        app.update(&app.a.token, with_id(&created.id), Some(&mask))
            .await,
        &["update_mask"],
    );
    assert_eq!(descriptions.len(), mask.len(), "{descriptions:?}");
    for (path, description) in mask.iter().zip(&descriptions) {
        assert!(
            description.contains(&format!("`{path}`")),
            "{description} should quote {path}"
        );
    }
    let mixed = app
        .update(&app.a.token, with_id(&created.id), Some(&["*", "subject"]))
        .await;
    assert_invalid(mixed, &["update_mask"]);
}

#[tokio::test]
async fn invalid_values_are_refused_only_when_masked() {
    let app = TestApp::spawn().await;
    let created = app.create_email().await;
    let sent = pb::Conversation {
        subject: Some("x".repeat(501)),
        spam_score: Some(-1.0),
        priority: pb::Priority::High as i32,
        ..with_id(&created.id)
    };
    let updated = app
        .update(&app.a.token, sent.clone(), Some(&["priority"]))
        .await
        .unwrap();
    assert_eq!(updated.priority, pb::Priority::High as i32);
    let result = app
        .update(&app.a.token, sent, Some(&["subject", "spam_score"]))
        .await;
    assert_invalid(result, &["conversation.subject", "conversation.spam_score"]);
}

#[tokio::test]
async fn etag_precondition() {
    let app = TestApp::spawn().await;
    let created = app.create_email().await;
    let first = pb::Conversation {
        subject: Some("one".into()),
        etag: created.etag.clone(),
        ..with_id(&created.id)
    };
    let updated = app
        .update(&app.a.token, first, Some(&["subject"]))
        .await
        .unwrap();
    assert_ne!(updated.etag, created.etag);

    let stale = pb::Conversation {
        subject: Some("two".into()),
        etag: created.etag.clone(),
        ..with_id(&created.id)
    };
    assert_code(
        app.update(&app.a.token, stale, Some(&["subject"])).await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    assert_eq!(
        app.get(&app.a.token, &created.id).await.unwrap(),
        updated,
        "nothing was written"
    );

    // An etag of another conversation never matches.
    let other = app.create_email().await;
    let foreign = pb::Conversation {
        subject: Some("x".into()),
        etag: other.etag.clone(),
        ..with_id(&created.id)
    };
    let _ = app
        .update(&app.a.token, foreign, Some(&["subject"]))
        .await
        .expect_err("foreign etag");
}

#[tokio::test]
async fn a_no_op_update_keeps_updated_at_and_etag() {
    let app = TestApp::spawn().await;
    let created = full(&app).await;
    let same = pb::Conversation {
        subject: created.subject.clone(),
        priority: created.priority,
        tags: created.tags.clone(),
        first_response_at: Some(in_future(0)), // later than stored: earliest wins, no change
        ..with_id(&created.id)
    };
    let updated = app
        .update(
            &app.a.token,
            same,
            Some(&["subject", "priority", "tags", "first_response_at"]),
        )
        .await
        .unwrap();
    assert_eq!(updated, created);

    let changed = pb::Conversation {
        subject: Some("different".into()),
        ..with_id(&created.id)
    };
    let updated = app
        .update(&app.a.token, changed, Some(&["subject"]))
        .await
        .unwrap();
    assert_ne!(updated.etag, created.etag);
    assert!(updated.updated_at.unwrap().seconds >= created.updated_at.unwrap().seconds);
    assert_ne!(updated.updated_at, created.updated_at);
}

#[tokio::test]
async fn status_rules_on_update() {
    let app = TestApp::spawn().await;
    let created = app.create_email().await;
    let id = &created.id;

    let hold_without_time = pb::Conversation {
        status: pb::Status::OnHold as i32,
        ..with_id(id)
    };
    assert_invalid(
        app.update(&app.a.token, hold_without_time, Some(&["status"]))
            .await,
        &["conversation.hold_until"],
    );
    let time_without_hold = pb::Conversation {
        hold_until: Some(in_future(60)),
        ..with_id(id)
    };
    assert_invalid(
        app.update(&app.a.token, time_without_hold, Some(&["hold_until"]))
            .await,
        &["conversation.hold_until"],
    );

    let hold = pb::Conversation {
        status: pb::Status::OnHold as i32,
        hold_until: Some(in_future(3600)),
        ..with_id(id)
    };
    let held = app
        .update(&app.a.token, hold, Some(&["status", "hold_until"]))
        .await
        .unwrap();
    assert!(held.hold_until.is_some());

    let close = pb::Conversation {
        status: pb::Status::Closed as i32,
        ..with_id(id)
    };
    let closed = app
        .update(&app.a.token, close, Some(&["status"]))
        .await
        .unwrap();
    assert_eq!(closed.hold_until, None, "leaving ON_HOLD clears hold_until");
    assert_eq!(
        closed.closed_at, closed.updated_at,
        "becoming CLOSED stamps closed_at"
    );

    let priority = pb::Conversation {
        priority: pb::Priority::Low as i32,
        ..with_id(id)
    };
    let still_closed = app
        .update(&app.a.token, priority, Some(&["priority"]))
        .await
        .unwrap();
    assert_eq!(
        still_closed.closed_at, closed.closed_at,
        "closed_at moves only when status does"
    );

    let reopen = pb::Conversation {
        status: pb::Status::Open as i32,
        ..with_id(id)
    };
    assert_eq!(
        app.update(&app.a.token, reopen, Some(&["status"]))
            .await
            .unwrap()
            .closed_at,
        None
    );
}

#[tokio::test]
async fn an_expired_hold_does_not_block_updates_of_other_fields() {
    let app = TestApp::spawn().await;
    let sent = pb::Conversation {
        status: pb::Status::OnHold as i32,
        hold_until: Some(in_future(1)),
        ..email(&app.a)
    };
    let created = app.create(&app.a.token, sent).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let priority = pb::Conversation {
        priority: pb::Priority::High as i32,
        ..with_id(&created.id)
    };
    let updated = app
        .update(&app.a.token, priority, Some(&["priority"]))
        .await
        .unwrap();
    assert_eq!(updated.status, pb::Status::OnHold as i32);
}

#[tokio::test]
async fn message_times_earliest_and_latest_win() {
    let app = TestApp::spawn().await;
    let created = full(&app).await; // first_response_at = -100s, last_message_at = -50s
    let earlier = created.first_response_at.unwrap().seconds - 10;
    let later = created.last_message_at.unwrap().seconds + 10;
    let sent = pb::Conversation {
        first_response_at: Some(prost_types::Timestamp {
            seconds: earlier,
            nanos: 0,
        }),
        last_message_at: Some(prost_types::Timestamp {
            seconds: later,
            nanos: 0,
        }),
        ..with_id(&created.id)
    };
    let mask: &[&str] = &["first_response_at", "last_message_at"];
    let updated = app.update(&app.a.token, sent, Some(mask)).await.unwrap();
    assert_eq!(updated.first_response_at.unwrap().seconds, earlier);
    assert_eq!(updated.last_message_at.unwrap().seconds, later);

    let backwards = pb::Conversation {
        first_response_at: Some(prost_types::Timestamp {
            seconds: earlier + 5,
            nanos: 0,
        }),
        last_message_at: Some(prost_types::Timestamp {
            seconds: later - 5,
            nanos: 0,
        }),
        ..with_id(&created.id)
    };
    let unchanged = app
        .update(&app.a.token, backwards, Some(mask))
        .await
        .unwrap();
    assert_eq!(
        unchanged, updated,
        "a later first response and an earlier last message change nothing"
    );
}

#[tokio::test]
async fn unknown_and_foreign_ids_are_the_same_not_found() {
    let app = TestApp::spawn().await;
    let theirs = app.create(&app.b.token, email(&app.b)).await.unwrap();
    let sent = pb::Conversation {
        subject: Some("mine now".into()),
        ..with_id(&theirs.id)
    };
    let foreign = assert_code(
        app.update(&app.a.token, sent.clone(), Some(&["subject"]))
            .await,
        Code::NotFound,
        "CONVERSATION_NOT_FOUND",
    );
    let unknown = pb::Conversation {
        id: Uuid::new_v4().to_string(),
        ..sent
    };
    let missing = assert_code(
        app.update(&app.a.token, unknown, Some(&["subject"])).await,
        Code::NotFound,
        "CONVERSATION_NOT_FOUND",
    );
    assert_eq!(foreign.message(), missing.message());
    assert_eq!(
        app.get(&app.b.token, &theirs.id).await.unwrap(),
        theirs,
        "B's conversation is untouched"
    );

    let malformed = pb::Conversation {
        subject: Some("x".into()),
        ..with_id("nope")
    };
    assert_invalid(
        app.update(&app.a.token, malformed, Some(&["subject"]))
            .await,
        &["conversation.id"],
    );
}

/// SQLite has one writer at a time. The server's writers take turns in the
/// process, so with no busy timeout at all (a writer that found the lock
/// taken would fail at once) many more concurrent writers than pooled
/// connections all succeed. On PostgreSQL the timeout does not apply.
#[tokio::test]
async fn concurrent_writers_beyond_the_pool_take_turns() {
    let app = Arc::new(
        TestApp::spawn_with_database(settings(), |db| {
            db.max_connections = 4;
            db.sqlite_busy_timeout = std::time::Duration::ZERO;
        })
        .await,
    );
    let mut tasks = Vec::new();
    for i in 0..48 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let created = app.create(&app.a.token, email(&app.a)).await?;
            for n in 0..3 {
                let sent = pb::Conversation {
                    subject: Some(format!("writer {i}, update {n}")),
                    ..with_id(&created.id)
                };
                app.update(&app.a.token, sent, Some(&["subject"])).await?;
            }
            app.get(&app.a.token, &created.id).await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let stored = task.await.unwrap().expect("every write succeeds");
        assert_eq!(stored.subject, Some(format!("writer {i}, update 2")));
    }
}

#[tokio::test]
async fn concurrent_updates_of_different_fields_all_survive() {
    let app = Arc::new(TestApp::spawn().await);
    let created = app.create_email().await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app = app.clone();
        let id = created.id.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k{i}");
            let sent = pb::Conversation {
                attributes: [(key.clone(), format!("v{i}"))].into(),
                ..with_id(&id)
            };
            app.update(
                &app.a.token,
                sent,
                Some(&[format!("attributes.{key}").as_str()]),
            )
            .await
        }));
    }
    let single_fields: Vec<(pb::Conversation, &str)> = vec![
        (
            pb::Conversation {
                subject: Some("s".into()),
                ..with_id(&created.id)
            },
            "subject",
        ),
        (
            pb::Conversation {
                priority: pb::Priority::Urgent as i32,
                ..with_id(&created.id)
            },
            "priority",
        ),
        (
            pb::Conversation {
                tags: vec!["x".into()],
                ..with_id(&created.id)
            },
            "tags",
        ),
        (
            pb::Conversation {
                is_spam: true,
                ..with_id(&created.id)
            },
            "is_spam",
        ),
        (
            pb::Conversation {
                spam_score: Some(0.5),
                ..with_id(&created.id)
            },
            "spam_score",
        ),
        (
            pb::Conversation {
                assignee_id: Some(app.a.user.to_string()),
                assignee_type: pb::AssigneeType::User as i32,
                ..with_id(&created.id)
            },
            "assignee",
        ),
    ];
    for (sent, path) in single_fields {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mask: Vec<&str> = if path == "assignee" {
                vec!["assignee_id", "assignee_type"]
            } else {
                vec![path]
            };
            app.update(&app.a.token, sent, Some(&mask)).await
        }));
    }
    let writes = tasks.len() as i64;
    for task in tasks {
        task.await.unwrap().expect("every update succeeds");
    }

    let stored = app.get(&app.a.token, &created.id).await.unwrap();
    for i in 0..40 {
        assert_eq!(
            stored.attributes.get(&format!("k{i}")),
            Some(&format!("v{i}")),
            "attribute k{i} lost"
        );
    }
    assert_eq!(stored.subject.as_deref(), Some("s"));
    assert_eq!(stored.priority, pb::Priority::Urgent as i32);
    assert_eq!(stored.tags, ["x"]);
    assert!(stored.is_spam);
    assert_eq!(stored.spam_score, Some(0.5));
    assert_eq!(stored.assignee_id, Some(app.a.user.to_string()));
    use sea_orm::EntityTrait;
    let row = conversation_service::db::entity::conversation::Entity::find_by_id(
        Uuid::parse_str(&created.id).unwrap(),
    )
    .one(&*app.db)
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        row.version,
        1 + writes,
        "every write was applied exactly once"
    );
}

#[tokio::test]
async fn the_attribute_cap_holds_for_key_paths_too() {
    let app = TestApp::spawn().await;
    let sent = pb::Conversation {
        attributes: (0..100)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect(),
        ..email(&app.a)
    };
    let created = app.create(&app.a.token, sent).await.unwrap();
    let one_more = pb::Conversation {
        attributes: [("k100".to_string(), "v".to_string())].into(),
        ..with_id(&created.id)
    };
    let result = app
        .update(&app.a.token, one_more.clone(), Some(&["attributes.k100"]))
        .await;
    assert_invalid(result, &["conversation.attributes"]);
    // Replacing one key keeps the count at 100.
    let replace = pb::Conversation {
        attributes: [("k100".to_string(), "v".to_string())].into(),
        ..with_id(&created.id)
    };
    let updated = app
        .update(
            &app.a.token,
            replace,
            Some(&["attributes.k0", "attributes.k100"]),
        )
        .await
        .unwrap();
    assert_eq!(updated.attributes.len(), 100);
}

#[tokio::test]
async fn attribute_values_are_checked_only_for_written_keys() {
    let app = TestApp::spawn().await;
    let created = app.create_email().await;
    let sent = pb::Conversation {
        attributes: [
            ("good".to_string(), "v".to_string()),
            ("bad".to_string(), "x".repeat(2001)),
        ]
        .into(),
        ..with_id(&created.id)
    };
    let updated = app
        .update(&app.a.token, sent.clone(), Some(&["attributes.good"]))
        .await
        .unwrap();
    assert_eq!(
        updated.attributes.get("good").map(String::as_str),
        Some("v")
    );
    assert!(!updated.attributes.contains_key("bad"));
    let result = app
        .update(&app.a.token, sent, Some(&["attributes.bad"]))
        .await;
    assert_invalid(result, &["conversation.attributes"]);
}

#[tokio::test]
async fn one_assignment_field_alone_is_checked_against_the_stored_other() {
    let app = TestApp::spawn().await;
    let created = full(&app).await; // assigned to app.a.user (USER)
    let second_user = conversation_service::db::directory::create_user(
        &app.db,
        app.a.id,
        "second@example.com",
        None,
    )
    .await
    .unwrap();
    // A new id alone keeps the stored USER type, and must be a user.
    let to = |id: Uuid| pb::Conversation {
        assignee_id: Some(id.to_string()),
        ..with_id(&created.id)
    };
    let updated = app
        .update(&app.a.token, to(second_user), Some(&["assignee_id"]))
        .await
        .unwrap();
    assert_eq!(updated.assignee_id, Some(second_user.to_string()));
    assert_eq!(updated.assignee_type, pb::AssigneeType::User as i32);
    assert_invalid(
        app.update(&app.a.token, to(app.a.email_agent), Some(&["assignee_id"]))
            .await,
        &["conversation.assignee_id"],
    );
    // A type alone must fit the stored id: a user is no agent.
    let agent = pb::Conversation {
        assignee_type: pb::AssigneeType::Agent as i32,
        ..with_id(&created.id)
    };
    assert_invalid(
        app.update(&app.a.token, agent, Some(&["assignee_type"]))
            .await,
        &["conversation.assignee_id"],
    );
}

#[tokio::test]
async fn hold_rules_on_update_of_a_held_conversation() {
    let app = TestApp::spawn().await;
    let sent = pb::Conversation {
        status: pb::Status::OnHold as i32,
        hold_until: Some(in_future(600)),
        ..email(&app.a)
    };
    let created = app.create(&app.a.token, sent).await.unwrap();
    // Clearing hold_until while staying ON_HOLD is refused.
    let result = app
        .update(&app.a.token, with_id(&created.id), Some(&["hold_until"]))
        .await;
    assert_invalid(result, &["conversation.hold_until"]);
    // Moving it into the past is refused.
    let past = pb::Conversation {
        hold_until: Some(in_future(-1)),
        ..with_id(&created.id)
    };
    assert_invalid(
        app.update(&app.a.token, past, Some(&["hold_until"])).await,
        &["conversation.hold_until"],
    );
    // Moving it later is fine.
    let later = pb::Conversation {
        hold_until: Some(in_future(1200)),
        ..with_id(&created.id)
    };
    let updated = app
        .update(&app.a.token, later, Some(&["hold_until"]))
        .await
        .unwrap();
    assert!(updated.hold_until.unwrap().seconds > created.hold_until.unwrap().seconds);
}

#[tokio::test]
async fn no_mask_accepts_immutable_fields_equal_to_the_stored_ones() {
    let app = TestApp::spawn().await;
    let created = app.create(&app.a.token, chat(&app.a)).await.unwrap();
    let sent = pb::Conversation {
        channel: created.channel,
        customer_id: created.customer_id.clone(),
        origin_agent_id: created.origin_agent_id.clone(),
        subject: Some("same immutables".into()),
        ..with_id(&created.id)
    };
    let updated = app.update(&app.a.token, sent, None).await.unwrap();
    assert_eq!(updated.subject.as_deref(), Some("same immutables"));
}

/// An update that gives up (a stale etag, nothing to change) leaves the row
/// unlocked for the next writer, at once. (It decides on its first read,
/// which takes no lock; one that gives up under the lock is below.)
#[tokio::test]
async fn an_update_that_gives_up_releases_the_row_at_once() {
    let app = TestApp::spawn().await;
    let created = app.create_email().await;
    let id = Uuid::parse_str(&created.id).unwrap();
    let stale = pb::Conversation {
        subject: Some("stale".into()),
        etag: "\"not-the-etag\"".into(),
        ..with_id(&created.id)
    };
    assert_code(
        app.update(&app.a.token, stale, Some(&["subject"])).await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    let same = pb::Conversation {
        subject: created.subject.clone(),
        ..with_id(&created.id)
    };
    app.update(&app.a.token, same, Some(&["subject"]))
        .await
        .unwrap();

    // The rollbacks above land within milliseconds; a transaction left
    // open would hold the lock until its connection's next use, which never
    // comes here.
    assert_row_lockable(&app, id).await;
}

/// An update that gives up after locking the row leaves it unlocked for the
/// next writer, at once: its transaction is rolled back, not left open on an
/// idle connection. To get there, the update must find the row held (its
/// UPDATE alone then matches nothing) and changed once the holder commits,
/// so that the etag it carries no longer matches under the lock.
/// PostgreSQL only: SQLite has no row locks to hold.
#[tokio::test]
async fn an_update_that_gives_up_under_the_lock_releases_the_row_at_once() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    let app = TestApp::spawn().await;
    if app.db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    let created = app.create_email().await;
    let id = Uuid::parse_str(&created.id).unwrap();
    let holder = lock_row(&app, &created.id).await;
    let precondition = pb::Conversation {
        subject: Some("under the lock".into()),
        etag: created.etag.clone(),
        ..with_id(&created.id)
    };
    let update = app.update(&app.a.token, precondition, Some(&["subject"]));
    let change_and_release = async {
        // The update waits for the row under the lock...
        eventually(std::time::Duration::from_secs(5), async || {
            lock_waiters(&app).await > 0
        })
        .await;
        // ...and finds it changed when it gets it.
        holder
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "UPDATE conversations SET version = version + 1 WHERE id = $1",
                [id.into()],
            ))
            .await
            .unwrap();
        holder.commit().await.unwrap();
    };
    let (result, ()) = tokio::join!(update, change_and_release);
    assert_code(result, Code::Aborted, "ETAG_MISMATCH");
    assert_row_lockable(&app, id).await;
}

/// Another connection can lock the row `id`, waiting at most 5 s for it.
async fn assert_row_lockable(app: &TestApp, id: Uuid) {
    use conversation_service::db::{begin_write, entity::conversation};
    use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, QuerySelect};

    let txn = begin_write(&app.db).await.unwrap();
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared("SET LOCAL lock_timeout = '5s'")
            .await
            .unwrap();
    }
    let locked = conversation::Entity::find_by_id(id)
        .lock_exclusive()
        .one(&txn)
        .await;
    assert!(
        matches!(locked, Ok(Some(_))),
        "the row is still locked: {locked:?}"
    );
    txn.rollback().await.unwrap();
}

/// An update cut off by its deadline while it waits for the row lock leaves
/// no lock behind: its connection is closed, not returned to the pool with
/// a statement that goes on to take the lock and then sits in an open
/// transaction.
#[tokio::test]
async fn an_update_cut_off_by_its_deadline_leaves_no_lock_behind() {
    let app = TestApp::spawn().await;
    let created = app.create_email().await;
    let id = Uuid::parse_str(&created.id).unwrap();
    let blocker = lock_row(&app, &created.id).await;

    let mut client = app.client().await;
    let mut request = authed(
        &app.a.token,
        pb::UpdateConversationRequest {
            conversation: Some(pb::Conversation {
                subject: Some("cut off".into()),
                ..with_id(&created.id)
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["subject".into()],
            }),
        },
    );
    request.set_timeout(std::time::Duration::from_millis(300));
    let status = client.update_conversation(request).await.unwrap_err();
    // The client's timer and the server's deadline are the same 300 ms; the
    // client may give up first (CANCELLED). Leave the server time to drop
    // the call before the lock is released.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    blocker.rollback().await.unwrap();

    assert_row_lockable(&app, id).await;
    assert_eq!(
        app.get(&app.a.token, &created.id).await.unwrap().subject,
        created.subject,
        "the cut-off update wrote nothing"
    );
}

/// A call cut off by the request timeout while its statement waits for a
/// row lock leaves no statement waiting in the database soon after, even
/// while the lock is still held: closing the connection alone would not
/// stop it (PostgreSQL notices a closed connection only when it next reads
/// from it), so write transactions on the direct connections set their
/// `lock_timeout` a second past the request timeout.
#[tokio::test]
async fn a_statement_cut_off_while_waiting_for_a_lock_gives_up_by_the_request_timeout() {
    use conversation_service::ServeSettings;
    use sea_orm::DbBackend;

    let app = TestApp::spawn_with(ServeSettings {
        request_timeout: std::time::Duration::from_millis(500),
        ..settings()
    })
    .await;
    if app.db.get_database_backend() != DbBackend::Postgres {
        return; // SQLite has no row locks to wait for.
    }
    let created = app.create_email().await;
    let blocker = lock_row(&app, &created.id).await;

    let update = {
        let sent = pb::Conversation {
            subject: Some("waits".into()),
            ..with_id(&created.id)
        };
        app.update(&app.a.token, sent, Some(&["subject"]))
    };
    let watch = async {
        // The update reached the lock wait...
        eventually(std::time::Duration::from_secs(5), async || {
            lock_waiters(&app).await > 0
        })
        .await;
    };
    let (result, ()) = tokio::join!(update, watch);
    assert_code(result, Code::DeadlineExceeded, "REQUEST_TIMEOUT");

    // ...and, the lock still held, its statement gives up within 5 s.
    let cut_off = std::time::Instant::now();
    while lock_waiters(&app).await > 0 {
        assert!(
            cut_off.elapsed().as_secs() < 5,
            "a cut-off statement still waits for the lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    blocker.rollback().await.unwrap();
}
