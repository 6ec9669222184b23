//! `store.BlobStore` (shared/MICRO_API.md §2.3) over the native key-value store: blob K of
//! namespace N is the record K in namespace N, database `blob`, table `blob`, with the content
//! type and public flag in its metadata. A blob is one record, so it is at most
//! `--max-value-bytes`; a larger upload is refused as soon as it passes the limit.

use std::collections::HashMap;
use std::pin::Pin;

use futures::Stream;
use strata_proto::micro::store as pb;
use strata_raft::RaftNode;
use strata_storage::kv::{Expiry, KvCommand, KvResponse, ListQuery, Precondition, Put, Scope};
use tonic::{Request, Response, Status, Streaming};

use super::{authorize_admin, caller_of, first, tenant};
use crate::server::metrics::Metrics;
use crate::server::namespace::Caller;
use crate::server::{kv, status, validate};

/// Where blobs live in a namespace.
pub const BLOB_DATABASE: &str = "blob";
pub const BLOB_TABLE: &str = "blob";
/// Read answers in chunks of this size, as Micro's server does.
const CHUNK_BYTES: usize = 1024;
/// Keys one List returns at most.
const MAX_LIST_KEYS: usize = 10_000;

#[derive(Clone)]
pub struct BlobService {
    node: RaftNode,
    metrics: Metrics,
    max_value_bytes: usize,
}

impl BlobService {
    pub fn new(node: RaftNode, metrics: Metrics, max_value_bytes: usize) -> Self {
        Self {
            node,
            metrics,
            max_value_bytes,
        }
    }
}

/// The namespace a call names, else the `micro-namespace` header (else `micro`), authorized
/// as `AuthorizeAdmin`, and its blob table.
fn scope(caller: &Caller, named: &str, header: Option<&str>) -> Result<Scope, Status> {
    let namespace = tenant(
        "options.namespace",
        if named.is_empty() {
            header.unwrap_or("")
        } else {
            named
        },
    )?;
    authorize_admin(caller, &namespace)?;
    Ok(Scope::new(&namespace, BLOB_DATABASE, BLOB_TABLE))
}

fn header<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("micro-namespace")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn key_of(key: &str) -> Result<Vec<u8>, Status> {
    if key.is_empty() {
        return Err(validate::invalid("Missing key".into()));
    }
    validate::key("key", key.as_bytes())?;
    Ok(key.as_bytes().to_vec())
}

type BlobStream = Pin<Box<dyn Stream<Item = Result<pb::BlobReadResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::blob_store_server::BlobStore for BlobService {
    type ReadStream = BlobStream;

    async fn read(
        &self,
        request: Request<Streaming<pb::BlobReadRequest>>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        self.metrics
            .observed("blob.Read", async {
                let header = header(&request);
                let (caller, req) = first(request).await?;
                let options = req.options.unwrap_or_default();
                let scope = scope(&caller, &options.namespace, header.as_deref())?;
                let key = key_of(&req.key)?;
                self.node
                    .linearizable_barrier()
                    .await
                    .map_err(status::read)?;
                let record = self
                    .node
                    .kv()
                    .get(&scope, &key, self.node.cluster_now())
                    .map_err(status::storage)?
                    .ok_or_else(|| Status::not_found("Blob not found"))?;
                let chunks: Vec<Result<pb::BlobReadResponse, Status>> = record
                    .value
                    .chunks(CHUNK_BYTES)
                    .map(|chunk| {
                        Ok(pb::BlobReadResponse {
                            blob: chunk.to_vec(),
                        })
                    })
                    .collect();
                Ok(Box::pin(futures::stream::iter(chunks)) as BlobStream)
            })
            .await
    }

    async fn write(
        &self,
        request: Request<Streaming<pb::BlobWriteRequest>>,
    ) -> Result<Response<pb::BlobWriteResponse>, Status> {
        self.metrics
            .observed("blob.Write", async {
                let header = header(&request);
                let caller = caller_of(&request)?;
                let mut messages = request.into_inner();
                let first = match super::first_message(&mut messages).await {
                    Err(status) if status.code() == tonic::Code::InvalidArgument => {
                        return Err(validate::invalid("No blob was sent".into()))
                    }
                    other => other?,
                };
                let options = first.options.unwrap_or_default();
                let scope = scope(&caller, &options.namespace, header.as_deref())?;
                let key = key_of(&first.key)?;
                let mut blob = first.blob;
                while let Some(more) = messages.message().await? {
                    blob.extend_from_slice(&more.blob);
                    // Refused as soon as it passes the limit: never buffered past it.
                    validate::value("blob", &blob, self.max_value_bytes)?;
                }
                validate::value("blob", &blob, self.max_value_bytes)?;
                let mut metadata = HashMap::new();
                if !options.content_type.is_empty() {
                    metadata.insert("content-type".to_string(), options.content_type);
                }
                if options.public {
                    metadata.insert("public".to_string(), "true".to_string());
                }
                let put = Put {
                    key,
                    value: blob,
                    metadata: validate::metadata(&metadata)?,
                    expiry: Expiry::Never,
                };
                match kv::write(
                    &self.node,
                    KvCommand::Put {
                        scope,
                        put,
                        precondition: Precondition::None,
                    },
                )
                .await?
                {
                    KvResponse::Put { .. } => Ok(pb::BlobWriteResponse {}),
                    other => Err(Status::internal(format!("unexpected answer {other:?}"))),
                }
            })
            .await
    }

    async fn delete(
        &self,
        request: Request<pb::BlobDeleteRequest>,
    ) -> Result<Response<pb::BlobDeleteResponse>, Status> {
        self.metrics
            .observed("blob.Delete", async {
                let header = header(&request);
                let caller = caller_of(&request)?;
                let req = request.into_inner();
                let options = req.options.unwrap_or_default();
                let scope = scope(&caller, &options.namespace, header.as_deref())?;
                let key = key_of(&req.key)?;
                match kv::write(
                    &self.node,
                    KvCommand::Delete {
                        scope,
                        key,
                        prefix: false,
                        precondition: Precondition::None,
                    },
                )
                .await?
                {
                    KvResponse::Delete { deleted: 0, .. } => {
                        Err(Status::not_found("Blob not found"))
                    }
                    KvResponse::Delete { .. } => Ok(pb::BlobDeleteResponse {}),
                    other => Err(Status::internal(format!("unexpected answer {other:?}"))),
                }
            })
            .await
    }

    async fn list(
        &self,
        request: Request<pb::BlobListRequest>,
    ) -> Result<Response<pb::BlobListResponse>, Status> {
        self.metrics
            .observed("blob.List", async {
                let header = header(&request);
                let caller = caller_of(&request)?;
                let options = request.into_inner().options.unwrap_or_default();
                let scope = scope(&caller, &options.namespace, header.as_deref())?;
                validate::key_or_prefix("prefix", options.prefix.as_bytes())?;
                self.node
                    .linearizable_barrier()
                    .await
                    .map_err(status::read)?;
                let kv = self.node.kv().clone();
                let query = ListQuery {
                    prefix: options.prefix.into_bytes(),
                    limit: MAX_LIST_KEYS,
                    keys_only: true,
                    ..Default::default()
                };
                let now = self.node.cluster_now();
                let page = tokio::task::spawn_blocking(move || kv.list(&scope, &query, now))
                    .await
                    .map_err(|e| Status::internal(format!("listing stopped: {e}")))?
                    .map_err(status::storage)?;
                if page.resume_after.is_some() {
                    return Err(validate::invalid(format!(
                        "more than {MAX_LIST_KEYS} blobs match; list with a longer prefix"
                    )));
                }
                Ok(pb::BlobListResponse {
                    keys: page
                        .items
                        .into_iter()
                        .map(|(key, _)| String::from_utf8_lossy(&key).into_owned())
                        .collect(),
                })
            })
            .await
    }
}
