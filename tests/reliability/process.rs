//! `serve` as a child process, the way it runs in production.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use conversation_service::proto::v1::{
    self as pb, conversation_service_client::ConversationServiceClient,
};
use tonic::transport::Channel;

use crate::helpers::{Workspace, authed, email};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

pub struct ServerProcess {
    pub addr: SocketAddr,
    database_url: String,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ServerProcess {
    /// Starts `serve` on a free port and waits until health says SERVING.
    pub async fn start(
        database_url: &str,
        env: &[(&str, &str)],
        log_dir: &std::path::Path,
    ) -> ServerProcess {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut server = ServerProcess {
            addr,
            database_url: database_url.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: log_dir.join(format!("server-{}.log", addr.port())),
            child: None,
        };
        server.launch().await;
        server
    }

    async fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_conversation-service"));
        command
            .args(["serve", "--listen", &self.addr.to_string()])
            // Only what the test asks for: nothing inherited from the shell.
            .env_remove("METRICS_LISTEN")
            .env_remove("LOG_FORMAT")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env("DATABASE_URL", &self.database_url)
            .env("TOKEN_REFRESH_INTERVAL", "200ms")
            .env("HEALTH_CHECK_INTERVAL", "200ms")
            .env("SHUTDOWN_GRACE", "3s")
            .env("LOG_FILTER", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        self.child = Some(command.spawn().expect("start serve"));
        let started = Instant::now();
        while self.health().await != Some(ServingStatus::Serving) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "serve did not come up; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the process has written to stderr (its log) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn client(&self) -> ConversationServiceClient<Channel> {
        ConversationServiceClient::new(self.channel().await)
    }

    /// Creates a plain email conversation of `ws` through this server.
    pub async fn create_email(&self, ws: &Workspace) -> pb::Conversation {
        let request = pb::CreateConversationRequest {
            conversation: Some(email(ws)),
            request_id: String::new(),
        };
        let response = self
            .client()
            .await
            .create_conversation(authed(&ws.token, request))
            .await;
        response
            .expect("create")
            .into_inner()
            .conversation
            .expect("a conversation")
    }

    /// The overall health, or `None` when the server does not answer.
    pub async fn health(&self) -> Option<ServingStatus> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_timeout(Duration::from_millis(500))
            .connect()
            .await
            .ok()?;
        let request = HealthCheckRequest {
            service: String::new(),
        };
        let answer = tokio::time::timeout(
            Duration::from_secs(1),
            HealthClient::new(channel).check(request),
        )
        .await;
        Some(answer.ok()?.ok()?.into_inner().status())
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns how long it took.
    pub async fn wait_exit(&mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "serve exited with {status}; see {}",
                    self.log.display()
                );
                self.child = None;
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "serve did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, wait, start again on the same port.
    pub async fn restart(&mut self) {
        self.sigterm();
        self.wait_exit(Duration::from_secs(10)).await;
        self.launch().await;
    }

    /// Peak resident memory of the process so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
