//! `strata login`, `strata account`, `strata rule` and `strata token`: accounts, rules and
//! tokens through the auth service. `login` keeps the token (and its refresh token) in a file
//! only its user can read; every client command uses it when no `--token` is given, and
//! refreshes it when it is about to expire.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use strata_proto::auth::v1 as pb;
use strata_proto::auth::v1::auth_client::AuthClient;
use tonic::metadata::MetadataValue;

use super::{status, ClientArgs};

/// A saved login.
#[derive(Serialize, Deserialize)]
struct Saved {
    namespace: String,
    access_token: String,
    refresh_token: String,
    expiry: i64,
}

/// Where `strata login` keeps the token: `$STRATA_TOKEN_FILE`, else
/// `$XDG_CONFIG_HOME/strata/token.json`, else `~/.config/strata/token.json`.
pub fn token_file() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("STRATA_TOKEN_FILE") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("strata").join("token.json"))
}

fn save(saved: &Saved) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = token_file().context("no home directory: set STRATA_TOKEN_FILE")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("writing {}", temporary.display()))?;
    file.write_all(&serde_json::to_vec_pretty(saved)?)?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path)?;
    Ok(path)
}

/// The saved login's access token, refreshed first (through `endpoints`) when it expires
/// within a minute.
pub async fn saved_token(
    endpoints: &str,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
    let Some(path) = token_file() else {
        return Ok(None);
    };
    let Ok(text) = std::fs::read(&path) else {
        return Ok(None);
    };
    let mut saved: Saved = serde_json::from_slice(&text)
        .with_context(|| format!("reading the saved login {}", path.display()))?;
    let now = strata_auth::token::now_s() as i64;
    if saved.expiry - now < 60 {
        let token = connect_to(endpoints, ca, None, None)
            .await?
            .token(pb::TokenRequest {
                refresh_token: saved.refresh_token.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| {
                anyhow::anyhow!(
                    "refreshing the saved login (strata login again): {}",
                    s.message()
                )
            })?
            .into_inner()
            .token
            .context("no token in the answer")?;
        saved.access_token = token.access_token;
        saved.expiry = token.expiry;
        save(&saved)?;
    }
    Ok(Some(saved.access_token))
}

/// Adds `authorization` and `x-strata-namespace` to every request.
pub type BoxedInterceptor =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send + Sync>;

type Auth = AuthClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BoxedInterceptor>,
>;

/// The headers of a token and a namespace, for a raw gRPC client.
pub fn interceptor(
    token: Option<String>,
    namespace: Option<&str>,
) -> anyhow::Result<BoxedInterceptor> {
    let authorization = token
        .map(|t| MetadataValue::try_from(format!("Bearer {t}")))
        .transpose()
        .context("the token is not printable ASCII")?;
    let namespace = namespace
        .map(MetadataValue::try_from)
        .transpose()
        .context("the namespace is not ASCII")?;
    Ok(Box::new(move |mut request: tonic::Request<()>| {
        if let Some(value) = &authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        if let Some(value) = &namespace {
            request
                .metadata_mut()
                .insert(strata_client::NAMESPACE_HEADER, value.clone());
        }
        Ok(request)
    }))
}

async fn connect(args: &ClientArgs, token: Option<String>) -> anyhow::Result<Auth> {
    connect_to(
        &args.endpoint,
        args.ca_file.as_deref(),
        args.namespace.as_deref(),
        token,
    )
    .await
}

async fn connect_to(
    endpoints: &str,
    ca: Option<&std::path::Path>,
    namespace: Option<&str>,
    token: Option<String>,
) -> anyhow::Result<Auth> {
    Ok(AuthClient::with_interceptor(
        super::channel(endpoints, ca).await?,
        interceptor(token, namespace)?,
    ))
}

async fn authed(args: &ClientArgs) -> anyhow::Result<Auth> {
    connect(args, args.token().await?).await
}

/// A secret from a file (`-`: standard input), first line.
fn read_secret(file: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    }
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

#[derive(clap::Args)]
pub struct LoginArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The account id.
    #[arg(long)]
    id: String,
    /// File holding the secret (`-`: standard input); or set STRATA_SECRET.
    #[arg(long)]
    secret_file: Option<String>,
    /// Seconds the access token lives (it is refreshed when used near its end).
    #[arg(long, default_value_t = 3600)]
    expiry: i64,
}

pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let secret = match (&args.secret_file, std::env::var("STRATA_SECRET")) {
        (Some(file), _) => read_secret(file)?,
        (None, Ok(secret)) => secret,
        (None, Err(_)) => anyhow::bail!("give --secret-file FILE (or -) or set STRATA_SECRET"),
    };
    let namespace = args.client.namespace.clone().unwrap_or_default();
    let token = connect(&args.client, None)
        .await?
        .token(pb::TokenRequest {
            id: args.id.clone(),
            secret,
            namespace: namespace.clone(),
            token_expiry: args.expiry,
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner()
        .token
        .context("no token in the answer")?;
    let path = save(&Saved {
        namespace,
        access_token: token.access_token,
        refresh_token: token.refresh_token,
        expiry: token.expiry,
    })?;
    println!("logged in as {}; token kept in {}", args.id, path.display());
    Ok(())
}

#[derive(clap::Args)]
pub struct AccountArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: AccountCommand,
}

#[derive(clap::Subcommand)]
enum AccountCommand {
    /// Creates an account in the namespace; prints its secret once.
    Create {
        id: String,
        /// user or service.
        #[arg(long, default_value = "user")]
        r#type: String,
        /// A scope (repeat for more): `admin` makes a namespace admin.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// File holding the secret to set (`-`: standard input); default: a random one.
        #[arg(long)]
        secret_file: Option<String>,
    },
    List,
    Delete {
        id: String,
    },
    /// Sets a new secret (random unless given): the account's earlier tokens stop working.
    Secret {
        id: String,
        #[arg(long)]
        secret_file: Option<String>,
        /// Your current secret, when changing your own as a non-admin.
        #[arg(long)]
        old_secret_file: Option<String>,
    },
}

fn print_account(account: &pb::Account, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "id": account.id, "type": account.r#type, "namespace": account.issuer,
                "scopes": account.scopes, "name": account.name,
                "secret": (!account.secret.is_empty()).then_some(&account.secret),
            })
        );
    } else {
        let mut line = format!(
            "{}/{}\t{}\tscopes: {}",
            account.issuer,
            account.id,
            account.r#type,
            account.scopes.join(",")
        );
        if !account.secret.is_empty() {
            line.push_str(&format!("\tsecret: {} (shown once)", account.secret));
        }
        println!("{line}");
    }
}

pub async fn account(args: AccountArgs) -> anyhow::Result<()> {
    let json = args.client.json;
    let mut auth = authed(&args.client).await?;
    match args.command {
        AccountCommand::Create {
            id,
            r#type,
            scopes,
            secret_file,
        } => {
            let secret = secret_file.as_deref().map(read_secret).transpose()?;
            let account = auth
                .generate(pb::GenerateRequest {
                    id,
                    r#type,
                    scopes,
                    secret: secret.unwrap_or_default(),
                    ..Default::default()
                })
                .await
                .map_err(status)?
                .into_inner()
                .account
                .context("no account in the answer")?;
            print_account(&account, json);
        }
        AccountCommand::List => {
            let accounts = auth
                .list_accounts(pb::ListAccountsRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .accounts;
            for account in &accounts {
                print_account(account, json);
            }
        }
        AccountCommand::Delete { id } => {
            auth.delete_account(pb::DeleteAccountRequest { id: id.clone() })
                .await
                .map_err(status)?;
            println!("deleted {id}");
        }
        AccountCommand::Secret {
            id,
            secret_file,
            old_secret_file,
        } => {
            let account = auth
                .change_secret(pb::ChangeSecretRequest {
                    id,
                    old_secret: old_secret_file
                        .as_deref()
                        .map(read_secret)
                        .transpose()?
                        .unwrap_or_default(),
                    new_secret: secret_file
                        .as_deref()
                        .map(read_secret)
                        .transpose()?
                        .unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner()
                .account
                .context("no account in the answer")?;
            print_account(&account, json);
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct RuleArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: RuleCommand,
}

#[derive(clap::Subcommand)]
enum RuleCommand {
    /// A rule of the namespace: `--resource service:kv:Kv.Put --access deny --scope '*'`.
    Create {
        id: String,
        /// type:name:endpoint, each part exact or `*` (endpoint also `a/b/*`).
        #[arg(long)]
        resource: String,
        /// grant or deny.
        #[arg(long)]
        access: String,
        /// "" public, "*" any account of the namespace, "+" any account, else a scope.
        #[arg(long, default_value = "*")]
        scope: String,
        /// Higher first.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i32,
    },
    List,
    Delete {
        id: String,
    },
}

pub async fn rule(args: RuleArgs) -> anyhow::Result<()> {
    let json = args.client.json;
    let mut auth = authed(&args.client).await?;
    match args.command {
        RuleCommand::Create {
            id,
            resource,
            access,
            scope,
            priority,
        } => {
            let parsed = strata_auth::Resource::parse(&resource)
                .context("--resource is type:name:endpoint")?;
            let access = match access.as_str() {
                "grant" | "granted" => pb::Access::Granted,
                "deny" | "denied" => pb::Access::Denied,
                other => anyhow::bail!("--access is grant or deny, not {other:?}"),
            };
            auth.create_rule(pb::CreateRuleRequest {
                rule: Some(pb::Rule {
                    id: id.clone(),
                    scope,
                    resource: Some(pb::Resource {
                        r#type: parsed.kind,
                        name: parsed.name,
                        endpoint: parsed.endpoint,
                    }),
                    access: access as i32,
                    priority,
                }),
            })
            .await
            .map_err(status)?;
            println!("created rule {id}");
        }
        RuleCommand::List => {
            let rules = auth
                .list_rules(pb::ListRulesRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .rules;
            for rule in rules {
                let resource = rule.resource.unwrap_or_default();
                let access = if rule.access == pb::Access::Denied as i32 {
                    "deny"
                } else {
                    "grant"
                };
                let target = format!(
                    "{}:{}:{}",
                    resource.r#type, resource.name, resource.endpoint
                );
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"id": rule.id, "scope": rule.scope, "resource": target,
                            "access": access, "priority": rule.priority})
                    );
                } else {
                    println!(
                        "{}\t{access}\t{target}\tscope {:?}\tpriority {}",
                        rule.id, rule.scope, rule.priority
                    );
                }
            }
        }
        RuleCommand::Delete { id } => {
            auth.delete_rule(pb::DeleteRuleRequest { id: id.clone() })
                .await
                .map_err(status)?;
            println!("deleted rule {id}");
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct TokenArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(clap::Subcommand)]
enum TokenCommand {
    /// Prints the access token in use (the saved login's, refreshed if needed).
    Issue,
    /// Who a token stands for (the one in use when none is given).
    Inspect { token: Option<String> },
    /// Ends a token (access or refresh) on every node.
    Revoke { token: String },
    /// The public key that verifies access tokens (PEM), for verifiers outside Strata.
    Key,
}

pub async fn token(args: TokenArgs) -> anyhow::Result<()> {
    match args.command {
        TokenCommand::Issue => {
            let token = args
                .client
                .token()
                .await?
                .context("no token: strata login first")?;
            println!("{token}");
        }
        TokenCommand::Inspect { token } => {
            let token = match token {
                Some(token) => token,
                None => args
                    .client
                    .token()
                    .await?
                    .context("no token given and none saved")?,
            };
            let account = connect(&args.client, None)
                .await?
                .inspect(pb::InspectRequest { token })
                .await
                .map_err(status)?
                .into_inner()
                .account
                .context("no account in the answer")?;
            print_account(&account, args.client.json);
        }
        TokenCommand::Revoke { token } => {
            authed(&args.client)
                .await?
                .revoke(pb::RevokeRequest { token })
                .await
                .map_err(status)?;
            println!("revoked");
        }
        TokenCommand::Key => {
            let key = connect(&args.client, None)
                .await?
                .public_key(pb::PublicKeyRequest {})
                .await
                .map_err(status)?
                .into_inner();
            print!("{}", key.pem);
        }
    }
    Ok(())
}
