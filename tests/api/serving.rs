use std::time::{Duration, Instant};

use conversation_service::{proto::v1 as pb, serve};
use tokio::net::TcpListener;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::*;

#[tokio::test]
async fn shutdown_turns_health_not_serving_and_exits_despite_an_open_watch() {
    let app = TestApp::spawn().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut settings = settings();
    settings.shutdown_grace = Duration::from_secs(1);
    let database = db_settings(&app.database_url);
    let server = tokio::spawn(async move {
        serve(&database, settings, listener, async {
            let _ = rx.await;
        })
        .await
    });

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
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

    let started = Instant::now();
    tx.send(()).unwrap();
    let next = tokio::time::timeout(Duration::from_secs(2), watch.message())
        .await
        .expect("a status within 2s");
    assert_eq!(next.unwrap().unwrap().status(), ServingStatus::NotServing);

    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server exits although the Watch stream is still open")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn many_concurrent_writers_never_see_a_locked_database() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let target = app.create_email().await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let app = app.clone();
        let id = target.id.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                app.create(&app.a.token, email(&app.a)).await.map(|_| ())
            } else {
                let sent = pb::Conversation {
                    attributes: [(format!("w{i}"), "x".into())].into(),
                    ..with_id(&id)
                };
                app.update(
                    &app.a.token,
                    sent,
                    Some(&[format!("attributes.w{i}").as_str()]),
                )
                .await
                .map(|_| ())
            }
        }));
    }
    for task in tasks {
        if let Err(status) = task.await.unwrap() {
            panic!("a concurrent write failed: {status:?}");
        }
    }
    assert_eq!(
        app.get(&app.a.token, &target.id)
            .await
            .unwrap()
            .attributes
            .len(),
        32
    );
}

async fn health_status(app: &TestApp) -> ServingStatus {
    let mut health = HealthClient::new(app.channel().await);
    let request = HealthCheckRequest {
        service: "helpdesk.v1.ConversationService".into(),
    };
    health.check(request).await.unwrap().into_inner().status()
}

/// Staged on PostgreSQL: the test database stops accepting connections and
/// its sessions are terminated, as in a failover; then it comes back.
#[tokio::test]
async fn health_and_calls_follow_a_database_outage() {
    let Ok(admin_url) = std::env::var("TEST_POSTGRES_URL") else {
        eprintln!("skipped: an outage is staged on PostgreSQL only (set TEST_POSTGRES_URL)");
        return;
    };
    use sea_orm::{ConnectionTrait, Database};
    let app = TestApp::spawn().await;
    let created = app.create_email().await;
    let name = app.database_url.rsplit('/').next().unwrap().to_owned();
    let admin = Database::connect(admin_url.as_str()).await.unwrap();
    let set_allowed = |allowed: bool| format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {allowed}");
    admin.execute_unprepared(&set_allowed(false)).await.unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .unwrap();

    eventually(Duration::from_secs(5), async || {
        health_status(&app).await == ServingStatus::NotServing
    })
    .await;
    let started = Instant::now();
    let status = app
        .get(&app.a.token, &created.id)
        .await
        .expect_err("the database is away");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "DATABASE_UNAVAILABLE");
    assert!(
        !status.message().contains(&name),
        "no internals leak: {}",
        status.message()
    );
    assert!(started.elapsed() < Duration::from_secs(5), "fails fast");

    admin.execute_unprepared(&set_allowed(true)).await.unwrap();
    eventually(Duration::from_secs(5), async || {
        health_status(&app).await == ServingStatus::Serving
    })
    .await;
    eventually(Duration::from_secs(5), async || {
        app.get(&app.a.token, &created.id).await.is_ok()
    })
    .await;
}
