//! Strata's public gRPC API: generated messages, clients and servers.
//!
//! This crate owns the wire format and nothing else: no domain logic, no storage.

/// `strata.kv.v1`: the namespaced key-value store.
pub mod kv {
    pub mod v1 {
        tonic::include_proto!("strata.kv.v1");
    }
}

/// `strata.cluster.v1`: membership and health, for operators.
pub mod cluster {
    pub mod v1 {
        tonic::include_proto!("strata.cluster.v1");
    }
}

/// `strata.stream.v1`: event streams with durable consumer groups.
pub mod stream {
    pub mod v1 {
        tonic::include_proto!("strata.stream.v1");
    }
}

/// `strata.registry.v1`: services, nodes with TTL leases, watch.
pub mod registry {
    pub mod v1 {
        tonic::include_proto!("strata.registry.v1");
    }
}

/// `strata.config.v1`: JSON documents with dotted-path access, secrets and watch.
pub mod config {
    pub mod v1 {
        tonic::include_proto!("strata.config.v1");
    }
}

/// `strata.auth.v1`: accounts, rules and tokens.
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("strata.auth.v1");
    }
}

/// `strata.namespace.v1`: usage and limits (quotas) per namespace.
pub mod namespace {
    pub mod v1 {
        tonic::include_proto!("strata.namespace.v1");
    }
}

/// Micro v3's APIs, served over the same data for unmodified Micro services
/// (shared/MICRO_API.md). Clients are generated as the protos say; servers take every
/// response stream as bidirectional (see build.rs).
pub mod micro {
    /// `store.Store` and `store.BlobStore`.
    pub mod store {
        tonic::include_proto!("store");
    }
    /// `registry.Registry`.
    pub mod registry {
        tonic::include_proto!("registry");
    }
    /// `config.Config`.
    pub mod config {
        tonic::include_proto!("config");
    }
    /// `events.Stream` and `events.Store`.
    pub mod events {
        tonic::include_proto!("events");
    }
    /// `auth.Auth`, `auth.Accounts` and `auth.Rules`.
    pub mod auth {
        tonic::include_proto!("auth");
    }
    /// `broker.Broker`.
    pub mod broker {
        tonic::include_proto!("broker");
    }
}

/// One protobuf message kept as its encoded bytes, for streams whose messages are decoded by
/// their position rather than one type (Micro's Consume: a ConsumeRequest, then AckRequests).
/// Decoding checks the framing of every field and keeps the fields as they came.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawFrame(pub Vec<u8>);

impl prost::Message for RawFrame {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        _ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        use prost::encoding::{decode_varint, encode_key, encode_varint, WireType};
        let copy = |buf: &mut dyn prost::bytes::Buf, len: usize, out: &mut Vec<u8>| {
            if buf.remaining() < len {
                #[allow(deprecated)]
                return Err(prost::DecodeError::new("buffer underflow"));
            }
            let start = out.len();
            out.resize(start + len, 0);
            buf.copy_to_slice(&mut out[start..]);
            Ok(())
        };
        encode_key(tag, wire_type, &mut self.0);
        match wire_type {
            WireType::Varint => {
                let value = decode_varint(buf)?;
                encode_varint(value, &mut self.0);
                Ok(())
            }
            WireType::SixtyFourBit => copy(buf, 8, &mut self.0),
            WireType::ThirtyTwoBit => copy(buf, 4, &mut self.0),
            WireType::LengthDelimited => {
                let len = decode_varint(buf)?;
                encode_varint(len, &mut self.0);
                copy(buf, usize::try_from(len).unwrap_or(usize::MAX), &mut self.0)
            }
            WireType::StartGroup | WireType::EndGroup =>
            {
                #[allow(deprecated)]
                Err(prost::DecodeError::new("groups are not supported"))
            }
        }
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Encoded `FileDescriptorSet` of every Strata proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("strata_descriptor");

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn raw_frames_keep_any_message_and_decode_later() {
        let consume = micro::events::ConsumeRequest {
            group: "g".into(),
            topic: "orders".into(),
            offset: -62_135_596_800,
            auto_ack: true,
            ack_wait: 30_000_000_000,
            retry_limit: -1,
        };
        let frame = RawFrame::decode(consume.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            micro::events::ConsumeRequest::decode(frame.0.as_slice()).unwrap(),
            consume
        );
        let ack = micro::events::AckRequest {
            id: "7".into(),
            success: true,
        };
        let frame = RawFrame::decode(ack.encode_to_vec().as_slice()).unwrap();
        assert_eq!(frame.0, ack.encode_to_vec());
        // Cut short: refused, not read past the end.
        let bytes = consume.encode_to_vec();
        assert!(RawFrame::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    proptest::proptest! {
        /// Any input decodes or is refused; what decodes re-encodes to a message of the same
        /// fields.
        #[test]
        fn raw_frames_take_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            if let Ok(frame) = RawFrame::decode(bytes.as_slice()) {
                let again = RawFrame::decode(frame.0.as_slice()).unwrap();
                proptest::prop_assert_eq!(again, frame);
            }
        }
    }
}
