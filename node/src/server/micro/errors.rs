//! Micro's error shape on the wire (shared/MICRO_API.md §1): a Micro client rebuilds an error
//! by parsing `grpc-message` as JSON `{"id","code","detail","status"}` and branches on `code`
//! (404 above all). The edge's status layer (`server/edge.rs`) puts [`micro_json`] in every
//! error status of a call to a Micro package, wherever it came from (the identity layer, a
//! handler, tonic's own decoding), so each handler returns ordinary statuses and the shape is
//! made in one place. The gRPC status code and the `x-strata-error` metadata stay as they were.

/// The packages of Micro's services, as the first part of their paths.
const MICRO_PACKAGES: &[&str] = &["store", "registry", "events", "config", "auth", "broker"];

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
    fn errors_become_micro_json() {
        let json: serde_json::Value =
            serde_json::from_str(&micro_json("store.Store.Read", 5, "not found: café 100%"))
                .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": "store.Store.Read", "code": 404,
                "detail": "not found: café 100%", "status": "Not Found"})
        );
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
