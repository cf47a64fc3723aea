//! The admin commands, run as a script would run them.

use std::process::{Command, Output};

use uuid::Uuid;

use crate::helpers::fresh_database_url;

struct Cli {
    url: String,
    _dir: tempfile::TempDir,
}

impl Cli {
    async fn new() -> Cli {
        let dir = tempfile::tempdir().unwrap();
        Cli {
            url: fresh_database_url(&dir).await,
            _dir: dir,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_conversation-service"))
            .args(args)
            .env("DATABASE_URL", &self.url)
            .env("LOG_FILTER", "warn")
            .output()
            .expect("run the binary")
    }

    /// Runs a command that must succeed and print one line; returns it.
    fn line(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(stdout.lines().count(), 1, "{args:?} printed {stdout:?}");
        stdout.trim().to_owned()
    }

    fn fails(&self, args: &[&str], message: &str) {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(out.stdout.is_empty(), "nothing on stdout when failing");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(message),
            "{args:?}: {stderr:?} should mention {message:?}"
        );
    }
}

#[tokio::test]
async fn each_command_prints_only_the_new_id_or_token() {
    let cli = Cli::new().await;
    let out = cli.run(&["migrate"]);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "migrate prints nothing"
    );

    let workspace = cli.line(&["workspace", "create", "--name", "Acme"]);
    Uuid::parse_str(&workspace).expect("a UUID");
    for args in [
        vec![
            "user",
            "create",
            "--workspace",
            &workspace,
            "--email",
            "a@acme.test",
            "--name",
            "Ann",
        ],
        vec![
            "customer",
            "create",
            "--workspace",
            &workspace,
            "--email",
            "c@acme.test",
        ],
        vec![
            "agent",
            "create",
            "--workspace",
            &workspace,
            "--kind",
            "chat",
        ],
        vec![
            "agent",
            "create",
            "--workspace",
            &workspace,
            "--kind",
            "email",
            "--active",
        ],
    ] {
        Uuid::parse_str(&cli.line(&args)).expect("a UUID");
    }

    let token = cli.line(&[
        "token",
        "issue",
        "--workspace",
        &workspace,
        "--abilities",
        "external-api:read,external-api:write",
        "--name",
        "ci",
    ]);
    assert!(
        conversation_service::domain::auth::is_well_formed(&token),
        "{token}"
    );

    let list = cli.run(&["token", "list", "--workspace", &workspace]);
    let listing = String::from_utf8(list.stdout).unwrap();
    assert!(
        listing.contains("ci\texternal-api:read,external-api:write"),
        "{listing}"
    );
    assert!(!listing.contains(&token), "the secret is never listed");
    assert!(
        listing.trim_end().ends_with("\t-"),
        "not revoked yet: {listing}"
    );

    let out = cli.run(&["token", "revoke", "--token", &token]);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "revoke prints nothing"
    );
    let listing = String::from_utf8(
        cli.run(&["token", "list", "--workspace", &workspace])
            .stdout,
    )
    .unwrap();
    assert!(!listing.trim_end().ends_with("\t-"), "revoked: {listing}");
}

#[tokio::test]
async fn bad_input_gets_a_clear_message_and_a_failing_exit() {
    let cli = Cli::new().await;
    let missing = Uuid::new_v4().to_string();
    cli.fails(
        &[
            "user",
            "create",
            "--workspace",
            &missing,
            "--email",
            "a@b.c",
        ],
        "does not exist",
    );
    cli.fails(
        &["user", "create", "--workspace", "nope", "--email", "a@b.c"],
        "invalid value",
    );
    cli.fails(
        &["agent", "create", "--workspace", &missing, "--kind", "fax"],
        "invalid value",
    );
    cli.fails(
        &[
            "token",
            "issue",
            "--workspace",
            &missing,
            "--abilities",
            "admin",
        ],
        "unknown ability",
    );
    cli.fails(
        &["token", "revoke", "--token-id", &missing],
        "no such token",
    );
    cli.fails(
        &["workspace", "create", "--name", "  "],
        "must not be empty",
    );

    let workspace = cli.line(&["workspace", "create", "--name", "Acme"]);
    cli.fails(
        &[
            "customer",
            "create",
            "--workspace",
            &workspace,
            "--email",
            "not-an-email",
        ],
        "not an email",
    );
    cli.line(&[
        "user",
        "create",
        "--workspace",
        &workspace,
        "--email",
        "a@acme.test",
    ]);
    cli.fails(
        &[
            "user",
            "create",
            "--workspace",
            &workspace,
            "--email",
            "a@acme.test",
        ],
        "already exists",
    );
}

#[tokio::test]
async fn a_new_active_email_agent_deactivates_the_previous_one() {
    let cli = Cli::new().await;
    let workspace = cli.line(&["workspace", "create", "--name", "Acme"]);
    let first = cli.line(&[
        "agent",
        "create",
        "--workspace",
        &workspace,
        "--kind",
        "email",
        "--active",
    ]);
    let second = cli.line(&[
        "agent",
        "create",
        "--workspace",
        &workspace,
        "--kind",
        "email",
        "--active",
    ]);

    let db = crate::helpers::connect(&cli.url).await;
    use sea_orm::EntityTrait;
    let agents = conversation_service::db::entity::agent::Entity::find()
        .all(&*db)
        .await
        .unwrap();
    let active: Vec<String> = agents
        .iter()
        .filter(|a| a.active)
        .map(|a| a.id.to_string())
        .collect();
    assert_eq!(
        active,
        vec![second],
        "only the newest email agent is active (first was {first})"
    );
}
