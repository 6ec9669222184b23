//! The `micro-set` workload: Micro's store API under faults. Every add is a `store.Store/Write`
//! of a unique key through Micro's own protocol (a client generated from the Micro-package
//! protos, bound to one node and moving to the next when that one cannot be reached); the
//! check lists the table with `store.Store/List` and compares it with the history: nothing
//! acknowledged lost, nothing never attempted present, nothing certainly failed present.

use std::collections::BTreeSet;
use std::time::Duration;

use strata_proto::micro::store as pb;
use strata_proto::micro::store::store_client::StoreClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::cluster::Access;

pub const DATABASE: &str = "jepsen";
pub const TABLE: &str = "micro-set";

/// Sends the root's credentials on every call, when the cluster has auth on.
#[derive(Clone)]
pub struct Credentials(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = StoreClient<InterceptedService<Channel, Credentials>>;

/// How an operation ended, as the history records it.
pub enum Outcome {
    Ok,
    /// Certainly not applied.
    Fail(String),
    /// Perhaps applied.
    Info(String),
}

/// One worker's Micro store client: bound to its first node, on to the next on failure.
pub struct MicroStore {
    endpoints: Vec<String>,
    access: Option<(Vec<u8>, String)>,
    current: usize,
    client: Option<Client>,
}

impl MicroStore {
    pub fn new(endpoints: Vec<String>, access: Option<&Access>) -> Self {
        Self {
            endpoints,
            access: access.map(|a| (a.ca_pem().to_vec(), a.basic())),
            current: 0,
            client: None,
        }
    }

    async fn client(&mut self) -> Result<Client, String> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let address = &self.endpoints[self.current % self.endpoints.len()];
        let (scheme, tls) = match &self.access {
            Some((ca, _)) => (
                "https",
                Some(
                    ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
                ),
            ),
            None => ("http", None),
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2));
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("{address}: {e}"))?;
        let credentials = Credentials(
            self.access
                .as_ref()
                .map(|(_, basic)| MetadataValue::try_from(basic.as_str()))
                .transpose()
                .map_err(|e| e.to_string())?,
        );
        let client = StoreClient::with_interceptor(channel, credentials);
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Moves to the next node (after a failure that may be this node's).
    fn next_node(&mut self) {
        self.current += 1;
        self.client = None;
    }

    /// Adds `value` to the set: writes its key (unique to this operation).
    pub async fn add(&mut self, value: u64) -> Outcome {
        let client = match self.client().await {
            Ok(client) => client,
            Err(error) => {
                self.next_node();
                return Outcome::Fail(format!("could not connect: {error}"));
            }
        };
        let mut request = tonic::Request::new(pb::WriteRequest {
            record: Some(pb::Record {
                key: key_of(value),
                value: value.to_string().into_bytes(),
                ..Default::default()
            }),
            options: Some(pb::WriteOptions {
                database: DATABASE.into(),
                table: TABLE.into(),
            }),
        });
        request.set_timeout(Duration::from_secs(3));
        let result = client.clone().write(request).await;
        match result {
            Ok(_) => Outcome::Ok,
            Err(status) => {
                self.next_node();
                classify(&status)
            }
        }
    }
}

pub fn key_of(value: u64) -> String {
    format!("{value:016x}")
}

/// Whether a refused write certainly did nothing: the server said so (`not_leader`,
/// `leader_unreachable`: never sent to the log), or it refused the call outright.
fn classify(status: &tonic::Status) -> Outcome {
    let said = status
        .metadata()
        .get("x-strata-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let text = format!("{:?}: {}", status.code(), status.message());
    let refused = matches!(said, "not_leader" | "leader_unreachable")
        || matches!(
            status.code(),
            tonic::Code::InvalidArgument
                | tonic::Code::Unauthenticated
                | tonic::Code::PermissionDenied
        );
    if refused {
        Outcome::Fail(text)
    } else {
        Outcome::Info(text)
    }
}

/// Every key in the table, listed through Micro's List on the first node that answers.
pub async fn present(
    endpoints: &[String],
    access: Option<&Access>,
) -> anyhow::Result<BTreeSet<String>> {
    let mut last = String::new();
    for first in 0..endpoints.len() {
        let mut store = MicroStore::new(endpoints.to_vec(), access);
        store.current = first;
        let client = match store.client().await {
            Ok(client) => client,
            Err(error) => {
                last = error;
                continue;
            }
        };
        let mut request = tonic::Request::new(pb::ListRequest {
            options: Some(pb::ListOptions {
                database: DATABASE.into(),
                table: TABLE.into(),
                ..Default::default()
            }),
        });
        request.set_timeout(Duration::from_secs(10));
        match client.clone().list(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                let mut keys = BTreeSet::new();
                while let Some(message) = stream.message().await? {
                    keys.extend(message.keys);
                }
                return Ok(keys);
            }
            Err(status) => last = format!("{status:?}"),
        }
    }
    anyhow::bail!("no node answered Micro's List: {last}")
}
