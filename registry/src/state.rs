//! Applying registry and config commands, and serving their reads, from RocksDB.
//!
//! Layout, in [`CF_REGISTRY`], by leading kind byte:
//! - `META    name` -> u64 (the last revision that changed registry or config; history floor)
//! - `VERSION seg(ns) seg(service) seg(version)` -> [`VersionRecord`]
//! - `NODE    seg(ns) seg(service) seg(version) seg(node id)` -> [`NodeRecord`]
//! - `CONFIG  seg(ns) seg(key)` -> [`ConfigRecord`]
//!
//! and in [`CF_REGISTRY_HISTORY`]: revision (u64 BE) -> the events of that revision.
//!
//! Apply reads no clock, and node liveness is not its business: a node stays until it is
//! deregistered or the leader proposes its expiry.

use std::collections::{BTreeMap, HashMap};

use rocksdb::{Direction, IteratorMode, ReadOptions};
use serde_json::Value;
use strata_storage::engine::{CF_REGISTRY, CF_REGISTRY_HISTORY};
use strata_storage::kv::StateTxn;
use strata_storage::quota::{Quota, Usage};
use strata_storage::{keys, Engine, StorageError};

use crate::command::*;
use crate::json;
use crate::record::{self, ConfigRecord, NodeRecord, VersionRecord};

const META: u8 = 0x00;
const VERSION: u8 = 0x01;
const NODE: u8 = 0x02;
const CONFIG: u8 = 0x03;

const META_REVISION: &[u8] = &[META, b'r'];
const META_HISTORY_FLOOR: &[u8] = &[META, b'f'];
/// History is trimmed in steps of at most this many revisions, not on every write.
const HISTORY_TRIM_STEP_MAX: u64 = 1_024;

/// A stored key and value.
type Row = (Box<[u8]>, Box<[u8]>);

/// A node's storage key and the mod revision a keepalive refreshes its lease at.
pub type NodeLease = (Vec<u8>, u64);

/// A (service, version) with its nodes, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    pub namespace: String,
    pub service: String,
    pub version: String,
    pub record: VersionRecord,
    pub nodes: Vec<(NodeInfo, NodeRecord)>,
}

/// Most registry nodes one listing response reads (whole services: it may end past this by
/// one service's nodes, at most `--registry-max-nodes`).
pub const LIST_NODES_MAX: usize = 10_000;

/// A page of a service listing (see [`RegistryState::services_page`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePage {
    /// The registry revision the page reflects.
    pub revision: u64,
    pub services: Vec<ServiceView>,
    /// When more services follow: the token that asks for them (opaque to callers).
    pub next: Option<Vec<u8>>,
}

/// What the leader's lease keeper needs of each node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    pub key: Vec<u8>,
    pub ttl_ms: u64,
    pub mod_revision: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryPage {
    pub revisions: Vec<(u64, Vec<RegistryEvent>)>,
    /// The oldest revision still in history.
    pub floor: u64,
}

#[derive(Clone)]
pub struct RegistryState {
    engine: Engine,
    history_retain_revisions: u64,
}

/// Changes of one command, read back by later steps of the same command.
#[derive(Default)]
struct Overlay {
    values: HashMap<Vec<u8>, Option<Vec<u8>>>,
    events: Vec<RegistryEvent>,
    /// Usage changes: (namespace, quota, amount).
    usage: Vec<(String, Quota, i64)>,
}

fn version_key(namespace: &str, service: &str, version: &str) -> Vec<u8> {
    let mut key = vec![VERSION];
    keys::push_segment(&mut key, namespace.as_bytes());
    keys::push_segment(&mut key, service.as_bytes());
    keys::push_segment(&mut key, version.as_bytes());
    key
}

fn node_prefix(namespace: &str, service: &str, version: &str) -> Vec<u8> {
    let mut key = vec![NODE];
    keys::push_segment(&mut key, namespace.as_bytes());
    keys::push_segment(&mut key, service.as_bytes());
    keys::push_segment(&mut key, version.as_bytes());
    key
}

/// The storage key of a node: what leases and [`ExpireNode`] name.
pub fn node_key(namespace: &str, service: &str, version: &str, node_id: &str) -> Vec<u8> {
    let mut key = node_prefix(namespace, service, version);
    keys::push_segment(&mut key, node_id.as_bytes());
    key
}

fn config_key(namespace: &str, key: &str) -> Vec<u8> {
    let mut out = vec![CONFIG];
    keys::push_segment(&mut out, namespace.as_bytes());
    keys::push_segment(&mut out, key.as_bytes());
    out
}

/// Kind byte, then segments; all must be UTF-8 names.
fn decode_names(key: &[u8], count: usize) -> Result<Vec<String>, StorageError> {
    let segments = keys::decode(&key[1..])?;
    if segments.len() != count {
        return Err(StorageError::Corrupt(format!(
            "registry key with {} segments, expected {count}",
            segments.len()
        )));
    }
    segments
        .into_iter()
        .map(|s| {
            String::from_utf8(s)
                .map_err(|_| StorageError::Corrupt("registry name is not UTF-8".into()))
        })
        .collect()
}

fn read_u64(bytes: &[u8]) -> Result<u64, StorageError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StorageError::Corrupt("registry counter is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(array))
}

impl RegistryState {
    /// Keeps `history_retain_revisions` revisions of watch history behind the newest (the same
    /// setting as the key-value history; decided by revision alone, so replicas agree).
    pub fn new(engine: Engine, history_retain_revisions: u64) -> Self {
        assert!(
            history_retain_revisions > 0,
            "history retention must be positive"
        );
        Self {
            engine,
            history_retain_revisions,
        }
    }

    // ----- apply -------------------------------------------------------------------------

    /// Applies one command at `txn.revision()`. Writes go into the entry's batch; returns the
    /// response and the events (also written to history).
    pub fn apply(
        &self,
        txn: &mut StateTxn,
        command: &RegistryCommand,
    ) -> Result<(RegistryResponse, Vec<RegistryEvent>), StorageError> {
        let revision = txn.revision();
        let mut overlay = Overlay::default();
        let response = match command {
            RegistryCommand::Register {
                namespace,
                service,
                version,
                info,
                nodes,
                ttl_ms,
                max_nodes,
            } => self.register(
                &mut overlay,
                revision,
                (namespace, service, version),
                info,
                nodes,
                *ttl_ms,
                *max_nodes,
            )?,
            RegistryCommand::Deregister {
                namespace,
                service,
                version,
                node_ids,
            } => {
                let removed = self.deregister(
                    &mut overlay,
                    revision,
                    (namespace, service, version),
                    node_ids,
                )?;
                RegistryResponse::Deregistered {
                    revision: if removed > 0 { revision } else { 0 },
                    removed,
                }
            }
            RegistryCommand::Expire { nodes } => {
                let mut expired = 0;
                for item in nodes {
                    let Some(node) = self.load::<NodeRecord>(&overlay, &item.key)? else {
                        continue;
                    };
                    if node.mod_revision != item.mod_revision {
                        continue;
                    }
                    let names = decode_names(&item.key, 4)?;
                    let scope = (&names[0], &names[1], &names[2]);
                    self.remove_node(&mut overlay, revision, scope, &names[3], true)?;
                    expired += 1;
                }
                RegistryResponse::Expired {
                    revision: if expired > 0 { revision } else { 0 },
                    expired,
                }
            }
            RegistryCommand::ConfigSet {
                namespace,
                key,
                path,
                value,
                max_document_bytes,
            } => self.config_set(
                &mut overlay,
                revision,
                namespace,
                key,
                path,
                value,
                *max_document_bytes,
            )?,
            RegistryCommand::ConfigDelete {
                namespace,
                key,
                path,
            } => self.config_delete(&mut overlay, revision, namespace, key, path)?,
        };
        if matches!(response, RegistryResponse::Failed(_)) {
            return Ok((response, Vec::new()));
        }
        for (namespace, quota, change) in &overlay.usage {
            txn.add_usage(namespace, *quota, *change);
        }
        let cf = self.engine.cf(CF_REGISTRY);
        let batch = txn.batch_mut();
        for (key, value) in &overlay.values {
            match value {
                Some(bytes) => batch.put_cf(cf, key, bytes),
                None => batch.delete_cf(cf, key),
            }
        }
        if !overlay.events.is_empty() {
            batch.put_cf(cf, META_REVISION, revision.to_be_bytes());
            batch.put_cf(
                self.engine.cf(CF_REGISTRY_HISTORY),
                revision.to_be_bytes(),
                record::encode(&overlay.events),
            );
            self.trim_history(txn)?;
        }
        Ok((response, overlay.events))
    }

    fn trim_history(&self, txn: &mut StateTxn) -> Result<(), StorageError> {
        let revision = txn.revision();
        let floor = self.history_floor()?;
        let retain = self.history_retain_revisions;
        let step = (retain / 8).clamp(1, HISTORY_TRIM_STEP_MAX);
        if revision < floor + retain + step {
            return Ok(());
        }
        let new_floor = revision - retain;
        let batch = txn.batch_mut();
        batch.delete_range_cf(
            self.engine.cf(CF_REGISTRY_HISTORY),
            0u64.to_be_bytes(),
            new_floor.to_be_bytes(),
        );
        batch.put_cf(
            self.engine.cf(CF_REGISTRY),
            META_HISTORY_FLOOR,
            new_floor.to_be_bytes(),
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn register(
        &self,
        overlay: &mut Overlay,
        revision: u64,
        (namespace, service, version): (&String, &String, &String),
        info: &ServiceInfo,
        nodes: &[NodeInfo],
        ttl_ms: u64,
        max_nodes: u64,
    ) -> Result<RegistryResponse, StorageError> {
        let vkey = version_key(namespace, service, version);
        let current = self.load::<VersionRecord>(overlay, &vkey)?;
        let info_changed = current.as_ref().is_none_or(|v| &v.info != info);
        // A node id given twice counts once, as its last occurrence (the server refuses such
        // requests; a replica must still never count a node twice).
        let mut seen = std::collections::HashSet::new();
        let mut unique: Vec<&NodeInfo> = nodes
            .iter()
            .rev()
            .filter(|node| seen.insert(node.id.as_str()))
            .collect();
        unique.reverse();
        let mut added = 0;
        let mut changes = Vec::new();
        for node in unique {
            let key = node_key(namespace, service, version, &node.id);
            let old = self.load::<NodeRecord>(overlay, &key)?;
            let same = old.as_ref().is_some_and(|old| {
                old.address == node.address && old.metadata == node.metadata && old.ttl_ms == ttl_ms
            });
            if old.is_none() {
                added += 1;
            }
            if !same {
                changes.push((key, node, old));
            }
        }
        if added > 0 {
            let others = self.service_node_count(namespace, service, Some(version))?;
            let would_have = others + current.as_ref().map_or(0, |v| v.node_count) + added;
            if would_have > max_nodes {
                return Ok(RegistryResponse::Failed(RegistryFailure::TooManyNodes {
                    limit: max_nodes,
                    would_have,
                }));
            }
        }
        if changes.is_empty() && !info_changed {
            return Ok(RegistryResponse::Registered {
                revision: 0,
                created: 0,
                updated: 0,
            });
        }
        let record = VersionRecord {
            info: info.clone(),
            node_count: current.as_ref().map_or(0, |v| v.node_count) + added,
            create_revision: current.as_ref().map_or(revision, |v| v.create_revision),
            // Its info or its nodes changed.
            mod_revision: revision,
        };
        overlay.values.insert(vkey, Some(record::encode(&record)));
        overlay
            .usage
            .push((namespace.clone(), Quota::Nodes, added as i64));
        let (mut created, mut updated) = (0, 0);
        for (key, node, old) in changes {
            let change = if old.is_some() {
                updated += 1;
                Change::Update
            } else {
                created += 1;
                Change::Create
            };
            let stored = NodeRecord {
                address: node.address.clone(),
                metadata: node.metadata.clone(),
                ttl_ms,
                create_revision: old.as_ref().map_or(revision, |o| o.create_revision),
                mod_revision: revision,
            };
            overlay.values.insert(key, Some(record::encode(&stored)));
            overlay.events.push(RegistryEvent::Node(NodeEvent {
                namespace: namespace.clone(),
                service: service.clone(),
                version: version.clone(),
                info: info.clone(),
                node: node.clone(),
                ttl_ms,
                change,
                expired: false,
            }));
        }
        if info_changed && current.is_some() {
            // One event for the version, not one per node: a version may have thousands.
            overlay.events.push(RegistryEvent::Version(VersionEvent {
                namespace: namespace.clone(),
                service: service.clone(),
                version: version.clone(),
                info: info.clone(),
            }));
        }
        Ok(RegistryResponse::Registered {
            revision,
            created,
            updated,
        })
    }

    fn deregister(
        &self,
        overlay: &mut Overlay,
        revision: u64,
        scope: (&String, &String, &String),
        node_ids: &[String],
    ) -> Result<u32, StorageError> {
        let (namespace, service, version) = scope;
        let ids: Vec<String> = if node_ids.is_empty() {
            self.nodes_of(namespace, service, version)?
                .into_iter()
                .map(|(node, _)| node.id)
                .collect()
        } else {
            node_ids.to_vec()
        };
        let mut removed = 0;
        for id in &ids {
            let key = node_key(namespace, service, version, id);
            if self.load::<NodeRecord>(overlay, &key)?.is_some() {
                self.remove_node(overlay, revision, scope, id, false)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes one node (which must exist) with its delete event; the version goes with its
    /// last node.
    fn remove_node(
        &self,
        overlay: &mut Overlay,
        revision: u64,
        (namespace, service, version): (&String, &String, &String),
        node_id: &str,
        expired: bool,
    ) -> Result<(), StorageError> {
        let key = node_key(namespace, service, version, node_id);
        let node: NodeRecord = self
            .load(overlay, &key)?
            .ok_or_else(|| StorageError::Corrupt("removing a node that is not there".into()))?;
        let vkey = version_key(namespace, service, version);
        let mut record: VersionRecord = self.load(overlay, &vkey)?.ok_or_else(|| {
            StorageError::Corrupt(format!("node of {service}/{version} without its version"))
        })?;
        overlay.values.insert(key, None);
        overlay.usage.push((namespace.clone(), Quota::Nodes, -1));
        overlay.events.push(RegistryEvent::Node(NodeEvent {
            namespace: namespace.clone(),
            service: service.clone(),
            version: version.clone(),
            info: record.info.clone(),
            node: NodeInfo {
                id: node_id.to_string(),
                address: node.address,
                metadata: node.metadata,
            },
            ttl_ms: node.ttl_ms,
            change: Change::Delete,
            expired,
        }));
        record.node_count = record.node_count.checked_sub(1).ok_or_else(|| {
            StorageError::Corrupt(format!("{service}/{version}: node count below zero"))
        })?;
        if record.node_count == 0 {
            overlay.values.insert(vkey, None);
        } else {
            record.mod_revision = revision;
            overlay.values.insert(vkey, Some(record::encode(&record)));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn config_set(
        &self,
        overlay: &mut Overlay,
        revision: u64,
        namespace: &str,
        key: &str,
        path: &[String],
        value: &str,
        max_document_bytes: u64,
    ) -> Result<RegistryResponse, StorageError> {
        let value: Value = match serde_json::from_str(value) {
            Ok(value) => value,
            Err(e) => {
                return Ok(RegistryResponse::Failed(RegistryFailure::InvalidJson(
                    e.to_string(),
                )))
            }
        };
        if path.is_empty() && !value.is_object() {
            return Ok(RegistryResponse::Failed(RegistryFailure::RootNotObject));
        }
        let storage_key = config_key(namespace, key);
        let current = self.load::<ConfigRecord>(overlay, &storage_key)?;
        let mut document: Value = match &current {
            Some(record) => serde_json::from_str(&record.document)
                .map_err(|e| StorageError::Corrupt(format!("config document {key:?}: {e}")))?,
            None => Value::Object(Default::default()),
        };
        if let Err(at) = json::set(&mut document, path, value) {
            return Ok(RegistryResponse::Failed(RegistryFailure::NotAnObject {
                at,
            }));
        }
        let text = document.to_string();
        if text.len() as u64 > max_document_bytes {
            return Ok(RegistryResponse::Failed(
                RegistryFailure::DocumentTooLarge {
                    bytes: text.len() as u64,
                    limit: max_document_bytes,
                },
            ));
        }
        if current.as_ref().is_some_and(|c| c.document == text) {
            return Ok(RegistryResponse::ConfigSet { revision: 0 });
        }
        self.put_config(overlay, revision, namespace, key, current, Some(text));
        Ok(RegistryResponse::ConfigSet { revision })
    }

    fn config_delete(
        &self,
        overlay: &mut Overlay,
        revision: u64,
        namespace: &str,
        key: &str,
        path: &[String],
    ) -> Result<RegistryResponse, StorageError> {
        let storage_key = config_key(namespace, key);
        let Some(current) = self.load::<ConfigRecord>(overlay, &storage_key)? else {
            return Ok(RegistryResponse::ConfigDeleted { revision: 0 });
        };
        if path.is_empty() {
            self.put_config(overlay, revision, namespace, key, Some(current), None);
            return Ok(RegistryResponse::ConfigDeleted { revision });
        }
        let mut document: Value = serde_json::from_str(&current.document)
            .map_err(|e| StorageError::Corrupt(format!("config document {key:?}: {e}")))?;
        if !json::delete(&mut document, path) {
            return Ok(RegistryResponse::ConfigDeleted { revision: 0 });
        }
        let text = document.to_string();
        self.put_config(overlay, revision, namespace, key, Some(current), Some(text));
        Ok(RegistryResponse::ConfigDeleted { revision })
    }

    fn put_config(
        &self,
        overlay: &mut Overlay,
        revision: u64,
        namespace: &str,
        key: &str,
        current: Option<ConfigRecord>,
        document: Option<String>,
    ) {
        let storage_key = config_key(namespace, key);
        let size = |text: Option<&String>| text.map_or(0, |text| (key.len() + text.len()) as i64);
        let count = |text: Option<&String>| i64::from(text.is_some());
        let before = current.as_ref().map(|c| &c.document);
        overlay.usage.push((
            namespace.to_string(),
            Quota::Keys,
            count(document.as_ref()) - count(before),
        ));
        overlay.usage.push((
            namespace.to_string(),
            Quota::Bytes,
            size(document.as_ref()) - size(before),
        ));
        let stored = document.as_ref().map(|text| {
            record::encode(&ConfigRecord {
                document: text.clone(),
                create_revision: current.as_ref().map_or(revision, |c| c.create_revision),
                mod_revision: revision,
                version: current.as_ref().map_or(1, |c| c.version + 1),
            })
        });
        overlay.values.insert(storage_key, stored);
        overlay.events.push(RegistryEvent::Config(ConfigEvent {
            namespace: namespace.to_string(),
            key: key.to_string(),
            old: current.map(|c| c.document),
            new: document,
        }));
    }

    fn load<T: serde::de::DeserializeOwned>(
        &self,
        overlay: &Overlay,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let bytes = match overlay.values.get(key) {
            Some(changed) => changed.clone(),
            None => self.engine.db().get_cf(self.engine.cf(CF_REGISTRY), key)?,
        };
        bytes.map(|b| record::decode(&b)).transpose()
    }

    /// Nodes of every version of `service` but `except` (as stored before this entry).
    fn service_node_count(
        &self,
        namespace: &str,
        service: &str,
        except: Option<&str>,
    ) -> Result<u64, StorageError> {
        let mut prefix = vec![VERSION];
        keys::push_segment(&mut prefix, namespace.as_bytes());
        keys::push_segment(&mut prefix, service.as_bytes());
        let mut total = 0;
        for item in self.scan(&prefix) {
            let (key, value) = item?;
            let names = decode_names(&key, 3)?;
            if Some(names[2].as_str()) == except {
                continue;
            }
            total += record::decode::<VersionRecord>(&value)?.node_count;
        }
        Ok(total)
    }

    // ----- reads -------------------------------------------------------------------------

    fn scan<'a>(&'a self, prefix: &[u8]) -> impl Iterator<Item = Result<Row, StorageError>> + 'a {
        self.scan_at(prefix, None)
    }

    /// A prefix scan of the live state, or of `snapshot` when given.
    fn scan_at<'a>(
        &'a self,
        prefix: &[u8],
        snapshot: Option<&rocksdb::Snapshot<'a>>,
    ) -> impl Iterator<Item = Result<Row, StorageError>> + 'a {
        self.scan_from(prefix, None, snapshot)
    }

    /// Like [`Self::scan_at`], starting at `from` (a key within the prefix) when given.
    fn scan_from<'a>(
        &'a self,
        prefix: &[u8],
        from: Option<&[u8]>,
        snapshot: Option<&rocksdb::Snapshot<'a>>,
    ) -> impl Iterator<Item = Result<Row, StorageError>> + 'a {
        let mut options = ReadOptions::default();
        if let Some(end) = keys::prefix_end(prefix) {
            options.set_iterate_upper_bound(end);
        }
        if let Some(snapshot) = snapshot {
            options.set_snapshot(snapshot);
        }
        self.engine
            .db()
            .iterator_cf_opt(
                self.engine.cf(CF_REGISTRY),
                options,
                IteratorMode::From(from.unwrap_or(prefix), Direction::Forward),
            )
            .map(|item| item.map_err(StorageError::from))
    }

    fn nodes_of(
        &self,
        namespace: &str,
        service: &str,
        version: &str,
    ) -> Result<Vec<(NodeInfo, NodeRecord)>, StorageError> {
        self.nodes_at(namespace, service, version, None)
    }

    fn nodes_at(
        &self,
        namespace: &str,
        service: &str,
        version: &str,
        snapshot: Option<&rocksdb::Snapshot<'_>>,
    ) -> Result<Vec<(NodeInfo, NodeRecord)>, StorageError> {
        let mut nodes = Vec::new();
        for item in self.scan_at(&node_prefix(namespace, service, version), snapshot) {
            let (key, value) = item?;
            let names = decode_names(&key, 4)?;
            let stored: NodeRecord = record::decode(&value)?;
            nodes.push((
                NodeInfo {
                    id: names[3].clone(),
                    address: stored.address.clone(),
                    metadata: stored.metadata.clone(),
                },
                stored,
            ));
        }
        Ok(nodes)
    }

    /// Every (service, version) with its nodes, in `namespace` (all when `None`), of
    /// `service` (all when `None`), ordered by namespace, service, version.
    pub fn services(
        &self,
        namespace: Option<&str>,
        service: Option<&str>,
    ) -> Result<Vec<ServiceView>, StorageError> {
        self.services_in(namespace, service, None)
    }

    fn services_in(
        &self,
        namespace: Option<&str>,
        service: Option<&str>,
        snapshot: Option<&rocksdb::Snapshot<'_>>,
    ) -> Result<Vec<ServiceView>, StorageError> {
        Ok(self
            .services_paged(namespace, service, None, usize::MAX, snapshot)?
            .0)
    }

    /// Whole services in key order (namespace, then name), after the service `after` names (a
    /// page token: see [`ServicePage::next`]), until one ends with `max_nodes` or more nodes
    /// read: (the services, the token of the last one if more follow). A service is never
    /// split, so a page holds at most `max_nodes` plus one service's nodes. A token from
    /// elsewhere only moves the start within this namespace's keys.
    fn services_paged(
        &self,
        namespace: Option<&str>,
        service: Option<&str>,
        after: Option<&[u8]>,
        max_nodes: usize,
        snapshot: Option<&rocksdb::Snapshot<'_>>,
    ) -> Result<(Vec<ServiceView>, Option<Vec<u8>>), StorageError> {
        let mut prefix = vec![VERSION];
        if let Some(namespace) = namespace {
            keys::push_segment(&mut prefix, namespace.as_bytes());
            // One service of one namespace: seek to it rather than read the others.
            if let Some(service) = service {
                keys::push_segment(&mut prefix, service.as_bytes());
            }
        }
        let from = after
            .and_then(keys::prefix_end)
            .filter(|from| from.as_slice() > prefix.as_slice());
        let mut out: Vec<ServiceView> = Vec::new();
        let mut nodes_read = 0usize;
        for item in self.scan_from(&prefix, from.as_deref(), snapshot) {
            let (key, value) = item?;
            let names = decode_names(&key, 3)?;
            if service.is_some_and(|s| s != names[1]) {
                continue;
            }
            let new_service = out
                .last()
                .is_none_or(|last| last.service != names[1] || last.namespace != names[0]);
            if new_service && nodes_read >= max_nodes {
                let last = out
                    .last()
                    .expect("a page holds a service before it is full");
                let mut token = vec![VERSION];
                keys::push_segment(&mut token, last.namespace.as_bytes());
                keys::push_segment(&mut token, last.service.as_bytes());
                return Ok((out, Some(token)));
            }
            let record: VersionRecord = record::decode(&value)?;
            let nodes = self.nodes_at(&names[0], &names[1], &names[2], snapshot)?;
            nodes_read += nodes.len().max(1);
            let mut names = names.into_iter();
            out.push(ServiceView {
                namespace: names.next().expect("three names"),
                service: names.next().expect("three names"),
                version: names.next().expect("three names"),
                record,
                nodes,
            });
        }
        Ok((out, None))
    }

    /// The last revision that changed registry or config state.
    pub fn revision(&self) -> Result<u64, StorageError> {
        self.meta_u64(META_REVISION)
    }

    /// Like [`Self::services`], with the revision it reflects, read from one RocksDB snapshot
    /// (apply writes each entry's batch atomically): a watcher that replays history after that
    /// revision misses nothing and sees nothing twice, however busy the registry is.
    pub fn services_at(
        &self,
        namespace: Option<&str>,
        service: Option<&str>,
    ) -> Result<(u64, Vec<ServiceView>), StorageError> {
        let snapshot = self.engine.db().snapshot();
        let revision = match snapshot.get_cf(self.engine.cf(CF_REGISTRY), META_REVISION)? {
            Some(bytes) => read_u64(&bytes)?,
            None => 0,
        };
        let services = self.services_in(namespace, service, Some(&snapshot))?;
        Ok((revision, services))
    }

    /// One page of [`Self::services_at`]: whole services of `namespace` (every namespace if
    /// `None`) after the page token `after`, ending with the service at which `max_nodes` nodes
    /// have been read.
    pub fn services_page(
        &self,
        namespace: Option<&str>,
        after: Option<&[u8]>,
        max_nodes: usize,
    ) -> Result<ServicePage, StorageError> {
        let snapshot = self.engine.db().snapshot();
        let revision = match snapshot.get_cf(self.engine.cf(CF_REGISTRY), META_REVISION)? {
            Some(bytes) => read_u64(&bytes)?,
            None => 0,
        };
        let (services, next) =
            self.services_paged(namespace, None, after, max_nodes, Some(&snapshot))?;
        Ok(ServicePage {
            revision,
            services,
            next,
        })
    }

    /// Counts every registered node, and every config document (as a key, and its key and
    /// text as bytes), into `usage` by namespace: the recount stored usage must match.
    pub fn recount_usage(&self, usage: &mut BTreeMap<String, Usage>) -> Result<(), StorageError> {
        for item in self.scan(&[NODE]) {
            let (key, _) = item?;
            let names = decode_names(&key, 4)?;
            usage
                .entry(names[0].clone())
                .or_default()
                .add(Quota::Nodes, 1);
        }
        for item in self.scan(&[CONFIG]) {
            let (key, value) = item?;
            let names = decode_names(&key, 2)?;
            let stored: ConfigRecord = record::decode(&value)?;
            let counts = usage.entry(names[0].clone()).or_default();
            counts.add(Quota::Keys, 1);
            counts.add(
                Quota::Bytes,
                (names[1].len() + stored.document.len()) as u64,
            );
        }
        Ok(())
    }

    /// Every node's lease parameters, for the leader.
    pub fn lease_rows(&self) -> Result<Vec<LeaseRow>, StorageError> {
        let mut rows = Vec::new();
        for item in self.scan(&[NODE]) {
            let (key, value) = item?;
            let stored: NodeRecord = record::decode(&value)?;
            rows.push(LeaseRow {
                key: key.to_vec(),
                ttl_ms: stored.ttl_ms,
                mod_revision: stored.mod_revision,
            });
        }
        Ok(rows)
    }

    /// For a registration: the storage keys and mod revisions of its nodes when it would change
    /// nothing (an identical re-registration, a pure keepalive); `None` when it would.
    pub fn unchanged_by(
        &self,
        command: &RegistryCommand,
    ) -> Result<Option<Vec<NodeLease>>, StorageError> {
        let RegistryCommand::Register {
            namespace,
            service,
            version,
            info,
            nodes,
            ttl_ms,
            ..
        } = command
        else {
            return Ok(None);
        };
        let overlay = Overlay::default();
        let Some(current) =
            self.load::<VersionRecord>(&overlay, &version_key(namespace, service, version))?
        else {
            return Ok(None);
        };
        if &current.info != info {
            return Ok(None);
        }
        let mut leases = Vec::with_capacity(nodes.len());
        for node in nodes {
            let key = node_key(namespace, service, version, &node.id);
            match self.load::<NodeRecord>(&overlay, &key)? {
                Some(old)
                    if old.address == node.address
                        && old.metadata == node.metadata
                        && old.ttl_ms == *ttl_ms =>
                {
                    leases.push((key, old.mod_revision));
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(leases))
    }

    /// A config document and its revisions.
    pub fn config(&self, namespace: &str, key: &str) -> Result<Option<ConfigRecord>, StorageError> {
        self.load(&Overlay::default(), &config_key(namespace, key))
    }

    /// Config keys of `namespace` starting with `prefix`, after `start_after`, at most `limit`.
    pub fn config_keys(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, ConfigRecord)>, StorageError> {
        // Escaped, a name's prefix is a prefix of its encoded segment: a range scan.
        let mut scan_prefix = vec![CONFIG];
        keys::push_segment(&mut scan_prefix, namespace.as_bytes());
        keys::push_escaped(&mut scan_prefix, prefix.as_bytes());
        // Start at `start_after` itself (skipped below) when it is past the prefix's start.
        let start = match start_after {
            Some(after) if after > prefix => config_key(namespace, after),
            _ => scan_prefix.clone(),
        };
        let mut options = ReadOptions::default();
        if let Some(end) = keys::prefix_end(&scan_prefix) {
            options.set_iterate_upper_bound(end);
        }
        let items = self.engine.db().iterator_cf_opt(
            self.engine.cf(CF_REGISTRY),
            options,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in items {
            let (key, value) = item?;
            let names = decode_names(&key, 2)?;
            let name = &names[1];
            if start_after.is_some_and(|after| name.as_str() <= after) {
                continue;
            }
            out.push((name.clone(), record::decode(&value)?));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// History from revision `from`, at most `limit` revisions.
    pub fn history(&self, from: u64, limit: usize) -> Result<HistoryPage, StorageError> {
        let floor = self.history_floor()?;
        let mut revisions = Vec::new();
        let start = from.to_be_bytes();
        let iter = self.engine.db().iterator_cf(
            self.engine.cf(CF_REGISTRY_HISTORY),
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter.take(limit) {
            let (key, value) = item?;
            revisions.push((read_u64(&key)?, record::decode(&value)?));
        }
        Ok(HistoryPage { revisions, floor })
    }

    pub fn history_floor(&self) -> Result<u64, StorageError> {
        self.meta_u64(META_HISTORY_FLOOR)
    }

    fn meta_u64(&self, key: &[u8]) -> Result<u64, StorageError> {
        match self.engine.db().get_cf(self.engine.cf(CF_REGISTRY), key)? {
            Some(bytes) => read_u64(&bytes),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use strata_storage::kv::KvState;

    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        kv: KvState,
        state: RegistryState,
        revision: u64,
    }

    impl Fixture {
        fn new(retain: u64) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let engine = Engine::open(dir.path()).unwrap();
            Self {
                _dir: dir,
                kv: KvState::new(engine.clone()),
                state: RegistryState::new(engine, retain),
                revision: 0,
            }
        }

        fn apply(&mut self, command: RegistryCommand) -> (RegistryResponse, Vec<RegistryEvent>) {
            self.revision += 1;
            let mut txn = StateTxn::new(self.revision);
            let out = self.state.apply(&mut txn, &command).unwrap();
            self.kv.commit(txn).unwrap();
            out
        }
    }

    fn node(id: &str, address: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            address: address.into(),
            metadata: BTreeMap::from([("zone".into(), "a".into())]),
        }
    }

    fn register(version: &str, nodes: Vec<NodeInfo>) -> RegistryCommand {
        RegistryCommand::Register {
            namespace: "ns".into(),
            service: "greeter".into(),
            version: version.into(),
            info: ServiceInfo::default(),
            nodes,
            ttl_ms: 30_000,
            max_nodes: 3,
        }
    }

    fn changes(events: &[RegistryEvent]) -> Vec<(String, Change, bool)> {
        events
            .iter()
            .map(|e| match e {
                RegistryEvent::Node(n) => (n.node.id.clone(), n.change, n.expired),
                RegistryEvent::Config(_) | RegistryEvent::Version(_) => panic!("not a node event"),
            })
            .collect()
    }

    #[test]
    fn listing_pages_hold_whole_services_and_join_into_the_whole_list() {
        let mut f = Fixture::new(100);
        // Service names whose encodings test the order: "a" < "a-b" < "ab" < "b".
        for (namespace, service, nodes) in [
            ("ns", "b", 1),
            ("ns", "a", 2),
            ("ns", "ab", 1),
            ("ns", "a-b", 3),
            ("other", "a", 1),
        ] {
            for version in ["v1", "v2"] {
                f.apply(RegistryCommand::Register {
                    namespace: namespace.into(),
                    service: service.into(),
                    version: version.into(),
                    info: ServiceInfo::default(),
                    nodes: (0..nodes)
                        .map(|i| node(&format!("{service}-{version}-{i}"), "h:1"))
                        .collect(),
                    ttl_ms: 30_000,
                    max_nodes: 10,
                });
            }
        }
        let names = |views: &[ServiceView]| -> Vec<String> {
            views
                .iter()
                .map(|v| format!("{}/{}/{}", v.namespace, v.service, v.version))
                .collect()
        };
        let whole = names(&f.state.services(Some("ns"), None).unwrap());
        assert_eq!(whole.len(), 8);
        for max_nodes in [1, 2, 3, 5, 100] {
            let mut joined = Vec::new();
            let mut after: Option<Vec<u8>> = None;
            let mut pages = 0;
            loop {
                let page = f
                    .state
                    .services_page(Some("ns"), after.as_deref(), max_nodes)
                    .unwrap();
                pages += 1;
                assert!(!page.services.is_empty(), "an empty page at {max_nodes}");
                // Whole services only: both versions of each service are on one page.
                let services: std::collections::BTreeSet<_> =
                    page.services.iter().map(|v| v.service.clone()).collect();
                assert_eq!(page.services.len(), services.len() * 2, "{max_nodes}");
                joined.extend(names(&page.services));
                match page.next {
                    Some(token) => after = Some(token),
                    None => break,
                }
                assert!(pages <= 8, "pages never end at {max_nodes}");
            }
            assert_eq!(joined, whole, "max_nodes {max_nodes}");
        }
        // Every namespace: both namespaces, each whole.
        let all = f.state.services_page(None, None, 100).unwrap();
        assert_eq!(all.services.len(), 10);
        assert!(all.next.is_none());
        // A token from another namespace moves the start only within this one.
        let foreign = f.state.services_page(Some("other"), None, 1).unwrap();
        assert!(foreign.next.is_none());
        let mut token = vec![VERSION];
        keys::push_segment(&mut token, b"zzz");
        let page = f
            .state
            .services_page(Some("ns"), Some(&token), 100)
            .unwrap();
        assert!(page.services.is_empty() && page.next.is_none());
        let page = f
            .state
            .services_page(Some("ns"), Some(&[0u8][..]), 100)
            .unwrap();
        assert_eq!(names(&page.services), whole);
    }

    #[test]
    fn register_merges_by_id_and_identical_is_silent() {
        let mut f = Fixture::new(100);
        let (response, events) = f.apply(register("v1", vec![node("a", "h:1")]));
        assert_eq!(
            response,
            RegistryResponse::Registered {
                revision: 1,
                created: 1,
                updated: 0
            }
        );
        assert_eq!(changes(&events), vec![("a".into(), Change::Create, false)]);
        // A second node merges; the first, unchanged, emits nothing.
        let (_, events) = f.apply(register("v1", vec![node("a", "h:1"), node("b", "h:2")]));
        assert_eq!(changes(&events), vec![("b".into(), Change::Create, false)]);
        // Identical: no event, no revision, and `unchanged_by` calls it a keepalive.
        let same = register("v1", vec![node("a", "h:1"), node("b", "h:2")]);
        let leases = f.state.unchanged_by(&same).unwrap().expect("a keepalive");
        assert_eq!(leases.len(), 2);
        let (response, events) = f.apply(same);
        assert_eq!(response.revision(), 0);
        assert!(events.is_empty());
        // A changed address is an update.
        let moved = register("v1", vec![node("a", "h:9")]);
        assert!(f.state.unchanged_by(&moved).unwrap().is_none());
        let (_, events) = f.apply(moved);
        assert_eq!(changes(&events), vec![("a".into(), Change::Update, false)]);
        let views = f.state.services(Some("ns"), Some("greeter")).unwrap();
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].nodes.len(), 2);
        assert_eq!(views[0].record.node_count, 2);
        assert_eq!(f.state.revision().unwrap(), 4);
    }

    #[test]
    fn node_limit_counts_every_version() {
        let mut f = Fixture::new(100);
        f.apply(register("v1", vec![node("a", "h:1"), node("b", "h:2")]));
        let (response, events) = f.apply(register("v2", vec![node("c", "h:3"), node("d", "h:4")]));
        assert_eq!(
            response,
            RegistryResponse::Failed(RegistryFailure::TooManyNodes {
                limit: 3,
                would_have: 4
            })
        );
        assert!(events.is_empty());
        assert_eq!(f.state.services(Some("ns"), None).unwrap().len(), 1);
        let (response, _) = f.apply(register("v2", vec![node("c", "h:3")]));
        assert_eq!(response.revision(), 3);
    }

    #[test]
    fn deregister_and_expiry_remove_nodes_then_the_version() {
        let mut f = Fixture::new(100);
        f.apply(register("v1", vec![node("a", "h:1"), node("b", "h:2")]));
        let (_, events) = f.apply(RegistryCommand::Deregister {
            namespace: "ns".into(),
            service: "greeter".into(),
            version: "v1".into(),
            node_ids: vec!["a".into(), "missing".into()],
        });
        assert_eq!(changes(&events), vec![("a".into(), Change::Delete, false)]);
        let rows = f.state.lease_rows().unwrap();
        assert_eq!(rows.len(), 1);
        // An expiry judged on an older version of the node is ignored.
        let (response, _) = f.apply(RegistryCommand::Expire {
            nodes: vec![ExpireNode {
                key: rows[0].key.clone(),
                mod_revision: 99,
            }],
        });
        assert_eq!(response.revision(), 0);
        let (response, events) = f.apply(RegistryCommand::Expire {
            nodes: vec![ExpireNode {
                key: rows[0].key.clone(),
                mod_revision: rows[0].mod_revision,
            }],
        });
        assert_eq!(
            response,
            RegistryResponse::Expired {
                revision: 4,
                expired: 1
            }
        );
        assert_eq!(changes(&events), vec![("b".into(), Change::Delete, true)]);
        match &events[0] {
            RegistryEvent::Node(event) => assert_eq!(event.node.address, "h:2"),
            other => panic!("not a node event: {other:?}"),
        }
        assert!(f.state.services(None, None).unwrap().is_empty());
        // Deregistering with no node ids removes every node of the version.
        f.apply(register("v1", vec![node("a", "h:1"), node("b", "h:2")]));
        let (response, events) = f.apply(RegistryCommand::Deregister {
            namespace: "ns".into(),
            service: "greeter".into(),
            version: "v1".into(),
            node_ids: vec![],
        });
        assert_eq!(events.len(), 2);
        assert!(matches!(
            response,
            RegistryResponse::Deregistered { removed: 2, .. }
        ));
        assert!(f.state.services(None, None).unwrap().is_empty());
    }

    #[test]
    fn config_set_merge_delete_with_old_and_new() {
        let mut f = Fixture::new(100);
        let set = |path: &str, value: &str| RegistryCommand::ConfigSet {
            namespace: "ns".into(),
            key: "app".into(),
            path: json::parse_path(path).unwrap(),
            value: value.into(),
            max_document_bytes: 64,
        };
        let (response, events) = f.apply(set("db", r#"{"host":"a","port":1}"#));
        assert_eq!(response, RegistryResponse::ConfigSet { revision: 1 });
        assert!(matches!(&events[0], RegistryEvent::Config(e) if e.old.is_none()));
        f.apply(set("db", r#"{"port":2}"#));
        let record = f.state.config("ns", "app").unwrap().unwrap();
        assert_eq!(record.document, r#"{"db":{"host":"a","port":2}}"#);
        assert_eq!(record.version, 2);
        let (response, _) = f.apply(set("db.port.x", "1"));
        assert_eq!(
            response,
            RegistryResponse::Failed(RegistryFailure::NotAnObject {
                at: "db.port".into()
            })
        );
        let (response, _) = f.apply(set("", "5"));
        assert_eq!(
            response,
            RegistryResponse::Failed(RegistryFailure::RootNotObject)
        );
        let (response, _) = f.apply(set("big", &format!("{:?}", "x".repeat(64))));
        assert!(matches!(
            response,
            RegistryResponse::Failed(RegistryFailure::DocumentTooLarge { .. })
        ));
        assert_eq!(f.state.config("ns", "app").unwrap().unwrap().version, 2);
        let delete = |path: &str| RegistryCommand::ConfigDelete {
            namespace: "ns".into(),
            key: "app".into(),
            path: json::parse_path(path).unwrap(),
        };
        let (_, events) = f.apply(delete("db.host"));
        match &events[0] {
            RegistryEvent::Config(e) => {
                assert_eq!(e.old.as_deref(), Some(r#"{"db":{"host":"a","port":2}}"#));
                assert_eq!(e.new.as_deref(), Some(r#"{"db":{"port":2}}"#));
            }
            other => panic!("not a config event: {other:?}"),
        }
        assert_eq!(f.apply(delete("nope")).0.revision(), 0);
        f.apply(delete(""));
        assert!(f.state.config("ns", "app").unwrap().is_none());
        // Other namespaces never see it.
        assert!(f
            .state
            .config_keys("other", "", None, 10)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn history_is_kept_per_revision_and_trimmed() {
        let mut f = Fixture::new(4);
        for i in 0..12 {
            f.apply(register("v1", vec![node("a", &format!("h:{i}"))]));
        }
        let page = f.state.history(0, 100).unwrap();
        assert!(page.floor > 0, "history was trimmed");
        assert_eq!(page.revisions.first().unwrap().0, page.floor);
        assert_eq!(page.revisions.last().unwrap().0, 12);
        let (revision, views) = f.state.services_at(None, None).unwrap();
        assert_eq!(revision, 12);
        assert_eq!(views[0].nodes[0].0.address, "h:11");
    }
}
