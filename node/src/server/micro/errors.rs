//! Micro's error shape on the wire (shared/MICRO_API.md §1): a Micro client rebuilds an error
//! by parsing `grpc-message` as JSON `{"id","code","detail","status"}` and branches on `code`
//! (404 above all). [`MicroErrors`] rewrites every error status of a call to a Micro package,
//! wherever it came from (the identity layer, a handler, tonic's own decoding), so each
//! handler returns ordinary statuses and the shape is made in one place. The gRPC status
//! code and the `x-strata-error` metadata stay as they were.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// The packages of Micro's services, as the first part of their paths.
const MICRO_PACKAGES: &[&str] = &["store", "registry", "events", "config", "auth", "broker"];

/// What gRPC percent-encodes in `grpc-message`: everything outside printable ASCII, and `%`.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// Micro's error id for a path: `/store.Store/Read` is `store.Store.Read`; `None` for paths of
/// other services.
pub fn micro_id(path: &str) -> Option<String> {
    let trimmed = path.strip_prefix('/')?;
    let (service, method) = trimmed.split_once('/')?;
    let (package, _) = service.split_once('.')?;
    MICRO_PACKAGES
        .contains(&package)
        .then(|| format!("{service}.{method}"))
}

/// Micro's HTTP-like code and reason for a gRPC status code (the inverse of §1's table;
/// codes Micro has no name for are 500).
pub fn micro_code(grpc: i32) -> (i32, &'static str) {
    match grpc {
        3 | 11 => (400, "Bad Request"),
        16 => (401, "Unauthorized"),
        7 => (403, "Forbidden"),
        5 => (404, "Not Found"),
        4 | 1 => (408, "Request Timeout"),
        6 | 10 => (409, "Conflict"),
        9 => (412, "Precondition Failed"),
        8 => (429, "Too Many Requests"),
        12 => (501, "Not Implemented"),
        14 => (503, "Service Unavailable"),
        _ => (500, "Internal Server Error"),
    }
}

/// The JSON text Micro expects in `grpc-message`.
pub fn micro_json(id: &str, grpc: i32, detail: &str) -> String {
    let (code, status) = micro_code(grpc);
    serde_json::json!({ "id": id, "code": code, "detail": detail, "status": status }).to_string()
}

/// Rewrites an error status in `headers` (response headers of a trailers-only answer, or
/// trailers) into Micro's shape; leaves successes alone.
fn rewrite(headers: &mut HeaderMap, id: &str) {
    let Some(code) = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    if code == 0 {
        return;
    }
    let detail = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(|v| percent_decode_str(v).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    let json = micro_json(id, code, &detail);
    let encoded = utf8_percent_encode(&json, GRPC_MESSAGE).to_string();
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", value);
    }
}

/// The tower layer in front of the identity layer; see the module's documentation.
#[derive(Clone, Default)]
pub struct MicroErrorsLayer;

impl<S> tower::Layer<S> for MicroErrorsLayer {
    type Service = MicroErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MicroErrors { inner }
    }
}

#[derive(Clone)]
pub struct MicroErrors<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for MicroErrors<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let id = micro_id(request.uri().path()).map(Arc::<str>::from);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let Some(id) = id else {
                return Ok(response);
            };
            let (mut parts, body) = response.into_parts();
            rewrite(&mut parts.headers, &id);
            let body = tonic::body::Body::new(MicroBody { inner: body, id });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// A response body whose trailers carry Micro-shaped errors.
struct MicroBody {
    inner: tonic::body::Body,
    id: Arc<str>,
}

impl Body for MicroBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let id = self.id.clone();
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    rewrite(&mut trailers, &id);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            }))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_micro_packages_get_micro_ids() {
        assert_eq!(
            micro_id("/store.Store/Read").as_deref(),
            Some("store.Store.Read")
        );
        assert_eq!(
            micro_id("/events.Stream/Consume").as_deref(),
            Some("events.Stream.Consume")
        );
        assert_eq!(micro_id("/strata.kv.v1.Kv/Put"), None);
        assert_eq!(micro_id("/strata.auth.v1.Auth/Token"), None);
        assert_eq!(micro_id("/grpc.reflection.v1.ServerReflection/X"), None);
        assert_eq!(micro_id("/store"), None);
    }

    #[test]
    fn errors_become_micro_json_and_successes_stay() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("5"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("not found: caf%C3%A9 100%25"),
        );
        rewrite(&mut headers, "store.Store.Read");
        assert_eq!(headers["grpc-status"], "5");
        let text = percent_decode_str(headers["grpc-message"].to_str().unwrap())
            .decode_utf8()
            .unwrap()
            .into_owned();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": "store.Store.Read", "code": 404,
                "detail": "not found: café 100%", "status": "Not Found"})
        );

        let mut ok = HeaderMap::new();
        ok.insert("grpc-status", HeaderValue::from_static("0"));
        rewrite(&mut ok, "store.Store.Read");
        assert!(ok.get("grpc-message").is_none());
    }

    #[test]
    fn codes_follow_micros_table() {
        for (grpc, http) in [
            (3, 400),
            (16, 401),
            (7, 403),
            (5, 404),
            (4, 408),
            (6, 409),
            (9, 412),
            (13, 500),
            (12, 501),
            (14, 503),
            (2, 500),
        ] {
            assert_eq!(micro_code(grpc).0, http, "grpc code {grpc}");
        }
    }
}
