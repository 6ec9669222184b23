//! `store.BlobStore` conformance (shared/MICRO_API.md §2.3): client-streamed writes, reads in
//! 1 KiB chunks on a never-half-closed stream, list, delete, Micro's errors, the namespace from
//! `micro-namespace`, the size bound, and the blobs as native records.

use strata_proto::micro::store as pb;
use strata_proto::micro::store::blob_store_client::BlobStoreClient;

use super::{assert_micro_error, channel, never_half_closed};
use crate::harness::Server;

fn options(namespace: &str) -> Option<pb::BlobOptions> {
    Some(pb::BlobOptions {
        namespace: namespace.into(),
        public: false,
        content_type: "application/octet-stream".into(),
    })
}

/// The key and options in the first message, the blob in pieces after it.
fn upload(key: &str, namespace: &str, blob: &[u8], pieces: usize) -> Vec<pb::BlobWriteRequest> {
    let mut messages = vec![pb::BlobWriteRequest {
        key: key.into(),
        options: options(namespace),
        blob: Vec::new(),
    }];
    for piece in blob.chunks(blob.len().div_ceil(pieces).max(1)) {
        messages.push(pb::BlobWriteRequest {
            blob: piece.to_vec(),
            ..Default::default()
        });
    }
    messages
}

#[tokio::test]
async fn blobs_are_written_streamed_listed_and_deleted() {
    let server = Server::start_with(&["--max-value-bytes", "8192"]);
    let mut blobs = BlobStoreClient::new(channel(&server.grpc, None, Some("acme")).await);
    let blob: Vec<u8> = (0..3_500u32).map(|i| (i % 251) as u8).collect();
    blobs
        .write(futures::stream::iter(upload(
            "source://app:v1",
            "",
            &blob,
            3,
        )))
        .await
        .unwrap();
    // Read: 1 KiB chunks; the namespace came from micro-namespace.
    let chunks: Vec<pb::BlobReadResponse> = never_half_closed(
        channel(&server.grpc, None, None).await,
        "/store.BlobStore/Read",
        pb::BlobReadRequest {
            key: "source://app:v1".into(),
            options: options("acme"),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        chunks.iter().map(|c| c.blob.len()).collect::<Vec<_>>(),
        [1024, 1024, 1024, 428]
    );
    assert_eq!(chunks.concat_blobs(), blob);
    blobs
        .write(futures::stream::iter(upload(
            "source://app:v2",
            "acme",
            b"v2",
            1,
        )))
        .await
        .unwrap();
    blobs
        .write(futures::stream::iter(upload("other", "acme", b"o", 1)))
        .await
        .unwrap();
    let keys = blobs
        .list(pb::BlobListRequest {
            options: Some(pb::BlobListOptions {
                namespace: "acme".into(),
                prefix: "source://".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys, ["source://app:v1", "source://app:v2"]);

    // The blob is a native record in namespace acme, database and table "blob".
    let native = server.client("acme").await;
    let record = native
        .table("blob", "blob")
        .get("source://app:v2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.value, b"v2");
    assert_eq!(record.metadata["content-type"], "application/octet-stream");

    // Delete; then 404 on delete and read.
    blobs
        .delete(pb::BlobDeleteRequest {
            key: "other".into(),
            options: options("acme"),
        })
        .await
        .unwrap();
    let gone = blobs
        .delete(pb::BlobDeleteRequest {
            key: "other".into(),
            options: options("acme"),
        })
        .await
        .unwrap_err();
    assert_eq!(
        assert_micro_error(&gone, "store.BlobStore.Delete", 404),
        "Blob not found"
    );
    let unread: Result<Vec<pb::BlobReadResponse>, _> = never_half_closed(
        channel(&server.grpc, None, None).await,
        "/store.BlobStore/Read",
        pb::BlobReadRequest {
            key: "other".into(),
            options: options("acme"),
        },
    )
    .await;
    assert_micro_error(&unread.unwrap_err(), "store.BlobStore.Read", 404);

    // Bad input: 400, nothing stored.
    let empty = blobs
        .write(futures::stream::iter(Vec::<pb::BlobWriteRequest>::new()))
        .await
        .unwrap_err();
    assert_eq!(
        assert_micro_error(&empty, "store.BlobStore.Write", 400),
        "No blob was sent"
    );
    let no_key = blobs
        .write(futures::stream::iter(upload("", "acme", b"x", 1)))
        .await
        .unwrap_err();
    assert_eq!(
        assert_micro_error(&no_key, "store.BlobStore.Write", 400),
        "Missing key"
    );
    let huge = vec![7u8; 9_000];
    let too_big = blobs
        .write(futures::stream::iter(upload("huge", "acme", &huge, 9)))
        .await
        .unwrap_err();
    assert_micro_error(&too_big, "store.BlobStore.Write", 400);
    assert!(native
        .table("blob", "blob")
        .get("huge")
        .await
        .unwrap()
        .is_none());
}

trait ConcatBlobs {
    fn concat_blobs(&self) -> Vec<u8>;
}

impl ConcatBlobs for Vec<pb::BlobReadResponse> {
    fn concat_blobs(&self) -> Vec<u8> {
        self.iter().flat_map(|c| c.blob.clone()).collect()
    }
}
