//! `strata.auth.v1`: accounts, rules and tokens. Decodes, authorizes (who may administer which
//! namespace), does the slow work (hashing, key generation) on blocking threads, proposes, and
//! encodes. The identity layer already verified the caller.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use strata_auth::{
    secret, token, Access, Account, AccountKind, AuthCommand, AuthRefusal, AuthResponse,
    KeyMaterial, Resource, Rule,
};
use strata_proto::auth::v1 as pb;
use strata_raft::RaftNode;
use tonic::{Code, Request, Response, Status};

use super::identity::{permission_denied, unauthenticated, Gate};
use super::metrics::Metrics;
use super::namespace::{self, Caller};
use super::{status, validate};

/// Most scopes on one account, and longest scope.
const MAX_SCOPES: usize = 32;
const MAX_SCOPE_CHARS: usize = 64;
/// Longest part of a rule resource.
const MAX_RESOURCE_PART_CHARS: usize = 256;

pub struct AuthService {
    node: RaftNode,
    gate: Arc<Gate>,
    metrics: Metrics,
}

impl AuthService {
    pub fn new(node: RaftNode, gate: Arc<Gate>, metrics: Metrics) -> Self {
        Self {
            node,
            gate,
            metrics,
        }
    }

    async fn observed<T>(
        &self,
        method: &str,
        work: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        self.metrics.observed(method, work).await
    }

    async fn propose(&self, command: AuthCommand) -> Result<u64, Status> {
        match self.node.write_auth(command).await.map_err(status::write)? {
            AuthResponse::Done { revision } => Ok(revision),
            AuthResponse::Refused(refusal) => Err(refused(refusal)),
        }
    }

    /// Reads below see every write acknowledged before the call (an account created or a
    /// token issued on another node a moment ago).
    async fn current(&self) -> Result<(), Status> {
        self.node.linearizable_barrier().await.map_err(status::read)
    }

    fn signer(&self) -> Result<Arc<strata_auth::Signer>, Status> {
        if !self.gate.enabled() {
            return Err(Status::failed_precondition(
                "auth is off on this node: every caller already acts as an admin \
                 (start it with --auth on for accounts and tokens)",
            ));
        }
        self.gate.view().signer().ok_or_else(not_ready)
    }

    /// An access token and a refresh token for `account`.
    async fn tokens_for(
        &self,
        account: &Account,
        ttl_s: u64,
        refresh: Option<String>,
    ) -> Result<pb::Token, Status> {
        let now = token::now_s();
        let (access, claims) = self
            .signer()?
            .issue(account, now, ttl_s)
            .map_err(|e| Status::internal(e.to_string()))?;
        let refresh = match refresh {
            Some(refresh) => refresh,
            None => {
                let (refresh, digest) =
                    token::new_refresh_token().map_err(|e| Status::internal(e.to_string()))?;
                self.propose(AuthCommand::IssueRefresh {
                    digest,
                    namespace: account.issuer.clone(),
                    account_id: account.id.clone(),
                    expires_ms: now_ms() + token::REFRESH_TTL_MS,
                })
                .await?;
                refresh
            }
        };
        Ok(pb::Token {
            access_token: access,
            refresh_token: refresh,
            created: claims.iat as i64,
            expiry: claims.exp as i64,
        })
    }
}

fn now_ms() -> u64 {
    token::now_s() * 1000
}

fn not_ready() -> Status {
    status::unavailable(
        "auth_not_ready",
        "auth is not initialised on this cluster yet; retry shortly".into(),
    )
}

fn refused(refusal: AuthRefusal) -> Status {
    let code = match refusal {
        AuthRefusal::AccountExists | AuthRefusal::NameTaken | AuthRefusal::RuleExists => {
            Code::AlreadyExists
        }
        AuthRefusal::NoSuchAccount => Code::NotFound,
        AuthRefusal::TooMany => Code::ResourceExhausted,
        AuthRefusal::AlreadyInitialized | AuthRefusal::NotInitialized => Code::FailedPrecondition,
    };
    Status::new(code, refusal.to_string())
}

fn admin_of(caller: &Caller, namespace: &str) -> Result<(), Status> {
    if caller.may_administer(namespace) {
        Ok(())
    } else {
        Err(permission_denied(format!(
            "managing accounts and rules of namespace {namespace:?} is for its admins"
        )))
    }
}

pub fn account_to_pb(account: &Account, secret: Option<String>) -> pb::Account {
    pb::Account {
        id: account.id.clone(),
        r#type: account.kind.as_str().to_string(),
        metadata: account.metadata.clone().into_iter().collect(),
        scopes: account.scopes.clone(),
        issuer: account.issuer.clone(),
        secret: secret.unwrap_or_default(),
        name: account.name.clone(),
        created: account.created_ms as i64,
    }
}

fn rule_to_pb(rule: &Rule) -> pb::Rule {
    pb::Rule {
        id: rule.id.clone(),
        scope: rule.scope.clone(),
        resource: Some(pb::Resource {
            name: rule.resource.name.clone(),
            r#type: rule.resource.kind.clone(),
            endpoint: rule.resource.endpoint.clone(),
        }),
        access: match rule.access {
            Access::Granted => pb::Access::Granted,
            Access::Denied => pb::Access::Denied,
        } as i32,
        priority: rule.priority,
    }
}

fn scopes(values: Vec<String>) -> Result<Vec<String>, Status> {
    if values.len() > MAX_SCOPES {
        return Err(validate::invalid(format!(
            "an account has at most {MAX_SCOPES} scopes"
        )));
    }
    for scope in &values {
        if scope.is_empty()
            || scope.chars().count() > MAX_SCOPE_CHARS
            || scope.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(validate::invalid(format!(
                "scope {scope:?} must be 1 to {MAX_SCOPE_CHARS} characters without spaces"
            )));
        }
    }
    Ok(values)
}

fn resource_part(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty()
        || value.chars().count() > MAX_RESOURCE_PART_CHARS
        || value.contains(':')
        || value.chars().any(char::is_control)
    {
        return Err(validate::invalid(format!(
            "{field} must be 1 to {MAX_RESOURCE_PART_CHARS} characters without ':'"
        )));
    }
    Ok(())
}

fn chosen_or_generated(secret: String) -> Result<String, Status> {
    if secret.is_empty() {
        return secret::generate().map_err(|e| Status::internal(e.to_string()));
    }
    secret::check_chosen(&secret).map_err(validate::invalid)?;
    Ok(secret)
}

async fn hash(gate: &Gate, secret: String) -> Result<String, Status> {
    gate.hashing(move || secret::hash(&secret))
        .await?
        .map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn token(
        &self,
        request: Request<pb::TokenRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let namespace = namespace::of(&request)?;
        let req = request.into_inner();
        self.observed("auth.token", async {
            let namespace = if req.namespace.is_empty() {
                namespace
            } else {
                validate::name("namespace", &req.namespace)?;
                req.namespace.clone()
            };
            let ttl_s = match req.token_expiry {
                0 => token::DEFAULT_ACCESS_TTL_S,
                s if s < 0 || s as u64 > token::MAX_ACCESS_TTL_S => {
                    return Err(validate::invalid(format!(
                        "token_expiry must be 1 to {} seconds",
                        token::MAX_ACCESS_TTL_S
                    )))
                }
                s => s as u64,
            };
            let wrong = || unauthenticated("wrong account id or secret");
            self.signer()?;
            self.current().await?;
            let auth = self.node.auth();
            if !req.refresh_token.is_empty() {
                let gone = || {
                    unauthenticated("the refresh token is not valid (expired, revoked or unknown)")
                };
                if !token::is_refresh_token(&req.refresh_token) {
                    return Err(gone());
                }
                let record = auth
                    .refresh(&secret::digest(&req.refresh_token))
                    .map_err(status::storage)?
                    .ok_or_else(gone)?;
                let account = auth
                    .account(&record.namespace, &record.account_id)
                    .map_err(status::storage)?
                    .ok_or_else(gone)?;
                if record.expires_ms < now_ms() || record.generation != account.generation {
                    return Err(gone());
                }
                let token = self
                    .tokens_for(&account, ttl_s, Some(req.refresh_token.clone()))
                    .await?;
                return Ok(pb::TokenResponse { token: Some(token) });
            }
            if req.secret.is_empty() || (req.id.is_empty() && req.name.is_empty()) {
                return Err(validate::invalid(
                    "give an account id (or name) and its secret, or a refresh token".into(),
                ));
            }
            // Unknown ids and names cost a secret check too (see Gate::verify_basic), so that
            // timing does not tell which accounts exist.
            let id = if req.id.is_empty() {
                auth.account_by_name(&namespace, &req.name)
                    .map_err(status::storage)?
                    .map(|account| account.id)
                    .unwrap_or_default()
            } else {
                req.id.clone()
            };
            let identity = self.gate.verify_basic(&namespace, &id, &req.secret).await?;
            let account = auth
                .account(&namespace, &identity.id)
                .map_err(status::storage)?
                .ok_or_else(wrong)?;
            let token = self.tokens_for(&account, ttl_s, None).await?;
            Ok(pb::TokenResponse { token: Some(token) })
        })
        .await
    }

    async fn inspect(
        &self,
        request: Request<pb::InspectRequest>,
    ) -> Result<Response<pb::InspectResponse>, Status> {
        let req = request.into_inner();
        self.observed("auth.inspect", async {
            let verified = self.gate.verify_bearer(&req.token)?;
            let who = verified.identity;
            Ok(pb::InspectResponse {
                account: Some(pb::Account {
                    id: who.id,
                    r#type: who.kind.as_str().to_string(),
                    metadata: verified.claims.metadata.clone().into_iter().collect(),
                    scopes: who.scopes,
                    issuer: who.issuer,
                    secret: String::new(),
                    name: who.name,
                    created: 0,
                }),
            })
        })
        .await
    }

    async fn public_key(
        &self,
        _request: Request<pb::PublicKeyRequest>,
    ) -> Result<Response<pb::PublicKeyResponse>, Status> {
        self.observed("auth.public_key", async {
            let signer = self.signer()?;
            Ok(pb::PublicKeyResponse {
                pem: self.gate.view().public_key_pem().unwrap_or_default(),
                kid: signer.kid().to_string(),
            })
        })
        .await
    }

    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let caller = namespace::caller(&request)?.clone();
        let namespace = namespace::of(&request)?;
        let req = request.into_inner();
        self.observed("auth.generate", async {
            admin_of(&caller, &namespace)?;
            validate::name("id", &req.id)?;
            let name = if req.name.is_empty() {
                req.id.clone()
            } else {
                validate::name("name", &req.name)?;
                req.name.clone()
            };
            let kind = AccountKind::parse(&req.r#type).ok_or_else(|| {
                validate::invalid(format!("type {:?} is neither user nor service", req.r#type))
            })?;
            let metadata: BTreeMap<String, String> =
                validate::metadata(&req.metadata.into_iter().collect::<HashMap<_, _>>())?;
            let scopes = scopes(req.scopes)?;
            let secret = chosen_or_generated(req.secret)?;
            let account = Account {
                id: req.id,
                name,
                kind,
                scopes,
                metadata,
                issuer: namespace.clone(),
                secret_hash: hash(&self.gate, secret.clone()).await?,
                generation: 0,
                created_ms: now_ms(),
            };
            self.propose(AuthCommand::CreateAccount {
                account: account.clone(),
            })
            .await?;
            tracing::info!(namespace = %namespace, id = %account.id, "account created");
            Ok(pb::GenerateResponse {
                account: Some(account_to_pb(&account, Some(secret))),
            })
        })
        .await
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let caller = namespace::caller(&request)?.clone();
        let namespace = namespace::of(&request)?;
        self.observed("auth.list_accounts", async {
            admin_of(&caller, &namespace)?;
            self.current().await?;
            let (auth, scope) = (self.node.auth().clone(), namespace.clone());
            let accounts = status::blocking(move || auth.accounts(&scope)).await?;
            Ok(pb::ListAccountsResponse {
                accounts: accounts.iter().map(|a| account_to_pb(a, None)).collect(),
            })
        })
        .await
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        let caller = namespace::caller(&request)?.clone();
        let namespace = namespace::of(&request)?;
        let req = request.into_inner();
        self.observed("auth.delete_account", async {
            admin_of(&caller, &namespace)?;
            validate::name("id", &req.id)?;
            if caller
                .identity
                .as_ref()
                .is_some_and(|who| who.id == req.id && who.issuer == namespace)
            {
                return Err(validate::invalid("an account cannot delete itself".into()));
            }
            self.propose(AuthCommand::DeleteAccount {
                namespace: namespace.clone(),
                id: req.id.clone(),
            })
            .await?;
            tracing::info!(namespace = %namespace, id = %req.id, "account deleted");
            Ok(pb::DeleteAccountResponse {})
        })
        .await
    }

    async fn change_secret(
        &self,
        request: Request<pb::ChangeSecretRequest>,
    ) -> Result<Response<pb::ChangeSecretResponse>, Status> {
        let caller = namespace::caller(&request)?.clone();
        let namespace = namespace::of(&request)?;
        let req = request.into_inner();
        self.observed("auth.change_secret", async {
            validate::name("id", &req.id)?;
            let own = caller
                .identity
                .as_ref()
                .is_some_and(|who| who.id == req.id && who.issuer == namespace);
            if !own {
                admin_of(&caller, &namespace)?;
            }
            self.current().await?;
            let account = self
                .node
                .auth()
                .account(&namespace, &req.id)
                .map_err(status::storage)?
                .ok_or_else(|| refused(AuthRefusal::NoSuchAccount))?;
            if !caller.may_administer(&namespace) {
                if req.old_secret.is_empty() {
                    return Err(validate::invalid(
                        "old_secret is required to change your own secret".into(),
                    ));
                }
                self.gate
                    .verify_basic(&namespace, &req.id, &req.old_secret)
                    .await?;
            }
            let secret = chosen_or_generated(req.new_secret)?;
            self.propose(AuthCommand::SetSecret {
                namespace: namespace.clone(),
                id: req.id.clone(),
                secret_hash: hash(&self.gate, secret.clone()).await?,
            })
            .await?;
            tracing::info!(namespace = %namespace, id = %req.id, "account secret changed");
            Ok(pb::ChangeSecretResponse {
                account: Some(account_to_pb(&account, Some(secret))),
            })
        })
        .await
    }

    async fn create_rule(
        &self,
        request: Request<pb::CreateRuleRequest>,
    ) -> Result<Response<pb::CreateRuleResponse>, Status> {
        let caller = namespace::caller(&request)?.clone();
        let namespace = namespace::of(&request)?;
        let req = request.into_inner();
        self.observed("auth.create_rule", async {
            admin_of(&caller, &namespace)?;
            let rule = req
                .rule
                .ok_or_else(|| validate::invalid("rule is required".into()))?;
            validate::name("rule id", &rule.id)?;
            let resource = rule
                .resource
                .ok_or_else(|| validate::invalid("rule.resource is required".into()))?;
            resource_part("resource.type", &resource.r#type)?;
            resource_part("resource.name", &resource.name)?;
            resource_part("resource.endpoint", &resource.endpoint)?;
            if rule.scope.chars().count() > MAX_SCOPE_CHARS {
                return Err(validate::invalid(format!(
                    "scope is at most {MAX_SCOPE_CHARS} characters"
                )));
            }
            let access = match pb::Access::try_from(rule.access) {
                Ok(pb::Access::Granted) => Access::Granted,
                Ok(pb::Access::Denied) => Access::Denied,
                _ => {
                    return Err(validate::invalid(
                        "rule.access must be GRANTED or DENIED".into(),
                    ))
                }
            };
            self.propose(AuthCommand::CreateRule {
                namespace: namespace.clone(),
                rule: Rule {
                    id: rule.id,
                    scope: rule.scope,
                    resource: Resource::new(&resource.r#type, &resource.name, &resource.endpoint),
                    access,
                    priority: rule.priority,
                },
            })
            .await?;
            Ok(pb::CreateRuleResponse {})
        })
        .await
    }

    async fn delete_rule(
        &self,
        request: Request<pb::DeleteRuleRequest>,
    ) -> Result<Response<pb::DeleteRuleResponse>, Status> {
        let caller = namespace::caller(&request)?.clone();
        let namespace = namespace::of(&request)?;
        let req = request.into_inner();
        self.observed("auth.delete_rule", async {
            admin_of(&caller, &namespace)?;
            validate::name("rule id", &req.id)?;
            self.propose(AuthCommand::DeleteRule {
                namespace,
                id: req.id,
            })
            .await?;
            Ok(pb::DeleteRuleResponse {})
        })
        .await
    }

    async fn list_rules(
        &self,
        request: Request<pb::ListRulesRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        let namespace = namespace::of(&request)?;
        self.observed("auth.list_rules", async {
            self.current().await?;
            let (auth, scope) = (self.node.auth().clone(), namespace.clone());
            let rules = status::blocking(move || auth.rules(&scope)).await?;
            Ok(pb::ListRulesResponse {
                rules: rules.iter().map(rule_to_pb).collect(),
            })
        })
        .await
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let caller = namespace::caller(&request)?.clone();
        let req = request.into_inner();
        self.observed("auth.revoke", async {
            let owns = |namespace: &str, id: &str| {
                caller.may_administer(namespace)
                    || caller
                        .identity
                        .as_ref()
                        .is_some_and(|who| who.id == id && who.issuer == namespace)
            };
            let not_yours = || permission_denied("only its account or an admin may revoke a token");
            if token::is_refresh_token(&req.token) {
                let digest = secret::digest(&req.token);
                self.current().await?;
                if let Some(record) = self.node.auth().refresh(&digest).map_err(status::storage)? {
                    if !owns(&record.namespace, &record.account_id) {
                        return Err(not_yours());
                    }
                    self.propose(AuthCommand::RevokeRefresh { digest }).await?;
                }
                return Ok(pb::RevokeResponse {});
            }
            let claims = match self.signer()?.verify(&req.token) {
                Ok(claims) => claims,
                // Expired already: nothing left to revoke.
                Err(strata_auth::AuthError::Expired) => return Ok(pb::RevokeResponse {}),
                Err(_) => return Err(validate::invalid("not a token of this cluster".into())),
            };
            if !owns(&claims.iss, &claims.sub) {
                return Err(not_yours());
            }
            self.propose(AuthCommand::RevokeAccess {
                jti: claims.jti,
                expires_s: claims.exp,
            })
            .await?;
            Ok(pb::RevokeResponse {})
        })
        .await
    }
}

/// Where the root account's credentials are written, once, on the node whose bootstrap won.
pub fn credentials_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("root.credentials")
}

/// Creates the cluster's signing key and root admin account once: while no key exists, the
/// leader proposes one (the first proposal applied wins). The node whose proposal won writes
/// the credentials to DATA_DIR/root.credentials (mode 0600) and prints them once on stdout;
/// they never go to the log.
pub async fn bootstrap(
    node: RaftNode,
    super_namespace: String,
    data_dir: PathBuf,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let view = node.auth().view().clone();
    let mut pending: Option<(KeyMaterial, String, Account)> = None;
    loop {
        if view.signer().is_some() {
            if let Some((key, secret, root)) = &pending {
                if view.signer().is_some_and(|s| s.kid() == key.kid) {
                    announce(&data_dir, &root.issuer, &root.id, secret);
                }
            }
            return;
        }
        if node.is_leader() {
            if pending.is_none() {
                let namespace = super_namespace.clone();
                let made = tokio::task::spawn_blocking(move || -> Result<_, String> {
                    let key = KeyMaterial::generate().map_err(|e| e.to_string())?;
                    let secret = secret::generate().map_err(|e| e.to_string())?;
                    let secret_hash = secret::hash(&secret).map_err(|e| e.to_string())?;
                    let root = Account {
                        id: "root".into(),
                        name: "root".into(),
                        kind: AccountKind::User,
                        scopes: vec!["admin".into()],
                        metadata: BTreeMap::new(),
                        issuer: namespace,
                        secret_hash,
                        generation: 0,
                        created_ms: now_ms(),
                    };
                    Ok((key, secret, root))
                })
                .await;
                match made {
                    Ok(Ok(made)) => pending = Some(made),
                    Ok(Err(error)) => tracing::error!(%error, "creating the auth signing key"),
                    Err(error) => tracing::error!(%error, "creating the auth signing key"),
                }
            }
            if let Some((key, _, root)) = &pending {
                let command = AuthCommand::Init {
                    key: key.clone(),
                    root: root.clone(),
                };
                match node.write_auth(command).await {
                    Ok(_) => continue,
                    Err(error) => tracing::warn!(%error, "proposing the auth bootstrap; retrying"),
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = stopped.changed() => return,
        }
    }
}

fn announce(data_dir: &std::path::Path, namespace: &str, id: &str, secret: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = credentials_path(data_dir);
    let text = format!("namespace = {namespace:?}\nid = {id:?}\nsecret = {secret:?}\n");
    // Whole or absent: written beside, synced, then renamed into place.
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, &path));
    if let Err(error) = &written {
        tracing::error!(path = %path.display(), %error, "could not write the root credentials");
    }
    // Printed once, on stdout only (never through the log): the operator keeps it or the file.
    println!(
        "strata: auth initialised; root account {namespace}/{id}, secret {secret} (also in {}, mode 0600). \
         Keep it safe: it is not shown again.",
        path.display()
    );
    tracing::info!(path = %path.display(), "auth initialised; root credentials written");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        /// The auth service's own validators answer any input with a verdict, never a panic.
        #[test]
        fn auth_validators_take_any_input(
            values in proptest::collection::vec(".{0,80}", 0..40),
            text in ".{0,300}",
        ) {
            let verdicts = [
                scopes(values).err(),
                resource_part("f", &text).err(),
                chosen_or_generated(text.clone()).err(),
            ];
            for refusal in verdicts.into_iter().flatten() {
                prop_assert_eq!(refusal.code(), Code::InvalidArgument);
            }
            // Parsers that answer with an Option: any input gives an answer.
            let _ = AccountKind::parse(&text);
            if let Some(resource) = strata_auth::Resource::parse(&text) {
                prop_assert_eq!(resource.to_string(), text);
            }
        }
    }
}
