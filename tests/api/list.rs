use std::collections::HashSet;

use chrono::{Duration as Span, Utc};
use conversation_service::{db::entity::conversation, proto::v1 as pb};
use sea_orm::{ActiveValue::Set, EntityTrait};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::helpers::*;

async fn list(
    app: &TestApp,
    token: &str,
    page_size: i32,
    page_token: &str,
    filter: &str,
    order_by: &str,
) -> Result<pb::ListConversationsResponse, Status> {
    let request = pb::ListConversationsRequest {
        page_size,
        page_token: page_token.to_owned(),
        filter: filter.to_owned(),
        order_by: order_by.to_owned(),
    };
    Ok(app
        .client()
        .await
        .list_conversations(authed(token, request))
        .await?
        .into_inner())
}

/// Every id of a full pass, page by page.
async fn all_pages(app: &TestApp, page_size: i32, filter: &str, order_by: &str) -> Vec<String> {
    let (mut ids, mut token) = (Vec::new(), String::new());
    loop {
        let page = list(app, &app.a.token, page_size, &token, filter, order_by)
            .await
            .unwrap();
        ids.extend(page.conversations.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

/// Inserts `n` plain email conversations straight into the database, with
/// created_at one millisecond apart (or all equal with `same_time`).
async fn bulk(app: &TestApp, n: usize, same_time: bool) -> Vec<Uuid> {
    let start = Utc::now() - Span::hours(1);
    let rows: Vec<conversation::ActiveModel> = (0..n)
        .map(|i| {
            let at = if same_time {
                start
            } else {
                start + Span::milliseconds(i as i64)
            };
            let at = conversation_service::domain::time::truncate_to_micros(at);
            conversation::ActiveModel {
                id: Set(Uuid::now_v7()),
                workspace_id: Set(app.a.id),
                channel: Set("email".into()),
                customer_id: Set(app.a.customer),
                subject: Set(None),
                status: Set("open".into()),
                priority: Set("normal".into()),
                assignee_id: Set(None),
                assignee_type: Set(None),
                origin_agent_id: Set(None),
                hold_until: Set(None),
                tags: Set(serde_json::json!([])),
                attributes: Set(serde_json::json!({})),
                is_spam: Set(false),
                spam_score: Set(None),
                first_response_at: Set(None),
                last_message_at: Set(None),
                closed_at: Set(None),
                created_at: Set(at),
                updated_at: Set(at),
                version: Set(1),
                request_id: Set(None),
                request_fingerprint: Set(None),
            }
        })
        .collect();
    let ids = rows.iter().map(|r| *r.id.as_ref()).collect();
    for chunk in rows.chunks(500) {
        conversation::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&*app.db)
            .await
            .unwrap();
    }
    ids
}

/// Changes a conversation's subject through the API, which moves it in the
/// `updated_at` orders.
async fn set_subject(app: &TestApp, id: &str, subject: String) {
    let sent = pb::Conversation {
        subject: Some(subject),
        ..with_id(id)
    };
    app.update(&app.a.token, sent, Some(&["subject"]))
        .await
        .unwrap();
}

#[tokio::test]
async fn pages_are_full_but_the_last_and_only_the_last_has_no_token() {
    let app = TestApp::spawn().await;
    bulk(&app, 55, false).await;
    let first = list(&app, &app.a.token, 0, "", "", "").await.unwrap();
    assert_eq!(first.conversations.len(), 50, "page_size 0 means 50");
    let second = list(&app, &app.a.token, 0, &first.next_page_token, "", "")
        .await
        .unwrap();
    assert_eq!(second.conversations.len(), 5);
    assert!(second.next_page_token.is_empty());

    // 55 = 11 x 5: the fifth page is full and the last.
    let (mut token, mut sizes) = (String::new(), Vec::new());
    loop {
        let page = list(&app, &app.a.token, 11, &token, "", "").await.unwrap();
        sizes.push(page.conversations.len());
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(sizes, [11, 11, 11, 11, 11]);
    let ids = all_pages(&app, 7, "", "").await;
    assert_eq!(ids.len(), 55);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        55,
        "no duplicates"
    );
}

#[tokio::test]
async fn page_size_is_capped_at_a_thousand_and_negative_is_refused() {
    let app = TestApp::spawn().await;
    bulk(&app, 1_003, false).await;
    let page = list(&app, &app.a.token, 5_000, "", "", "").await.unwrap();
    assert_eq!(page.conversations.len(), 1_000);
    assert!(!page.next_page_token.is_empty());
    let status = list(&app, &app.a.token, -1, "", "", "").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_bad_request(&status, "page_size");
}

/// The field violations of an INVALID_ARGUMENT status.
fn violations(status: &Status) -> Vec<tonic_types::FieldViolation> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_error_details()
        .bad_request()
        .expect("a BadRequest")
        .field_violations
        .clone()
}

fn assert_bad_request(status: &Status, field: &str) -> String {
    let violations = violations(status);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].field, field);
    violations[0].description.clone()
}

#[tokio::test]
async fn the_four_orders_with_ties_broken_by_id() {
    let app = TestApp::spawn().await;
    let mut tied = bulk(&app, 6, true).await;
    tied.sort();
    let expected_asc: Vec<String> = tied.iter().map(Uuid::to_string).collect();
    assert_eq!(all_pages(&app, 4, "", "created_at").await, expected_asc);
    let mut expected_desc = expected_asc.clone();
    expected_desc.reverse();
    assert_eq!(
        all_pages(&app, 4, "", "created_at desc").await,
        expected_desc
    );
    assert_eq!(
        all_pages(&app, 4, "", "").await,
        expected_desc,
        "created_at desc is the default"
    );

    // updated_at: touch them in a chosen order.
    for id in [&expected_asc[3], &expected_asc[0], &expected_asc[5]] {
        let sent = pb::Conversation {
            subject: Some("touched".into()),
            ..with_id(id)
        };
        app.update(&app.a.token, sent, Some(&["subject"]))
            .await
            .unwrap();
    }
    let by_updated = all_pages(&app, 2, "", "updated_at").await;
    assert_eq!(
        by_updated[3..],
        [
            expected_asc[3].clone(),
            expected_asc[0].clone(),
            expected_asc[5].clone()
        ]
    );
    let mut untouched: Vec<&String> = vec![&expected_asc[1], &expected_asc[2], &expected_asc[4]];
    untouched.sort();
    assert_eq!(
        by_updated[..3].iter().collect::<Vec<_>>(),
        untouched,
        "equal updated_at: by id"
    );
    let by_updated_desc = all_pages(&app, 2, "", "updated_at desc").await;
    assert_eq!(by_updated_desc[0], expected_asc[5]);

    let status = list(&app, &app.a.token, 0, "", "", "subject")
        .await
        .unwrap_err();
    assert_bad_request(&status, "order_by");
}

#[tokio::test]
async fn filters_match_exactly_what_they_say() {
    let app = TestApp::spawn().await;
    let t0 = Utc::now();
    let specs = vec![
        pb::Conversation {
            status: pb::Status::Closed as i32,
            tags: vec!["vip".into()],
            ..email(&app.a)
        },
        pb::Conversation {
            priority: pb::Priority::Urgent as i32,
            tags: vec!["vipper".into()],
            ..email(&app.a)
        },
        pb::Conversation {
            assignee_id: Some(app.a.user.to_string()),
            assignee_type: pb::AssigneeType::User as i32,
            is_spam: true,
            ..email(&app.a)
        },
        pb::Conversation {
            tags: vec!["a".into(), "vip".into()],
            ..chat(&app.a)
        },
        pb::Conversation {
            tags: vec![r#"say "hi""#.into(), r"a\b".into()],
            ..email(&app.a)
        },
        email(&app.a),
    ];
    let mut created = Vec::new();
    for spec in specs {
        created.push(app.create(&app.a.token, spec).await.unwrap());
    }
    let other_customer = conversation_service::db::directory::create_customer(
        &app.db,
        app.a.id,
        "other@example.com",
        None,
    )
    .await
    .unwrap();
    created.push(
        app.create(
            &app.a.token,
            pb::Conversation {
                customer_id: other_customer.to_string(),
                ..email(&app.a)
            },
        )
        .await
        .unwrap(),
    );
    app.create(
        &app.b.token,
        pb::Conversation {
            tags: vec!["vip".into()],
            ..email(&app.b)
        },
    )
    .await
    .unwrap();

    let user = app.a.user.to_string();
    let rfc = |at: chrono::DateTime<Utc>| {
        at.with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
            .to_rfc3339()
    };
    type Matches = Box<dyn Fn(&pb::Conversation) -> bool>;
    let cases: Vec<(String, Matches)> = vec![
        (
            "status = STATUS_CLOSED".into(),
            Box::new(|c| c.status == pb::Status::Closed as i32),
        ),
        (
            "status != STATUS_CLOSED".into(),
            Box::new(|c| c.status != pb::Status::Closed as i32),
        ),
        (
            "priority = PRIORITY_URGENT".into(),
            Box::new(|c| c.priority == pb::Priority::Urgent as i32),
        ),
        (
            "channel = CHANNEL_CHAT".into(),
            Box::new(|c| c.channel == pb::Channel::Chat as i32),
        ),
        (
            "channel != CHANNEL_CHAT".into(),
            Box::new(|c| c.channel != pb::Channel::Chat as i32),
        ),
        (
            format!(r#"customer_id = "{other_customer}""#),
            Box::new(move |c| c.customer_id == other_customer.to_string()),
        ),
        (
            format!(r#"assignee_id = "{user}""#),
            Box::new({
                let user = user.clone();
                move |c| c.assignee_id.as_deref() == Some(user.as_str())
            }),
        ),
        (
            format!(r#"assignee_id != "{user}""#),
            Box::new({
                let user = user.clone();
                move |c| c.assignee_id.as_deref() != Some(user.as_str())
            }),
        ),
        (
            "assignee_id = null".into(),
            Box::new(|c| c.assignee_id.is_none()),
        ),
        (
            "assignee_id != null".into(),
            Box::new(|c| c.assignee_id.is_some()),
        ),
        ("is_spam = true".into(), Box::new(|c| c.is_spam)),
        ("is_spam != true".into(), Box::new(|c| !c.is_spam)),
        (
            r#"tags:"vip""#.into(),
            Box::new(|c| c.tags.iter().any(|t| t == "vip")),
        ),
        // Inside quotes a backslash escapes the next character; the tag
        // asked for is trimmed, as stored tags are.
        (
            r#"tags:"say \"hi\"""#.into(),
            Box::new(|c| c.tags.iter().any(|t| t == r#"say "hi""#)),
        ),
        (
            r#"tags:"a\\b""#.into(),
            Box::new(|c| c.tags.iter().any(|t| t == r"a\b")),
        ),
        (
            r#"tags:" vip ""#.into(),
            Box::new(|c| c.tags.iter().any(|t| t == "vip")),
        ),
        (
            r#"tags:"vip" AND channel = CHANNEL_EMAIL"#.into(),
            Box::new(|c| c.tags.iter().any(|t| t == "vip") && c.channel == 1),
        ),
        (
            format!(r#"created_at > "{}""#, rfc(t0 - Span::hours(1))),
            Box::new(|_| true),
        ),
        (
            format!(r#"created_at < "{}""#, rfc(t0 - Span::hours(1))),
            Box::new(|_| false),
        ),
        (
            format!(r#"updated_at < "{}""#, rfc(Utc::now() + Span::hours(1))),
            Box::new(|_| true),
        ),
    ];
    for (filter, matches) in &cases {
        let expected: HashSet<String> = created
            .iter()
            .filter(|c| matches(c))
            .map(|c| c.id.clone())
            .collect();
        let listed: HashSet<String> = all_pages(&app, 2, filter, "").await.into_iter().collect();
        assert_eq!(listed, expected, "filter {filter}");
    }
}

#[tokio::test]
async fn a_bad_filter_says_where_it_broke() {
    let app = TestApp::spawn().await;
    for (filter, fragment) in [
        ("subject = \"x\"", "character 1"),
        ("status = STATUS_SOMETIMES", "character 10"),
        ("status ~ STATUS_OPEN", "character 8"),
        ("status = STATUS_OPEN OR is_spam = true", "character 22"),
        ("created_at > \"last week\"", "character 14"),
    ] {
        let status = list(&app, &app.a.token, 0, "", filter, "")
            .await
            .unwrap_err();
        let description = assert_bad_request(&status, "filter");
        assert!(description.contains(fragment), "{filter}: {description}");
    }
}

/// INVALID_ARGUMENT lists every violation of the request, not the first;
/// a page token is checked once the filter and order it is bound to parse.
#[tokio::test]
async fn every_violation_of_a_list_request_is_listed() {
    let app = TestApp::spawn().await;
    let fields = |status: Status| -> Vec<String> {
        violations(&status).into_iter().map(|v| v.field).collect()
    };
    let status = list(&app, &app.a.token, -1, "garbage!", "status ~ x", "id")
        .await
        .unwrap_err();
    assert_eq!(fields(status), ["page_size", "filter", "order_by"]);
    let status = list(&app, &app.a.token, -1, "garbage!", "", "")
        .await
        .unwrap_err();
    assert_eq!(fields(status), ["page_size", "page_token"]);
}

/// A filter too long to be one (a thousand terms would pass SQLite's
/// expression depth; a field name of 20,000 characters) is INVALID_ARGUMENT
/// with a description a client can receive, not INTERNAL.
#[tokio::test]
async fn an_oversized_filter_is_refused_briefly() {
    let app = TestApp::spawn().await;
    let created = app.create_email().await;
    let terms = vec!["is_spam = false"; 1_001].join(" AND ");
    let no_operator = "a".repeat(20_000);
    let no_value = format!("{} =", "a".repeat(20_000));
    for (filter, fragment) in [
        (terms.as_str(), "more than 50 terms"),
        (no_operator.as_str(), "expected an operator"),
        (no_value.as_str(), "expected a value"),
    ] {
        let status = list(&app, &app.a.token, 0, "", filter, "")
            .await
            .unwrap_err();
        let description = assert_bad_request(&status, "filter");
        assert!(description.contains(fragment), "{description:.200}");
        assert!(description.len() < 300, "{} bytes", description.len());
    }
    let fifty = vec!["is_spam = false"; 50].join(" AND ");
    assert_eq!(all_pages(&app, 10, &fifty, "").await, [created.id]);
}

/// Times are stored to the microsecond; a bound with a finer fraction
/// leaves each stored time on the side it is on.
#[tokio::test]
async fn a_time_bound_finer_than_a_microsecond_is_exact() {
    let app = TestApp::spawn().await;
    let created = app.create_email().await;
    let at = created.created_at.unwrap();
    let (secs, micros) = (at.seconds, at.nanos / 1_000);
    let when = |nanos: i64| {
        let t = chrono::DateTime::from_timestamp(secs, 0).unwrap()
            + Span::microseconds(micros.into())
            + Span::nanoseconds(nanos);
        t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    };
    for (filter, listed) in [
        (format!(r#"created_at < "{}""#, when(0)), false),
        (format!(r#"created_at > "{}""#, when(0)), false),
        (format!(r#"created_at < "{}""#, when(500)), true),
        (format!(r#"created_at > "{}""#, when(500)), false),
        (format!(r#"created_at > "{}""#, when(-500)), true),
        (format!(r#"created_at < "{}""#, when(-500)), false),
        (format!(r#"updated_at < "{}""#, when(1)), true),
    ] {
        let ids = all_pages(&app, 10, &filter, "").await;
        assert_eq!(ids.contains(&created.id), listed, "{filter}");
    }
}

#[tokio::test]
async fn page_tokens_are_bound_to_filter_and_order_but_not_to_page_size() {
    let app = TestApp::spawn().await;
    bulk(&app, 10, false).await;
    let first = list(&app, &app.a.token, 3, "", "status = STATUS_OPEN", "")
        .await
        .unwrap();
    let token = first.next_page_token.clone();
    let other_size = list(&app, &app.a.token, 5, &token, "status = STATUS_OPEN", "")
        .await
        .unwrap();
    assert_eq!(
        other_size.conversations.len(),
        5,
        "another page_size is honoured"
    );

    let status = list(&app, &app.a.token, 3, &token, "", "")
        .await
        .unwrap_err();
    assert!(assert_bad_request(&status, "page_token").contains("different filter"));
    let status = list(
        &app,
        &app.a.token,
        3,
        &token,
        "status = STATUS_OPEN",
        "created_at",
    )
    .await
    .unwrap_err();
    assert_bad_request(&status, "page_token");
    let status = list(&app, &app.a.token, 3, "garbage!", "", "")
        .await
        .unwrap_err();
    assert!(assert_bad_request(&status, "page_token").contains("not a page token"));
}

#[tokio::test]
async fn listing_needs_read_and_stays_in_the_workspace() {
    let app = TestApp::spawn().await;
    let mine = app.create_email().await;
    app.create(&app.b.token, email(&app.b)).await.unwrap();
    let ids = all_pages(&app, 10, "", "").await;
    assert_eq!(ids, [mine.id]);
    let status = list(&app, &app.a.write_token, 0, "", "", "")
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::PermissionDenied, "ABILITY_MISSING")
    );
}

/// Paging while others insert and update: no conversation twice, none that
/// existed before the first page missing.
#[tokio::test]
async fn paging_under_concurrent_inserts_and_updates() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let existing: HashSet<String> = bulk(&app, 120, false)
        .await
        .iter()
        .map(Uuid::to_string)
        .collect();
    for order in [
        "created_at desc",
        "created_at",
        "updated_at desc",
        "updated_at",
    ] {
        let writer = {
            let app = app.clone();
            let victims: Vec<String> = existing.iter().take(30).cloned().collect();
            tokio::spawn(async move {
                for (i, id) in victims.iter().enumerate() {
                    app.create(&app.a.token, email(&app.a)).await.unwrap();
                    if !order.starts_with("updated_at") {
                        set_subject(&app, id, format!("u{i}")).await;
                    }
                }
            })
        };
        let (mut seen, mut token) = (Vec::new(), String::new());
        loop {
            let page = list(&app, &app.a.token, 7, &token, "", order)
                .await
                .unwrap();
            seen.extend(page.conversations.into_iter().map(|c| c.id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
            tokio::task::yield_now().await;
        }
        writer.await.unwrap();
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{order}: a conversation came twice"
        );
        let missing = existing.iter().filter(|id| !unique.contains(id)).count();
        assert_eq!(
            missing, 0,
            "{order}: {missing} pre-existing conversations skipped"
        );
    }
}

/// An `updated_at` pass lists the conversations as they were at its first
/// page: one updated after it was listed is not listed again, and one
/// updated before its turn is left to the next pass (the README and the
/// proto say so). The next pass lists both, last.
#[tokio::test]
async fn an_updated_at_pass_lists_conversations_as_of_its_first_page() {
    let app = TestApp::spawn().await;
    let ids: Vec<String> = bulk(&app, 6, false)
        .await
        .iter()
        .map(Uuid::to_string)
        .collect();
    let first = list(&app, &app.a.token, 2, "", "", "updated_at")
        .await
        .unwrap();
    let listed: Vec<&str> = first.conversations.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(listed, [&ids[0], &ids[1]]);
    for (i, id) in [&ids[0], &ids[4]].into_iter().enumerate() {
        set_subject(&app, id, format!("moved {i}")).await;
    }
    let (mut rest, mut token) = (Vec::new(), first.next_page_token);
    while !token.is_empty() {
        let page = list(&app, &app.a.token, 2, &token, "", "updated_at")
            .await
            .unwrap();
        rest.extend(page.conversations.into_iter().map(|c| c.id));
        token = page.next_page_token;
    }
    assert_eq!(rest, [ids[2].clone(), ids[3].clone(), ids[5].clone()]);
    let next_pass = all_pages(&app, 2, "", "updated_at").await;
    let expected: Vec<String> = [1, 2, 3, 5, 0, 4].map(|i| ids[i].clone()).into();
    assert_eq!(next_pass, expected);
}
