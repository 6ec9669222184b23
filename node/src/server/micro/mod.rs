//! Micro v3's APIs (shared/MICRO_API.md) on the client port, as an edge over the native
//! subsystems: each handler maps Micro's request onto the native state (the mapping is in
//! ARCHITECTURE.md), authorizes it as Micro's servers do, and answers in Micro's shapes.
//! Nothing here stores a second copy of anything.
//!
//! Tenancy: the identity layer has already authenticated the caller; Micro names the tenant
//! in the message (a store database, a registry domain, a config namespace), and the handler
//! checks it with [`authorize`] or [`authorize_admin`] (Micro's `Authorize`/`AuthorizeAdmin`).

pub mod announce;
pub mod auth;
pub mod blob;
pub mod broker;
pub mod config;
pub mod errors;
pub mod events;
pub mod registry;
pub mod store;

use tonic::{Request, Status};

use super::identity::{permission_denied, unauthenticated};
use super::namespace::{self, Caller};
use super::validate;

/// Micro's default for every database, table, domain and namespace.
pub const DEFAULT: &str = "micro";

/// `name`, or [`DEFAULT`] when empty.
pub fn or_default(name: &str) -> &str {
    if name.is_empty() {
        DEFAULT
    } else {
        name
    }
}

/// A tenant name from a Micro message (empty means [`DEFAULT`]), valid as a Strata namespace.
pub fn tenant(field: &str, name: &str) -> Result<String, Status> {
    let name = or_default(name);
    validate::name(field, name)?;
    Ok(name.to_string())
}

/// Micro's `Authorize(ns)`: a super-tenant admin reaches every namespace, anyone else only
/// their own (auth off: everyone is a super admin).
pub fn authorize(caller: &Caller, ns: &str) -> Result<(), Status> {
    if caller.super_admin {
        return Ok(());
    }
    let Some(who) = &caller.identity else {
        return Err(unauthenticated("an account is required"));
    };
    if who.issuer != ns {
        return Err(permission_denied(format!(
            "access denied to namespace {ns:?} (the account belongs to {:?})",
            who.issuer
        )));
    }
    Ok(())
}

/// Micro's `AuthorizeAdmin(ns)`: [`authorize`], and the account is an admin kind (a `user`
/// with scope `admin` or a `service` with scope `service`). Micro answers 401 here.
pub fn authorize_admin(caller: &Caller, ns: &str) -> Result<(), Status> {
    authorize(caller, ns)?;
    match &caller.identity {
        Some(who) if !caller.super_admin && !who.is_admin_kind() => Err(unauthenticated(format!(
            "Unauthorized: account {:?} needs scope admin (user) or service (service) \
                 for namespace {ns:?}",
            who.id
        ))),
        _ => Ok(()),
    }
}

/// The caller the identity layer put on `request`.
pub fn caller_of<T>(request: &Request<T>) -> Result<Caller, Status> {
    namespace::caller(request).cloned()
}

/// The first message of a response-streaming call, which Micro's client sends without ever
/// half-closing the request side: the handler answers after it and never waits for more.
pub async fn first<T>(request: Request<tonic::Streaming<T>>) -> Result<(Caller, T), Status> {
    let caller = caller_of(&request)?;
    let mut stream = request.into_inner();
    Ok((caller, first_message(&mut stream).await?))
}

/// How long a stream may stay silent before its first message, which carries the request.
pub const FIRST_MESSAGE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The first message of `stream`, within [`FIRST_MESSAGE_WAIT`]: a stream that never sends
/// its request is ended rather than held open.
pub async fn first_message<T>(stream: &mut tonic::Streaming<T>) -> Result<T, Status> {
    match tokio::time::timeout(FIRST_MESSAGE_WAIT, stream.message()).await {
        Ok(Ok(Some(message))) => Ok(message),
        Ok(Ok(None)) => Err(Status::invalid_argument(
            "the stream ended before its request",
        )),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no request within {} s of opening the stream",
            FIRST_MESSAGE_WAIT.as_secs()
        ))),
    }
}
