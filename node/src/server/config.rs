//! `strata.config.v1.Config`: JSON documents with dotted-path access. Values are parsed and
//! checked here, secrets sealed here (before they are proposed: no plaintext in the log or the
//! state), and the merge itself is applied through the log, so concurrent sets never lose
//! each other's keys.

use std::sync::Arc;

use serde_json::Value;
use strata_proto::config::v1 as pb;
use strata_raft::RaftNode;
use strata_registry::{json, ConfigEvent, RegistryCommand, RegistryEvent, RegistryResponse};
use tonic::{Code, Request, Response, Status};

use super::history::{self, Follower, Pump};
use super::metrics::Metrics;
use super::secrets::{self, SecretKey};
use super::{namespace, registry, status, validate};

#[derive(Clone)]
pub struct ConfigService {
    node: RaftNode,
    metrics: Metrics,
    max_value_bytes: usize,
    secret_key: Option<Arc<SecretKey>>,
    stopping: tokio::sync::watch::Receiver<bool>,
}

/// Reveals secrets inside values read from one document: decrypted, or masked.
#[derive(Clone)]
struct Revealer {
    key: Option<Arc<SecretKey>>,
    context: Vec<u8>,
    decrypt: bool,
}

impl Revealer {
    fn reveal(&self, mut value: Value) -> Result<Value, Status> {
        if !self.decrypt {
            return Ok(json::masked(value));
        }
        json::map_secrets(&mut value, &mut |sealed| {
            let key = self.key.as_ref().ok_or_else(no_key)?;
            let plain = key.open(&self.context, sealed).map_err(|e| {
                status::with_code(Code::Internal, "secret_unreadable", e.to_string())
            })?;
            serde_json::from_slice(&plain)
                .map_err(|e| status::with_code(Code::Internal, "secret_unreadable", e.to_string()))
        })?;
        Ok(value)
    }

    /// The value at `path` of a document (JSON text), revealed; `null` when absent.
    fn at(&self, document: Option<&str>, path: &[String]) -> Result<Value, Status> {
        let Some(text) = document else {
            return Ok(Value::Null);
        };
        let document: Value = serde_json::from_str(text).map_err(|e| {
            status::with_code(Code::Internal, "storage", format!("stored document: {e}"))
        })?;
        match json::get(&document, path) {
            Some(value) => self.reveal(value.clone()),
            None => Ok(Value::Null),
        }
    }
}

fn no_key() -> Status {
    status::with_code(
        Code::FailedPrecondition,
        "no_secret_key",
        "this node has no secret key: start it with --secret-key-file (the same file on every \
         node; create one with `strata cert secret-key`)"
            .into(),
    )
}

fn key_name(key: &str) -> Result<(), Status> {
    validate::name("key", key)
}

fn path_of(path: &str) -> Result<Vec<String>, Status> {
    json::parse_path(path).map_err(validate::invalid)
}

impl ConfigService {
    pub fn new(
        node: RaftNode,
        metrics: Metrics,
        max_value_bytes: usize,
        secret_key: Option<Arc<SecretKey>>,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            node,
            metrics,
            max_value_bytes,
            secret_key,
            stopping,
        }
    }

    pub fn node(&self) -> &RaftNode {
        &self.node
    }

    async fn read_barrier(&self, consistency: i32) -> Result<(), Status> {
        match validate::enumeration::<pb::Consistency>("consistency", consistency)? {
            pb::Consistency::Serializable => Ok(()),
            pb::Consistency::Unspecified | pb::Consistency::Linearizable => {
                self.node.linearizable_barrier().await.map_err(status::read)
            }
        }
    }

    fn revealer(&self, namespace: &str, key: &str, decrypt: bool) -> Revealer {
        Revealer {
            key: self.secret_key.clone(),
            context: secrets::context(namespace, key),
            decrypt,
        }
    }

    async fn write(&self, command: RegistryCommand) -> Result<u64, Status> {
        match self
            .node
            .write_registry(command)
            .await
            .map_err(status::write)?
        {
            RegistryResponse::Failed(f) => Err(registry::failure(&f)),
            response => Ok(response.revision()),
        }
    }

    /// The value at `path` (dotted) of document `key`, revealed or masked, with its record;
    /// NOT_FOUND when the document does not exist, `null` when the path does not. Reads the
    /// local state: the caller chooses the read barrier.
    pub fn value_at(
        &self,
        namespace: &str,
        key: &str,
        path: &str,
        secrets: bool,
    ) -> Result<(Value, strata_registry::ConfigRecord), Status> {
        key_name(key)?;
        let path = path_of(path)?;
        let record = self.document(namespace, key)?;
        let value = self
            .revealer(namespace, key, secrets)
            .at(Some(&record.document), &path)?;
        Ok((value, record))
    }

    /// Merges the JSON text `value` at `path` of document `key` through the log (objects key
    /// by key, anything else replaces), sealing every leaf when `secret`. Returns the revision
    /// (0 when the document was already so).
    pub async fn set_at(
        &self,
        namespace: String,
        key: String,
        path: &str,
        value: &str,
        secret: bool,
    ) -> Result<u64, Status> {
        key_name(&key)?;
        let path = path_of(path)?;
        validate::value("value", value.as_bytes(), self.max_value_bytes)?;
        let value: Value = serde_json::from_str(value)
            .map_err(|e| validate::invalid(format!("value is not valid JSON: {e}")))?;
        if json::uses_marker(&value) {
            return Err(validate::invalid(format!(
                "value uses the reserved object key {:?}; to store a secret, set \
                 secret=true",
                json::SECRET_MARKER
            )));
        }
        if path.is_empty() && !value.is_object() {
            return Err(validate::invalid(
                "a document is a JSON object: set an object at the empty path, or \
                 give a path for other values"
                    .into(),
            ));
        }
        let value = if secret {
            let sealer = self.secret_key.as_ref().ok_or_else(no_key)?;
            let context = secrets::context(&namespace, &key);
            json::seal_leaves(value, &mut |leaf| {
                Ok::<_, Status>(sealer.seal(&context, leaf.to_string().as_bytes()))
            })?
        } else {
            value
        };
        self.write(RegistryCommand::ConfigSet {
            namespace,
            key,
            path,
            value: value.to_string(),
            max_document_bytes: self.max_value_bytes as u64,
        })
        .await
    }

    /// Removes the subtree at `path` of document `key` through the log; a missing path
    /// changes nothing (revision 0).
    pub async fn delete_at(
        &self,
        namespace: String,
        key: String,
        path: &str,
    ) -> Result<u64, Status> {
        key_name(&key)?;
        let path = path_of(path)?;
        self.write(RegistryCommand::ConfigDelete {
            namespace,
            key,
            path,
        })
        .await
    }

    pub fn document(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<strata_registry::ConfigRecord, Status> {
        self.node
            .registry()
            .config(namespace, key)
            .map_err(status::storage)?
            .ok_or_else(|| {
                status::with_code(
                    Code::NotFound,
                    "not_found",
                    format!("config document {key:?} does not exist"),
                )
            })
    }
}

#[tonic::async_trait]
impl pb::config_server::Config for ConfigService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        self.metrics
            .observed("ConfigGet", async {
                let namespace = namespace::of(&request)?;
                let request = request.into_inner();
                self.read_barrier(request.consistency).await?;
                let (value, record) =
                    self.value_at(&namespace, &request.key, &request.path, request.secrets)?;
                Ok(pb::GetResponse {
                    value: value.to_string(),
                    revision: record.mod_revision,
                })
            })
            .await
    }

    async fn set(
        &self,
        request: Request<pb::SetRequest>,
    ) -> Result<Response<pb::SetResponse>, Status> {
        self.metrics
            .observed("ConfigSet", async {
                let namespace = namespace::of(&request)?;
                let request = request.into_inner();
                let revision = self
                    .set_at(
                        namespace,
                        request.key,
                        &request.path,
                        &request.value,
                        request.secret,
                    )
                    .await?;
                Ok(pb::SetResponse { revision })
            })
            .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.metrics
            .observed("ConfigDelete", async {
                let namespace = namespace::of(&request)?;
                let request = request.into_inner();
                let revision = self
                    .delete_at(namespace, request.key, &request.path)
                    .await?;
                Ok(pb::DeleteResponse { revision })
            })
            .await
    }

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadResponse>, Status> {
        self.metrics
            .observed("ConfigRead", async {
                let namespace = namespace::of(&request)?;
                let request = request.into_inner();
                key_name(&request.key)?;
                self.read_barrier(request.consistency).await?;
                let record = self.document(&namespace, &request.key)?;
                let document = self
                    .revealer(&namespace, &request.key, request.secrets)
                    .at(Some(&record.document), &[])?;
                Ok(pb::ReadResponse {
                    document: document.to_string(),
                    create_revision: record.create_revision,
                    mod_revision: record.mod_revision,
                    version: record.version,
                })
            })
            .await
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        self.metrics
            .observed("ConfigListKeys", async {
                let namespace = namespace::of(&request)?;
                let request = request.into_inner();
                let limit = validate::list_limit(request.limit)?;
                if request.prefix.len() > validate::MAX_NAME_CHARS
                    || request.start_after.len() > validate::MAX_NAME_CHARS
                {
                    return Err(validate::invalid(format!(
                        "prefix and start_after are at most {} characters",
                        validate::MAX_NAME_CHARS
                    )));
                }
                self.read_barrier(request.consistency).await?;
                let after =
                    (!request.start_after.is_empty()).then_some(request.start_after.as_str());
                let (registry, scope, prefix, after) = (
                    self.node.registry().clone(),
                    namespace.clone(),
                    request.prefix.clone(),
                    after.map(str::to_string),
                );
                let mut keys: Vec<String> = status::blocking(move || {
                    registry.config_keys(&scope, &prefix, after.as_deref(), limit + 1)
                })
                .await?
                .into_iter()
                .map(|(key, _)| key)
                .collect();
                let more = keys.len() > limit;
                keys.truncate(limit);
                let next_start_after = if more {
                    keys.last().cloned().unwrap_or_default()
                } else {
                    String::new()
                };
                Ok(pb::ListKeysResponse {
                    keys,
                    next_start_after,
                })
            })
            .await
    }

    type WatchStream = crate::server::outbox::Inbox<pb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.metrics
            .observed("ConfigWatch", async {
                let namespace = namespace::of(&request)?;
                let request = request.into_inner();
                key_name(&request.key)?;
                let path = path_of(&request.path)?;
                if request.secrets && self.secret_key.is_none() {
                    return Err(no_key());
                }
                let live = self.node.subscribe_registry();
                let start = history::start_revision(&self.node, request.start_revision)?;
                let (sender, receiver) = crate::server::outbox::channel();
                let pump = Pump {
                    node: self.node.clone(),
                    follower: ConfigFollower {
                        revealer: self.revealer(&namespace, &request.key, request.secrets),
                        namespace,
                        key: request.key,
                        path,
                    },
                    next: start,
                    sender,
                    progress: history::progress_interval(request.progress_interval_ms),
                    stopping: self.stopping.clone(),
                };
                tokio::spawn(pump.run(live));
                Ok(receiver)
            })
            .await
    }
}

struct ConfigFollower {
    namespace: String,
    key: String,
    path: Vec<String>,
    revealer: Revealer,
}

impl Follower for ConfigFollower {
    type Feed = history::RegistryFeed;
    type Response = pb::WatchResponse;

    fn render(
        &mut self,
        revision: u64,
        events: &[RegistryEvent],
    ) -> Result<Vec<pb::WatchResponse>, Status> {
        let mut out = Vec::new();
        for event in events {
            let RegistryEvent::Config(ConfigEvent {
                namespace,
                key,
                old,
                new,
            }) = event
            else {
                continue;
            };
            if namespace != &self.namespace || key != &self.key {
                continue;
            }
            // Compared as stored: a secret sealed anew is a change even if it masks alike.
            let raw = |doc: &Option<String>| -> Option<Value> {
                doc.as_deref()
                    .and_then(|text| serde_json::from_str::<Value>(text).ok())
                    .and_then(|d| json::get(&d, &self.path).cloned())
            };
            if raw(old) == raw(new) {
                continue;
            }
            out.push(pb::WatchResponse {
                old_value: self.revealer.at(old.as_deref(), &self.path)?.to_string(),
                new_value: self.revealer.at(new.as_deref(), &self.path)?.to_string(),
                revision,
                changed: true,
            });
        }
        Ok(out)
    }

    fn progress(&self, revision: u64) -> Option<pb::WatchResponse> {
        Some(pb::WatchResponse {
            old_value: String::new(),
            new_value: String::new(),
            revision,
            changed: false,
        })
    }
}
