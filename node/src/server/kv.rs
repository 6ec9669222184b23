//! `strata.kv.v1.Kv`: each handler parses and validates, delegates to Raft (writes) or the
//! state machine (reads), and encodes. Nothing here decides what a command does.

use base64::Engine as _;
use strata_proto::kv::v1 as pb;
use strata_raft::node::now_ms;
use strata_raft::RaftNode;
use strata_storage::kv::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KvCommand, KvResponse, ListQuery,
    Precondition, Put, Record, Scope, TxnOp, TxnOpResult, PREFIX_DELETE_STEP,
};
use tonic::{Request, Response, Status};

use super::metrics::Metrics;
use super::{namespace, status, validate};

/// Encoded bytes of events per watch response: a revision with more (a large prefix delete)
/// comes in fragments, so no response nears the message limit and a slow watcher's queue
/// (outbox.rs) holds at most about outbox::CAPACITY of these.
const WATCH_FRAGMENT_BYTES: usize = 1024 * 1024;
/// A list page ends early past this many key and value bytes, well inside the response limit.
const MAX_LIST_PAGE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Clone)]
pub struct KvService {
    node: RaftNode,
    metrics: Metrics,
    max_value_bytes: usize,
    /// Becomes true when the server stops: open watches end with UNAVAILABLE.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl KvService {
    pub fn new(
        node: RaftNode,
        metrics: Metrics,
        max_value_bytes: usize,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            node,
            metrics,
            max_value_bytes,
            stopping,
        }
    }

    /// The request's validated scope (namespace from the interceptor, database and table from
    /// the message), and the message.
    fn scoped<T: InTable>(&self, request: Request<T>) -> Result<(Scope, T), Status> {
        let namespace = namespace::of(&request)?;
        let message = request.into_inner();
        let scope = Scope {
            namespace,
            database: validate::scope_name("database", message.database())?,
            table: validate::scope_name("table", message.table())?,
        };
        Ok((scope, message))
    }

    async fn read_barrier(&self, consistency: i32) -> Result<(), Status> {
        match validate::enumeration::<pb::Consistency>("consistency", consistency)? {
            pb::Consistency::Serializable => Ok(()),
            pb::Consistency::Unspecified | pb::Consistency::Linearizable => {
                self.node.linearizable_barrier().await.map_err(status::read)
            }
        }
    }

    async fn write(&self, command: KvCommand) -> Result<KvResponse, Status> {
        write(&self.node, command).await
    }

    /// Deletes every key under `prefix` in steps of [`PREFIX_DELETE_STEP`] records, each an
    /// entry of its own: the work per entry, its events and its memory stay bounded whatever
    /// the prefix holds, and other clients' writes run between the steps. A step that fails
    /// ends the call with its error; what earlier steps deleted stays deleted, and calling
    /// again finishes the job (deleting is idempotent). A caller that goes away stops it
    /// between steps.
    async fn delete_prefix(
        &self,
        scope: Scope,
        prefix: Vec<u8>,
    ) -> Result<pb::DeleteResponse, Status> {
        let mut total = pb::DeleteResponse::default();
        loop {
            let step = KvCommand::DeletePrefix {
                scope: scope.clone(),
                prefix: prefix.clone(),
                limit: PREFIX_DELETE_STEP,
            };
            match self.write(step).await? {
                KvResponse::DeletePrefix {
                    revision,
                    deleted,
                    more,
                } => {
                    total.deleted += deleted;
                    total.revision = revision;
                    if !more {
                        return Ok(total);
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    fn put_of(&self, op: &pb::PutOp, now: u64) -> Result<Put, Status> {
        validate::key("key", &op.key)?;
        validate::value("value", &op.value, self.max_value_bytes)?;
        Ok(Put {
            key: op.key.clone(),
            value: op.value.clone(),
            metadata: validate::metadata(&op.metadata)?,
            expiry: validate::expiry(op.ttl_ms, op.expires_at_ms, now)?,
        })
    }

    fn txn_ops(&self, ops: &[pb::TxnOp], branch: &str, now: u64) -> Result<Vec<TxnOp>, Status> {
        if ops.len() > validate::MAX_TXN_OPS {
            return Err(validate::invalid(format!(
                "{branch} has {} operations; the limit is {}",
                ops.len(),
                validate::MAX_TXN_OPS
            )));
        }
        ops.iter()
            .map(|op| match &op.op {
                Some(pb::txn_op::Op::Put(put)) => Ok(TxnOp::Put(self.put_of(put, now)?)),
                Some(pb::txn_op::Op::Delete(delete)) => {
                    if delete.prefix {
                        validate::key_or_prefix("delete.key", &delete.key)?;
                    } else {
                        validate::key("delete.key", &delete.key)?;
                    }
                    Ok(TxnOp::Delete {
                        key: delete.key.clone(),
                        prefix: delete.prefix,
                    })
                }
                Some(pb::txn_op::Op::Get(get)) => {
                    validate::key("get.key", &get.key)?;
                    Ok(TxnOp::Get {
                        key: get.key.clone(),
                    })
                }
                None => Err(validate::invalid(format!(
                    "an operation in {branch} is empty"
                ))),
            })
            .collect()
    }

    async fn observed<T>(
        &self,
        method: &str,
        work: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        self.metrics.observed(method, work).await
    }
}

/// A key-value write through the log, its failure (a precondition) as a status: the one path
/// for every API that writes records (Strata's own, Micro's store and blob store).
pub async fn write(node: &RaftNode, command: KvCommand) -> Result<KvResponse, Status> {
    match node.write_kv(command).await.map_err(status::write)? {
        KvResponse::Failed(failure) => Err(status::failure(&failure)),
        response => Ok(response),
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        self.observed("Put", async {
            let (scope, req) = self.scoped(request)?;
            let put = self.put_of(
                &pb::PutOp {
                    key: req.key,
                    value: req.value,
                    metadata: req.metadata,
                    ttl_ms: req.ttl_ms,
                    expires_at_ms: req.expires_at_ms,
                },
                now_ms(),
            )?;
            let precondition = match (req.expected_mod_revision, req.create_only) {
                (Some(_), true) => {
                    return Err(validate::invalid(
                        "give expected_mod_revision or create_only, not both".into(),
                    ))
                }
                (Some(revision), false) => Precondition::ModRevision(revision),
                (None, true) => Precondition::Absent,
                (None, false) => Precondition::None,
            };
            match self
                .write(KvCommand::Put {
                    scope,
                    put,
                    precondition,
                })
                .await?
            {
                KvResponse::Put { revision, version } => Ok(pb::PutResponse { revision, version }),
                other => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        self.observed("Get", async {
            let (scope, req) = self.scoped(request)?;
            validate::key("key", &req.key)?;
            self.read_barrier(req.consistency).await?;
            let revision = self.node.applied_revision();
            match self
                .node
                .kv()
                .get(&scope, &req.key, self.node.cluster_now())
                .map_err(status::storage)?
            {
                Some(record) => Ok(pb::GetResponse {
                    record: Some(to_pb(req.key, record)),
                    revision,
                }),
                None => Err(Status::not_found(format!(
                    "key {} not found in {}/{}",
                    printable(&req.key),
                    scope.database,
                    scope.table
                ))),
            }
        })
        .await
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        self.observed("List", async {
            let (scope, req) = self.scoped(request)?;
            validate::key_or_prefix("prefix", &req.prefix)?;
            validate::key_or_prefix("suffix", &req.suffix)?;
            validate::key_or_prefix("start_after", &req.start_after)?;
            let limit = validate::list_limit(req.limit)?;
            let order = validate::enumeration::<pb::Order>("order", req.order)?;
            let descending = order == pb::Order::Desc;
            let start_after = match (req.page_token.is_empty(), req.start_after.is_empty()) {
                (true, true) => None,
                (true, false) => Some(req.start_after.clone()),
                (false, true) => Some(page_token::decode(
                    &req.page_token,
                    descending,
                    &req.prefix,
                )?),
                (false, false) => {
                    return Err(validate::invalid(
                        "give start_after or page_token, not both".into(),
                    ))
                }
            };
            self.read_barrier(req.consistency).await?;
            let revision = self.node.applied_revision();
            let query = ListQuery {
                prefix: req.prefix.clone(),
                suffix: req.suffix,
                start_after,
                limit,
                descending,
                keys_only: req.keys_only,
                max_bytes: MAX_LIST_PAGE_BYTES,
            };
            // A page may examine up to MAX_SCAN_PER_PAGE rows: off the async workers.
            let kv = self.node.kv().clone();
            let now = self.node.cluster_now();
            let page = tokio::task::spawn_blocking(move || kv.list(&scope, &query, now))
                .await
                .map_err(|e| Status::internal(format!("listing stopped: {e}")))?
                .map_err(status::storage)?;
            let records = page
                .items
                .into_iter()
                .map(|(key, record)| to_pb(key, record))
                .collect();
            let next_page_token = page
                .resume_after
                .map(|key| page_token::encode(&key, descending))
                .unwrap_or_default();
            Ok(pb::ListResponse {
                records,
                next_page_token,
                revision,
            })
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.observed("Delete", async {
            let (scope, req) = self.scoped(request)?;
            let precondition =
                match (req.prefix, req.expected_mod_revision) {
                    (true, Some(_)) => return Err(validate::invalid(
                        "expected_mod_revision applies to single-key deletes, not prefix deletes"
                            .into(),
                    )),
                    (true, None) => {
                        validate::key_or_prefix("key", &req.key)?;
                        Precondition::None
                    }
                    (false, expected) => {
                        validate::key("key", &req.key)?;
                        expected.map_or(Precondition::None, Precondition::ModRevision)
                    }
                };
            if req.prefix {
                return self.delete_prefix(scope, req.key).await;
            }
            let command = KvCommand::Delete {
                scope,
                key: req.key,
                prefix: false,
                precondition,
            };
            match self.write(command).await? {
                KvResponse::Delete { revision, deleted } => {
                    Ok(pb::DeleteResponse { deleted, revision })
                }
                other => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        self.observed("Txn", async {
            let (scope, req) = self.scoped(request)?;
            let now = now_ms();
            if req.compares.len() > validate::MAX_TXN_COMPARES {
                return Err(validate::invalid(format!(
                    "compares has {} entries; the limit is {}",
                    req.compares.len(),
                    validate::MAX_TXN_COMPARES
                )));
            }
            let compares = req
                .compares
                .iter()
                .map(compare_of)
                .collect::<Result<Vec<_>, _>>()?;
            let success = self.txn_ops(&req.success, "success", now)?;
            let failure = self.txn_ops(&req.failure, "failure", now)?;
            match self
                .write(KvCommand::Txn {
                    scope,
                    compares,
                    success,
                    failure,
                })
                .await?
            {
                KvResponse::Txn {
                    revision,
                    succeeded,
                    results,
                } => {
                    let ops = if succeeded {
                        &req.success
                    } else {
                        &req.failure
                    };
                    let results = results
                        .into_iter()
                        .zip(ops)
                        .map(|(result, op)| txn_result_to_pb(result, op, revision))
                        .collect();
                    Ok(pb::TxnResponse {
                        succeeded,
                        revision,
                        results,
                    })
                }
                other => Err(unexpected(other)),
            }
        })
        .await
    }

    type WatchStream = crate::server::outbox::Inbox<pb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.observed("Watch", async {
            let (scope, req) = self.scoped(request)?;
            if req.prefix {
                validate::key_or_prefix("key", &req.key)?;
            } else {
                validate::key("key", &req.key)?;
            }
            let progress = super::history::progress_interval(req.progress_interval_ms);
            // Subscribe before reading history so that no revision falls between the two.
            let live = self.node.subscribe();
            let start = match req.start_revision {
                0 => self.node.applied_revision() + 1,
                revision => revision,
            };
            let floor = self.node.kv().history_floor().map_err(status::storage)?;
            if start < floor {
                return Err(status::compacted(start, floor));
            }
            let (sender, receiver) = crate::server::outbox::channel();
            let filter = WatchFilter {
                scope,
                key: req.key,
                prefix: req.prefix,
            };
            let pump = super::history::Pump {
                node: self.node.clone(),
                follower: filter,
                next: start,
                sender,
                progress,
                stopping: self.stopping.clone(),
            };
            tokio::spawn(pump.run(live));
            Ok(receiver)
        })
        .await
    }

    async fn databases(
        &self,
        request: Request<pb::DatabasesRequest>,
    ) -> Result<Response<pb::DatabasesResponse>, Status> {
        self.observed("Databases", async {
            let namespace = namespace::of(&request)?;
            let databases = self
                .node
                .kv()
                .databases(&namespace)
                .map_err(status::storage)?;
            Ok(pb::DatabasesResponse { databases })
        })
        .await
    }

    async fn tables(
        &self,
        request: Request<pb::TablesRequest>,
    ) -> Result<Response<pb::TablesResponse>, Status> {
        self.observed("Tables", async {
            let namespace = namespace::of(&request)?;
            let database = validate::scope_name("database", &request.get_ref().database)?;
            let tables = self
                .node
                .kv()
                .tables(&namespace, &database)
                .map_err(status::storage)?;
            Ok(pb::TablesResponse { tables })
        })
        .await
    }
}

/// Requests addressed to one table of one database.
trait InTable {
    fn database(&self) -> &str;
    fn table(&self) -> &str;
}

macro_rules! in_table {
    ($($message:ty),*) => {$(
        impl InTable for $message {
            fn database(&self) -> &str {
                &self.database
            }
            fn table(&self) -> &str {
                &self.table
            }
        }
    )*};
}

in_table!(
    pb::PutRequest,
    pb::GetRequest,
    pb::ListRequest,
    pb::DeleteRequest,
    pb::TxnRequest,
    pb::WatchRequest
);

struct WatchFilter {
    scope: Scope,
    key: Vec<u8>,
    prefix: bool,
}

impl WatchFilter {
    fn matches(&self, event: &Event) -> bool {
        event.namespace == self.scope.namespace
            && event.database == self.scope.database
            && event.table == self.scope.table
            && if self.prefix {
                event.key.starts_with(&self.key)
            } else {
                event.key == self.key
            }
    }
}

impl super::history::Follower for WatchFilter {
    type Feed = super::history::KvFeed;
    type Response = pb::WatchResponse;

    /// The watched key's (or prefix's) events of one revision, in responses of at most about
    /// [`WATCH_FRAGMENT_BYTES`] each.
    fn render(
        &mut self,
        revision: u64,
        events: &[Event],
    ) -> Result<Vec<pb::WatchResponse>, Status> {
        let events: Vec<pb::Event> = events
            .iter()
            .filter(|event| self.matches(event))
            .map(|event| event_to_pb(event, revision))
            .collect();
        Ok(fragments(events, revision, WATCH_FRAGMENT_BYTES))
    }

    fn progress(&self, revision: u64) -> Option<pb::WatchResponse> {
        Some(pb::WatchResponse {
            events: Vec::new(),
            revision,
            fragment: false,
        })
    }
}

/// The events of one revision as responses of at most about `budget` encoded bytes each (one
/// event alone may pass it), all but the last marked `fragment`; none for no events.
fn fragments(events: Vec<pb::Event>, revision: u64, budget: usize) -> Vec<pb::WatchResponse> {
    let mut responses = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for event in events {
        let len = prost::Message::encoded_len(&event);
        if !current.is_empty() && size + len > budget {
            responses.push(pb::WatchResponse {
                events: std::mem::take(&mut current),
                revision,
                fragment: true,
            });
            size = 0;
        }
        size += len;
        current.push(event);
    }
    if !current.is_empty() {
        responses.push(pb::WatchResponse {
            events: current,
            revision,
            fragment: false,
        });
    }
    responses
}

fn compare_of(compare: &pb::Compare) -> Result<Compare, Status> {
    validate::key("compare.key", &compare.key)?;
    let op = match validate::enumeration::<pb::compare::Op>("compare.op", compare.op)? {
        pb::compare::Op::Unspecified | pb::compare::Op::Equal => CompareOp::Equal,
        pb::compare::Op::NotEqual => CompareOp::NotEqual,
        pb::compare::Op::Less => CompareOp::Less,
        pb::compare::Op::Greater => CompareOp::Greater,
    };
    let target = match &compare.target {
        Some(pb::compare::Target::Value(value)) => CompareTarget::Value(value.clone()),
        Some(pb::compare::Target::ModRevision(revision)) => CompareTarget::ModRevision(*revision),
        Some(pb::compare::Target::Version(version)) => CompareTarget::Version(*version),
        Some(pb::compare::Target::Exists(exists)) => {
            if !matches!(op, CompareOp::Equal | CompareOp::NotEqual) {
                return Err(validate::invalid(
                    "compare on exists takes OP_EQUAL or OP_NOT_EQUAL".into(),
                ));
            }
            CompareTarget::Exists(*exists)
        }
        None => return Err(validate::invalid("compare.target is missing".into())),
    };
    Ok(Compare {
        key: compare.key.clone(),
        op,
        target,
    })
}

fn txn_result_to_pb(result: TxnOpResult, op: &pb::TxnOp, revision: u64) -> pb::TxnOpResult {
    use pb::txn_op_result::Result as R;
    let result = match result {
        TxnOpResult::Put { version } => R::Put(pb::PutResponse { revision, version }),
        TxnOpResult::Delete { deleted } => R::Delete(pb::DeleteResponse { deleted, revision }),
        TxnOpResult::Get { record } => {
            let key = match &op.op {
                Some(pb::txn_op::Op::Get(get)) => get.key.clone(),
                _ => Vec::new(),
            };
            R::Get(pb::GetResponse {
                record: record.map(|r| to_pb(key, r)),
                revision,
            })
        }
    };
    pb::TxnOpResult {
        result: Some(result),
    }
}

fn to_pb(key: Vec<u8>, record: Record) -> pb::Record {
    pb::Record {
        key,
        value: record.value,
        metadata: record.metadata.into_iter().collect(),
        create_revision: record.create_revision,
        mod_revision: record.mod_revision,
        version: record.version,
        expires_at_ms: record.expires_at_ms,
    }
}

fn event_to_pb(event: &Event, revision: u64) -> pb::Event {
    let (kind, record) = match (EventKind::try_from(event.kind), &event.record) {
        (Ok(EventKind::Put), Some(record)) => (
            pb::event::Type::Put,
            to_pb(event.key.clone(), record.clone()),
        ),
        _ => (
            pb::event::Type::Delete,
            pb::Record {
                key: event.key.clone(),
                mod_revision: revision,
                ..Default::default()
            },
        ),
    };
    pb::Event {
        r#type: kind as i32,
        record: Some(record),
        expired: event.expired,
    }
}

fn unexpected(response: KvResponse) -> Status {
    Status::internal(format!("unexpected state machine response {response:?}"))
}

/// A key for messages: as text when it is printable, else as hex.
fn printable(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) if !text.chars().any(char::is_control) => format!("{text:?}"),
        _ => format!(
            "0x{}",
            key.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

/// Continuation tokens: `base64url(version ++ order ++ last key)`. Opaque to clients; checked to
/// belong to the query they are used with.
mod page_token {
    use super::*;

    const VERSION: u8 = 1;

    pub fn encode(last_key: &[u8], descending: bool) -> String {
        let mut raw = vec![VERSION, u8::from(descending)];
        raw.extend_from_slice(last_key);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(token: &str, descending: bool, prefix: &[u8]) -> Result<Vec<u8>, Status> {
        let malformed = || {
            validate::invalid(
                "page_token is malformed; pass the token from the previous page unchanged".into(),
            )
        };
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| malformed())?;
        match raw.as_slice() {
            [VERSION, order, key @ ..] if *order <= 1 => {
                if (*order == 1) != descending || !key.starts_with(prefix) {
                    return Err(validate::invalid(
                        "page_token belongs to a different query (prefix or order changed)".into(),
                    ));
                }
                validate::key_or_prefix("page_token", key)?;
                Ok(key.to_vec())
            }
            _ => Err(malformed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, value_len: usize) -> pb::Event {
        pb::Event {
            r#type: pb::event::Type::Put as i32,
            record: Some(pb::Record {
                key: key.as_bytes().to_vec(),
                value: vec![7; value_len],
                ..Default::default()
            }),
            expired: false,
        }
    }

    #[test]
    fn a_large_revision_comes_in_fragments_in_order() {
        let events: Vec<_> = (0..100)
            .map(|i| event(&format!("k{i:03}"), 1_000))
            .collect();
        let responses = fragments(events, 42, 10_000);
        assert!(responses.len() >= 10, "{}", responses.len());
        let (last, rest) = responses.split_last().unwrap();
        assert!(rest.iter().all(|r| r.fragment) && !last.fragment);
        assert!(responses.iter().all(|r| r.revision == 42));
        for r in &responses {
            let size: usize = r.events.iter().map(prost::Message::encoded_len).sum();
            assert!(size <= 10_000, "{size}");
        }
        let keys: Vec<_> = responses
            .iter()
            .flat_map(|r| &r.events)
            .map(|e| e.record.as_ref().unwrap().key.clone())
            .collect();
        let expected: Vec<_> = (0..100).map(|i| format!("k{i:03}").into_bytes()).collect();
        assert_eq!(keys, expected);
    }

    #[test]
    fn small_revisions_are_one_response_and_no_events_none() {
        let one = fragments(vec![event("a", 10), event("b", 10)], 7, 10_000);
        assert_eq!(one.len(), 1);
        assert!(!one[0].fragment);
        assert!(fragments(Vec::new(), 7, 10_000).is_empty());
        // One event over the budget still goes, alone.
        let big = fragments(vec![event("a", 50_000), event("b", 10)], 7, 10_000);
        assert_eq!(big.len(), 2);
        assert!(big[0].fragment && !big[1].fragment);
    }
}
