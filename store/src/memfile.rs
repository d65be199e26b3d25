//! Memory images in files of their own (format version 3).
//!
//! A whole memory image (what [`crate::Op::PutMemory`] writes: a first checkpoint, an
//! arrived object) is no longer a run of ~1 MiB redb records but one file in the store's
//! `memory/` directory, named after the object and a fresh random name. The file holds the
//! image's segments sealed exactly as version 2 sealed them in the `memory` table (AES-256-GCM
//! under a key derived from each segment's random salt, bound to `memory` ‖ object ‖ segment
//! number), one after the other. The store records the file in `memory_files`: one ordinary
//! sealed record per object with the file's name, the memory's length and every segment's
//! salt and tag. That record is in the accumulator like any other, and it pins every byte of
//! the file: a segment is accepted only with the salt and tag the record names, and the tag
//! authenticates its ciphertext. So a file altered, swapped for another object's, or rolled
//! back to an older image is refused exactly like a record would be.
//!
//! Why a file: redb copies a value into a page buffer of its own, and then writes and
//! fsyncs it (64 MiB cost ~2–3× a plain write and fdatasync of the same bytes); and an
//! image written apart from the commit can be written *ahead* of it, on another thread
//! ([`crate::Store::stage_memory`]), while the host does other work (restoring an arrived
//! object from the same bytes).
//!
//! Durability: a file is written, fdatasync'ed and its directory entry fsync'ed before any
//! commit may name it, so a durable record never names a file that is not durable. A file
//! no record names (staged and never committed, or replaced by a newer image, with a crash
//! before it was deleted) is deleted when the store is next opened.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::Table;
use crate::raw;
use crate::seal::{memory_value_len, Sealer, NONCE_LEN, TAG_LEN};
use crate::{ObjectKey, StoreError, MEMORY_SEGMENT};

const RECORD_MAGIC: &[u8; 4] = b"SJMF";
const RECORD_VERSION: u8 = 1;
/// Salt and tag of one sealed segment.
const SEAL_LEN: usize = NONCE_LEN + TAG_LEN;
/// A large image is fdatasync'ed on a second thread every this many bytes while it is
/// written (see `write_image`).
const EARLY_SYNC: usize = 8 << 20;

/// What the store records of a memory-image file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileRecord {
    pub(crate) name: [u8; 16],
    pub(crate) len: u64,
    /// Per segment: salt ‖ tag.
    pub(crate) seals: Vec<[u8; SEAL_LEN]>,
}

impl FileRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 1 + 16 + 8 + 4 + self.seals.len() * SEAL_LEN);
        out.extend_from_slice(RECORD_MAGIC);
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.name);
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&(self.seals.len() as u32).to_be_bytes());
        for s in &self.seals {
            out.extend_from_slice(s);
        }
        out
    }

    /// `None` unless `bytes` is exactly a record whose segment count fits its length.
    pub(crate) fn decode(bytes: &[u8]) -> Option<FileRecord> {
        let rest = bytes.strip_prefix(RECORD_MAGIC)?;
        let (&version, rest) = rest.split_first()?;
        if version != RECORD_VERSION {
            return None;
        }
        let (name, rest) = rest.split_at_checked(16)?;
        let (len, rest) = rest.split_at_checked(8)?;
        let (count, rest) = rest.split_at_checked(4)?;
        let len = u64::from_be_bytes(len.try_into().ok()?);
        let count = u32::from_be_bytes(count.try_into().ok()?) as usize;
        let expected = usize::try_from(len).ok()?.div_ceil(MEMORY_SEGMENT);
        if count != expected || rest.len() != count.checked_mul(SEAL_LEN)? {
            return None;
        }
        let seals = rest
            .chunks_exact(SEAL_LEN)
            .map(|c| c.try_into().ok())
            .collect::<Option<Vec<[u8; SEAL_LEN]>>>()?;
        Some(FileRecord {
            name: name.try_into().ok()?,
            len,
            seals,
        })
    }

    /// The exact length of the file.
    fn file_len(&self) -> Option<u64> {
        let len = usize::try_from(self.len).ok()?;
        let full = len / MEMORY_SEGMENT;
        let last = len % MEMORY_SEGMENT;
        let mut total = full.checked_mul(memory_value_len(MEMORY_SEGMENT))?;
        if last > 0 {
            total = total.checked_add(memory_value_len(last))?;
        }
        u64::try_from(total).ok()
    }
}

/// A memory image written to a file of the store's and made durable, but not yet part of
/// the store: [`crate::Op::PutStagedMemory`] makes it the object's memory image in a commit.
/// Made by [`crate::Store::stage_memory`]. Until a commit takes it, dropping the last clone
/// deletes the file (and a crash leaves it to be deleted at the next open). A staged image
/// is taken by one commit of the store that staged it, for the object it was staged for.
#[derive(Clone)]
pub struct StagedMemory(Arc<StagedFile>);

struct StagedFile {
    store_id: [u8; 16],
    id: ObjectKey,
    path: PathBuf,
    record: FileRecord,
    /// Named by a commit (or by a commit that may have reached the disk): kept.
    kept: AtomicBool,
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.kept.load(Ordering::SeqCst) {
            // Best effort: what stays is deleted at the next open.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl StagedMemory {
    /// The object it was staged for.
    pub fn object(&self) -> &ObjectKey {
        &self.0.id
    }

    /// The memory's length in bytes.
    pub fn len(&self) -> u64 {
        self.0.record.len
    }

    /// Whether the memory is empty.
    pub fn is_empty(&self) -> bool {
        self.0.record.len == 0
    }

    pub(crate) fn store_id(&self) -> &[u8; 16] {
        &self.0.store_id
    }

    pub(crate) fn record(&self) -> &FileRecord {
        &self.0.record
    }

    pub(crate) fn is_kept(&self) -> bool {
        self.0.kept.load(Ordering::SeqCst)
    }

    /// Keeps the file from now on (a commit names it, or may have).
    pub(crate) fn keep(&self) {
        self.0.kept.store(true, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for StagedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedMemory")
            .field("object", &hex::encode(self.0.id))
            .field("file", &self.0.path)
            .field("len", &self.0.record.len)
            .finish_non_exhaustive()
    }
}

impl PartialEq for StagedMemory {
    fn eq(&self, other: &Self) -> bool {
        self.0.store_id == other.0.store_id
            && self.0.id == other.0.id
            && self.0.record == other.0.record
    }
}

impl Eq for StagedMemory {}

/// Writes `len` bytes of memory, taken from `fill(offset, out)` a segment at a time, to a new
/// file in `dir`, sealed for object `id`; fdatasyncs it and fsyncs `dir`. `fill` returns
/// false if it cannot give those bytes.
pub(crate) fn write_image(
    sealer: &Sealer,
    dir: &Path,
    store_id: [u8; 16],
    id: &ObjectKey,
    len: usize,
    fill: &mut dyn FnMut(usize, &mut [u8]) -> bool,
) -> Result<StagedMemory, StoreError> {
    let io = |path: &Path, source: std::io::Error| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    if len.div_ceil(MEMORY_SEGMENT) > u32::MAX as usize {
        return Err(StoreError::MemoryTooLarge { id: *id, len });
    }
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent).map_err(|e| io(parent, e))?;
        }
    }
    let mut name = [0u8; 16];
    getrandom::fill(&mut name).map_err(|e| StoreError::Random(e.to_string()))?;
    let path = dir.join(raw::memory_file_name(id, &name));
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io(&path, e))?;
    // From here on, an error drops `staged`, which deletes the file.
    let mut staged = StagedFile {
        store_id,
        id: *id,
        path,
        record: FileRecord {
            name,
            len: len as u64,
            seals: Vec::with_capacity(len.div_ceil(MEMORY_SEGMENT)),
        },
        kept: AtomicBool::new(false),
    };
    // Each segment is written by `fill` where its ciphertext goes, and sealed there.
    let mut sealed = vec![0u8; memory_value_len(len.min(MEMORY_SEGMENT))];
    // Writeback of a large image starts while later segments are sealed: another handle of
    // the file is fdatasync'ed every `EARLY_SYNC` bytes on a second thread, so the final
    // fdatasync waits only for the tail. A failure there fails the image (the error may be
    // reported to that call only).
    let early = len >= 2 * EARLY_SYNC;
    let synced_ok = AtomicBool::new(true);
    std::thread::scope(|scope| -> Result<(), StoreError> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let syncer = early
            .then(|| file.try_clone().ok())
            .flatten()
            .and_then(|clone| {
                std::thread::Builder::new()
                    .name("sojourn-image-sync".into())
                    .spawn_scoped(scope, {
                        let synced_ok = &synced_ok;
                        move || {
                            while rx.recv().is_ok() {
                                while rx.try_recv().is_ok() {}
                                if clone.sync_data().is_err() {
                                    synced_ok.store(false, Ordering::SeqCst);
                                }
                            }
                        }
                    })
                    .ok()
            });
        let mut offset = 0usize;
        let mut since_sync = 0usize;
        for index in 0u32.. {
            let n = (len - offset).min(MEMORY_SEGMENT);
            if n == 0 {
                break;
            }
            let value_len = memory_value_len(n);
            let Some(value) = sealed.get_mut(..value_len) else {
                return Err(StoreError::KeyUnavailable("segment buffer".into()));
            };
            let Some(plain) = value.get_mut(NONCE_LEN..NONCE_LEN + n) else {
                return Err(StoreError::KeyUnavailable("segment buffer".into()));
            };
            if !fill(offset, plain) {
                return Err(StoreError::StagedMemory {
                    id: *id,
                    reason: "the memory source ended before the image's length",
                });
            }
            sealer.seal_memory_in_place(&raw::chunk_key(id, index), value)?;
            let mut seal = [0u8; SEAL_LEN];
            let (salt, tag) = seal.split_at_mut(NONCE_LEN);
            salt.copy_from_slice(value.get(..NONCE_LEN).unwrap_or_default());
            tag.copy_from_slice(value.get(value.len() - TAG_LEN..).unwrap_or_default());
            staged.record.seals.push(seal);
            file.write_all(value).map_err(|e| io(&staged.path, e))?;
            offset += n;
            since_sync += value_len;
            if syncer.is_some() && since_sync >= EARLY_SYNC {
                since_sync = 0;
                let _ = tx.send(());
            }
        }
        drop(tx);
        if let Some(s) = syncer {
            let _ = s.join();
        }
        Ok(())
    })?;
    file.sync_data().map_err(|e| io(&staged.path, e))?;
    if !synced_ok.load(Ordering::SeqCst) {
        return Err(io(
            &staged.path,
            std::io::Error::other("an early fdatasync of the image failed"),
        ));
    }
    drop(file);
    sync_dir(dir).map_err(|e| io(dir, e))?;
    // Durable; deleted on drop until a commit takes it.
    Ok(StagedMemory(Arc::new(staged)))
}

/// Why a memory-image file cannot be read: the path and what is wrong with it.
pub(crate) struct ReadError {
    pub(crate) path: PathBuf,
    pub(crate) detail: String,
}

/// Reads and unseals the image `record` names for object `id` from `dir`, checking that the
/// file is exactly the record's: its length, and each segment's salt and tag.
pub(crate) fn read_image(
    sealer: &Sealer,
    dir: &Path,
    id: &ObjectKey,
    record: &FileRecord,
) -> Result<Vec<u8>, ReadError> {
    let path = dir.join(raw::memory_file_name(id, &record.name));
    let fail = |detail: String| ReadError {
        path: path.clone(),
        detail,
    };
    let mut file = File::open(&path).map_err(|e| fail(format!("cannot open it: {e}")))?;
    let expected = record
        .file_len()
        .ok_or_else(|| fail("its recorded length is impossible".into()))?;
    let actual = file
        .metadata()
        .map_err(|e| fail(format!("cannot read it: {e}")))?
        .len();
    if actual != expected {
        return Err(fail(format!(
            "it is {actual} bytes long, its record says {expected}"
        )));
    }
    let len = usize::try_from(record.len).map_err(|_| fail("too large".into()))?;
    let mut memory = Vec::with_capacity(len);
    let mut value = vec![0u8; memory_value_len(len.min(MEMORY_SEGMENT))];
    for (index, seal) in (0u32..).zip(&record.seals) {
        let n = (len - memory.len()).min(MEMORY_SEGMENT);
        let value = value
            .get_mut(..memory_value_len(n))
            .ok_or_else(|| fail("segment buffer".into()))?;
        file.read_exact(value)
            .map_err(|e| fail(format!("cannot read segment {index}: {e}")))?;
        let salt_ok = value.get(..NONCE_LEN) == seal.get(..NONCE_LEN);
        let tag_ok = value.get(value.len() - TAG_LEN..) == seal.get(NONCE_LEN..);
        if !salt_ok || !tag_ok {
            return Err(fail(format!(
                "segment {index} is not the one its record names (replaced or rolled back)"
            )));
        }
        let plain = sealer
            .unseal(Table::Memory, &raw::chunk_key(id, index), value)
            .map_err(|e| fail(format!("segment {index}: {}", e.describe())))?;
        memory.extend_from_slice(&plain);
    }
    Ok(memory)
}

/// Deletes the files in `dir` that look like memory images and are not in `keep`. Returns
/// how many it deleted. Best effort: a file it cannot delete stays.
pub(crate) fn collect_garbage(dir: &Path, keep: &std::collections::BTreeSet<String>) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut deleted = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_image_name(name) && !keep.contains(name) && std::fs::remove_file(entry.path()).is_ok()
        {
            deleted += 1;
        }
    }
    deleted
}

/// `<32 hex>-<32 hex>.img`.
fn is_image_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".img") else {
        return false;
    };
    let Some((id, random)) = stem.split_once('-') else {
        return false;
    };
    id.len() == 32
        && random.len() == 32
        && id
            .bytes()
            .chain(random.bytes())
            .all(|b| b.is_ascii_hexdigit())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_what_does_not_fit() {
        let r = FileRecord {
            name: [7; 16],
            len: (MEMORY_SEGMENT * 2 + 4096) as u64,
            seals: vec![[1; SEAL_LEN], [2; SEAL_LEN], [3; SEAL_LEN]],
        };
        let bytes = r.encode();
        assert_eq!(FileRecord::decode(&bytes), Some(r.clone()));
        for cut in 0..bytes.len() {
            assert_eq!(FileRecord::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(FileRecord::decode(&longer), None);
        // A segment count that does not match the length.
        let mut short = r.clone();
        short.seals.pop();
        assert_eq!(FileRecord::decode(&short.encode()), None);
        assert_eq!(
            r.file_len(),
            Some((2 * memory_value_len(MEMORY_SEGMENT) + memory_value_len(4096)) as u64)
        );
    }

    #[test]
    fn image_names_are_recognised_exactly() {
        let good = raw::memory_file_name(&[0xab; 16], &[0x01; 16]);
        assert!(is_image_name(&good));
        assert!(!is_image_name("store.redb"));
        assert!(!is_image_name(&good.replace(".img", ".tmp")));
        assert!(!is_image_name(&format!("x{good}")));
        assert!(!is_image_name(&good.replace('-', "_")));
    }
}
