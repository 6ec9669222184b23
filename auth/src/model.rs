//! Accounts, rules and the access decision, shaped like Micro's auth (MICRO_API.md §7–§8).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `user` (a person or a tool; scope `admin` makes it a namespace admin) or `service`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccountKind {
    User,
    Service,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Service => "service",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "" | "user" => Some(AccountKind::User),
            "service" => Some(AccountKind::Service),
            _ => None,
        }
    }
}

/// An account as stored: never the secret itself, only its Argon2id hash (PHC string).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub kind: AccountKind,
    pub scopes: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// The namespace the account belongs to (Micro's `issuer`).
    pub issuer: String,
    pub secret_hash: String,
    /// The revision that created the account or last changed its secret. Tokens carry it
    /// (claim `gen`): a token from before a secret change, or of a deleted account re-created
    /// under the same id, no longer matches and is refused.
    pub generation: u64,
    pub created_ms: u64,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("scopes", &self.scopes)
            .field("issuer", &self.issuer)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// The caller as a verified token describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub name: String,
    pub kind: AccountKind,
    pub scopes: Vec<String>,
    pub issuer: String,
}

impl Identity {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Micro's admin test: a `user` with scope `admin` or a `service` with scope `service`.
    pub fn is_admin_kind(&self) -> bool {
        match self.kind {
            AccountKind::User => self.has_scope("admin"),
            AccountKind::Service => self.has_scope("service"),
        }
    }
}

/// Grant or deny.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Granted,
    Denied,
}

/// What a rule covers: `type:name:endpoint`, each part exact (case-insensitive) or `*`; the
/// endpoint may also be a path wildcard `a/b/*` covering everything under `a/b/`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub kind: String,
    pub name: String,
    pub endpoint: String,
}

impl Resource {
    pub fn new(kind: &str, name: &str, endpoint: &str) -> Self {
        Self {
            kind: kind.to_string(),
            name: name.to_string(),
            endpoint: endpoint.to_string(),
        }
    }

    /// Parses `type:name:endpoint`; the endpoint may itself hold no `:`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, ':');
        let (kind, name, endpoint) = (parts.next()?, parts.next()?, parts.next()?);
        if kind.is_empty() || name.is_empty() || endpoint.is_empty() || endpoint.contains(':') {
            return None;
        }
        Some(Self::new(kind, name, endpoint))
    }

    /// Whether this rule resource covers the concrete resource `call`.
    pub fn covers(&self, call: &Resource) -> bool {
        let part = |rule: &str, value: &str| rule == "*" || rule.eq_ignore_ascii_case(value);
        let endpoint = |rule: &str, value: &str| {
            if part(rule, value) {
                return true;
            }
            match rule.strip_suffix('*') {
                Some(prefix) if prefix.ends_with('/') => value
                    .get(..prefix.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(prefix)),
                _ => false,
            }
        };
        part(&self.kind, &call.kind)
            && part(&self.name, &call.name)
            && endpoint(&self.endpoint, &call.endpoint)
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.endpoint)
    }
}

/// A rule of one namespace. Scope `""` is public (applies even without an account), `*` any
/// account of the namespace, `+` any account of any namespace, else a scope the account must
/// hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub scope: String,
    pub resource: Resource,
    pub access: Access,
    pub priority: i32,
}

/// Why a call was refused by rules: the status follows (no account: unauthenticated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// A rule denied it, or none matched.
    Deny,
}

/// Micro's per-call rule check (MICRO_API.md §8, steps 4–6) against `rules` of `namespace`.
/// `None` rules means the namespace has none of its own: then every account of the namespace
/// may call (the default Micro creates, minus anonymous access, which Strata never allows).
pub fn evaluate(
    rules: Option<&[Rule]>,
    account: Option<&Identity>,
    namespace: &str,
    call: &Resource,
) -> Decision {
    let Some(rules) = rules.filter(|rules| !rules.is_empty()) else {
        return match account {
            Some(account) if account.issuer == namespace => Decision::Allow,
            _ => Decision::Deny,
        };
    };
    let mut matching: Vec<&Rule> = rules.iter().filter(|r| r.resource.covers(call)).collect();
    // Highest priority first; ties keep a stable order (by id) so that every node decides alike.
    matching.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));
    for rule in matching {
        let decide = || match rule.access {
            Access::Granted => Decision::Allow,
            Access::Denied => Decision::Deny,
        };
        if rule.scope.is_empty() {
            return decide();
        }
        let Some(account) = account else { continue };
        if account.issuer != namespace && rule.scope != "+" {
            return Decision::Deny;
        }
        if rule.scope == "*" || rule.scope == "+" || account.has_scope(&rule.scope) {
            return decide();
        }
    }
    Decision::Deny
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(issuer: &str, scopes: &[&str]) -> Identity {
        Identity {
            id: "a".into(),
            name: "a".into(),
            kind: AccountKind::User,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            issuer: issuer.into(),
        }
    }

    fn rule(id: &str, scope: &str, resource: &str, access: Access, priority: i32) -> Rule {
        Rule {
            id: id.into(),
            scope: scope.into(),
            resource: Resource::parse(resource).unwrap(),
            access,
            priority,
        }
    }

    use Access::{Denied, Granted};
    use Decision::{Allow, Deny};

    #[test]
    fn resources_match_by_part_wildcard_and_path() {
        let call = Resource::new("service", "kv", "Kv.Put");
        for (pattern, covers) in [
            ("*:*:*", true),
            ("service:kv:Kv.Put", true),
            ("SERVICE:KV:kv.put", true),
            ("service:kv:*", true),
            ("service:*:Kv.Put", true),
            ("service:kv:Kv.Get", false),
            ("service:stream:*", false),
            ("api:kv:*", false),
        ] {
            assert_eq!(
                Resource::parse(pattern).unwrap().covers(&call),
                covers,
                "{pattern}"
            );
        }
        let path = Resource::new("api", "web", "/foo/bar/baz");
        assert!(Resource::parse("api:web:/foo/*").unwrap().covers(&path));
        assert!(Resource::parse("api:web:/FOO/bar/*").unwrap().covers(&path));
        assert!(!Resource::parse("api:web:/fo*").unwrap().covers(&path));
        assert!(!Resource::parse("api:web:/bar/*").unwrap().covers(&path));
        for bad in ["", "a:b", "a::c", ":b:c", "a:b:c:d"] {
            assert_eq!(Resource::parse(bad), None, "{bad:?}");
        }
    }

    /// The cases of MICRO_API.md §8, step 5, in order.
    #[test]
    fn rules_decide_as_micro_documents() {
        let call = Resource::new("service", "kv", "Kv.Put");
        let ns = "acme";
        let member = account("acme", &["admin"]);
        let plain = account("acme", &[]);
        let outsider = account("other", &["admin"]);
        type Case<'a> = (&'a str, Vec<Rule>, Option<&'a Identity>, Decision);
        let cases: Vec<Case> = vec![
            // No rules of its own: members only.
            ("no rules, member", vec![], Some(&plain), Allow),
            ("no rules, outsider", vec![], Some(&outsider), Deny),
            ("no rules, nobody", vec![], None, Deny),
            // Public decides at once, even without an account.
            (
                "public grant",
                vec![rule("p", "", "*:*:*", Granted, 0)],
                None,
                Allow,
            ),
            (
                "public deny",
                vec![rule("p", "", "*:*:*", Denied, 0)],
                Some(&member),
                Deny,
            ),
            // Without an account, account rules are skipped and nothing matched: deny.
            (
                "no account",
                vec![rule("s", "*", "*:*:*", Granted, 0)],
                None,
                Deny,
            ),
            // Another namespace's account is denied unless the scope is `+`.
            (
                "outsider *",
                vec![rule("s", "*", "*:*:*", Granted, 0)],
                Some(&outsider),
                Deny,
            ),
            (
                "outsider +",
                vec![rule("s", "+", "*:*:*", Granted, 0)],
                Some(&outsider),
                Allow,
            ),
            (
                "member *",
                vec![rule("s", "*", "*:*:*", Granted, 0)],
                Some(&plain),
                Allow,
            ),
            (
                "member +",
                vec![rule("s", "+", "*:*:*", Granted, 0)],
                Some(&plain),
                Allow,
            ),
            // A named scope decides only for accounts holding it; others fall through.
            (
                "scope held",
                vec![rule("s", "admin", "*:*:*", Granted, 0)],
                Some(&member),
                Allow,
            ),
            (
                "scope missing",
                vec![rule("s", "admin", "*:*:*", Granted, 0)],
                Some(&plain),
                Deny,
            ),
            // Priority: the highest first.
            (
                "deny outranks",
                vec![
                    rule("a", "*", "*:*:*", Granted, 1),
                    rule("b", "*", "service:kv:Kv.Put", Denied, 10),
                ],
                Some(&plain),
                Deny,
            ),
            (
                "grant outranks",
                vec![
                    rule("a", "*", "*:*:*", Granted, 10),
                    rule("b", "*", "service:kv:Kv.Put", Denied, 1),
                ],
                Some(&plain),
                Allow,
            ),
            // Rules of other resources are not considered: nothing matched, deny.
            (
                "unrelated",
                vec![rule("a", "*", "service:stream:*", Granted, 0)],
                Some(&plain),
                Deny,
            ),
            (
                "fall through to lower",
                vec![
                    rule("a", "admin", "*:*:*", Denied, 10),
                    rule("b", "*", "*:*:*", Granted, 1),
                ],
                Some(&plain),
                Allow,
            ),
        ];
        for (name, rules, who, expected) in cases {
            assert_eq!(evaluate(Some(&rules), who, ns, &call), expected, "{name}");
        }
    }

    #[test]
    fn admin_kinds_follow_micro() {
        let mut who = account("micro", &["admin"]);
        assert!(who.is_admin_kind());
        who.kind = AccountKind::Service;
        assert!(!who.is_admin_kind());
        who.scopes = vec!["service".into()];
        assert!(who.is_admin_kind());
        who.kind = AccountKind::User;
        assert!(!who.is_admin_kind());
    }

    #[test]
    fn debug_never_shows_the_secret_hash() {
        let account = Account {
            id: "a".into(),
            name: "a".into(),
            kind: AccountKind::User,
            scopes: vec![],
            metadata: BTreeMap::new(),
            issuer: "n".into(),
            secret_hash: "$argon2id$SENSITIVE".into(),
            generation: 1,
            created_ms: 0,
        };
        assert!(!format!("{account:?}").contains("SENSITIVE"));
    }
}
