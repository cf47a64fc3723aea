//! What the binary writes to its log, and the traces it exports.

use std::time::Duration;

use conversation_service::{domain::auth::TokenSecret, proto::v1 as pb};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use tokio::sync::mpsc;
use tonic::{Code, metadata::MetadataValue, transport::Channel};

use crate::helpers::*;
use crate::process::ServerProcess;

/// A W3C trace context a caller might send: its trace id and parent span id.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// The binary serving over a fresh database, with its client and workspace.
struct Binary {
    server: ServerProcess,
    client: pb::conversation_service_client::ConversationServiceClient<Channel>,
    ws: Workspace,
    _dir: tempfile::TempDir,
}

impl Binary {
    async fn start(env: &[(&str, &str)]) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_database_url(&dir).await;
        let ws = seed_workspace(&connect(&url).await, "A").await;
        let server = ServerProcess::start(&url, env, dir.path()).await;
        let client = server.client().await;
        Binary {
            server,
            client,
            ws,
            _dir: dir,
        }
    }

    /// Stops the server (SIGTERM, so buffered spans are flushed) and
    /// returns its log.
    async fn stop(mut self) -> String {
        self.server.sigterm();
        self.server.wait_exit(Duration::from_secs(10)).await;
        self.server.log()
    }
}

fn create(token: &str, ws: &Workspace) -> tonic::Request<pb::CreateConversationRequest> {
    authed(
        token,
        pb::CreateConversationRequest {
            conversation: Some(email(ws)),
            request_id: String::new(),
        },
    )
}

#[tokio::test]
async fn logs_carry_request_ids_and_never_a_token() {
    let mut server = Binary::start(&[("LOG_FILTER", "trace")]).await;
    let ws = server.ws.clone();
    server
        .client
        .create_conversation(create(&ws.token, &ws))
        .await
        .expect("created");
    let denied = server
        .client
        .create_conversation(create(&ws.read_token, &ws))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let unknown = TokenSecret::generate();
    let refused = server
        .client
        .create_conversation(create(unknown.expose(), &ws))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let malformed = server
        .client
        .create_conversation(create("hdsk_malformed-token-value", &ws))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::Unauthenticated);

    let log = server.stop().await;
    let created = log
        .lines()
        .find(|line| line.contains("conversation created"))
        .unwrap_or_else(|| panic!("no creation line in {log}"));
    assert!(
        created.contains("request_id="),
        "a call's lines carry its request id: {created}"
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

#[tokio::test]
async fn json_log_lines_carry_the_request_and_trace_ids_and_no_token() {
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut server = Binary::start(&[
        ("LOG_FORMAT", "json"),
        ("LOG_FILTER", "debug"),
        ("METRICS_LISTEN", &metrics_addr.to_string()),
    ])
    .await;
    let ws = server.ws.clone();
    let mut request = create(&ws.token, &ws);
    request
        .metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("json-log-1"));
    request
        .metadata_mut()
        .insert("traceparent", MetadataValue::from_static(TRACEPARENT));
    server
        .client
        .create_conversation(request)
        .await
        .expect("created");
    // METRICS_LISTEN and LOG_FORMAT are the env twins of --metrics-listen and
    // --log-format.
    let metrics = scrape_metrics(metrics_addr).await;
    assert!(
        metrics.contains(r#"grpc_server_handled_total{grpc_type="unary",grpc_service="helpdesk.v1.ConversationService",grpc_method="CreateConversation",grpc_code="OK"} 1"#),
        "{metrics}"
    );

    let log = server.stop().await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let created = lines
        .iter()
        .find(|line| line["fields"]["message"] == "conversation created")
        .unwrap_or_else(|| panic!("no creation line in {log}"));
    assert_eq!(created["span"]["request_id"], "json-log-1", "{created}");
    assert_eq!(created["span"]["trace_id"], TRACE_ID, "{created}");
    assert_eq!(created["level"], "INFO");
    assert!(
        lines
            .iter()
            .any(|line| line["fields"]["message"] == "call finished"
                && line["span"]["request_id"] == "json-log-1"),
        "the call's end is logged with its id: {log}"
    );
    assert!(!log.contains(&ws.token), "a token reached the log");
}

/// A stand-in OTLP collector: hands every export to the test.
struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test]
async fn spans_join_the_callers_trace_and_go_out_by_otlp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    let (tx, mut exports) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let endpoint = format!("http://{collector_addr}");
    let mut server = Binary::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        // No batch goes out on its own during the test: the span must
        // come from the flush at shutdown.
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ("OTEL_SERVICE_NAME", "conversation-service-under-test"),
    ])
    .await;
    let ws = server.ws.clone();
    let mut request = create(&ws.token, &ws);
    request
        .metadata_mut()
        .insert("traceparent", MetadataValue::from_static(TRACEPARENT));
    request
        .metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("otlp-1"));
    server
        .client
        .create_conversation(request)
        .await
        .expect("created");
    let log = server.stop().await;

    let call = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let export = exports.recv().await.expect("collector running");
            for resource in export.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.clone());
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        if span.name == "helpdesk.v1.ConversationService/CreateConversation" {
                            return (service, span);
                        }
                    }
                }
            }
        }
    })
    .await
    .expect("the call's span was flushed at shutdown");

    let (service, span) = call;
    assert_eq!(
        hex::encode(&span.trace_id),
        TRACE_ID,
        "joins the caller's trace"
    );
    assert_eq!(hex::encode(&span.parent_span_id), PARENT_SPAN_ID);
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|value| value.value.clone())
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    assert_eq!(
        attribute("request_id"),
        Some(Value::StringValue("otlp-1".into()))
    );
    assert_eq!(
        attribute("rpc.system"),
        Some(Value::StringValue("grpc".into()))
    );
    assert_eq!(attribute("rpc.grpc.status_code"), Some(Value::IntValue(0)));
    assert_eq!(
        attribute("rpc.method"),
        Some(Value::StringValue("CreateConversation".into()))
    );
    assert_eq!(
        span.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );
    assert_eq!(
        service.and_then(|v| v.value),
        Some(Value::StringValue("conversation-service-under-test".into()))
    );
    assert!(!log.contains(&ws.token), "a token reached the log");
}
