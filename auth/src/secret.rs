//! Account secrets: generated at random, stored only as salted Argon2id hashes. Hashing and
//! checking are slow on purpose (tens of milliseconds): callers run them on blocking threads.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::SecureRandom;

use crate::AuthError;

/// Shortest secret a caller may choose.
pub const MIN_SECRET_CHARS: usize = 12;
/// Longest secret a caller may choose (hashing cost is bounded by it too).
pub const MAX_SECRET_CHARS: usize = 256;

fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AuthError::Random)?;
    Ok(bytes)
}

/// A new random secret: 48 hex characters (192 bits).
pub fn generate() -> Result<String, AuthError> {
    Ok(hex(&random_bytes::<24>()?))
}

/// A new random identifier: 32 hex characters (128 bits).
pub fn random_id() -> Result<String, AuthError> {
    Ok(hex(&random_bytes::<16>()?))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `text`: how refresh tokens are stored and how caches key secrets.
pub fn digest(text: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The Argon2id PHC string of `secret`, with a fresh random salt.
pub fn hash(secret: &str) -> Result<String, AuthError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `secret` matches the stored `hash` (constant-time comparison inside argon2).
pub fn verify(secret: &str, hash: &str) -> bool {
    if secret.len() > MAX_SECRET_CHARS {
        return false;
    }
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Checks a secret a caller chose.
pub fn check_chosen(secret: &str) -> Result<(), String> {
    let chars = secret.chars().count();
    if chars < MIN_SECRET_CHARS {
        return Err(format!(
            "a secret needs at least {MIN_SECRET_CHARS} characters"
        ));
    }
    if chars > MAX_SECRET_CHARS {
        return Err(format!(
            "a secret has at most {MAX_SECRET_CHARS} characters"
        ));
    }
    if secret.chars().any(char::is_control) {
        return Err("a secret holds no control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_and_verify() {
        let secret = generate().unwrap();
        assert_eq!(secret.len(), 48);
        let a = hash(&secret).unwrap();
        let b = hash(&secret).unwrap();
        assert_ne!(a, b, "a fresh salt each time");
        assert!(a.starts_with("$argon2id$"));
        assert!(!a.contains(&secret));
        assert!(verify(&secret, &a));
        assert!(verify(&secret, &b));
        assert!(!verify("wrong-secret-value", &a));
        assert!(!verify(&secret, "not a phc string"));
    }

    #[test]
    fn chosen_secrets_are_checked() {
        assert!(check_chosen("short").is_err());
        assert!(check_chosen(&"x".repeat(MAX_SECRET_CHARS + 1)).is_err());
        assert!(check_chosen("twelve chars\n").is_err());
        assert!(check_chosen("twelve chars").is_ok());
    }
}
