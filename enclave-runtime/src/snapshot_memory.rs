//! A read-only view of the linear memory a snapshot holds, for a host that writes the memory
//! image out (in segments) while another thread restores the instance from the same bytes.
//!
//! The view borrows the memory chunks from the snapshot; nothing is copied until
//! [`SnapshotMemory::copy_into`] is asked for a range.

use std::borrow::Cow;

use ciborium::Value as Cbor;
use sojourn_policy::canonical;

use crate::snapshot::{
    decoded_chunks, field_err, place_chunks, read_body_fast, split, MapView, SnapshotError, CHUNK,
};

/// A WebAssembly page.
const PAGE: usize = 65536;
/// The most pages a 32-bit linear memory has (4 GiB): `memory_pages` above it is refused.
const MAX_PAGES: u64 = 65536;

/// The linear memory a snapshot holds, exactly as the instance restored from it will hold it:
/// `len()` bytes, zero except where the snapshot has a chunk.
///
/// Why that is the restored memory: a restore grows the new instance's memory to
/// `memory_pages` (grown pages are zero), lays each chunk, and zeroes whatever instantiation
/// wrote (data segments) that no chunk covers.
///
/// The view only reads the memory fields: it does not check the descriptor, the module or the
/// rest of the state, so a snapshot it accepts may still be refused by a restore (a memory
/// above the descriptor's `memory_pages_max`, for example).
pub struct SnapshotMemory<'a> {
    /// `memory_pages` * 65536.
    len: usize,
    /// (byte offset, exactly [`CHUNK`] bytes): ascending, disjoint, inside `len`. Borrowed
    /// from the snapshot; owned only when the body took the general decode path.
    chunks: Vec<(usize, Cow<'a, [u8]>)>,
}

impl std::fmt::Debug for SnapshotMemory<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotMemory")
            .field("len", &self.len)
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

impl<'a> SnapshotMemory<'a> {
    /// Reads the memory size (`memory_pages` * 65536) and the `memory_chunks` of a snapshot
    /// (as written by `ResidentObject::snapshot` / `SnapshotWriter`). Checks magic and version,
    /// NOT the checksum (the caller has authenticated the bytes, like `restore_authenticated`).
    /// Chunks must be ascending, each exactly CHUNK (4096) bytes, inside the memory — the same
    /// rules `restore_parts` applies; anything else is a `SnapshotError`, never a panic.
    ///
    /// A body in the shape this build writes is read in one pass that borrows the chunks;
    /// anything else takes the general (full canonical decode) path, as a restore does.
    pub fn parse(snapshot: &'a [u8]) -> Result<SnapshotMemory<'a>, SnapshotError> {
        let (_, _, body, version) = split(snapshot)?;
        if let Some((entries, chunks)) = read_body_fast(body, version) {
            let len = memory_len(&MapView(&entries))?;
            return Self::checked(len, chunks.into_iter().map(|(i, b)| (i, Cow::Borrowed(b))));
        }
        let root = canonical::decode(body).map_err(|e| SnapshotError::Body(e.to_string()))?;
        let Cbor::Map(entries) = root else {
            return Err(SnapshotError::Body("not a map".into()));
        };
        if entries.len() != 12 {
            return Err(SnapshotError::Body(format!(
                "{} keys, expected 12",
                entries.len()
            )));
        }
        let m = MapView(&entries);
        let len = memory_len(&m)?;
        // The decoded tree is this function's: its chunks are copied out of it.
        let pairs = decoded_chunks(version, m.get("memory_chunks")?)?;
        Self::checked(
            len,
            pairs.into_iter().map(|(i, b)| (i, Cow::Owned(b.to_vec()))),
        )
    }

    /// The chunks checked as `restore_parts` checks them, placed at their byte offsets.
    fn checked(
        len: usize,
        chunks: impl Iterator<Item = (u64, Cow<'a, [u8]>)>,
    ) -> Result<SnapshotMemory<'a>, SnapshotError> {
        Ok(SnapshotMemory {
            len,
            chunks: place_chunks(len, chunks)?,
        })
    }

    /// The memory size in bytes (`memory_pages` * 65536).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the memory has no bytes (a snapshot of an object with no memory pages).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memory's chunks as (byte offset in memory, its [`CHUNK`] bytes in the snapshot),
    /// ascending: where a host that keeps the snapshot's bytes finds the memory in them.
    /// `None` if a chunk is not in the snapshot's bytes (the body took the general decode
    /// path, which decodes into copies).
    pub fn chunks_in_snapshot(&self) -> Option<Vec<(usize, &'a [u8])>> {
        self.chunks
            .iter()
            .map(|(at, bytes)| match bytes {
                Cow::Borrowed(b) => Some((*at, *b)),
                Cow::Owned(_) => None,
            })
            .collect()
    }

    /// Writes memory bytes `offset .. offset + out.len()` into `out` (zeros where no chunk is).
    /// Returns false (and leaves `out` unspecified) if the range is not inside the memory.
    ///
    /// The first chunk that reaches into the range is found by binary search; from there the
    /// chunks are copied and the gaps between them zero-filled, slice by slice.
    pub fn copy_into(&self, offset: usize, out: &mut [u8]) -> bool {
        let Some(end) = offset.checked_add(out.len()).filter(|&end| end <= self.len) else {
            return false;
        };
        // Chunks are ascending and disjoint, so their ends ascend too: skip those that end
        // at or before `offset`.
        let first = self
            .chunks
            .partition_point(|(start, _)| start.saturating_add(CHUNK) <= offset);
        // Memory bytes `offset .. at` are in `out`.
        let mut at = offset;
        for (start, bytes) in self.chunks.get(first..).unwrap_or_default() {
            let start = *start;
            if start >= end {
                break;
            }
            let from = start.max(at);
            let to = start.saturating_add(CHUNK).min(end);
            let (Some(gap_end), Some(out_from), Some(out_to), Some(src_from), Some(src_to)) = (
                from.checked_sub(offset),
                at.checked_sub(offset),
                to.checked_sub(offset),
                from.checked_sub(start),
                to.checked_sub(start),
            ) else {
                return false;
            };
            match out.get_mut(out_from..gap_end) {
                Some(gap) => gap.fill(0),
                None => return false,
            }
            match (out.get_mut(gap_end..out_to), bytes.get(src_from..src_to)) {
                (Some(dst), Some(src)) if dst.len() == src.len() => dst.copy_from_slice(src),
                _ => return false,
            }
            at = to;
        }
        match at.checked_sub(offset).and_then(|from| out.get_mut(from..)) {
            Some(rest) => {
                rest.fill(0);
                true
            }
            None => false,
        }
    }
}

/// `memory_pages` * 65536, for at most [`MAX_PAGES`] pages.
fn memory_len(m: &MapView<'_>) -> Result<usize, SnapshotError> {
    let pages = m.uint("memory_pages")?;
    if pages > MAX_PAGES {
        return Err(field_err(
            "memory_pages",
            format!("{pages} pages: above {MAX_PAGES} (4 GiB)"),
        ));
    }
    usize::try_from(pages)
        .ok()
        .and_then(|p| p.checked_mul(PAGE))
        .ok_or_else(|| field_err("memory_pages", "too large for this platform"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::snapshot::{MAGIC, VERSION};
    use crate::{ObjectEngine, ObjectId, ResidentObject};

    const FILL: u8 = 0xA5;

    /// An object of `wat` (no fields), created and woken once (its tick has run).
    fn object(wat: &str, pages_max: u32) -> ResidentObject {
        let wasm = wat::parse_str(wat).unwrap();
        let toml = format!(
            "[object]\nname='m'\nversion=1\nmodule='m.wasm'\n[limits]\nfuel_per_entry=10000000\nmemory_pages_max={pages_max}\n[schema.fields]\n"
        );
        let d = sojourn_policy::parse_descriptor("m", &toml, &wasm).unwrap();
        let engine = ObjectEngine::new().unwrap();
        let m = engine.compile(&wasm).unwrap();
        let (mut obj, _) =
            ResidentObject::create(&engine, &m, d, ObjectId([3; 16]), 0, [0; 32]).unwrap();
        let records = obj.wake(1, [0; 32]);
        assert!(!records.is_empty(), "the tick ran");
        obj
    }

    fn memory_of(obj: &ResidentObject) -> Vec<u8> {
        obj.store
            .data()
            .memory
            .map(|m| m.data(&obj.store).to_vec())
            .unwrap_or_default()
    }

    fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
        a.iter().zip(b).position(|(x, y)| x != y)
    }

    /// Copies `size`-byte segments from `start` to the end (the last one shorter), and
    /// compares each with `memory`. Above 20 000 segments, segments at a stride (and the last).
    fn check_segments(view: &SnapshotMemory<'_>, memory: &[u8], size: usize, start: usize) {
        let count = memory.len().saturating_sub(start).div_ceil(size);
        let stride = if count > 20_000 {
            (count / 20_000 + 1) * size + 1
        } else {
            size
        };
        let mut offsets: Vec<usize> = (start..memory.len()).step_by(stride).collect();
        offsets.push(memory.len().saturating_sub(size));
        let mut buf = vec![FILL; size];
        for at in offsets {
            let n = size.min(memory.len() - at);
            let out = &mut buf[..n];
            out.fill(FILL);
            assert!(view.copy_into(at, out), "segment {at}+{n} refused");
            let want = &memory[at..at + n];
            if let Some(d) = first_difference(out, want) {
                panic!(
                    "segment {at}+{n} (size {size}) differs at {}: {} vs {}",
                    at + d,
                    out[d],
                    want[d]
                );
            }
        }
    }

    /// The view equals `memory` copied whole, in 255-chunk segments, and in odd sizes at odd
    /// offsets.
    fn assert_view_is(view: &SnapshotMemory<'_>, memory: &[u8]) {
        assert_eq!(view.len(), memory.len());
        assert_eq!(view.is_empty(), memory.is_empty());
        let mut whole = vec![FILL; view.len()];
        assert!(view.copy_into(0, &mut whole));
        if let Some(d) = first_difference(&whole, memory) {
            panic!("whole copy differs at {d}: {} vs {}", whole[d], memory[d]);
        }
        check_segments(view, memory, 255 * CHUNK, 0);
        for size in [1, 4095, 4096, 4097, 100_000] {
            for start in [0, 1, 4095, 4097, 12_345] {
                check_segments(view, memory, size, start);
            }
        }
    }

    /// Snapshots `obj`, restores it on a fresh engine, and checks that the view of the
    /// snapshot is the restored memory (and the original's). Returns the snapshot.
    fn snapshot_and_compare(obj: &mut ResidentObject) -> Vec<u8> {
        let snap = obj.snapshot().unwrap();
        let engine = ObjectEngine::new().unwrap();
        let back = ResidentObject::restore(&engine, &snap).unwrap();
        let restored = memory_of(&back);
        assert!(restored == memory_of(obj), "restore changed memory");
        let view = SnapshotMemory::parse(&snap).unwrap();
        assert!(view
            .chunks
            .iter()
            .all(|(_, c)| matches!(c, Cow::Borrowed(_))));
        assert_view_is(&view, &restored);
        // Every chunk is found in the snapshot's bytes, holding the memory at its offset.
        let found = view.chunks_in_snapshot().unwrap();
        assert_eq!(found.len(), view.chunks.len());
        let bytes = snap.as_ptr_range();
        for (at, chunk) in found {
            let r = chunk.as_ptr_range();
            assert!(bytes.start <= r.start && r.end <= bytes.end);
            assert!(chunk == &restored[at..at + CHUNK]);
        }
        snap
    }

    const SMALL: &str = r#"(module (memory (export "memory") 1 2)
        (func (export "sojourn_tick") (param i64) (result i64)
          (i32.store8 (i32.const 0) (i32.const 1))
          (i64.store (i32.const 4090) (i64.const -1))  ;; across the first chunk boundary
          (i32.store8 (i32.const 65535) (i32.const 9)) ;; the last byte
          (i64.const -1)))"#;

    /// Grown from 1 to 170 pages (10.6 MiB, laid out by two threads on restore), written
    /// sparsely on both sides of the middle and at the very end; a data segment is cleared.
    const GROWN: &str = r#"(module (memory (export "memory") 1 200)
        (data (i32.const 16) "written at instantiation")
        (func (export "sojourn_tick") (param i64) (result i64)
          (local $p i32)
          (drop (memory.grow (i32.const 169)))
          (local.set $p (i32.const 8192))
          (loop $l
            (i64.store (local.get $p) (i64.add (local.get 0) (i64.extend_i32_u (local.get $p))))
            (local.set $p (i32.add (local.get $p) (i32.const 40967)))
            (br_if $l (i32.lt_u (local.get $p) (i32.const 11100000))))
          (i64.store (i32.const 16) (i64.const 0))
          (i64.store (i32.const 24) (i64.const 0))
          (i64.store (i32.const 32) (i64.const 0))
          (i64.store (i32.const 11141112) (i64.const 0x0102030405060708))
          (i64.const -1)))"#;

    /// A data segment the guest clears entirely (its chunk is all zero: no chunk in the
    /// snapshot, but instantiation writes it again), and one it keeps.
    const CLEARED: &str = r#"(module (memory (export "memory") 2 4)
        (data (i32.const 16) "written at instantiation")
        (data (i32.const 70000) "kept")
        (func (export "sojourn_tick") (param i64) (result i64)
          (i64.store (i32.const 16) (i64.const 0))
          (i64.store (i32.const 24) (i64.const 0))
          (i64.store (i32.const 32) (i64.const 0))
          (i64.const -1)))"#;

    /// Four pages, only the third written, partly: one byte at a chunk's end, a run across
    /// chunks; a data segment in the first page half cleared (its chunk stays).
    const PARTIAL: &str = r#"(module (memory (export "memory") 4 4)
        (data (i32.const 100) "abcdef")
        (func (export "sojourn_tick") (param i64) (result i64)
          (local $p i32)
          (i32.store16 (i32.const 100) (i32.const 0))
          (i32.store8 (i32.const 135167) (i32.const 7))
          (local.set $p (i32.const 140000))
          (loop $l
            (i32.store (local.get $p) (i32.const 0x11223344))
            (local.set $p (i32.add (local.get $p) (i32.const 4)))
            (br_if $l (i32.lt_u (local.get $p) (i32.const 150000))))
          (i64.const -1)))"#;

    const UNTOUCHED: &str = r#"(module (memory (export "memory") 3)
        (func (export "sojourn_tick") (param i64) (result i64) (i64.const -1)))"#;

    #[test]
    fn a_small_memory_is_the_restored_memory() {
        let mut obj = object(SMALL, 2);
        let snap = snapshot_and_compare(&mut obj);
        let view = SnapshotMemory::parse(&snap).unwrap();
        assert_eq!(view.len(), 65536);
        let starts: Vec<usize> = view.chunks.iter().map(|(s, _)| *s).collect();
        assert_eq!(starts, vec![0, 4096, 65536 - 4096]);
        let mut b = [0u8; 12];
        assert!(view.copy_into(4088, &mut b));
        assert_eq!(
            b,
            [0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]
        );
    }

    #[test]
    fn a_memory_grown_beyond_8_mib_is_the_restored_memory() {
        let mut obj = object(GROWN, 200);
        let snap = snapshot_and_compare(&mut obj);
        let view = SnapshotMemory::parse(&snap).unwrap();
        assert_eq!(view.len(), 170 * 65536);
        assert!(view.len() >= 8 << 20 && view.chunks.len() > 200);
        let mut end = [0u8; 8];
        assert!(view.copy_into(view.len() - 8, &mut end));
        assert_eq!(u64::from_le_bytes(end), 0x0102030405060708);
        // The data segment's bytes were cleared by the guest.
        let mut seg = [FILL; 24];
        assert!(view.copy_into(16, &mut seg));
        assert_eq!(seg, [0; 24]);
    }

    #[test]
    fn a_data_segment_the_guest_cleared_is_zero() {
        let mut obj = object(CLEARED, 4);
        let snap = snapshot_and_compare(&mut obj);
        let view = SnapshotMemory::parse(&snap).unwrap();
        // No chunk covers the cleared segment: the restore zeroes what instantiation wrote.
        assert!(view.chunks.iter().all(|(s, _)| *s != 0));
        let mut seg = [FILL; 24];
        assert!(view.copy_into(16, &mut seg));
        assert_eq!(seg, [0; 24]);
        let mut kept = [0u8; 4];
        assert!(view.copy_into(70000, &mut kept));
        assert_eq!(&kept, b"kept");
    }

    #[test]
    fn a_partly_written_memory_is_the_restored_memory() {
        let mut obj = object(PARTIAL, 4);
        let snap = snapshot_and_compare(&mut obj);
        let view = SnapshotMemory::parse(&snap).unwrap();
        let mut seg = [FILL; 6];
        assert!(view.copy_into(100, &mut seg));
        assert_eq!(&seg, b"\0\0cdef");
        let mut last = [FILL; 2];
        assert!(view.copy_into(135166, &mut last));
        assert_eq!(last, [0, 7]);

        let mut untouched = object(UNTOUCHED, 3);
        let snap = snapshot_and_compare(&mut untouched);
        let view = SnapshotMemory::parse(&snap).unwrap();
        assert_eq!((view.len(), view.chunks.len()), (3 * 65536, 0));
    }

    /// 40 pages, every byte of pages 0–19 and 21–38 written with no chunk left zero (page 20,
    /// where instantiation writes a data segment the tick clears, and page 39 are zero) at
    /// the first tick; each later tick writes its time at an
    /// offset that moves, and asks to be woken at the next millisecond.
    const FULL: &str = r#"(module (memory (export "memory") 40 64)
        (data (i32.const 1310800) "written at instantiation")
        (func $fill (param $from i32) (param $to i32)
          (local $p i32)
          (local.set $p (local.get $from))
          (loop $l
            (i64.store (local.get $p)
              (i64.or (i64.mul (i64.extend_i32_u (local.get $p)) (i64.const 0x9E3779B97F4A7C15))
                      (i64.const 1)))
            (local.set $p (i32.add (local.get $p) (i32.const 8)))
            (br_if $l (i32.lt_u (local.get $p) (local.get $to)))))
        (func (export "sojourn_tick") (param i64) (result i64)
          (if (i32.eqz (i32.load8_u (i32.const 0)))
            (then
              (call $fill (i32.const 0) (i32.const 1310720))
              (call $fill (i32.const 1376256) (i32.const 2555904))
              (i64.store (i32.const 1310800) (i64.const 0))
              (i64.store (i32.const 1310808) (i64.const 0))
              (i64.store (i32.const 1310816) (i64.const 0)))
            (else
              (i64.store
                (i32.wrap_i64 (i64.rem_u (i64.mul (local.get 0) (i64.const 40961))
                                         (i64.const 2555896)))
                (local.get 0))))
          (i64.add (local.get 0) (i64.const 1))))"#;

    /// Restores `snap` placed `lead` bytes into a buffer of anonymous pages, moving what it
    /// can; checks that the bytes before it are untouched. Returns the bytes moved too.
    fn restore_moving_at(
        engine: &ObjectEngine,
        snap: &[u8],
        lead: usize,
    ) -> (ResidentObject, usize) {
        let mut pages = sojourn_mem::AnonPages::new(lead + snap.len()).unwrap();
        pages[..lead].fill(0x5A);
        pages[lead..].copy_from_slice(snap);
        let restored =
            ResidentObject::restore_moving(engine, &mut pages, lead..lead + snap.len(), &|w| {
                engine.compile(w)
            })
            .unwrap();
        assert!(
            pages[..lead].iter().all(|b| *b == 0x5A),
            "bytes before the snapshot"
        );
        // The pages may go: the moved ones are the memory's now.
        drop(pages);
        restored
    }

    #[test]
    fn a_memory_whose_pages_were_moved_checkpoints_as_a_copied_one_does() {
        let mut obj = object(FULL, 64);
        let want = memory_of(&obj);
        assert!(want[..20 * 65536]
            .chunks(CHUNK)
            .all(|c| c.iter().any(|b| *b != 0)));
        assert!(want[20 * 65536..21 * 65536].iter().all(|b| *b == 0));
        let snap = obj.snapshot().unwrap();
        let engine = ObjectEngine::new().unwrap();
        for lead in [0usize, 1, 4095, 4103, 100_000] {
            let (mut arrived, moved) = restore_moving_at(&engine, &snap, lead);
            // Both runs (20 and 18 pages) moved where the kernel tracks writes.
            let want_moved = if sojourn_mem::write_tracking_available() {
                38 * 65536
            } else {
                0
            };
            assert_eq!(moved, want_moved, "lead {lead}");
            assert!(memory_of(&arrived) == want, "lead {lead}");
            let mut copied = ResidentObject::restore_authenticated(&engine, &snap).unwrap();
            // The arrival's first checkpoint (the caller stored the memory), then entries
            // that write a chunk each: the same checkpoints as an object whose memory was
            // copied, and the same memory.
            assert_eq!(
                arrived.checkpoint_stored_memory(Vec::new()).unwrap(),
                copied.checkpoint_stored_memory(Vec::new()).unwrap()
            );
            assert_eq!(
                arrived.memory_writes_tracked(),
                sojourn_mem::write_tracking_available()
            );
            for now in 2..7 {
                assert!(!arrived.wake(now, [0; 32]).is_empty());
                assert!(!copied.wake(now, [0; 32]).is_empty());
                let (a, b) = (arrived.checkpoint().unwrap(), copied.checkpoint().unwrap());
                assert_eq!(a.dirty.len(), 1, "lead {lead}, tick {now}");
                assert_eq!(a, b);
                assert!(memory_of(&arrived) == memory_of(&copied));
            }
            // Nothing ran: nothing differs from the image.
            assert!(arrived.checkpoint().unwrap().dirty.is_empty());
            assert_eq!(
                arrived.full_state_digest().unwrap(),
                copied.full_state_digest().unwrap()
            );
        }
    }

    #[test]
    fn a_memory_that_cannot_be_mapped_is_copied() {
        // Sparse: its flat image would begin before the snapshot.
        let mut obj = object(GROWN, 200);
        let snap = obj.snapshot().unwrap();
        let engine = ObjectEngine::new().unwrap();
        for lead in [0usize, 4097] {
            let (back, moved) = restore_moving_at(&engine, &snap, lead);
            assert_eq!(moved, 0);
            assert!(memory_of(&back) == memory_of(&obj));
        }
        // An engine that keeps a copy to compare with: nothing is moved (the copy would
        // need fresh pages anyway).
        let mut dense = object(FULL, 64);
        let snap = dense.snapshot().unwrap();
        let copying = ObjectEngine::new().unwrap().without_write_tracking();
        let (back, moved) = restore_moving_at(&copying, &snap, 10);
        assert_eq!(moved, 0);
        assert!(memory_of(&back) == memory_of(&dense));
        // An engine whose allocator the runtime does not know.
        let mut dense = object(FULL, 64);
        let snap = dense.snapshot().unwrap();
        let other = ObjectEngine::with_config(crate::engine::deterministic_config()).unwrap();
        let (back, moved) = restore_moving_at(&other, &snap, 10);
        assert_eq!(moved, 0);
        assert!(memory_of(&back) == memory_of(&dense));
        // Small objects, a data segment cleared, part of a page written, nothing written.
        for wat in [SMALL, CLEARED, PARTIAL, UNTOUCHED] {
            let mut obj = object(wat, 4);
            let snap = obj.snapshot().unwrap();
            for lead in [0usize, 5000] {
                let (back, _) = restore_moving_at(&engine, &snap, lead);
                assert!(memory_of(&back) == memory_of(&obj), "{wat}");
            }
        }
    }

    #[test]
    fn a_moving_restore_refuses_what_a_restore_refuses() {
        let mut obj = object(FULL, 64);
        let snap = obj.snapshot().unwrap();
        let engine = ObjectEngine::new().unwrap();
        let mut pages = sojourn_mem::AnonPages::new(snap.len()).unwrap();
        pages.copy_from_slice(&snap);
        // Beyond the pages, and a snapshot cut short.
        let compile = |w: &[u8]| engine.compile(w);
        assert!(
            ResidentObject::restore_moving(&engine, &mut pages, 0..snap.len() + 1, &compile)
                .is_err()
        );
        assert!(
            ResidentObject::restore_moving(&engine, &mut pages, 0..snap.len() / 2, &compile)
                .is_err()
        );
    }

    /// Grows by a page at every tick and writes the new page and one old byte.
    const GROWING: &str = r#"(module (memory (export "memory") 1 16)
        (func (export "sojourn_tick") (param i64) (result i64)
          (local $top i32)
          (local.set $top (i32.mul (memory.grow (i32.const 1)) (i32.const 65536)))
          (i64.store (i32.add (local.get $top) (i32.const 40000)) (local.get 0))
          (i64.store (i32.const 8) (local.get 0))
          (i64.add (local.get 0) (i64.const 1))))"#;

    /// Checkpoints across memory growth, tracking writes or comparing with a copy: the first
    /// whole memory and every later chunk rebuild the object exactly.
    #[test]
    fn checkpoints_across_growth_rebuild_the_object_either_way() {
        for track in [true, false] {
            let engine = if track {
                ObjectEngine::new().unwrap()
            } else {
                ObjectEngine::new().unwrap().without_write_tracking()
            };
            let wasm = wat::parse_str(GROWING).unwrap();
            let toml = "[object]\nname='g'\nversion=1\nmodule='g.wasm'\n[limits]\nfuel_per_entry=10000000\nmemory_pages_max=16\n[schema.fields]\n";
            let d = sojourn_policy::parse_descriptor("g", toml, &wasm).unwrap();
            let m = engine.compile(&wasm).unwrap();
            let (mut obj, _) =
                ResidentObject::create(&engine, &m, d, ObjectId([5; 16]), 0, [0; 32]).unwrap();
            let first = obj.checkpoint().unwrap();
            let mut whole = first.memory.as_deref().unwrap().clone();
            let mut chunks = std::collections::BTreeMap::new();
            assert_eq!(
                obj.memory_writes_tracked(),
                track && sojourn_mem::write_tracking_available()
            );
            for now in 1..6 {
                assert!(!obj.wake(now, [0; 32]).is_empty(), "tick {now}");
                let cp = obj.checkpoint().unwrap();
                if let Some(w) = cp.memory {
                    whole = w.to_vec();
                    chunks.clear();
                }
                chunks.extend(cp.dirty);
                let back = ResidentObject::restore_checkpoint(
                    &engine,
                    &m,
                    &obj.descriptor().encode(),
                    &cp.exec,
                    &whole,
                    &chunks,
                )
                .unwrap();
                assert!(
                    memory_of(&back) == memory_of(&obj),
                    "track {track}, tick {now}"
                );
            }
            assert_eq!(memory_of(&obj).len(), 6 * 65536);
        }
    }

    /// The use it is for: the image written out in segments on one thread while another
    /// restores the instance from the same bytes.
    #[test]
    fn memory_is_written_out_while_another_thread_restores() {
        let mut obj = object(GROWN, 200);
        let snap = obj.snapshot().unwrap();
        let (restored, image) = std::thread::scope(|scope| {
            let restore = scope.spawn(|| {
                let engine = ObjectEngine::new().unwrap();
                memory_of(&ResidentObject::restore_authenticated(&engine, &snap).unwrap())
            });
            let view = SnapshotMemory::parse(&snap).unwrap();
            let mut image = Vec::new();
            let mut segment = vec![0u8; 255 * CHUNK];
            let mut at = 0;
            while at < view.len() {
                let n = segment.len().min(view.len() - at);
                assert!(view.copy_into(at, &mut segment[..n]));
                image.extend_from_slice(&segment[..n]);
                at += n;
            }
            (restore.join().unwrap(), image)
        });
        assert_eq!(image.len(), 170 * 65536);
        assert!(image == restored);
    }

    #[test]
    fn ranges_outside_the_memory_are_refused() {
        let mut obj = object(SMALL, 2);
        let snap = obj.snapshot().unwrap();
        let view = SnapshotMemory::parse(&snap).unwrap();
        let len = view.len();
        assert!(view.copy_into(len, &mut []));
        assert!(view.copy_into(0, &mut []));
        assert!(view.copy_into(len - 1, &mut [0]));
        assert!(!view.copy_into(len + 1, &mut []));
        assert!(!view.copy_into(len, &mut [0]));
        assert!(!view.copy_into(len - 10, &mut [0; 11]));
        assert!(!view.copy_into(0, &mut vec![0; len + 1]));
        assert!(!view.copy_into(usize::MAX, &mut [0; 2]));
        assert!(!view.copy_into(usize::MAX, &mut []));
    }

    /// 64 MiB, every third chunk present: 1 MiB ranges at aligned and odd offsets.
    #[test]
    fn one_mib_ranges_over_64_mib() {
        let len = 64 << 20;
        let pool: Vec<Vec<u8>> = (0..7u8)
            .map(|i| {
                (0..CHUNK)
                    .map(|j| ((j as u8) ^ i.wrapping_mul(37)) | 1)
                    .collect()
            })
            .collect();
        let chunks: Vec<(usize, Cow<'_, [u8]>)> = (0..len / CHUNK)
            .step_by(3)
            .map(|i| (i * CHUNK, Cow::Borrowed(pool[i % 7].as_slice())))
            .collect();
        let mut reference = vec![0u8; len];
        for (s, b) in &chunks {
            reference[*s..*s + CHUNK].copy_from_slice(b);
        }
        let view = SnapshotMemory { len, chunks };
        let mib = 1 << 20;
        let mut out = vec![FILL; mib];
        for at in (0..len).step_by(mib) {
            assert!(view.copy_into(at, &mut out));
            assert!(out == reference[at..at + mib], "at {at}");
        }
        for at in [1, 4095, mib + 4097, len - mib - 1, len - mib] {
            out.fill(FILL);
            assert!(view.copy_into(at, &mut out));
            assert!(out == reference[at..at + mib], "at {at}");
        }
    }

    /// `magic | version | body | checksum` with a correct checksum.
    fn wrap(body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(body);
        let sum = canonical::sha256(&out);
        out.extend_from_slice(&sum);
        out
    }

    fn body(snap: &[u8]) -> &[u8] {
        &snap[8..snap.len() - 32]
    }

    /// `snap` with its body map edited, canonically re-encoded and re-checksummed.
    fn edited(snap: &[u8], edit: impl FnOnce(&mut Vec<(Cbor, Cbor)>)) -> Vec<u8> {
        let Cbor::Map(mut entries) = canonical::decode(body(snap)).unwrap() else {
            panic!("not a map")
        };
        edit(&mut entries);
        wrap(&canonical::encode(&Cbor::Map(entries)).unwrap())
    }

    fn entry<'e>(entries: &'e mut [(Cbor, Cbor)], key: &str) -> &'e mut Cbor {
        entries
            .iter_mut()
            .find(|(k, _)| matches!(k, Cbor::Text(s) if s == key))
            .map(|(_, v)| v)
            .unwrap()
    }

    /// A version 2 `memory_chunks`: `[runs, pad, pages]`, `pages` bytes of 1.
    fn memory(runs: &[(i128, i128)], pad: Vec<u8>, pages: usize) -> Cbor {
        let int = |i: i128| Cbor::Integer(i.try_into().unwrap());
        Cbor::Array(vec![
            Cbor::Array(
                runs.iter()
                    .map(|&(f, n)| Cbor::Array(vec![int(f), int(n)]))
                    .collect(),
            ),
            Cbor::Bytes(pad),
            Cbor::Bytes(vec![1; pages]),
        ])
    }

    /// `runs` of whole chunks, no padding.
    fn runs(runs: &[(i128, i128)]) -> Cbor {
        let n: i128 = runs.iter().map(|r| r.1.max(0)).sum();
        memory(runs, Vec::new(), usize::try_from(n).unwrap_or(0) * CHUNK)
    }

    /// `snap` (version 2) as version 1: its memory as `[index, bytes]` pairs.
    fn as_version_1(snap: &[u8]) -> Vec<u8> {
        let view = SnapshotMemory::parse(snap).unwrap();
        let pairs: Vec<Cbor> = view
            .chunks
            .iter()
            .map(|(at, bytes)| {
                Cbor::Array(vec![
                    Cbor::Integer(((at / CHUNK) as u64).into()),
                    Cbor::Bytes(bytes.to_vec()),
                ])
            })
            .collect();
        let Cbor::Map(mut entries) = canonical::decode(body(snap)).unwrap() else {
            panic!("not a map")
        };
        *entry(&mut entries, "memory_chunks") = Cbor::Array(pairs);
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&crate::snapshot::VERSION_PAIRS.to_be_bytes());
        out.extend_from_slice(&canonical::encode(&Cbor::Map(entries)).unwrap());
        let sum = canonical::sha256(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Snapshots of the version before (memory as `[index, bytes]` pairs) are still read:
    /// the same memory, the same object.
    #[test]
    fn a_version_1_snapshot_is_read_as_before() {
        let engine = ObjectEngine::new().unwrap();
        for (wat, max) in [(SMALL, 2), (PARTIAL, 4), (FULL, 64)] {
            let mut obj = object(wat, max);
            let snap = obj.snapshot().unwrap();
            let old = as_version_1(&snap);
            assert_eq!(&old[6..8], &[0, 1]);
            let view = SnapshotMemory::parse(&old).unwrap();
            assert!(view.chunks_in_snapshot().is_some(), "read in one pass");
            assert_view_is(&view, &memory_of(&obj));
            let mut back = ResidentObject::restore(&engine, &old).unwrap();
            assert!(memory_of(&back) == memory_of(&obj));
            assert_eq!(
                back.full_state_digest().unwrap(),
                obj.full_state_digest().unwrap()
            );
            // Written again, it is written in this build's version.
            assert_eq!(back.snapshot().unwrap(), snap);
        }
    }

    /// Wherever the snapshot is to lie, its memory's pages start on a page boundary there,
    /// and it holds the same state.
    #[test]
    fn the_pages_lie_on_a_page_boundary_where_the_writer_was_told() {
        let engine = ObjectEngine::new().unwrap();
        let mut obj = object(FULL, 64);
        let digest = obj.full_state_digest().unwrap();
        let plain = obj.snapshot().unwrap();
        let mut lens = Vec::new();
        for at in [0usize, 1, 74, 100, 4000, 4095, 4096, 4097, 70_000] {
            let mut w = obj.snapshot_writer().unwrap();
            w.align_pages_at(at);
            let mut snap = Vec::new();
            w.write_into(&mut snap);
            assert_eq!(snap.len(), w.len(), "at {at}");
            lens.push(snap.len());
            // In a buffer where it lies at `at`.
            let mut buf = vec![0u8; at + snap.len()];
            buf[at..].copy_from_slice(&snap);
            let snap = &buf[at..];
            let view = SnapshotMemory::parse(snap).unwrap();
            let found = view.chunks_in_snapshot().unwrap();
            assert!(!found.is_empty());
            for (_, chunk) in found {
                let offset = chunk.as_ptr() as usize - buf.as_ptr() as usize;
                assert_eq!(offset % CHUNK, 0, "at {at}");
            }
            let mut back = ResidentObject::restore(&engine, snap).unwrap();
            assert_eq!(back.full_state_digest().unwrap(), digest, "at {at}");
            assert_eq!(back.snapshot().unwrap(), plain, "at {at}");
        }
        // Only the padding differs: by less than two chunks.
        let (min, max) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
        assert!(max - min < 2 * CHUNK);
    }

    /// A body the fast reader declines (a value nested deeper than it reads) but that is
    /// canonical: the general path reads the same memory.
    #[test]
    fn the_general_path_reads_the_same_memory() {
        let mut obj = object(PARTIAL, 4);
        let snap = obj.snapshot().unwrap();
        let deep = edited(&snap, |e| {
            let mut v = Cbor::Null;
            for _ in 0..40 {
                v = Cbor::Array(vec![v]);
            }
            *entry(e, "status") = v;
        });
        assert!(read_body_fast(body(&deep), crate::snapshot::VERSION).is_none());
        let general = SnapshotMemory::parse(&deep).unwrap();
        assert!(matches!(general.chunks.first(), Some((_, Cow::Owned(_)))));
        assert!(
            general.chunks_in_snapshot().is_none(),
            "copies are not in the snapshot"
        );
        let fast = SnapshotMemory::parse(&snap).unwrap();
        let mut image = vec![0; fast.len()];
        assert!(fast.copy_into(0, &mut image));
        assert_view_is(&general, &image);
        // The general path applies the same rules.
        let deep_disordered = edited(&deep, |e| {
            *entry(e, "memory_chunks") = runs(&[(2, 1), (1, 1)]);
        });
        assert!(read_body_fast(body(&deep_disordered), crate::snapshot::VERSION).is_none());
        assert!(SnapshotMemory::parse(&deep_disordered).is_err());
    }

    /// Edited memory fields: refused by the view, and by a restore.
    #[test]
    fn bad_memory_fields_are_refused_like_a_restore_refuses_them() {
        let mut obj = object(SMALL, 2);
        let snap = obj.snapshot().unwrap();
        let engine = ObjectEngine::new().unwrap();
        let chunks = |c: Cbor| {
            move |e: &mut Vec<(Cbor, Cbor)>| {
                *entry(e, "memory_chunks") = c;
            }
        };
        let pair = |i: i128| {
            Cbor::Array(vec![
                Cbor::Integer(i.try_into().unwrap()),
                Cbor::Bytes(vec![1; CHUNK]),
            ])
        };
        let pages = |p: Cbor| move |e: &mut Vec<(Cbor, Cbor)>| *entry(e, "memory_pages") = p;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("descending", edited(&snap, chunks(runs(&[(3, 1), (2, 1)])))),
            ("duplicate", edited(&snap, chunks(runs(&[(3, 1), (3, 1)])))),
            ("adjacent", edited(&snap, chunks(runs(&[(2, 1), (3, 1)])))),
            ("empty run", edited(&snap, chunks(runs(&[(3, 0)])))),
            (
                "short",
                edited(&snap, chunks(memory(&[(3, 1)], vec![], CHUNK - 1))),
            ),
            (
                "long",
                edited(&snap, chunks(memory(&[(3, 1)], vec![], CHUNK + 1))),
            ),
            ("beyond", edited(&snap, chunks(runs(&[(15, 2)])))),
            (
                "index overflow",
                edited(&snap, chunks(runs(&[(u64::MAX.into(), 1)]))),
            ),
            ("negative index", edited(&snap, chunks(runs(&[(-1, 1)])))),
            (
                "padding not zero",
                edited(&snap, chunks(memory(&[(3, 1)], vec![0, 7], CHUNK))),
            ),
            (
                "padding too long",
                edited(&snap, chunks(memory(&[(3, 1)], vec![0; 2 * CHUNK], CHUNK))),
            ),
            (
                "not a run",
                edited(
                    &snap,
                    chunks(Cbor::Array(vec![
                        Cbor::Array(vec![Cbor::Array(vec![Cbor::Integer(1.into())])]),
                        Cbor::Bytes(vec![]),
                        Cbor::Bytes(vec![1; CHUNK]),
                    ])),
                ),
            ),
            (
                "version 1 pairs",
                edited(&snap, chunks(Cbor::Array(vec![pair(3)]))),
            ),
            (
                "not an array",
                edited(&snap, |e| *entry(e, "memory_chunks") = Cbor::Null),
            ),
            ("pages text", edited(&snap, pages(Cbor::Text("1".into())))),
            (
                "pages negative",
                edited(&snap, pages(Cbor::Integer((-1).into()))),
            ),
            (
                "pages 65537",
                edited(&snap, pages(Cbor::Integer(65537.into()))),
            ),
            (
                "pages missing",
                edited(&snap, |e| {
                    e.retain(|(k, _)| !matches!(k, Cbor::Text(s) if s == "memory_pages"))
                }),
            ),
            (
                "pages renamed",
                edited(&snap, |e| {
                    for (k, _) in e.iter_mut() {
                        if matches!(k, Cbor::Text(s) if s == "memory_pages") {
                            *k = Cbor::Text("memory_pageZ".into());
                        }
                    }
                }),
            ),
        ];
        for (what, bad) in cases {
            assert!(SnapshotMemory::parse(&bad).is_err(), "{what}: parsed");
            assert!(
                ResidentObject::restore(&engine, &bad).is_err(),
                "{what}: restored"
            );
        }
        // The greatest memory: 4 GiB, only viewed (a restore refuses it above the cap).
        let max = edited(&snap, pages(Cbor::Integer(65536.into())));
        if cfg!(target_pointer_width = "64") {
            let view = SnapshotMemory::parse(&max).unwrap();
            assert_eq!(view.len() as u64, 1 << 32);
            let mut tail = [FILL; 5000];
            assert!(view.copy_into(view.len() - 5000, &mut tail));
            assert_eq!(tail, [0; 5000]);
        }
        // And the chunk at the very end of a memory is in it.
        let last = edited(&snap, chunks(runs(&[(0, 1), (15, 1)])));
        let view = SnapshotMemory::parse(&last).unwrap();
        let mut tail = [0u8; 4097];
        assert!(view.copy_into(65536 - 4097, &mut tail));
        assert_eq!((tail[0], tail[1], tail[4096]), (0, 1, 1));
        assert!(ResidentObject::restore(&engine, &last).is_ok());
    }

    #[test]
    fn truncated_or_corrupted_snapshots_are_errors_never_panics() {
        let mut obj = object(PARTIAL, 4);
        let snap = obj.snapshot().unwrap();
        let full = SnapshotMemory::parse(&snap).unwrap();
        for len in 0..snap.len() {
            assert!(
                SnapshotMemory::parse(&snap[..len]).is_err(),
                "truncated at {len}"
            );
        }
        let mut magic = snap.clone();
        magic[0] = b'X';
        assert_eq!(
            SnapshotMemory::parse(&magic).unwrap_err(),
            SnapshotError::NotASnapshot(40)
        );
        let mut version = snap.clone();
        version[7] = 3;
        assert_eq!(
            SnapshotMemory::parse(&version).unwrap_err(),
            SnapshotError::UnsupportedVersion(3)
        );
        // The checksum is not checked.
        let mut sum = snap.clone();
        let last = sum.len() - 1;
        sum[last] ^= 0xff;
        assert_eq!(SnapshotMemory::parse(&sum).unwrap().len(), full.len());
        // Structural bytes: the map head, the pages' length (the last byte of their head,
        // right before the first chunk).
        let mut map = snap.clone();
        map[8] ^= 0x01;
        assert!(SnapshotMemory::parse(&map).is_err());
        let (_, first) = full.chunks_in_snapshot().unwrap()[0];
        let at = first.as_ptr() as usize - snap.as_ptr() as usize - 1;
        assert_eq!(snap[at], 0, "a whole number of chunks");
        for flip in [0x01u8, 0x10, 0x80] {
            let mut len = snap.clone();
            len[at] ^= flip;
            assert!(
                SnapshotMemory::parse(&len).is_err(),
                "length flip {flip:#x}"
            );
        }
        // Any flip anywhere: an error, or a memory that copies whole.
        let mut parsed = 0;
        for i in 0..snap.len() {
            for flip in [0x01u8, 0x10, 0x80, 0xff] {
                let mut bad = snap.clone();
                bad[i] ^= flip;
                if let Ok(view) = SnapshotMemory::parse(&bad) {
                    assert!(i >= 8, "header flip at {i} accepted");
                    assert_eq!(view.len() % 65536, 0);
                    let mut all = vec![0; view.len()];
                    assert!(view.copy_into(0, &mut all));
                    parsed += 1;
                }
            }
        }
        // Flips inside byte strings (module, chunks) are still snapshots.
        assert!(parsed > 0);
    }

    #[test]
    fn the_view_can_be_shared_between_threads() {
        fn shared<T: Send + Sync + std::fmt::Debug>(_: &T) {}
        let mut obj = object(SMALL, 2);
        let snap = obj.snapshot().unwrap();
        let view = SnapshotMemory::parse(&snap).unwrap();
        shared(&view);
        assert_eq!(
            format!("{view:?}"),
            "SnapshotMemory { len: 65536, chunks: 3 }"
        );
    }
}
