//! Typed access to one table: put, get, list, delete, transactions and watches.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;

use std::sync::Arc;

use crate::proto;
use crate::retry::{Endpoints, Safety};
use crate::Error;

/// Read consistency. Linearizable (the default) confirms leadership with a quorum first;
/// serializable answers from the contacted node's applied state and may be stale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    #[default]
    Linearizable,
    Serializable,
}

impl Consistency {
    pub(crate) fn proto(self) -> i32 {
        match self {
            Consistency::Linearizable => proto::Consistency::Linearizable as i32,
            Consistency::Serializable => proto::Consistency::Serializable as i32,
        }
    }
}

#[derive(Clone)]
pub struct Table {
    kv: Arc<Endpoints>,
    database: String,
    table: String,
}

/// A put with options: `Put::new(key, value).ttl(..).expect_mod_revision(..)`.
#[derive(Clone, Debug, Default)]
pub struct Put {
    request: proto::PutRequest,
}

impl Put {
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            request: proto::PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            },
        }
    }

    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.request.metadata.insert(key.into(), value.into());
        self
    }

    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.request.ttl_ms = ttl.as_millis() as u64;
        self
    }

    pub fn expires_at_ms(mut self, at_ms: u64) -> Self {
        self.request.expires_at_ms = at_ms;
        self
    }

    /// Compare-and-swap: apply only if the key's mod revision is `revision` (0: key absent).
    pub fn expect_mod_revision(mut self, revision: u64) -> Self {
        self.request.expected_mod_revision = Some(revision);
        self
    }

    /// Apply only if the key does not exist.
    pub fn create_only(mut self) -> Self {
        self.request.create_only = true;
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutResult {
    pub revision: u64,
    pub version: u64,
}

/// A list query: `List::prefix("user/").limit(50).descending()`.
#[derive(Clone, Debug, Default)]
pub struct List {
    request: proto::ListRequest,
}

impl List {
    pub fn all() -> Self {
        Self::default()
    }

    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self {
            request: proto::ListRequest {
                prefix: prefix.into(),
                ..Default::default()
            },
        }
    }

    pub fn suffix(mut self, suffix: impl Into<Vec<u8>>) -> Self {
        self.request.suffix = suffix.into();
        self
    }

    pub fn start_after(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.request.start_after = key.into();
        self
    }

    pub fn limit(mut self, limit: u32) -> Self {
        self.request.limit = limit;
        self
    }

    pub fn descending(mut self) -> Self {
        self.request.order = proto::Order::Desc as i32;
        self
    }

    pub fn keys_only(mut self) -> Self {
        self.request.keys_only = true;
        self
    }

    pub fn page_token(mut self, token: impl Into<String>) -> Self {
        self.request.page_token = token.into();
        self
    }

    pub fn consistency(mut self, consistency: Consistency) -> Self {
        self.request.consistency = consistency.proto();
        self
    }
}

#[derive(Clone, Debug, Default)]
pub struct ListPage {
    pub records: Vec<proto::Record>,
    /// Pass to [`List::page_token`] for the next page; `None` at the end.
    pub next_page_token: Option<String>,
    pub revision: u64,
}

/// A transaction: compares, then one of two lists of operations, atomically.
#[derive(Clone, Debug, Default)]
pub struct Txn {
    request: proto::TxnRequest,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn when(mut self, compare: proto::Compare) -> Self {
        self.request.compares.push(compare);
        self
    }

    pub fn then(mut self, op: proto::TxnOp) -> Self {
        self.request.success.push(op);
        self
    }

    pub fn otherwise(mut self, op: proto::TxnOp) -> Self {
        self.request.failure.push(op);
        self
    }

    /// Compare helper: the key's value equals `value`.
    pub fn value_equals(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> proto::Compare {
        proto::Compare {
            key: key.into(),
            op: proto::compare::Op::Equal as i32,
            target: Some(proto::compare::Target::Value(value.into())),
        }
    }

    /// Compare helper: the key's mod revision equals `revision` (0: absent).
    pub fn mod_revision_equals(key: impl Into<Vec<u8>>, revision: u64) -> proto::Compare {
        proto::Compare {
            key: key.into(),
            op: proto::compare::Op::Equal as i32,
            target: Some(proto::compare::Target::ModRevision(revision)),
        }
    }

    /// Compare helper: the key exists (or not).
    pub fn exists(key: impl Into<Vec<u8>>, exists: bool) -> proto::Compare {
        proto::Compare {
            key: key.into(),
            op: proto::compare::Op::Equal as i32,
            target: Some(proto::compare::Target::Exists(exists)),
        }
    }

    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> proto::TxnOp {
        let put = proto::PutOp {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        };
        proto::TxnOp {
            op: Some(proto::txn_op::Op::Put(put)),
        }
    }

    pub fn delete(key: impl Into<Vec<u8>>) -> proto::TxnOp {
        let delete = proto::DeleteOp {
            key: key.into(),
            prefix: false,
        };
        proto::TxnOp {
            op: Some(proto::txn_op::Op::Delete(delete)),
        }
    }

    /// Deletes every key under `prefix`, atomically with the rest of the transaction: so at
    /// most 10,000 of them (more fails the whole transaction, `too_many_keys`; outside a
    /// transaction, [`Table::delete_prefix`] has no such bound).
    pub fn delete_prefix(prefix: impl Into<Vec<u8>>) -> proto::TxnOp {
        let delete = proto::DeleteOp {
            key: prefix.into(),
            prefix: true,
        };
        proto::TxnOp {
            op: Some(proto::txn_op::Op::Delete(delete)),
        }
    }

    pub fn get(key: impl Into<Vec<u8>>) -> proto::TxnOp {
        proto::TxnOp {
            op: Some(proto::txn_op::Op::Get(proto::GetOp { key: key.into() })),
        }
    }

    pub fn into_request(self) -> proto::TxnRequest {
        self.request
    }
}

pub type TxnResult = proto::TxnResponse;

impl Table {
    pub(crate) fn new(kv: Arc<Endpoints>, database: &str, table: &str) -> Self {
        Self {
            kv,
            database: database.into(),
            table: table.into(),
        }
    }

    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<PutResult, Error> {
        self.put_with(Put::new(key, value)).await
    }

    pub async fn put_with(&self, put: Put) -> Result<PutResult, Error> {
        let mut request = put.request;
        request.database = self.database.clone();
        request.table = self.table.clone();
        let response = self
            .kv
            .call(Safety::Write, |mut kv| {
                let request = request.clone();
                async move { kv.put(request).await }
            })
            .await?;
        Ok(PutResult {
            revision: response.revision,
            version: response.version,
        })
    }

    /// The record at `key`, or `None` when absent or expired.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<proto::Record>, Error> {
        self.get_with(key, Consistency::Linearizable).await
    }

    pub async fn get_with(
        &self,
        key: impl Into<Vec<u8>>,
        consistency: Consistency,
    ) -> Result<Option<proto::Record>, Error> {
        let request = proto::GetRequest {
            database: self.database.clone(),
            table: self.table.clone(),
            key: key.into(),
            consistency: consistency.proto(),
        };
        match self
            .kv
            .call(Safety::Read, |mut kv| {
                let request = request.clone();
                async move { kv.get(request).await }
            })
            .await
        {
            Ok(response) => Ok(response.record),
            Err(Error::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// One page of records.
    pub async fn list(&self, list: List) -> Result<ListPage, Error> {
        let mut request = list.request;
        request.database = self.database.clone();
        request.table = self.table.clone();
        let response = self
            .kv
            .call(Safety::Read, |mut kv| {
                let request = request.clone();
                async move { kv.list(request).await }
            })
            .await?;
        Ok(ListPage {
            records: response.records,
            next_page_token: Some(response.next_page_token).filter(|t| !t.is_empty()),
            revision: response.revision,
        })
    }

    /// Every record matching `list`, following page tokens.
    pub async fn list_all(&self, list: List) -> Result<Vec<proto::Record>, Error> {
        let mut records = Vec::new();
        let mut next = list.clone();
        loop {
            let page = self.list(next.clone()).await?;
            records.extend(page.records);
            match page.next_page_token {
                Some(token) => next = list.clone().page_token(token),
                None => return Ok(records),
            }
        }
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<u64, Error> {
        self.delete_request(key.into(), false, None).await
    }

    /// Deletes `key` only if its mod revision is `revision`.
    pub async fn delete_if(&self, key: impl Into<Vec<u8>>, revision: u64) -> Result<u64, Error> {
        self.delete_request(key.into(), false, Some(revision)).await
    }

    /// Deletes every key starting with `prefix`. The server goes in steps of 1,000 keys, each
    /// its own revision, so other writes run between them; if the call fails half-way, what
    /// was deleted stays deleted, and calling again finishes the job.
    pub async fn delete_prefix(&self, prefix: impl Into<Vec<u8>>) -> Result<u64, Error> {
        self.delete_request(prefix.into(), true, None).await
    }

    async fn delete_request(
        &self,
        key: Vec<u8>,
        prefix: bool,
        expected: Option<u64>,
    ) -> Result<u64, Error> {
        let request = proto::DeleteRequest {
            database: self.database.clone(),
            table: self.table.clone(),
            key,
            prefix,
            expected_mod_revision: expected,
        };
        Ok(self
            .kv
            .call(Safety::Write, |mut kv| {
                let request = request.clone();
                async move { kv.delete(request).await }
            })
            .await?
            .deleted)
    }

    pub async fn txn(&self, txn: Txn) -> Result<TxnResult, Error> {
        let mut request = txn.request;
        request.database = self.database.clone();
        request.table = self.table.clone();
        self.kv
            .call(Safety::Write, |mut kv| {
                let request = request.clone();
                async move { kv.txn(request).await }
            })
            .await
    }

    /// Watches `key` (or every key under it when `prefix`), from `start_revision` (0: from now).
    pub async fn watch(
        &self,
        key: impl Into<Vec<u8>>,
        prefix: bool,
        start_revision: u64,
    ) -> Result<WatchStream, Error> {
        let request = proto::WatchRequest {
            database: self.database.clone(),
            table: self.table.clone(),
            key: key.into(),
            prefix,
            start_revision,
            progress_interval_ms: crate::watch::PROGRESS.as_millis() as u32,
        };
        let inner = crate::watch::open(self.kv.clone(), request, |mut kv, request| async move {
            kv.watch(request).await
        })
        .await?;
        Ok(WatchStream { inner })
    }
}

impl crate::watch::Request for proto::WatchRequest {
    fn resume_after(&mut self, revision: u64) {
        self.start_revision = revision + 1;
    }

    fn progress_ms(&self) -> u32 {
        self.progress_interval_ms
    }
}

impl crate::watch::Response for proto::WatchResponse {
    fn seen_up_to(&self) -> Option<u64> {
        Some(self.revision)
    }

    fn fragment(&self) -> bool {
        self.fragment
    }

    fn join(&mut self, next: Self) {
        self.events.extend(next.events);
        self.fragment = next.fragment;
    }
}

/// Watch responses: each item holds every matching event of one revision, or none (a progress
/// notification saying the watcher has seen everything up to `revision`).
/// A broken or silent stream is opened again on the next endpoint from the revision after the
/// last one delivered (see `watch.rs`), for up to a minute.
pub struct WatchStream {
    inner: crate::watch::Resumable<proto::WatchResponse>,
}

impl Stream for WatchStream {
    type Item = Result<proto::WatchResponse, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}
