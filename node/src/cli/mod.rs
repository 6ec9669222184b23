//! Operator commands. They talk to a node through gRPC, like any other client.

pub mod cert;
pub mod cluster;
pub mod kv;
pub mod stream;
