//! Replicas and concurrency: nothing acknowledged is lost.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use conversation_service::{
    db::{self, token::TokenRef},
    domain::auth::Abilities,
    proto::v1 as pb,
};
use prost_types::FieldMask;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tonic::Code;

use crate::{helpers::*, postgres, process::ServerProcess, report, setting};

/// One field of one conversation, owned by exactly one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Field {
    Subject,
    Priority,
    Tags,
    IsSpam,
    SpamScore,
    Attribute(u8),
}

impl Field {
    const ALL: [Field; 13] = [
        Field::Subject,
        Field::Priority,
        Field::Tags,
        Field::IsSpam,
        Field::SpamScore,
        Field::Attribute(0),
        Field::Attribute(1),
        Field::Attribute(2),
        Field::Attribute(3),
        Field::Attribute(4),
        Field::Attribute(5),
        Field::Attribute(6),
        Field::Attribute(7),
    ];

    /// Writes write number `n` into `c`; returns the mask path.
    fn write(self, n: usize, c: &mut pb::Conversation) -> String {
        match self {
            Field::Subject => {
                c.subject = Some(format!("s{n}"));
                "subject".into()
            }
            Field::Priority => {
                c.priority = 1 + (n % 4) as i32;
                "priority".into()
            }
            Field::Tags => {
                c.tags = vec![format!("t{n}")];
                "tags".into()
            }
            Field::IsSpam => {
                c.is_spam = n.is_multiple_of(2);
                "is_spam".into()
            }
            Field::SpamScore => {
                c.spam_score = Some(n as f64);
                "spam_score".into()
            }
            Field::Attribute(k) => {
                c.attributes.insert(format!("k{k}"), format!("v{n}"));
                format!("attributes.k{k}")
            }
        }
    }

    fn read(self, c: &pb::Conversation) -> String {
        match self {
            Field::Subject => c.subject.clone().unwrap_or_default(),
            Field::Priority => c.priority.to_string(),
            Field::Tags => c.tags.join(","),
            Field::IsSpam => c.is_spam.to_string(),
            Field::SpamScore => format!("{:?}", c.spam_score),
            Field::Attribute(k) => c
                .attributes
                .get(&format!("k{k}"))
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn expected(self, n: usize) -> String {
        let mut c = pb::Conversation::default();
        self.write(n, &mut c);
        self.read(&c)
    }
}

#[derive(Default)]
struct ClientOutcome {
    /// Last acknowledged value per (conversation, field).
    last: HashMap<(usize, Field), String>,
    /// Acknowledged writes that changed the stored value, per conversation.
    changes: HashMap<usize, i64>,
    errors: Vec<Code>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disjoint_updates_over_two_replicas_lose_nothing() {
    const TEST: &str = "disjoint updates over 2 replicas";
    let Some(_) = postgres(TEST) else { return };
    const CONVERSATIONS: usize = 8;
    const CLIENTS: usize = 32;
    let total = setting("RELIABILITY_UPDATES", 5000);

    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(&dir).await;
    let db = connect(&url).await;
    let ws = seed_workspace(&db, "A").await;
    let replicas = Arc::new([
        ServerProcess::start(&url, &[], dir.path()).await,
        ServerProcess::start(&url, &[], dir.path()).await,
    ]);

    let mut initial = Vec::new();
    for _ in 0..CONVERSATIONS {
        initial.push(replicas[0].create_email(&ws).await);
    }
    let ids: Arc<Vec<String>> = Arc::new(initial.iter().map(|c| c.id.clone()).collect());
    let slots: Vec<(usize, Field)> = (0..CONVERSATIONS)
        .flat_map(|c| Field::ALL.map(|f| (c, f)))
        .collect();

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let owned: Vec<(usize, Field)> = slots.iter().copied().skip(i).step_by(CLIENTS).collect();
        let (replicas, ids, next, token) = (
            replicas.clone(),
            ids.clone(),
            next.clone(),
            ws.token.clone(),
        );
        let mut last_seen: HashMap<(usize, Field), String> = owned
            .iter()
            .map(|&(c, f)| ((c, f), f.read(&initial[c])))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(i as u64);
            let mut clients = [replicas[0].client().await, replicas[1].client().await];
            let mut outcome = ClientOutcome::default();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= total {
                    return outcome;
                }
                let (conversation, field) = owned[rng.random_range(0..owned.len())];
                let mut sent = with_id(&ids[conversation]);
                let path = field.write(n, &mut sent);
                let request = pb::UpdateConversationRequest {
                    conversation: Some(sent),
                    update_mask: Some(FieldMask { paths: vec![path] }),
                };
                let replica = rng.random_range(0..2);
                match clients[replica]
                    .update_conversation(authed(&token, request))
                    .await
                {
                    Ok(_) => {
                        let value = field.expected(n);
                        if last_seen.insert((conversation, field), value.clone())
                            != Some(value.clone())
                        {
                            *outcome.changes.entry(conversation).or_default() += 1;
                        }
                        outcome.last.insert((conversation, field), value);
                    }
                    Err(status) => outcome.errors.push(status.code()),
                }
            }
        }));
    }
    let mut last = HashMap::new();
    let mut changes: HashMap<usize, i64> = HashMap::new();
    let mut errors = Vec::new();
    for task in tasks {
        let outcome = task.await.unwrap();
        last.extend(outcome.last);
        for (conversation, n) in outcome.changes {
            *changes.entry(conversation).or_default() += n;
        }
        errors.extend(outcome.errors);
    }
    let elapsed = started.elapsed();

    let mut lost = 0;
    let mut client = replicas[1].client().await;
    for (c, id) in ids.iter().enumerate() {
        let request = pb::GetConversationRequest { id: id.clone() };
        let stored = client
            .get_conversation(authed(&ws.token, request))
            .await
            .unwrap()
            .into_inner()
            .conversation
            .unwrap();
        for field in Field::ALL {
            if let Some(expected) = last.get(&(c, field))
                && field.read(&stored) != *expected
            {
                lost += 1;
                eprintln!(
                    "lost: conversation {c} {field:?}: stored {:?}, last acknowledged {expected:?}",
                    field.read(&stored)
                );
            }
        }
        use sea_orm::EntityTrait;
        let row = db::entity::conversation::Entity::find_by_id(uuid::Uuid::parse_str(id).unwrap())
            .one(&*db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.version - 1,
            changes.get(&c).copied().unwrap_or(0),
            "conversation {c}: one version per changing write"
        );
    }
    report(
        TEST,
        format_args!(
            "{total} updates from {CLIENTS} clients with random disjoint masks over 2 replicas on PostgreSQL: {lost} lost, {} errors, {:.0} updates/s",
            errors.len(),
            total as f64 / elapsed.as_secs_f64()
        ),
    );
    assert_eq!(lost, 0, "every field equals its last acknowledged write");
    assert!(errors.is_empty(), "errors: {errors:?}");
}

struct Applied {
    precondition: String,
    etag: String,
    subject: String,
}

/// Read-then-conditional-update cycles on one conversation from many clients
/// with overlapping masks: every update either applies or is ABORTED, and the
/// applied ones form one chain of etags, i.e. a serial order.
async fn etag_chain(test: &str, replicas: Arc<Vec<ServerProcess>>, ws: &Workspace) {
    const CLIENTS: usize = 16;
    const ROUNDS: usize = 40;
    let mut client = replicas[0].client().await;
    let created = replicas[0].create_email(ws).await;

    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (replicas, id, token) = (replicas.clone(), created.id.clone(), ws.token.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = replicas[i % replicas.len()].client().await;
            let (mut applied, mut aborted, mut errors) = (Vec::new(), 0, Vec::new());
            for round in 0..ROUNDS {
                let read = client
                    .get_conversation(authed(
                        &token,
                        pb::GetConversationRequest { id: id.clone() },
                    ))
                    .await
                    .unwrap()
                    .into_inner()
                    .conversation
                    .unwrap();
                let subject = format!("c{i}-r{round}");
                let request = pb::UpdateConversationRequest {
                    conversation: Some(pb::Conversation {
                        subject: Some(subject.clone()),
                        priority: 1 + ((i + round) % 4) as i32,
                        etag: read.etag.clone(),
                        ..with_id(&id)
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["subject".into(), "priority".into()],
                    }),
                };
                match client.update_conversation(authed(&token, request)).await {
                    Ok(response) => {
                        let etag = response.into_inner().conversation.unwrap().etag;
                        applied.push(Applied {
                            precondition: read.etag,
                            etag,
                            subject,
                        });
                    }
                    Err(status) if status.code() == Code::Aborted => aborted += 1,
                    Err(status) => errors.push(status.code()),
                }
            }
            (applied, aborted, errors)
        }));
    }
    let mut by_precondition = HashMap::new();
    let (mut aborted, mut errors, mut duplicates) = (0, Vec::new(), 0);
    for task in tasks {
        let (applied, a, e) = task.await.unwrap();
        aborted += a;
        errors.extend(e);
        for write in applied {
            if by_precondition
                .insert(write.precondition.clone(), write)
                .is_some()
            {
                duplicates += 1; // two writes applied on top of one version: one was lost
            }
        }
    }
    let applied = by_precondition.len();
    let mut cursor = created.etag.clone();
    let mut last_subject = None;
    while let Some(write) = by_precondition.remove(&cursor) {
        cursor = write.etag;
        last_subject = Some(write.subject);
    }
    let stored = client
        .get_conversation(authed(
            &ws.token,
            pb::GetConversationRequest {
                id: created.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .conversation
        .unwrap();
    report(
        test,
        format_args!(
            "{} conditional updates with overlapping masks: {applied} applied in one serial chain, {aborted} ABORTED, {} other errors, {duplicates} applied twice on one version",
            CLIENTS * ROUNDS,
            errors.len()
        ),
    );
    assert!(errors.is_empty(), "only success or ABORTED: {errors:?}");
    assert_eq!(duplicates, 0);
    assert!(
        by_precondition.is_empty(),
        "applied writes outside the chain: {}",
        by_precondition.len()
    );
    assert_eq!(
        stored.etag, cursor,
        "the stored version is the end of the chain"
    );
    assert_eq!(stored.subject, last_subject);
    assert!(
        applied > 0 && aborted > 0,
        "the test must produce real conflicts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_masks_with_etags_serialize_on_postgres_replicas() {
    const TEST: &str = "etag chain over 2 replicas (PostgreSQL)";
    let Some(_) = postgres(TEST) else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(&dir).await;
    let ws = seed_workspace(&connect(&url).await, "A").await;
    let replicas = Arc::new(vec![
        ServerProcess::start(&url, &[], dir.path()).await,
        ServerProcess::start(&url, &[], dir.path()).await,
    ]);
    etag_chain(TEST, replicas, &ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_masks_with_etags_serialize_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("etag.db").display());
    let ws = seed_workspace(&connect(&url).await, "A").await;
    let replicas = Arc::new(vec![ServerProcess::start(&url, &[], dir.path()).await]);
    etag_chain("etag chain (SQLite)", replicas, &ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_on_both_replicas_within_five_seconds() {
    const TEST: &str = "revocation on 2 replicas";
    let Some(_) = postgres(TEST) else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(&dir).await;
    let db = connect(&url).await;
    let ws = seed_workspace(&db, "A").await;
    let replicas = [
        ServerProcess::start(&url, &[], dir.path()).await,
        ServerProcess::start(&url, &[], dir.path()).await,
    ];
    let (token_id, secret) = db::token::issue(
        &db,
        ws.id,
        Abilities {
            read: true,
            write: false,
        },
        None,
    )
    .await
    .unwrap();
    let token = secret.expose().to_owned();
    let answer = async |replica: &ServerProcess| {
        let request = pb::GetConversationRequest {
            id: uuid::Uuid::new_v4().to_string(),
        };
        replica
            .client()
            .await
            .get_conversation(authed(&token, request))
            .await
            .unwrap_err()
            .code()
    };
    for replica in &replicas {
        eventually(Duration::from_secs(5), async || {
            answer(replica).await == Code::NotFound
        })
        .await;
    }
    assert!(
        db::token::revoke(&db, TokenRef::Id(token_id))
            .await
            .unwrap()
    );
    let revoked = Instant::now();
    let mut slowest = Duration::ZERO;
    for replica in &replicas {
        eventually(Duration::from_secs(5), async || {
            answer(replica).await == Code::Unauthenticated
        })
        .await;
        slowest = slowest.max(revoked.elapsed());
    }
    report(
        TEST,
        format_args!(
            "a revoked token was refused on both replicas after {:.1} s (limit 5 s)",
            slowest.as_secs_f64()
        ),
    );
    assert!(slowest <= Duration::from_secs(5));
}
