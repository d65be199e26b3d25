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

/// `POST` (admin, on the source host): move the object to another host.
pub const MIGRATE: &str = "/v1/objects/{id}/migrate";
/// `POST` (admin, on the source host): move every object to other hosts.
pub const DRAIN: &str = "/v1/drain";
/// `POST` (peer or admin, host to host, on the destination): an offer; the answer's evidence
/// commits to the TLS exporter of the connection that carried it.
pub const MIGRATION_OFFER: &str = "/v1/migration/offer";
/// `POST` (peer or admin, host to host, on the destination): the sealed package of an attempt,
/// as `application/octet-stream`, or in the order [`PACKAGE_TAG_AFTER_SEGMENT`] names (at
/// most [`PACKAGE_BODY_LIMIT`]). `{transfer}` is the
/// attempt's 32-hex id, `{key}` the 64-hex id of the key it is sealed to.
pub const MIGRATION_PACKAGE: &str = "/v1/migration/transfers/{transfer}/package/{key}";
/// `POST` (peer or admin, host to host, on the destination): "decide now".
pub const MIGRATION_STATUS: &str = "/v1/migration/status";
/// `POST` (peer or admin, host to host, on the destination): the source will not send a
/// package for this attempt.
pub const MIGRATION_REFUSAL: &str = "/v1/migration/refusal";

/// Largest request body of `POST /v1/objects` (a deploy carries the module in base64).
pub const DEPLOY_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Largest request body of `POST /v1/migration/transfers/{transfer}/package/{key}` (a sealed
/// object package: state, module, lineage).
pub const PACKAGE_BODY_LIMIT: usize = 320 * 1024 * 1024;
/// Largest request body of every other route.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Media type of a sealed migration package (as it lies: `PackageOrder::Layout`).
pub const OCTET_STREAM: &str = "application/octet-stream";
/// Media type of a sealed migration package sent with each segment's tag right after the
/// segment (`PackageOrder::TagAfterSegment`), so that the destination opens each segment as
/// it arrives.
pub const PACKAGE_TAG_AFTER_SEGMENT: &str = "application/vnd.sojourn.package.tag-after-segment";

/// Media type of the lineage export.
pub const CBOR_SEQ: &str = "application/cbor-seq";
/// Media type of `/metrics`.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A route pattern with `{id}` replaced by `id`, percent-encoded as one path segment.
pub fn object_path(pattern: &str, id: &str) -> String {
    pattern.replace("{id}", &encode_segment(id))
}

/// [`MIGRATION_PACKAGE`] with `{transfer}` and `{key}` filled in, each percent-encoded as one
/// path segment.
pub fn migration_package_path(transfer: &str, key: &str) -> String {
    MIGRATION_PACKAGE
        .replace("{transfer}", &encode_segment(transfer))
        .replace("{key}", &encode_segment(key))
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
        assert_eq!(object_path(MIGRATE, "ab12"), "/v1/objects/ab12/migrate");
    }

    #[test]
    fn package_path() {
        assert_eq!(
            migration_package_path("00ff", "abcd"),
            "/v1/migration/transfers/00ff/package/abcd"
        );
        // A `{key}` inside the transfer id is not filled in again.
        assert_eq!(
            migration_package_path("{key}", "k/"),
            "/v1/migration/transfers/%7Bkey%7D/package/k%2F"
        );
    }
}
