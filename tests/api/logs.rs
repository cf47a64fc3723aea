//! What the binary writes to its log.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use conversation_service::{domain::auth::TokenSecret, proto::v1 as pb};
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn logs_carry_request_ids_and_never_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(&dir).await;
    let db = connect(&url).await;
    let ws = seed_workspace(&db, "A").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = dir.path().join("server.log");
    let mut server = Command::new(env!("CARGO_BIN_EXE_conversation-service"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &url)
        .env("LOG_FILTER", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();

    let endpoint = format!("http://127.0.0.1:{port}");
    let mut channel = None;
    for _ in 0..100 {
        if let Ok(c) = tonic::transport::Channel::from_shared(endpoint.clone())
            .unwrap()
            .connect()
            .await
        {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = pb::conversation_service_client::ConversationServiceClient::new(
        channel.expect("server up"),
    );
    let create = |token: &str| {
        authed(
            token,
            pb::CreateConversationRequest {
                conversation: Some(email(&ws)),
                request_id: String::new(),
            },
        )
    };
    client
        .create_conversation(create(&ws.token))
        .await
        .expect("created");
    let denied = client
        .create_conversation(create(&ws.read_token))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let unknown = TokenSecret::generate();
    let refused = client
        .create_conversation(create(unknown.expose()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let malformed = client
        .create_conversation(create("hdsk_malformed-token-value"))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::Unauthenticated);

    server.kill().unwrap();
    server.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("conversation created") && log.contains("request_id"),
        "calls are logged with a request id"
    );
    assert!(
        log.contains("unauthenticated call"),
        "auth failures are logged"
    );
    for secret in [
        ws.token.as_str(),
        ws.read_token.as_str(),
        unknown.expose(),
        "hdsk_malformed-token-value",
    ] {
        assert!(!log.contains(secret), "a token reached the log");
    }
}
