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
//! Retries: this SDK does not retry writes on its own. A write that fails with
//! [`Error::Unavailable`] or a transport error may or may not have been applied; make it
//! idempotent (compare-and-swap on the mod revision, create-only) before retrying it.

mod error;
mod kv;

pub use error::Error;

/// Metadata keys the server sets on errors.
pub mod error_headers {
    pub use crate::error::{
        CURRENT_REVISION_HEADER, ERROR_CODE_HEADER, LEADER_HEADER, OLDEST_REVISION_HEADER,
    };
}
pub use kv::{Consistency, List, ListPage, Put, PutResult, Table, Txn, TxnResult, WatchStream};
pub use strata_proto::kv::v1 as proto;

use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Request metadata header that carries the caller's namespace.
pub const NAMESPACE_HEADER: &str = "x-strata-namespace";
/// Default page size of list calls and the server's maximum.
pub const MAX_LIST_LIMIT: u32 = 10_000;

type KvGrpc = proto::kv_client::KvClient<InterceptedService<Channel, NamespaceHeader>>;

#[derive(Clone)]
pub struct NamespaceHeader(AsciiMetadataValue);

impl tonic::service::Interceptor for NamespaceHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert(NAMESPACE_HEADER, self.0.clone());
        Ok(request)
    }
}

/// A connection to a Strata node, bound to one namespace. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    kv: KvGrpc,
}

pub struct ClientBuilder {
    endpoint: String,
    namespace: String,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
    max_message_bytes: usize,
}

impl ClientBuilder {
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Deadline for unary calls (watches are not limited).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    pub async fn connect(self) -> Result<Client, Error> {
        let uri = if self.endpoint.contains("://") {
            self.endpoint.clone()
        } else {
            format!("http://{}", self.endpoint)
        };
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|e| Error::InvalidArgument(format!("endpoint {:?}: {e}", self.endpoint)))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if let Some(timeout) = self.request_timeout {
            endpoint = endpoint.timeout(timeout);
        }
        let channel = endpoint.connect().await.map_err(|e| Error::Connect {
            endpoint: self.endpoint.clone(),
            message: e.to_string(),
        })?;
        let namespace: AsciiMetadataValue = MetadataValue::try_from(self.namespace.as_str())
            .map_err(|_| {
                Error::InvalidArgument(format!("namespace {:?} is not ASCII", self.namespace))
            })?;
        let kv = proto::kv_client::KvClient::with_interceptor(channel, NamespaceHeader(namespace))
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        Ok(Client { kv })
    }
}

impl Client {
    /// Starts configuring a client for `endpoint` (`host:port` or `http://host:port`).
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            endpoint: endpoint.into(),
            namespace: "default".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: None,
            max_message_bytes: 32 * 1024 * 1024,
        }
    }

    /// Connects to `endpoint` in the `default` namespace.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, Error> {
        Self::builder(endpoint).connect().await
    }

    /// A handle on one table of one database in this client's namespace.
    pub fn table(&self, database: &str, table: &str) -> Table {
        Table::new(self.kv.clone(), database, table)
    }

    /// Databases in this namespace that hold at least one key.
    pub async fn databases(&self) -> Result<Vec<String>, Error> {
        let response = self
            .kv
            .clone()
            .databases(proto::DatabasesRequest {})
            .await?;
        Ok(response.into_inner().databases)
    }

    /// Tables of `database` that hold at least one key.
    pub async fn tables(&self, database: &str) -> Result<Vec<String>, Error> {
        let request = proto::TablesRequest {
            database: database.into(),
        };
        Ok(self.kv.clone().tables(request).await?.into_inner().tables)
    }
}
