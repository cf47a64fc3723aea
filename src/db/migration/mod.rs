//! Schema migrations. The same migrations run on SQLite and PostgreSQL.

use sea_orm_migration::prelude::*;

mod m20261121_000001_initial;
mod m20261121_000002_list_indexes;
mod m20261122_000001_channel_spam_indexes;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_initial::Migration),
            Box::new(m20261121_000002_list_indexes::Migration),
            Box::new(m20261122_000001_channel_spam_indexes::Migration),
        ]
    }
}
