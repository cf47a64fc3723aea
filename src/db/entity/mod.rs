//! SeaORM entities, one per table. Query helpers live beside the code that
//! uses them in `db/`, scoped by workspace.

pub mod agent;
pub mod api_token;
pub mod conversation;
pub mod customer;
pub mod user;
pub mod workspace;
