//! Command-line flags. Every serving flag has an environment-variable twin.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use uuid::Uuid;

use crate::db::DbSettings;
use crate::domain::auth::Abilities;

/// The embedded default: an SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://conversation-service.db";

#[derive(Debug, Parser)]
#[command(
    name = "conversation-service",
    version,
    about = "gRPC service that owns helpdesk conversations"
)]
pub struct Config {
    /// Database URL: `sqlite://PATH` (embedded, created if missing) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB`.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    pub database_url: String,

    /// Most connections in each database pool (SeaORM's, and the direct
    /// connections of the hot calls).
    #[arg(
        long,
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub database_max_connections: u32,

    /// How long to wait for a database connection before a call fails with
    /// UNAVAILABLE (e.g. `3s`, `500ms`).
    #[arg(long, env = "DATABASE_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration, global = true)]
    pub database_timeout: Duration,

    /// SQLite only: how long a write waits while another process (the CLI
    /// while `serve` runs) holds the write lock, before it fails with
    /// UNAVAILABLE. Writers of one process take turns without waiting here.
    /// Meanwhile the blocked write holds the process's one writer
    /// connection and the other writes wait `--database-timeout` for it, so
    /// the default is the same 3 s: every write fails within about that
    /// bound, none after 30 s.
    #[arg(long, env = "DATABASE_BUSY_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration, global = true)]
    pub database_busy_timeout: Duration,

    /// Log filter, in tracing's EnvFilter syntax. Logs go to stderr.
    #[arg(
        long,
        env = "LOG_FILTER",
        default_value = "info,sqlx=warn,sea_orm_migration=warn",
        global = true
    )]
    pub log_filter: String,

    /// Log format on stderr: `text` (for people) or `json` (one object per
    /// line, for log pipelines).
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

impl Config {
    pub fn db_settings(&self) -> DbSettings {
        DbSettings {
            url: self.database_url.clone(),
            max_connections: self.database_max_connections,
            acquire_timeout: self.database_timeout,
            sqlite_busy_timeout: self.database_busy_timeout,
            lock_timeout: None,
        }
    }
}

/// See [`Config::log_format`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API (applies pending migrations first).
    Serve(ServeArgs),
    /// Apply pending migrations and exit.
    Migrate,
    /// Manage workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Manage users (staff) of a workspace.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage automated agents of a workspace.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage customers of a workspace.
    #[command(subcommand)]
    Customer(CustomerCommand),
    /// Issue, list and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Address for Prometheus metrics (`GET /metrics`); none are served
    /// when unset.
    #[arg(long, env = "METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Seed a demo workspace (if absent) and print a token and a grpcurl call.
    #[arg(long, env = "DEMO")]
    pub demo: bool,

    /// Once SIGTERM or SIGINT arrives, how long calls in flight may take
    /// before the remaining connections are closed.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// How often verified tokens are reloaded; issued and revoked tokens take
    /// effect within this interval.
    #[arg(long, env = "TOKEN_REFRESH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub token_refresh_interval: Duration,

    /// How often the database is pinged to report health.
    #[arg(long, env = "HEALTH_CHECK_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub health_check_interval: Duration,

    /// Calls running at once; one more is shed at once with
    /// RESOURCE_EXHAUSTED rather than queued. Health and reflection are exempt.
    #[arg(long, env = "CONCURRENCY_LIMIT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency_limit: u32,

    /// Longest a call may run before it is answered DEADLINE_EXCEEDED (its
    /// transaction rolls back).
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Largest request message accepted, in bytes; a larger one is refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_MESSAGE_SIZE", default_value_t = 4 * 1024 * 1024)]
    pub max_message_size: usize,

    /// How often an idle HTTP/2 connection is pinged.
    #[arg(long, env = "HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_interval: Duration,

    /// How long a keepalive ping may go unanswered before the connection is
    /// closed.
    #[arg(long, env = "HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace; prints its id.
    Create {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; prints its id.
    Create {
        #[arg(long)]
        workspace: Uuid,
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AgentKindArg {
    Chat,
    Email,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent; prints its id. `--kind email --active` makes it the
    /// workspace's active email agent, and the previous one inactive.
    Create {
        #[arg(long)]
        workspace: Uuid,
        #[arg(long, value_enum)]
        kind: AgentKindArg,
        #[arg(long)]
        active: bool,
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Create a customer; prints its id.
    Create {
        #[arg(long)]
        workspace: Uuid,
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token; prints the secret, which is shown this once only.
    Issue {
        #[arg(long)]
        workspace: Uuid,
        /// Comma-separated: external-api:read, external-api:write.
        #[arg(long, value_parser = Abilities::parse_list)]
        abilities: Abilities,
        #[arg(long)]
        name: Option<String>,
    },
    /// List a workspace's tokens (never their secrets), tab-separated:
    /// id, name, abilities, created, revoked.
    List {
        #[arg(long)]
        workspace: Uuid,
    },
    /// Revoke a token by its secret or its id. Prints nothing.
    Revoke {
        #[arg(
            long,
            required_unless_present = "token_id",
            conflicts_with = "token_id"
        )]
        token: Option<String>,
        #[arg(long)]
        token_id: Option<Uuid>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The declared default of a global flag (not what the environment
    /// happens to set).
    fn default_of(id: &str) -> String {
        let command = Config::command();
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_id() == id)
            .unwrap_or_else(|| panic!("no flag {id}"));
        arg.get_default_values()[0].to_string_lossy().into_owned()
    }

    #[test]
    fn a_write_blocked_by_another_process_gives_up_with_the_others() {
        assert_eq!(
            default_of("database_busy_timeout"),
            default_of("database_timeout")
        );
    }
}
