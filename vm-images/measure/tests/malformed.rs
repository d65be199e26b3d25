//! Malformed inputs give typed errors, never panics: every truncation and many bit flips of
//! a PE/UKI and of an OVMF image, plus arbitrary bytes (proptest).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use proptest::prelude::*;
use sha2::Sha256;
use sojourn_measure::ovmf::Ovmf;
use sojourn_measure::pe::PeImage;
use sojourn_measure::snp::SnpLaunch;
use sojourn_measure::tcg::gpt_event_data;
use sojourn_measure::uki::{BootModel, Uki};
use sojourn_measure::MeasureError;

/// The last 8 KiB of the synthetic firmware: the footer table and the ASEV block are there
/// (the metadata names GPAs, not file offsets), and two pages hash fast in debug builds.
fn fw() -> Vec<u8> {
    let full = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/snp/fw.bin"
    ))
    .unwrap();
    let small = full[full.len() - 8192..].to_vec();
    assert!(SnpLaunch::new(&small, 2, 0xa00f11)
        .direct_boot(b"k", None, "")
        .digest()
        .is_ok());
    small
}

/// Everything a caller can do with the bytes; errors are fine, panics are not.
fn exercise_pe(bytes: &[u8]) {
    exercise_pe_headers(bytes);
    if let Ok(uki) = Uki::parse(bytes) {
        let _ = uki.boot_events(&BootModel::debian12());
        let _ = uki.cmdline();
    }
}

/// Parsing and Authenticode only (cheap enough to run on every header bit flip).
fn exercise_pe_headers(bytes: &[u8]) {
    if let Ok(pe) = PeImage::parse(bytes) {
        let _ = pe.authenticode::<Sha256>();
        for s in pe.sections() {
            let _ = pe.section_data(s).len();
        }
    }
}

fn exercise_ovmf(bytes: &[u8]) {
    let _ = Ovmf::parse(bytes).map(|o| (o.sev_es_reset_eip(), o.sev_hashes_table_gpa()));
    let _ = SnpLaunch::new(bytes, 2, 0xa00f11)
        .direct_boot(b"k", Some(b"i"), "c")
        .digest();
}

#[test]
fn truncated_uki_is_a_typed_error() {
    let (uki, _) = common::test_uki();
    for len in 0..uki.len() {
        let t = &uki[..len];
        if len < 0x400 || len % 61 == 0 {
            exercise_pe(t);
        }
        // Cut before the end of the last section's raw data: a PE error, never Ok.
        if len < uki.len() - 0x200 {
            let e = Uki::parse(t).unwrap_err();
            assert!(
                matches!(e, MeasureError::Pe(_) | MeasureError::Uki(_)),
                "len {len}: {e}"
            );
        }
    }
}

#[test]
fn bit_flipped_uki_never_panics() {
    let (uki, _) = common::test_uki();
    // Every bit of the headers and section table (parse + Authenticode); the whole
    // measurement on one bit of every 509th byte.
    for i in 0..0x200 {
        for bit in 0..8 {
            let mut m = uki.clone();
            m[i] ^= 1 << bit;
            exercise_pe_headers(&m);
        }
    }
    for i in (0..uki.len()).step_by(509) {
        let mut m = uki.clone();
        m[i] ^= 1 << (i % 8);
        exercise_pe(&m);
    }
}

#[test]
fn truncated_or_garbage_ovmf_is_a_typed_error() {
    let fw = fw();
    for len in (0..fw.len()).step_by(3).chain(fw.len() - 64..fw.len()) {
        exercise_ovmf(&fw[..len]);
    }
    // The footer and metadata regions, every bit.
    for i in (fw.len() - 0x1000..fw.len() - 0x1000 + 80).chain(fw.len() - 160..fw.len()) {
        for bit in 0..8 {
            let mut m = fw.clone();
            m[i] ^= 1 << bit;
            exercise_ovmf(&m);
        }
    }
    let garbage = common::stream("garbage", 64 * 1024);
    let e = SnpLaunch::new(&garbage, 1, 1).digest();
    assert!(matches!(e, Err(MeasureError::OvmfUnsupported(_))), "{e:?}");
    assert!(matches!(
        Ovmf::parse(&[0u8; 10]),
        Err(MeasureError::Ovmf(_))
    ));
}

#[test]
fn kernel_that_is_not_pe_is_a_uki_error() {
    let uki = common::build_pe(&[(".linux", b"not a PE".to_vec())], &[], None);
    assert!(matches!(Uki::parse(&uki), Err(MeasureError::Uki(_))));
    let no_linux = common::build_pe(&[(".text", vec![1, 2, 3])], &[], None);
    assert!(matches!(Uki::parse(&no_linux), Err(MeasureError::Uki(_))));
}

#[test]
fn huge_virtual_size_is_refused() {
    let mut pe = common::build_pe(&[(".text", vec![1; 10])], &[], None);
    let s = 0x58 + 240;
    pe[s + 8..s + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(PeImage::parse(&pe), Err(MeasureError::Pe(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        exercise_pe(&data);
        exercise_ovmf(&data);
        let _ = gpt_event_data(&data, 512);
    }

    #[test]
    fn pe_with_random_header_tail(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (uki, _) = common::test_uki();
        let mut m = uki[..0x40].to_vec();
        m.extend_from_slice(&tail);
        exercise_pe(&m);
    }

    #[test]
    fn ovmf_with_random_footer(footer in proptest::collection::vec(any::<u8>(), 160)) {
        let mut fw = fw();
        let n = fw.len();
        fw[n - 160..].copy_from_slice(&footer);
        exercise_ovmf(&fw);
    }
}
