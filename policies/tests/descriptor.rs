//! Descriptor parsing: good descriptors round-trip canonically; bad ones get errors that name
//! the file, the field and what was expected.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failure is a panic

use sojourn_policy::{parse_descriptor, Descriptor, EntryPoint, Fields, Value, Violation};

const GOOD: &str = r#"
[object]
name = "escrow"
version = 3
module = "escrow.wasm"
[cycle]
min_interval_ms = 10
max_interval_ms = 60000
[limits]
fuel_per_entry = 1000000
memory_pages_max = 2
rollback = "memory"
[schema.fields.owner]
type = "string"
max_len = 16
default = "alice"
immutable = true
[schema.fields.balance]
type = "int"
min = 0
default = 0
[schema.fields.total]
type = "int"
default = 0
monotonic = true
[schema.fields.state]
type = "enum"
variants = ["open", "frozen"]
default = "open"
[schema.fields.history]
type = "list"
max_items = 3
items = { type = "int", min = 0 }
default = [1]
monotonic = true
[schema.fields.tags]
type = "map"
max_entries = 2
max_key_len = 4
values = { type = "bool" }
default = { a = true }
[schema.fields.secret]
type = "bytes"
max_len = 4
default = "00ff"
attestation_required = true
[policy.writers]
message = ["balance", "total", "state", "history", "tags", "owner"]
[[policy.invariants]]
name = "no_overdraft"
expr = "balance <= total && (state == \"open\" || balance == prev.balance)"
"#;

fn good() -> Descriptor {
    parse_descriptor("escrow/object.toml", GOOD, b"module").unwrap()
}

#[test]
fn canonical_encoding_round_trips_and_is_stable() {
    let d = good();
    let bytes = d.encode();
    let back = Descriptor::decode(&bytes).unwrap();
    assert_eq!(back, d);
    assert_eq!(back.digest(), d.digest());
    // The same descriptor written with keys in another order has the same digest.
    let shuffled = GOOD.replace(
        "[object]\nname = \"escrow\"\nversion = 3\nmodule = \"escrow.wasm\"",
        "[object]\nmodule = \"escrow.wasm\"\nversion = 3\nname = \"escrow\"",
    );
    assert_eq!(
        parse_descriptor("x", &shuffled, b"module")
            .unwrap()
            .digest(),
        d.digest()
    );
    // Another module, another digest.
    assert_ne!(
        parse_descriptor("x", GOOD, b"other").unwrap().digest(),
        d.digest()
    );
    assert!(d.field("secret").unwrap().attestation_required);
    // Any byte change breaks decoding or changes the digest; none panics.
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        if let Ok(x) = Descriptor::decode(&b) {
            assert_ne!(x.digest(), d.digest());
        }
        assert!(Descriptor::decode(&bytes[..i]).is_err());
    }
}

#[test]
fn malformed_descriptors_name_file_field_and_expectation() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "max_len = 16",
            "max_len = 16\nmaxlen = 3",
            "line",
            "unknown field `maxlen`",
        ),
        (
            "version = 3",
            "version = 3\ncolour = 1",
            "line",
            "unknown field `colour`",
        ),
        (
            "type = \"string\"",
            "type = \"text\"",
            "schema.fields.owner.type",
            "one of int",
        ),
        (
            "default = \"alice\"",
            "default = 5",
            "schema.fields.owner.default",
            "type string",
        ),
        (
            "default = \"alice\"",
            "default = \"much too long a name\"",
            "schema.fields.owner.default",
            "above the maximum 16",
        ),
        (
            "min = 0\ndefault = 0",
            "min = 0\nmax_len = 3\ndefault = 0",
            "schema.fields.balance.max_len",
            "no `max_len`",
        ),
        (
            "rollback = \"memory\"",
            "rollback = \"all\"",
            "limits.rollback",
            "\"fields\" or \"memory\"",
        ),
        (
            "fuel_per_entry = 1000000",
            "fuel_per_entry = 0",
            "limits.fuel_per_entry",
            "positive",
        ),
        (
            "max_interval_ms = 60000",
            "max_interval_ms = 1",
            "cycle.max_interval_ms",
            "at least",
        ),
        (
            "message = [",
            "tock = [\"balance\"]\nmessage = [",
            "policy.writers.tock",
            "init, tick or message",
        ),
        (
            "\"history\", ",
            "\"nope\", ",
            "policy.writers.message",
            "`nope` is not one",
        ),
        (
            "balance <= total &&",
            "balance <= totl &&",
            "policy.invariants[0].expr",
            "unknown field `totl`",
        ),
        (
            "state == \\\"open\\\"",
            "state == \\\"opne\\\"",
            "policy.invariants[0].expr",
            "not a variant",
        ),
        (
            "default = [1]",
            "default = [-1]",
            "schema.fields.history.default",
            "below the minimum",
        ),
        (
            "name = \"escrow\"",
            "name = \"Escrow!\"",
            "object.name",
            "[a-z0-9_-]",
        ),
        (
            "immutable = true",
            "immutable = true\nmonotonic = true",
            "schema.fields.owner.monotonic",
            "monotonic only on",
        ),
        (
            "expr = \"balance <= total",
            "expr = \"balance < 0 || balance <= total",
            "",
            "",
        ),
    ];
    for (from, to, field, expected) in cases {
        assert!(GOOD.contains(from), "case does not apply: {from}");
        let text = GOOD.replacen(from, to, 1);
        let r = parse_descriptor("escrow/object.toml", &text, b"module");
        if field.is_empty() {
            assert!(r.is_ok(), "{to}: {r:?}");
            continue;
        }
        let e = r.expect_err(to);
        assert_eq!(e.file, "escrow/object.toml");
        assert!(e.field.contains(field), "{to}: field {:?}", e.field);
        assert!(e.expected.contains(expected), "{to}: {:?}", e.expected);
        assert!(e.to_string().starts_with("escrow/object.toml: "));
    }
    // Type errors and unknown keys name the dotted path as well as the position.
    let e = parse_descriptor(
        "f.toml",
        &GOOD.replace("max_len = 16", "max_len = \"sixteen\""),
        b"m",
    )
    .unwrap_err();
    assert!(
        e.field.starts_with("schema.fields.owner.max_len (line"),
        "{e}"
    );
    let e = parse_descriptor(
        "f.toml",
        &GOOD.replace("version = 3", "version = 3\ncolour = 1"),
        b"m",
    )
    .unwrap_err();
    assert!(e.field.starts_with("object.colour (line"), "{e}");
    let e = parse_descriptor("f.toml", "[object\n", b"").unwrap_err();
    assert!(e.field.contains("line 1, column"), "{e}");
    let e = parse_descriptor("f.toml", "", b"").unwrap_err();
    assert!(e.expected.contains("missing field"), "{e}");
}

#[test]
fn transitions_are_checked_against_schema_and_policy() {
    let d = good();
    let before = d.initial_state();
    let w = |pairs: &[(&str, Value)]| -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    let ok = d
        .check_transition(
            EntryPoint::Message,
            &before,
            &w(&[("total", Value::Int(5)), ("balance", Value::Int(5))]),
        )
        .unwrap();
    assert_eq!(ok.get("balance"), Some(&Value::Int(5)));
    let cases = [
        (
            EntryPoint::Tick,
            w(&[("balance", Value::Int(0))]),
            "tick may not write",
        ),
        (
            EntryPoint::Message,
            w(&[("nope", Value::Int(0))]),
            "does not exist",
        ),
        (
            EntryPoint::Message,
            w(&[("owner", Value::Str("bob".into()))]),
            "immutable",
        ),
        (
            EntryPoint::Message,
            w(&[("total", Value::Int(-1))]),
            "monotonic",
        ),
        (
            EntryPoint::Message,
            w(&[("history", Value::List(vec![]))]),
            "monotonic",
        ),
        (
            EntryPoint::Message,
            w(&[(
                "history",
                Value::List(vec![
                    Value::Int(1),
                    Value::Int(2),
                    Value::Int(3),
                    Value::Int(4),
                ]),
            )]),
            "more than the maximum 3",
        ),
        (
            EntryPoint::Message,
            w(&[(
                "tags",
                Value::Map([("toolong".to_string(), Value::Bool(true))].into()),
            )]),
            "longer than",
        ),
        (
            EntryPoint::Message,
            w(&[("state", Value::Enum("closed".into()))]),
            "not one of the variants",
        ),
        (
            EntryPoint::Message,
            w(&[("balance", Value::Int(1))]),
            "no_overdraft",
        ),
        (
            EntryPoint::Message,
            w(&[("balance", Value::Bool(true))]),
            "expected int",
        ),
    ];
    for (entry, writes, needle) in cases {
        let err: Violation = d.check_transition(entry, &before, &writes).unwrap_err();
        assert!(err.to_string().contains(needle), "{writes:?}: {err}");
    }
    // Appending to a monotonic list is fine; owner written with its own value is fine.
    d.check_transition(
        EntryPoint::Message,
        &before,
        &w(&[
            ("history", Value::List(vec![Value::Int(1), Value::Int(9)])),
            ("owner", Value::Str("alice".into())),
        ]),
    )
    .unwrap();
}

mod trust {
    use super::*;
    use sojourn_policy::TrustView;

    const GATED: &str = r#"
[object]
name = "vault"
version = 1
module = "v.wasm"
[limits]
fuel_per_entry = 1000
memory_pages_max = 1
[schema.fields.secret]
type = "int"
default = 0
[schema.fields.note]
type = "int"
default = 0
[policy.writers]
message = ["secret", "note"]
[policy.trust]
read_only_below = 40
no_fall_on_migration = true
[[policy.trust.rules]]
field = "secret"
window = 3
min_score = 100
"#;

    #[test]
    fn window_minimum_and_weighted_mean_are_exact_integers() {
        let mut v = TrustView::new();
        assert_eq!(v.ewma(), None);
        assert_eq!(v.window_min(1), None);
        v.push(100);
        assert_eq!(v.ewma(), Some(100));
        v.push(0);
        // 100 - 100/8 = 87.5 -> 87 (fixed point, rounded down)
        assert_eq!(v.ewma(), Some(87));
        v.push(100);
        assert_eq!(v.window_min(2), Some(0));
        assert_eq!(v.window_min(1), Some(100));
        assert_eq!(v.window_min(4), None);
        for _ in 0..300 {
            v.push(50);
        }
        assert_eq!(v.window_min(256), Some(50));
        assert_eq!(v.entries(), 303);
        assert!(v.ewma().unwrap() <= 51 && v.ewma().unwrap() >= 50);
    }

    #[test]
    fn trust_rules_gate_writes_and_fail_closed() {
        let d = parse_descriptor("vault/object.toml", GATED, b"m").unwrap();
        assert_eq!(Descriptor::decode(&d.encode()).unwrap(), d);
        let secret: Fields = [("secret".to_string(), Value::Int(1))].into();
        let note: Fields = [("note".to_string(), Value::Int(1))].into();
        // No lineage: fail closed.
        let e = d.check_trust(&note, None).unwrap_err().to_string();
        assert!(e.contains("read-only without an attested lineage"), "{e}");
        let mut v = TrustView::new();
        v.push(100);
        v.push(100);
        d.check_trust(&note, Some(&v)).unwrap();
        let e = d.check_trust(&secret, Some(&v)).unwrap_err().to_string();
        assert!(e.contains("needs 3 attested entries"), "{e}");
        v.push(100);
        d.check_trust(&secret, Some(&v)).unwrap();
        v.push(50);
        let e = d.check_trust(&secret, Some(&v)).unwrap_err().to_string();
        assert!(e.contains("lowest is 50"), "{e}");
        for _ in 0..20 {
            v.push(0);
        }
        let e = d.check_trust(&note, Some(&v)).unwrap_err().to_string();
        assert!(e.contains("read-only: trust"), "{e}");
        // Nothing written: nothing to gate.
        d.check_trust(&Fields::new(), None).unwrap();

        for (from, to, field) in [
            ("window = 3", "window = 0", "policy.trust.rules[0].window"),
            (
                "field = \"secret\"",
                "field = \"nope\"",
                "policy.trust.rules[0].field",
            ),
            (
                "read_only_below = 40",
                "read_only_below = 101",
                "read_only_below",
            ),
            ("read_only_below = 40", "read_only_below = 400", "line 18"),
            ("min_score = 100", "min_score = 100\nscore = 1", "line"),
        ] {
            let e = parse_descriptor("v", &GATED.replace(from, to), b"m").unwrap_err();
            assert!(e.field.contains(field), "{to}: {e}");
        }
    }
}

#[test]
fn the_documented_example_descriptor_parses() {
    let doc = include_str!("../../docs/object-descriptor.md");
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let len = doc[start..].find("```").expect("end of the block");
    let d = parse_descriptor("docs/object-descriptor.md", &doc[start..start + len], b"m").unwrap();
    assert_eq!(d.name, "escrow");
    assert_eq!(d.policy.trust.read_only_below, Some(60));
    assert!(d.field("secret").unwrap().attestation_required);
    assert_eq!(Descriptor::decode(&d.encode()).unwrap(), d);
}
