//! Integration tests: each starts the real `strata` binary on 127.0.0.1 with ephemeral ports and
//! a temporary data directory, and drives it through the Rust SDK or the CLI.

mod abuse;
mod auth;
mod backup;
mod bad_input;
mod cli;
mod cluster;
mod config;
mod dashboard;
mod deploy;
mod durability;
mod go_sdk;
mod harness;
mod kv;
mod micro;
mod observability;
mod ops;
mod quota;
mod registry;
mod stall;
mod stream;
mod telemetry;
mod tls;
