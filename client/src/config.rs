//! Dynamic config: a JSON document per key, read and written by dotted path, with secrets.
//!
//! ```no_run
//! # async fn demo() -> Result<(), strata_client::Error> {
//! use serde_json::json;
//! let client = strata_client::Client::connect("127.0.0.1:7420").await?;
//! let config = client.config();
//! config.set("billing", "db", &json!({"host": "db-1", "port": 5432})).await?;
//! config.set_secret("billing", "db.password", &json!("hunter2")).await?;
//! assert_eq!(config.get("billing", "db.port").await?, json!(5432));
//! assert_eq!(config.get("billing", "db.password").await?, json!("[secret]"));
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use serde_json::Value;
pub use strata_proto::config::v1 as proto;

use crate::retry::{Endpoints, Safety};
use crate::{ConfigGrpc, Consistency, Error};

/// A whole document and its revisions.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub value: Value,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
}

/// One change of a watched value.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// `Value::Null` when absent.
    pub old: Value,
    pub new: Value,
    pub revision: u64,
}

#[derive(Clone)]
pub struct Config {
    endpoints: Arc<Endpoints<ConfigGrpc>>,
}

impl Config {
    pub(crate) fn new(endpoints: Arc<Endpoints<ConfigGrpc>>) -> Self {
        Self { endpoints }
    }

    /// The value at `path`, choosing whether secrets are decrypted and how consistent the read
    /// is.
    pub async fn get_with(
        &self,
        key: &str,
        path: &str,
        secrets: bool,
        consistency: Consistency,
    ) -> Result<Value, Error> {
        let request = proto::GetRequest {
            key: key.into(),
            path: path.into(),
            secrets,
            consistency: consistency.proto(),
        };
        let response = self
            .endpoints
            .call(Safety::Read, |mut client| {
                let request = request.clone();
                async move { client.get(request).await }
            })
            .await?;
        parse(&response.value)
    }

    /// The value at `path` ("" for the whole document; `null` when absent), secrets masked.
    /// [`Error::NotFound`] when the document does not exist.
    pub async fn get(&self, key: &str, path: &str) -> Result<Value, Error> {
        self.get_with(key, path, false, Consistency::Linearizable)
            .await
    }

    /// Like [`Self::get`], with secrets decrypted.
    pub async fn get_with_secrets(&self, key: &str, path: &str) -> Result<Value, Error> {
        self.get_with(key, path, true, Consistency::Linearizable)
            .await
    }

    /// Like [`Self::get`], from whichever node answers, possibly behind the leader.
    pub async fn get_serializable(&self, key: &str, path: &str) -> Result<Value, Error> {
        self.get_with(key, path, false, Consistency::Serializable)
            .await
    }

    async fn set_raw(
        &self,
        key: &str,
        path: &str,
        value: &Value,
        secret: bool,
    ) -> Result<u64, Error> {
        let request = proto::SetRequest {
            key: key.into(),
            path: path.into(),
            value: value.to_string(),
            secret,
        };
        // Setting the same value twice leaves the same document: safe to retry.
        let response = self
            .endpoints
            .call(Safety::Idempotent, |mut client| {
                let request = request.clone();
                async move { client.set(request).await }
            })
            .await?;
        Ok(response.revision)
    }

    /// Writes `value` at `path`: an object merges into an object there, anything else
    /// replaces. Returns the revision (0: the document was already so).
    pub async fn set(&self, key: &str, path: &str, value: &Value) -> Result<u64, Error> {
        self.set_raw(key, path, value, false).await
    }

    /// Like [`Self::set`], each leaf encrypted at rest.
    pub async fn set_secret(&self, key: &str, path: &str, value: &Value) -> Result<u64, Error> {
        self.set_raw(key, path, value, true).await
    }

    /// Removes the subtree at `path`, or the document for "". Returns the revision (0: nothing
    /// was there).
    pub async fn delete(&self, key: &str, path: &str) -> Result<u64, Error> {
        let request = proto::DeleteRequest {
            key: key.into(),
            path: path.into(),
        };
        let response = self
            .endpoints
            .call(Safety::Idempotent, |mut client| {
                let request = request.clone();
                async move { client.delete(request).await }
            })
            .await?;
        Ok(response.revision)
    }

    /// The whole document with its revisions; secrets masked unless `secrets`.
    pub async fn read(&self, key: &str, secrets: bool) -> Result<Document, Error> {
        let request = proto::ReadRequest {
            key: key.into(),
            secrets,
            consistency: Consistency::Linearizable.proto(),
        };
        let response = self
            .endpoints
            .call(Safety::Read, |mut client| {
                let request = request.clone();
                async move { client.read(request).await }
            })
            .await?;
        Ok(Document {
            value: parse(&response.document)?,
            create_revision: response.create_revision,
            mod_revision: response.mod_revision,
            version: response.version,
        })
    }

    /// Document keys starting with `prefix`, every page.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        let mut start_after = String::new();
        loop {
            let request = proto::ListKeysRequest {
                prefix: prefix.into(),
                start_after: start_after.clone(),
                limit: 1_000,
                consistency: Consistency::Linearizable.proto(),
            };
            let response = self
                .endpoints
                .call(Safety::Read, |mut client| {
                    let request = request.clone();
                    async move { client.list_keys(request).await }
                })
                .await?;
            keys.extend(response.keys);
            if response.next_start_after.is_empty() {
                return Ok(keys);
            }
            start_after = response.next_start_after;
        }
    }

    /// Changes of the value at `path` of `key`, from `start_revision` (0: from now).
    pub async fn watch(
        &self,
        key: &str,
        path: &str,
        start_revision: u64,
        secrets: bool,
    ) -> Result<ConfigWatch, Error> {
        let request = proto::WatchRequest {
            key: key.into(),
            path: path.into(),
            start_revision,
            secrets,
            progress_interval_ms: crate::watch::PROGRESS.as_millis() as u32,
        };
        let inner = crate::watch::open(
            self.endpoints.clone(),
            request,
            |mut client, request| async move { client.watch(request).await },
        )
        .await?;
        Ok(ConfigWatch { inner })
    }
}

crate::watch::revision_watch!(proto::WatchRequest, proto::WatchResponse);

fn parse(text: &str) -> Result<Value, Error> {
    serde_json::from_str(text).map_err(|e| {
        Error::Status(tonic::Status::internal(format!(
            "the server sent invalid JSON: {e}"
        )))
    })
}

/// Changes of one watched value (progress messages are skipped).
pub struct ConfigWatch {
    inner: crate::watch::Resumable<proto::WatchResponse>,
}

impl Stream for ConfigWatch {
    type Item = Result<Change, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(response))) if !response.changed => continue,
                Poll::Ready(Some(Ok(response))) => {
                    let change = parse(&response.old_value).and_then(|old| {
                        Ok(Change {
                            old,
                            new: parse(&response.new_value)?,
                            revision: response.revision,
                        })
                    });
                    return Poll::Ready(Some(change));
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
