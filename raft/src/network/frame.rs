//! The wire frame for one peer message: every QUIC stream carries exactly one frame each way.
//!
//! ```text
//! +---------+--------------+----------------+------------------+
//! | version | length (u32) | crc32 (u32)    | payload          |
//! | 1 byte  | big-endian   | of the payload | `length` bytes   |
//! +---------+--------------+----------------+------------------+
//! ```
//!
//! QUIC already protects integrity on the wire; the checksum catches what it cannot see: bugs in
//! our own encoding and memory corruption on either end. The length is checked against a limit
//! before anything is allocated.

use bytes::{BufMut, Bytes, BytesMut};

pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 9;
/// Largest payload a peer sends or accepts. One log entry is at most ~17 MiB (the value limit
/// plus overhead); bigger append batches are split by openraft when the sender reports
/// `PayloadTooLarge`.
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame is {0} bytes, shorter than its 9-byte header")]
    Truncated(usize),
    #[error("frame version {0} is not supported (this node speaks {VERSION})")]
    Version(u8),
    #[error("frame payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("frame says {declared} payload bytes but carries {actual}")]
    LengthMismatch { declared: usize, actual: usize },
    #[error(
        "frame checksum mismatch: header says {declared:#010x}, payload hashes to {actual:#010x}"
    )]
    Checksum { declared: u32, actual: u32 },
}

/// Frames `payload`; fails only if it is larger than [`MAX_PAYLOAD`].
pub fn encode(payload: &[u8]) -> Result<Bytes, FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(payload.len()));
    }
    let mut frame = BytesMut::with_capacity(HEADER_LEN + payload.len());
    frame.put_u8(VERSION);
    frame.put_u32(payload.len() as u32);
    frame.put_u32(crc32fast::hash(payload));
    frame.put_slice(payload);
    Ok(frame.freeze())
}

/// Checks a whole frame and returns its payload.
pub fn decode(frame: &[u8]) -> Result<&[u8], FrameError> {
    if frame.len() < HEADER_LEN {
        return Err(FrameError::Truncated(frame.len()));
    }
    if frame[0] != VERSION {
        return Err(FrameError::Version(frame[0]));
    }
    let declared = u32::from_be_bytes(frame[1..5].try_into().expect("4 bytes")) as usize;
    if declared > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(declared));
    }
    let payload = &frame[HEADER_LEN..];
    if payload.len() != declared {
        return Err(FrameError::LengthMismatch {
            declared,
            actual: payload.len(),
        });
    }
    let checksum = u32::from_be_bytes(frame[5..9].try_into().expect("4 bytes"));
    let actual = crc32fast::hash(payload);
    if checksum != actual {
        return Err(FrameError::Checksum {
            declared: checksum,
            actual,
        });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(payload in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let frame = encode(&payload).unwrap();
            prop_assert_eq!(frame.len(), HEADER_LEN + payload.len());
            prop_assert_eq!(decode(&frame).unwrap(), &payload[..]);
        }

        #[test]
        fn any_flipped_bit_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 0..512),
            bit in any::<prop::sample::Index>(),
        ) {
            let mut frame = encode(&payload).unwrap().to_vec();
            let bit = bit.index(frame.len() * 8);
            frame[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&frame).is_err(), "flipping bit {} went unnoticed", bit);
        }

        #[test]
        fn any_truncation_or_extension_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 1..512),
            cut in any::<prop::sample::Index>(),
            extra in proptest::collection::vec(any::<u8>(), 1..16),
        ) {
            let frame = encode(&payload).unwrap();
            let cut = cut.index(frame.len());
            prop_assert!(decode(&frame[..cut]).is_err());
            let mut longer = frame.to_vec();
            longer.extend_from_slice(&extra);
            prop_assert!(decode(&longer).is_err());
        }
    }

    #[test]
    fn refuses_oversized_payloads_on_both_ends() {
        assert_eq!(
            encode(&vec![0; MAX_PAYLOAD + 1]),
            Err(FrameError::TooLarge(MAX_PAYLOAD + 1))
        );
        let mut header = vec![VERSION];
        header.extend_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
        header.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(decode(&header), Err(FrameError::TooLarge(MAX_PAYLOAD + 1)));
    }

    #[test]
    fn refuses_unknown_versions() {
        let mut frame = encode(b"hello").unwrap().to_vec();
        frame[0] = 2;
        assert_eq!(decode(&frame), Err(FrameError::Version(2)));
    }
}
