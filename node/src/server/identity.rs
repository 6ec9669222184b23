//! The one identity layer: every gRPC call passes here before any service sees it. It
//! authenticates the caller (`authorization: Bearer <jwt>`, or `Basic` with id and secret),
//! decides the namespace the call acts on (the token's issuer; a super-tenant admin may name
//! another with `x-strata-namespace`), checks the namespace's rules, and puts the [`Caller`]
//! on the request. A refusal changes nothing: the call never reaches its service.
//!
//! With auth off (local mode's default) every call acts as a super admin in the namespace the
//! header names (default `default`).

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use lru::LruCache;
use strata_auth::{model, secret, token, AuthView, Claims, Decision, Identity, Resource};
use strata_raft::RaftNode;
use tonic::{Code, Status};

use strata_storage::quota::Quota;

use super::expiring::Bound;
use super::metrics::Metrics;
use super::namespace::{Caller, ALL, DEFAULT_NAMESPACE};
use super::rate::{self, RateLimiter};
use super::{status, validate};

/// Verified tokens kept (a hit costs a hash lookup instead of an RSA verification).
const TOKEN_CACHE_ENTRIES: usize = 16_384;
/// `Basic` credentials found correct, kept so that Argon2 runs once per credential.
const BASIC_CACHE_ENTRIES: usize = 4_096;
/// Secret checks (Argon2, tens of milliseconds of CPU each) running at once: half the cores.
fn hashing_at_once() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// A hash no secret matches, checked for unknown accounts.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| secret::hash("no account has this secret").unwrap_or_default())
}
/// How long a call waits for a turn to have its secret checked.
const HASHING_WAIT: Duration = Duration::from_secs(5);

/// Calls that need no token: exchanging credentials for one, inspecting one, the public key
/// (natively and through Micro's auth.Auth), and server reflection.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/strata.auth.v1.Auth/Token"
            | "/strata.auth.v1.Auth/Inspect"
            | "/strata.auth.v1.Auth/PublicKey"
            | "/auth.Auth/Token"
            | "/auth.Auth/Inspect"
    ) || path.starts_with("/grpc.reflection.")
}

/// Calls for super admins only: every cluster call but `Status` (so a method added later is
/// guarded unless listed here), and namespace limits. Returns what the refusal names.
fn super_admin_only(path: &str) -> Option<&'static str> {
    match path {
        "/strata.cluster.v1.Cluster/Status" => None,
        path if path.starts_with("/strata.cluster.v1.Cluster/") => {
            Some("cluster membership changes")
        }
        "/strata.namespace.v1.Namespaces/SetLimits" => Some("namespace limits"),
        super::dashboard::PATH => Some("the dashboard"),
        _ => None,
    }
}

/// The rule resource of a gRPC path `/pkg.Service/Method`: `service:<service, lower
/// case>:<Service>.<Method>` (Micro's shape: `/store.Store/Read` is `service:store:Store.Read`).
pub fn resource_of(path: &str) -> Resource {
    let trimmed = path.trim_start_matches('/');
    let (service, method) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    let short = service.rsplit('.').next().unwrap_or(service);
    Resource::new(
        "service",
        &short.to_ascii_lowercase(),
        &format!("{short}.{method}"),
    )
}

pub fn unauthenticated(message: impl Into<String>) -> Status {
    status::with_code(Code::Unauthenticated, "unauthenticated", message.into())
}

pub fn permission_denied(message: impl Into<String>) -> Status {
    status::with_code(Code::PermissionDenied, "permission_denied", message.into())
}

#[derive(Clone)]
struct Verified {
    claims: Arc<Claims>,
    identity: Identity,
}

pub struct Gate {
    enabled: bool,
    super_namespace: String,
    node: RaftNode,
    view: AuthView,
    tokens: Mutex<LruCache<String, Verified>>,
    /// SHA-256 of (namespace, id, secret) → the account generation it was correct for, and
    /// the account as it was then.
    basic: Mutex<LruCache<[u8; 32], (u64, Identity)>>,
    hashing: tokio::sync::Semaphore,
    /// Server-streaming methods: their responses end when the token stops being valid.
    streaming: std::collections::HashSet<String>,
    rates: RateLimiter,
    metrics: Metrics,
    /// One permit per open long-lived call on this node.
    streams: Arc<tokio::sync::Semaphore>,
    max_streams: usize,
}

impl Gate {
    pub fn new(
        node: RaftNode,
        enabled: bool,
        super_namespace: String,
        metrics: Metrics,
        max_streams: usize,
    ) -> Self {
        let view = node.auth().view().clone();
        Self {
            enabled,
            super_namespace,
            node,
            view,
            tokens: Mutex::new(LruCache::new(
                NonZeroUsize::new(TOKEN_CACHE_ENTRIES).expect("non-zero"),
            )),
            basic: Mutex::new(LruCache::new(
                NonZeroUsize::new(BASIC_CACHE_ENTRIES).expect("non-zero"),
            )),
            hashing: tokio::sync::Semaphore::new(hashing_at_once()),
            streaming: super::expiring::streaming_methods(),
            rates: RateLimiter::default(),
            metrics,
            streams: Arc::new(tokio::sync::Semaphore::new(max_streams)),
            max_streams,
        }
    }

    /// A place for one more long-lived call on this node, or RESOURCE_EXHAUSTED.
    fn stream_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            status::with_code(
                Code::ResourceExhausted,
                "too_many_streams",
                format!(
                    "this node has {} long-lived calls (watch, consume, subscribe) open, its \
                     limit (--max-streams); close one or use another node",
                    self.max_streams
                ),
            )
        })
    }

    /// What an admitted streaming call must stay valid against: its bearer token, or the
    /// account its `Basic` secret was checked for (at the generation it was checked against).
    fn bound_of(&self, caller: &Caller, headers: &http::HeaderMap) -> Option<Bound> {
        match (credentials(headers), &caller.token, &caller.identity) {
            (Ok(Credentials::Bearer(token)), Some((_, exp)), _) => {
                Some(Bound::Bearer { token, exp: *exp })
            }
            (Ok(Credentials::Basic { .. }), None, Some(identity)) => Some(Bound::Account {
                namespace: identity.issuer.clone(),
                id: identity.id.clone(),
                generation: caller.basic_generation?,
            }),
            _ => None,
        }
    }

    /// Counts the call against its namespace's `requests_per_second` quota on this node.
    pub fn within_rate(&self, path: &str, caller: &Caller) -> Result<(), Status> {
        if !rate::counted(path) || caller.namespace == ALL {
            return Ok(());
        }
        let limit = self
            .node
            .quota()
            .limit(&caller.namespace, Quota::RequestsPerSecond);
        if limit == 0 || self.rates.admit(&caller.namespace, limit, Instant::now()) {
            return Ok(());
        }
        self.metrics.quota_refused(Quota::RequestsPerSecond.name());
        Err(status::quota_exceeded(
            Quota::RequestsPerSecond,
            format!(
                "quota requests_per_second of namespace {:?} exceeded: limit {limit} calls per \
                 second on this node; retry later",
                caller.namespace
            ),
        ))
    }

    /// Whether calls need tokens here.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn view(&self) -> &AuthView {
        &self.view
    }

    /// Whether `who` is a super-tenant admin: an admin kind of the super-tenant namespace.
    pub fn is_super_admin(&self, who: &Identity) -> bool {
        who.issuer == self.super_namespace && who.is_admin_kind()
    }

    /// Decides who calls `path` and for which namespace, or refuses the call.
    pub async fn admit(&self, path: &str, headers: &http::HeaderMap) -> Result<Caller, Status> {
        let named = named_namespace(headers)?;
        if !self.enabled {
            return Ok(Caller {
                identity: None,
                namespace: named.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
                super_admin: true,
                token: None,
                basic_generation: None,
            });
        }
        if is_public(path) {
            return Ok(Caller {
                identity: None,
                namespace: named
                    .filter(|n| n != ALL)
                    .unwrap_or_else(|| self.super_namespace.clone()),
                super_admin: false,
                token: None,
                basic_generation: None,
            });
        }
        let (identity, token, basic_generation) = match credentials(headers)? {
            Credentials::None => {
                return Err(unauthenticated(
                    "this call needs an access token: send authorization: Bearer <token> \
                     (`strata login` gets one)",
                ))
            }
            Credentials::Bearer(jwt) => {
                let verified = self.verify_bearer(&jwt)?;
                let token = Some((verified.claims.jti.clone(), verified.claims.exp));
                (verified.identity, token, None)
            }
            Credentials::Basic {
                namespace,
                id,
                secret,
            } => {
                let namespace = namespace
                    .or_else(|| named.clone().filter(|n| n != ALL))
                    .unwrap_or_else(|| self.super_namespace.clone());
                let (identity, generation) = self.verify_basic_at(&namespace, &id, &secret).await?;
                (identity, None, Some(generation))
            }
        };
        let super_admin = self.is_super_admin(&identity);
        let namespace = match named {
            Some(named) if named != identity.issuer && !super_admin => {
                return Err(permission_denied(format!(
                    "namespace {named:?} is not this account's ({:?}); only admins of the \
                     super-tenant {:?} act on other namespaces",
                    identity.issuer, self.super_namespace
                )))
            }
            Some(named) => named,
            None => identity.issuer.clone(),
        };
        if let Some(what) = super_admin_only(path).filter(|_| !super_admin) {
            return Err(permission_denied(format!(
                "{what} are for admins of the super-tenant {:?}",
                self.super_namespace
            )));
        }
        // A namespace's admins always reach its auth service, so no rule locks them out of
        // fixing the rules; super admins are above every tenant's rules.
        let admin_managing = (path.starts_with("/strata.auth.v1.Auth/")
            || path.starts_with("/auth."))
            && identity.is_admin_kind()
            && identity.issuer == namespace;
        if !super_admin && !admin_managing {
            let rules = self.view.rules(&namespace);
            let call = resource_of(path);
            if model::evaluate(
                rules.as_deref().map(Vec::as_slice),
                Some(&identity),
                &namespace,
                &call,
            ) == Decision::Deny
            {
                return Err(permission_denied(format!(
                    "the rules of namespace {namespace:?} do not let account {:?} call {call}",
                    identity.id
                )));
            }
        }
        Ok(Caller {
            identity: Some(identity),
            namespace,
            super_admin,
            token,
            basic_generation,
        })
    }

    /// The identity a bearer token stands for, if it is valid on this node now: signed by the
    /// cluster's key, unexpired, not revoked, its account still there at the same generation.
    pub fn verify_bearer(&self, jwt: &str) -> Result<IdentityOf, Status> {
        let cached = self.lock_tokens().get(jwt).cloned();
        let verified = match cached {
            Some(verified) => verified,
            None => {
                let signer = self.view.signer().ok_or_else(|| {
                    status::unavailable(
                        "auth_not_ready",
                        "auth is not initialised on this cluster yet; retry shortly".into(),
                    )
                })?;
                let claims = signer.verify(jwt).map_err(|error| match error {
                    strata_auth::AuthError::Expired => unauthenticated("the access token expired"),
                    _ => unauthenticated("the access token is not valid here"),
                })?;
                let identity = claims
                    .identity()
                    .map_err(|_| unauthenticated("the access token is not valid here"))?;
                let verified = Verified {
                    claims: Arc::new(claims),
                    identity,
                };
                self.lock_tokens().put(jwt.to_string(), verified.clone());
                verified
            }
        };
        let claims = &verified.claims;
        if claims.exp.saturating_add(5) < token::now_s() {
            self.lock_tokens().pop(jwt);
            return Err(unauthenticated("the access token expired"));
        }
        if self.view.is_revoked(&claims.jti) {
            return Err(unauthenticated("the access token was revoked"));
        }
        match self.view.account(&claims.iss, &claims.sub) {
            None => Err(unauthenticated("the token's account no longer exists")),
            Some(account) if account.generation != claims.gen => Err(unauthenticated(
                "the token's account changed its secret since; get a new token",
            )),
            Some(_) => Ok(IdentityOf {
                identity: verified.identity,
                claims: verified.claims,
            }),
        }
    }

    /// Checks `id` and `secret` in `namespace` (Argon2 on a blocking thread, a few at a time;
    /// a credential found correct is remembered while the account's generation holds).
    pub async fn verify_basic(
        &self,
        namespace: &str,
        id: &str,
        secret: &str,
    ) -> Result<Identity, Status> {
        Ok(self.verify_basic_at(namespace, id, secret).await?.0)
    }

    /// [`Self::verify_basic`], with the account generation the secret was correct for.
    async fn verify_basic_at(
        &self,
        namespace: &str,
        id: &str,
        secret: &str,
    ) -> Result<(Identity, u64), Status> {
        let wrong = || unauthenticated("wrong account id or secret");
        let key = secret::digest(&format!("{namespace}\0{id}\0{secret}"));
        let known = self.lock_basic().get(&key).cloned();
        // Known and its account unchanged since (the view, no disk read): the same answer.
        if let Some((generation, identity)) = known {
            if self
                .view
                .account(namespace, id)
                .is_some_and(|account| account.generation == generation)
            {
                return Ok((identity, generation));
            }
        }
        let account = self
            .node
            .auth()
            .account(namespace, id)
            .map_err(status::storage)?;
        // An unknown account costs a check too, so that timing does not tell which exist.
        let hash = account.as_ref().map(|a| a.secret_hash.clone());
        let secret = secret.to_string();
        let correct = self
            .hashing(move || match hash {
                Some(hash) => secret::verify(&secret, &hash),
                None => {
                    secret::verify(&secret, dummy_hash());
                    false
                }
            })
            .await?;
        let account = account.filter(|_| correct).ok_or_else(wrong)?;
        let identity = Identity {
            id: account.id,
            name: account.name,
            kind: account.kind,
            scopes: account.scopes,
            issuer: account.issuer,
        };
        self.lock_basic()
            .put(key, (account.generation, identity.clone()));
        Ok((identity, account.generation))
    }

    /// Runs Argon2 work (checking or hashing a secret) on a blocking thread, at most half the
    /// machine's cores at once, so that floods of logins cannot starve the node.
    pub async fn hashing<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Status> {
        let _turn = tokio::time::timeout(HASHING_WAIT, self.hashing.acquire())
            .await
            .map_err(|_| {
                status::unavailable(
                    "busy",
                    "too many secret checks are waiting on this node; retry shortly".into(),
                )
            })?
            .map_err(|_| status::unavailable("shutting_down", "shutting down".into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Status::internal(format!("checking a secret: {e}")))
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, LruCache<String, Verified>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_basic(&self) -> std::sync::MutexGuard<'_, LruCache<[u8; 32], (u64, Identity)>> {
        self.basic.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A verified bearer token's identity and claims.
pub struct IdentityOf {
    pub identity: Identity,
    pub claims: Arc<Claims>,
}

enum Credentials {
    None,
    Bearer(String),
    Basic {
        namespace: Option<String>,
        id: String,
        secret: String,
    },
}

fn credentials(headers: &http::HeaderMap) -> Result<Credentials, Status> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(Credentials::None);
    };
    let malformed = || unauthenticated("the authorization header is malformed");
    let text = value.to_str().map_err(|_| malformed())?.trim();
    let (scheme, rest) = text.split_once(' ').ok_or_else(malformed)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() || rest.len() > token::MAX_TOKEN_CHARS {
            return Err(malformed());
        }
        return Ok(Credentials::Bearer(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        if rest.len() > 4 * secret::MAX_SECRET_CHARS {
            return Err(malformed());
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| malformed())?;
        let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
        let (user, secret) = decoded.split_once(':').ok_or_else(malformed)?;
        let (namespace, id) = match user.split_once('/') {
            Some((namespace, id)) => (Some(namespace.to_string()), id.to_string()),
            None => (None, user.to_string()),
        };
        if id.is_empty() || secret.is_empty() {
            return Err(malformed());
        }
        // Micro's clients may send `Basic base64(id:token)` and mean the token (MICRO_API.md
        // §1): a secret shaped like a JWT is taken as one.
        if is_jwt_shaped(secret) {
            return Ok(Credentials::Bearer(secret.to_string()));
        }
        return Ok(Credentials::Basic {
            namespace,
            id,
            secret: secret.to_string(),
        });
    }
    Err(unauthenticated(format!(
        "unknown authorization scheme {scheme:?}: use Bearer or Basic"
    )))
}

/// A JSON Web Token's shape: a JSON header (base64url of `{"`), a payload and a signature.
fn is_jwt_shaped(text: &str) -> bool {
    text.starts_with("eyJ")
        && text.len() <= token::MAX_TOKEN_CHARS
        && text.split('.').count() == 3
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The namespace the `x-strata-namespace` header names, validated.
fn named_namespace(headers: &http::HeaderMap) -> Result<Option<String>, Status> {
    let Some(value) = headers.get(strata_client::NAMESPACE_HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Status::invalid_argument("x-strata-namespace is not printable ASCII"))?;
    if text != ALL {
        validate::name("namespace (x-strata-namespace)", text)?;
    }
    Ok(Some(text.to_string()))
}

/// The tower layer that runs [`Gate::admit`] before every service.
#[derive(Clone)]
pub struct GateLayer(pub Arc<Gate>);

impl<S> tower::Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            gate: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct GateService<S> {
    gate: Arc<Gate>,
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for GateService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The service that was polled ready serves this call; its clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = self.gate.clone();
        Box::pin(async move {
            let path = request.uri().path();
            let caller = match gate.admit(path, request.headers()).await {
                Ok(caller) => caller,
                Err(status) => return Ok(status.into_http()),
            };
            if let Err(status) = gate.within_rate(path, &caller) {
                return Ok(status.into_http());
            }
            let streaming = gate.streaming.contains(request.uri().path());
            // Long-lived calls hold a place for as long as their response lasts.
            let slot = match streaming.then(|| gate.stream_slot()).transpose() {
                Ok(slot) => slot,
                Err(status) => return Ok(status.into_http()),
            };
            // A long-lived call lives no longer than its credential (see expiring.rs).
            let bound = if streaming {
                gate.bound_of(&caller, request.headers())
            } else {
                None
            };
            let namespace: std::sync::Arc<str> = caller.namespace.as_str().into();
            // The call's span (a trace's root when spans are exported): named by the method.
            let span = tracing::debug_span!(
                "grpc",
                otel.name = %request.uri().path(),
                rpc.system = "grpc",
                rpc.method = %request.uri().path(),
                namespace = %namespace,
            );
            request.extensions_mut().insert(caller);
            let response = tracing::Instrument::instrument(
                super::metrics::CALL_NAMESPACE.scope(namespace, inner.call(request)),
                span,
            )
            .await?;
            let response = match bound {
                Some(bound) => response.map(|body| {
                    tonic::body::Body::new(super::expiring::Expiring::new(body, gate, bound))
                }),
                None => response,
            };
            Ok(match slot {
                Some(slot) => response
                    .map(|body| tonic::body::Body::new(super::expiring::Holding::new(body, slot))),
                None => response,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_follow_micros_shape() {
        assert_eq!(
            resource_of("/strata.kv.v1.Kv/Put"),
            Resource::new("service", "kv", "Kv.Put")
        );
        assert_eq!(
            resource_of("/store.Store/Read"),
            Resource::new("service", "store", "Store.Read")
        );
        assert_eq!(resource_of("/x"), Resource::new("service", "x", "x."));
    }

    #[test]
    fn every_cluster_call_but_status_is_for_super_admins() {
        for method in [
            "AddLearner",
            "Promote",
            "Remove",
            "SetVoters",
            "AnyLaterMethod",
        ] {
            let path = format!("/strata.cluster.v1.Cluster/{method}");
            assert_eq!(
                super_admin_only(&path),
                Some("cluster membership changes"),
                "{path}"
            );
        }
        assert_eq!(super_admin_only("/strata.cluster.v1.Cluster/Status"), None);
        assert_eq!(super_admin_only("/strata.kv.v1.Kv/Put"), None);
    }

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn credentials_parse_bearer_and_basic_and_refuse_the_rest() {
        assert!(matches!(credentials(&headers(&[])), Ok(Credentials::None)));
        assert!(matches!(
            credentials(&headers(&[("authorization", "Bearer abc")])),
            Ok(Credentials::Bearer(t)) if t == "abc"
        ));
        let basic = base64::engine::general_purpose::STANDARD.encode("acme/svc:s3cret:x");
        match credentials(&headers(&[("authorization", &format!("Basic {basic}"))])) {
            Ok(Credentials::Basic {
                namespace,
                id,
                secret,
            }) => {
                assert_eq!(namespace.as_deref(), Some("acme"));
                assert_eq!(id, "svc");
                assert_eq!(secret, "s3cret:x");
            }
            _ => panic!("basic not parsed"),
        }
        // Micro's Basic with a token as the secret is that token.
        let micro =
            base64::engine::general_purpose::STANDARD.encode("svc:eyJhbGciOi.eyJzdWIi.c2ln");
        assert!(matches!(
            credentials(&headers(&[("authorization", &format!("Basic {micro}"))])),
            Ok(Credentials::Bearer(t)) if t == "eyJhbGciOi.eyJzdWIi.c2ln"
        ));
        for bad in ["Bearer", "Bearer ", "Digest x", "Basic !!!", "nonsense"] {
            let error = credentials(&headers(&[("authorization", bad)]))
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert_eq!(error.code(), Code::Unauthenticated, "{bad:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]
        /// Any header value is parsed or refused with UNAUTHENTICATED / INVALID_ARGUMENT,
        /// never a panic.
        #[test]
        fn credentials_and_namespaces_take_any_header(
            value in proptest::collection::vec(32u8..127, 0..2000),
            scheme in proptest::sample::select(vec!["Bearer ", "Basic ", "basic ", "", "Digest "]),
        ) {
            let mut raw = scheme.as_bytes().to_vec();
            raw.extend(&value);
            if let Ok(header) = http::HeaderValue::from_bytes(&raw) {
                let mut map = http::HeaderMap::new();
                map.insert(http::header::AUTHORIZATION, header.clone());
                map.insert(strata_client::NAMESPACE_HEADER, header);
                if let Err(status) = credentials(&map) {
                    proptest::prop_assert_eq!(status.code(), Code::Unauthenticated);
                }
                if let Err(status) = named_namespace(&map) {
                    proptest::prop_assert_eq!(status.code(), Code::InvalidArgument);
                }
            }
        }
    }

    #[test]
    fn only_valid_namespace_headers_pass() {
        assert_eq!(named_namespace(&headers(&[])).unwrap(), None);
        assert_eq!(
            named_namespace(&headers(&[("x-strata-namespace", "acme")])).unwrap(),
            Some("acme".into())
        );
        assert_eq!(
            named_namespace(&headers(&[("x-strata-namespace", "*")])).unwrap(),
            Some("*".into())
        );
        assert!(named_namespace(&headers(&[("x-strata-namespace", "a/b")])).is_err());
    }
}
