//! Bearer-token authentication.
//!
//! tonic interceptors are synchronous, so the interceptor does no I/O: it
//! checks the token's shape and checksum, hashes it, and looks the hash up in
//! an in-memory table that a background task reloads from the database. A
//! token issued or revoked while the server runs takes effect at the next
//! reload. While the database is down the last table stays in force.

use std::{collections::HashMap, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use sea_orm::{DatabaseConnection, DbErr};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tonic::{Request, Status, metadata::MetadataMap, service::Interceptor};

use crate::db::{self, Db};
use crate::domain::auth::{Ability, Principal, is_well_formed, token_hash};
use crate::error::{AuthFailure, Error};

/// Verified tokens. They are found by the first 16 hex digits of their
/// SHA-256 (not secret on their own), and the whole digest is then compared
/// in constant time.
#[derive(Clone, Default)]
pub struct TokenTable {
    principals: Arc<ArcSwap<HashMap<String, Candidates>>>,
}

/// The tokens whose digests share a lookup prefix: (full digest, principal).
type Candidates = Vec<(String, Principal)>;

const LOOKUP_PREFIX: usize = 16;

impl TokenTable {
    /// Loads the table once; the server refuses to start without it.
    pub async fn load(db: &DatabaseConnection) -> Result<Self, DbErr> {
        let table = TokenTable::default();
        table.reload(db).await?;
        Ok(table)
    }

    async fn reload(&self, db: &DatabaseConnection) -> Result<(), DbErr> {
        let mut table: HashMap<String, Candidates> = HashMap::new();
        for (hash, principal) in db::token::active_principals(db).await? {
            table
                .entry(hash[..LOOKUP_PREFIX].to_owned())
                .or_default()
                .push((hash, principal));
        }
        self.principals.store(Arc::new(table));
        Ok(())
    }

    /// Reloads every `interval` until `stop` turns true.
    pub async fn refresh(self, db: Db, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            if let Err(err) = self.reload(&db).await {
                tracing::warn!(error = %err, "token reload failed; keeping the tokens already verified");
            }
        }
    }

    fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, AuthFailure> {
        let token = bearer_token(metadata)?;
        if !is_well_formed(token) {
            return Err(AuthFailure::Malformed);
        }
        let hash = token_hash(token);
        let table = self.principals.load();
        let candidates = table
            .get(&hash[..LOOKUP_PREFIX])
            .ok_or(AuthFailure::Invalid)?;
        candidates
            .iter()
            .find(|(stored, _)| bool::from(stored.as_bytes().ct_eq(hash.as_bytes())))
            .map(|(_, principal)| *principal)
            .ok_or(AuthFailure::Invalid)
    }
}

/// The token of an `authorization: Bearer <token>` header. A header that is
/// there but is not a bearer token (or not ASCII) is malformed, not missing.
fn bearer_token(metadata: &MetadataMap) -> Result<&str, AuthFailure> {
    let value = metadata.get("authorization").ok_or(AuthFailure::Missing)?;
    let value = value.to_str().map_err(|_| AuthFailure::Malformed)?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
        _ => Err(AuthFailure::Malformed),
    }
}

/// The interceptor in front of ConversationService. It stores the caller's
/// [`Principal`] in the request extensions for the handlers.
#[derive(Clone)]
pub struct Authenticator {
    tokens: TokenTable,
}

impl Authenticator {
    pub fn new(tokens: TokenTable) -> Self {
        Self { tokens }
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.tokens.authenticate(request.metadata()) {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                Ok(request)
            }
            Err(failure) => {
                // The reason only; never the token.
                tracing::info!(reason = ?failure, "unauthenticated call");
                Err(Error::Unauthenticated(failure).into())
            }
        }
    }
}

/// The caller, if its token has `ability`. Get and List need read, Create and
/// Update need write; neither implies the other.
pub fn authorize<T>(request: &Request<T>, ability: Ability) -> Result<Principal, Error> {
    let principal = request
        .extensions()
        .get::<Principal>()
        .copied()
        .ok_or(Error::Unauthenticated(AuthFailure::Missing))?;
    if principal.abilities.allows(ability) {
        Ok(principal)
    } else {
        Err(Error::AbilityMissing(ability))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", MetadataValue::try_from(value).unwrap());
        map
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(&metadata("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(&metadata("bearer abc")), Ok("abc"));
        assert_eq!(
            bearer_token(&metadata("Basic abc")),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            bearer_token(&metadata("Bearer")),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(bearer_token(&MetadataMap::new()), Err(AuthFailure::Missing));
    }

    #[test]
    fn malformed_tokens_fail_before_any_lookup() {
        let table = TokenTable::default();
        assert_eq!(
            table.authenticate(&MetadataMap::new()),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            table.authenticate(&metadata("Bearer nope")),
            Err(AuthFailure::Malformed)
        );
        let token = crate::domain::auth::TokenSecret::generate();
        let header = format!("Bearer {}", token.expose());
        assert_eq!(
            table.authenticate(&metadata(&header)),
            Err(AuthFailure::Invalid)
        );
    }
}
