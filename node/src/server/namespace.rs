//! The namespace of every request, as the identity layer ([`super::identity`]) decided it: the
//! caller's token's issuer, or one a super-tenant admin named in `x-strata-namespace`. Services
//! only ever read it from here; no service looks at a header.
//!
//! The namespace `*` means "every namespace". Only a super-tenant admin may ask for it, and
//! only the registry's reads and watch accept it; every other call refuses it.

use tonic::{Request, Status};

use strata_auth::Identity;

pub const DEFAULT_NAMESPACE: &str = "default";
/// Every namespace, for an admin's registry reads and watches.
pub const ALL: &str = "*";

/// Who is calling and for which namespace; set on every request by the identity layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The verified account; `None` where auth is off or on the public calls (token exchange).
    pub identity: Option<Identity>,
    /// The namespace the call acts on (validated), or [`ALL`].
    pub namespace: String,
    /// A super-tenant admin (or auth is off): any namespace, cluster membership.
    pub super_admin: bool,
    /// The access token's id and expiry (unix seconds), when a bearer token was presented.
    pub token: Option<(String, u64)>,
    /// The account's generation its `Basic` secret was found correct for, when one was sent.
    pub basic_generation: Option<u64>,
}

impl Caller {
    /// May manage accounts and rules of `namespace`: a super admin, or an admin of it (a
    /// `user` with scope `admin` or a `service` with scope `service`, as Micro decides).
    pub fn may_administer(&self, namespace: &str) -> bool {
        self.super_admin
            || self
                .identity
                .as_ref()
                .is_some_and(|who| who.issuer == namespace && who.is_admin_kind())
    }
}

/// The caller the identity layer put on the request.
pub fn caller<T>(request: &Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::internal("identity layer missing from this service"))
}

/// The namespace the call acts on; never [`ALL`].
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
    let namespace = caller(request)?.namespace.clone();
    Ok((namespace != ALL).then_some(namespace))
}
