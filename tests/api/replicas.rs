//! Two servers on one database, as two replicas behind a load balancer.

use std::{net::SocketAddr, sync::Arc};

use conversation_service::{
    proto::v1::{self as pb, conversation_service_client::ConversationServiceClient},
    serve,
};
use prost_types::FieldMask;
use tokio::{net::TcpListener, sync::oneshot};

use crate::helpers::*;

struct Replica {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn replica(app: &TestApp) -> Replica {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let database = db_settings(&app.database_url);
    tokio::spawn(async move {
        serve(&database, settings(), listener, async {
            let _ = stopped.await;
        })
        .await
    });
    Replica { addr, _stop: stop }
}

async fn client(addr: SocketAddr) -> ConversationServiceClient<tonic::transport::Channel> {
    ConversationServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

#[tokio::test]
async fn one_request_id_on_two_replicas_creates_one_conversation() {
    let app = Arc::new(TestApp::spawn().await);
    let second = replica(&app).await;
    let key = uuid::Uuid::new_v4().to_string();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let addr = if i % 2 == 0 { app.addr } else { second.addr };
        let request = pb::CreateConversationRequest {
            conversation: Some(email(&app.a)),
            request_id: key.clone(),
        };
        let token = app.a.token.clone();
        tasks.push(tokio::spawn(async move {
            client(addr)
                .await
                .create_conversation(authed(&token, request))
                .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let response = task.await.unwrap().expect("every attempt succeeds");
        ids.insert(response.into_inner().conversation.unwrap().id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[tokio::test]
async fn disjoint_updates_on_two_replicas_all_survive() {
    let app = Arc::new(TestApp::spawn().await);
    let second = replica(&app).await;
    let created = app.create_email().await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let addr = if i % 2 == 0 { app.addr } else { second.addr };
        let request = pb::UpdateConversationRequest {
            conversation: Some(pb::Conversation {
                attributes: [(format!("r{i}"), i.to_string())].into(),
                ..with_id(&created.id)
            }),
            update_mask: Some(FieldMask {
                paths: vec![format!("attributes.r{i}")],
            }),
        };
        let token = app.a.token.clone();
        tasks.push(tokio::spawn(async move {
            client(addr)
                .await
                .update_conversation(authed(&token, request))
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("every update succeeds");
    }
    let stored = app.get(&app.a.token, &created.id).await.unwrap();
    for i in 0..32 {
        assert_eq!(
            stored.attributes.get(&format!("r{i}")),
            Some(&i.to_string()),
            "r{i} lost"
        );
    }
}
