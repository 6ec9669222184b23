//! Resolves the namespace of every request, in exactly one place. Today it comes from the
//! `x-strata-namespace` header (default `default`); tokens will replace this without touching
//! the services, which only ever read the [`Namespace`] extension.

use tonic::{Request, Status};

use super::validate;

pub const DEFAULT_NAMESPACE: &str = "default";

/// The caller's namespace, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace(pub String);

pub fn resolve(mut request: Request<()>) -> Result<Request<()>, Status> {
    let namespace = match request.metadata().get(strata_client::NAMESPACE_HEADER) {
        None => DEFAULT_NAMESPACE.to_string(),
        Some(value) => {
            let text = value.to_str().map_err(|_| {
                Status::invalid_argument("x-strata-namespace is not printable ASCII")
            })?;
            validate::name("namespace (x-strata-namespace)", text)?;
            text.to_string()
        }
    };
    request.extensions_mut().insert(Namespace(namespace));
    Ok(request)
}

/// The namespace `resolve` put on the request.
pub fn of<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .extensions()
        .get::<Namespace>()
        .map(|n| n.0.clone())
        .ok_or_else(|| Status::internal("namespace layer missing from this service"))
}
