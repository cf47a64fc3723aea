//! One test binary: every test starts a real server on an ephemeral port and
//! calls it through the generated tonic client.

mod helpers;

mod auth;
mod cli;
mod create;
mod hostile;
mod list;
mod logs;
mod observability;
mod replicas;
mod serving;
mod storage;
mod update;
