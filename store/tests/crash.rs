//! Crash consistency: a child process commits in a loop and is killed (SIGKILL) at a
//! random moment; every commit it acknowledged must be there after reopen, and the store
//! must open (redb's recovery runs, verification passes).
//!
//! A binary of its own: a child forked while another test closes and reopens a store
//! would hold that store's file locks until it execs, and make the reopen fail as
//! `Locked`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "all/common.rs"]
#[allow(dead_code)]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sojourn_store::{CommitBatch, Op};

use crate::common::*;

const DIR_ENV: &str = "SOJOURN_STORE_CRASH_DIR";

/// The child: runs only when spawned by `killed_mid_commit_loses_no_acknowledged_commit`.
#[test]
#[ignore = "run as a child process by killed_mid_commit_loses_no_acknowledged_commit"]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let s = open(std::path::Path::new(&dir));
    let start = s
        .load(&id(1))
        .unwrap()
        .and_then(|o| o.head)
        .map_or(0, |h| h.seq);
    if start == 0 {
        commit(
            &s,
            vec![Op::PutImage {
                id: id(1),
                image: image("crash"),
            }],
        );
    }
    for seq in start + 1.. {
        // Every third commit writes a new memory image (a file) first.
        let memory = (seq % 3 == 0).then(|| Op::PutMemory {
            id: id(1),
            image: std::sync::Arc::new(image_of(seq)),
        });
        let ops = memory.into_iter().chain([
            Op::PutHead {
                id: id(1),
                head: head(seq, 300),
            },
            Op::PutChunks {
                id: id(1),
                chunks: vec![((seq % 8) as u32, vec![seq as u8; 4096])],
            },
            Op::AppendLineage {
                id: id(1),
                segment: seq - 1,
                bytes: seq.to_be_bytes().to_vec(),
            },
        ]);
        s.commit(&CommitBatch { ops: ops.collect() }).unwrap();
        println!("ack {seq}");
    }
}

/// The memory image the child writes at `seq` (a multiple of 3): one to three segments.
fn image_of(seq: u64) -> Vec<u8> {
    vec![seq as u8; sojourn_store::MEMORY_SEGMENT * (1 + (seq / 3 % 3) as usize) - 4096]
}

#[test]
fn killed_mid_commit_loses_no_acknowledged_commit() {
    let dir = tempdir();
    let exe = std::env::current_exe().unwrap();
    let mut acked = 0u64;
    for round in 0..3u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Let it run for a while past some acknowledgements, then kill it wherever it is.
        let until = Instant::now() + Duration::from_millis(150 + 70 * round);
        let mut seen = 0;
        while let Some(Ok(line)) = lines.next() {
            if let Some(n) = line.strip_prefix("ack ") {
                acked = n.parse().unwrap();
                seen += 1;
            }
            if seen >= 5 && Instant::now() >= until {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(seen >= 5, "the child acknowledged only {seen} commits");

        // The kill left the file as a crash does: redb wants recovery before use.
        let ro = sojourn_store::raw::redb::ReadOnlyDatabase::open(
            dir.path().join(sojourn_store::raw::STORE_FILE),
        );
        assert!(
            matches!(
                ro,
                Err(sojourn_store::raw::redb::DatabaseError::RepairAborted)
            ),
            "{:?}",
            ro.err()
        );

        let s = open(dir.path());
        let o = s.load(&id(1)).unwrap().unwrap();
        let seq = o.head.unwrap().seq;
        assert!(seq >= acked, "acknowledged head {acked} lost (found {seq})");
        assert_eq!(o.lineage_segments, seq);
        let lineage = s.lineage(&id(1)).unwrap();
        assert_eq!(lineage.len() as u64, 8 * seq);
        assert_eq!(&lineage[lineage.len() - 8..], &seq.to_be_bytes());
        // The image of the last commit that wrote one, and exactly its file.
        let last_image = seq / 3 * 3;
        if last_image > 0 {
            assert_eq!(o.memory, image_of(last_image));
            assert_eq!(
                image_files(dir.path()).len(),
                1,
                "{:?}",
                image_files(dir.path())
            );
        }
    }
}
