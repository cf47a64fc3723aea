//! `serve --demo`: a workspace to try the service with, and a token for it.

use std::{fmt::Write as _, net::SocketAddr};

use uuid::Uuid;

use crate::db::{self, Db, directory};
use crate::domain::{
    AgentKind,
    auth::{Abilities, TokenSecret},
};

const DEMO_WORKSPACE: &str = "Demo workspace";
const DEMO_CUSTOMER_EMAIL: &str = "customer@demo.example";

pub struct Demo {
    workspace: Uuid,
    customer: Uuid,
    token: TokenSecret,
}

/// Creates the demo workspace with a user, a chat agent, an active email
/// agent and a customer, unless it exists; then issues a fresh read+write
/// token for it.
pub async fn seed(db: &Db) -> anyhow::Result<Demo> {
    let (workspace, customer) = match directory::find_workspace_by_name(db, DEMO_WORKSPACE).await? {
        Some(workspace) => {
            let customer = directory::find_customer_by_email(db, workspace, DEMO_CUSTOMER_EMAIL)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the demo workspace has lost its customer"))?;
            (workspace, customer)
        }
        None => {
            let workspace = directory::create_workspace(db, DEMO_WORKSPACE).await?;
            directory::create_user(db, workspace, "agent@demo.example", Some("Demo Agent")).await?;
            directory::create_agent(db, workspace, AgentKind::Chat, true, Some("Demo chat bot"))
                .await?;
            directory::create_agent(
                db,
                workspace,
                AgentKind::Email,
                true,
                Some("Demo email bot"),
            )
            .await?;
            let customer = directory::create_customer(
                db,
                workspace,
                DEMO_CUSTOMER_EMAIL,
                Some("Demo Customer"),
            )
            .await?;
            (workspace, customer)
        }
    };
    let abilities = Abilities {
        read: true,
        write: true,
    };
    let (_, token) = db::token::issue(db, workspace, abilities, Some("demo")).await?;
    Ok(Demo {
        workspace,
        customer,
        token,
    })
}

impl Demo {
    pub fn banner(&self, listening: SocketAddr) -> String {
        let mut address = listening;
        if address.ip().is_unspecified() {
            address.set_ip([127, 0, 0, 1].into());
        }
        let token = self.token.expose();
        let body = format!(
            r#"{{"conversation": {{"channel": "CHANNEL_EMAIL", "customer_id": "{}", "subject": "Hello from the demo"}}}}"#,
            self.customer
        );
        let mut out = String::new();
        let _ = writeln!(out, "conversation-service demo");
        let _ = writeln!(out, "  workspace: {}", self.workspace);
        let _ = writeln!(out, "  customer:  {}", self.customer);
        let _ = writeln!(out, "  token:     {token}  (read+write, shown once)");
        let _ = writeln!(out);
        let _ = writeln!(out, "Create a conversation:");
        let _ = writeln!(
            out,
            "  grpcurl -plaintext -H 'authorization: Bearer {token}' -d '{body}' {address} helpdesk.v1.ConversationService/CreateConversation"
        );
        out
    }
}
