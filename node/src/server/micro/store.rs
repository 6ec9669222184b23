//! `store.Store` (shared/MICRO_API.md §2.2) over the native key-value store: Micro's database
//! D, table T, key K is the native record K in namespace D, database D, table T, so a record
//! written either way is read the other way. Reads are linearizable, as native reads are.

use std::collections::HashMap;

use strata_proto::micro::store as pb;
use strata_raft::RaftNode;
use strata_storage::kv::{
    Expiry, KvCommand, KvResponse, ListQuery, Precondition, Put, Record, Scope,
};
use tonic::{Request, Response, Status, Streaming};

use super::{authorize_admin, caller_of, first, tenant, DEFAULT};
use crate::server::metrics::Metrics;
use crate::server::{kv, status, validate, MAX_RESPONSE_BYTES};

/// Matches gathered into one answer stop here, well inside the response limit: a Read or List
/// matching more asks the caller to page with limit and offset.
const MAX_ANSWER_BYTES: usize = MAX_RESPONSE_BYTES / 2;
/// Records fetched per native page while a Read or List walks its matches.
const PAGE: usize = 1_000;

#[derive(Clone)]
pub struct StoreService {
    node: RaftNode,
    metrics: Metrics,
    max_value_bytes: usize,
}

/// What a filtered read or a list walks: its matches in order, from `offset`, up to `limit`.
struct Walk {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    offset: u64,
    /// 0: every match.
    limit: u64,
    descending: bool,
    keys_only: bool,
}

impl StoreService {
    pub fn new(node: RaftNode, metrics: Metrics, max_value_bytes: usize) -> Self {
        Self {
            node,
            metrics,
            max_value_bytes,
        }
    }

    /// The native scope of Micro's (database, table), authorized as `AuthorizeAdmin(database)`.
    fn scope(
        caller: &crate::server::namespace::Caller,
        database: &str,
        table: &str,
    ) -> Result<Scope, Status> {
        let database = tenant("database", database)?;
        let table = tenant("table", table)?;
        authorize_admin(caller, &database)?;
        Ok(Scope {
            namespace: database.clone(),
            database,
            table,
        })
    }

    /// The matches of `walk` in `scope`, read on a blocking thread (offsets and filters may
    /// examine many rows), bounded by [`MAX_ANSWER_BYTES`].
    async fn walk(&self, scope: Scope, walk: Walk) -> Result<Vec<(Vec<u8>, Record)>, Status> {
        self.node
            .linearizable_barrier()
            .await
            .map_err(status::read)?;
        let kv = self.node.kv().clone();
        let now = self.node.cluster_now();
        tokio::task::spawn_blocking(move || {
            let mut query = ListQuery {
                prefix: walk.prefix,
                suffix: walk.suffix,
                start_after: None,
                limit: PAGE,
                descending: walk.descending,
                keys_only: walk.keys_only,
                max_bytes: MAX_ANSWER_BYTES,
            };
            let mut skip = walk.offset;
            let mut found = Vec::new();
            let mut bytes = 0usize;
            loop {
                let page = kv.list(&scope, &query, now).map_err(status::storage)?;
                for (key, record) in page.items {
                    if skip > 0 {
                        skip -= 1;
                        continue;
                    }
                    bytes += key.len() + record.value.len();
                    if bytes > MAX_ANSWER_BYTES {
                        return Err(validate::invalid(format!(
                            "the matching records exceed {} MiB, more than one answer holds; \
                             read them in pages with limit and offset",
                            MAX_ANSWER_BYTES >> 20
                        )));
                    }
                    found.push((key, record));
                    if walk.limit > 0 && found.len() as u64 >= walk.limit {
                        return Ok(found);
                    }
                }
                match page.resume_after {
                    Some(after) => query.start_after = Some(after),
                    None => return Ok(found),
                }
            }
        })
        .await
        .map_err(|e| Status::internal(format!("reading stopped: {e}")))?
    }
}

/// Micro's record: the remaining time to live in whole seconds (rounded up, so that a live
/// record never reads as "never expires"), metadata as text fields.
fn to_micro(key: Vec<u8>, record: Record, now: u64) -> pb::Record {
    let expiry = match record.expires_at_ms {
        0 => 0,
        at => at.saturating_sub(now).div_ceil(1000).max(1) as i64,
    };
    pb::Record {
        key: String::from_utf8_lossy(&key).into_owned(),
        value: record.value,
        expiry,
        metadata: record
            .metadata
            .into_iter()
            .map(|(name, value)| {
                (
                    name,
                    pb::Field {
                        r#type: "string".into(),
                        value,
                    },
                )
            })
            .collect(),
    }
}

fn descending(order: &str) -> bool {
    order == "desc"
}

#[tonic::async_trait]
impl pb::store_server::Store for StoreService {
    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadResponse>, Status> {
        self.metrics
            .observed("store.Read", async {
                let caller = caller_of(&request)?;
                let req = request.into_inner();
                let options = req.options.unwrap_or_default();
                let scope = Self::scope(&caller, &options.database, &options.table)?;
                let key = req.key.into_bytes();
                validate::key_or_prefix("key", &key)?;
                if !options.prefix && !options.suffix {
                    validate::key("key", &key)?;
                    self.node
                        .linearizable_barrier()
                        .await
                        .map_err(status::read)?;
                    let now = self.node.cluster_now();
                    return match self
                        .node
                        .kv()
                        .get(&scope, &key, now)
                        .map_err(status::storage)?
                    {
                        Some(record) => Ok(pb::ReadResponse {
                            records: vec![to_micro(key, record, now)],
                        }),
                        None => Err(Status::not_found("not found")),
                    };
                }
                let walk = Walk {
                    prefix: if options.prefix {
                        key.clone()
                    } else {
                        Vec::new()
                    },
                    suffix: if options.suffix { key } else { Vec::new() },
                    offset: options.offset,
                    limit: options.limit,
                    descending: descending(&options.order),
                    keys_only: false,
                };
                let now = self.node.cluster_now();
                let records = self
                    .walk(scope, walk)
                    .await?
                    .into_iter()
                    .map(|(key, record)| to_micro(key, record, now))
                    .collect();
                Ok(pb::ReadResponse { records })
            })
            .await
    }

    async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.metrics
            .observed("store.Write", async {
                let caller = caller_of(&request)?;
                let req = request.into_inner();
                let options = req.options.unwrap_or_default();
                let scope = Self::scope(&caller, &options.database, &options.table)?;
                let record = req
                    .record
                    .ok_or_else(|| validate::invalid("no record specified".into()))?;
                let key = record.key.into_bytes();
                validate::key("record.key", &key)?;
                validate::value("record.value", &record.value, self.max_value_bytes)?;
                let expiry = match record.expiry {
                    0 => Expiry::Never,
                    seconds if seconds < 0 => {
                        return Err(validate::invalid(format!(
                            "record.expiry {seconds} is negative; give seconds to live, or 0 \
                             for never"
                        )))
                    }
                    seconds => {
                        let ms = (seconds as u64).saturating_mul(1000);
                        if ms > validate::MAX_TTL_MS {
                            return Err(validate::invalid(format!(
                                "record.expiry {seconds} s exceeds the limit of {} s (ten years)",
                                validate::MAX_TTL_MS / 1000
                            )));
                        }
                        Expiry::TtlMs(ms)
                    }
                };
                let metadata: HashMap<String, String> = record
                    .metadata
                    .into_iter()
                    .map(|(name, field)| (name, field.value))
                    .collect();
                let put = Put {
                    key,
                    value: record.value,
                    metadata: validate::metadata(&metadata)?,
                    expiry,
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
                    KvResponse::Put { .. } => Ok(pb::WriteResponse {}),
                    other => Err(Status::internal(format!("unexpected answer {other:?}"))),
                }
            })
            .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.metrics
            .observed("store.Delete", async {
                let caller = caller_of(&request)?;
                let req = request.into_inner();
                let options = req.options.unwrap_or_default();
                let scope = Self::scope(&caller, &options.database, &options.table)?;
                let key = req.key.into_bytes();
                validate::key("key", &key)?;
                // Deleting an absent key succeeds, as in every Micro backend.
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
                    KvResponse::Delete { .. } => Ok(pb::DeleteResponse {}),
                    other => Err(Status::internal(format!("unexpected answer {other:?}"))),
                }
            })
            .await
    }

    type ListStream = tokio_stream::Once<Result<pb::ListResponse, Status>>;

    async fn list(
        &self,
        request: Request<Streaming<pb::ListRequest>>,
    ) -> Result<Response<Self::ListStream>, Status> {
        self.metrics
            .observed("store.List", async {
                let (caller, req) = first(request).await?;
                let options = req.options.unwrap_or_default();
                let scope = Self::scope(&caller, &options.database, &options.table)?;
                validate::key_or_prefix("prefix", options.prefix.as_bytes())?;
                validate::key_or_prefix("suffix", options.suffix.as_bytes())?;
                let walk = Walk {
                    prefix: options.prefix.into_bytes(),
                    suffix: options.suffix.into_bytes(),
                    offset: options.offset,
                    limit: options.limit,
                    descending: descending(&options.order),
                    keys_only: true,
                };
                let keys = self
                    .walk(scope, walk)
                    .await?
                    .into_iter()
                    .map(|(key, _)| String::from_utf8_lossy(&key).into_owned())
                    .collect();
                // All keys in one message, then the end of the stream (Micro's client reads one).
                Ok(tokio_stream::once(Ok(pb::ListResponse { keys })))
            })
            .await
    }

    async fn databases(
        &self,
        request: Request<pb::DatabasesRequest>,
    ) -> Result<Response<pb::DatabasesResponse>, Status> {
        self.metrics
            .observed("store.Databases", async {
                let caller = caller_of(&request)?;
                authorize_admin(&caller, DEFAULT)?;
                let databases = self
                    .node
                    .kv()
                    .all_databases()
                    .map_err(status::storage)?
                    .into_iter()
                    .filter(|(namespace, database)| namespace == database)
                    .map(|(_, database)| database)
                    .collect();
                Ok(pb::DatabasesResponse { databases })
            })
            .await
    }

    async fn tables(
        &self,
        request: Request<pb::TablesRequest>,
    ) -> Result<Response<pb::TablesResponse>, Status> {
        self.metrics
            .observed("store.Tables", async {
                let caller = caller_of(&request)?;
                let database = tenant("database", &request.get_ref().database)?;
                authorize_admin(&caller, &database)?;
                let tables = self
                    .node
                    .kv()
                    .tables(&database, &database)
                    .map_err(status::storage)?;
                Ok(pb::TablesResponse { tables })
            })
            .await
    }
}
