//! Faults: cancelled calls, restarts, a database that goes away, SIGTERM.

use std::{
    collections::{HashMap, HashSet},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use conversation_service::proto::v1 as pb;
use prost_types::FieldMask;
use rand::{Rng, SeedableRng, rngs::StdRng};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tokio::sync::RwLock;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{helpers::*, postgres, process::ServerProcess, report, required_env, setting};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_creates_survive_cancellation_a_restart_and_two_replicas() {
    const TEST: &str = "idempotent creates under faults";
    let Some(_) = postgres(TEST) else { return };
    const WORKERS: usize = 32;
    let keys = setting("RELIABILITY_KEYS", 1000);
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(&dir).await;
    let db = connect(&url).await;
    let ws = seed_workspace(&db, "A").await;
    let a = Arc::new(ServerProcess::start(&url, &[], dir.path()).await);
    let b = Arc::new(RwLock::new(
        ServerProcess::start(&url, &[], dir.path()).await,
    ));
    let b_addr = b.read().await.addr;

    let next = Arc::new(AtomicUsize::new(0));
    let cancelled = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        let (a, next, cancelled, retries, ws) = (
            a.clone(),
            next.clone(),
            cancelled.clone(),
            retries.clone(),
            ws.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(worker as u64);
            let mut answers: HashMap<String, HashSet<String>> = HashMap::new();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= keys {
                    return answers;
                }
                let key = uuid::Uuid::new_v4().to_string();
                let conversation = pb::Conversation {
                    subject: Some(format!("key {n}")),
                    ..email(&ws)
                };
                // A few attempts with deadlines shorter than the call, then
                // retries with a sane one until it succeeds, then one more
                // retry that must return the same conversation.
                let mut successes = 0;
                for attempt in 0.. {
                    let addr = if rng.random_bool(0.5) { a.addr } else { b_addr };
                    let Ok(channel) =
                        tonic::transport::Channel::from_shared(format!("http://{addr}"))
                            .unwrap()
                            .connect_timeout(Duration::from_millis(500))
                            .connect()
                            .await
                    else {
                        retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let mut client =
                        pb::conversation_service_client::ConversationServiceClient::new(channel);
                    let mut request = authed(
                        &ws.token,
                        pb::CreateConversationRequest {
                            conversation: Some(conversation.clone()),
                            request_id: key.clone(),
                        },
                    );
                    let deadline = if attempt < 3 {
                        Duration::from_micros(rng.random_range(200..6000))
                    } else {
                        Duration::from_secs(10)
                    };
                    request.set_timeout(deadline);
                    match client.create_conversation(request).await {
                        Ok(response) => {
                            answers
                                .entry(key.clone())
                                .or_default()
                                .insert(response.into_inner().conversation.unwrap().id);
                            successes += 1;
                            if successes == 2 {
                                break;
                            }
                        }
                        Err(status)
                            if matches!(
                                status.code(),
                                Code::DeadlineExceeded | Code::Cancelled
                            ) =>
                        {
                            cancelled.fetch_add(1, Ordering::Relaxed);
                        }
                        // UNAVAILABLE, or the connection went away under the
                        // call (a replica restarting): the client cannot know
                        // whether the create happened, so it retries the key.
                        // A stream the restarting replica's GOAWAY cut off
                        // reaches tonic's client as INTERNAL "h2 protocol
                        // error" (h2's NO_ERROR reason); the service itself
                        // never answers with that message.
                        Err(status)
                            if status.code() == Code::Unavailable
                                || (status.code() == Code::Unknown
                                    && status.message().contains("transport"))
                                || (status.code() == Code::Internal
                                    && status.message().starts_with("h2 protocol error")) =>
                        {
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(status) => panic!(
                            "key {n} attempt {attempt}: unexpected {:?} {}",
                            status.code(),
                            status.message()
                        ),
                    }
                }
            }
        }));
    }
    // Restart replica B while the keys are being created.
    while next.load(Ordering::SeqCst) < keys / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.write().await.restart().await;
    let restarted_at = next.load(Ordering::SeqCst);

    let mut answers: HashMap<String, HashSet<String>> = HashMap::new();
    for task in tasks {
        answers.extend(task.await.unwrap());
    }
    let inconsistent = answers.values().filter(|ids| ids.len() != 1).count();
    let rows = conversation_service::db::entity::conversation::Entity::find()
        .filter(conversation_service::db::entity::conversation::Column::WorkspaceId.eq(ws.id))
        .all(&*db)
        .await
        .unwrap();
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for row in &rows {
        *per_key
            .entry(row.request_id.expect("every create had a key").to_string())
            .or_default() += 1;
    }
    let duplicated = per_key.values().filter(|n| **n != 1).count();
    report(
        TEST,
        format_args!(
            "{keys} keys, {} calls cancelled by short deadlines, {} retried after UNAVAILABLE, replica restarted after key {restarted_at}: {} conversations, {duplicated} keys with more than one, {inconsistent} keys answered with different ids",
            cancelled.load(Ordering::Relaxed),
            retries.load(Ordering::Relaxed),
            rows.len()
        ),
    );
    assert_eq!(answers.len(), keys);
    assert_eq!(rows.len(), keys, "each key yields exactly one conversation");
    assert_eq!(duplicated, 0);
    assert_eq!(inconsistent, 0, "every retry returns the same conversation");
    assert!(
        cancelled.load(Ordering::Relaxed) > 0,
        "the test must really cancel calls"
    );
}

/// Restarts the cluster when dropped, so a failing assertion cannot leave
/// PostgreSQL down for whatever runs next.
struct ClusterGuard(Vec<String>);

impl ClusterGuard {
    fn run(&self, action: &str) {
        let status = Command::new("pg_ctlcluster")
            .args(&self.0)
            .arg(action)
            .args(if action == "stop" {
                &["-m", "fast"][..]
            } else {
                &[][..]
            })
            .status()
            .expect("pg_ctlcluster");
        assert!(status.success(), "pg_ctlcluster {action} failed");
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        let _ = Command::new("pg_ctlcluster")
            .args(&self.0)
            .arg("start")
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_fails_fast_and_comes_back_without_a_restart() {
    const TEST: &str = "database outage";
    let Some(_) = postgres(TEST) else { return };
    let Some(cluster) = required_env(TEST, "RELIABILITY_PG_CLUSTER") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(&dir).await;
    let db = connect(&url).await;
    let ws = seed_workspace(&db, "A").await;
    let server =
        Arc::new(ServerProcess::start(&url, &[("DATABASE_TIMEOUT", "2s")], dir.path()).await);
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(server.create_email(&ws).await.id);
    }

    // Load: each worker updates its own conversation's subject; it keeps the
    // last acknowledged value, and records every failure with its latency.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for id in ids.clone() {
        let (server, stop, token) = (server.clone(), stop.clone(), ws.token.clone());
        workers.push(tokio::spawn(async move {
            let mut client = server.client().await;
            let (mut last_acked, mut failures) = (None, Vec::new());
            for n in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let mut request = authed(
                    &token,
                    pb::UpdateConversationRequest {
                        conversation: Some(pb::Conversation {
                            subject: Some(format!("v{n}")),
                            ..with_id(&id)
                        }),
                        update_mask: Some(FieldMask {
                            paths: vec!["subject".into()],
                        }),
                    },
                );
                request.set_timeout(Duration::from_secs(5));
                let started = Instant::now();
                match client.update_conversation(request).await {
                    Ok(_) => last_acked = Some(format!("v{n}")),
                    Err(status) => {
                        failures.push((status.code(), started.elapsed()));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            (id, last_acked, failures)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let guard = ClusterGuard(cluster.split_whitespace().map(str::to_owned).collect());
    guard.run("stop");
    let stopped = Instant::now();
    let mut health = HealthClient::new(server.channel().await);
    let status = async |health: &mut HealthClient<tonic::transport::Channel>| {
        health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status())
            .ok()
    };
    while status(&mut health).await != Some(ServingStatus::NotServing) {
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "health still SERVING 5 s into the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let not_serving_after = stopped.elapsed();
    // A fresh call during the outage: UNAVAILABLE, fast, and the token is
    // still known (not UNAUTHENTICATED).
    let probe_started = Instant::now();
    let mut probe = authed(&ws.token, pb::GetConversationRequest { id: ids[0].clone() });
    probe.set_timeout(Duration::from_secs(5));
    let probe = client.get_conversation(probe).await.unwrap_err();
    let probe_latency = probe_started.elapsed();
    assert_eq!(probe.code(), Code::Unavailable, "{probe:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    guard.run("start");
    let started_again = Instant::now();
    while status(&mut health).await != Some(ServingStatus::Serving) {
        assert!(
            started_again.elapsed() < Duration::from_secs(5),
            "health not SERVING 5 s after the database returned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let serving_after = started_again.elapsed();
    loop {
        let request = authed(&ws.token, pb::GetConversationRequest { id: ids[0].clone() });
        if client.get_conversation(request).await.is_ok() {
            break;
        }
        assert!(
            started_again.elapsed() < Duration::from_secs(5),
            "calls still failing 5 s after the database returned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls_after = started_again.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);

    let mut all_failures = Vec::new();
    for worker in workers {
        let (id, last_acked, failures) = worker.await.unwrap();
        all_failures.extend(failures);
        let request = authed(&ws.token, pb::GetConversationRequest { id });
        let stored = client
            .get_conversation(request)
            .await
            .unwrap()
            .into_inner()
            .conversation
            .unwrap();
        assert_eq!(stored.subject, last_acked, "an acknowledged write was lost");
    }
    let slowest_failure = all_failures
        .iter()
        .map(|(_, latency)| *latency)
        .max()
        .unwrap_or_default();
    let wrong: Vec<_> = all_failures
        .iter()
        .filter(|(code, _)| *code != Code::Unavailable)
        .collect();
    report(
        TEST,
        format_args!(
            "{} calls failed during the outage, all UNAVAILABLE (slowest {:.2} s, a probe {:.2} s); health NOT_SERVING after {:.1} s; SERVING {:.1} s and calls succeeding {:.1} s after the database returned; every acknowledged write kept",
            all_failures.len(),
            slowest_failure.as_secs_f64(),
            probe_latency.as_secs_f64(),
            not_serving_after.as_secs_f64(),
            serving_after.as_secs_f64(),
            calls_after.as_secs_f64()
        ),
    );
    assert!(
        wrong.is_empty(),
        "failures other than UNAVAILABLE: {wrong:?}"
    );
    assert!(
        !all_failures.is_empty(),
        "the outage must be felt by the load"
    );
    assert!(
        slowest_failure < Duration::from_secs(5),
        "no call hangs past its deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_calls_in_flight_refuses_new_ones_and_exits_in_time() {
    const TEST: &str = "SIGTERM under load";
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sigterm.db").display());
    let ws = seed_workspace(&connect(&url).await, "A").await;
    let mut server = ServerProcess::start(&url, &[("SHUTDOWN_GRACE", "2s")], dir.path()).await;

    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (addr, stop, ws) = (server.addr, stop.clone(), ws.clone());
        workers.push(tokio::spawn(async move {
            let mut outcomes: HashMap<Code, usize> = HashMap::new();
            let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut c = pb::conversation_service_client::ConversationServiceClient::new(channel);
            while !stop.load(Ordering::SeqCst) {
                let request = pb::CreateConversationRequest {
                    conversation: Some(email(&ws)),
                    request_id: String::new(),
                };
                let code = match c.create_conversation(authed(&ws.token, request)).await {
                    Ok(_) => Code::Ok,
                    Err(status) => status.code(),
                };
                *outcomes.entry(code).or_default() += 1;
                if code == Code::Unavailable {
                    // A real client goes to another replica now.
                    break;
                }
            }
            outcomes
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    server.sigterm();
    let next = tokio::time::timeout(Duration::from_secs(2), watch.message())
        .await
        .expect("a health change within 2 s");
    assert_eq!(next.unwrap().unwrap().status(), ServingStatus::NotServing);
    let not_serving_after = signalled.elapsed();
    let exited_after = server.wait_exit(Duration::from_secs(3)).await; // grace 2 s + 1 s
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);

    let mut outcomes: HashMap<Code, usize> = HashMap::new();
    for worker in workers {
        for (code, n) in worker.await.unwrap() {
            *outcomes.entry(code).or_default() += n;
        }
    }
    let ok = outcomes.get(&Code::Ok).copied().unwrap_or(0);
    let unavailable = outcomes.get(&Code::Unavailable).copied().unwrap_or(0);
    report(
        TEST,
        format_args!(
            "{ok} calls completed, {unavailable} refused with UNAVAILABLE, no other outcome; health NOT_SERVING after {:.0} ms; exited {:.1} s after SIGTERM with a Watch stream open (grace 2 s)",
            not_serving_after.as_secs_f64() * 1000.0,
            exited_after.as_secs_f64()
        ),
    );
    // After exit the port is closed: a new caller cannot even connect.
    let refused = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await;
    assert!(refused.is_err(), "nothing listens after exit");
    assert!(ok > 0 && unavailable > 0, "{outcomes:?}");
    assert_eq!(
        ok + unavailable,
        outcomes.values().sum::<usize>(),
        "never CANCELLED or INTERNAL: {outcomes:?}"
    );
}
