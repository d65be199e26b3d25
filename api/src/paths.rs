//! The API's routes, shared by the server (patterns) and the client (concrete paths).

/// `GET`: liveness and a short summary; the one route that needs no token.
pub const HEALTH: &str = "/v1/health";
/// `GET`: Prometheus text exposition.
pub const METRICS: &str = "/metrics";
/// `GET` lists, `POST` deploys.
pub const OBJECTS: &str = "/v1/objects";
/// `GET`: one object in detail.
pub const OBJECT: &str = "/v1/objects/{id}";
/// `POST`: queue a message.
pub const MESSAGES: &str = "/v1/objects/{id}/messages";
/// `POST`: suspend.
pub const SUSPEND: &str = "/v1/objects/{id}/suspend";
/// `POST`: resume.
pub const RESUME: &str = "/v1/objects/{id}/resume";
/// `GET`: the committed lineage as `application/cbor-seq`.
pub const LINEAGE: &str = "/v1/objects/{id}/lineage";

/// Largest request body of `POST /v1/objects` (a deploy carries the module in base64).
pub const DEPLOY_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Largest request body of every other route.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Media type of the lineage export.
pub const CBOR_SEQ: &str = "application/cbor-seq";
/// Media type of `/metrics`.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A route pattern with `{id}` replaced by `id`, percent-encoded as one path segment.
pub fn object_path(pattern: &str, id: &str) -> String {
    pattern.replace("{id}", &encode_segment(id))
}

/// Percent-encodes everything but RFC 3986 unreserved characters other than `.` (so no id
/// can form a `.` or `..` segment).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_encoded_segment() {
        assert_eq!(object_path(OBJECT, "abcd"), "/v1/objects/abcd");
        assert_eq!(
            object_path(SUSPEND, "a/b c%"),
            "/v1/objects/a%2Fb%20c%25/suspend"
        );
        assert_eq!(object_path(OBJECT, "é"), "/v1/objects/%C3%A9");
        assert_eq!(object_path(OBJECT, ".."), "/v1/objects/%2E%2E");
    }
}
