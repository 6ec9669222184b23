//! Access tokens: RS256 JWTs with Micro's claims (`sub`, `iss`, `exp`, `type`, `scopes`,
//! `metadata`, `name`) plus `iat`, `jti` (what revocation names) and `gen` (the account's
//! generation), so that Micro's own verifiers accept them and any node verifies them without a
//! round trip. Refresh tokens are opaque random strings; only their digest is stored.

use std::collections::BTreeMap;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::model::{Account, AccountKind, Identity};
use crate::{secret, AuthError};

/// Longest token accepted for parsing; longer input is refused before any work.
pub const MAX_TOKEN_CHARS: usize = 16 * 1024;
/// Access tokens live 15 minutes unless asked otherwise (Micro's default).
pub const DEFAULT_ACCESS_TTL_S: u64 = 15 * 60;
/// The longest access token lifetime a caller may ask for.
pub const MAX_ACCESS_TTL_S: u64 = 24 * 60 * 60;
/// Refresh tokens live 30 days.
pub const REFRESH_TTL_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// Clock difference between nodes tolerated when checking `exp`.
const LEEWAY_S: u64 = 5;
const REFRESH_PREFIX: &str = "srt_";

/// The RSA signing key, as the cluster replicates it. Its `Debug` shows only the key id.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    pub kid: String,
    /// PKCS#1 DER of the private key.
    pub private_der: Vec<u8>,
    /// PKCS#1 DER of the public key.
    pub public_der: Vec<u8>,
    /// The public key as SPKI PEM, what Micro's `MICRO_AUTH_PUBLIC_KEY` takes (base64'd).
    pub public_pem: String,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyMaterial {{ kid: {:?}, .. }}", self.kid)
    }
}

impl KeyMaterial {
    /// A new 2048-bit RSA key (about a second of CPU: call it on a blocking thread).
    pub fn generate() -> Result<Self, AuthError> {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        use rsa::pkcs8::EncodePublicKey;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
            .map_err(|e| AuthError::Key(e.to_string()))?;
        let public = key.to_public_key();
        Ok(Self {
            kid: secret::random_id()?,
            private_der: key
                .to_pkcs1_der()
                .map_err(|e| AuthError::Key(e.to_string()))?
                .as_bytes()
                .to_vec(),
            public_der: public
                .to_pkcs1_der()
                .map_err(|e| AuthError::Key(e.to_string()))?
                .as_bytes()
                .to_vec(),
            public_pem: public
                .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(|e| AuthError::Key(e.to_string()))?,
        })
    }
}

/// The claims of a Strata access token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub exp: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub gen: u64,
}

impl Claims {
    pub fn identity(&self) -> Result<Identity, AuthError> {
        Ok(Identity {
            id: self.sub.clone(),
            name: self.name.clone(),
            kind: AccountKind::parse(&self.kind)
                .ok_or_else(|| AuthError::Invalid(format!("unknown type {:?}", self.kind)))?,
            scopes: self.scopes.clone(),
            issuer: self.iss.clone(),
        })
    }
}

/// Signs and verifies with one key.
pub struct Signer {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer {{ kid: {:?}, .. }}", self.kid)
    }
}

impl Signer {
    pub fn new(key: &KeyMaterial) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_S;
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        Self {
            kid: key.kid.clone(),
            encoding: EncodingKey::from_rsa_der(&key.private_der),
            decoding: DecodingKey::from_rsa_der(&key.public_der),
            validation,
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A token for `account` issued at `now_s`, valid for `ttl_s`.
    pub fn issue(
        &self,
        account: &Account,
        now_s: u64,
        ttl_s: u64,
    ) -> Result<(String, Claims), AuthError> {
        let claims = Claims {
            sub: account.id.clone(),
            iss: account.issuer.clone(),
            exp: now_s + ttl_s,
            iat: now_s,
            jti: secret::random_id()?,
            kind: account.kind.as_str().to_string(),
            scopes: account.scopes.clone(),
            metadata: account.metadata.clone(),
            name: account.name.clone(),
            gen: account.generation,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| AuthError::Key(e.to_string()))?;
        Ok((token, claims))
    }

    /// The claims of `token` if this key signed it and it has not expired (by this node's
    /// clock, give or take a few seconds). Never panics, whatever the input.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(AuthError::Invalid("token too long".into()));
        }
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })
    }
}

/// A new refresh token and the digest the cluster stores for it.
pub fn new_refresh_token() -> Result<(String, [u8; 32]), AuthError> {
    let token = format!("{REFRESH_PREFIX}{}", secret::generate()?);
    let digest = secret::digest(&token);
    Ok((token, digest))
}

/// Whether `text` looks like a refresh token (rather than a JWT).
pub fn is_refresh_token(text: &str) -> bool {
    text.starts_with(REFRESH_PREFIX)
}

/// Seconds since the epoch by this machine's clock.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn key() -> &'static KeyMaterial {
        static KEY: OnceLock<KeyMaterial> = OnceLock::new();
        KEY.get_or_init(|| KeyMaterial::generate().unwrap())
    }

    fn other_key() -> &'static KeyMaterial {
        static KEY: OnceLock<KeyMaterial> = OnceLock::new();
        KEY.get_or_init(|| KeyMaterial::generate().unwrap())
    }

    fn account() -> Account {
        Account {
            id: "svc".into(),
            name: "billing".into(),
            kind: AccountKind::Service,
            scopes: vec!["service".into()],
            metadata: BTreeMap::from([("team".to_string(), "pay".to_string())]),
            issuer: "acme".into(),
            secret_hash: "$argon2id$x".into(),
            generation: 7,
            created_ms: 0,
        }
    }

    #[test]
    fn issued_tokens_verify_with_micro_claims() {
        let signer = Signer::new(key());
        let (token, claims) = signer.issue(&account(), now_s(), 60).unwrap();
        assert_eq!(signer.verify(&token).unwrap(), claims);
        // The payload is what Micro's verifier reads.
        let payload = token.split('.').nth(1).unwrap();
        use base64::Engine;
        let json: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(json["sub"], "svc");
        assert_eq!(json["iss"], "acme");
        assert_eq!(json["type"], "service");
        assert_eq!(json["scopes"][0], "service");
        assert_eq!(json["metadata"]["team"], "pay");
        assert_eq!(json["name"], "billing");
        assert!(!token.contains("argon2"));
        assert!(!format!("{:?}", key()).contains(&format!("{:?}", &key().private_der[..8])));
    }

    #[test]
    fn tampered_expired_and_foreign_tokens_are_refused() {
        let signer = Signer::new(key());
        let (token, _) = signer.issue(&account(), now_s(), 60).unwrap();
        // Another key's signature.
        let foreign = Signer::new(other_key());
        assert!(matches!(foreign.verify(&token), Err(AuthError::Invalid(_))));
        // A changed payload (issuer swapped) under the old signature.
        let parts: Vec<&str> = token.split('.').collect();
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut json: serde_json::Value =
            serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
        json["iss"] = "other".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            engine.encode(serde_json::to_vec(&json).unwrap()),
            parts[2]
        );
        assert!(matches!(signer.verify(&forged), Err(AuthError::Invalid(_))));
        // `alg: none` with no signature.
        let none = format!(
            "{}.{}.",
            engine.encode(br#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert!(signer.verify(&none).is_err());
        // Expired beyond the leeway.
        let (old, _) = signer.issue(&account(), now_s() - 3600, 60).unwrap();
        assert!(matches!(signer.verify(&old), Err(AuthError::Expired)));
        assert!(signer.verify(&"a".repeat(MAX_TOKEN_CHARS + 1)).is_err());
    }

    #[test]
    fn refresh_tokens_are_random_and_stored_as_digests() {
        let (a, da) = new_refresh_token().unwrap();
        let (b, db) = new_refresh_token().unwrap();
        assert_ne!(a, b);
        assert_ne!(da, db);
        assert!(is_refresh_token(&a));
        assert!(!is_refresh_token("eyJhbGciOi"));
        assert_eq!(secret::digest(&a), da);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        /// Arbitrary input never panics the parser and never verifies.
        #[test]
        fn the_parser_takes_any_input(text in ".{0,600}", parts in proptest::collection::vec("[A-Za-z0-9_-]{0,80}", 0..5)) {
            let signer = Signer::new(key());
            prop_assert!(signer.verify(&text).is_err());
            prop_assert!(signer.verify(&parts.join(".")).is_err());
        }
    }
}
