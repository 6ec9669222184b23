//! Resolves the namespace of every request, in exactly one place. Today it comes from the
//! `x-strata-namespace` header (default `default`); tokens will replace this without touching
//! the services, which only ever read the [`Namespace`] extension.
//!
//! The namespace `*` means "every namespace". Only an admin may ask for it (header
//! `authorization: Bearer <admin token>`, the token from `--admin-token-file`), and only the
//! registry's reads and watch accept it; every other call refuses it.

use std::sync::Arc;

use tonic::{Request, Status};

use super::validate;

pub const DEFAULT_NAMESPACE: &str = "default";
/// Every namespace, for an admin's registry reads and watches.
pub const ALL: &str = "*";

/// The caller's namespace, validated (or [`ALL`] for an admin).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace(pub String);

/// The tonic interceptor that sets [`Namespace`] on every request.
#[derive(Clone)]
pub struct Resolver {
    admin_token: Option<Arc<str>>,
}

impl Resolver {
    pub fn new(admin_token: Option<String>) -> Self {
        Self {
            admin_token: admin_token.map(Arc::from),
        }
    }

    fn is_admin(&self, request: &Request<()>) -> Result<(), Status> {
        let Some(expected) = &self.admin_token else {
            return Err(Status::permission_denied(
                "namespace \"*\" needs an admin token, and this node has none (--admin-token-file)",
            ));
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated(
                    "namespace \"*\" needs the admin token: send authorization: Bearer <token>",
                )
            })?;
        // Compared as digests, so the comparison's timing says nothing about the token.
        let digest = |text: &str| ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        if digest(presented.trim()).as_ref() != digest(expected).as_ref() {
            return Err(Status::permission_denied("the admin token is not valid"));
        }
        Ok(())
    }
}

impl tonic::service::Interceptor for Resolver {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let namespace = match request.metadata().get(strata_client::NAMESPACE_HEADER) {
            None => DEFAULT_NAMESPACE.to_string(),
            Some(value) => {
                let text = value.to_str().map_err(|_| {
                    Status::invalid_argument("x-strata-namespace is not printable ASCII")
                })?;
                if text == ALL {
                    self.is_admin(&request)?;
                } else {
                    validate::name("namespace (x-strata-namespace)", text)?;
                }
                text.to_string()
            }
        };
        request.extensions_mut().insert(Namespace(namespace));
        Ok(request)
    }
}

/// The namespace the resolver put on the request; never [`ALL`].
pub fn of<T>(request: &Request<T>) -> Result<String, Status> {
    match scope_of(request)? {
        Some(namespace) => Ok(namespace),
        None => Err(Status::invalid_argument(
            "namespace \"*\" (every namespace) is only for the registry's GetService, \
             ListServices and Watch; name one namespace",
        )),
    }
}

/// The namespace, or `None` for every namespace (an admin's `*`).
pub fn scope_of<T>(request: &Request<T>) -> Result<Option<String>, Status> {
    let namespace = request
        .extensions()
        .get::<Namespace>()
        .map(|n| n.0.clone())
        .ok_or_else(|| Status::internal("namespace layer missing from this service"))?;
    Ok((namespace != ALL).then_some(namespace))
}
