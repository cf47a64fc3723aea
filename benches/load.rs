//! The load generator of `make bench`: N concurrent callers for T seconds of
//! one operation against a running service, through the generated tonic
//! client. It prints one JSON line: operation, calls, errors, RPC/s, p50 and
//! p99 in milliseconds.
//!
//! Settings (scripts/bench.sh sets them): BENCH_ADDR, BENCH_TOKEN,
//! BENCH_CUSTOMER, BENCH_OP (create | update | get | list_first | list_deep |
//! health: the standard health Check, which touches no database: the
//! ceiling the transport alone allows on this machine),
//! BENCH_CONCURRENCY, BENCH_SECONDS (or BENCH_MILLIS), BENCH_ROWS (how many seeded rows exist;
//! row n has id md5(n)), BENCH_DEEP_PAGE (default 1000), BENCH_CALLS (at most
//! this many calls per caller; for statement capture).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use conversation_service::proto::v1::{
    self as pb, conversation_service_client::ConversationServiceClient,
};
use prost_types::FieldMask;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tonic::{Request, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The service's allocator: the load generator shares the cores it measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The id of seeded row `n`, as scripts/bench.sh inserts it: md5(n::text)
/// read as a UUID, which pgbench can compute too.
fn seeded_id(n: u64) -> String {
    let digest = format!("{:x}", md5::compute(n.to_string().as_bytes()));
    format!(
        "{}-{}-{}-{}-{}",
        &digest[0..8],
        &digest[8..12],
        &digest[12..16],
        &digest[16..20],
        &digest[20..32]
    )
}

fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[derive(Clone)]
struct Setup {
    token: Arc<String>,
    customer: Arc<String>,
    rows: u64,
    deep_token: Arc<String>,
}

/// The page token of page `page` (1-based) of the default listing.
async fn deep_token(
    client: &mut ConversationServiceClient<Channel>,
    token: &str,
    page: u64,
) -> String {
    let mut page_token = String::new();
    for _ in 1..page {
        let request = pb::ListConversationsRequest {
            page_size: 50,
            page_token,
            ..Default::default()
        };
        page_token = client
            .list_conversations(authed(token, request))
            .await
            .unwrap()
            .into_inner()
            .next_page_token;
        assert!(!page_token.is_empty(), "fewer than {page} pages");
    }
    page_token
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = env("BENCH_ADDR");
    let op = env("BENCH_OP");
    let concurrency = env_or("BENCH_CONCURRENCY", 16) as usize;
    let millis = env_or("BENCH_MILLIS", env_or("BENCH_SECONDS", 10) * 1000);
    // BENCH_CALLS caps each caller's calls (statement capture: exactly one).
    let max_calls = env_or("BENCH_CALLS", u64::MAX);
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ConversationServiceClient::new(channel.clone());
    let token = env("BENCH_TOKEN");
    let setup = Setup {
        deep_token: Arc::new(if op == "list_deep" {
            deep_token(&mut client, &token, env_or("BENCH_DEEP_PAGE", 1000)).await
        } else {
            String::new()
        }),
        token: Arc::new(token),
        customer: Arc::new(env("BENCH_CUSTOMER")),
        rows: env_or("BENCH_ROWS", 1),
    };

    // Each caller's setup comes before the clock starts: on a server just
    // started, connecting and a first call can take longer than a short
    // run (statement capture runs 200 ms per operation).
    let mut callers = Vec::new();
    for caller in 0..concurrency {
        // One connection per caller, as independent clients would have.
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        // Update: each caller owns one seeded conversation and carries its etag.
        let own = seeded_id(caller as u64 + 1);
        let mut etag = String::new();
        if op == "update" && max_calls == u64::MAX {
            let request = pb::GetConversationRequest { id: own.clone() };
            etag = ConversationServiceClient::new(channel.clone())
                .get_conversation(authed(&setup.token, request))
                .await
                .unwrap()
                .into_inner()
                .conversation
                .unwrap()
                .etag;
        }
        callers.push((caller, channel, own, etag));
    }

    let cpu_before = cpu_ticks();
    let deadline = Instant::now() + Duration::from_millis(millis);
    let mut tasks = Vec::new();
    for (caller, channel, own, mut etag) in callers {
        let (setup, op) = (setup.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut health = HealthClient::new(channel.clone());
            let mut client = ConversationServiceClient::new(channel);
            let mut rng = StdRng::seed_from_u64(caller as u64);
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            let mut n = 0u64;
            while Instant::now() < deadline && n < max_calls {
                n += 1;
                let started = Instant::now();
                let ok = match op.as_str() {
                    "create" => {
                        let conversation = pb::Conversation {
                            channel: pb::Channel::Email as i32,
                            customer_id: setup.customer.to_string(),
                            subject: Some(format!("bench {caller}-{n}")),
                            ..Default::default()
                        };
                        let request = pb::CreateConversationRequest {
                            conversation: Some(conversation),
                            request_id: String::new(),
                        };
                        client
                            .create_conversation(authed(&setup.token, request))
                            .await
                            .is_ok()
                    }
                    "update" => {
                        let conversation = pb::Conversation {
                            id: own.clone(),
                            subject: Some(format!("bench update {caller}-{n}")),
                            priority: 1 + (n % 4) as i32,
                            etag: etag.clone(),
                            ..Default::default()
                        };
                        let mask = FieldMask {
                            paths: vec!["subject".into(), "priority".into()],
                        };
                        let request = pb::UpdateConversationRequest {
                            conversation: Some(conversation),
                            update_mask: Some(mask),
                        };
                        match client
                            .update_conversation(authed(&setup.token, request))
                            .await
                        {
                            Ok(response) => {
                                etag = response.into_inner().conversation.unwrap().etag;
                                true
                            }
                            Err(_) => false,
                        }
                    }
                    "get" => {
                        let request = pb::GetConversationRequest {
                            id: seeded_id(rng.random_range(1..=setup.rows)),
                        };
                        client
                            .get_conversation(authed(&setup.token, request))
                            .await
                            .is_ok()
                    }
                    "list_first" => {
                        let request = pb::ListConversationsRequest {
                            page_size: 50,
                            ..Default::default()
                        };
                        client
                            .list_conversations(authed(&setup.token, request))
                            .await
                            .is_ok_and(|r| r.get_ref().conversations.len() == 50)
                    }
                    "list_deep" => {
                        let request = pb::ListConversationsRequest {
                            page_size: 50,
                            page_token: setup.deep_token.to_string(),
                            ..Default::default()
                        };
                        client
                            .list_conversations(authed(&setup.token, request))
                            .await
                            .is_ok_and(|r| r.get_ref().conversations.len() == 50)
                    }
                    "health" => health.check(HealthCheckRequest::default()).await.is_ok(),
                    other => panic!("unknown BENCH_OP {other}"),
                };
                latencies.push(started.elapsed());
                if !ok {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let started = Instant::now();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (l, e) = task.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64().max(millis as f64 / 1000.0);
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let cpu = cpu_ticks() - cpu_before;
    println!(
        r#"{{"op": "{op}", "calls": {}, "errors": {errors}, "rps": {:.1}, "p50_ms": {:.3}, "p99_ms": {:.3}, "cpu_ticks": {cpu}}}"#,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}

/// This process's CPU time so far (user + system), in clock ticks, from
/// /proc: the load generator's own cost shares the cores with the service's.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 from state.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}
