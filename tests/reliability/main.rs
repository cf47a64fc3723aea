//! The reliability suite: real `serve` processes, real faults.
//!
//! Each test prints a `reliability:` line with what it measured; the README's
//! Reliability section quotes them. Sizes come from the environment, so
//! `make test` runs short settings and `make reliability` long ones:
//!
//! - `RELIABILITY_UPDATES` (5000): updates in the replica test;
//! - `RELIABILITY_KEYS` (1000): idempotency keys in the fault test;
//! - `TEST_POSTGRES_URL`: admin URL for the PostgreSQL tests;
//! - `RELIABILITY_PG_CLUSTER` (e.g. `15 main`): lets the outage test stop and
//!   start that cluster with pg_ctlcluster.
//!
//! Run with `--test-threads=1`: the outage test stops the whole cluster.

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
// Shared with the api suite, which uses parts this suite does not.
#[allow(dead_code)]
mod process;

mod faults;
mod overload;
mod replicas;

pub fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A required setting: its value, or `None` with a note when it is missing.
/// Under `CI=true` nothing may be skipped, so a missing one fails the test.
pub fn required_env(test: &str, name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: {name} is not set, and CI=true forbids skipping")
        }
        _ => {
            eprintln!("reliability: {test}: skipped, needs {name} (make test sets it)");
            None
        }
    }
}

/// The PostgreSQL admin URL (see [`required_env`]).
pub fn postgres(test: &str) -> Option<String> {
    required_env(test, "TEST_POSTGRES_URL")
}

/// Prints one measured figure for the README.
pub fn report(test: &str, figures: std::fmt::Arguments<'_>) {
    println!("reliability: {test}: {figures}");
    eprintln!("reliability: {test}: {figures}");
}
