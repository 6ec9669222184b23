//! Generates the tonic/prost code and a descriptor set for gRPC reflection, with a vendored
//! protoc so that no system install is needed.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/strata/kv/v1/kv.proto",
    "proto/strata/cluster/v1/cluster.proto",
    "proto/strata/stream/v1/stream.proto",
    "proto/strata/registry/v1/registry.proto",
    "proto/strata/config/v1/config.proto",
    "proto/strata/auth/v1/auth.proto",
    "proto/strata/namespace/v1/namespace.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("strata_descriptor.bin"))
        .compile_protos(PROTOS, &["proto"])?;
    Ok(())
}
