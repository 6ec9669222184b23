//! Order-preserving encoding of composite keys.
//!
//! A key is a tuple of byte-string segments. Each segment is written with every `0x00` escaped
//! as `0x00 0xFF` and closed by `0x00 0x01`. The encoding has the properties the store relies on:
//! - byte order of encoded tuples equals lexicographic order of the tuples;
//! - the escaped bytes of a segment without its terminator are a byte prefix of the encoding of
//!   every tuple whose segment starts with those bytes, so a prefix scan is a range scan;
//! - no segment can run into the next one, so a name can never escape its namespace.

use crate::StorageError;

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

/// Appends one complete segment (escaped bytes and terminator).
pub fn push_segment(out: &mut Vec<u8>, segment: &[u8]) {
    push_escaped(out, segment);
    out.push(ESCAPE);
    out.push(TERMINATOR);
}

/// Appends the escaped bytes of a segment without its terminator: the prefix of every encoded
/// segment that starts with `partial`.
pub fn push_escaped(out: &mut Vec<u8>, partial: &[u8]) {
    out.reserve(partial.len() + 2);
    for &byte in partial {
        out.push(byte);
        if byte == ESCAPE {
            out.push(ESCAPED_ZERO);
        }
    }
}

/// Encodes a whole tuple.
pub fn encode(segments: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(segments.iter().map(|s| s.len() + 2).sum());
    for segment in segments {
        push_segment(&mut out, segment);
    }
    out
}

/// Decodes a tuple produced by [`encode`]. Fails on any byte sequence `encode` cannot produce.
pub fn decode(mut encoded: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
    let mut segments = Vec::new();
    while !encoded.is_empty() {
        let (segment, rest) = decode_segment(encoded)?;
        segments.push(segment);
        encoded = rest;
    }
    Ok(segments)
}

/// Decodes the first segment and returns it with the remaining bytes.
pub fn decode_segment(encoded: &[u8]) -> Result<(Vec<u8>, &[u8]), StorageError> {
    let mut segment = Vec::new();
    let mut index = 0;
    while index < encoded.len() {
        let byte = encoded[index];
        if byte != ESCAPE {
            segment.push(byte);
            index += 1;
            continue;
        }
        match encoded.get(index + 1) {
            Some(&ESCAPED_ZERO) => {
                segment.push(ESCAPE);
                index += 2;
            }
            Some(&TERMINATOR) => return Ok((segment, &encoded[index + 2..])),
            _ => break,
        }
    }
    Err(StorageError::Corrupt(
        "key segment without a valid terminator".into(),
    ))
}

/// The smallest byte string greater than every string that starts with `prefix`, or `None` when
/// no such bound exists (the prefix is all `0xFF`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn segments() -> impl Strategy<Value = Vec<Vec<u8>>> {
        // Small alphabets with 0x00, 0x01 and 0xFF make the escaping paths common.
        let byte = prop_oneof![Just(0u8), Just(1u8), Just(0xFFu8), any::<u8>()];
        prop::collection::vec(prop::collection::vec(byte, 0..6), 1..4)
    }

    fn as_refs(tuple: &[Vec<u8>]) -> Vec<&[u8]> {
        tuple.iter().map(Vec::as_slice).collect()
    }

    proptest! {
        #[test]
        fn round_trips(tuple in segments()) {
            let encoded = encode(&as_refs(&tuple));
            prop_assert_eq!(decode(&encoded).unwrap(), tuple);
        }

        #[test]
        fn preserves_order(a in segments(), b in segments()) {
            let (ea, eb) = (encode(&as_refs(&a)), encode(&as_refs(&b)));
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
        }

        #[test]
        fn escaped_prefix_is_byte_prefix(
            head in prop::collection::vec(any::<u8>(), 0..5),
            tail in prop::collection::vec(any::<u8>(), 0..5),
        ) {
            let mut whole = head.clone();
            whole.extend_from_slice(&tail);
            let mut partial = Vec::new();
            push_escaped(&mut partial, &head);
            prop_assert!(encode(&[&whole]).starts_with(&partial));
        }

        #[test]
        fn prefix_end_bounds_every_extension(
            prefix in prop::collection::vec(any::<u8>(), 0..5),
            tail in prop::collection::vec(any::<u8>(), 0..5),
        ) {
            let mut extended = prefix.clone();
            extended.extend_from_slice(&tail);
            if let Some(end) = prefix_end(&prefix) {
                prop_assert!(extended < end);
                prop_assert!(prefix < end);
            } else {
                prop_assert!(prefix.iter().all(|&b| b == 0xFF));
            }
        }
    }

    #[test]
    fn rejects_unterminated_and_bad_escapes() {
        assert!(decode(b"abc").is_err());
        assert!(decode(&[b'a', 0x00, 0x07]).is_err());
        assert!(decode(&[0x00]).is_err());
    }

    #[test]
    fn segments_cannot_bleed_into_each_other() {
        // ("a", "b") and ("a\0\x01b") must differ even though a naive join would collide.
        let two = encode(&[b"a", b"b"]);
        let one = encode(&[&[b'a', 0x00, 0x01, b'b']]);
        assert_ne!(two, one);
        assert_eq!(decode(&one).unwrap(), vec![vec![b'a', 0x00, 0x01, b'b']]);
    }
}
