//! Rust SDK for Strata.
//!
//! ```no_run
//! # async fn demo() -> Result<(), strata_client::Error> {
//! let client = strata_client::Client::builder("127.0.0.1:7420").namespace("acme").connect().await?;
//! let users = client.table("app", "users");
//! let put = users.put(b"alice", b"{\"age\":30}").await?;
//! let record = users.get(b"alice").await?.expect("just written");
//! assert_eq!(record.mod_revision, put.revision);
//! # Ok(()) }
//! ```
//!
//! Endpoints and retries: give the builder every node (`"a:7420,b:7420,c:7420"` or
//! [`ClientBuilder::endpoint`]); any node serves, forwarding writes to the leader. A call that
//! fails moves to the next endpoint and is retried only when that is safe (see [`RetryPolicy`]):
//! reads on any unavailability, writes only when the server said nothing was done or the
//! connection was refused. A write that fails with [`Error::OutcomeUnknown`] (or a transport
//! error mid-call) may or may not have been applied: make it idempotent (compare-and-swap on the
//! mod revision, create-only) before retrying it yourself.

pub mod config;
mod error;
mod kv;
pub mod registry;
mod retry;
mod session;
pub mod stream;
mod watch;

pub use error::Error;

/// Metadata keys the server sets on errors.
pub mod error_headers {
    pub use crate::error::{
        CURRENT_REVISION_HEADER, ERROR_CODE_HEADER, LEADER_HEADER, OLDEST_REVISION_HEADER,
        QUOTA_HEADER,
    };
}
pub use kv::{Consistency, List, ListPage, Put, PutResult, Table, Txn, TxnResult, WatchStream};
pub use retry::RetryPolicy;
pub use strata_proto::kv::v1 as proto;

use std::sync::Arc;
use std::time::Duration;

use retry::Safety;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Request metadata header that carries the caller's namespace.
pub const NAMESPACE_HEADER: &str = "x-strata-namespace";
/// Default page size of list calls and the server's maximum.
pub const MAX_LIST_LIMIT: u32 = 10_000;

type KvGrpc = proto::kv_client::KvClient<InterceptedService<Channel, NamespaceHeader>>;
type StreamGrpc = strata_proto::stream::v1::stream_client::StreamClient<
    InterceptedService<Channel, NamespaceHeader>,
>;
type RegistryGrpc = strata_proto::registry::v1::registry_client::RegistryClient<
    InterceptedService<Channel, NamespaceHeader>,
>;
type ConfigGrpc = strata_proto::config::v1::config_client::ConfigClient<
    InterceptedService<Channel, NamespaceHeader>,
>;

#[derive(Clone)]
pub struct NamespaceHeader {
    /// Sent only when the client names a namespace; otherwise the server uses the token's.
    namespace: Option<AsciiMetadataValue>,
    /// `Bearer <token>`, when the client has one (renewed in place by a login session).
    authorization: session::Authorization,
}

impl tonic::service::Interceptor for NamespaceHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(namespace) = &self.namespace {
            request
                .metadata_mut()
                .insert(NAMESPACE_HEADER, namespace.clone());
        }
        let authorization = self
            .authorization
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(authorization) = authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization);
        }
        Ok(request)
    }
}

/// A connection to a Strata cluster (one or more nodes), bound to one namespace. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    kv: Arc<retry::Endpoints>,
    stream: Arc<retry::Endpoints<StreamGrpc>>,
    registry: Arc<retry::Endpoints<RegistryGrpc>>,
    config: Arc<retry::Endpoints<ConfigGrpc>>,
}

pub struct ClientBuilder {
    endpoints: Vec<String>,
    namespace: Option<String>,
    token: Option<String>,
    credentials: Option<session::Credentials>,
    /// PEM of the CA that signed the nodes' certificates: connect with TLS.
    ca: Option<Vec<u8>>,
    /// PEM certificate and key this client presents (nodes started with --client-ca-file).
    identity: Option<(Vec<u8>, Vec<u8>)>,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
    max_message_bytes: usize,
    retry: RetryPolicy,
}

impl ClientBuilder {
    /// Adds another node to try (`host:port`, or several comma-separated).
    pub fn endpoint(mut self, endpoint: impl AsRef<str>) -> Self {
        self.endpoints.extend(split_endpoints(endpoint.as_ref()));
        self
    }

    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The namespace to act on. Unset: the token's namespace (its issuer), or `default` where
    /// the server runs without auth. Naming another than the token's needs a super-tenant admin.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// An access token, sent as `authorization: Bearer <token>` (`strata login` gets one; a
    /// super-tenant admin's token also allows the namespace `*` for registry reads and watch).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Logs in as `namespace`/`id` with `secret` when connecting, and keeps the access token
    /// fresh (renewed at four fifths of its life) for as long as the client lives. Replaces
    /// [`Self::token`].
    pub fn credentials(
        mut self,
        namespace: impl Into<String>,
        id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        self.credentials = Some(session::Credentials {
            namespace: namespace.into(),
            id: id.into(),
            secret: secret.into(),
            lifetime_s: 0,
        });
        self
    }

    /// How long each access token of [`Self::credentials`] lives (default: the server's, 15
    /// minutes; at most a day).
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        if let Some(credentials) = &mut self.credentials {
            credentials.lifetime_s = lifetime.as_secs().max(1) as i64;
        }
        self
    }

    /// Connects with TLS, trusting nodes whose certificate this CA (PEM) signed, for the name
    /// or address dialled (`strata cert node --name HOST`).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(pem.into());
        self
    }

    /// A client certificate and key (PEM), for nodes that require one (`--client-ca-file`);
    /// used with [`Self::ca_pem`].
    pub fn client_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Deadline for unary calls, and for a subscription's ack or nack to be confirmed (30 s
    /// when none is set); watches and subscriptions themselves are not limited.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Connects to the first endpoint that answers; the others are dialled when needed.
    pub async fn connect(self) -> Result<Client, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::InvalidArgument("no endpoint given".into()));
        }
        let namespace: Option<AsciiMetadataValue> = self
            .namespace
            .as_ref()
            .map(|namespace| {
                MetadataValue::try_from(namespace.as_str()).map_err(|_| {
                    Error::InvalidArgument(format!("namespace {namespace:?} is not ASCII"))
                })
            })
            .transpose()?;
        let authorization: session::Authorization = Arc::new(std::sync::RwLock::new(
            self.token.as_deref().map(session::bearer).transpose()?,
        ));
        let header = NamespaceHeader {
            namespace,
            authorization: authorization.clone(),
        };
        let mut channels = Vec::new();
        for name in &self.endpoints {
            let scheme = if self.ca.is_some() { "https" } else { "http" };
            let uri = if name.contains("://") {
                name.clone()
            } else {
                format!("{scheme}://{name}")
            };
            let mut endpoint = Endpoint::from_shared(uri)
                .map_err(|e| Error::InvalidArgument(format!("endpoint {name:?}: {e}")))?
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true);
            if let Some(ca) = &self.ca {
                let mut tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca.clone()));
                if let Some((cert, key)) = &self.identity {
                    tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
                }
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|e| Error::InvalidArgument(format!("TLS for {name:?}: {e}")))?;
            }
            if let Some(timeout) = self.request_timeout {
                endpoint = endpoint.timeout(timeout);
            }
            channels.push((name.clone(), endpoint));
        }
        // Connect eagerly to the first that answers, so a wrong address fails here, not later.
        let mut failures = Vec::new();
        let mut connected = None;
        for (index, (name, endpoint)) in channels.iter().enumerate() {
            match endpoint.connect().await {
                Ok(channel) => {
                    connected = Some((index, channel));
                    break;
                }
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
        let Some((preferred, channel)) = connected else {
            return Err(Error::Connect {
                endpoint: self.endpoints.join(","),
                message: failures.join("; "),
            });
        };
        if let Some(credentials) = self.credentials.clone() {
            // The preferred node first, then the others (dialled when needed).
            let mut auth_channels = vec![channel.clone()];
            auth_channels.extend(
                channels
                    .iter()
                    .enumerate()
                    .filter(|(index, _)| *index != preferred)
                    .map(|(_, (_, endpoint))| endpoint.connect_lazy()),
            );
            let first = session::login(&auth_channels, &credentials, None).await?;
            *authorization.write().unwrap_or_else(|e| e.into_inner()) =
                Some(session::bearer(&first.access_token)?);
            session::keep_fresh(
                auth_channels,
                credentials,
                first,
                Arc::downgrade(&authorization),
            );
        }
        let make = |channel: Channel| {
            proto::kv_client::KvClient::with_interceptor(channel, header.clone())
                .max_decoding_message_size(self.max_message_bytes)
                .max_encoding_message_size(self.max_message_bytes)
        };
        let make_stream = |channel: Channel| {
            strata_proto::stream::v1::stream_client::StreamClient::with_interceptor(
                channel,
                header.clone(),
            )
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
        };
        let make_registry = |channel: Channel| {
            strata_proto::registry::v1::registry_client::RegistryClient::with_interceptor(
                channel,
                header.clone(),
            )
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
        };
        let make_config = |channel: Channel| {
            strata_proto::config::v1::config_client::ConfigClient::with_interceptor(
                channel,
                header.clone(),
            )
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
        };
        let connected: Vec<(String, Channel)> = channels
            .into_iter()
            .enumerate()
            .map(|(index, (name, endpoint))| {
                let channel = if index == preferred {
                    channel.clone()
                } else {
                    endpoint.connect_lazy()
                };
                (name, channel)
            })
            .collect();
        let clients = connected
            .iter()
            .map(|(name, channel)| (name.clone(), make(channel.clone())))
            .collect();
        let streams = connected
            .iter()
            .map(|(name, channel)| (name.clone(), make_stream(channel.clone())))
            .collect();
        let registries = connected
            .iter()
            .map(|(name, channel)| (name.clone(), make_registry(channel.clone())))
            .collect();
        let configs = connected
            .into_iter()
            .map(|(name, channel)| (name, make_config(channel)))
            .collect();
        Ok(Client {
            kv: Arc::new(retry::Endpoints::new(
                clients,
                preferred,
                self.retry,
                self.request_timeout,
            )),
            stream: Arc::new(retry::Endpoints::new(
                streams,
                preferred,
                self.retry,
                self.request_timeout,
            )),
            registry: Arc::new(retry::Endpoints::new(
                registries,
                preferred,
                self.retry,
                self.request_timeout,
            )),
            config: Arc::new(retry::Endpoints::new(
                configs,
                preferred,
                self.retry,
                self.request_timeout,
            )),
        })
    }
}

fn split_endpoints(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
}

impl Client {
    /// Starts configuring a client for `endpoint` (`host:port` or `http://host:port`, or several
    /// comma-separated).
    pub fn builder(endpoint: impl AsRef<str>) -> ClientBuilder {
        ClientBuilder {
            endpoints: split_endpoints(endpoint.as_ref()).collect(),
            retry: RetryPolicy::default(),
            namespace: None,
            token: None,
            credentials: None,
            ca: None,
            identity: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: None,
            max_message_bytes: 32 * 1024 * 1024,
        }
    }

    /// Connects to `endpoint` without a token (a node with auth off: the `default` namespace).
    pub async fn connect(endpoint: impl AsRef<str>) -> Result<Self, Error> {
        Self::builder(endpoint).connect().await
    }

    /// The service registry of the client's namespace.
    pub fn registry(&self) -> registry::Registry {
        registry::Registry::new(self.registry.clone())
    }

    /// Config documents of the client's namespace.
    pub fn config(&self) -> config::Config {
        config::Config::new(self.config.clone())
    }

    /// A handle on one event-stream topic in this client's namespace.
    pub fn topic(&self, name: &str) -> stream::Topic {
        stream::Topic::new(self.stream.clone(), name)
    }

    /// Topics of this namespace whose names match `filter` (NATS-style: `orders.*`,
    /// `orders.>`; empty: all), every page.
    pub async fn topics(&self, filter: &str) -> Result<Vec<stream::proto::TopicSummary>, Error> {
        stream::list_topics(&self.stream, filter).await
    }

    /// A handle on one table of one database in this client's namespace.
    pub fn table(&self, database: &str, table: &str) -> Table {
        Table::new(self.kv.clone(), database, table)
    }

    /// Databases in this namespace that hold at least one key.
    pub async fn databases(&self) -> Result<Vec<String>, Error> {
        let response = self
            .kv
            .call(Safety::Read, |mut kv| async move {
                kv.databases(proto::DatabasesRequest {}).await
            })
            .await?;
        Ok(response.databases)
    }

    /// Tables of `database` that hold at least one key.
    pub async fn tables(&self, database: &str) -> Result<Vec<String>, Error> {
        let request = proto::TablesRequest {
            database: database.into(),
        };
        let response = self
            .kv
            .call(Safety::Read, |mut kv| {
                let request = request.clone();
                async move { kv.tables(request).await }
            })
            .await?;
        Ok(response.tables)
    }
}
