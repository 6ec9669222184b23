//! Dotted-path access to JSON documents, shared by apply (deterministic) and the API edge.
//!
//! A path is a list of object keys (`a.b.c`; empty: the whole document). Setting an object onto
//! an object merges it key by key, recursively; anything else replaces what was there. A
//! secret is stored as a one-key object `{"$secret": "<ciphertext>"}`, which merging treats as
//! a leaf; user values may not contain that key.

use serde_json::{Map, Value};

/// The key of the object that stands for an encrypted value.
pub const SECRET_MARKER: &str = "$secret";
/// What a secret looks like to a reader who did not ask for secrets.
pub const MASK: &str = "[secret]";
/// Most segments in a path.
pub const MAX_PATH_DEPTH: usize = 32;
/// Longest path segment, in bytes.
pub const MAX_SEGMENT_BYTES: usize = 256;

/// Splits a dotted path; the empty string is the whole document.
pub fn parse_path(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let segments: Vec<String> = path.split('.').map(str::to_string).collect();
    if segments.len() > MAX_PATH_DEPTH {
        return Err(format!(
            "path {path:?} has {} segments; at most {MAX_PATH_DEPTH} are allowed",
            segments.len()
        ));
    }
    for segment in &segments {
        if segment.is_empty() {
            return Err(format!(
                "path {path:?} has an empty segment (two dots, or a leading or trailing dot)"
            ));
        }
        if segment.len() > MAX_SEGMENT_BYTES {
            return Err(format!(
                "path segment {:?}… is longer than {MAX_SEGMENT_BYTES} bytes",
                &segment[..16]
            ));
        }
    }
    Ok(segments)
}

pub fn is_secret(value: &Value) -> bool {
    matches!(value, Value::Object(map) if map.len() == 1 && map.get(SECRET_MARKER).is_some_and(Value::is_string))
}

/// The value at `path`, or `None` when absent (or when the path runs through a non-object).
pub fn get<'a>(document: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut at = document;
    for segment in path {
        if is_secret(at) {
            return None;
        }
        at = at.as_object()?.get(segment)?;
    }
    Some(at)
}

/// Writes `value` at `path`, creating objects on the way. Fails, changing nothing, when the
/// path runs into a non-object (naming the dotted prefix where it did).
pub fn set(document: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    // Check first, so that a failure leaves the document as it was.
    let mut probe = &*document;
    for (depth, segment) in path.iter().enumerate() {
        if !probe.is_object() || is_secret(probe) {
            return Err(path[..depth].join("."));
        }
        match probe.get(segment) {
            Some(next) => probe = next,
            None => break,
        }
    }
    let mut at = document;
    for segment in path {
        let map = at.as_object_mut().expect("checked above");
        at = map
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    merge(at, value);
    Ok(())
}

/// Merges `value` into `target`: objects key by key (recursively), anything else replaces.
fn merge(target: &mut Value, value: Value) {
    match (target, value) {
        (target @ Value::Object(_), Value::Object(incoming))
            if !is_secret(target) && !is_secret(&Value::Object(incoming.clone())) =>
        {
            let map = target.as_object_mut().expect("matched an object");
            for (key, item) in incoming {
                match map.get_mut(&key) {
                    Some(existing) => merge(existing, item),
                    None => {
                        map.insert(key, item);
                    }
                }
            }
        }
        (target, value) => *target = value,
    }
}

/// Removes the subtree at `path` (not the root). True when something was removed.
pub fn delete(document: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = document;
    for segment in parents {
        if is_secret(at) {
            return false;
        }
        match at.as_object_mut().and_then(|map| map.get_mut(segment)) {
            Some(next) => at = next,
            None => return false,
        }
    }
    if is_secret(at) {
        return false;
    }
    at.as_object_mut()
        .is_some_and(|map| map.remove(last).is_some())
}

/// Replaces every secret in `value` by what `reveal` makes of its ciphertext (the mask, or the
/// decrypted value). Stops at the first error.
pub fn map_secrets<E>(
    value: &mut Value,
    reveal: &mut impl FnMut(&str) -> Result<Value, E>,
) -> Result<(), E> {
    if is_secret(value) {
        let ciphertext = value[SECRET_MARKER].as_str().expect("checked by is_secret");
        *value = reveal(ciphertext)?;
        return Ok(());
    }
    match value {
        Value::Object(map) => map.values_mut().try_for_each(|v| map_secrets(v, reveal)),
        Value::Array(items) => items.iter_mut().try_for_each(|v| map_secrets(v, reveal)),
        _ => Ok(()),
    }
}

/// Every secret shown as [`MASK`].
pub fn masked(mut value: Value) -> Value {
    let _ = map_secrets(&mut value, &mut |_| Ok::<_, ()>(Value::String(MASK.into())));
    value
}

/// Whether `value` contains an object with the reserved [`SECRET_MARKER`] key anywhere.
pub fn uses_marker(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.contains_key(SECRET_MARKER) || map.values().any(uses_marker),
        Value::Array(items) => items.iter().any(uses_marker),
        _ => false,
    }
}

/// Applies `encrypt` to every leaf of `value` (each object member recursively; arrays and
/// scalars are leaves), turning each into a secret marker, so that merging a secret object keeps
/// its structure visible and each value sealed.
pub fn seal_leaves<E>(
    value: Value,
    encrypt: &mut impl FnMut(&Value) -> Result<String, E>,
) -> Result<Value, E> {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let mut sealed = Map::new();
            for (key, item) in map {
                sealed.insert(key, seal_leaves(item, encrypt)?);
            }
            Ok(Value::Object(sealed))
        }
        leaf => {
            let mut marker = Map::new();
            marker.insert(SECRET_MARKER.into(), Value::String(encrypt(&leaf)?));
            Ok(Value::Object(marker))
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn path(text: &str) -> Vec<String> {
        parse_path(text).unwrap()
    }

    #[test]
    fn paths_are_checked() {
        assert_eq!(parse_path("").unwrap(), Vec::<String>::new());
        assert_eq!(path("a.b"), vec!["a", "b"]);
        assert!(parse_path("a..b").is_err());
        assert!(parse_path(".a").is_err());
        assert!(parse_path("a.").is_err());
        assert!(parse_path(&vec!["x"; 33].join(".")).is_err());
        assert!(parse_path(&"y".repeat(257)).is_err());
    }

    #[test]
    fn set_merges_objects_and_replaces_the_rest() {
        let mut doc = json!({"db": {"host": "a", "port": 1}, "name": "x"});
        set(&mut doc, &path("db"), json!({"port": 2, "user": "u"})).unwrap();
        assert_eq!(
            doc,
            json!({"db": {"host": "a", "port": 2, "user": "u"}, "name": "x"})
        );
        set(&mut doc, &path("db"), json!("flat")).unwrap();
        assert_eq!(doc, json!({"db": "flat", "name": "x"}));
        set(&mut doc, &path("new.deep.leaf"), json!([1, 2])).unwrap();
        assert_eq!(doc["new"]["deep"]["leaf"], json!([1, 2]));
    }

    #[test]
    fn a_path_into_a_non_object_fails_and_changes_nothing() {
        let mut doc = json!({"a": {"b": 5}});
        let before = doc.clone();
        assert_eq!(set(&mut doc, &path("a.b.c"), json!(1)), Err("a.b".into()));
        assert_eq!(doc, before);
        assert_eq!(get(&doc, &path("a.b.c")), None);
    }

    #[test]
    fn delete_removes_a_subtree() {
        let mut doc = json!({"a": {"b": 1, "c": 2}});
        assert!(delete(&mut doc, &path("a.b")));
        assert!(!delete(&mut doc, &path("a.b")));
        assert!(!delete(&mut doc, &path("a.c.d")));
        assert_eq!(doc, json!({"a": {"c": 2}}));
    }

    #[test]
    fn secrets_are_leaves_and_mask() {
        let sealed = seal_leaves(json!({"user": "u", "pw": {"a": 1}}), &mut |v| {
            Ok::<_, ()>(format!("enc({v})"))
        })
        .unwrap();
        assert!(is_secret(&sealed["user"]));
        assert!(is_secret(&sealed["pw"]["a"]));
        let mut doc = json!({});
        set(&mut doc, &[], sealed).unwrap();
        // A plain value over a secret replaces it, never merges into the marker.
        set(&mut doc, &path("user"), json!({"x": 1})).unwrap();
        assert_eq!(doc["user"], json!({"x": 1}));
        assert_eq!(masked(doc.clone())["pw"]["a"], json!(MASK));
        assert!(uses_marker(&doc));
        assert!(!uses_marker(&json!({"a": [1, {"b": 2}]})));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop::collection::btree_map("[a-c]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        })
    }

    proptest! {
        /// After a set, reading the path gives the value (when it is not an object merged into
        /// an object), and a set that fails leaves the document as it was.
        #[test]
        fn set_then_get(mut doc in arb_json(), segments in prop::collection::vec("[a-c]", 0..3), value in arb_json()) {
            let before = doc.clone();
            let target_was_object = get(&doc, &segments).is_some_and(Value::is_object);
            match set(&mut doc, &segments, value.clone()) {
                Ok(()) => {
                    let now = get(&doc, &segments).expect("just set");
                    if !(value.is_object() && target_was_object) {
                        prop_assert_eq!(now, &value);
                    } else if let Value::Object(incoming) = &value {
                        for key in incoming.keys() {
                            prop_assert!(now.get(key).is_some());
                        }
                    }
                }
                Err(_) => prop_assert_eq!(doc, before),
            }
        }
    }
}
