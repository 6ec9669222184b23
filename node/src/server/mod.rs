//! The server: starts Raft over the data directory, then serves gRPC (client API) and HTTP
//! (health, readiness, metrics) until SIGINT or SIGTERM, then shuts down in order.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod dashboard;
pub mod edge;
pub mod expiring;
pub mod history;
pub mod http;
pub mod identity;
pub mod kv;
pub mod metrics;
mod metrics_node;
pub mod micro;
pub mod namespace;
pub mod namespaces;
pub mod outbox;
pub mod rate;
pub mod registry;
pub mod secrets;
pub mod status;
pub mod stream;
pub mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use strata_proto::auth::v1::auth_server::AuthServer;
use strata_proto::cluster::v1::cluster_server::ClusterServer;
use strata_proto::config::v1::config_server::ConfigServer;
use strata_proto::kv::v1::kv_server::KvServer;
use strata_proto::namespace::v1::namespaces_server::NamespacesServer;
use strata_proto::registry::v1::registry_server::RegistryServer;
use strata_proto::stream::v1::stream_server::StreamServer;
use strata_raft::{tls, Bootstrap, PeerTransport, RaftNode, RaftNodeConfig};

/// Headroom above the value limit for the key, metadata and framing of one request.
const REQUEST_OVERHEAD_BYTES: usize = 1024 * 1024;
/// Largest response (a list page is also cut to fit this).
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub client_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub node_id: u64,
    /// QUIC address for peers; bound only with TLS material.
    pub peer_addr: SocketAddr,
    /// The initial voters' peer addresses (cluster mode, first start).
    pub initial_cluster: Option<BTreeMap<u64, String>>,
    /// Start empty and wait to be added to an existing cluster.
    pub join: bool,
    /// CA and node certificates; without it the node has no peer transport (local mode).
    pub tls_dir: Option<PathBuf>,
    pub max_value_bytes: usize,
    /// Largest stream message payload.
    pub max_message_bytes: usize,
    pub history_retain_revisions: u64,
    pub snapshot_every_entries: u64,
    pub snapshot_every_bytes: u64,
    /// Read and verify every table block at start (see `RaftNodeConfig`).
    pub verify_on_start: bool,
    /// Refuse writes that add data below this much free disk space (see `RaftNodeConfig`).
    pub min_free_bytes: u64,
    /// Bytes kept in the data directory for the next start; 0: none.
    pub start_reserve_bytes: u64,
    pub registry_max_nodes: u64,
    pub secret_key_file: Option<PathBuf>,
    /// TLS on the client port; `None`: on when there is a TLS directory.
    pub client_tls: Option<bool>,
    /// Client certificates required, signed by this CA.
    pub client_ca_file: Option<PathBuf>,
    /// Whether calls need tokens; `None`: off for a single node, on for a cluster.
    pub auth: Option<bool>,
    /// The platform's super-tenant namespace: its admins act on every namespace.
    pub super_namespace: String,
    /// Long-lived calls open at once on this node.
    pub max_streams: usize,
    /// Serve Micro v3's APIs beside Strata's own.
    pub micro: bool,
    /// Register this node in the registry's `micro` domain as Micro's core services, at this
    /// address (what Micro clients dial).
    pub micro_register: Option<String>,
}

/// Long-lived calls open at once on a node, by default. An idle one costs about 16 KiB; one
/// whose reader stopped holds up to its bounded buffer.
pub const DEFAULT_MAX_STREAMS: u64 = 10_000;
/// Calls in flight on one client connection (HTTP/2 streams); a client waits for a free one.
const MAX_STREAMS_PER_CONNECTION: u32 = 1_000;

impl ServeConfig {
    /// The secret key: the given file, or in local mode DATA_DIR/secret.key (created on first
    /// start). A cluster member without a key file serves no secrets.
    fn secret_key(&self, single: bool) -> anyhow::Result<Option<Arc<secrets::SecretKey>>> {
        let path = match (&self.secret_key_file, single) {
            (Some(path), _) => path.clone(),
            (None, true) => {
                let path = self.data_dir.join("secret.key");
                if !path.exists() {
                    std::fs::create_dir_all(&self.data_dir)?;
                    secrets::SecretKey::create_file(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    tracing::info!(path = %path.display(), "created a secret key for config secrets");
                }
                path
            }
            (None, false) => {
                tracing::warn!("no --secret-key-file: config secrets are refused on this node");
                return Ok(None);
            }
        };
        Ok(Some(Arc::new(secrets::SecretKey::load(&path)?)))
    }

    /// The client port's TLS settings, when it serves TLS.
    fn client_tls(&self) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
        let on = self.client_tls.unwrap_or(self.tls_dir.is_some());
        if !on {
            if self.client_ca_file.is_some() {
                anyhow::bail!("--client-ca-file needs client TLS (--client-tls on)");
            }
            return Ok(None);
        }
        let dir = self.tls_dir.as_ref().context(
            "--client-tls on needs --tls-dir with this node's certificate (strata cert node)",
        )?;
        let read = |path: PathBuf| {
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let identity = tonic::transport::Identity::from_pem(
            read(tls::node_cert_path(dir, self.node_id))?,
            read(tls::node_key_path(dir, self.node_id))?,
        );
        let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca_file {
            config =
                config.client_ca_root(tonic::transport::Certificate::from_pem(read(ca.clone())?));
        }
        Ok(Some(config))
    }

    fn bootstrap(&self) -> anyhow::Result<Bootstrap> {
        let clustered = self.join
            || self
                .initial_cluster
                .as_ref()
                .is_some_and(|members| members.len() > 1);
        if clustered && self.tls_dir.is_none() {
            anyhow::bail!(
                "a multi-node cluster needs --tls-dir with the cluster CA and this node's \
                 certificate (create them with `strata cert init` and `strata cert node`)"
            );
        }
        match (&self.initial_cluster, self.join) {
            (Some(_), true) => {
                anyhow::bail!("--join and --initial-cluster exclude each other: a joining node is added by `strata cluster add-learner`")
            }
            (Some(members), false) => {
                if !members.contains_key(&self.node_id) {
                    anyhow::bail!(
                        "--initial-cluster does not list this node (--node-id {}); to add a node to a running cluster start it with --join",
                        self.node_id
                    );
                }
                Ok(Bootstrap::Cluster(members.clone()))
            }
            (None, true) => Ok(Bootstrap::Join),
            (None, false) => Ok(Bootstrap::Single),
        }
    }
}

pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    strata_raft::failpoints::setup().map_err(anyhow::Error::msg)?;
    if strata_raft::failpoints::BUILT && std::env::var_os("FAILPOINTS").is_some() {
        tracing::warn!("failpoints armed: this node will crash where they fire");
    }
    let grpc_listener = tokio::net::TcpListener::bind(config.client_addr)
        .await
        .with_context(|| format!("binding the gRPC address {}", config.client_addr))?;
    let http_listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding the HTTP address {}", config.http_addr))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let bootstrap = config.bootstrap()?;
    let client_tls = config.client_tls()?;
    let transport = match &config.tls_dir {
        Some(dir) => {
            let material = tls::TlsMaterial::load(dir, config.node_id).with_context(|| {
                format!(
                    "loading TLS material for node {} from {}",
                    config.node_id,
                    dir.display()
                )
            })?;
            PeerTransport::bind(config.peer_addr, &material, Default::default())?
        }
        None => PeerTransport::disabled(),
    };
    let bound_peer_addr = transport.local_addr();
    let single = bootstrap == Bootstrap::Single;
    let secret_key = config.secret_key(single)?;
    // Peers reach this node at the address the initial cluster gives it, else where it is bound.
    let advertised_peer_addr = match &bootstrap {
        Bootstrap::Cluster(members) => members[&config.node_id].clone(),
        _ => bound_peer_addr.unwrap_or(config.peer_addr).to_string(),
    };

    // Test-only broken modes the chaos suite must catch; release builds ignore the variable.
    let switch = std::env::var("STRATA_UNSAFE_TEST_SWITCH").unwrap_or_default();
    let unsafe_ack_before_commit = cfg!(debug_assertions) && switch == "ack-before-commit";
    let unsafe_stale_reads = cfg!(debug_assertions) && switch == "stale-reads";
    if unsafe_ack_before_commit {
        tracing::error!("UNSAFE TEST SWITCH: acknowledging writes before they commit");
    }
    if unsafe_stale_reads {
        tracing::error!("UNSAFE TEST SWITCH: serving linearizable reads from local state");
    }
    // A test of a node whose clock is wrong skews this one's wall clock (debug builds only).
    let clock_skew_ms = match std::env::var("STRATA_TEST_CLOCK_SKEW_MS") {
        Ok(text) if cfg!(debug_assertions) => {
            let skew = text
                .parse::<i64>()
                .context("STRATA_TEST_CLOCK_SKEW_MS is not a number of milliseconds")?;
            tracing::warn!(
                skew_ms = skew,
                "TEST SWITCH: this node's wall clock is skewed"
            );
            skew
        }
        _ => 0,
    };
    let raft_config = RaftNodeConfig {
        node_id: config.node_id,
        client_addr: grpc_addr.to_string(),
        peer_addr: advertised_peer_addr,
        bootstrap,
        history_retain_revisions: config.history_retain_revisions,
        snapshot_every_entries: config.snapshot_every_entries,
        snapshot_every_bytes: config.snapshot_every_bytes,
        verify_tables_on_start: config.verify_on_start,
        min_free_bytes: config.min_free_bytes,
        start_reserve_bytes: config.start_reserve_bytes,
        unsafe_ack_before_commit,
        unsafe_stale_reads,
        clock_skew_ms,
        ..RaftNodeConfig::default()
    };
    // The data directory holds the token signing key and sealed secrets: its owner's only.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} owner-only", config.data_dir.display()))?;
    }
    let node = RaftNode::start(&config.data_dir, raft_config, Arc::new(transport))
        .await
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    // A cluster of one elects itself at once; cluster members serve while they find their peers
    // (requests get UNAVAILABLE until a leader is known).
    if single && !node.wait_for_leader(Duration::from_secs(10)).await {
        tracing::warn!(
            "no leader after 10 s; serving anyway, writes will fail until one is elected"
        );
    }

    tokio::spawn(exit_on_fatal(node.clone()));
    let auth_on = config.auth.unwrap_or(!single);
    if auth_on {
        tracing::info!(super_namespace = %config.super_namespace, "auth on: every call needs a token");
    } else {
        tracing::warn!(
            "AUTH IS OFF: every caller acts as an admin of every namespace (local mode's \
             default); start with --auth on to require tokens"
        );
        eprintln!(
            "strata: auth is off: every caller acts as an admin (use --auth on to require tokens)"
        );
    }
    let metrics = metrics::Metrics::new();
    metrics.track_leader_changes(&node);
    let gate = Arc::new(identity::Gate::new(
        node.clone(),
        auth_on,
        config.super_namespace.clone(),
        metrics.clone(),
        config.max_streams,
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sweeper = tokio::spawn(node.clone().run_expiry_sweeper(stopped.clone()));
    tokio::spawn(node.clone().run_start_reserve(stopped.clone()));
    tokio::spawn(node.clone().run_disk_watch(stopped.clone()));
    tokio::spawn(node.clone().run_snapshot_by_bytes(stopped.clone()));
    if let (true, Some(address)) = (config.micro, config.micro_register.clone()) {
        tokio::spawn(micro::announce::run(
            node.clone(),
            address,
            config.registry_max_nodes,
            stopped.clone(),
        ));
    }
    if auth_on {
        tokio::spawn(auth::bootstrap(
            node.clone(),
            config.super_namespace.clone(),
            config.data_dir.clone(),
            stopped.clone(),
        ));
    }

    // Both reflection versions: grpcurl and older tools still speak v1alpha.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("building the reflection service")?;
    let kv = KvServer::new(kv::KvService::new(
        node.clone(),
        metrics.clone(),
        config.max_value_bytes,
        stopped.clone(),
    ))
    .max_decoding_message_size(config.max_value_bytes + REQUEST_OVERHEAD_BYTES)
    .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let stream_handler = stream::StreamService::new(
        node.clone(),
        metrics.clone(),
        config.max_message_bytes,
        stopped.clone(),
    );
    let micro_events = config.micro.then(|| {
        let events = micro::events::EventsService::new(stream_handler.clone(), metrics.clone());
        let limit = stream::StreamService::max_request_bytes(config.max_message_bytes)
            + REQUEST_OVERHEAD_BYTES;
        (
            strata_proto::micro::events::stream_server::StreamServer::new(events.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(MAX_RESPONSE_BYTES),
            strata_proto::micro::events::store_server::StoreServer::new(events)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(MAX_RESPONSE_BYTES),
        )
    });
    let (micro_events_stream, micro_events_store) = micro_events.unzip();
    let micro_broker = config.micro.then(|| {
        strata_proto::micro::broker::broker_server::BrokerServer::new(
            micro::broker::BrokerService::new(stream_handler.clone(), metrics.clone()),
        )
        .max_decoding_message_size(
            stream::StreamService::max_request_bytes(config.max_message_bytes)
                + REQUEST_OVERHEAD_BYTES,
        )
        .max_encoding_message_size(MAX_RESPONSE_BYTES)
    });
    let stream = StreamServer::new(stream_handler)
        .max_decoding_message_size(
            stream::StreamService::max_request_bytes(config.max_message_bytes)
                + REQUEST_OVERHEAD_BYTES,
        )
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let registry = RegistryServer::new(registry::RegistryService::new(
        node.clone(),
        metrics.clone(),
        config.registry_max_nodes,
        stopped.clone(),
    ))
    .max_decoding_message_size(config.max_value_bytes + REQUEST_OVERHEAD_BYTES)
    .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let config_handler = config::ConfigService::new(
        node.clone(),
        metrics.clone(),
        config.max_value_bytes,
        secret_key,
        stopped.clone(),
    );
    let micro_config = config.micro.then(|| {
        strata_proto::micro::config::config_server::ConfigServer::new(
            micro::config::MicroConfigService::new(config_handler.clone(), metrics.clone()),
        )
        .max_decoding_message_size(config.max_value_bytes + REQUEST_OVERHEAD_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES)
    });
    let config_service = ConfigServer::new(config_handler)
        .max_decoding_message_size(config.max_value_bytes + REQUEST_OVERHEAD_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let cluster = ClusterServer::new(cluster::ClusterService::new(node.clone(), metrics.clone()));
    let auth_handler = Arc::new(auth::AuthService::new(
        node.clone(),
        gate.clone(),
        metrics.clone(),
    ));
    let micro_auth = config.micro.then(|| {
        use strata_proto::micro::auth as micro_pb;
        let handler = micro::auth::MicroAuthService::new(auth_handler.clone());
        (
            micro_pb::auth_server::AuthServer::new(handler.clone()),
            micro_pb::accounts_server::AccountsServer::new(handler.clone()),
            micro_pb::rules_server::RulesServer::new(handler),
        )
    });
    let (micro_auth, micro_accounts, micro_rules) = match micro_auth {
        Some((a, b, c)) => (Some(a), Some(b), Some(c)),
        None => (None, None, None),
    };
    let auth_service = AuthServer::from_arc(auth_handler);
    let namespaces = NamespacesServer::new(namespaces::NamespacesService::new(
        node.clone(),
        metrics.clone(),
    ));
    // Micro's clients send and accept up to 32 MiB (shared/MICRO_API.md §1).
    let micro_store = config.micro.then(|| {
        strata_proto::micro::store::store_server::StoreServer::new(micro::store::StoreService::new(
            node.clone(),
            metrics.clone(),
            config.max_value_bytes,
        ))
        .max_decoding_message_size(config.max_value_bytes + REQUEST_OVERHEAD_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES)
    });
    let micro_blob = config.micro.then(|| {
        strata_proto::micro::store::blob_store_server::BlobStoreServer::new(
            micro::blob::BlobService::new(node.clone(), metrics.clone(), config.max_value_bytes),
        )
        .max_decoding_message_size(config.max_value_bytes + REQUEST_OVERHEAD_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES)
    });
    let micro_registry = config.micro.then(|| {
        strata_proto::micro::registry::registry_server::RegistryServer::new(
            micro::registry::RegistryService::new(
                node.clone(),
                metrics.clone(),
                config.registry_max_nodes,
                stopped.clone(),
            ),
        )
        .max_decoding_message_size(config.max_value_bytes + REQUEST_OVERHEAD_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES)
    });
    // Small responses must not wait for delayed ACKs (Nagle): a listener handed to tonic does not
    // get the server's nodelay setting, so set it on the incoming stream.
    let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let mut builder =
        tonic::transport::Server::builder().max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    if let Some(tls) = client_tls {
        builder = builder
            .tls_config(tls)
            .context("the client port's TLS settings")?;
        tracing::info!("client port serves TLS");
    } else if !single {
        tracing::warn!("the client port of this cluster node serves plaintext (--client-tls off)");
    }
    // One identity layer in front of every service (see identity.rs); every error status, from
    // whichever layer made it, leaves in its final shape (edge.rs: codes, bounded messages,
    // Micro's error shape for Micro's calls).
    let grpc = builder
        .layer(edge::EdgeStatusLayer)
        .layer(identity::GateLayer(gate.clone()))
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(kv)
        .add_service(stream)
        .add_service(registry)
        .add_service(config_service)
        .add_service(cluster)
        .add_service(auth_service)
        .add_service(namespaces)
        .add_optional_service(micro_store)
        .add_optional_service(micro_blob)
        .add_optional_service(micro_registry)
        .add_optional_service(micro_config)
        .add_optional_service(micro_events_stream)
        .add_optional_service(micro_events_store)
        .add_optional_service(micro_auth)
        .add_optional_service(micro_accounts)
        .add_optional_service(micro_rules)
        .add_optional_service(micro_broker)
        .serve_with_incoming_shutdown(incoming, until(stopped.clone()));
    let dashboard = dashboard::Dashboard::new(node.clone(), gate.clone());
    let http = http::serve(
        http_listener,
        node.clone(),
        metrics,
        dashboard,
        until(stopped.clone()),
    );

    // Scripts and tests read this line to learn the bound ports.
    let peer = bound_peer_addr.map_or_else(|| "none".to_string(), |a| a.to_string());
    println!(
        "strata ready: grpc={grpc_addr} http={http_addr} peer={peer} data={}",
        config.data_dir.display()
    );
    tracing::info!(%grpc_addr, %http_addr, node_id = config.node_id, "serving");

    let grpc = tokio::spawn(grpc);
    let http = tokio::spawn(http);
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = grpc.await;
        let _ = http.await;
        let _ = sweeper.await;
    })
    .await;
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Exit code when Raft stopped on an environmental fault (a failed fsync, corrupt data).
pub const EXIT_STORAGE_FATAL: i32 = 3;

/// Stops the process when Raft stops on its own (storage failure): a node that cannot trust its
/// disk must not go on serving reads from it. It recovers by restart (or from peers, later).
async fn exit_on_fatal(node: RaftNode) {
    let mut metrics = node.raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow_and_update().running_state {
            if !matches!(fatal, openraft::error::Fatal::Stopped) {
                tracing::error!(error = %fatal, "raft stopped on a fatal error; exiting");
                eprintln!("strata: fatal storage or raft error, exiting: {fatal}");
                crate::exit_now(EXIT_STORAGE_FATAL);
            }
            return; // an orderly shutdown
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

async fn until(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
