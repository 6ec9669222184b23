//! Peer networking: Raft RPCs and forwarded client requests between nodes over QUIC with mutual
//! TLS.
//!
//! One QUIC connection per peer, opened on first use and reused; every RPC is one bidirectional
//! stream carrying one [`frame`] each way. A failed connection is dropped and re-dialled with
//! exponential backoff, so a peer that comes back is reached again within the backoff ceiling.
//! Without TLS material (local mode) there is no endpoint and every peer is unreachable.

pub mod frame;
pub mod message;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

pub use message::{PeerRequest, PeerResponse};

use crate::types::TypeConfig;

/// Target size of one append-entries RPC. openraft gives each append only a heartbeat interval
/// (50 ms) to complete, including the follower's fsync, so a follower that is behind must get
/// its backlog in slices that fit; bigger batches are split (openraft retries with fewer
/// entries when told `PayloadTooLarge`). A single entry is always sent whole.
pub const APPEND_BUDGET_BYTES: usize = 1024 * 1024;

/// How long dialling a peer may take before the attempt counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a peer call failed, and whether the request can have reached the peer.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No connection: the request was not sent.
    #[error("node {node} is unreachable: {reason}")]
    Unreachable { node: u64, reason: String },
    /// The request may have been delivered and acted on.
    #[error("call to node {node} failed after sending: {reason}")]
    Failed { node: u64, reason: String },
    #[error("call to node {node} got no answer within {timeout:?}")]
    Timeout { node: u64, timeout: Duration },
    #[error("request of {0} bytes is larger than a peer frame allows")]
    TooLarge(usize),
}

impl CallError {
    /// True when the request certainly did not reach the peer.
    pub fn not_sent(&self) -> bool {
        matches!(self, CallError::Unreachable { .. } | CallError::TooLarge(_))
    }
}

/// Exponential backoff between dial attempts to a peer that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The wait after `failures` consecutive failed dials (0: none, dial at once).
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (failures - 1).min(16);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[derive(Default)]
struct Slot {
    connection: Option<quinn::Connection>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// The QUIC endpoint and one cached connection per peer. Cheap to share behind an `Arc`.
pub struct PeerTransport {
    endpoint: Option<quinn::Endpoint>,
    backoff: Backoff,
    slots: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl PeerTransport {
    /// A transport that reaches no one (local mode).
    pub fn disabled() -> Self {
        Self {
            endpoint: None,
            backoff: Backoff::default(),
            slots: Mutex::default(),
        }
    }

    /// Binds the QUIC endpoint on `addr`, serving and dialling with `tls`.
    pub fn bind(
        addr: SocketAddr,
        tls: &tls::TlsMaterial,
        backoff: Backoff,
    ) -> Result<Self, TransportError> {
        let transport = Arc::new(transport_config());
        let server = tls.server_config(transport.clone())?;
        // Stateless resets and connection ids keyed by secrets that survive a restart: a
        // peer still talking to this node's previous run gets a reset on its next packet
        // (within a keep-alive) rather than silence until the idle timeout.
        let reset_key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &tls.derived_secret(b"strata quic stateless reset"),
        );
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
        let cid_secret = tls.derived_secret(b"strata quic connection ids");
        let cid_key = u64::from_le_bytes(cid_secret[..8].try_into().expect("8 of 32 bytes"));
        endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        let socket = std::net::UdpSocket::bind(addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        let mut endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| TransportError::Bind { addr, source })?;
        endpoint.set_default_client_config(tls.client_config(transport)?);
        Ok(Self {
            endpoint: Some(endpoint),
            backoff,
            slots: Mutex::default(),
        })
    }

    /// The bound UDP address, if there is an endpoint.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.as_ref().and_then(|e| e.local_addr().ok())
    }

    fn slot(&self, node: u64) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().expect("peer slots lock");
        slots.entry(node).or_default().clone()
    }

    /// The live connection to `node`, dialling `addr` if there is none and the backoff allows.
    ///
    /// The dial runs in a task of its own that holds the peer's slot until it ends, so a caller
    /// with a short deadline (a 50 ms heartbeat) cannot cancel a handshake that takes longer:
    /// the next caller finds the connection made.
    async fn connection(&self, node: u64, addr: &str) -> Result<quinn::Connection, CallError> {
        let unreachable = |reason: String| CallError::Unreachable { node, reason };
        let Some(endpoint) = &self.endpoint else {
            return Err(unreachable(
                "this node has no peer transport (local mode: start with --tls-dir)".into(),
            ));
        };
        let mut slot = self.slot(node).lock_owned().await;
        if let Some(connection) = &slot.connection {
            if connection.close_reason().is_none() {
                return Ok(connection.clone());
            }
            slot.connection = None;
        }
        if let Some(retry_at) = slot.retry_at {
            let now = Instant::now();
            if now < retry_at {
                return Err(unreachable(format!(
                    "backing off for {:?} after {} failed attempts",
                    retry_at - now,
                    slot.failures
                )));
            }
        }
        let (endpoint, addr, backoff) = (endpoint.clone(), addr.to_owned(), self.backoff);
        let dialling = tokio::spawn(async move {
            match dial(&endpoint, node, &addr).await {
                Ok(connection) => {
                    if slot.failures > 0 {
                        tracing::info!(node, addr, "reconnected to peer");
                    }
                    slot.failures = 0;
                    slot.retry_at = None;
                    slot.connection = Some(connection.clone());
                    Ok(connection)
                }
                Err(reason) => {
                    slot.failures = slot.failures.saturating_add(1);
                    slot.retry_at = Some(Instant::now() + backoff.delay(slot.failures));
                    if slot.failures == 1 || slot.failures.is_power_of_two() {
                        tracing::warn!(node, addr, failures = slot.failures, %reason, "cannot reach peer");
                    }
                    Err(reason)
                }
            }
        });
        match dialling.await {
            Ok(result) => result.map_err(unreachable),
            Err(error) => Err(unreachable(format!("the dialling task failed: {error}"))),
        }
    }

    /// Forgets a connection that failed mid-call, so the next call dials afresh.
    async fn discard(&self, node: u64, connection: &quinn::Connection) {
        let slot = self.slot(node);
        let mut slot = slot.lock().await;
        if slot
            .connection
            .as_ref()
            .is_some_and(|c| c.stable_id() == connection.stable_id())
        {
            connection.close(0u32.into(), b"call failed");
            slot.connection = None;
        }
    }

    /// Sends `request` to `node` at `addr` and waits up to `timeout` for its answer.
    pub async fn call(
        &self,
        node: u64,
        addr: &str,
        request: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, CallError> {
        let payload = bincode::serialize(request).map_err(|e| CallError::Failed {
            node,
            reason: format!("encoding the request: {e}"),
        })?;
        self.call_encoded(node, addr, &payload, timeout).await
    }

    async fn call_encoded(
        &self,
        node: u64,
        addr: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<PeerResponse, CallError> {
        let frame = frame::encode(payload).map_err(|_| CallError::TooLarge(payload.len()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let connection = tokio::time::timeout_at(deadline, self.connection(node, addr))
            .await
            .map_err(|_| CallError::Unreachable {
                node,
                reason: format!("no connection within {timeout:?}"),
            })??;
        let (mut send, mut recv) =
            match tokio::time::timeout_at(deadline, connection.open_bi()).await {
                Ok(Ok(streams)) => streams,
                Ok(Err(error)) => {
                    self.discard(node, &connection).await;
                    return Err(CallError::Unreachable {
                        node,
                        reason: format!("opening a stream: {error}"),
                    });
                }
                Err(_) => return Err(CallError::Timeout { node, timeout }),
            };
        let exchange = async {
            send.write_all(&frame)
                .await
                .map_err(|e| format!("sending: {e}"))?;
            send.finish().map_err(|e| format!("finishing: {e}"))?;
            let bytes = recv
                .read_to_end(frame::HEADER_LEN + frame::MAX_PAYLOAD)
                .await
                .map_err(|e| format!("receiving: {e}"))?;
            let payload = frame::decode(&bytes).map_err(|e| e.to_string())?;
            bincode::deserialize::<PeerResponse>(payload)
                .map_err(|e| format!("decoding the response: {e}"))
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(reason)) => {
                self.discard(node, &connection).await;
                Err(CallError::Failed { node, reason })
            }
            Err(_) => {
                // Tell the peer to stop working on it; the connection itself may be fine.
                let _ = send.reset(1u32.into());
                let _ = recv.stop(1u32.into());
                Err(CallError::Timeout { node, timeout })
            }
        }
    }

    /// Closes the endpoint: peers see the connections end at once.
    pub async fn close(&self) {
        if let Some(endpoint) = &self.endpoint {
            endpoint.close(0u32.into(), b"node shutting down");
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }

    /// Accepts peer connections until the endpoint closes, answering each stream's request with
    /// `service`.
    pub async fn serve<S: PeerService>(self: Arc<Self>, service: S) {
        let Some(endpoint) = self.endpoint.clone() else {
            return;
        };
        while let Some(incoming) = endpoint.accept().await {
            let service = service.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                let connection = match incoming.await {
                    Ok(connection) => connection,
                    Err(error) => {
                        tracing::warn!(%remote, %error, "refused a peer connection");
                        return;
                    }
                };
                serve_connection(connection, service).await;
            });
        }
    }
}

fn transport_config() -> quinn::TransportConfig {
    let mut config = quinn::TransportConfig::default();
    // A peer that vanished (killed, partitioned) is noticed within the idle timeout even with
    // no call in flight; calls in flight have their own deadlines.
    config.keep_alive_interval(Some(Duration::from_millis(500)));
    config.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(3)).expect("a small idle timeout"),
    ));
    // Snapshot chunks and append batches are megabytes: let one stream use a wide window.
    config.stream_receive_window(quinn::VarInt::from_u32(16 * 1024 * 1024));
    config.receive_window(quinn::VarInt::from_u32(64 * 1024 * 1024));
    config.send_window(64 * 1024 * 1024);
    config
}

async fn dial(
    endpoint: &quinn::Endpoint,
    node: u64,
    addr: &str,
) -> Result<quinn::Connection, String> {
    let socket = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("resolving {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))?;
    let connecting = endpoint
        .connect(socket, &tls::node_server_name(node))
        .map_err(|e| format!("dialling {socket}: {e}"))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(format!("handshake with {socket}: {error}")),
        Err(_) => Err(format!(
            "no handshake with {socket} within {CONNECT_TIMEOUT:?}"
        )),
    }
}

async fn serve_connection<S: PeerService>(connection: quinn::Connection, service: S) {
    let remote = connection.remote_address();
    loop {
        let (mut send, mut recv) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                tracing::debug!(%remote, %error, "peer connection ended");
                return;
            }
        };
        let service = service.clone();
        tokio::spawn(async move {
            let bytes = match recv
                .read_to_end(frame::HEADER_LEN + frame::MAX_PAYLOAD)
                .await
            {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::debug!(%remote, %error, "reading a peer request failed");
                    return;
                }
            };
            let response =
                match frame::decode(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|payload| {
                        bincode::deserialize::<PeerRequest>(payload).map_err(|e| e.to_string())
                    }) {
                    Ok(request) => service.handle(request).await,
                    Err(reason) => {
                        tracing::warn!(%remote, %reason, "refused a malformed peer request");
                        PeerResponse::Refused(reason)
                    }
                };
            let encoded = bincode::serialize(&response)
                .map_err(|e| e.to_string())
                .and_then(|payload| frame::encode(&payload).map_err(|e| e.to_string()));
            match encoded {
                Ok(frame) => {
                    if send.write_all(&frame).await.is_ok() {
                        let _ = send.finish();
                    }
                }
                Err(reason) => tracing::error!(%remote, %reason, "encoding a peer response failed"),
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("binding the peer address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// What answers peer requests on the serving side (the Raft node).
pub trait PeerService: Clone + Send + Sync + 'static {
    fn handle(&self, request: PeerRequest) -> impl Future<Output = PeerResponse> + Send;
}

/// openraft's view of the transport.
#[derive(Clone)]
pub struct PeerNetwork {
    transport: Arc<PeerTransport>,
}

impl PeerNetwork {
    pub fn new(transport: Arc<PeerTransport>) -> Self {
        Self { transport }
    }
}

pub struct PeerClient {
    transport: Arc<PeerTransport>,
    target: u64,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        PeerClient {
            transport: self.transport.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl PeerClient {
    async fn rpc<T, E>(
        &self,
        payload: &[u8],
        option: &RPCOption,
        pick: impl FnOnce(PeerResponse) -> Option<Result<T, RaftError<u64, E>>>,
    ) -> RpcResult<T, E>
    where
        E: std::error::Error,
    {
        let response = self
            .transport
            .call_encoded(self.target, &self.addr, payload, option.hard_ttl())
            .await
            .map_err(|error| match error {
                CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&error)),
                other => RPCError::Network(NetworkError::new(&other)),
            })?;
        let unexpected =
            |what: String| RPCError::Network(NetworkError::new(&std::io::Error::other(what)));
        match response {
            PeerResponse::Refused(reason) => Err(unexpected(format!(
                "node {} refused the request: {reason}",
                self.target
            ))),
            other => match pick(other) {
                Some(Ok(reply)) => Ok(reply),
                Some(Err(error)) => {
                    Err(RPCError::RemoteError(RemoteError::new(self.target, error)))
                }
                None => Err(unexpected(format!(
                    "node {} answered with the wrong message type",
                    self.target
                ))),
            },
        }
    }
}

fn encode_request(request: &PeerRequest) -> Result<Vec<u8>, std::io::Error> {
    bincode::serialize(request).map_err(std::io::Error::other)
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, openraft::error::Infallible> {
        let entries = rpc.entries.len() as u64;
        let payload = encode_request(&PeerRequest::AppendEntries(rpc))
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if payload.len() > APPEND_BUDGET_BYTES && entries > 1 {
            // openraft retries with at most this many entries.
            let fits = (entries * APPEND_BUDGET_BYTES as u64 / payload.len() as u64).max(1);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fits),
            ));
        }
        self.rpc(&payload, &option, |response| match response {
            PeerResponse::AppendEntries(result) => Some(result),
            _ => None,
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        let payload = encode_request(&PeerRequest::InstallSnapshot(rpc))
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.rpc(&payload, &option, |response| match response {
            PeerResponse::InstallSnapshot(result) => Some(result),
            _ => None,
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, openraft::error::Infallible> {
        let payload = encode_request(&PeerRequest::Vote(rpc))
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.rpc(&payload, &option, |response| match response {
            PeerResponse::Vote(result) => Some(result),
            _ => None,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every request with its own status, so a caller can tell who answered.
    #[derive(Clone)]
    struct Echo(u64);

    impl PeerService for Echo {
        async fn handle(&self, _request: PeerRequest) -> PeerResponse {
            PeerResponse::Status(message::NodeStatus {
                node_id: self.0,
                role: "test".into(),
                term: 0,
                leader_id: None,
                last_log_index: 0,
                committed_index: 0,
                applied_index: 0,
                snapshot_index: 0,
                purged_index: 0,
                client_addr: String::new(),
                peer_addr: String::new(),
                replication: Default::default(),
            })
        }
    }

    fn serve(addr: SocketAddr, dir: &std::path::Path, node: u64) -> Arc<PeerTransport> {
        let material = tls::TlsMaterial::load(dir, node).unwrap();
        let transport = Arc::new(PeerTransport::bind(addr, &material, Backoff::default()).unwrap());
        tokio::spawn(transport.clone().serve(Echo(node)));
        transport
    }

    /// Node 2's transport bound on `addr` again, serving. The old endpoint's socket goes
    /// away with its last task, which may take a moment.
    async fn serve_again(addr: SocketAddr, material: &tls::TlsMaterial) -> Arc<PeerTransport> {
        let rebind_by = Instant::now() + Duration::from_secs(5);
        loop {
            match PeerTransport::bind(addr, material, Backoff::default()) {
                Ok(transport) => {
                    let transport = Arc::new(transport);
                    tokio::spawn(transport.clone().serve(Echo(2)));
                    return transport;
                }
                Err(error) => {
                    assert!(
                        Instant::now() < rebind_by,
                        "cannot bind {addr} again: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    async fn status_of(transport: &PeerTransport, node: u64, addr: &str) -> Result<u64, CallError> {
        match transport
            .call(node, addr, &PeerRequest::Status, Duration::from_secs(2))
            .await?
        {
            PeerResponse::Status(status) => Ok(status.node_id),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reconnects_when_a_peer_comes_back_and_refuses_strangers() {
        let dir = tempfile::tempdir().unwrap();
        tls::create_ca(dir.path()).unwrap();
        for node in [1, 2] {
            tls::create_node_cert(dir.path(), node, &[]).unwrap();
        }
        let client = serve("127.0.0.1:0".parse().unwrap(), dir.path(), 1);
        let server = serve("127.0.0.1:0".parse().unwrap(), dir.path(), 2);
        let addr = server.local_addr().unwrap();
        let peer = addr.to_string();
        assert_eq!(status_of(&client, 2, &peer).await, Ok(2));

        // The peer goes away: calls fail, and say whether the request can have arrived.
        server.close().await;
        drop(server);
        let failure = status_of(&client, 2, &peer).await.unwrap_err();
        assert!(
            matches!(
                failure,
                CallError::Unreachable { .. } | CallError::Failed { .. }
            ),
            "{failure:?}"
        );
        // Until it returns, dialling fails and then backs off without touching the network.
        let mut backing_off = false;
        for _ in 0..20 {
            if let Err(CallError::Unreachable { reason, .. }) = status_of(&client, 2, &peer).await {
                backing_off |= reason.contains("backing off");
            }
        }
        assert!(backing_off, "no backoff after repeated failures");

        // Back on the same address: the next call after the backoff reaches it. (The old
        // endpoint's socket goes away with its last task, which may take a moment.)
        let material = tls::TlsMaterial::load(dir.path(), 2).unwrap();
        let _server = serve_again(addr, &material).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match status_of(&client, 2, &peer).await {
                Ok(2) => break,
                other => {
                    assert!(Instant::now() < deadline, "never reconnected: {other:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }

        // A node with a certificate from another CA cannot call in, nor be called.
        let foreign = tempfile::tempdir().unwrap();
        tls::create_ca(foreign.path()).unwrap();
        tls::create_node_cert(foreign.path(), 3, &[]).unwrap();
        let stranger = serve("127.0.0.1:0".parse().unwrap(), foreign.path(), 3);
        let refused = status_of(&stranger, 2, &peer).await;
        assert!(
            matches!(refused, Err(CallError::Unreachable { .. })),
            "{refused:?}"
        );
        let stranger_addr = stranger.local_addr().unwrap().to_string();
        let refused = status_of(&client, 3, &stranger_addr).await;
        assert!(
            matches!(refused, Err(CallError::Unreachable { .. })),
            "{refused:?}"
        );
        // And a member's certificate does not pass for another member's.
        let wrong_name = status_of(&client, 5, &peer).await;
        assert!(
            matches!(wrong_name, Err(CallError::Unreachable { .. })),
            "{wrong_name:?}"
        );
    }

    /// A peer that crashed and came back on the same address resets the connections of its
    /// previous run on their next packet (a keep-alive at most), so callers reconnect at once
    /// instead of sending into silence until the idle timeout. The crash: the old endpoint's
    /// runtime is torn down, so it sends nothing, not even a close.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_peer_resets_the_connections_of_its_previous_run() {
        let dir = tempfile::tempdir().unwrap();
        tls::create_ca(dir.path()).unwrap();
        for node in [1, 2] {
            tls::create_node_cert(dir.path(), node, &[]).unwrap();
        }
        let client = serve("127.0.0.1:0".parse().unwrap(), dir.path(), 1);
        // The peer's first run, on a runtime of its own in a thread of its own.
        let (bound, addr_of) = std::sync::mpsc::channel();
        let (crash, crashed) = std::sync::mpsc::channel::<()>();
        let path = dir.path().to_owned();
        let first_run = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let material = tls::TlsMaterial::load(&path, 2).unwrap();
            let transport = runtime.block_on(async {
                let any = "127.0.0.1:0".parse().unwrap();
                let transport =
                    Arc::new(PeerTransport::bind(any, &material, Backoff::default()).unwrap());
                tokio::spawn(transport.clone().serve(Echo(2)));
                transport
            });
            bound.send(transport.local_addr().unwrap()).unwrap();
            let _ = crashed.recv();
            runtime.shutdown_background();
            drop(transport);
        });
        let addr = addr_of.recv().unwrap();
        let peer = addr.to_string();
        assert_eq!(status_of(&client, 2, &peer).await, Ok(2));
        let connection = client.slot(2).lock().await.connection.clone().unwrap();

        crash.send(()).unwrap();
        first_run.join().unwrap();
        let material = tls::TlsMaterial::load(dir.path(), 2).unwrap();
        let _new = serve_again(addr, &material).await;
        let reason = tokio::time::timeout(Duration::from_secs(10), connection.closed())
            .await
            .expect("the old connection never closed");
        assert!(
            matches!(reason, quinn::ConnectionError::Reset),
            "closed by {reason:?}, not by the restarted peer's stateless reset"
        );
        assert_eq!(status_of(&client, 2, &peer).await, Ok(2));
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let backoff = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
        };
        let delays: Vec<_> = (0..8).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(delays, [0, 50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(1));
    }
}
