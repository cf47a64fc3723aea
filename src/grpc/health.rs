//! Health: SERVING for `""` and `helpdesk.v1.ConversationService` while the
//! database answers, NOT_SERVING while it does not and from the moment
//! shutdown begins.

use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::proto::v1::conversation_service_server::ConversationServiceServer;

const SERVICE: &str =
    <ConversationServiceServer<super::service::ConversationApi> as NamedService>::NAME;

pub async fn report(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE, status).await;
}

/// Pings the database every `interval` (each ping bounded by the interval)
/// and reports changes, until `stop` turns true. The server reported SERVING
/// before starting this watcher; Watch streams see only real changes.
pub async fn watch_database(
    db: DatabaseConnection,
    reporter: HealthReporter,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = Some(ServingStatus::Serving);
    loop {
        let healthy = matches!(tokio::time::timeout(interval, db.ping()).await, Ok(Ok(())));
        let status = if healthy {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        // Shutdown wins over a ping that was in flight when it began.
        if *stop.borrow() {
            return;
        }
        if last != Some(status) {
            if healthy {
                tracing::info!("database answers; health SERVING");
            } else {
                tracing::warn!("database does not answer; health NOT_SERVING");
            }
            report(&reporter, status).await;
            last = Some(status);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}
