//! Generates the tonic/prost code and a descriptor set for gRPC reflection, with a vendored
//! protoc so that no system install is needed.
//!
//! Micro's packages (`proto/micro/`) get their clients exactly as the protos say, and their
//! servers with every response-streaming method registered as bidirectional: Micro's Go client
//! opens those streams bidirectionally and never half-closes them, while tonic's
//! server-streaming path waits for the request's end of stream before calling the handler
//! (shared/MICRO_API.md §1). On the wire the two kinds are the same HTTP/2 exchange.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/strata/kv/v1/kv.proto",
    "proto/strata/cluster/v1/cluster.proto",
    "proto/strata/stream/v1/stream.proto",
    "proto/strata/registry/v1/registry.proto",
    "proto/strata/config/v1/config.proto",
    "proto/strata/auth/v1/auth.proto",
    "proto/strata/namespace/v1/namespace.proto",
    "proto/micro/store/store.proto",
    "proto/micro/registry/registry.proto",
    "proto/micro/config/config.proto",
    "proto/micro/events/events.proto",
    "proto/micro/auth/auth.proto",
    "proto/micro/broker/broker.proto",
];

/// Packages whose servers take every response stream as bidirectional.
const MICRO_PACKAGES: &[&str] = &["store", "registry", "config", "events", "auth", "broker"];

/// Methods whose server takes request frames raw, to decode by position (Micro's Consume
/// stream carries a ConsumeRequest, then AckRequests, which conflict on tag 2).
const RAW_REQUESTS: &[(&str, &str, &str)] = &[("events", "Stream", "Consume")];

/// Tonic's generator, except that Micro's servers are generated from a copy of the service
/// whose response-streaming methods also stream requests.
struct Generator {
    all: Box<dyn prost_build::ServiceGenerator>,
    clients: Box<dyn prost_build::ServiceGenerator>,
    servers: Box<dyn prost_build::ServiceGenerator>,
}

impl prost_build::ServiceGenerator for Generator {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        if !MICRO_PACKAGES.contains(&service.package.as_str()) {
            return self.all.generate(service, buf);
        }
        let mut server = service.clone();
        for method in &mut server.methods {
            if method.server_streaming {
                method.client_streaming = true;
            }
            let here = (
                service.package.as_str(),
                service.proto_name.as_str(),
                method.proto_name.as_str(),
            );
            if RAW_REQUESTS.contains(&here) {
                method.input_type = "crate::RawFrame".into();
            }
        }
        self.clients.generate(service, buf);
        self.servers.generate(server, buf);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let generator = Generator {
        all: tonic_prost_build::configure().service_generator(),
        clients: tonic_prost_build::configure()
            .build_server(false)
            .service_generator(),
        servers: tonic_prost_build::configure()
            .build_client(false)
            .service_generator(),
    };
    let mut config = prost_build::Config::new();
    config
        .service_generator(Box::new(generator))
        .file_descriptor_set_path(out_dir.join("strata_descriptor.bin"))
        .type_attribute(".", "#[allow(clippy::all)]");
    config.compile_protos(PROTOS, &["proto"])?;
    Ok(())
}
