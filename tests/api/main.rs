//! One test binary: every test starts a real server on an ephemeral port and
//! calls it through the generated tonic client.

mod helpers;
// The reliability suite's child-process harness, for the tests of what the
// binary itself logs and exports.
#[allow(dead_code)]
#[path = "../reliability/process.rs"]
mod process;

mod auth;
mod cli;
mod create;
mod hostile;
mod list;
mod logs;
mod observability;
mod replicas;
mod round_trips;
mod serving;
mod storage;
mod update;
