//! One place where every error status leaves the node in its final shape, wherever it was
//! made (the identity layer, a handler, tonic's own codec): [`EdgeStatusLayer`] rewrites the
//! status of a trailers-only answer and the trailers of a streamed one.
//! - tonic's codec errors get the codes a client can act on: a request over the size limit is
//!   RESOURCE_EXHAUSTED (`x-strata-error: message_too_large`, naming the limit) instead of
//!   OUT_OF_RANGE; a request that does not decode (invalid UTF-8 in a string, nesting past
//!   the recursion limit, a bad frame) is INVALID_ARGUMENT instead of INTERNAL.
//! - Messages are bounded ([`MAX_MESSAGE_CHARS`]): no error echoes a large input back (gRPC
//!   clients refuse metadata past their own limit and would see a transport error instead).
//! - Calls to Micro's packages get Micro's error shape (`micro/errors.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use crate::server::micro::errors as micro;

/// What gRPC percent-encodes in `grpc-message`: everything outside printable ASCII, and `%`.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// The longest error message a client is sent, in characters.
pub const MAX_MESSAGE_CHARS: usize = 1_024;

const OUT_OF_RANGE: i32 = 11;
const INTERNAL: i32 = 13;
const INVALID_ARGUMENT: i32 = 3;
const RESOURCE_EXHAUSTED: i32 = 8;

/// tonic's codec messages this layer recognises, and what they become.
const DECODED_TOO_LARGE: &str = "Error, decoded message length too large";
const ENCODED_TOO_LARGE: &str = "Error, encoded message length too large";
const DOES_NOT_DECODE: &str = "failed to decode Protobuf message";
const PROTOCOL_ERROR: &str = "protocol error: received message";

/// The numbers of tonic's "found N bytes, the limit is: M bytes".
fn sizes(message: &str) -> Option<(u64, u64)> {
    let found = message
        .split("found ")
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    let limit = message
        .split("limit is: ")
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    Some((found, limit))
}

/// The final code, `x-strata-error` and message of an error status.
fn normalize(code: i32, message: &str) -> (i32, Option<&'static str>, String) {
    if code == OUT_OF_RANGE && message.starts_with(DECODED_TOO_LARGE) {
        let text = match sizes(message) {
            Some((found, limit)) => format!(
                "the request is {found} bytes, over this node's limit of {limit} bytes (its \
                 largest value plus room for the rest; see --max-value-bytes)"
            ),
            None => "the request is over this node's size limit".to_string(),
        };
        return (RESOURCE_EXHAUSTED, Some("message_too_large"), text);
    }
    if code == OUT_OF_RANGE && message.starts_with(ENCODED_TOO_LARGE) {
        let text = match sizes(message) {
            Some((found, limit)) => format!(
                "the answer would be {found} bytes, over the limit of {limit} bytes: ask for \
                 less (a smaller page or limit)"
            ),
            None => "the answer would be over the size limit: ask for less".to_string(),
        };
        return (RESOURCE_EXHAUSTED, Some("response_too_large"), text);
    }
    if code == INTERNAL
        && (message.starts_with(DOES_NOT_DECODE) || message.starts_with(PROTOCOL_ERROR))
    {
        return (
            INVALID_ARGUMENT,
            None,
            bounded(&format!("the request does not decode: {message}")),
        );
    }
    (code, None, bounded(message))
}

/// `message`, cut to [`MAX_MESSAGE_CHARS`] with a note of its full length.
fn bounded(message: &str) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        return message.to_string();
    }
    let cut: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    format!("{cut}… (cut: {} bytes in all)", message.len())
}

/// Puts an error status in `headers` (the headers of a trailers-only answer, or trailers) in
/// its final shape; leaves successes and headers without a status alone.
fn finish(headers: &mut HeaderMap, micro_id: Option<&str>) {
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
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(|v| percent_decode_str(v).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    let (code, error, message) = normalize(code, &message);
    headers.insert("grpc-status", HeaderValue::from(code));
    if let Some(error) = error {
        headers.insert(
            strata_client::error_headers::ERROR_CODE_HEADER,
            HeaderValue::from_static(error),
        );
    }
    let message = match micro_id {
        Some(id) => micro::micro_json(id, code, &message),
        None => message,
    };
    let encoded = utf8_percent_encode(&message, GRPC_MESSAGE).to_string();
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", value);
    }
}

/// The outermost tower layer of the client port; see the module's documentation.
#[derive(Clone, Default)]
pub struct EdgeStatusLayer;

impl<S> tower::Layer<S> for EdgeStatusLayer {
    type Service = EdgeStatus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EdgeStatus { inner }
    }
}

#[derive(Clone)]
pub struct EdgeStatus<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for EdgeStatus<S>
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
        let micro_id = micro::micro_id(request.uri().path()).map(Arc::<str>::from);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let (mut parts, body) = response.into_parts();
            finish(&mut parts.headers, micro_id.as_deref());
            let body = tonic::body::Body::new(EdgeBody {
                inner: body,
                micro_id,
            });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// A response body whose trailers are put in their final shape.
struct EdgeBody {
    inner: tonic::body::Body,
    micro_id: Option<Arc<str>>,
}

impl Body for EdgeBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let micro_id = self.micro_id.clone();
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    finish(&mut trailers, micro_id.as_deref());
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

    fn status(code: &'static str, message: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static(code));
        let encoded = utf8_percent_encode(message, GRPC_MESSAGE).to_string();
        headers.insert("grpc-message", HeaderValue::from_str(&encoded).unwrap());
        headers
    }

    fn message(headers: &HeaderMap) -> String {
        percent_decode_str(headers["grpc-message"].to_str().unwrap())
            .decode_utf8()
            .unwrap()
            .into_owned()
    }

    #[test]
    fn an_oversized_request_is_resource_exhausted_naming_the_limit() {
        let mut h = status(
            "11",
            "Error, decoded message length too large: found 3145740 bytes, the limit is: 1114112 bytes",
        );
        finish(&mut h, None);
        assert_eq!(h["grpc-status"], "8");
        assert_eq!(h["x-strata-error"], "message_too_large");
        assert!(message(&h).contains("3145740 bytes, over this node's limit of 1114112 bytes"));
    }

    #[test]
    fn an_undecodable_request_is_invalid_argument() {
        for text in [
            "failed to decode Protobuf message: PutRequest.database: invalid string value: data is not UTF-8 encoded",
            "failed to decode Protobuf message: recursion limit reached",
            "protocol error: received message with invalid compression flag: 7 (valid flags are 0 and 1), while sending request",
        ] {
            let mut h = status("13", text);
            finish(&mut h, None);
            assert_eq!(h["grpc-status"], "3", "{text}");
            assert!(message(&h).starts_with("the request does not decode: "));
        }
        // Other internal errors stay what they are.
        let mut h = status("13", "the state machine stopped");
        finish(&mut h, None);
        assert_eq!(h["grpc-status"], "13");
    }

    #[test]
    fn messages_are_bounded_and_successes_untouched() {
        let long = "x".repeat(200_000);
        let mut h = status("3", &long);
        finish(&mut h, None);
        let text = message(&h);
        assert!(
            text.chars().count() < MAX_MESSAGE_CHARS + 64,
            "{}",
            text.len()
        );
        assert!(text.ends_with("(cut: 200000 bytes in all)"));

        let mut ok = HeaderMap::new();
        ok.insert("grpc-status", HeaderValue::from_static("0"));
        finish(&mut ok, None);
        assert!(ok.get("grpc-message").is_none());
        let mut none = HeaderMap::new();
        finish(&mut none, Some("store.Store.Read"));
        assert!(none.is_empty());
    }

    #[test]
    fn micro_calls_get_micro_json_with_their_detail_decoded() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("5"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("not found: caf%C3%A9 100%25"),
        );
        finish(&mut h, Some("store.Store.Read"));
        assert_eq!(h["grpc-status"], "5");
        let json: serde_json::Value = serde_json::from_str(&message(&h)).unwrap();
        assert_eq!(json["detail"], "not found: café 100%");
        assert_eq!(json["code"], 404);
    }

    #[test]
    fn micro_calls_get_micro_json_after_the_codes_are_fixed() {
        let mut h = status(
            "11",
            "Error, decoded message length too large: found 10 bytes, the limit is: 5 bytes",
        );
        finish(&mut h, Some("store.Store.Write"));
        assert_eq!(h["grpc-status"], "8");
        let json: serde_json::Value = serde_json::from_str(&message(&h)).unwrap();
        assert_eq!(json["id"], "store.Store.Write");
        assert_eq!(json["code"], 429);
    }
}
