//! Operator commands. They talk to a node through the Rust SDK, like any other client.

pub mod kv;
