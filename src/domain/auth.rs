//! API tokens and what they allow.
//!
//! A token reads `hdsk_` followed by 30 random base62 characters and a
//! 6-character base62 CRC-32 of those 30. The fixed prefix lets secret
//! scanners recognise a leaked token; the checksum lets the service refuse a
//! mistyped or made-up token without looking it up. Only the SHA-256 of a
//! token is stored.

use std::fmt;

use rand::{Rng, distr::Alphanumeric};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const TOKEN_PREFIX: &str = "hdsk_";
const RANDOM_LEN: usize = 30;
const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Something a token may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ability {
    Read,
    Write,
}

impl Ability {
    pub fn as_str(self) -> &'static str {
        match self {
            Ability::Read => "external-api:read",
            Ability::Write => "external-api:write",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "external-api:read" => Some(Ability::Read),
            "external-api:write" => Some(Ability::Write),
            _ => None,
        }
    }
}

impl fmt::Display for Ability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The abilities of one token. Neither implies the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Abilities {
    pub read: bool,
    pub write: bool,
}

impl Abilities {
    pub fn allows(self, ability: Ability) -> bool {
        match ability {
            Ability::Read => self.read,
            Ability::Write => self.write,
        }
    }

    /// Parses a comma-separated list such as `external-api:read,external-api:write`.
    pub fn parse_list(list: &str) -> Result<Self, String> {
        let mut abilities = Abilities::default();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match Ability::parse(word) {
                Some(Ability::Read) => abilities.read = true,
                Some(Ability::Write) => abilities.write = true,
                None => {
                    return Err(format!(
                        "unknown ability `{word}` (expected external-api:read or external-api:write)"
                    ));
                }
            }
        }
        if abilities == Abilities::default() {
            return Err("at least one ability is required".into());
        }
        Ok(abilities)
    }
}

impl fmt::Display for Abilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = [(self.read, Ability::Read), (self.write, Ability::Write)]
            .into_iter()
            .filter_map(|(has, ability)| has.then_some(ability.as_str()))
            .collect();
        f.write_str(&words.join(","))
    }
}

/// Who is calling: the workspace and abilities of a verified token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub workspace_id: Uuid,
    pub token_id: Uuid,
    pub abilities: Abilities,
}

/// A newly issued token secret. Its `Debug` hides the secret so that it cannot
/// reach a log by accident.
pub struct TokenSecret(String);

impl TokenSecret {
    pub fn generate() -> Self {
        let random: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(RANDOM_LEN)
            .map(char::from)
            .collect();
        let checksum = checksum(&random);
        TokenSecret(format!("{TOKEN_PREFIX}{random}{checksum}"))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(..)")
    }
}

fn checksum(random: &str) -> String {
    let mut n = crc32fast::hash(random.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ASCII")
}

/// Whether `token` has the shape and checksum of a token this service issues.
pub fn is_well_formed(token: &str) -> bool {
    let Some(body) = token.strip_prefix(TOKEN_PREFIX) else {
        return false;
    };
    if body.len() != RANDOM_LEN + CHECKSUM_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (random, sum) = body.split_at(RANDOM_LEN);
    checksum(random) == sum
}

/// The stored form of a token: hex SHA-256. On every call's path: the
/// profile showed a `format!` per byte costing 8% of a Get.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let a = TokenSecret::generate();
        let b = TokenSecret::generate();
        assert!(is_well_formed(a.expose()));
        assert!(a.expose().starts_with(TOKEN_PREFIX));
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn a_changed_character_breaks_the_checksum() {
        let token = TokenSecret::generate().expose().to_owned();
        let mut bytes = token.clone().into_bytes();
        let i = TOKEN_PREFIX.len() + 3;
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        assert!(!is_well_formed(&String::from_utf8(bytes).unwrap()));
        assert!(!is_well_formed(&token[1..]));
        assert!(!is_well_formed(&format!("{token}x")));
        assert!(!is_well_formed(""));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = TokenSecret::generate();
        assert!(!format!("{token:?}").contains(&token.expose()[5..]));
    }

    #[test]
    fn abilities_parse_and_neither_implies_the_other() {
        let read = Abilities::parse_list("external-api:read").unwrap();
        assert!(read.allows(Ability::Read) && !read.allows(Ability::Write));
        let write = Abilities::parse_list("external-api:write").unwrap();
        assert!(write.allows(Ability::Write) && !write.allows(Ability::Read));
        let both = Abilities::parse_list("external-api:read, external-api:write").unwrap();
        assert_eq!(both.to_string(), "external-api:read,external-api:write");
        assert!(Abilities::parse_list("admin").is_err());
        assert!(Abilities::parse_list("").is_err());
    }

    #[test]
    fn hash_is_stable_hex() {
        assert_eq!(token_hash("x"), token_hash("x"));
        assert_eq!(token_hash("x").len(), 64);
    }
}
