//! `strata cert init|node|secret-key`: a cluster CA, node certificates and the key that seals
//! config secrets, for tests and small deployments.
//! Larger deployments issue their own: each node needs `ca.pem`, and `node-N.pem`/`node-N.key`
//! with the DNS name `node-N.strata`.

use std::path::PathBuf;

use anyhow::Context;
use strata_raft::tls;

#[derive(clap::Args)]
pub struct CertArgs {
    #[command(subcommand)]
    command: CertCommand,
}

#[derive(clap::Subcommand)]
enum CertCommand {
    /// Create a new cluster CA: ca.pem (give it to every node) and ca.key (keep it safe).
    Init {
        #[arg(long, env = "STRATA_TLS_DIR")]
        tls_dir: PathBuf,
    },
    /// Issue node N's certificate from the CA in the directory: node-N.pem and node-N.key.
    Node {
        #[arg(long, env = "STRATA_TLS_DIR")]
        tls_dir: PathBuf,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
        /// Extra DNS names or IP addresses for the certificate (repeatable).
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Create the key that seals secret config values (32 random bytes, base64, mode 0600).
    /// Give every node of a cluster the same file (`strata serve --secret-key-file`).
    SecretKey {
        /// The file to create; an existing one is never replaced.
        #[arg(long)]
        file: PathBuf,
    },
}

pub fn run(args: CertArgs) -> anyhow::Result<()> {
    match args.command {
        CertCommand::Init { tls_dir } => {
            tls::create_ca(&tls_dir)
                .with_context(|| format!("creating a CA in {}", tls_dir.display()))?;
            println!(
                "created {} and {}",
                tls::ca_cert_path(&tls_dir).display(),
                tls::ca_key_path(&tls_dir).display()
            );
        }
        CertCommand::Node {
            tls_dir,
            node_id,
            names,
        } => {
            tls::create_node_cert(&tls_dir, node_id, &names).with_context(|| {
                format!(
                    "issuing node {node_id}'s certificate in {}",
                    tls_dir.display()
                )
            })?;
            println!(
                "created {} and {}",
                tls::node_cert_path(&tls_dir, node_id).display(),
                tls::node_key_path(&tls_dir, node_id).display()
            );
        }
        CertCommand::SecretKey { file } => {
            crate::server::secrets::SecretKey::create_file(&file)
                .with_context(|| format!("creating the secret key file {}", file.display()))?;
            println!("created {}", file.display());
        }
    }
    Ok(())
}
