//! Input limits and checks for everything that enters through the API. Every check names the
//! field and the limit, and runs before anything is proposed, so bad input changes nothing.

use std::collections::{BTreeMap, HashMap};

use tonic::Status;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 4 * 1024;
/// Default for the configurable value limit.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Namespace, database and table names: 1 to this many characters from [A-Za-z0-9_.-].
pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_METADATA_ENTRIES: usize = 64;
pub const MAX_METADATA_KEY_BYTES: usize = 256;
pub const MAX_METADATA_VALUE_BYTES: usize = 4 * 1024;
/// Page size when the request says 0, and the largest accepted.
pub const DEFAULT_LIST_LIMIT: usize = 100;
pub const MAX_LIST_LIMIT: usize = 10_000;
/// Longest time to live (and furthest absolute expiry): ten years.
pub const MAX_TTL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;
/// Most compares, and most operations per branch, in one transaction.
pub const MAX_TXN_COMPARES: usize = 128;
pub const MAX_TXN_OPS: usize = 128;

pub fn name(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(invalid(format!(
            "{field} is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if value.starts_with('.') {
        return Err(invalid(format!(
            "{field} {value:?} must not start with '.'"
        )));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c)))
    {
        return Err(invalid(format!(
            "{field} {value:?} contains {bad:?}; allowed are letters, digits, '_', '-' and '.'"
        )));
    }
    Ok(())
}

/// An empty database or table means "default".
pub fn scope_name(field: &str, value: &str) -> Result<String, Status> {
    if value.is_empty() {
        return Ok("default".into());
    }
    name(field, value)?;
    Ok(value.into())
}

pub fn key(field: &str, key: &[u8]) -> Result<(), Status> {
    if key.is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    key_or_prefix(field, key)
}

pub fn key_or_prefix(field: &str, key: &[u8]) -> Result<(), Status> {
    if key.len() > MAX_KEY_BYTES {
        return Err(invalid(format!(
            "{field} is {} bytes; the limit is {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    Ok(())
}

pub fn value(field: &str, value: &[u8], max_value_bytes: usize) -> Result<(), Status> {
    if value.len() > max_value_bytes {
        return Err(invalid(format!(
            "{field} is {} bytes; the limit is {max_value_bytes} bytes (--max-value-bytes)",
            value.len()
        )));
    }
    Ok(())
}

pub fn metadata(map: &HashMap<String, String>) -> Result<BTreeMap<String, String>, Status> {
    if map.len() > MAX_METADATA_ENTRIES {
        return Err(invalid(format!(
            "metadata has {} entries; the limit is {MAX_METADATA_ENTRIES}",
            map.len()
        )));
    }
    for (key, value) in map {
        if key.is_empty() || key.len() > MAX_METADATA_KEY_BYTES {
            return Err(invalid(format!(
                "metadata key {key:?} must be 1 to {MAX_METADATA_KEY_BYTES} bytes"
            )));
        }
        if value.len() > MAX_METADATA_VALUE_BYTES {
            return Err(invalid(format!(
                "metadata value of {key:?} is {} bytes; the limit is {MAX_METADATA_VALUE_BYTES}",
                value.len()
            )));
        }
    }
    Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Checks TTL fields and turns them into an expiry.
pub fn expiry(
    ttl_ms: u64,
    expires_at_ms: u64,
    now_ms: u64,
) -> Result<strata_storage::kv::Expiry, Status> {
    use strata_storage::kv::Expiry;
    match (ttl_ms, expires_at_ms) {
        (0, 0) => Ok(Expiry::Never),
        (ttl, 0) if ttl > MAX_TTL_MS => Err(invalid(format!(
            "ttl_ms {ttl} exceeds the limit of {MAX_TTL_MS} ms (ten years)"
        ))),
        (ttl, 0) => Ok(Expiry::TtlMs(ttl)),
        (0, at) if at <= now_ms => Err(invalid(format!(
            "expires_at_ms {at} is not in the future (now is {now_ms})"
        ))),
        (0, at) if at - now_ms > MAX_TTL_MS => Err(invalid(format!(
            "expires_at_ms {at} is more than {MAX_TTL_MS} ms (ten years) away"
        ))),
        (0, at) => Ok(Expiry::AtMs(at)),
        _ => Err(invalid("give ttl_ms or expires_at_ms, not both".into())),
    }
}

pub fn list_limit(limit: u32) -> Result<usize, Status> {
    match limit as usize {
        0 => Ok(DEFAULT_LIST_LIMIT),
        n if n > MAX_LIST_LIMIT => Err(invalid(format!(
            "limit {n} exceeds the maximum of {MAX_LIST_LIMIT}"
        ))),
        n => Ok(n),
    }
}

/// Decodes a proto enum field, rejecting numbers this server does not know.
pub fn enumeration<E: TryFrom<i32>>(field: &str, value: i32) -> Result<E, Status> {
    E::try_from(value).map_err(|_| invalid(format!("{field} has unknown value {value}")))
}

/// A `host:port` network address (a name or an IP; IPv6 in brackets).
pub fn host_port(field: &str, value: &str) -> Result<(), Status> {
    let valid = value.len() <= 255
        && value.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
    if !valid {
        return Err(invalid(format!(
            "{field} must be host:port with a port from 1 to 65535, got {value:?}"
        )));
    }
    Ok(())
}

pub fn invalid(message: String) -> Status {
    Status::invalid_argument(message)
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        /// Every validator answers any input with a verdict: no panic, and a refusal is always
        /// INVALID_ARGUMENT (validators have nothing to write; the handlers call them before
        /// anything is proposed).
        #[test]
        fn validators_take_any_input(
            text in ".{0,300}",
            bytes in proptest::collection::vec(any::<u8>(), 0..5000),
            map in proptest::collection::hash_map(".{0,40}", ".{0,80}", 0..40),
            numbers in (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>(), any::<i32>()),
        ) {
            let (ttl, at, now, limit, enumeration_value) = numbers;
            let verdicts = [
                name("f", &text).err(),
                scope_name("f", &text).err(),
                key("f", &bytes).err(),
                key_or_prefix("f", &bytes).err(),
                value("f", &bytes, 1024).err(),
                metadata(&map).err(),
                expiry(ttl, at, now).err(),
                list_limit(limit).err(),
                enumeration::<strata_proto::kv::v1::Consistency>("f", enumeration_value).err(),
                host_port("f", &text).err(),
            ];
            for refusal in verdicts.into_iter().flatten() {
                prop_assert_eq!(refusal.code(), tonic::Code::InvalidArgument);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_port_needs_a_host_and_a_real_port() {
        for good in ["127.0.0.1:7421", "node-2.example:1", "[::1]:65535"] {
            assert!(super::host_port("a", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "7421",
            ":7421",
            "host:",
            "host:0",
            "host:65536",
            "a b:1",
        ] {
            assert!(super::host_port("a", bad).is_err(), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn names() {
        assert!(name("table", "users_v2.archive-1").is_ok());
        for bad in ["", ".hidden", "a/b", "a\0b", "a b", "ü", &"x".repeat(65)] {
            let error = name("table", bad).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{bad:?}");
            assert!(error.message().contains("table"), "{}", error.message());
        }
    }

    #[test]
    fn expiries() {
        use strata_storage::kv::Expiry;
        assert_eq!(expiry(0, 0, 1000).unwrap(), Expiry::Never);
        assert_eq!(expiry(5, 0, 1000).unwrap(), Expiry::TtlMs(5));
        assert_eq!(expiry(0, 2000, 1000).unwrap(), Expiry::AtMs(2000));
        assert!(expiry(0, 999, 1000).is_err());
        assert!(expiry(5, 2000, 1000).is_err());
        assert!(expiry(MAX_TTL_MS + 1, 0, 1000).is_err());
    }

    #[test]
    fn limits() {
        assert_eq!(list_limit(0).unwrap(), DEFAULT_LIST_LIMIT);
        assert_eq!(list_limit(10_000).unwrap(), 10_000);
        assert!(list_limit(10_001).unwrap_err().message().contains("10000"));
        assert!(key("key", b"").is_err());
        assert!(key("key", &vec![b'k'; MAX_KEY_BYTES + 1])
            .unwrap_err()
            .message()
            .contains("4096"));
        assert!(value("value", &[0; 11], 10)
            .unwrap_err()
            .message()
            .contains("10 bytes"));
    }
}
