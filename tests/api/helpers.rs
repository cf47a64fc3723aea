//! Test harness: a real server per test on an ephemeral port, over a fresh
//! database. SQLite by default; with `TEST_POSTGRES_URL` set (an admin URL of
//! a role that may create databases), each test gets a new PostgreSQL
//! database instead.

use std::{net::SocketAddr, time::Duration};

use conversation_service::{
    Listeners, ServeSettings,
    db::{self, Db, DbSettings, directory},
    domain::{AgentKind, auth::Abilities},
    proto::v1::{self as pb, conversation_service_client::ConversationServiceClient},
    serve,
};
use prost_types::FieldMask;
use sea_orm::{ConnectionTrait, Database};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{Code, Request, Status, transport::Channel};
use tonic_types::StatusExt;
use uuid::Uuid;

/// The Prometheus exposition text at `addr`, fetched over plain HTTP/1.1.
pub async fn scrape_metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics listener");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    body.to_owned()
}

/// One seeded workspace: its directory entries and tokens.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub id: Uuid,
    pub customer: Uuid,
    pub user: Uuid,
    pub chat_agent: Uuid,
    pub email_agent: Uuid,
    /// read + write
    pub token: String,
    pub read_token: String,
    pub write_token: String,
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// Where `GET /metrics` answers.
    pub metrics_addr: SocketAddr,
    pub db: Db,
    pub database_url: String,
    /// The caller's workspace.
    pub a: Workspace,
    /// Another tenant, for cross-workspace tests.
    pub b: Workspace,
    settings: ServeSettings,
    /// The server's database settings.
    database: DbSettings,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

pub fn settings() -> ServeSettings {
    ServeSettings {
        shutdown_grace: Duration::from_secs(2),
        token_refresh_interval: Duration::from_millis(100),
        health_check_interval: Duration::from_millis(200),
        ..ServeSettings::default()
    }
}

/// A URL of a database nobody else uses.
pub async fn fresh_database_url(dir: &tempfile::TempDir) -> String {
    match std::env::var("TEST_POSTGRES_URL") {
        Ok(admin_url) if !admin_url.is_empty() => {
            let name = format!("cs_test_{}", Uuid::new_v4().simple());
            let admin = Database::connect(admin_url.as_str())
                .await
                .expect("connect TEST_POSTGRES_URL");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            admin.close().await.ok();
            let (base, _) = admin_url
                .rsplit_once('/')
                .expect("TEST_POSTGRES_URL ends in /DBNAME");
            format!("{base}/{name}")
        }
        _ => format!("sqlite://{}", dir.path().join("test.db").display()),
    }
}

pub fn db_settings(url: &str) -> DbSettings {
    DbSettings {
        url: url.to_owned(),
        max_connections: 8,
        acquire_timeout: Duration::from_secs(10),
        sqlite_busy_timeout: Duration::from_secs(30),
        lock_timeout: None,
    }
}

pub async fn connect(url: &str) -> Db {
    let db = db::connect(&db_settings(url))
        .await
        .expect("connect to the test database");
    db::migrate(&db).await.expect("migrate the test database");
    db
}

pub async fn seed_workspace(db: &Db, name: &str) -> Workspace {
    let id = directory::create_workspace(db, name).await.unwrap();
    let customer = directory::create_customer(db, id, "customer@example.com", None)
        .await
        .unwrap();
    let user = directory::create_user(db, id, "staff@example.com", None)
        .await
        .unwrap();
    let chat_agent = directory::create_agent(db, id, AgentKind::Chat, true, None)
        .await
        .unwrap();
    let email_agent = directory::create_agent(db, id, AgentKind::Email, true, None)
        .await
        .unwrap();
    let issue = |read, write| {
        let db = db.clone();
        async move {
            let (_, secret) = db::token::issue(&db, id, Abilities { read, write }, None)
                .await
                .unwrap();
            secret.expose().to_owned()
        }
    };
    Workspace {
        id,
        customer,
        user,
        chat_agent,
        email_agent,
        token: issue(true, true).await,
        read_token: issue(true, false).await,
        write_token: issue(false, true).await,
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(settings()).await
    }

    pub async fn spawn_with(settings: ServeSettings) -> TestApp {
        Self::spawn_with_database(settings, |_| ()).await
    }

    /// A server whose database settings `adjust` changes (the test's own pool
    /// keeps the defaults).
    pub async fn spawn_with_database(
        settings: ServeSettings,
        adjust: impl FnOnce(&mut DbSettings),
    ) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let database_url = fresh_database_url(&dir).await;
        let mut database = db_settings(&database_url);
        adjust(&mut database);
        let db = connect(&database_url).await;
        let a = seed_workspace(&db, "A").await;
        let b = seed_workspace(&db, "B").await;
        let mut app = TestApp {
            addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            db,
            database_url,
            a,
            b,
            settings,
            database,
            shutdown: None,
            server: None,
            _dir: dir,
        };
        app.start().await;
        app
    }

    async fn start(&mut self) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.addr = listener.local_addr().unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.metrics_addr = metrics.local_addr().unwrap();
        let listeners = Listeners {
            grpc: listener,
            metrics: Some(metrics),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let database = self.database.clone();
        let settings = self.settings.clone();
        self.server = Some(tokio::spawn(async move {
            serve(&database, settings, listeners, async {
                let _ = rx.await;
            })
            .await
        }));
        self.shutdown = Some(tx);
    }

    /// Stops the server and starts a new one on the same database, as a
    /// process restart would.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect to the test server")
    }

    /// This server's Prometheus exposition text.
    pub async fn scrape_metrics(&self) -> String {
        scrape_metrics(self.metrics_addr).await
    }

    pub async fn client(&self) -> ConversationServiceClient<Channel> {
        ConversationServiceClient::new(self.channel().await)
    }

    pub async fn create(
        &self,
        token: &str,
        conversation: pb::Conversation,
    ) -> Result<pb::Conversation, Status> {
        self.create_with_request_id(token, conversation, "").await
    }

    pub async fn create_with_request_id(
        &self,
        token: &str,
        conversation: pb::Conversation,
        request_id: &str,
    ) -> Result<pb::Conversation, Status> {
        let request = pb::CreateConversationRequest {
            conversation: Some(conversation),
            request_id: request_id.to_owned(),
        };
        let response = self
            .client()
            .await
            .create_conversation(authed(token, request))
            .await?;
        Ok(response.into_inner().conversation.expect("a conversation"))
    }

    /// `mask: None` sends no mask at all.
    pub async fn update(
        &self,
        token: &str,
        conversation: pb::Conversation,
        mask: Option<&[&str]>,
    ) -> Result<pb::Conversation, Status> {
        let request = pb::UpdateConversationRequest {
            conversation: Some(conversation),
            update_mask: mask.map(|paths| FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        };
        let response = self
            .client()
            .await
            .update_conversation(authed(token, request))
            .await?;
        Ok(response.into_inner().conversation.expect("a conversation"))
    }

    pub async fn get(&self, token: &str, id: &str) -> Result<pb::Conversation, Status> {
        let request = pb::GetConversationRequest { id: id.to_owned() };
        let response = self
            .client()
            .await
            .get_conversation(authed(token, request))
            .await?;
        Ok(response.into_inner().conversation.expect("a conversation"))
    }

    /// An email conversation of workspace A, created with defaults.
    pub async fn create_email(&self) -> pb::Conversation {
        self.create(&self.a.token, email(&self.a))
            .await
            .expect("create")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A minimal valid email conversation for `ws`.
pub fn email(ws: &Workspace) -> pb::Conversation {
    pb::Conversation {
        channel: pb::Channel::Email as i32,
        customer_id: ws.customer.to_string(),
        ..Default::default()
    }
}

/// A minimal valid chat conversation for `ws`, started by its chat agent.
pub fn chat(ws: &Workspace) -> pb::Conversation {
    pb::Conversation {
        channel: pb::Channel::Chat as i32,
        customer_id: ws.customer.to_string(),
        origin_agent_id: Some(ws.chat_agent.to_string()),
        ..Default::default()
    }
}

/// Just the id (and optionally more) for an update.
pub fn with_id(id: &str) -> pb::Conversation {
    pb::Conversation {
        id: id.to_owned(),
        ..Default::default()
    }
}

pub fn reason(status: &Status) -> String {
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .expect("every error carries an ErrorInfo");
    assert_eq!(info.domain, "conversation-service");
    info.reason
}

/// Asserts INVALID_ARGUMENT whose BadRequest names exactly `fields` (in any
/// order, duplicates counted once) and returns the descriptions.
#[track_caller]
pub fn assert_invalid(result: Result<pb::Conversation, Status>, fields: &[&str]) -> Vec<String> {
    let status = result.expect_err("expected INVALID_ARGUMENT");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason(&status), "INVALID_ARGUMENT");
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .expect("a BadRequest")
        .field_violations;
    let mut named: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    named.sort_unstable();
    named.dedup();
    let mut expected = fields.to_vec();
    expected.sort_unstable();
    assert_eq!(named, expected, "violations: {violations:?}");
    violations.iter().map(|v| v.description.clone()).collect()
}

#[track_caller]
pub fn assert_code(
    result: Result<pb::Conversation, Status>,
    code: Code,
    expected_reason: &str,
) -> Status {
    let status = result.expect_err("expected an error");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason(&status), expected_reason);
    status
}

pub fn ts(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

pub fn in_future(secs: i64) -> prost_types::Timestamp {
    ts(chrono::Utc::now() + chrono::Duration::seconds(secs))
}

/// Polls until `check` holds, for at most `limit`; returns how long it took.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// PostgreSQL: how many statements of the test's database wait for a lock.
pub async fn lock_waiters(app: &TestApp) -> i64 {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    let row = app
        .db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

/// Holds the row of the workspace `a`'s customer under a write lock until
/// the transaction ends: a create for that customer finds it held
/// (PostgreSQL; on SQLite the transaction holds the whole database).
pub async fn lock_customer(app: &TestApp) -> sea_orm::DatabaseTransaction {
    use conversation_service::db::{begin_write, entity::customer};
    use sea_orm::{EntityTrait, QuerySelect};

    let txn = begin_write(&app.db).await.unwrap();
    customer::Entity::find_by_id(app.a.customer)
        .lock_exclusive()
        .one(&txn)
        .await
        .unwrap();
    txn
}

/// Holds the write lock of `id` (the whole database on SQLite) until dropped,
/// so that an update of it waits: a call that is reliably in progress.
pub async fn lock_row(app: &TestApp, id: &str) -> sea_orm::DatabaseTransaction {
    use conversation_service::db::{begin_write, entity::conversation};
    use sea_orm::{EntityTrait, QuerySelect};

    let txn = begin_write(&app.db).await.unwrap();
    conversation::Entity::find_by_id(Uuid::parse_str(id).unwrap())
        .lock_exclusive()
        .one(&txn)
        .await
        .unwrap();
    txn
}
