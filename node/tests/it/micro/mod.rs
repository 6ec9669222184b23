//! Micro v3's APIs on a Strata node, driven the way Micro's Go client drives them: clients
//! generated from the Micro-package protos, the headers Micro sends (`application/grpc+proto`,
//! `x-content-type`, `timeout` in nanoseconds, `micro-namespace`), streams that are never
//! half-closed, and errors read back from the JSON in `grpc-message`.

mod auth;
mod blob;
mod broker;
mod cluster;
mod config;
mod events;
mod python;
mod registry;
mod store;

use std::time::Duration;

use futures::StreamExt;
use http::HeaderValue;
use tonic::transport::Channel;

/// A channel that sends what Micro's client sends on every call.
pub type MicroChannel = tower::util::MapRequest<
    Channel,
    Box<dyn Fn(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> + Send + Sync>,
>;

/// A connection to `grpc` (host:port) that calls as Micro's client does, with `token` (an
/// access token, or a `Basic ...` credential) and `namespace` (`micro-namespace`) when given.
pub async fn channel(grpc: &str, token: Option<&str>, namespace: Option<&str>) -> MicroChannel {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .expect("connecting");
    // A token, or a whole `Basic ...` credential.
    let token = token.map(|t| {
        let value = if t.starts_with("Basic ") {
            t.to_string()
        } else {
            format!("Bearer {t}")
        };
        HeaderValue::try_from(value).unwrap()
    });
    let namespace = namespace.map(|n| HeaderValue::try_from(n).unwrap());
    let add = move |mut request: http::Request<tonic::body::Body>| {
        let headers = request.headers_mut();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/grpc+proto"),
        );
        headers.insert(
            "x-content-type",
            HeaderValue::from_static("application/grpc+proto"),
        );
        headers.insert("timeout", HeaderValue::from_static("10000000000"));
        if let Some(token) = &token {
            headers.insert("authorization", token.clone());
        }
        if let Some(namespace) = &namespace {
            headers.insert("micro-namespace", namespace.clone());
        }
        request
    };
    tower::util::MapRequest::new(channel, Box::new(add) as _)
}

/// Micro's error as its client rebuilds it: the JSON in `grpc-message`.
pub fn micro_error(status: &tonic::Status) -> serde_json::Value {
    serde_json::from_str(status.message())
        .unwrap_or_else(|e| panic!("grpc-message is not Micro's JSON ({e}): {status:?}"))
}

/// Asserts `status` is Micro's error `code` for method `id` (`store.Store.Read`), with the
/// matching gRPC code; returns its detail.
pub fn assert_micro_error(status: &tonic::Status, id: &str, code: i64) -> String {
    let error = micro_error(status);
    assert_eq!(error["id"], id, "{error}");
    assert_eq!(error["code"], code, "{error}");
    let grpc = match code {
        400 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::NotFound,
        501 => tonic::Code::Unimplemented,
        _ => status.code(),
    };
    assert_eq!(status.code(), grpc, "{status:?}");
    assert!(error["status"].as_str().is_some_and(|s| !s.is_empty()));
    error["detail"].as_str().unwrap_or_default().to_string()
}

/// Opens a response-streaming method the way Micro's client does: one request message on a
/// request stream that is never closed.
pub async fn open_stream<Req, Resp>(
    channel: MicroChannel,
    path: &'static str,
    request: Req,
) -> Result<tonic::Streaming<Resp>, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let requests = futures::stream::once(async move { request }).chain(futures::stream::pending());
    Ok(grpc
        .streaming(
            tonic::Request::new(requests),
            http::uri::PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::<Req, Resp>::default(),
        )
        .await?
        .into_inner())
}

/// [`open_stream`], then every response until the server ends the stream, which must happen
/// within 10 s.
pub async fn never_half_closed<Req, Resp>(
    channel: MicroChannel,
    path: &'static str,
    request: Req,
) -> Result<Vec<Resp>, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let call = async {
        let mut responses = open_stream(channel, path, request).await?;
        let mut all = Vec::new();
        while let Some(response) = responses.message().await? {
            all.push(response);
        }
        Ok(all)
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| panic!("{path} did not end its stream within 10 s"))
}
