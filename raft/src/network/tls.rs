//! Mutual TLS between nodes: every node holds the cluster CA and a certificate of its own signed
//! by it. A node accepts a peer only if the peer's certificate chains to the CA, and when it dials
//! node N it expects the certificate to name `node-N.strata`, so a misrouted address cannot pass
//! for another member.
//!
//! Layout of a TLS directory (`--tls-dir`):
//! - `ca.pem`: the cluster CA certificate (every node);
//! - `ca.key`: the CA's private key (only where certificates are issued; never needed to serve);
//! - `node-N.pem`, `node-N.key`: node N's certificate chain and private key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN protocol of the peer transport; bumped when the frame or message format changes
/// incompatibly.
pub const ALPN: &[u8] = b"strata-peer/1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} exists already; refusing to overwrite it")]
    Exists { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("TLS client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("QUIC crypto configuration: {0}")]
    Quic(String),
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The DNS name a node's certificate must carry.
pub fn node_server_name(node_id: u64) -> String {
    format!("node-{node_id}.strata")
}

pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}
pub fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}
pub fn node_cert_path(dir: &Path, node_id: u64) -> PathBuf {
    dir.join(format!("node-{node_id}.pem"))
}
pub fn node_key_path(dir: &Path, node_id: u64) -> PathBuf {
    dir.join(format!("node-{node_id}.key"))
}

/// A node's TLS identity and trust anchor, loaded once at start.
pub struct TlsMaterial {
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

impl TlsMaterial {
    /// Loads node `node_id`'s identity and the CA from a TLS directory.
    pub fn load(dir: &Path, node_id: u64) -> Result<Self, TlsError> {
        let key_path = node_key_path(dir, node_id);
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|source| TlsError::Read {
            path: key_path,
            source,
        })?;
        Ok(Self {
            ca: read_certs(&ca_cert_path(dir))?,
            chain: read_certs(&node_cert_path(dir, node_id))?,
            key,
        })
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in &self.ca {
            roots.add(cert.clone())?;
        }
        Ok(Arc::new(roots))
    }

    /// The QUIC server side: requires and verifies a client certificate from the CA.
    /// A secret of this node's own that outlives restarts: an HMAC of its private key under
    /// `label`. The QUIC endpoint keys its stateless resets and connection ids with it, so
    /// a restarted node recognises the ids its previous run handed out and resets those
    /// connections at once (the peer reconnects) instead of leaving them to the idle timeout.
    pub fn derived_secret(&self, label: &[u8]) -> [u8; 32] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.key.secret_der());
        let tag = ring::hmac::sign(&key, label);
        let mut secret = [0; 32];
        secret.copy_from_slice(tag.as_ref());
        secret
    }

    pub fn server_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots()?,
            provider.clone(),
        )
        .build()?;
        let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        crypto.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport);
        Ok(config)
    }

    /// The QUIC client side: verifies the server against the CA and presents this node's
    /// certificate.
    pub fn client_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        crypto.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport);
        Ok(config)
    }
}

const CA_COMMON_NAME: &str = "Strata cluster CA";

/// The CA's certificate parameters. Issuing re-creates the CA certificate from these and the
/// stored key: same subject and key, so what it signs chains to the `ca.pem` written at init.
fn ca_params() -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, CA_COMMON_NAME);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn write_new(path: &Path, contents: &str, secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let write_error = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                TlsError::Exists {
                    path: path.to_owned(),
                }
            } else {
                write_error(source)
            }
        })?;
    file.write_all(contents.as_bytes()).map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

/// Creates a new cluster CA (`ca.pem`, `ca.key`) in `dir`. Refuses to overwrite one.
pub fn create_ca(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let key = rcgen::KeyPair::generate()?;
    let cert = ca_params()?.self_signed(&key)?;
    write_new(&ca_key_path(dir), &key.serialize_pem(), true)?;
    write_new(&ca_cert_path(dir), &cert.pem(), false)
}

/// Issues node `node_id`'s certificate (`node-N.pem`, `node-N.key`) from the CA in `dir`. The
/// certificate names `node-N.strata` plus any extra DNS names or IP addresses given.
pub fn create_node_cert(dir: &Path, node_id: u64, extra_names: &[String]) -> Result<(), TlsError> {
    let key_path = ca_key_path(dir);
    let pem = std::fs::read_to_string(&key_path).map_err(|source| TlsError::Write {
        path: key_path.clone(),
        source,
    })?;
    let ca_key = rcgen::KeyPair::from_pem(&pem)?;
    let ca = ca_params()?.self_signed(&ca_key)?;
    let mut names = vec![node_server_name(node_id)];
    names.extend(extra_names.iter().cloned());
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, node_server_name(node_id));
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    write_new(&node_key_path(dir, node_id), &key.serialize_pem(), true)?;
    write_new(&node_cert_path(dir, node_id), &cert.pem(), false)
}
