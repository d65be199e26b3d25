//! The software key file and the key type.

use std::os::unix::fs::PermissionsExt;

use sojourn_store::{
    SealingKey, SealingKeySource, SnpDerivedKey, SoftwareKeyFile, Store, StoreError,
};

use crate::common::*;

#[test]
fn key_file_is_created_0600_and_reloads_the_same_key() {
    let dir = tempdir();
    let path = dir.path().join("sealing.key");
    let src = SoftwareKeyFile::new(&path);
    let k1 = src.load().unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.len(), 65);
    assert!(text.ends_with('\n'));
    assert!(text[..64].bytes().all(|b| b.is_ascii_hexdigit()));
    // The same key comes back: a store sealed with the first load opens with the second.
    let data = tempdir();
    drop(Store::open(data.path(), k1).unwrap());
    let k2 = src.load().unwrap();
    Store::open(data.path(), k2).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert!(src.describe().contains("INSECURE"));
}

#[test]
fn key_file_readable_by_others_is_refused() {
    let dir = tempdir();
    let path = dir.path().join("sealing.key");
    SoftwareKeyFile::new(&path).load().unwrap();
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        match SoftwareKeyFile::new(&path).load() {
            Err(e @ StoreError::KeyFilePermissions { .. }) => {
                assert!(e.to_string().contains("chmod 600"), "{e}");
            }
            other => panic!("mode {mode:o}: {other:?}"),
        }
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    SoftwareKeyFile::new(&path).load().unwrap();
}

#[test]
fn malformed_key_files_are_refused() {
    let dir = tempdir();
    let good = "0123456789abcdef".repeat(4);
    let cases: Vec<(String, bool)> = vec![
        (good.clone(), true),
        (format!("{good}\n"), true),
        (good.to_uppercase(), true),
        (String::new(), false),
        (good[..63].to_string(), false),
        (format!("{good}0"), false),
        (format!("{good}\n\n"), false),
        (format!("{good}\r\n"), false),
        (format!(" {}", &good[1..]), false),
        (format!("{}g", &good[..63]), false),
    ];
    for (i, (content, ok)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("k{i}"));
        std::fs::write(&path, &content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let r = SoftwareKeyFile::new(&path).load();
        if ok {
            assert!(r.is_ok(), "{content:?}: {r:?}");
        } else {
            assert!(
                matches!(r, Err(StoreError::KeyFileMalformed { .. })),
                "{content:?}: {r:?}"
            );
        }
        // A refused file is left as it was.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
    }
}

#[test]
fn sealing_key_debug_is_redacted() {
    let k = SealingKey::from_bytes([0xAB; 32]);
    assert_eq!(format!("{k:?}"), "SealingKey(<redacted>)");
    assert!(!format!("{:?}", key(0xAB)).contains("ab"));
}

#[cfg(not(feature = "snp"))]
#[test]
fn snp_key_without_the_feature_is_unavailable() {
    match SnpDerivedKey::new().load() {
        Err(StoreError::KeyUnavailable(why)) => assert!(why.contains("`snp` feature"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[cfg(feature = "snp")]
#[test]
fn snp_key_without_the_device_is_unavailable() {
    if std::path::Path::new("/dev/sev-guest").exists() {
        return; // Real hardware: not this test's business.
    }
    assert!(matches!(
        SnpDerivedKey::new().load(),
        Err(StoreError::KeyUnavailable(_))
    ));
}
