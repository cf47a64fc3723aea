//! Many writers on SQLite, and more calls than the server admits.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use conversation_service::{db::begin_write, proto::v1 as pb};
use prost_types::FieldMask;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{helpers::*, process::ServerProcess, report, setting};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_sqlite_writers_never_see_a_locked_database() {
    const TEST: &str = "64 writers on SQLite";
    const WRITERS: usize = 64;
    let per_writer = setting("RELIABILITY_UPDATES", 5000).div_ceil(WRITERS);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("writers.db").display());
    let ws = seed_workspace(&connect(&url).await, "A").await;
    let server = Arc::new(ServerProcess::start(&url, &[], dir.path()).await);
    let shared = server.create_email(&ws).await;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (server, ws, id) = (server.clone(), ws.clone(), shared.id.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = server.client().await;
            let mut errors: Vec<(Code, String)> = Vec::new();
            for n in 0..per_writer {
                let result = if n % 4 == 0 {
                    let request = pb::CreateConversationRequest {
                        conversation: Some(email(&ws)),
                        request_id: String::new(),
                    };
                    client
                        .create_conversation(authed(&ws.token, request))
                        .await
                        .map(|_| ())
                } else {
                    let request = pb::UpdateConversationRequest {
                        conversation: Some(pb::Conversation {
                            attributes: [(format!("w{w}"), n.to_string())].into(),
                            ..with_id(&id)
                        }),
                        update_mask: Some(FieldMask {
                            paths: vec![format!("attributes.w{w}")],
                        }),
                    };
                    client
                        .update_conversation(authed(&ws.token, request))
                        .await
                        .map(|_| ())
                };
                if let Err(status) = result {
                    errors.push((status.code(), status.message().to_owned()));
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for task in tasks {
        errors.extend(task.await.unwrap());
    }
    let calls = WRITERS * per_writer;
    report(
        TEST,
        format_args!(
            "{calls} writes (creates and updates of one row) from {WRITERS} concurrent writers: {} errors, {:.0} writes/s",
            errors.len(),
            calls as f64 / started.elapsed().as_secs_f64()
        ),
    );
    assert!(
        errors.is_empty(),
        "no \"database is locked\" or any other error: {:?}",
        &errors[..errors.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_the_concurrency_limit_is_shed_fast_with_bounded_memory() {
    const TEST: &str = "2x overload";
    const LIMIT: usize = 16;
    const ROUNDS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("overload.db").display());
    let db = connect(&url).await;
    let ws = seed_workspace(&db, "A").await;
    let server =
        Arc::new(ServerProcess::start(&url, &[("CONCURRENCY_LIMIT", "16")], dir.path()).await);
    let target = server.create_email(&ws).await;
    let rss_before = server.peak_rss_kib();

    let mut outcomes: HashMap<Code, usize> = HashMap::new();
    let mut slowest_shed = Duration::ZERO;
    let mut deadline_codes = Vec::new();
    for round in 0..ROUNDS {
        // Hold the write lock so admitted writes wait: the server is full.
        let lock = begin_write(&db).await.unwrap();
        {
            use sea_orm::{EntityTrait, QuerySelect};
            conversation_service::db::entity::conversation::Entity::find()
                .lock_exclusive()
                .one(&lock)
                .await
                .unwrap();
        }
        // A caller whose own deadline passes while it waits on the lock.
        {
            let mut request = authed(
                &ws.token,
                pb::UpdateConversationRequest {
                    conversation: Some(pb::Conversation {
                        subject: Some("late".into()),
                        ..with_id(&target.id)
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["subject".into()],
                    }),
                },
            );
            request.set_timeout(Duration::from_millis(100));
            if let Err(status) = server.client().await.update_conversation(request).await {
                deadline_codes.push(status.code());
            }
        }
        let mut calls = Vec::new();
        for i in 0..2 * LIMIT {
            let (server, ws, id) = (server.clone(), ws.clone(), target.id.clone());
            calls.push(tokio::spawn(async move {
                let mut client = server.client().await;
                let mut request = authed(
                    &ws.token,
                    pb::UpdateConversationRequest {
                        conversation: Some(pb::Conversation {
                            subject: Some(format!("r{round}-{i}")),
                            ..with_id(&id)
                        }),
                        update_mask: Some(FieldMask {
                            paths: vec!["subject".into()],
                        }),
                    },
                );
                request.set_timeout(Duration::from_secs(20));
                let started = Instant::now();
                let result = client.update_conversation(request).await;
                (result.map(|_| ()).map_err(|s| s.code()), started.elapsed())
            }));
        }
        // Health answers while the server is full.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut health = HealthClient::new(server.channel().await);
        let answer = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(answer.into_inner().status(), ServingStatus::Serving);
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(lock);
        for call in calls {
            let (result, latency) = call.await.unwrap();
            let code = result.err().unwrap_or(Code::Ok);
            if code == Code::ResourceExhausted {
                slowest_shed = slowest_shed.max(latency);
            }
            *outcomes.entry(code).or_default() += 1;
        }
    }
    let rss_after = server.peak_rss_kib();
    let shed = outcomes.get(&Code::ResourceExhausted).copied().unwrap_or(0);
    let ok = outcomes.get(&Code::Ok).copied().unwrap_or(0);
    report(
        TEST,
        format_args!(
            "{} calls at 2x a limit of {LIMIT}: {ok} served, {shed} shed with RESOURCE_EXHAUSTED (slowest shed {:.0} ms, while admitted calls waited over 500 ms); peak RSS {} MiB before, {} MiB after; a caller past its 100 ms deadline saw {:?}",
            ROUNDS * 2 * LIMIT,
            slowest_shed.as_secs_f64() * 1000.0,
            rss_before / 1024,
            rss_after / 1024,
            deadline_codes
        ),
    );
    assert_eq!(
        ok + shed,
        ROUNDS * 2 * LIMIT,
        "only served or shed: {outcomes:?}"
    );
    assert!(
        shed >= ROUNDS * LIMIT / 2,
        "beyond the limit calls are shed, not queued: {outcomes:?}"
    );
    assert!(
        slowest_shed < Duration::from_millis(500),
        "shed calls answered before the admitted ones"
    );
    assert!(
        rss_after < 256 * 1024,
        "memory stays bounded: {rss_after} KiB"
    );
    assert!(
        deadline_codes.iter().all(|c| matches!(
            c,
            Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted
        )),
        "{deadline_codes:?}"
    );
}
