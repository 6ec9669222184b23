//! What the auth part of a log entry asks for, and what it answered. Part of the on-disk format
//! (bincode): add variants at the end only.

use serde::{Deserialize, Serialize};

use crate::model::{Account, Rule};
use crate::token::KeyMaterial;

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub enum AuthCommand {
    /// The first start of a cluster with auth: the signing key and the root admin account.
    /// Applies only where no key exists yet (the first of racing proposals wins).
    Init {
        key: KeyMaterial,
        root: Account,
    },
    /// A new account (its id and name free in its namespace); its generation is set here.
    CreateAccount {
        account: Account,
    },
    /// Removes an account and its refresh tokens; its access tokens stop verifying.
    DeleteAccount {
        namespace: String,
        id: String,
    },
    /// A new secret hash: ends the account's refresh tokens and access tokens (new generation).
    SetSecret {
        namespace: String,
        id: String,
        secret_hash: String,
    },
    CreateRule {
        namespace: String,
        rule: Rule,
    },
    /// Removing a rule that does not exist succeeds (as in Micro).
    DeleteRule {
        namespace: String,
        id: String,
    },
    /// A refresh token (its SHA-256) for the account's current generation.
    IssueRefresh {
        digest: [u8; 32],
        namespace: String,
        account_id: String,
        expires_ms: u64,
    },
    RevokeRefresh {
        digest: [u8; 32],
    },
    /// An access token (by `jti`) refused from now until it expires anyway.
    RevokeAccess {
        jti: String,
        expires_s: u64,
    },
}

impl std::fmt::Debug for AuthCommand {
    /// Names and ids only: never key material or hashes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthCommand::Init { root, .. } => write!(f, "Init({}/{})", root.issuer, root.id),
            AuthCommand::CreateAccount { account } => {
                write!(f, "CreateAccount({}/{})", account.issuer, account.id)
            }
            AuthCommand::DeleteAccount { namespace, id } => {
                write!(f, "DeleteAccount({namespace}/{id})")
            }
            AuthCommand::SetSecret { namespace, id, .. } => {
                write!(f, "SetSecret({namespace}/{id})")
            }
            AuthCommand::CreateRule { namespace, rule } => {
                write!(f, "CreateRule({namespace}/{})", rule.id)
            }
            AuthCommand::DeleteRule { namespace, id } => write!(f, "DeleteRule({namespace}/{id})"),
            AuthCommand::IssueRefresh {
                namespace,
                account_id,
                ..
            } => write!(f, "IssueRefresh({namespace}/{account_id})"),
            AuthCommand::RevokeRefresh { .. } => write!(f, "RevokeRefresh"),
            AuthCommand::RevokeAccess { .. } => write!(f, "RevokeAccess"),
        }
    }
}

impl AuthCommand {
    pub fn kind(&self) -> &'static str {
        match self {
            AuthCommand::Init { .. } => "init",
            AuthCommand::CreateAccount { .. } => "create_account",
            AuthCommand::DeleteAccount { .. } => "delete_account",
            AuthCommand::SetSecret { .. } => "set_secret",
            AuthCommand::CreateRule { .. } => "create_rule",
            AuthCommand::DeleteRule { .. } => "delete_rule",
            AuthCommand::IssueRefresh { .. } => "issue_refresh",
            AuthCommand::RevokeRefresh { .. } => "revoke_refresh",
            AuthCommand::RevokeAccess { .. } => "revoke_access",
        }
    }
}

/// Why a command changed nothing.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthRefusal {
    AlreadyInitialized,
    NotInitialized,
    AccountExists,
    NameTaken,
    NoSuchAccount,
    RuleExists,
    /// The namespace holds the most accounts or rules allowed.
    TooMany,
}

impl std::fmt::Display for AuthRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthRefusal::AlreadyInitialized => "auth is already initialised",
            AuthRefusal::NotInitialized => "auth is not initialised yet",
            AuthRefusal::AccountExists => "an account with this id exists in the namespace",
            AuthRefusal::NameTaken => "an account with this name exists in the namespace",
            AuthRefusal::NoSuchAccount => "no such account in the namespace",
            AuthRefusal::RuleExists => "a rule with this id exists in the namespace",
            AuthRefusal::TooMany => "the namespace holds the most accounts or rules allowed",
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum AuthResponse {
    /// Done, at this revision; for accounts, the generation they now have.
    Done {
        revision: u64,
    },
    Refused(AuthRefusal),
}
