//! `auth.Auth`, `auth.Accounts` and `auth.Rules` (shared/MICRO_API.md §7.3) over Strata's own
//! auth service: the same accounts, rules and tokens (RS256 JWTs with Micro's claims). Each
//! call is authorized as Micro's (`Authorize`/`AuthorizeAdmin` of `options.namespace`), then
//! handed to the native handler acting on that namespace, and its answer translated back.

use std::sync::Arc;

use strata_proto::auth::v1 as native;
use strata_proto::auth::v1::auth_server::Auth as _;
use strata_proto::micro::auth as pb;
use tonic::{Code, Request, Response, Status};

use super::{authorize, authorize_admin, caller_of, tenant};
use crate::server::auth::AuthService;
use crate::server::namespace::Caller;
use crate::server::validate;

#[derive(Clone)]
pub struct MicroAuthService {
    native: Arc<AuthService>,
}

impl MicroAuthService {
    pub fn new(native: Arc<AuthService>) -> Self {
        Self { native }
    }
}

/// `options.namespace`, or `fallback` (Micro: `micro`, or the `micro-namespace` header for
/// Generate), valid as a namespace.
fn namespace_of(options: Option<&pb::Options>, fallback: &str) -> Result<String, Status> {
    let named = options.map_or("", |o| o.namespace.as_str());
    tenant(
        "options.namespace",
        if named.is_empty() { fallback } else { named },
    )
}

/// A native request acting on `namespace` for `caller` (already authorized).
fn acting<T>(caller: &Caller, namespace: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(Caller {
        namespace: namespace.to_string(),
        ..caller.clone()
    });
    request
}

/// Micro answers 400 where Strata's own API says "exists" or refuses a credential.
fn as_bad_request(status: Status, message: &str) -> Status {
    match status.code() {
        Code::AlreadyExists | Code::Unauthenticated | Code::NotFound => {
            validate::invalid(format!("{message}: {}", status.message()))
        }
        _ => status,
    }
}

fn account_of(account: native::Account) -> pb::Account {
    pb::Account {
        id: account.id,
        r#type: account.r#type,
        metadata: account.metadata,
        scopes: account.scopes,
        issuer: account.issuer,
        secret: account.secret,
        name: account.name,
    }
}

fn rule_of(rule: native::Rule) -> pb::Rule {
    pb::Rule {
        id: rule.id,
        scope: rule.scope,
        resource: rule.resource.map(|r| pb::Resource {
            name: r.name,
            r#type: r.r#type,
            endpoint: r.endpoint,
        }),
        access: rule.access,
        priority: rule.priority,
    }
}

/// The `micro-namespace` header, Micro's default namespace for Generate.
fn header_namespace<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("micro-namespace")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(super::DEFAULT)
        .to_string()
}

#[tonic::async_trait]
impl pb::auth_server::Auth for MicroAuthService {
    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let caller = caller_of(&request)?;
        let fallback = header_namespace(&request);
        let req = request.into_inner();
        let namespace = namespace_of(req.options.as_ref(), &fallback)?;
        if req.id.is_empty() {
            return Err(validate::invalid("id is required".into()));
        }
        authorize_admin(&caller, &namespace)?;
        let r#type = if req.r#type.is_empty() {
            "user".to_string()
        } else {
            req.r#type
        };
        let answer = self
            .native
            .generate(acting(
                &caller,
                &namespace,
                native::GenerateRequest {
                    id: req.id,
                    metadata: req.metadata,
                    scopes: req.scopes,
                    secret: req.secret,
                    r#type,
                    name: req.name,
                },
            ))
            .await
            .map_err(|s| as_bad_request(s, "account exists"))?;
        Ok(Response::new(pb::GenerateResponse {
            account: answer.into_inner().account.map(account_of),
        }))
    }

    async fn inspect(
        &self,
        request: Request<pb::InspectRequest>,
    ) -> Result<Response<pb::InspectResponse>, Status> {
        let token = request.into_inner().token;
        let answer = self
            .native
            .inspect(Request::new(native::InspectRequest { token }))
            .await
            .map_err(|status| match status.code() {
                Code::Unauthenticated => validate::invalid("invalid token provided".into()),
                _ => status,
            })?;
        Ok(Response::new(pb::InspectResponse {
            account: answer.into_inner().account.map(account_of),
        }))
    }

    async fn token(
        &self,
        request: Request<pb::TokenRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let caller = caller_of(&request)?;
        let req = request.into_inner();
        let namespace = namespace_of(req.options.as_ref(), super::DEFAULT)?;
        if req.refresh_token.is_empty() && (req.id.is_empty() || req.secret.is_empty()) {
            return Err(validate::invalid(
                "give an account id and secret, or a refresh token".into(),
            ));
        }
        let answer = self
            .native
            .token(acting(
                &caller,
                &namespace,
                native::TokenRequest {
                    id: req.id,
                    secret: req.secret,
                    refresh_token: req.refresh_token,
                    token_expiry: req.token_expiry,
                    namespace: namespace.clone(),
                    name: String::new(),
                },
            ))
            .await
            .map_err(|s| as_bad_request(s, "Secret not correct"))?;
        Ok(Response::new(pb::TokenResponse {
            token: answer.into_inner().token.map(|t| pb::Token {
                access_token: t.access_token,
                refresh_token: t.refresh_token,
                created: t.created,
                expiry: t.expiry,
            }),
        }))
    }
}

#[tonic::async_trait]
impl pb::accounts_server::Accounts for MicroAuthService {
    async fn list(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let caller = caller_of(&request)?;
        let namespace = namespace_of(request.get_ref().options.as_ref(), super::DEFAULT)?;
        authorize_admin(&caller, &namespace)?;
        let answer = self
            .native
            .list_accounts(acting(&caller, &namespace, native::ListAccountsRequest {}))
            .await?;
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: answer
                .into_inner()
                .accounts
                .into_iter()
                .map(account_of)
                .collect(),
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        let caller = caller_of(&request)?;
        let req = request.into_inner();
        let namespace = namespace_of(req.options.as_ref(), super::DEFAULT)?;
        authorize_admin(&caller, &namespace)?;
        self.native
            .delete_account(acting(
                &caller,
                &namespace,
                native::DeleteAccountRequest { id: req.id },
            ))
            .await?;
        Ok(Response::new(pb::DeleteAccountResponse {}))
    }

    async fn change_secret(
        &self,
        request: Request<pb::ChangeSecretRequest>,
    ) -> Result<Response<pb::ChangeSecretResponse>, Status> {
        let caller = caller_of(&request)?;
        let req = request.into_inner();
        let namespace = namespace_of(req.options.as_ref(), super::DEFAULT)?;
        authorize(&caller, &namespace)?;
        self.native
            .change_secret(acting(
                &caller,
                &namespace,
                native::ChangeSecretRequest {
                    id: req.id,
                    old_secret: req.old_secret,
                    new_secret: req.new_secret,
                },
            ))
            .await
            .map_err(|s| as_bad_request(s, "Secret not correct"))?;
        Ok(Response::new(pb::ChangeSecretResponse {}))
    }
}

#[tonic::async_trait]
impl pb::rules_server::Rules for MicroAuthService {
    async fn create(
        &self,
        request: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let caller = caller_of(&request)?;
        let req = request.into_inner();
        let namespace = namespace_of(req.options.as_ref(), super::DEFAULT)?;
        authorize_admin(&caller, &namespace)?;
        let rule = req
            .rule
            .filter(|r| !r.id.is_empty() && r.resource.is_some() && r.access != 0)
            .ok_or_else(|| {
                validate::invalid("a rule needs an id, a resource and an access".into())
            })?;
        self.native
            .create_rule(acting(
                &caller,
                &namespace,
                native::CreateRuleRequest {
                    rule: Some(native::Rule {
                        id: rule.id,
                        scope: rule.scope,
                        resource: rule.resource.map(|r| native::Resource {
                            name: r.name,
                            r#type: r.r#type,
                            endpoint: r.endpoint,
                        }),
                        access: rule.access,
                        priority: rule.priority,
                    }),
                },
            ))
            .await
            .map_err(|s| as_bad_request(s, "rule exists"))?;
        Ok(Response::new(pb::CreateResponse {}))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let caller = caller_of(&request)?;
        let req = request.into_inner();
        let namespace = namespace_of(req.options.as_ref(), super::DEFAULT)?;
        authorize_admin(&caller, &namespace)?;
        match self
            .native
            .delete_rule(acting(
                &caller,
                &namespace,
                native::DeleteRuleRequest { id: req.id },
            ))
            .await
        {
            // A missing rule is success, as in Micro.
            Err(status) if status.code() == Code::NotFound => {}
            other => {
                other?;
            }
        }
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let caller = caller_of(&request)?;
        let namespace = namespace_of(request.get_ref().options.as_ref(), super::DEFAULT)?;
        authorize(&caller, &namespace)?;
        let answer = self
            .native
            .list_rules(acting(&caller, &namespace, native::ListRulesRequest {}))
            .await?;
        Ok(Response::new(pb::ListResponse {
            rules: answer.into_inner().rules.into_iter().map(rule_of).collect(),
        }))
    }
}
