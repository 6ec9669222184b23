//! An account's login, kept fresh: the client exchanges its id and secret for an access token
//! and renews it (with the refresh token, else the secret again) at four fifths of its life,
//! for as long as the client lives. Every call reads the current token from here.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use strata_proto::auth::v1 as pb;
use strata_proto::auth::v1::auth_client::AuthClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;

use crate::Error;

/// The `authorization` value every call sends, when there is one.
pub(crate) type Authorization = Arc<RwLock<Option<AsciiMetadataValue>>>;

/// An account to log in as.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub namespace: String,
    pub id: String,
    pub secret: String,
    /// Seconds each access token lives (0: the server's default, 15 minutes).
    pub lifetime_s: i64,
}

/// How long a failed renewal waits before it tries again.
const RETRY: Duration = Duration::from_secs(2);

pub(crate) fn bearer(token: &str) -> Result<AsciiMetadataValue, Error> {
    MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| Error::InvalidArgument("the token is not printable ASCII".into()))
}

/// How long a login keeps trying while every node answers UNAVAILABLE (a cluster still
/// starting: no leader yet, or auth not yet initialised where the client asked).
const LOGIN_PATIENCE: Duration = Duration::from_secs(10);

/// One exchange: the refresh token when given, else id and secret; on each channel in turn
/// until one answers, and again with backoff (within [`LOGIN_PATIENCE`]) while every node is
/// unavailable.
pub(crate) async fn login(
    channels: &[Channel],
    credentials: &Credentials,
    refresh: Option<&str>,
) -> Result<pb::Token, Error> {
    let deadline = tokio::time::Instant::now() + LOGIN_PATIENCE;
    let mut backoff = Duration::from_millis(50);
    loop {
        match login_once(channels, credentials, refresh).await {
            Err(Error::Unavailable { .. }) if tokio::time::Instant::now() + backoff < deadline => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

async fn login_once(
    channels: &[Channel],
    credentials: &Credentials,
    refresh: Option<&str>,
) -> Result<pb::Token, Error> {
    let request = match refresh {
        Some(refresh) => pb::TokenRequest {
            refresh_token: refresh.to_string(),
            token_expiry: credentials.lifetime_s,
            ..Default::default()
        },
        None => pb::TokenRequest {
            id: credentials.id.clone(),
            secret: credentials.secret.clone(),
            namespace: credentials.namespace.clone(),
            token_expiry: credentials.lifetime_s,
            ..Default::default()
        },
    };
    let mut last = Error::InvalidArgument("no endpoint".into());
    for channel in channels {
        match AuthClient::new(channel.clone())
            .token(request.clone())
            .await
        {
            Ok(response) => {
                return response
                    .into_inner()
                    .token
                    .ok_or_else(|| Error::InvalidArgument("no token in the answer".into()))
            }
            // Wrong credentials are wrong everywhere.
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                return Err(status.into())
            }
            Err(status) => last = status.into(),
        }
    }
    Err(last)
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Renews `first` before it expires, and each token after it, until the client is dropped.
pub(crate) fn keep_fresh(
    channels: Vec<Channel>,
    credentials: Credentials,
    first: pb::Token,
    authorization: Weak<RwLock<Option<AsciiMetadataValue>>>,
) {
    tokio::spawn(async move {
        let mut token = first;
        let mut wait = renew_in(&token);
        loop {
            tokio::time::sleep(wait).await;
            let Some(current) = authorization.upgrade() else {
                return; // the client is gone
            };
            let renewed = match login(&channels, &credentials, Some(&token.refresh_token)).await {
                Ok(renewed) => Ok(renewed),
                // An ended refresh token (a changed secret): log in again.
                Err(_) => login(&channels, &credentials, None).await,
            };
            match renewed.and_then(|renewed| Ok((bearer(&renewed.access_token)?, renewed))) {
                Ok((value, renewed)) => {
                    *current.write().unwrap_or_else(|e| e.into_inner()) = Some(value);
                    wait = renew_in(&renewed);
                    token = renewed;
                }
                Err(_) => wait = RETRY,
            }
        }
    });
}

/// Four fifths of the token's remaining life, at least a second.
fn renew_in(token: &pb::Token) -> Duration {
    let left = (token.expiry - now_s()).max(0) as u64;
    Duration::from_secs((left * 4 / 5).max(1))
}
