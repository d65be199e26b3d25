//! Commit throughput of `sojourn-store`: `cargo bench -p sojourn-store --bench commit`.
//!
//! Each transition is what the host writes per object step: a 300-byte head, two 4 KiB
//! memory chunks and a 600-byte lineage segment (4 records). Batches of 1, 64 and 512
//! transitions (over 512 objects) are committed, each commit one fsync'ed transaction
//! plus the high-water-mark fdatasync. The store lives in a temporary directory under
//! `SOJOURN_BENCH_DIR` (default: the system temp dir). `SOJOURN_BENCH_COMMITS=N` runs N
//! commits per batch size (defaults: 200, 30, 8). Under `cargo test` it runs 2 commits per
//! size as a smoke test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use sojourn_store::{CommitBatch, HeadRecord, ObjectImage, ObjectKey, Op, SealingKey, Store};

const OBJECTS: usize = 512;

fn id(n: usize) -> ObjectKey {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&(n as u64).to_be_bytes());
    k
}

struct Objects {
    seq: Vec<u64>,
    segments: Vec<u64>,
    next: usize,
}

impl Objects {
    fn transition(&mut self, ops: &mut Vec<Op>) {
        let n = self.next;
        self.next = (self.next + 1) % OBJECTS;
        self.seq[n] += 1;
        let seq = self.seq[n];
        let fill = seq as u8;
        ops.push(Op::PutHead {
            id: id(n),
            head: HeadRecord {
                seq,
                bytes: vec![fill; 300],
            },
        });
        let chunk = ((seq * 2) % 64) as u32;
        ops.push(Op::PutChunks {
            id: id(n),
            chunks: vec![(chunk, vec![fill; 4096]), (chunk + 1, vec![!fill; 4096])],
        });
        ops.push(Op::AppendLineage {
            id: id(n),
            segment: self.segments[n],
            bytes: vec![fill; 600],
        });
        self.segments[n] += 1;
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let override_commits: Option<u64> = std::env::var("SOJOURN_BENCH_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok());
    let parent = std::env::var_os("SOJOURN_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&parent).unwrap();
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).unwrap();
    let store = Store::open(dir.path(), SealingKey::from_bytes(key)).unwrap();
    store
        .commit(&CommitBatch {
            ops: (0..OBJECTS)
                .map(|n| Op::PutImage {
                    id: id(n),
                    image: ObjectImage {
                        name: format!("object-{n}"),
                        descriptor: vec![1; 200],
                        module: vec![2; 2000],
                    },
                })
                .collect(),
        })
        .unwrap();
    let mut objects = Objects {
        seq: vec![0; OBJECTS],
        segments: vec![0; OBJECTS],
        next: 0,
    };

    if bench {
        println!(
            "sojourn-store commit bench ({}; transition = head 300 B + 2 chunks 4 KiB + lineage 600 B)",
            dir.path().display()
        );
        println!(
            "{:>6} {:>8} {:>10} {:>11} {:>13} {:>11} {:>9} {:>10} {:>10}",
            "batch",
            "commits",
            "commits/s",
            "records/s",
            "transitions/s",
            "sealed MB/s",
            "secs",
            "p50 ms",
            "max ms"
        );
    }
    for (batch, default_commits) in [(1usize, 200u64), (64, 30), (512, 8)] {
        let commits = if bench {
            override_commits.unwrap_or(default_commits)
        } else {
            2
        };
        let before = store.stats();
        let mut total = Duration::ZERO;
        let mut lat = Vec::with_capacity(commits as usize);
        for _ in 0..commits {
            let mut ops = Vec::with_capacity(batch * 3);
            for _ in 0..batch {
                objects.transition(&mut ops);
            }
            let b = CommitBatch { ops };
            let t = Instant::now();
            store.commit(&b).unwrap();
            let d = t.elapsed();
            total += d;
            lat.push(d);
        }
        let after = store.stats();
        let records = after.records_written - before.records_written;
        let bytes = after.bytes_written - before.bytes_written;
        assert_eq!(records, commits * batch as u64 * 4);
        lat.sort();
        let secs = total.as_secs_f64();
        if bench {
            println!(
                "{:>6} {:>8} {:>10.1} {:>11.0} {:>13.0} {:>11.1} {:>9.2} {:>10.2} {:>10.2}",
                batch,
                commits,
                commits as f64 / secs,
                records as f64 / secs,
                (commits * batch as u64) as f64 / secs,
                bytes as f64 / secs / 1e6,
                secs,
                lat[lat.len() / 2].as_secs_f64() * 1e3,
                lat[lat.len() - 1].as_secs_f64() * 1e3,
            );
        }
    }
    // Reopen: verification of the whole store (redb integrity check, every record
    // unsealed, root, high-water mark), then loading every object.
    let size = std::fs::metadata(store.path()).unwrap().len();
    drop(store);
    let t = Instant::now();
    let store = Store::open(dir.path(), SealingKey::from_bytes(key)).unwrap();
    let open = t.elapsed();
    let t = Instant::now();
    let all = store.load_all().unwrap();
    let load = t.elapsed();
    assert_eq!(all.len(), OBJECTS);
    if bench {
        println!(
            "reopen of a {:.1} MB store: open (verify) {:.2} s, load_all {:.2} s",
            size as f64 / 1e6,
            open.as_secs_f64(),
            load.as_secs_f64()
        );
    }
}
