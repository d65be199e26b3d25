//! Keyed images (format 4): a memory image whose file holds ciphertext the store did not
//! seal (an arriving migration package), opened with the key its sealed record keeps.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sojourn_store::{ImageRun, KeyedImage, Op, StoreError, Table, CHUNK_SIZE};

use crate::common::*;
use crate::tamper::expect_corrupt_at;

const SKIP: usize = 10;
const SEGMENT: u32 = 1 << 16;
/// Plaintext: a header of 7 bytes, then `CHUNKS` chunks each preceded by 3 bytes (a stride
/// of 4099), then a tail: the shape of a snapshot's chunk array in a package.
const CHUNKS: usize = 40;
const STRIDE: usize = CHUNK_SIZE + 3;
const MEMORY_LEN: usize = 64 * CHUNK_SIZE;
/// Where the chunks go in memory: chunks 0..30 at pages 2.., the rest at pages 40...
const SPLIT: usize = 30;

fn plaintext() -> Vec<u8> {
    let mut p = vec![0xEEu8; 7];
    for c in 0..CHUNKS {
        p.extend_from_slice(&[0x82, 0x19, c as u8]);
        p.extend((0..CHUNK_SIZE).map(|i| (c as u8).wrapping_mul(31).wrapping_add(i as u8)));
    }
    p.extend_from_slice(b"tail");
    p
}

fn runs() -> Vec<ImageRun> {
    vec![
        ImageRun {
            plain: 7 + 3,
            stride: STRIDE as u64,
            memory: 2 * CHUNK_SIZE as u64,
            count: SPLIT as u32,
        },
        ImageRun {
            plain: (7 + SPLIT * STRIDE + 3) as u64,
            stride: STRIDE as u64,
            memory: 40 * CHUNK_SIZE as u64,
            count: (CHUNKS - SPLIT) as u32,
        },
    ]
}

/// The memory `runs` lay out of `plaintext`.
fn expected_memory() -> Vec<u8> {
    let p = plaintext();
    let mut m = vec![0u8; MEMORY_LEN];
    for c in 0..CHUNKS {
        let page = if c < SPLIT { 2 + c } else { 40 + c - SPLIT };
        let from = 7 + c * STRIDE + 3;
        m[page * CHUNK_SIZE..(page + 1) * CHUNK_SIZE].copy_from_slice(&p[from..from + CHUNK_SIZE]);
    }
    m
}

/// The file: SKIP clear bytes, the segments sealed in place, then their tags (STREAM).
fn sealed_file(key: &[u8; 32], aad: &[u8]) -> Vec<u8> {
    sealed(key, aad, plaintext())
}

fn sealed(key: &[u8; 32], aad: &[u8], mut text: Vec<u8>) -> Vec<u8> {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let n = text.len().div_ceil(SEGMENT as usize);
    let mut tags = Vec::new();
    for (i, seg) in text.chunks_mut(SEGMENT as usize).enumerate() {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        if i + 1 == n {
            nonce[8..].copy_from_slice(&1u32.to_be_bytes());
        }
        let tag = k
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), seg)
            .unwrap();
        tags.extend_from_slice(tag.as_ref());
    }
    let mut file = vec![0x55u8; SKIP];
    file.extend_from_slice(&text);
    file.extend_from_slice(&tags);
    file
}

fn layout(key: [u8; 32], aad: &[u8]) -> KeyedImage {
    KeyedImage {
        key: zeroize::Zeroizing::new(key),
        aad: aad.to_vec(),
        skip: SKIP as u64,
        plaintext_len: plaintext().len() as u64,
        segment: SEGMENT,
        runs: runs(),
    }
}

/// Object 1 of a populated store gets the keyed image, written in pieces of `piece` bytes.
fn keyed_store(dir: &std::path::Path, piece: usize) {
    populated(dir);
    let s = open(dir);
    let file = sealed_file(&[7; 32], b"binding");
    let w = s.stage_keyed_image(&id(1)).unwrap();
    // Pieces written out of order, from two threads: each at its offset.
    let pieces: Vec<(usize, &[u8])> = file
        .chunks(piece)
        .enumerate()
        .map(|(k, p)| (k * piece, p))
        .rev()
        .collect();
    let (odd, even): (Vec<_>, Vec<_>) = pieces.iter().partition(|(at, _)| (at / piece) % 2 == 1);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for (at, p) in &odd {
                w.write_at(*at as u64, p).unwrap();
            }
        });
        for (at, p) in &even {
            w.write_at(*at as u64, p).unwrap();
        }
    });
    assert_eq!(w.written(), file.len() as u64);
    let staged = w
        .finish(MEMORY_LEN as u64, layout([7; 32], b"binding"))
        .unwrap();
    assert_eq!(staged.len(), MEMORY_LEN as u64);
    commit(
        &s,
        vec![Op::PutStagedMemory {
            id: id(1),
            memory: staged,
        }],
    );
    assert_eq!(s.load(&id(1)).unwrap().unwrap().memory, expected_memory());
    assert_eq!(s.stats().keyed_images, 1);
    assert_eq!(s.stats().staged_images, 1);
}

#[test]
fn a_keyed_image_reads_back_as_the_memory_its_runs_lay_out() {
    for piece in [1000, 1 << 20, 10 << 20] {
        let dir = tempdir();
        keyed_store(dir.path(), piece);
        // Read again after a reopen (which authenticates every segment).
        let s = open(dir.path());
        let o = s.load(&id(1)).unwrap().unwrap();
        assert_eq!(o.memory, expected_memory());
        assert!(o.chunks.is_empty(), "the image replaced the chunks");
        // The file holds no plaintext chunk.
        let raw = std::fs::read(image_file(dir.path(), 1)).unwrap();
        let chunk = &expected_memory()[2 * CHUNK_SIZE..3 * CHUNK_SIZE];
        assert!(!raw.windows(CHUNK_SIZE).any(|w| w == chunk));
    }
}

#[test]
fn aligned_pieces_of_a_keyed_image_go_to_the_device_directly_and_read_back_the_same() {
    use sojourn_store::DIRECT_ALIGN;
    let dir = tempdir();
    populated(dir.path());
    let s = open(dir.path());
    let file = sealed_file(&[7; 32], b"binding");
    // The file's bytes at an aligned address, so that aligned offsets are aligned in memory.
    let mut raw = vec![0u8; file.len() + DIRECT_ALIGN];
    let skew = raw.as_ptr().addr().next_multiple_of(DIRECT_ALIGN) - raw.as_ptr().addr();
    let buf = &mut raw[skew..skew + file.len()];
    buf.copy_from_slice(&file);
    let w = s.stage_keyed_image(&id(1)).unwrap();
    // Aligned blocks of 8 KiB, but for the first (written from a copy: a misaligned address)
    // and the tail shorter than a block.
    let aligned = file.len() / DIRECT_ALIGN * DIRECT_ALIGN;
    let mut copy = vec![0u8; 2 * DIRECT_ALIGN + 1];
    copy[1..].copy_from_slice(&buf[..2 * DIRECT_ALIGN]);
    w.write_at(0, &copy[1..]).unwrap();
    for at in (2 * DIRECT_ALIGN..aligned).step_by(2 * DIRECT_ALIGN) {
        let end = (at + 2 * DIRECT_ALIGN).min(aligned);
        w.write_at(at as u64, &buf[at..end]).unwrap();
    }
    w.write_at(aligned as u64, &buf[aligned..]).unwrap();
    assert_eq!(w.written(), file.len() as u64);
    let direct = (aligned - 2 * DIRECT_ALIGN) as u64;
    if sojourn_store::direct_io_supported(dir.path()) {
        assert_eq!(w.written_direct(), direct);
    } else {
        assert_eq!(w.written_direct(), 0);
    }
    let staged = w
        .finish(MEMORY_LEN as u64, layout([7; 32], b"binding"))
        .unwrap();
    commit(
        &s,
        vec![Op::PutStagedMemory {
            id: id(1),
            memory: staged,
        }],
    );
    assert_eq!(std::fs::read(image_file(dir.path(), 1)).unwrap(), file);
    assert_eq!(s.load(&id(1)).unwrap().unwrap().memory, expected_memory());
    drop(s);
    assert_eq!(
        open(dir.path()).load(&id(1)).unwrap().unwrap().memory,
        expected_memory()
    );
}

#[test]
fn a_changed_byte_of_a_keyed_image_is_refused_at_open() {
    let dir = tempdir();
    keyed_store(dir.path(), 1 << 20);
    let path = image_file(dir.path(), 1);
    let good = std::fs::read(&path).unwrap();
    // In the ciphertext, in the first and last segments, and in the tag table. (The clear
    // bytes before the ciphertext are not the image's: they are not read.)
    for at in [
        SKIP,
        SKIP + 70_000,
        SKIP + plaintext().len() - 1,
        good.len() - 1,
    ] {
        let mut bad = good.clone();
        bad[at] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let err = refused(dir.path(), key(1));
        assert!(err.to_string().contains("does not authenticate"), "{err}");
        expect_corrupt_at(err, Table::MemoryFiles, 1, None);
    }
    let mut short = good.clone();
    short.pop();
    std::fs::write(&path, &short).unwrap();
    expect_corrupt_at(refused(dir.path(), key(1)), Table::MemoryFiles, 1, None);
    std::fs::write(&path, &good).unwrap();
    assert_eq!(
        open(dir.path()).load(&id(1)).unwrap().unwrap().memory,
        expected_memory()
    );
}

#[test]
fn a_keyed_image_sealed_under_another_key_or_binding_in_its_place_is_refused() {
    for (key_bytes, aad) in [([8u8; 32], &b"binding"[..]), ([7u8; 32], &b"another"[..])] {
        let dir = tempdir();
        keyed_store(dir.path(), 1 << 20);
        std::fs::write(image_file(dir.path(), 1), sealed_file(&key_bytes, aad)).unwrap();
        expect_corrupt_at(refused(dir.path(), key(1)), Table::MemoryFiles, 1, None);
    }
}

#[test]
fn a_keyed_image_that_does_not_add_up_is_not_staged_and_leaves_no_file() {
    let dir = tempdir();
    populated(dir.path());
    let s = open(dir.path());
    let before = image_files(dir.path());
    let file = sealed_file(&[7; 32], b"binding");
    let refuse = |len: u64, image: KeyedImage, bytes: &[u8]| {
        let w = s.stage_keyed_image(&id(1)).unwrap();
        w.write_at(0, bytes).unwrap();
        match w.finish(len, image) {
            Err(StoreError::StagedMemory { reason, .. }) => reason,
            other => panic!("staged: {other:?}"),
        }
    };
    // A byte short.
    let r = refuse(
        MEMORY_LEN as u64,
        layout([7; 32], b"binding"),
        &file[..file.len() - 1],
    );
    assert!(r.contains("not as long"), "{r}");
    // A run past the memory's end, one past the plaintext, one not on a chunk boundary,
    // runs out of order, and no segment size.
    let mut cases = Vec::new();
    let mut l = layout([7; 32], b"binding");
    l.runs[1].count += 100;
    cases.push(l);
    let mut l = layout([7; 32], b"binding");
    l.runs[0].plain = plaintext().len() as u64;
    cases.push(l);
    let mut l = layout([7; 32], b"binding");
    l.runs[0].memory += 1;
    cases.push(l);
    let mut l = layout([7; 32], b"binding");
    l.runs.swap(0, 1);
    cases.push(l);
    let mut l = layout([7; 32], b"binding");
    l.segment = 0;
    cases.push(l);
    for l in cases {
        let r = refuse(MEMORY_LEN as u64, l, &file);
        assert!(r.contains("does not fit"), "{r}");
    }
    assert_eq!(
        image_files(dir.path()),
        before,
        "the refused files were deleted"
    );
    // A writer dropped unfinished deletes its file too.
    let w = s.stage_keyed_image(&id(1)).unwrap();
    w.write_at(0, &file).unwrap();
    drop(w);
    assert_eq!(image_files(dir.path()), before);
    // The object still has its old image.
    assert_ne!(s.load(&id(1)).unwrap().unwrap().memory, expected_memory());
}

#[test]
fn a_keyed_image_is_replaced_by_the_next_whole_image() {
    let dir = tempdir();
    keyed_store(dir.path(), 1 << 20);
    let keyed = image_file(dir.path(), 1);
    let s = open(dir.path());
    let next = vec![9u8; MEMORY_LEN];
    commit(
        &s,
        vec![Op::PutMemory {
            id: id(1),
            image: std::sync::Arc::new(next.clone()),
        }],
    );
    assert!(!keyed.exists(), "the keyed file went with it");
    drop(s);
    assert_eq!(open(dir.path()).load(&id(1)).unwrap().unwrap().memory, next);
}

#[test]
fn a_large_keyed_image_synced_while_it_is_written_reads_back_whole() {
    // Above the early-sync interval (8 MiB): a thread of the writer's fdatasyncs the file
    // while later pieces are written.
    let len = 20 << 20;
    let text: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let file = sealed(&[3; 32], b"large", text.clone());
    let dir = tempdir();
    populated(dir.path());
    {
        let s = open(dir.path());
        let w = s.stage_keyed_image(&id(2)).unwrap();
        for (k, piece) in file.chunks(1 << 20).enumerate() {
            w.write_at((k << 20) as u64, piece).unwrap();
        }
        let image = KeyedImage {
            key: zeroize::Zeroizing::new([3; 32]),
            aad: b"large".to_vec(),
            skip: SKIP as u64,
            plaintext_len: len as u64,
            segment: SEGMENT,
            runs: vec![ImageRun {
                plain: 0,
                stride: CHUNK_SIZE as u64,
                memory: 0,
                count: (len / CHUNK_SIZE) as u32,
            }],
        };
        let staged = w.finish(len as u64, image).unwrap();
        commit(
            &s,
            vec![Op::PutStagedMemory {
                id: id(2),
                memory: staged,
            }],
        );
    }
    let s = open(dir.path());
    assert!(s.load(&id(2)).unwrap().unwrap().memory == text);
}
