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

    pub(super) const GATED: &str = r#"
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

mod migration {
    use super::*;
    use ciborium::Value as Cbor;
    use sojourn_policy::{canonical, MigrationPlatform, MigrationTrust, RuntimeVersion};

    const M48: &str = "7a1e5c26000000000000000000000000000000000000000000000000000000000000000000000000000000000000abcd";

    fn mig(section: &str) -> String {
        format!("{GOOD}[policy.migration]\n{section}\n")
    }

    fn full() -> String {
        mig(&format!(
            r#"allowed = true
platforms = ["tdx", "snp", "software"]
allow_software = true
allow_debug = true
measurements = ["{M48}", "{}"]
min_tcb = {{ snp = {{ bootloader = 3, tee = 0, snp = 8, microcode = 115, fmc = 1 }}, tdx = {{ accepted_tcb_status = ["UpToDate", "SWHardeningNeeded"] }} }}
min_runtime_version = "0.1.0"
trust = "no-fall"
[policy.migration.claims]
region = "eu-west"
operator = "acme"
"#,
            "00".repeat(48)
        ))
    }

    #[test]
    fn full_section_parses_and_round_trips() {
        let d = parse_descriptor("m", &full(), b"module").unwrap();
        let r = &d.policy.migration;
        assert!(r.allowed && r.allow_software && r.allow_debug);
        assert_eq!(
            r.platforms.iter().copied().collect::<Vec<_>>(),
            vec![
                MigrationPlatform::Snp,
                MigrationPlatform::Software,
                MigrationPlatform::Tdx
            ]
        );
        assert_eq!(r.measurements.len(), 2);
        assert!(r.measurements.contains(&[0u8; 48]));
        let snp = r.min_tcb.snp.unwrap();
        assert_eq!(
            (snp.fmc, snp.bootloader, snp.tee, snp.snp, snp.microcode),
            (Some(1), 3, 0, 8, 115)
        );
        assert_eq!(r.min_tcb.tdx.as_ref().unwrap().accepted_tcb_status.len(), 2);
        assert_eq!(
            r.min_runtime_version,
            Some(RuntimeVersion {
                major: 0,
                minor: 1,
                patch: 0
            })
        );
        assert_eq!(r.trust, MigrationTrust::NoFall);
        assert_eq!(r.claims.get("region").map(String::as_str), Some("eu-west"));
        let bytes = d.encode();
        assert_eq!(Descriptor::decode(&bytes).unwrap(), d);
        // Every key counts in the digest.
        for (from, to) in [
            ("allow_debug = true", "allow_debug = false"),
            ("\"0.1.0\"", "\"0.1.1\""),
            ("eu-west", "eu-east"),
            ("microcode = 115", "microcode = 116"),
            (", fmc = 1", ""),
            ("\"UpToDate\", ", ""),
            ("trust = \"no-fall\"", "trust = \"any\""),
            ("abcd", "abce"),
        ] {
            let other = parse_descriptor("m", &full().replacen(from, to, 1), b"module").unwrap();
            assert_ne!(other.digest(), d.digest(), "{from} -> {to}");
        }
        // The order things are written in does not.
        let shuffled = full().replace(
            "[\"tdx\", \"snp\", \"software\"]",
            "[\"software\", \"tdx\", \"snp\"]",
        );
        assert_eq!(
            parse_descriptor("m", &shuffled, b"module")
                .unwrap()
                .digest(),
            d.digest()
        );
        // Byte flips in the encoding: refused, or another digest; never a panic.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            if let Ok(x) = Descriptor::decode(&b) {
                assert_ne!(x.digest(), d.digest());
            }
        }
    }

    /// Digests computed before `[policy.migration]` grew beyond `allowed`: descriptors that do
    /// not use the new keys encode exactly as they did.
    #[test]
    fn descriptors_without_the_new_keys_keep_their_digest() {
        let escrow = include_str!("../../examples/escrow/object.toml");
        let d = parse_descriptor("escrow", escrow, b"m").unwrap();
        assert_eq!(
            hex::encode(d.digest()),
            "a7189f3fe584c49845bc0f006b898207ddf2d1c90d384d533fe79ae1983cb924"
        );
        let allowed = escrow.replace("allowed = false", "allowed = true");
        let d = parse_descriptor("escrow", &allowed, b"m").unwrap();
        assert_eq!(
            hex::encode(d.digest()),
            "fd74043603902ce0fca038b129a1f04d7038e808e0a0dee27750375c006e2e32"
        );
        let d = parse_descriptor("vault", super::trust::GATED, b"m").unwrap();
        assert_eq!(d.policy.migration.trust, MigrationTrust::NoFall);
        assert_eq!(
            hex::encode(d.digest()),
            "c49c0a132f630b58fd179703cd061660c04cc8113a60ddfc226d0b649debfa4c"
        );
        // The new spelling of the same rule is the same descriptor.
        let respelled = super::trust::GATED.replace("no_fall_on_migration = true\n", "")
            + "[policy.migration]\ntrust = \"no-fall\"\n";
        assert_eq!(
            parse_descriptor("vault", &respelled, b"m")
                .unwrap()
                .digest(),
            d.digest()
        );
        // Both spellings, agreeing: fine. Disagreeing: an error naming the new key.
        let both = super::trust::GATED.to_string() + "[policy.migration]\ntrust = \"no-fall\"\n";
        assert_eq!(parse_descriptor("vault", &both, b"m").unwrap(), d);
        let e = parse_descriptor(
            "vault",
            &(super::trust::GATED.to_string() + "[policy.migration]\ntrust = \"any\"\n"),
            b"m",
        )
        .unwrap_err();
        assert_eq!(e.field, "policy.migration.trust");
        assert!(e.expected.contains("no_fall_on_migration"), "{e}");
    }

    #[test]
    fn not_allowed_keeps_and_encodes_the_other_keys() {
        let text = full().replace("allowed = true", "allowed = false");
        let d = parse_descriptor("m", &text, b"module").unwrap();
        assert!(!d.policy.migration.allowed);
        assert_eq!(d.policy.migration.platforms.len(), 3);
        assert_eq!(Descriptor::decode(&d.encode()).unwrap(), d);
        // ...and they are still validated.
        let e = parse_descriptor("m", &text.replace("\"0.1.0\"", "\"latest\""), b"m").unwrap_err();
        assert_eq!(e.field, "policy.migration.min_runtime_version");
    }

    #[test]
    fn bad_sections_name_the_dotted_path() {
        let short = "ab".repeat(47);
        let cases: Vec<(String, &str)> =
            vec![
            ("bogus = 1".into(), "policy.migration.bogus"),
            ("platforms = [\"sgx\"]".into(), "policy.migration.platforms"),
            ("platforms = [\"az-snp-vtpm\"]".into(), "policy.migration.platforms"),
            ("platforms = []".into(), "policy.migration.platforms"),
            ("platforms = [\"snp\", \"snp\"]".into(), "policy.migration.platforms"),
            ("platforms = [\"software\"]".into(), "policy.migration.allow_software"),
            ("allow_software = true".into(), "policy.migration.allow_software"),
            (format!("measurements = [\"{short}\"]"), "policy.migration.measurements[0]"),
            (format!("measurements = [\"{M48}\", \"zz\"]"), "policy.migration.measurements[1]"),
            (format!("measurements = [\"{M48}\", \"{M48}\"]"), "policy.migration.measurements[1]"),
            ("measurements = []".into(), "policy.migration.measurements"),
            ("min_tcb = {}".into(), "policy.migration.min_tcb"),
            (
                "min_tcb = { tdx = { accepted_tcb_status = [\"Fine\"] } }".into(),
                "policy.migration.min_tcb.tdx.accepted_tcb_status",
            ),
            (
                "min_tcb = { tdx = { accepted_tcb_status = [] } }".into(),
                "policy.migration.min_tcb.tdx.accepted_tcb_status",
            ),
            (
                "min_tcb = { snp = { bootloader = 3, tee = 0, snp = 8 } }".into(),
                "policy.migration.min_tcb",
            ),
            (
                "min_tcb = { snp = { bootloader = 300, tee = 0, snp = 8, microcode = 1 } }".into(),
                "policy.migration.min_tcb",
            ),
            (
                "min_tcb = { snp = { bootloader = 3, tee = 0, snp = 8, microcode = 1, svn = 2 } }"
                    .into(),
                "policy.migration.min_tcb",
            ),
            ("min_tcb = { sgx = {} }".into(), "policy.migration.min_tcb"),
            ("min_runtime_version = \"1.2\"".into(), "policy.migration.min_runtime_version"),
            ("min_runtime_version = \"1.2.3-rc1\"".into(), "policy.migration.min_runtime_version"),
            ("trust = \"sometimes\"".into(), "policy.migration.trust"),
            ("[policy.migration.claims]\nRegion = \"eu\"".into(), "policy.migration.claims.Region"),
            ("[policy.migration.claims]\nregion = \"\"".into(), "policy.migration.claims.region"),
            ("[policy.migration.claims]\nregion = 3".into(), "policy.migration.claims.region"),
            ("allowed = \"yes\"".into(), "policy.migration.allowed"),
        ];
        for (section, field) in cases {
            let e = parse_descriptor("obj.toml", &mig(&section), b"m").unwrap_err();
            assert!(
                e.field.starts_with(field),
                "{section}: field {:?}, wanted {field}: {e}",
                e.field
            );
            assert_eq!(e.file, "obj.toml");
        }
        let many: String = (0..33).map(|i| format!("c{i} = \"v\"\n")).collect();
        let e = parse_descriptor(
            "m",
            &mig(&format!("[policy.migration.claims]\n{many}")),
            b"m",
        )
        .unwrap_err();
        assert_eq!(e.field, "policy.migration.claims");
    }

    /// Re-encodes `bytes` (a canonical descriptor) with `policy.migration` edited: the CBOR
    /// stays canonical at the byte level, the descriptor does not.
    fn edit(bytes: &[u8], f: impl FnOnce(&mut Vec<(Cbor, Cbor)>)) -> Vec<u8> {
        let mut v = canonical::decode(bytes).unwrap();
        let pol = match &mut v {
            Cbor::Map(top) => top
                .iter_mut()
                .find(|(k, _)| k == &Cbor::Text("policy".into()))
                .map(|(_, v)| v)
                .unwrap(),
            _ => panic!(),
        };
        let mg = match pol {
            Cbor::Map(p) => p
                .iter_mut()
                .find(|(k, _)| k == &Cbor::Text("migration".into()))
                .map(|(_, v)| v)
                .unwrap(),
            _ => panic!(),
        };
        match mg {
            Cbor::Map(m) => f(m),
            _ => panic!(),
        }
        canonical::encode(&v).unwrap()
    }

    fn set(m: &mut Vec<(Cbor, Cbor)>, key: &str, value: Cbor) {
        m.retain(|(k, _)| k != &Cbor::Text(key.into()));
        m.push((Cbor::Text(key.into()), value));
    }

    fn get_mut<'a>(m: &'a mut [(Cbor, Cbor)], key: &str) -> &'a mut Cbor {
        m.iter_mut()
            .find(|(k, _)| k == &Cbor::Text(key.into()))
            .map(|(_, v)| v)
            .unwrap()
    }

    #[test]
    fn decode_refuses_non_canonical_migration_sections() {
        let d = parse_descriptor("m", &full(), b"module").unwrap();
        let bytes = d.encode();
        // The edit helper itself is faithful.
        assert_eq!(edit(&bytes, |_| {}), bytes);
        fn t(s: &str) -> Cbor {
            Cbor::Text(s.into())
        }
        type Edit = Box<dyn FnOnce(&mut Vec<(Cbor, Cbor)>)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "explicit default",
                Box::new(|m| set(m, "allow_debug", Cbor::Bool(false))),
            ),
            (
                "unsorted platforms",
                Box::new(|m| {
                    if let Cbor::Array(a) = get_mut(m, "platforms") {
                        a.reverse();
                    }
                }),
            ),
            (
                "duplicate platform",
                Box::new(|m| {
                    if let Cbor::Array(a) = get_mut(m, "platforms") {
                        a.push(t("tdx"));
                    }
                }),
            ),
            (
                "empty platforms",
                Box::new(|m| set(m, "platforms", Cbor::Array(vec![]))),
            ),
            (
                "unsorted measurements",
                Box::new(|m| {
                    if let Cbor::Array(a) = get_mut(m, "measurements") {
                        a.reverse();
                    }
                }),
            ),
            (
                "short measurement",
                Box::new(|m| {
                    set(
                        m,
                        "measurements",
                        Cbor::Array(vec![Cbor::Bytes(vec![1; 47])]),
                    )
                }),
            ),
            (
                "measurement as text",
                Box::new(|m| set(m, "measurements", Cbor::Array(vec![t(&"00".repeat(48))]))),
            ),
            (
                "unknown key",
                Box::new(|m| set(m, "extra", Cbor::Bool(true))),
            ),
            (
                "trust spelled here",
                Box::new(|m| set(m, "trust", t("no-fall"))),
            ),
            (
                "empty claims",
                Box::new(|m| set(m, "claims", Cbor::Map(vec![]))),
            ),
            (
                "claim not text",
                Box::new(|m| {
                    set(
                        m,
                        "claims",
                        Cbor::Map(vec![(t("region"), Cbor::Integer(1.into()))]),
                    )
                }),
            ),
            (
                "version with zeros",
                Box::new(|m| set(m, "min_runtime_version", t("00.1.0"))),
            ),
            (
                "version as number",
                Box::new(|m| set(m, "min_runtime_version", Cbor::Integer(1.into()))),
            ),
            (
                "empty min_tcb",
                Box::new(|m| set(m, "min_tcb", Cbor::Map(vec![]))),
            ),
            (
                "tcb out of range",
                Box::new(|m| {
                    if let Cbor::Map(tcb) = get_mut(m, "min_tcb") {
                        if let Cbor::Map(snp) = get_mut(tcb, "snp") {
                            set(snp, "tee", Cbor::Integer(256.into()));
                        }
                    }
                }),
            ),
            (
                "unsorted tdx statuses",
                Box::new(|m| {
                    if let Cbor::Map(tcb) = get_mut(m, "min_tcb") {
                        if let Cbor::Map(tdx) = get_mut(tcb, "tdx") {
                            if let Cbor::Array(a) = get_mut(tdx, "accepted_tcb_status") {
                                a.reverse();
                            }
                        }
                    }
                }),
            ),
            (
                "software without allow_software",
                Box::new(|m| m.retain(|(k, _)| k != &Cbor::Text("allow_software".into()))),
            ),
        ];
        for (name, f) in cases {
            let b = edit(&bytes, f);
            assert_ne!(b, bytes, "{name}: the edit changed nothing");
            let e = Descriptor::decode(&b).unwrap_err();
            assert_eq!(e.file, "(encoded descriptor)", "{name}");
        }
        // A measurement of the wrong length is named precisely.
        let b = edit(&bytes, |m| {
            set(
                m,
                "measurements",
                Cbor::Array(vec![Cbor::Bytes(vec![1; 47])]),
            )
        });
        assert_eq!(
            Descriptor::decode(&b).unwrap_err().field,
            "policy.migration.measurements[0]"
        );
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
    let m = &d.policy.migration;
    assert!(m.allowed && !m.allow_software && !m.allow_debug);
    assert_eq!(m.platforms.len(), 4);
    assert_eq!(m.measurements.len(), 1);
    assert!(m.min_tcb.snp.is_some() && m.min_tcb.tdx.is_some());
    assert_eq!(m.trust, sojourn_policy::MigrationTrust::NoFall);
    assert_eq!(m.claims.len(), 1);
}
