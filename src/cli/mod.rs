//! The binary's commands. Each prints only the new id or token on stdout (or
//! nothing), so scripts can capture it; messages go to stderr. Each applies
//! pending migrations first, so any of them works on a new database.

mod demo;

use anyhow::{Context, bail};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::config::{
    AgentCommand, AgentKindArg, Command, Config, CustomerCommand, ServeArgs, TokenCommand,
    UserCommand, WorkspaceCommand,
};
use crate::db::{self, Db, DbSettings, directory, error::is_unique_violation, token::TokenRef};
use crate::domain::AgentKind;
use crate::grpc::server::{Listeners, ServeSettings, serve};

pub async fn run(config: Config) -> anyhow::Result<()> {
    let db = db::connect(&config.db_settings())
        .await
        .context("cannot connect to the database")?;
    db::migrate(&db).await.context("cannot apply migrations")?;
    let db_settings = config.db_settings();
    match config.command {
        Command::Serve(args) => run_server(db, db_settings, args).await,
        Command::Migrate => Ok(()),
        Command::Workspace(WorkspaceCommand::Create { name }) => {
            let name = required_text("--name", &name)?;
            print_id(directory::create_workspace(&db, name).await?)
        }
        Command::User(UserCommand::Create {
            workspace,
            email,
            name,
        }) => {
            ensure_workspace(&db, workspace).await?;
            let email = checked_email(&email)?;
            let created = directory::create_user(&db, workspace, email, name.as_deref()).await;
            print_id(unique(created, || {
                format!("a user with email {email} already exists in this workspace")
            })?)
        }
        Command::Customer(CustomerCommand::Create {
            workspace,
            email,
            name,
        }) => {
            ensure_workspace(&db, workspace).await?;
            let email = checked_email(&email)?;
            let created = directory::create_customer(&db, workspace, email, name.as_deref()).await;
            print_id(unique(created, || {
                format!("a customer with email {email} already exists in this workspace")
            })?)
        }
        Command::Agent(AgentCommand::Create {
            workspace,
            kind,
            active,
            name,
        }) => {
            ensure_workspace(&db, workspace).await?;
            let kind = match kind {
                AgentKindArg::Chat => AgentKind::Chat,
                AgentKindArg::Email => AgentKind::Email,
            };
            print_id(directory::create_agent(&db, workspace, kind, active, name.as_deref()).await?)
        }
        Command::Token(TokenCommand::Issue {
            workspace,
            abilities,
            name,
        }) => {
            ensure_workspace(&db, workspace).await?;
            let (_, secret) = db::token::issue(&db, workspace, abilities, name.as_deref()).await?;
            println!("{}", secret.expose());
            Ok(())
        }
        Command::Token(TokenCommand::List { workspace }) => {
            ensure_workspace(&db, workspace).await?;
            for token in db::token::list(&db, workspace).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    token.id,
                    token.name.as_deref().unwrap_or("-"),
                    token.abilities,
                    token.created_at.to_rfc3339(),
                    token
                        .revoked_at
                        .map_or_else(|| "-".to_owned(), |at| at.to_rfc3339()),
                );
            }
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { token, token_id }) => {
            let reference = match (&token, token_id) {
                (Some(secret), _) => TokenRef::Secret(secret),
                (None, Some(id)) => TokenRef::Id(id),
                (None, None) => bail!("give --token or --token-id"),
            };
            if !db::token::revoke(&db, reference).await? {
                bail!("no such token");
            }
            Ok(())
        }
    }
}

async fn run_server(db: Db, db_settings: DbSettings, args: ServeArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let metrics = match args.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?,
        ),
        None => None,
    };
    if args.demo {
        let demo = demo::seed(&db)
            .await
            .context("cannot seed the demo workspace")?;
        print!("{}", demo.banner(listener.local_addr()?));
    }
    let settings = ServeSettings {
        shutdown_grace: args.shutdown_grace,
        token_refresh_interval: args.token_refresh_interval,
        health_check_interval: args.health_check_interval,
        concurrency_limit: args.concurrency_limit as usize,
        request_timeout: args.request_timeout,
        max_message_size: args.max_message_size,
        http2_keepalive_interval: args.http2_keepalive_interval,
        http2_keepalive_timeout: args.http2_keepalive_timeout,
    };
    // The server opens its own pools; this one was for migrations and the demo.
    db.close().await?;
    let listeners = Listeners {
        grpc: listener,
        metrics,
    };
    serve(&db_settings, settings, listeners, shutdown_signal()).await
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

fn print_id(id: Uuid) -> anyhow::Result<()> {
    println!("{id}");
    Ok(())
}

async fn ensure_workspace(db: &DatabaseConnection, id: Uuid) -> anyhow::Result<()> {
    if !directory::workspace_exists(db, id).await? {
        bail!("workspace {id} does not exist");
    }
    Ok(())
}

fn unique<T>(result: Result<T, DbErr>, message: impl FnOnce() -> String) -> anyhow::Result<T> {
    match result {
        Err(err) if is_unique_violation(&err) => bail!(message()),
        other => Ok(other?),
    }
}

fn required_text<'a>(flag: &str, value: &'a str) -> anyhow::Result<&'a str> {
    let value = value.trim();
    if value.is_empty() {
        bail!("{flag} must not be empty");
    }
    Ok(value)
}

/// A deliberately loose check: one `@` with text on both sides, no spaces.
fn checked_email(email: &str) -> anyhow::Result<&str> {
    let email = email.trim();
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !email.contains(char::is_whitespace) =>
        {
            Ok(email)
        }
        _ => bail!("`{email}` is not an email address"),
    }
}
