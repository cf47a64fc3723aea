use std::time::{Duration, Instant};

use conversation_service::{proto::v1 as pb, serve};
use tokio::net::TcpListener;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::*;

#[tokio::test]
async fn shutdown_turns_health_not_serving_and_exits_despite_an_open_watch() {
    let app = TestApp::spawn().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut settings = settings();
    settings.shutdown_grace = Duration::from_secs(1);
    let server = tokio::spawn(serve(connect(&app.database_url).await, settings, listener, async {
        let _ = rx.await;
    }));

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    let mut watch = health
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);

    let started = Instant::now();
    tx.send(()).unwrap();
    let next = tokio::time::timeout(Duration::from_secs(2), watch.message()).await.expect("a status within 2s");
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
                let sent = pb::Conversation { attributes: [(format!("w{i}"), "x".into())].into(), ..with_id(&id) };
                app.update(&app.a.token, sent, Some(&[format!("attributes.w{i}").as_str()])).await.map(|_| ())
            }
        }));
    }
    for task in tasks {
        if let Err(status) = task.await.unwrap() {
            panic!("a concurrent write failed: {status:?}");
        }
    }
    assert_eq!(app.get(&app.a.token, &target.id).await.unwrap().attributes.len(), 32);
}
