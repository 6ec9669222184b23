//! The replicated auth state (column family `auth`) and the in-memory view every node checks
//! calls against.
//!
//! Layout, each value a format byte then bincode:
//! - `K` → the signing [`KeyMaterial`]
//! - `A` seg(ns) seg(id) → [`Account`]
//! - `N` seg(ns) seg(name) → account id
//! - `R` seg(ns) seg(rule id) → [`Rule`]
//! - `F` digest → [`RefreshRecord`]; `G` seg(ns) seg(account id) digest → expiry (ms, BE)
//! - `X` seg(jti) → expiry (s, BE); `Y` expiry (s, BE) seg(jti) → empty: revoked access tokens
//!   until they would have expired anyway, pruned by command time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rocksdb::WriteBatch;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strata_storage::engine::CF_AUTH;
use strata_storage::kv::StateTxn;
use strata_storage::{keys, Engine, StorageError};

use crate::command::{AuthCommand, AuthRefusal, AuthResponse};
use crate::model::{Account, Rule};
use crate::token::{KeyMaterial, Signer};

const KEY: u8 = b'K';
const ACCOUNT: u8 = b'A';
const NAME: u8 = b'N';
const RULE: u8 = b'R';
const REFRESH: u8 = b'F';
const REFRESH_BY_ACCOUNT: u8 = b'G';
const REVOKED: u8 = b'X';
const REVOKED_BY_EXPIRY: u8 = b'Y';
const FORMAT: u8 = 1;

/// Stored (key, value) rows.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;
/// A change to the view, made once the command's writes are decided.
type ViewChange = Box<dyn FnOnce(&mut ViewInner)>;

/// Most accounts one namespace holds.
pub const MAX_ACCOUNTS_PER_NAMESPACE: usize = 10_000;
/// Most rules one namespace holds.
pub const MAX_RULES_PER_NAMESPACE: usize = 1_000;
/// Most live refresh tokens per account; issuing one more ends the one expiring first.
pub const MAX_REFRESH_PER_ACCOUNT: usize = 32;
/// Most expired revocations one command prunes (the rest go with later commands).
const PRUNE_PER_COMMAND: usize = 256;

/// A stored refresh token: whose, for which generation, until when.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RefreshRecord {
    pub namespace: String,
    pub account_id: String,
    pub generation: u64,
    pub expires_ms: u64,
}

/// What the gate needs of an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSummary {
    pub generation: u64,
}

#[derive(Default)]
struct ViewInner {
    signer: Option<Arc<Signer>>,
    public_pem: Option<String>,
    /// Namespace → account id → summary (looked up by `&str`, without building a key).
    accounts: HashMap<String, HashMap<String, AccountSummary>>,
    rules: HashMap<String, Arc<Vec<Rule>>>,
    revoked: HashMap<String, u64>,
}

impl ViewInner {
    fn remember(&mut self, account: &Account) {
        self.accounts
            .entry(account.issuer.clone())
            .or_default()
            .insert(
                account.id.clone(),
                AccountSummary {
                    generation: account.generation,
                },
            );
    }
}

/// The in-memory copy of what every call is checked against: the key, which accounts exist at
/// which generation, each namespace's rules and the revoked tokens. Updated as entries apply
/// and rebuilt from the column family at start and after a snapshot install. Cheap to clone.
#[derive(Clone, Default)]
pub struct AuthView {
    inner: Arc<RwLock<ViewInner>>,
}

impl AuthView {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, ViewInner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ViewInner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The signer, once the cluster has a key.
    pub fn signer(&self) -> Option<Arc<Signer>> {
        self.read().signer.clone()
    }

    pub fn public_key_pem(&self) -> Option<String> {
        self.read().public_pem.clone()
    }

    pub fn account(&self, namespace: &str, id: &str) -> Option<AccountSummary> {
        self.read().accounts.get(namespace)?.get(id).cloned()
    }

    /// The namespace's rules (`None`: it has none of its own).
    pub fn rules(&self, namespace: &str) -> Option<Arc<Vec<Rule>>> {
        self.read().rules.get(namespace).cloned()
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.read().revoked.contains_key(jti)
    }
}

/// Reads and applies auth commands over the engine's `auth` column family.
#[derive(Clone)]
pub struct AuthState {
    engine: Engine,
    view: AuthView,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    let mut out = vec![FORMAT];
    bincode::serialize_into(&mut out, value)?;
    Ok(out)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => Ok(bincode::deserialize(rest)?),
        _ => Err(StorageError::Corrupt(
            "auth record of an unknown format".into(),
        )),
    }
}

fn key2(kind: u8, a: &str, b: &str) -> Vec<u8> {
    let mut key = vec![kind];
    keys::push_segment(&mut key, a.as_bytes());
    keys::push_segment(&mut key, b.as_bytes());
    key
}

fn prefix1(kind: u8, a: &str) -> Vec<u8> {
    let mut key = vec![kind];
    keys::push_segment(&mut key, a.as_bytes());
    key
}

fn refresh_key(digest: &[u8; 32]) -> Vec<u8> {
    let mut key = vec![REFRESH];
    key.extend_from_slice(digest);
    key
}

fn revoked_key(jti: &str) -> Vec<u8> {
    prefix1(REVOKED, jti)
}

fn revoked_by_expiry_key(expires_s: u64, jti: &str) -> Vec<u8> {
    let mut key = vec![REVOKED_BY_EXPIRY];
    key.extend_from_slice(&expires_s.to_be_bytes());
    keys::push_segment(&mut key, jti.as_bytes());
    key
}

impl AuthState {
    /// Opens over `engine` and loads the view from what is stored.
    pub fn new(engine: Engine) -> Result<Self, StorageError> {
        let state = Self {
            engine,
            view: AuthView::default(),
        };
        state.reload()?;
        Ok(state)
    }

    pub fn view(&self) -> &AuthView {
        &self.view
    }

    /// Rebuilds the view from the column family (at start, after a snapshot install).
    pub fn reload(&self) -> Result<(), StorageError> {
        let mut fresh = ViewInner::default();
        if let Some(key) = self.get::<KeyMaterial>(&[KEY])? {
            fresh.public_pem = Some(key.public_pem.clone());
            fresh.signer = Some(Arc::new(Signer::new(&key)));
        }
        for (_, account) in self.scan::<Account>(&[ACCOUNT])? {
            fresh.remember(&account);
        }
        let mut rules: HashMap<String, Vec<Rule>> = HashMap::new();
        for (key, rule) in self.scan::<Rule>(&[RULE])? {
            let segments = keys::decode(&key[1..])?;
            let namespace = String::from_utf8(segments[0].clone())
                .map_err(|_| StorageError::Corrupt("rule namespace is not UTF-8".into()))?;
            rules.entry(namespace).or_default().push(rule);
        }
        fresh.rules = rules.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        for (key, expires_s) in self.scan_raw(&[REVOKED])? {
            let segments = keys::decode(&key[1..])?;
            let jti = String::from_utf8(segments[0].clone())
                .map_err(|_| StorageError::Corrupt("jti is not UTF-8".into()))?;
            fresh.revoked.insert(jti, read_u64(&expires_s)?);
        }
        *self.view.write() = fresh;
        Ok(())
    }

    // ----- reads ---------------------------------------------------------------------------

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let db = self.engine.db();
        match db.get_cf(self.engine.cf(CF_AUTH), key)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn scan_raw(&self, prefix: &[u8]) -> Result<Rows, StorageError> {
        let db = self.engine.db();
        let mut out = Vec::new();
        let iter = db.iterator_cf(
            self.engine.cf(CF_AUTH),
            rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    fn scan<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, T)>, StorageError> {
        self.scan_raw(prefix)?
            .into_iter()
            .map(|(key, value)| Ok((key, decode(&value)?)))
            .collect()
    }

    pub fn account(&self, namespace: &str, id: &str) -> Result<Option<Account>, StorageError> {
        self.get(&key2(ACCOUNT, namespace, id))
    }

    pub fn account_by_name(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Account>, StorageError> {
        match self.get::<String>(&key2(NAME, namespace, name))? {
            Some(id) => self.account(namespace, &id),
            None => Ok(None),
        }
    }

    /// Every account of `namespace`, by id.
    pub fn accounts(&self, namespace: &str) -> Result<Vec<Account>, StorageError> {
        Ok(self
            .scan::<Account>(&prefix1(ACCOUNT, namespace))?
            .into_iter()
            .map(|(_, account)| account)
            .collect())
    }

    /// Every rule of `namespace`, by id.
    pub fn rules(&self, namespace: &str) -> Result<Vec<Rule>, StorageError> {
        Ok(self
            .scan::<Rule>(&prefix1(RULE, namespace))?
            .into_iter()
            .map(|(_, rule)| rule)
            .collect())
    }

    pub fn refresh(&self, digest: &[u8; 32]) -> Result<Option<RefreshRecord>, StorageError> {
        self.get(&refresh_key(digest))
    }

    // ----- apply ---------------------------------------------------------------------------

    /// Applies one command at `txn.revision()` with the entry's time; writes go into the
    /// entry's batch and the view changes with them.
    pub fn apply(
        &self,
        txn: &mut StateTxn,
        time_ms: u64,
        command: &AuthCommand,
    ) -> Result<AuthResponse, StorageError> {
        let revision = txn.revision();
        let cf = self.engine.cf(CF_AUTH);
        let batch: &mut WriteBatch = txn.batch_mut();
        let done = AuthResponse::Done { revision };
        let refused = AuthResponse::Refused;
        let mut view_changes: Vec<ViewChange> = Vec::new();
        let response = match command {
            AuthCommand::Init { key, root } => {
                if self.get::<KeyMaterial>(&[KEY])?.is_some() {
                    refused(AuthRefusal::AlreadyInitialized)
                } else {
                    batch.put_cf(cf, [KEY], encode(key)?);
                    let mut root = root.clone();
                    root.generation = revision;
                    root.created_ms = time_ms;
                    self.put_account(batch, &root)?;
                    let key = key.clone();
                    view_changes.push(Box::new(move |view| {
                        view.public_pem = Some(key.public_pem.clone());
                        view.signer = Some(Arc::new(Signer::new(&key)));
                        view.remember(&root);
                    }));
                    done
                }
            }
            AuthCommand::CreateAccount { account } => {
                let namespace = &account.issuer;
                if self.account(namespace, &account.id)?.is_some() {
                    refused(AuthRefusal::AccountExists)
                } else if self
                    .get::<String>(&key2(NAME, namespace, &account.name))?
                    .is_some()
                {
                    refused(AuthRefusal::NameTaken)
                } else if self.count(&prefix1(ACCOUNT, namespace))? >= MAX_ACCOUNTS_PER_NAMESPACE {
                    refused(AuthRefusal::TooMany)
                } else {
                    let mut account = account.clone();
                    account.generation = revision;
                    account.created_ms = time_ms;
                    self.put_account(batch, &account)?;
                    view_changes.push(Box::new(move |view| {
                        view.remember(&account);
                    }));
                    done
                }
            }
            AuthCommand::DeleteAccount { namespace, id } => match self.account(namespace, id)? {
                None => refused(AuthRefusal::NoSuchAccount),
                Some(account) => {
                    batch.delete_cf(cf, key2(ACCOUNT, namespace, id));
                    batch.delete_cf(cf, key2(NAME, namespace, &account.name));
                    self.drop_refresh_tokens(batch, namespace, id)?;
                    let (namespace, id) = (namespace.clone(), id.clone());
                    view_changes.push(Box::new(move |view| {
                        if let Some(accounts) = view.accounts.get_mut(&namespace) {
                            accounts.remove(&id);
                            if accounts.is_empty() {
                                view.accounts.remove(&namespace);
                            }
                        }
                    }));
                    done
                }
            },
            AuthCommand::SetSecret {
                namespace,
                id,
                secret_hash,
            } => match self.account(namespace, id)? {
                None => refused(AuthRefusal::NoSuchAccount),
                Some(mut account) => {
                    account.secret_hash = secret_hash.clone();
                    account.generation = revision;
                    self.put_account(batch, &account)?;
                    self.drop_refresh_tokens(batch, namespace, id)?;
                    view_changes.push(Box::new(move |view| {
                        view.remember(&account);
                    }));
                    done
                }
            },
            AuthCommand::CreateRule { namespace, rule } => {
                let key = key2(RULE, namespace, &rule.id);
                if self.get::<Rule>(&key)?.is_some() {
                    refused(AuthRefusal::RuleExists)
                } else if self.count(&prefix1(RULE, namespace))? >= MAX_RULES_PER_NAMESPACE {
                    refused(AuthRefusal::TooMany)
                } else {
                    batch.put_cf(cf, key, encode(rule)?);
                    let (namespace, rule) = (namespace.clone(), rule.clone());
                    view_changes.push(Box::new(move |view| {
                        let rules = view.rules.entry(namespace).or_default();
                        let mut updated = (**rules).clone();
                        updated.push(rule);
                        *rules = Arc::new(updated);
                    }));
                    done
                }
            }
            AuthCommand::DeleteRule { namespace, id } => {
                batch.delete_cf(cf, key2(RULE, namespace, id));
                let (namespace, id) = (namespace.clone(), id.clone());
                view_changes.push(Box::new(move |view| {
                    if let Some(rules) = view.rules.get_mut(&namespace) {
                        let updated: Vec<Rule> =
                            rules.iter().filter(|r| r.id != id).cloned().collect();
                        if updated.is_empty() {
                            view.rules.remove(&namespace);
                        } else {
                            *rules = Arc::new(updated);
                        }
                    }
                }));
                done
            }
            AuthCommand::IssueRefresh {
                digest,
                namespace,
                account_id,
                expires_ms,
            } => match self.account(namespace, account_id)? {
                None => refused(AuthRefusal::NoSuchAccount),
                Some(account) => {
                    let prefix = key2(REFRESH_BY_ACCOUNT, namespace, account_id);
                    let mut live = self.scan_raw(&prefix)?;
                    // Over the limit: the ones expiring first go (expired ones count too).
                    live.sort_by_key(|(_, expires)| read_u64(expires).unwrap_or(0));
                    let excess = (live.len() + 1).saturating_sub(MAX_REFRESH_PER_ACCOUNT);
                    for (key, _) in live.into_iter().take(excess) {
                        let old: [u8; 32] = key[prefix.len()..]
                            .try_into()
                            .map_err(|_| StorageError::Corrupt("refresh index key".into()))?;
                        batch.delete_cf(cf, refresh_key(&old));
                        batch.delete_cf(cf, key);
                    }
                    let record = RefreshRecord {
                        namespace: namespace.clone(),
                        account_id: account_id.clone(),
                        generation: account.generation,
                        expires_ms: *expires_ms,
                    };
                    batch.put_cf(cf, refresh_key(digest), encode(&record)?);
                    let mut index = prefix;
                    index.extend_from_slice(digest);
                    batch.put_cf(cf, index, expires_ms.to_be_bytes());
                    done
                }
            },
            AuthCommand::RevokeRefresh { digest } => {
                if let Some(record) = self.refresh(digest)? {
                    let mut index = key2(REFRESH_BY_ACCOUNT, &record.namespace, &record.account_id);
                    index.extend_from_slice(digest);
                    batch.delete_cf(cf, index);
                }
                batch.delete_cf(cf, refresh_key(digest));
                done
            }
            AuthCommand::RevokeAccess { jti, expires_s } => {
                batch.put_cf(cf, revoked_key(jti), expires_s.to_be_bytes());
                batch.put_cf(cf, revoked_by_expiry_key(*expires_s, jti), []);
                let (jti, expires_s) = (jti.clone(), *expires_s);
                view_changes.push(Box::new(move |view| {
                    view.revoked.insert(jti, expires_s);
                }));
                done
            }
        };
        // Revocations of tokens that have expired anyway are dropped, by the entry's time.
        let now_s = time_ms / 1000;
        let mut pruned = Vec::new();
        for (key, _) in self
            .scan_raw(&[REVOKED_BY_EXPIRY])?
            .into_iter()
            .take(PRUNE_PER_COMMAND)
        {
            let expires_s = read_u64(&key[1..9])?;
            if expires_s >= now_s {
                break;
            }
            let segments = keys::decode(&key[9..])?;
            let jti = String::from_utf8(segments[0].clone())
                .map_err(|_| StorageError::Corrupt("jti is not UTF-8".into()))?;
            batch.delete_cf(cf, revoked_key(&jti));
            batch.delete_cf(cf, &key);
            pruned.push(jti);
        }
        if !view_changes.is_empty() || !pruned.is_empty() {
            let mut view = self.view.write();
            for change in view_changes {
                change(&mut view);
            }
            for jti in pruned {
                view.revoked.remove(&jti);
            }
        }
        Ok(response)
    }

    fn put_account(&self, batch: &mut WriteBatch, account: &Account) -> Result<(), StorageError> {
        let cf = self.engine.cf(CF_AUTH);
        batch.put_cf(
            cf,
            key2(ACCOUNT, &account.issuer, &account.id),
            encode(account)?,
        );
        batch.put_cf(
            cf,
            key2(NAME, &account.issuer, &account.name),
            encode(&account.id)?,
        );
        Ok(())
    }

    fn drop_refresh_tokens(
        &self,
        batch: &mut WriteBatch,
        namespace: &str,
        id: &str,
    ) -> Result<(), StorageError> {
        let cf = self.engine.cf(CF_AUTH);
        let prefix = key2(REFRESH_BY_ACCOUNT, namespace, id);
        for (key, _) in self.scan_raw(&prefix)? {
            let digest: [u8; 32] = key[prefix.len()..]
                .try_into()
                .map_err(|_| StorageError::Corrupt("refresh index key".into()))?;
            batch.delete_cf(cf, refresh_key(&digest));
            batch.delete_cf(cf, key);
        }
        Ok(())
    }

    fn count(&self, prefix: &[u8]) -> Result<usize, StorageError> {
        let db = self.engine.db();
        let mut count = 0;
        let iter = db.iterator_cf(
            self.engine.cf(CF_AUTH),
            rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            if !item?.0.starts_with(prefix) {
                break;
            }
            count += 1;
        }
        Ok(count)
    }
}

fn read_u64(bytes: &[u8]) -> Result<u64, StorageError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StorageError::Corrupt("auth counter is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(array))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Access, AccountKind, Resource};
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::OnceLock;
    use strata_storage::kv::KvState;

    struct Fixture {
        _dir: tempfile::TempDir,
        engine: Engine,
        kv: KvState,
        state: AuthState,
        revision: u64,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let engine = Engine::open(dir.path()).unwrap();
            Self {
                _dir: dir,
                kv: KvState::new(engine.clone()),
                state: AuthState::new(engine.clone()).unwrap(),
                engine,
                revision: 0,
            }
        }

        fn apply_at(&mut self, time_ms: u64, command: AuthCommand) -> AuthResponse {
            self.revision += 1;
            let mut txn = StateTxn::new(self.revision);
            let out = self.state.apply(&mut txn, time_ms, &command).unwrap();
            self.kv.commit(txn).unwrap();
            out
        }

        fn apply(&mut self, command: AuthCommand) -> AuthResponse {
            self.apply_at(1_000, command)
        }

        /// The view as a comparable value.
        fn snapshot(view: &AuthView) -> ViewSnapshot {
            let inner = view.read();
            let mut rules: Vec<(String, Vec<Rule>)> = inner
                .rules
                .iter()
                .map(|(ns, rules)| {
                    let mut rules = (**rules).clone();
                    rules.sort_by(|a, b| a.id.cmp(&b.id));
                    (ns.clone(), rules)
                })
                .collect();
            rules.sort_by(|a, b| a.0.cmp(&b.0));
            let mut accounts: Vec<_> = inner
                .accounts
                .iter()
                .flat_map(|(ns, ids)| {
                    ids.iter()
                        .map(move |(id, v)| ((ns.clone(), id.clone()), v.generation))
                })
                .collect();
            accounts.sort();
            let mut revoked: Vec<_> = inner.revoked.clone().into_iter().collect();
            revoked.sort();
            ViewSnapshot {
                kid: inner.signer.as_ref().map(|s| s.kid().to_string()),
                accounts,
                rules,
                revoked,
            }
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    struct ViewSnapshot {
        kid: Option<String>,
        accounts: Vec<((String, String), u64)>,
        rules: Vec<(String, Vec<Rule>)>,
        revoked: Vec<(String, u64)>,
    }

    fn key() -> &'static KeyMaterial {
        static KEY: OnceLock<KeyMaterial> = OnceLock::new();
        KEY.get_or_init(|| KeyMaterial::generate().unwrap())
    }

    fn account(namespace: &str, id: &str, name: &str) -> Account {
        Account {
            id: id.into(),
            name: name.into(),
            kind: AccountKind::User,
            scopes: vec!["admin".into()],
            metadata: BTreeMap::new(),
            issuer: namespace.into(),
            secret_hash: format!("hash-of-{id}"),
            generation: 0,
            created_ms: 0,
        }
    }

    fn rule(id: &str) -> Rule {
        Rule {
            id: id.into(),
            scope: "*".into(),
            resource: Resource::new("*", "*", "*"),
            access: Access::Granted,
            priority: 0,
        }
    }

    #[test]
    fn init_applies_once_and_sets_the_signer() {
        let mut f = Fixture::new();
        assert!(f.state.view().signer().is_none());
        let root = account("micro", "admin", "admin");
        let init = AuthCommand::Init {
            key: key().clone(),
            root: root.clone(),
        };
        assert_eq!(f.apply(init.clone()), AuthResponse::Done { revision: 1 });
        assert_eq!(
            f.apply(init),
            AuthResponse::Refused(AuthRefusal::AlreadyInitialized)
        );
        assert_eq!(f.state.view().signer().unwrap().kid(), key().kid);
        let stored = f.state.account("micro", "admin").unwrap().unwrap();
        assert_eq!(stored.generation, 1);
        assert_eq!(
            f.state.view().account("micro", "admin").unwrap().generation,
            1
        );
    }

    #[test]
    fn accounts_are_unique_by_id_and_name_per_namespace() {
        let mut f = Fixture::new();
        let create = |a| AuthCommand::CreateAccount { account: a };
        assert!(matches!(
            f.apply(create(account("a", "x", "xn"))),
            AuthResponse::Done { .. }
        ));
        assert_eq!(
            f.apply(create(account("a", "x", "other"))),
            AuthResponse::Refused(AuthRefusal::AccountExists)
        );
        assert_eq!(
            f.apply(create(account("a", "y", "xn"))),
            AuthResponse::Refused(AuthRefusal::NameTaken)
        );
        // Another namespace is another space of ids and names.
        assert!(matches!(
            f.apply(create(account("b", "x", "xn"))),
            AuthResponse::Done { .. }
        ));
        assert_eq!(f.state.account_by_name("a", "xn").unwrap().unwrap().id, "x");
        assert_eq!(f.state.accounts("a").unwrap().len(), 1);
    }

    #[test]
    fn secret_changes_and_deletion_end_refresh_tokens_and_generations() {
        let mut f = Fixture::new();
        f.apply(AuthCommand::CreateAccount {
            account: account("a", "x", "x"),
        });
        let generation = f.state.view().account("a", "x").unwrap().generation;
        let issue = |digest: u8| AuthCommand::IssueRefresh {
            digest: [digest; 32],
            namespace: "a".into(),
            account_id: "x".into(),
            expires_ms: 10_000 + digest as u64,
        };
        f.apply(issue(1));
        assert_eq!(
            f.state.refresh(&[1; 32]).unwrap().unwrap().generation,
            generation
        );
        f.apply(AuthCommand::SetSecret {
            namespace: "a".into(),
            id: "x".into(),
            secret_hash: "new".into(),
        });
        assert!(f.state.refresh(&[1; 32]).unwrap().is_none());
        assert!(f.state.view().account("a", "x").unwrap().generation > generation);
        assert_eq!(
            f.state.account("a", "x").unwrap().unwrap().secret_hash,
            "new"
        );
        f.apply(issue(2));
        f.apply(AuthCommand::DeleteAccount {
            namespace: "a".into(),
            id: "x".into(),
        });
        assert!(f.state.refresh(&[2; 32]).unwrap().is_none());
        assert!(f.state.view().account("a", "x").is_none());
        assert!(f.state.account_by_name("a", "x").unwrap().is_none());
        assert_eq!(
            f.apply(issue(3)),
            AuthResponse::Refused(AuthRefusal::NoSuchAccount)
        );
    }

    #[test]
    fn refresh_tokens_per_account_are_bounded() {
        let mut f = Fixture::new();
        f.apply(AuthCommand::CreateAccount {
            account: account("a", "x", "x"),
        });
        for i in 0..(MAX_REFRESH_PER_ACCOUNT as u8 + 3) {
            f.apply(AuthCommand::IssueRefresh {
                digest: [i; 32],
                namespace: "a".into(),
                account_id: "x".into(),
                expires_ms: 100_000 + i as u64,
            });
        }
        // The three expiring first went.
        for i in 0..3u8 {
            assert!(f.state.refresh(&[i; 32]).unwrap().is_none(), "{i}");
        }
        assert!(f.state.refresh(&[3; 32]).unwrap().is_some());
        let index = f
            .state
            .scan_raw(&key2(REFRESH_BY_ACCOUNT, "a", "x"))
            .unwrap();
        assert_eq!(index.len(), MAX_REFRESH_PER_ACCOUNT);
    }

    #[test]
    fn revocations_hold_until_expiry_then_are_pruned() {
        let mut f = Fixture::new();
        f.apply_at(
            1_000,
            AuthCommand::RevokeAccess {
                jti: "t1".into(),
                expires_s: 50,
            },
        );
        assert!(f.state.view().is_revoked("t1"));
        f.apply_at(
            40_000,
            AuthCommand::DeleteRule {
                namespace: "n".into(),
                id: "none".into(),
            },
        );
        assert!(f.state.view().is_revoked("t1"), "not yet expired");
        f.apply_at(
            51_000,
            AuthCommand::DeleteRule {
                namespace: "n".into(),
                id: "none".into(),
            },
        );
        assert!(!f.state.view().is_revoked("t1"));
        assert!(f.state.scan_raw(&[REVOKED]).unwrap().is_empty());
        assert!(f.state.scan_raw(&[REVOKED_BY_EXPIRY]).unwrap().is_empty());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Create(u8, u8, u8),
        Delete(u8, u8),
        Secret(u8, u8),
        Rule(u8, u8),
        Unrule(u8, u8),
        Revoke(u8, u64),
        Tick,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3u8, 0..5u8, 0..5u8).prop_map(|(n, i, m)| Op::Create(n, i, m)),
            (0..3u8, 0..5u8).prop_map(|(n, i)| Op::Delete(n, i)),
            (0..3u8, 0..5u8).prop_map(|(n, i)| Op::Secret(n, i)),
            (0..3u8, 0..4u8).prop_map(|(n, i)| Op::Rule(n, i)),
            (0..3u8, 0..4u8).prop_map(|(n, i)| Op::Unrule(n, i)),
            (0..6u8, 0..40u64).prop_map(|(j, e)| Op::Revoke(j, e)),
            Just(Op::Tick),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// The view kept up to date entry by entry is exactly the view rebuilt from disk (what a
        /// restart or a snapshot install makes), after any sequence of commands.
        #[test]
        fn the_live_view_equals_a_rebuilt_one(ops in proptest::collection::vec(op(), 1..40)) {
            let mut f = Fixture::new();
            f.apply(AuthCommand::Init { key: key().clone(), root: account("micro", "admin", "admin") });
            let mut time_ms = 0;
            for op in ops {
                time_ms += 1_000;
                let ns = |n: u8| format!("ns{n}");
                let command = match op {
                    Op::Create(n, i, m) => AuthCommand::CreateAccount {
                        account: account(&ns(n), &format!("id{i}"), &format!("name{m}")),
                    },
                    Op::Delete(n, i) => AuthCommand::DeleteAccount { namespace: ns(n), id: format!("id{i}") },
                    Op::Secret(n, i) => AuthCommand::SetSecret {
                        namespace: ns(n), id: format!("id{i}"), secret_hash: format!("h{time_ms}"),
                    },
                    Op::Rule(n, i) => AuthCommand::CreateRule { namespace: ns(n), rule: rule(&format!("r{i}")) },
                    Op::Unrule(n, i) => AuthCommand::DeleteRule { namespace: ns(n), id: format!("r{i}") },
                    Op::Revoke(j, e) => AuthCommand::RevokeAccess { jti: format!("j{j}"), expires_s: e },
                    Op::Tick => AuthCommand::DeleteRule { namespace: "none".into(), id: "none".into() },
                };
                f.apply_at(time_ms, command);
            }
            let live = Fixture::snapshot(f.state.view());
            let rebuilt = AuthState::new(f.engine.clone()).unwrap();
            prop_assert_eq!(live, Fixture::snapshot(rebuilt.view()));
        }
    }
}
