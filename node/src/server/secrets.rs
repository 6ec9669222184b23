//! Encryption of secret config values at rest: ChaCha20-Poly1305 (ring) with a 256-bit key from
//! the node's key file, a random 96-bit nonce per value, and the namespace and document key as
//! associated data (a ciphertext moved to another document does not open).
//!
//! Values are sealed at the API edge, before they are proposed, so that neither the Raft log nor
//! the state ever holds the plaintext. Every node of a cluster must have the same key file.

use std::path::Path;

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("reading the secret key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("a secret value does not open with this node's key (another key file, or damaged)")]
    Open,
}

pub struct SecretKey {
    key: LessSafeKey,
    random: SystemRandom,
}

impl SecretKey {
    /// Reads a key file: 32 bytes, base64 on one line.
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let fail = |reason: String| SecretError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| fail(format!("not base64: {e}")))?;
        if bytes.len() != KEY_BYTES {
            return Err(fail(format!(
                "holds {} bytes; a key is {KEY_BYTES} random bytes, base64-encoded \
                 (create one with `strata cert secret-key`)",
                bytes.len()
            )));
        }
        let key =
            UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| fail("unusable key".into()))?;
        Ok(Self {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        })
    }

    /// Writes a new random key file (mode 0600), refusing to replace one.
    pub fn create_file(path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut bytes = [0u8; KEY_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| std::io::Error::other("the system random source failed"))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        writeln!(
            file,
            "{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )?;
        file.sync_all()
    }

    /// `base64(nonce ++ ciphertext ++ tag)`.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .expect("the system random source failed");
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut sealed,
            )
            .expect("sealing fails only for absurd lengths");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    pub fn open(&self, context: &[u8], sealed: &str) -> Result<Vec<u8>, SecretError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| SecretError::Open)?;
        if bytes.len() < NONCE_LEN {
            return Err(SecretError::Open);
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Open)?;
        let mut buffer = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context), &mut buffer)
            .map_err(|_| SecretError::Open)?;
        Ok(plain.to_vec())
    }
}

/// The associated data that binds a secret to its document.
pub fn context(namespace: &str, key: &str) -> Vec<u8> {
    format!("strata.config.v1\0{namespace}\0{key}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_in_its_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        SecretKey::create_file(&path).unwrap();
        assert!(
            SecretKey::create_file(&path).is_err(),
            "never replaces a key"
        );
        let key = SecretKey::load(&path).unwrap();
        let sealed = key.seal(&context("ns", "app"), b"hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            key.seal(&context("ns", "app"), b"hunter2"),
            "fresh nonces"
        );
        assert_eq!(
            key.open(&context("ns", "app"), &sealed).unwrap(),
            b"hunter2"
        );
        assert!(key.open(&context("other", "app"), &sealed).is_err());
        std::fs::write(dir.path().join("short"), "AAAA\n").unwrap();
        assert!(SecretKey::load(&dir.path().join("short")).is_err());
    }
}
