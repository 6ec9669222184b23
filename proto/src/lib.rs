//! Strata's public gRPC API: generated messages, clients and servers.
//!
//! This crate owns the wire format and nothing else: no domain logic, no storage.

/// `strata.kv.v1`: the namespaced key-value store.
pub mod kv {
    pub mod v1 {
        tonic::include_proto!("strata.kv.v1");
    }
}

/// `strata.cluster.v1`: membership and health, for operators.
pub mod cluster {
    pub mod v1 {
        tonic::include_proto!("strata.cluster.v1");
    }
}

/// `strata.stream.v1`: event streams with durable consumer groups.
pub mod stream {
    pub mod v1 {
        tonic::include_proto!("strata.stream.v1");
    }
}

/// `strata.registry.v1`: services, nodes with TTL leases, watch.
pub mod registry {
    pub mod v1 {
        tonic::include_proto!("strata.registry.v1");
    }
}

/// `strata.config.v1`: JSON documents with dotted-path access, secrets and watch.
pub mod config {
    pub mod v1 {
        tonic::include_proto!("strata.config.v1");
    }
}

/// `strata.auth.v1`: accounts, rules and tokens.
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("strata.auth.v1");
    }
}

/// `strata.namespace.v1`: usage and limits (quotas) per namespace.
pub mod namespace {
    pub mod v1 {
        tonic::include_proto!("strata.namespace.v1");
    }
}

/// Micro v3's APIs, served over the same data for unmodified Micro services
/// (shared/MICRO_API.md). Clients are generated as the protos say; servers take every
/// response stream as bidirectional (see build.rs).
pub mod micro {
    /// `store.Store` and `store.BlobStore`.
    pub mod store {
        tonic::include_proto!("store");
    }
    /// `registry.Registry`.
    pub mod registry {
        tonic::include_proto!("registry");
    }
    /// `config.Config`.
    pub mod config {
        tonic::include_proto!("config");
    }
}

/// Encoded `FileDescriptorSet` of every Strata proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("strata_descriptor");
