//! Who a caller is and what it may do: accounts, rules and tokens, replicated through the same
//! log as everything else (shaped like Micro's auth, `shared/MICRO_API.md` §7–§8).
//!
//! Owns: the account and rule model and the access decision ([`model::evaluate`]), secrets'
//! hashing ([`secret`]), the token format ([`token`]), and how an [`AuthCommand`] changes the
//! replicated auth state ([`AuthState`]) with the in-memory [`AuthView`] every node checks
//! calls against.
//!
//! Must not: know about Raft, the network or gRPC; see a plaintext secret in a command (only
//! hashes and digests are replicated); hash or generate keys on the apply path (proposers do
//! that slow work before proposing).

mod command;
pub mod model;
pub mod secret;
mod state;
pub mod token;

pub use command::{AuthCommand, AuthRefusal, AuthResponse};
pub use model::{Access, Account, AccountKind, Decision, Identity, Resource, Rule};
pub use state::{AuthState, AuthView, RefreshRecord};
pub use token::{Claims, KeyMaterial, Signer};

/// Errors of the auth crate.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the system random source failed")]
    Random,
    #[error("hashing a secret: {0}")]
    Hash(String),
    #[error("signing key: {0}")]
    Key(String),
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}
