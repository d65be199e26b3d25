//! Median verification time per platform, certificates and collateral already loaded
//! (TDX collateral pre-parsed; SNP certificates as DER in the evidence; verifiers built
//! once). Run: `cargo bench -p sojourn-attestation --bench verify`.
//! Targets from issue 3: SNP ≤ 2 ms, TDX ≤ 5 ms.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use sojourn_attestation::azure::AzureSnpVerifier;
use sojourn_attestation::danger::software::{SoftwareAttester, SoftwareKey, SoftwareVerifier};
use sojourn_attestation::snp::SnpVerifier;
use sojourn_attestation::tdx::TdxVerifier;
use sojourn_attestation::{
    certs_from_pem_bundle, Attester, Evidence, Platform, ReferenceValues, Timestamp, Verifier,
};

fn vector(rel: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/vectors/{rel}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn median(mut f: impl FnMut(), iters: usize) -> (Duration, Duration) {
    for _ in 0..5 {
        f();
    }
    let mut times: Vec<Duration> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    (times[times.len() / 2], times[times.len() * 95 / 100])
}

fn main() {
    let rv = ReferenceValues::default();
    let iters = 200;
    let mut rows: Vec<(&str, &str, Duration, Duration, &str)> = Vec::new();

    let snp = SnpVerifier::new().unwrap();
    let ev = Evidence::new(Platform::Snp, vector("snp/milan_a_report.bin"))
        .with_certs([vector("snp/milan_a_vcek.der")]);
    let rd = ev.report[0x50..0x90].to_vec();
    let now = Timestamp::from_unix_secs(1_748_736_000);
    let (m, p) = median(
        || {
            snp.verify(&ev, &rd, &rv, now).unwrap();
        },
        iters,
    );
    rows.push(("snp", "milan_a_report.bin", m, p, "≤ 2 ms"));

    let ev = Evidence::new(Platform::Snp, vector("snp/genoa_report.bin"))
        .with_certs(certs_from_pem_bundle(&vector("snp/genoa_vcek.pem")).unwrap());
    let rd = ev.report[0x50..0x90].to_vec();
    let (m, p) = median(
        || {
            snp.verify(&ev, &rd, &rv, now).unwrap();
        },
        iters,
    );
    rows.push(("snp", "genoa_report.bin", m, p, "≤ 2 ms"));

    let tdx = TdxVerifier::new().unwrap();
    let ev = Evidence::new(Platform::Tdx, vector("tdx/v4_a_quote.bin"));
    let coll = TdxVerifier::parse_collateral(&vector("tdx/v4_a_collateral.json")).unwrap();
    let rd = ev.claimed_report_data().unwrap();
    let t = Timestamp::from_unix_secs(1_751_328_000);
    let (m, p) = median(
        || {
            tdx.verify_with_collateral(&ev, &coll, &rd, &rv, t).unwrap();
        },
        iters,
    );
    rows.push(("tdx", "v4_a_quote.bin", m, p, "≤ 5 ms"));

    let ev = Evidence::new(Platform::Tdx, vector("tdx/v5_b_quote.bin"));
    let coll =
        TdxVerifier::parse_collateral(&vector("tdx/fmspc_90c06f000000_collateral.json")).unwrap();
    let rd = ev.claimed_report_data().unwrap();
    let t = Timestamp::from_unix_secs(1_772_323_200);
    let (m, p) = median(
        || {
            tdx.verify_with_collateral(&ev, &coll, &rd, &rv, t).unwrap();
        },
        iters,
    );
    rows.push(("tdx", "v5_b_quote.bin", m, p, "≤ 5 ms"));

    let az = AzureSnpVerifier::new().unwrap();
    let ev = Evidence::new(Platform::AzureSnpVtpm, vector("azure/snp_hcl_report.bin"))
        .with_certs(certs_from_pem_bundle(&vector("azure/snp_vcek_ask_ark.pem")).unwrap())
        .with_tpm_quote(vector("azure/snp_tpm_quote.bin"));
    let (m, p) = median(
        || {
            az.verify(&ev, b"challenge", &rv, now).unwrap();
        },
        iters,
    );
    rows.push(("az-snp", "snp_hcl_report.bin + quote", m, p, "-"));

    let sw = SoftwareVerifier::new().unwrap();
    let ev = SoftwareAttester::new(SoftwareKey::from_seed([7; 32]).unwrap())
        .attest(&[1; 64])
        .unwrap();
    let rv_sw = ReferenceValues::default().allowing_software();
    let (m, p) = median(
        || {
            sw.verify(&ev, &[1; 64], &rv_sw, now).unwrap();
        },
        iters,
    );
    rows.push(("software", "Ed25519 report", m, p, "-"));

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("machine: {cpu}, {cores} cores; {iters} iterations each, single thread");
    println!("| platform | sample | median | p95 | target |");
    println!("|---|---|---|---|---|");
    for (plat, sample, m, p, target) in rows {
        println!(
            "| {plat} | {sample} | {:.3} ms | {:.3} ms | {target} |",
            m.as_secs_f64() * 1e3,
            p.as_secs_f64() * 1e3
        );
    }
}
