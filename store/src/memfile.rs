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
//! Format 4 adds *keyed images* ([`KeyedImage`]): a file the store writes as it is given,
//! ciphertext it did not seal (a destination keeps an arrived migration package this way,
//! instead of decrypting, copying and sealing its memory again), with a record (version 2)
//! that keeps the key and associated data that open it and where the memory's chunks are in
//! its plaintext. The key pins the file as salts and tags do: a segment is accepted only if
//! its tag verifies under that key, at its index, with that associated data.
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
use crate::{ObjectKey, StoreError, CHUNK_SIZE, MEMORY_SEGMENT};

const RECORD_MAGIC: &[u8; 4] = b"SJMF";
const RECORD_VERSION: u8 = 1;
/// The record of a keyed image ([`KeyedImage`], format version 4).
const KEYED_RECORD_VERSION: u8 = 2;
/// The longest associated data a keyed image may have.
const MAX_KEYED_AAD: usize = 4096;
/// Length of a keyed image's AES-256-GCM tags.
const KEYED_TAG_LEN: usize = 16;
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
    pub(crate) seal: ImageSeal,
}

/// How a memory-image file is sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ImageSeal {
    /// By the store: per segment, salt ‖ tag.
    Store(Vec<[u8; SEAL_LEN]>),
    /// Elsewhere: a file the store did not seal itself, and how to open it.
    Keyed(KeyedImage),
}

/// `count` memory chunks of [`CHUNK_SIZE`] bytes in a keyed image's plaintext: the `k`-th
/// (from 0) at plaintext offset `plain + k·stride`, laid at memory offset
/// `memory + k·CHUNK_SIZE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageRun {
    /// Plaintext offset of the first chunk.
    pub plain: u64,
    /// Plaintext distance from one chunk to the next (at least [`CHUNK_SIZE`]).
    pub stride: u64,
    /// Memory offset of the first chunk (a multiple of [`CHUNK_SIZE`]).
    pub memory: u64,
    /// How many chunks (at least 1).
    pub count: u32,
}

/// A memory image whose file the store writes as it is given and did not seal itself, with
/// the key that opens it (kept in the store's sealed record, never in the file): what a
/// destination keeps of an arriving object's migration package, written to disk as its bytes
/// arrive instead of sealed anew after it was opened.
///
/// The file is `skip` bytes the store does not read, then `plaintext_len` bytes of
/// AES-256-GCM ciphertext in segments of `segment` bytes (the last shorter, or one empty
/// segment if `plaintext_len` is 0), then one 16-byte tag per segment in order. Segment `i`
/// is sealed with nonce `i` (u64, big-endian) ‖ `last` (u32, big-endian: 1 for the last
/// segment, else 0) and associated data `aad`: the STREAM layout of a migration package. The
/// memory is zero except for the chunks `runs` place.
///
/// The store checks the layout's arithmetic when the image is staged and authenticates every
/// segment whenever it reads the file (at open, as for its own images, and at load).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyedImage {
    /// The AES-256-GCM key.
    pub key: zeroize::Zeroizing<[u8; 32]>,
    /// The associated data of every segment (at most 4096 bytes).
    pub aad: Vec<u8>,
    /// Bytes before the ciphertext (a clear header).
    pub skip: u64,
    /// Bytes of ciphertext.
    pub plaintext_len: u64,
    /// Plaintext bytes per segment.
    pub segment: u32,
    /// Where the memory's chunks are, ascending and disjoint in memory.
    pub runs: Vec<ImageRun>,
}

impl std::fmt::Debug for KeyedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedImage")
            .field("skip", &self.skip)
            .field("plaintext_len", &self.plaintext_len)
            .field("segment", &self.segment)
            .field("runs", &self.runs.len())
            .finish_non_exhaustive()
    }
}

impl KeyedImage {
    /// How many segments the ciphertext has.
    fn segments(&self) -> Option<u64> {
        if self.segment == 0 {
            return None;
        }
        Some(self.plaintext_len.div_ceil(u64::from(self.segment)).max(1))
    }

    /// The file's exact length.
    fn file_len(&self) -> Option<u64> {
        self.skip
            .checked_add(self.plaintext_len)?
            .checked_add(self.segments()?.checked_mul(KEYED_TAG_LEN as u64)?)
    }

    /// Whether the layout fits a memory of `len` bytes: a segment size, a bounded AAD, and
    /// every run inside the plaintext and the memory, chunk-aligned, ascending and disjoint.
    fn fits(&self, len: u64) -> bool {
        let chunk = CHUNK_SIZE as u64;
        if self.aad.len() > MAX_KEYED_AAD || self.file_len().is_none() {
            return false;
        }
        let mut memory_end = 0u64;
        for r in &self.runs {
            let count = u64::from(r.count);
            let plain_end = count
                .checked_sub(1)
                .and_then(|k| k.checked_mul(r.stride))
                .and_then(|o| o.checked_add(r.plain))
                .and_then(|o| o.checked_add(chunk));
            let run_end = count
                .checked_mul(chunk)
                .and_then(|n| n.checked_add(r.memory));
            let ok = r.stride >= chunk
                && r.memory % chunk == 0
                && r.memory >= memory_end
                && plain_end.is_some_and(|e| e <= self.plaintext_len)
                && run_end.is_some_and(|e| e <= len);
            if !ok {
                return false;
            }
            memory_end = run_end.unwrap_or(u64::MAX);
        }
        true
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.key.as_slice());
        out.extend_from_slice(&(self.aad.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.aad);
        out.extend_from_slice(&self.skip.to_be_bytes());
        out.extend_from_slice(&self.plaintext_len.to_be_bytes());
        out.extend_from_slice(&self.segment.to_be_bytes());
        out.extend_from_slice(&(self.runs.len() as u32).to_be_bytes());
        for r in &self.runs {
            out.extend_from_slice(&r.plain.to_be_bytes());
            out.extend_from_slice(&r.stride.to_be_bytes());
            out.extend_from_slice(&r.memory.to_be_bytes());
            out.extend_from_slice(&r.count.to_be_bytes());
        }
    }

    fn decode(bytes: &[u8]) -> Option<KeyedImage> {
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            *rest = tail;
            Some(head)
        }
        fn u32_of(rest: &mut &[u8]) -> Option<u32> {
            Some(u32::from_be_bytes(take(rest, 4)?.try_into().ok()?))
        }
        fn u64_of(rest: &mut &[u8]) -> Option<u64> {
            Some(u64::from_be_bytes(take(rest, 8)?.try_into().ok()?))
        }
        let mut rest = bytes;
        let key: [u8; 32] = take(&mut rest, 32)?.try_into().ok()?;
        let aad_len = u32_of(&mut rest)? as usize;
        if aad_len > MAX_KEYED_AAD {
            return None;
        }
        let aad = take(&mut rest, aad_len)?.to_vec();
        let skip = u64_of(&mut rest)?;
        let plaintext_len = u64_of(&mut rest)?;
        let segment = u32_of(&mut rest)?;
        let count = u32_of(&mut rest)? as usize;
        // Each run takes 28 bytes: a count that the rest cannot hold is refused before any
        // allocation.
        if rest.len() != count.checked_mul(28)? {
            return None;
        }
        let mut runs = Vec::with_capacity(count);
        for _ in 0..count {
            runs.push(ImageRun {
                plain: u64_of(&mut rest)?,
                stride: u64_of(&mut rest)?,
                memory: u64_of(&mut rest)?,
                count: u32_of(&mut rest)?,
            });
        }
        Some(KeyedImage {
            key: zeroize::Zeroizing::new(key),
            aad,
            skip,
            plaintext_len,
            segment,
            runs,
        })
    }

    /// Authenticates and decrypts the ciphertext of `file` (the whole file, in place) and
    /// lays the memory of `len` bytes out of it.
    fn open(&self, file: &mut [u8], len: usize) -> Result<Vec<u8>, String> {
        use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
        let key = UnboundKey::new(&AES_256_GCM, self.key.as_slice())
            .map(LessSafeKey::new)
            .map_err(|_| "the key is refused".to_string())?;
        let bad = || "the layout does not fit the file".to_string();
        let skip = usize::try_from(self.skip).map_err(|_| bad())?;
        let plain_len = usize::try_from(self.plaintext_len).map_err(|_| bad())?;
        let n = usize::try_from(self.segments().ok_or_else(bad)?).map_err(|_| bad())?;
        let body = file.get_mut(skip..).ok_or_else(bad)?;
        let (text, tags) = body.split_at_mut_checked(plain_len).ok_or_else(bad)?;
        let segment = self.segment as usize;
        for i in 0..n {
            let start = i.saturating_mul(segment).min(plain_len);
            let end = start.saturating_add(segment).min(plain_len);
            let tag: [u8; KEYED_TAG_LEN] = tags
                .get(i * KEYED_TAG_LEN..(i + 1) * KEYED_TAG_LEN)
                .and_then(|t| t.try_into().ok())
                .ok_or_else(bad)?;
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
            if i + 1 == n {
                nonce[8..].copy_from_slice(&1u32.to_be_bytes());
            }
            let part = text.get_mut(start..end).ok_or_else(bad)?;
            key.open_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad.as_slice()),
                Tag::from(tag),
                part,
                0..,
            )
            .map_err(|_| format!("segment {i} does not authenticate (altered or replaced)"))?;
        }
        let mut memory = vec![0u8; len];
        for r in &self.runs {
            for k in 0..u64::from(r.count) {
                let from = usize::try_from(r.plain + k * r.stride).map_err(|_| bad())?;
                let to = usize::try_from(r.memory + k * CHUNK_SIZE as u64).map_err(|_| bad())?;
                let src = text.get(from..from + CHUNK_SIZE).ok_or_else(bad)?;
                memory
                    .get_mut(to..to + CHUNK_SIZE)
                    .ok_or_else(bad)?
                    .copy_from_slice(src);
            }
        }
        Ok(memory)
    }
}

impl FileRecord {
    /// Whether the file is a keyed image.
    pub(crate) fn is_keyed(&self) -> bool {
        matches!(self.seal, ImageSeal::Keyed(_))
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let (version, tail) = match &self.seal {
            ImageSeal::Store(seals) => (RECORD_VERSION, 4 + seals.len() * SEAL_LEN),
            ImageSeal::Keyed(k) => (KEYED_RECORD_VERSION, 64 + k.aad.len() + 28 * k.runs.len()),
        };
        let mut out = Vec::with_capacity(4 + 1 + 16 + 8 + tail);
        out.extend_from_slice(RECORD_MAGIC);
        out.push(version);
        out.extend_from_slice(&self.name);
        out.extend_from_slice(&self.len.to_be_bytes());
        match &self.seal {
            ImageSeal::Store(seals) => {
                out.extend_from_slice(&(seals.len() as u32).to_be_bytes());
                for s in seals {
                    out.extend_from_slice(s);
                }
            }
            ImageSeal::Keyed(keyed) => keyed.encode_into(&mut out),
        }
        out
    }

    /// `None` unless `bytes` is exactly a record whose segment count fits its length.
    pub(crate) fn decode(bytes: &[u8]) -> Option<FileRecord> {
        let rest = bytes.strip_prefix(RECORD_MAGIC)?;
        let (&version, rest) = rest.split_first()?;
        if version != RECORD_VERSION && version != KEYED_RECORD_VERSION {
            return None;
        }
        let (name, rest) = rest.split_at_checked(16)?;
        let (len, rest) = rest.split_at_checked(8)?;
        let len = u64::from_be_bytes(len.try_into().ok()?);
        if version == KEYED_RECORD_VERSION {
            let keyed = KeyedImage::decode(rest).filter(|k| k.fits(len))?;
            return Some(FileRecord {
                name: name.try_into().ok()?,
                len,
                seal: ImageSeal::Keyed(keyed),
            });
        }
        let (count, rest) = rest.split_at_checked(4)?;
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
            seal: ImageSeal::Store(seals),
        })
    }

    /// The exact length of the file.
    fn file_len(&self) -> Option<u64> {
        if let ImageSeal::Keyed(keyed) = &self.seal {
            return keyed.file_len();
        }
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
    if len.div_ceil(MEMORY_SEGMENT) > u32::MAX as usize {
        return Err(StoreError::MemoryTooLarge { id: *id, len });
    }
    // From here on, an error drops `staged`, which deletes the file.
    let (mut file, mut staged) = create_file(dir, store_id, id)?;
    staged.record.len = len as u64;
    let mut seals = Vec::with_capacity(len.div_ceil(MEMORY_SEGMENT));
    // Each segment is written by `fill` where its ciphertext goes, and sealed there.
    let mut sealed = vec![0u8; memory_value_len(len.min(MEMORY_SEGMENT))];
    // Writeback of a large image starts while later segments are sealed: another handle of
    // the file is fdatasync'ed every `EARLY_SYNC` bytes on a second thread, so the final
    // fdatasync waits only for the tail. A failure there fails the image (the error may be
    // reported to that call only).
    let syncer = (len >= 2 * EARLY_SYNC)
        .then(|| start_syncer(&file))
        .flatten();
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
        seals.push(seal);
        file.write_all(value).map_err(|e| io_err(&staged.path, e))?;
        offset += n;
        since_sync += value_len;
        if since_sync >= EARLY_SYNC {
            since_sync = 0;
            if let Some((tx, _)) = &syncer {
                let _ = tx.send(());
            }
        }
    }
    // The early fdatasyncs' outcome (a failure fails the image: the error may have been
    // reported to that call only).
    let early_ok = stop_syncer(syncer);
    file.sync_data().map_err(|e| io_err(&staged.path, e))?;
    if !early_ok {
        return Err(io_err(
            &staged.path,
            std::io::Error::other("an early fdatasync of the image failed"),
        ));
    }
    drop(file);
    sync_dir(dir).map_err(|e| io_err(dir, e))?;
    staged.record.seal = ImageSeal::Store(seals);
    // Durable; deleted on drop until a commit takes it.
    Ok(StagedMemory(Arc::new(staged)))
}

fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates a new image file for object `id` in `dir` (and `dir` if need be), with a fresh
/// random name: the file, and its staged handle (which deletes it when dropped unkept).
fn create_file(
    dir: &Path,
    store_id: [u8; 16],
    id: &ObjectKey,
) -> Result<(File, StagedFile), StoreError> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent).map_err(|e| io_err(parent, e))?;
        }
    }
    let mut name = [0u8; 16];
    getrandom::fill(&mut name).map_err(|e| StoreError::Random(e.to_string()))?;
    let path = dir.join(raw::memory_file_name(id, &name));
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_err(&path, e))?;
    let staged = StagedFile {
        store_id,
        id: *id,
        path,
        record: FileRecord {
            name,
            len: 0,
            seal: ImageSeal::Store(Vec::new()),
        },
        kept: AtomicBool::new(false),
    };
    Ok((file, staged))
}

/// A keyed image being written ([`crate::Store::stage_keyed_image`]), piece by piece at the
/// offsets its bytes have in the file, from any number of threads: a destination writes each
/// segment of an arrived package just before it decrypts that segment in place, or the
/// package's blocks while it arrives. Aligned writes go to the device directly; for the
/// others, writeback starts while the file is written: another handle of the file is
/// fdatasync'ed every 8 MiB on a thread of its own, so [`KeyedImageWriter::finish`] waits
/// only for the tail. Dropped before it is finished, it deletes its file.
pub struct KeyedImageWriter {
    file: File,
    /// The same file opened for direct I/O (`O_DIRECT`) at the first aligned write, where the
    /// file system allows it: such writes go straight to the device, without the page cache.
    direct: std::sync::OnceLock<Option<File>>,
    /// Bytes written with direct I/O.
    written_direct: std::sync::atomic::AtomicU64,
    staged: StagedFile,
    dir: PathBuf,
    /// Bytes written, in all.
    written: std::sync::atomic::AtomicU64,
    /// Bytes written since the last early fdatasync was asked for.
    since_sync: std::sync::atomic::AtomicUsize,
    /// A write failed: the image cannot be finished.
    failed: AtomicBool,
    /// The early-fdatasync thread, started when the first 8 MiB have been written (`None`
    /// inside if it could not be started).
    syncer: std::sync::OnceLock<Option<Syncer>>,
}

/// A thread that fdatasyncs a clone of the file each time it is asked, and says at the end
/// whether every call succeeded.
type Syncer = (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<bool>);

fn start_syncer(file: &File) -> Option<Syncer> {
    let clone = file.try_clone().ok()?;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("sojourn-image-sync".into())
        .spawn(move || {
            let mut ok = true;
            while rx.recv().is_ok() {
                while rx.try_recv().is_ok() {}
                ok &= clone.sync_data().is_ok();
            }
            ok
        })
        .ok()
        .map(|h| (tx, h))
}

/// Waits for the syncer's last fdatasync: whether every one succeeded (true without one).
fn stop_syncer(syncer: Option<Syncer>) -> bool {
    match syncer {
        Some((tx, handle)) => {
            drop(tx);
            handle.join().unwrap_or(false)
        }
        None => true,
    }
}

impl std::fmt::Debug for KeyedImageWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedImageWriter")
            .field("file", &self.staged.path)
            .field("written", &self.written())
            .finish_non_exhaustive()
    }
}

pub(crate) fn keyed_writer(
    dir: &Path,
    store_id: [u8; 16],
    id: &ObjectKey,
) -> Result<KeyedImageWriter, StoreError> {
    let (file, staged) = create_file(dir, store_id, id)?;
    Ok(KeyedImageWriter {
        file,
        direct: std::sync::OnceLock::new(),
        written_direct: std::sync::atomic::AtomicU64::new(0),
        staged,
        dir: dir.to_path_buf(),
        written: std::sync::atomic::AtomicU64::new(0),
        since_sync: std::sync::atomic::AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        syncer: std::sync::OnceLock::new(),
    })
}

/// What [`KeyedImageWriter::write_at`] writes with direct I/O: bytes at an address, a file
/// offset and of a length that are all multiples of this (4 KiB, a whole logical block on
/// the devices the clouds attach).
pub const DIRECT_ALIGN: usize = 4096;

#[cfg(target_os = "linux")]
const EINVAL: i32 = libc::EINVAL;
#[cfg(not(target_os = "linux"))]
const EINVAL: i32 = 22;

fn direct_aligned(offset: u64, bytes: &[u8]) -> bool {
    offset.is_multiple_of(DIRECT_ALIGN as u64)
        && bytes.len().is_multiple_of(DIRECT_ALIGN)
        && bytes.as_ptr().addr().is_multiple_of(DIRECT_ALIGN)
        && !bytes.is_empty()
}

/// Whether files in `dir` can be opened for direct I/O, as [`KeyedImageWriter::write_at`]
/// opens its file for aligned writes (it creates and removes a probe file). Where not, every
/// write goes through the page cache.
pub fn direct_io_supported(dir: &Path) -> bool {
    let probe = dir.join(".direct-io-probe");
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .is_ok();
    let direct = made && open_direct(&probe).is_some();
    let _ = std::fs::remove_file(&probe);
    direct
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<File> {
    None
}

impl KeyedImageWriter {
    /// Writes `bytes` at `offset` of the file. Every byte of the file is to be written
    /// exactly once; [`KeyedImageWriter::finish`] checks the count. Bytes whose address,
    /// offset and length are multiples of [`DIRECT_ALIGN`] are written with direct I/O where
    /// the file system allows it (straight to the device: no copy into the page cache and no
    /// writeback later), others through the page cache.
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt as _;
        if direct_aligned(offset, bytes) {
            let direct = self.direct.get_or_init(|| open_direct(&self.staged.path));
            if let Some(direct) = direct {
                match direct.write_all_at(bytes, offset) {
                    Ok(()) => {
                        self.written.fetch_add(bytes.len() as u64, Ordering::SeqCst);
                        self.written_direct
                            .fetch_add(bytes.len() as u64, Ordering::SeqCst);
                        return Ok(());
                    }
                    // The device wants a larger alignment: the bytes go through the page
                    // cache below (whole, over anything the direct write left).
                    Err(e) if e.raw_os_error() == Some(EINVAL) => {}
                    Err(e) => {
                        self.failed.store(true, Ordering::SeqCst);
                        return Err(io_err(&self.staged.path, e));
                    }
                }
            }
        }
        if let Err(e) = self.file.write_all_at(bytes, offset) {
            self.failed.store(true, Ordering::SeqCst);
            return Err(io_err(&self.staged.path, e));
        }
        self.written.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        let since = self.since_sync.fetch_add(bytes.len(), Ordering::SeqCst) + bytes.len();
        if since >= EARLY_SYNC {
            self.since_sync.store(0, Ordering::SeqCst);
            if let Some((tx, _)) = self.syncer.get_or_init(|| start_syncer(&self.file)) {
                let _ = tx.send(());
            }
        }
        Ok(())
    }

    /// How many bytes were written.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// How many of them were written with direct I/O.
    pub fn written_direct(&self) -> u64 {
        self.written_direct.load(Ordering::SeqCst)
    }

    /// Makes the file durable (fdatasync, then the directory's fsync) as the image of a memory
    /// of `len` bytes that `image` opens: refused unless every write succeeded, the layout
    /// fits that memory and as many bytes were written as the layout's file has. Its bytes are
    /// authenticated whenever the store reads them.
    pub fn finish(mut self, len: u64, image: KeyedImage) -> Result<StagedMemory, StoreError> {
        let id = self.staged.id;
        if self.failed.load(Ordering::SeqCst) {
            return Err(StoreError::StagedMemory {
                id,
                reason: "a write of the keyed image failed",
            });
        }
        if !image.fits(len) {
            return Err(StoreError::StagedMemory {
                id,
                reason: "the keyed image's layout does not fit its memory",
            });
        }
        if image.file_len() != Some(self.written()) {
            return Err(StoreError::StagedMemory {
                id,
                reason: "the keyed image's file is not as long as its layout",
            });
        }
        let early_ok = stop_syncer(self.syncer.take().flatten());
        let path = self.staged.path.clone();
        self.file.sync_data().map_err(|e| io_err(&path, e))?;
        if !early_ok {
            return Err(io_err(
                &path,
                std::io::Error::other("an early fdatasync of the image failed"),
            ));
        }
        sync_dir(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        let KeyedImageWriter { mut staged, .. } = self;
        staged.record.len = len;
        staged.record.seal = ImageSeal::Keyed(image);
        Ok(StagedMemory(Arc::new(staged)))
    }
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
    let seals = match &record.seal {
        ImageSeal::Store(seals) => seals,
        ImageSeal::Keyed(keyed) => {
            let mut bytes = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
            file.read_to_end(&mut bytes)
                .map_err(|e| fail(format!("cannot read it: {e}")))?;
            return keyed.open(&mut bytes, len).map_err(fail);
        }
    };
    let mut memory = Vec::with_capacity(len);
    let mut value = vec![0u8; memory_value_len(len.min(MEMORY_SEGMENT))];
    for (index, seal) in (0u32..).zip(seals) {
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

    /// `r` encodes to bytes that decode to it, and no shorter or longer bytes decode.
    fn assert_exact_encoding(r: &FileRecord) {
        let bytes = r.encode();
        assert_eq!(FileRecord::decode(&bytes).as_ref(), Some(r));
        for cut in 0..bytes.len() {
            assert_eq!(FileRecord::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(FileRecord::decode(&longer), None);
    }

    #[test]
    fn records_round_trip_and_refuse_what_does_not_fit() {
        let r = FileRecord {
            name: [7; 16],
            len: (MEMORY_SEGMENT * 2 + 4096) as u64,
            seal: ImageSeal::Store(vec![[1; SEAL_LEN], [2; SEAL_LEN], [3; SEAL_LEN]]),
        };
        assert_exact_encoding(&r);
        // A segment count that does not match the length.
        let mut short = r.clone();
        if let ImageSeal::Store(seals) = &mut short.seal {
            seals.pop();
        }
        assert_eq!(FileRecord::decode(&short.encode()), None);
        assert_eq!(
            r.file_len(),
            Some((2 * memory_value_len(MEMORY_SEGMENT) + memory_value_len(4096)) as u64)
        );
    }

    #[test]
    fn keyed_records_round_trip_and_refuse_what_does_not_fit() {
        let keyed = KeyedImage {
            key: zeroize::Zeroizing::new([5; 32]),
            aad: vec![1, 2, 3],
            skip: 74,
            plaintext_len: 3 * 4099 + 100,
            segment: 1 << 20,
            runs: vec![ImageRun {
                plain: 10,
                stride: 4099,
                memory: 8192,
                count: 3,
            }],
        };
        let r = FileRecord {
            name: [9; 16],
            len: 16 * 4096,
            seal: ImageSeal::Keyed(keyed.clone()),
        };
        assert_exact_encoding(&r);
        assert_eq!(r.file_len(), Some(74 + 3 * 4099 + 100 + 16));
        // A memory too short for the run, or a run past the plaintext: not a record.
        let mut short = r.clone();
        short.len = 4 * 4096;
        assert_eq!(FileRecord::decode(&short.encode()), None);
        let mut past = r.clone();
        if let ImageSeal::Keyed(k) = &mut past.seal {
            k.runs[0].plain = 200;
        }
        assert_eq!(FileRecord::decode(&past.encode()), None);
        // Empty plaintext: one empty segment, one tag.
        let mut empty = keyed;
        empty.plaintext_len = 0;
        empty.runs.clear();
        assert_eq!(empty.file_len(), Some(74 + 16));
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
