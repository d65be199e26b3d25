//! An arriving migration package, taken as it arrives: the API server pushes each piece of the
//! request body to a [`Spool`] instead of into a buffer of its own, and the spool's thread
//! copies the pieces into the package buffer (the one the arrival opens in place) and, while
//! the rest arrives, writes the whole blocks it has to a keyed image file of the store with
//! direct I/O: no page-cache copy and no writeback on the host's cores, which the transfer
//! needs, and no write after the last byte but the file's tail. Once the package has opened,
//! the arrival finishes the file with the package key and where the memory's chunks are
//! (`migrate::keyed_image`): the package as it arrived is the object's durable memory image.
//!
//! The file holds `pad` zero bytes before the package, so that every block has the same
//! alignment in the file as in memory (direct I/O needs both): `pad` is the package buffer's
//! address modulo [`DIRECT_ALIGN`]. The keyed image skips them with the package header.
//!
//! Where the host keeps a [`WarmPages`] pool (`[migration] warm_arrival_mib`), the package is
//! received into its buffer, whose pages were faulted in ahead, instead of into new pages
//! that fault in during the transfer.
//!
//! A package sent with each segment's tag right after the segment
//! ([`PackageOrder::TagAfterSegment`]) is put back in its layout as it comes (the tags into
//! the tag table), and each segment is authenticated and decrypted in place as soon as it
//! and its tag are in ([`SegmentOpener`]), while the next ones arrive: the arrival then
//! reads the bundle without decrypting it ([`sojourn_migration::package::open_opened`]).
//! The file must hold the package as it arrived (ciphertext), so in that order each block
//! goes to the writers through a block of their own (a copy of bytes still in the cache)
//! before its segments are decrypted.
//!
//! Nothing here trusts the bytes: they are checked when the segments are opened. A body that
//! ends early or runs long gives no package; a failed write only loses the file, not the
//! package (the arrival then seals its memory image itself). Dropped before the package is
//! taken, the spool's thread ends and the file is deleted.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use bytes::Bytes;
use sojourn_api::PackageOrder;
use sojourn_mem::WarmPages;
use sojourn_migration::package::{
    PackageBytes, PackageError, SegmentOpener, TagAfterSegment, HEADER_LEN,
};
use sojourn_store::{KeyedImageWriter, DIRECT_ALIGN};

/// Makes the opener of a package's segments from its clear header (the offer's key and
/// binding, see [`SegmentOpener::new`]).
pub(crate) type OpenerFactory =
    Box<dyn FnOnce(&[u8]) -> Result<SegmentOpener, PackageError> + Send>;

/// Direct writes of at most this much (2 MiB) at a time.
const BLOCK: usize = 2 << 20;
/// Writing threads, each with a direct write in flight: the device takes the next block
/// while one is being written, so the file keeps up with the end of a transfer (where the
/// last megabytes come faster than one write at a time goes out).
const WRITERS: usize = 2;
/// The zero bytes before the package in its file.
static PAD: [u8; DIRECT_ALIGN] = [0; DIRECT_ALIGN];
/// How long after a package's last byte the pages for the next one start to be faulted in
/// (on a thread that runs only on an idle core): time for the arrival to open and restore
/// the object, commit it and answer (~35 ms at 64 MiB on a 2-core VM), which needs the cores
/// and the memory's bandwidth.
const WARM_REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// Asks the pool for its next buffer when dropped: when the spool is done, however it ends.
struct RefillWhenDone<'a>(Option<&'a WarmPages>);

impl Drop for RefillWhenDone<'_> {
    fn drop(&mut self) {
        if let Some(warm) = self.0 {
            warm.refill(WARM_REFILL_DELAY);
        }
    }
}

/// A package arriving into its buffer and a keyed image file (see the module docs).
pub(crate) struct Spool {
    pieces: Option<Sender<Bytes>>,
    worker: Option<JoinHandle<Result<Spooled, String>>>,
}

/// A whole package taken by a [`Spool`].
pub(crate) struct Spooled {
    /// The package, as it arrived: in anonymous pages of the host's own where the kernel
    /// tracks writes (the arrival then moves the object's memory pages out of them), else on
    /// the heap.
    pub(crate) package: PackageBytes,
    /// How many of its first bytes were received into pages faulted in ahead (a
    /// [`WarmPages`] buffer).
    pub(crate) warm: usize,
    /// Its image file, every byte written, with `pad` bytes before the package; `Err` (why)
    /// if it could not be written.
    pub(crate) image: Result<SpooledImage, String>,
    /// For a package whose tags followed their segments: its segments, every one opened as
    /// it arrived, or why they did not open (the package is refused). `None` for a package
    /// sent in its layout, which is opened after it has arrived.
    pub(crate) opened: Option<Result<SegmentOpener, PackageError>>,
}

/// The file a [`Spool`] wrote: `pad` zero bytes, then the package.
pub(crate) struct SpooledImage {
    pub(crate) writer: KeyedImageWriter,
    pub(crate) pad: usize,
}

impl Spool {
    /// Starts taking a package of `len` bytes coming in `order`, written to `writer`'s file
    /// as it comes, into `warm`'s buffer if it has one ready (see
    /// [`sojourn_mem::WarmPages`]); in [`PackageOrder::TagAfterSegment`], its segments are
    /// opened as they arrive by the opener `opener` makes from the header. `None` if no
    /// thread could be started.
    pub(crate) fn start(
        writer: KeyedImageWriter,
        len: usize,
        warm: Option<WarmPages>,
        order: PackageOrder,
        opener: Option<OpenerFactory>,
        blocks: BlockPool,
    ) -> Option<Spool> {
        let (tx, rx) = channel::<Bytes>();
        let worker = std::thread::Builder::new()
            .name("sojourn-spool".into())
            .spawn(move || take(rx, writer, len, warm.as_ref(), order, opener, &blocks))
            .ok()?;
        Some(Spool {
            pieces: Some(tx),
            worker: Some(worker),
        })
    }

    /// The package, once every piece has been pushed, and its image file (all of it written).
    pub(crate) fn finish(mut self) -> Result<Spooled, String> {
        drop(self.pieces.take());
        self.worker
            .take()
            .ok_or("the spool has no thread")?
            .join()
            .map_err(|_| "the spool's thread stopped".to_string())?
    }
}

impl sojourn_api::PackageSpool for Spool {
    fn push(&mut self, bytes: Bytes) {
        if let Some(tx) = &self.pieces {
            // A worker that stopped has its reason for `finish`.
            let _ = tx.send(bytes);
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

/// The pieces of a package of `len` bytes, in order, as they arrive.
struct Pieces {
    rx: Receiver<Bytes>,
    current: Bytes,
    got: usize,
}

impl Pieces {
    /// Fills `out` from the pieces; `false` if they end first (`out` is then partly filled).
    fn fill(&mut self, mut out: &mut [u8]) -> bool {
        while !out.is_empty() {
            if self.current.is_empty() {
                match self.rx.recv() {
                    Ok(next) => self.current = next,
                    Err(_) => return false,
                }
            }
            let n = self.current.len().min(out.len());
            let (now, rest) = std::mem::take(&mut out).split_at_mut(n);
            now.copy_from_slice(&self.current.split_to(n));
            self.got += n;
            out = rest;
        }
        true
    }

    /// The bytes taken, once the pieces end; an error if more follow.
    fn end(mut self) -> Result<usize, String> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(next) => self.current = next,
                Err(_) => return Ok(self.got),
            }
        }
        Err("the package is longer than it declared".into())
    }
}

/// The lengths the package is cut into: up to the first offset whose file position is
/// aligned, whole blocks, the aligned rest, and a tail shorter than [`DIRECT_ALIGN`].
fn piece_lengths(len: usize, pad: usize) -> Vec<usize> {
    let first = ((DIRECT_ALIGN - pad % DIRECT_ALIGN) % DIRECT_ALIGN).min(len);
    let mut out = vec![first];
    let mut left = len - first;
    while left >= BLOCK {
        out.push(BLOCK);
        left -= BLOCK;
    }
    let aligned = left / DIRECT_ALIGN * DIRECT_ALIGN;
    out.extend([aligned, left - aligned]);
    out.retain(|&n| n > 0);
    out
}

/// The spool's thread: takes the package into its buffer (pages of its own where writes are
/// tracked, see [`Spooled::package`]) and its file, in the order it comes.
fn take(
    rx: Receiver<Bytes>,
    writer: KeyedImageWriter,
    len: usize,
    warm: Option<&WarmPages>,
    order: PackageOrder,
    opener: Option<OpenerFactory>,
    blocks: &BlockPool,
) -> Result<Spooled, String> {
    // Pages of our own where their memory part can be moved into the object (that needs
    // checkpoints that track writes: else the object would need a copy of memory anyway):
    // the pool's, faulted in ahead, if it has a buffer ready, else new ones. Zero pages
    // without a write, mapped in ahead of the copy on another thread, except those the pool
    // faulted in already.
    let _refill = RefillWhenDone(warm);
    let (pages, warm_bytes) = if sojourn_mem::write_tracking_available() {
        match warm.and_then(|w| w.take(len)) {
            Some(taken) => (Some(taken.pages), taken.warm),
            None => (sojourn_mem::AnonPages::new(len).ok(), 0),
        }
    } else {
        (None, 0)
    };
    let mut package = match pages {
        Some(pages) => PackageBytes::Pages(pages),
        None => PackageBytes::Heap(vec![0u8; len]),
    };
    let bytes: &mut [u8] = match &mut package {
        PackageBytes::Pages(pages) => {
            sojourn_mem::advise(pages);
            pages
        }
        PackageBytes::Heap(heap) => {
            sojourn_mem::advise(heap);
            heap
        }
    };
    if let Some(cold) = bytes.get_mut(warm_bytes..) {
        sojourn_mem::prefault_bytes_in_background(cold);
    }
    let pad = bytes.as_ptr().addr() % DIRECT_ALIGN;
    let mut pieces = Pieces {
        rx,
        current: Bytes::new(),
        got: 0,
    };
    let (complete, written, opened) = match order {
        PackageOrder::Layout => {
            let (complete, written) = receive_in_layout(&mut pieces, &writer, bytes, pad);
            (complete, written, None)
        }
        PackageOrder::TagAfterSegment => {
            receive_tag_after_segment(&mut pieces, &writer, bytes, pad, opener, blocks)
        }
    };
    match pieces.end() {
        Ok(got) if complete && got == len => {}
        other => {
            // Segments may have been opened: nothing of them is left behind.
            package.zeroize();
            return Err(match other {
                Err(e) => e,
                Ok(got) => format!("the package ended after {got} of its {len} bytes"),
            });
        }
    }
    Ok(Spooled {
        package,
        warm: warm_bytes,
        image: written.map(|()| SpooledImage { writer, pad }),
        opened,
    })
}

/// Receives a package sent in its layout: copies the pieces into the package buffer and
/// hands each filled block to one of [`WRITERS`] writing threads in turn, which writes it at
/// its place in the file while the next are filled. Returns whether every byte came, and
/// how the file's writes went.
fn receive_in_layout(
    pieces: &mut Pieces,
    writer: &KeyedImageWriter,
    bytes: &mut [u8],
    pad: usize,
) -> (bool, Result<(), String>) {
    let len = bytes.len();
    std::thread::scope(|scope| {
        let mut senders = Vec::with_capacity(WRITERS);
        let mut writing = Vec::with_capacity(WRITERS);
        for _ in 0..WRITERS {
            let (tx, blocks) = channel::<(u64, &[u8])>();
            senders.push(tx);
            writing.push(
                std::thread::Builder::new()
                    .name("sojourn-spool-write".into())
                    .spawn_scoped(scope, move || write_blocks(writer, blocks)),
            );
        }
        if let Some(first) = senders.first() {
            let _ = first.send((0, PAD.get(..pad).unwrap_or_default()));
        }
        let mut rest: &mut [u8] = bytes;
        let mut at = pad as u64;
        let mut complete = true;
        for (k, n) in piece_lengths(len, pad).into_iter().enumerate() {
            let Some((piece, after)) = std::mem::take(&mut rest).split_at_mut_checked(n) else {
                complete = false;
                break;
            };
            rest = after;
            if !pieces.fill(piece) {
                complete = false;
                break;
            }
            let piece: &[u8] = piece;
            // A writer that stopped is reported by its join.
            if let Some(tx) = senders.get(k % WRITERS) {
                let _ = tx.send((at, piece));
            }
            at += n as u64;
        }
        drop(senders);
        (complete, join_writers(writing))
    })
}

/// Every writing thread joined; the first failure is the file's.
fn join_writers(
    writing: Vec<std::io::Result<std::thread::ScopedJoinHandle<'_, Result<(), String>>>>,
) -> Result<(), String> {
    writing
        .into_iter()
        .map(|w| match w {
            Ok(h) => h
                .join()
                .unwrap_or_else(|_| Err("the writing thread stopped".into())),
            Err(e) => Err(format!("cannot start the writing thread: {e}")),
        })
        .fold(Ok(()), Result::and)
}

/// Where the bytes of a package sent with each tag after its segment go in its layout, as
/// they come.
struct Placing {
    /// Bytes taken from the pieces (of the sent order).
    sent: usize,
    /// Every byte of the layout before this one is in.
    filled: usize,
    /// Where each sent byte goes, once the header is in; `None` before, and for a header
    /// that is not a package's of this length (its bytes then go where they come, and the
    /// package is refused when it is opened).
    order: Option<TagAfterSegment>,
}

impl Placing {
    /// Takes bytes from the pieces, each to its place in `buf`, until every byte of the
    /// layout before `upto` is in; `false` if the pieces end first.
    fn fill_to(&mut self, pieces: &mut Pieces, buf: &mut [u8], upto: usize) -> bool {
        let len = buf.len();
        while self.filled < upto.min(len) {
            let (to, n) = match (self.sent < HEADER_LEN, self.order) {
                (true, _) => (self.sent, HEADER_LEN - self.sent),
                (false, None) => (self.sent, len - self.sent),
                (false, Some(order)) => match order.place(self.sent) {
                    Some(p) => p,
                    None => return false,
                },
            };
            // Not past `upto` in the layout's front part (a tag, behind it, is taken whole).
            let n = if to < upto { n.min(upto - to) } else { n };
            let Some(dst) = to.checked_add(n).and_then(|end| buf.get_mut(to..end)) else {
                return false;
            };
            if !pieces.fill(dst) {
                return false;
            }
            self.sent += n;
            if self.sent == len {
                self.filled = len;
            } else if to == self.filled {
                self.filled += n;
            }
            if self.sent == HEADER_LEN && self.order.is_none() {
                self.order = buf
                    .get(..HEADER_LEN)
                    .and_then(|h| TagAfterSegment::of_header(h).ok())
                    .filter(|o| o.package_len() == len);
            }
        }
        true
    }
}

/// The blocks the writers write from in [`receive_tag_after_segment`], kept between arrivals
/// (at most [`WRITERS`] + 1, 6 MiB), so that their pages are faulted in once, not at every
/// arrival.
#[derive(Clone, Default)]
pub(crate) struct BlockPool(std::sync::Arc<std::sync::Mutex<Vec<Bounce>>>);

impl BlockPool {
    fn take(&self) -> Bounce {
        self.0
            .lock()
            .ok()
            .and_then(|mut blocks| blocks.pop())
            .unwrap_or_else(Bounce::new)
    }

    fn give(&self, block: Bounce) {
        if let Ok(mut blocks) = self.0.lock() {
            if blocks.len() <= WRITERS {
                blocks.push(block);
            }
        }
    }
}

/// A block the writers write from in [`receive_tag_after_segment`]: aligned pages where
/// they can be had (direct I/O needs the alignment), else the heap. It holds ciphertext only.
enum Bounce {
    Pages(sojourn_mem::AnonPages),
    Heap(Vec<u8>),
}

impl Bounce {
    fn new() -> Bounce {
        match sojourn_mem::AnonPages::new(BLOCK) {
            Ok(pages) => Bounce::Pages(pages),
            Err(_) => Bounce::Heap(vec![0; BLOCK]),
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Bounce::Pages(p) => p,
            Bounce::Heap(h) => h,
        }
    }
}

/// Receives a package sent with each segment's tag right after the segment: puts every byte
/// at its place in the layout (see [`Placing`]), hands each filled block to one of
/// [`WRITERS`] writing threads in turn as a copy (a [`Bounce`] block), and then opens, in
/// place, every segment that is in whole with its tag and has gone to the writers. Returns
/// whether every byte came, how the file's writes went, and the opener (or why a segment
/// did not open: nothing more is opened then, and the rest is still received).
fn receive_tag_after_segment(
    pieces: &mut Pieces,
    writer: &KeyedImageWriter,
    bytes: &mut [u8],
    pad: usize,
    opener: Option<OpenerFactory>,
    blocks: &BlockPool,
) -> (
    bool,
    Result<(), String>,
    Option<Result<SegmentOpener, PackageError>>,
) {
    let len = bytes.len();
    let mut placing = Placing {
        sent: 0,
        filled: 0,
        order: None,
    };
    let mut factory = opener;
    let mut opened: Option<Result<SegmentOpener, PackageError>> = None;
    let padded = match pad {
        0 => Ok(()),
        _ => writer
            .write_at(0, PAD.get(..pad).unwrap_or_default())
            .map_err(|e| e.to_string()),
    };
    let (complete, written) = std::thread::scope(|scope| {
        let (free_tx, free) = channel::<Bounce>();
        for _ in 0..=WRITERS {
            let _ = free_tx.send(blocks.take());
        }
        let mut senders = Vec::with_capacity(WRITERS);
        let mut writing = Vec::with_capacity(WRITERS);
        for _ in 0..WRITERS {
            let (tx, blocks) = channel::<(u64, Bounce, usize)>();
            senders.push(tx);
            let free_tx = free_tx.clone();
            writing.push(
                std::thread::Builder::new()
                    .name("sojourn-spool-write".into())
                    .spawn_scoped(scope, move || write_bounced(writer, blocks, free_tx)),
            );
        }
        drop(free_tx);
        let mut start = 0;
        let mut at = pad as u64;
        let mut complete = true;
        for (k, n) in piece_lengths(len, pad).into_iter().enumerate() {
            let end = start + n;
            if !placing.fill_to(pieces, bytes, end) {
                complete = false;
                break;
            }
            if placing.filled >= HEADER_LEN {
                if let (Some(make), Some(header)) = (factory.take(), bytes.get(..HEADER_LEN)) {
                    opened = Some(make(header));
                }
            }
            // The block, as it arrived, to a writer.
            let (Ok(mut block), Some(piece)) = (free.recv(), bytes.get(start..end)) else {
                complete = false;
                break;
            };
            if let Some(dst) = block.bytes_mut().get_mut(..n) {
                dst.copy_from_slice(piece);
            }
            if let Some(tx) = senders.get(k % WRITERS) {
                // A writer that stopped is reported by its join.
                let _ = tx.send((at, block, n));
            }
            // Then the segments it completes.
            if let Some(Ok(opener)) = &mut opened {
                if let Err(e) = open_ready(opener, bytes, placing.sent, end) {
                    opened = Some(Err(e));
                }
            }
            start = end;
            at += n as u64;
        }
        drop(senders);
        let written = join_writers(writing);
        // Every block is back once the writers are done.
        for block in free.try_iter() {
            blocks.give(block);
        }
        (complete, written)
    });
    (complete, padded.and(written), opened)
}

/// Opens, in order, every segment that is in whole with its tag (`sent` bytes of the sent
/// order have arrived) and lies before `copied` in the layout (its ciphertext has gone to
/// the file's writers).
fn open_ready(
    opener: &mut SegmentOpener,
    buf: &mut [u8],
    sent: usize,
    copied: usize,
) -> Result<(), PackageError> {
    let order = opener.order();
    loop {
        let i = opener.opened();
        let (Some(seg), Some(tag), Some(through)) =
            (order.segment(i), order.tag(i), order.sent_through(i))
        else {
            return Ok(());
        };
        if through > sent || seg.end > copied {
            return Ok(());
        }
        let tag: [u8; 16] = buf
            .get(tag)
            .and_then(|t| t.try_into().ok())
            .ok_or(PackageError::Open)?;
        let data = buf.get_mut(seg).ok_or(PackageError::Open)?;
        opener.open_next(data, &tag)?;
    }
}

/// Writes each block at its offset and gives the block back, until the blocks end; stops
/// writing at the first failure (the rest are still received, so the package is whole).
fn write_bounced(
    writer: &KeyedImageWriter,
    blocks: Receiver<(u64, Bounce, usize)>,
    free: Sender<Bounce>,
) -> Result<(), String> {
    let mut outcome = Ok(());
    for (at, mut block, n) in blocks {
        if outcome.is_ok() {
            let bytes = block.bytes_mut().get(..n).unwrap_or_default();
            outcome = writer.write_at(at, bytes).map_err(|e| e.to_string());
        }
        // The spool may have stopped waiting for blocks.
        let _ = free.send(block);
    }
    outcome
}

/// Writes each block at its offset, until the blocks end; stops writing at the first failure
/// (the rest are still received, so the package is whole).
fn write_blocks(writer: &KeyedImageWriter, blocks: Receiver<(u64, &[u8])>) -> Result<(), String> {
    let mut outcome = Ok(());
    for (at, block) in blocks {
        if block.is_empty() {
            continue;
        }
        if outcome.is_ok() {
            outcome = writer.write_at(at, block).map_err(|e| e.to_string());
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use sojourn_api::PackageSpool as _;
    use sojourn_store::{SealingKey, Store};

    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn store() -> (Dir, Store) {
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).unwrap();
        let d = std::env::temp_dir().join(format!("sojourn-spool-{}", hex::encode(r)));
        std::fs::create_dir_all(&d).unwrap();
        let s = Store::open(&d, SealingKey::from_bytes([5; 32])).unwrap();
        (Dir(d), s)
    }

    fn package(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    /// Pushes `bytes` in pieces of irregular sizes.
    fn push_all(spool: &mut Spool, bytes: &[u8]) {
        let mut at = 0;
        let mut k = 1usize;
        while at < bytes.len() {
            let n = (k * 7919 % 70_001 + 1).min(bytes.len() - at);
            spool.push(Bytes::copy_from_slice(&bytes[at..at + n]));
            at += n;
            k += 1;
        }
    }

    #[test]
    fn a_spool_takes_the_whole_package_and_writes_every_byte_of_its_file() {
        let (_dir, s) = store();
        for len in [300, 3 * BLOCK + 12_345] {
            let bytes = package(len);
            let mut spool = Spool::start(
                s.stage_keyed_image(&[1; 16]).unwrap(),
                len,
                None,
                PackageOrder::Layout,
                None,
                BlockPool::default(),
            )
            .unwrap();
            push_all(&mut spool, &bytes);
            let spooled = spool.finish().unwrap();
            assert!(spooled.package[..] == bytes[..], "{len}");
            // In pages of its own where writes can be tracked, so that the arrival can move
            // the memory's pages out of them.
            assert_eq!(
                matches!(spooled.package, PackageBytes::Pages(_)),
                sojourn_mem::write_tracking_available(),
                "{len}"
            );
            let image = spooled.image.unwrap();
            assert!(image.pad < DIRECT_ALIGN);
            assert_eq!(image.writer.written(), (image.pad + len) as u64);
            // All but the partial blocks at either end went to the device directly.
            let head = ((DIRECT_ALIGN - image.pad) % DIRECT_ALIGN).min(len);
            let tail = (len - head) % DIRECT_ALIGN;
            let direct = if sojourn_store::direct_io_supported(s.path().parent().unwrap()) {
                len - head - tail
            } else {
                0
            };
            assert_eq!(image.writer.written_direct(), direct as u64, "{len}");
        }
    }

    #[test]
    fn a_package_goes_into_the_warm_buffer_where_pages_are_moved() {
        let (_dir, s) = store();
        let pool = WarmPages::new(2 * BLOCK).unwrap();
        for len in [3 * BLOCK + 12_345, BLOCK + 1] {
            pool.refill(std::time::Duration::ZERO);
            assert!(pool.wait_ready(std::time::Duration::from_secs(30)));
            let bytes = package(len);
            let image = s.stage_keyed_image(&[4; 16]).unwrap();
            let mut spool = Spool::start(
                image,
                len,
                Some(pool.clone()),
                PackageOrder::Layout,
                None,
                BlockPool::default(),
            )
            .unwrap();
            push_all(&mut spool, &bytes);
            let spooled = spool.finish().unwrap();
            assert!(spooled.package[..] == bytes[..], "{len}");
            let image = spooled.image.unwrap();
            assert_eq!(image.writer.written(), (image.pad + len) as u64);
            // Where pages can be moved the pool's buffer takes the package, as far as it
            // reaches; else the pool is not used (the package is on the heap).
            let expected = match sojourn_mem::write_tracking_available() {
                true => len.min(2 * BLOCK),
                false => 0,
            };
            assert_eq!(spooled.warm, expected, "{len}");
            if expected == 0 {
                // Untouched.
                assert!(pool.is_ready());
            }
        }
    }

    #[test]
    fn a_package_that_ends_early_or_runs_long_is_not_taken() {
        let (_dir, s) = store();
        let len = BLOCK + 5000;
        let bytes = package(len + 10);
        for given in [0, 100, len - 1, len + 1, len + 10] {
            let mut spool = Spool::start(
                s.stage_keyed_image(&[2; 16]).unwrap(),
                len,
                None,
                PackageOrder::Layout,
                None,
                BlockPool::default(),
            )
            .unwrap();
            push_all(&mut spool, &bytes[..given]);
            let err = spool.finish().err().unwrap();
            assert!(
                err.contains("ended after") || err.contains("longer than"),
                "{given}: {err}"
            );
        }
        // A spool dropped before it finished leaves no file behind.
        let mut spool = Spool::start(
            s.stage_keyed_image(&[3; 16]).unwrap(),
            len,
            None,
            PackageOrder::Layout,
            None,
            BlockPool::default(),
        )
        .unwrap();
        push_all(&mut spool, &bytes[..len / 2]);
        drop(spool);
        let files = || {
            std::fs::read_dir(
                s.path()
                    .parent()
                    .unwrap()
                    .join(sojourn_store::raw::MEMORY_DIR),
            )
            .map(|d| d.count())
            .unwrap_or(0)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while files() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(files(), 0);
    }

    /// A package's layout with a clear header that declares `plaintext` bytes (only the
    /// header's fields are read here: nothing is decrypted).
    fn layout(plaintext: usize) -> Vec<u8> {
        let mut p = b"SJMIGPK2".to_vec();
        p.extend([0x00, 0x20, 0x00, 0x01, 0xff, 0xff]);
        p.extend([7u8; 16]);
        p.extend([9u8; 32]);
        p.extend((plaintext as u64).to_be_bytes());
        p.extend((sojourn_migration::package::SEGMENT as u32).to_be_bytes());
        let order = TagAfterSegment::of_header(&p).unwrap();
        let body = package(order.package_len());
        p.extend_from_slice(&body[HEADER_LEN..]);
        p
    }

    /// `layout` in the order with each tag after its segment.
    fn tag_after_segment(layout: &[u8]) -> Vec<u8> {
        let order = TagAfterSegment::of_header(layout).unwrap();
        let mut sent = layout[..HEADER_LEN].to_vec();
        for i in 0..order.segments() {
            sent.extend_from_slice(&layout[order.segment(i).unwrap()]);
            sent.extend_from_slice(&layout[order.tag(i).unwrap()]);
        }
        assert_eq!(TagAfterSegment::to_layout(&sent).unwrap(), layout);
        sent
    }

    /// The one image file in the store's memory directory, without its `pad` bytes.
    fn file_of(s: &Store, pad: usize) -> Vec<u8> {
        let dir = s
            .path()
            .parent()
            .unwrap()
            .join(sojourn_store::raw::MEMORY_DIR);
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1);
        let bytes = std::fs::read(files.pop().unwrap()).unwrap();
        assert!(bytes[..pad].iter().all(|b| *b == 0));
        bytes[pad..].to_vec()
    }

    #[test]
    fn a_package_with_each_tag_after_its_segment_is_put_back_in_its_layout() {
        let segment = sojourn_migration::package::SEGMENT;
        // One pool of blocks for every arrival: its blocks are taken again, not made anew.
        let pool = BlockPool::default();
        let addresses = |pool: &BlockPool| {
            let mut a: Vec<usize> = pool
                .0
                .lock()
                .unwrap()
                .iter_mut()
                .map(|b| b.bytes_mut().as_ptr().addr())
                .collect();
            a.sort_unstable();
            a
        };
        let mut first: Option<Vec<usize>> = None;
        for plaintext in [0, 1, segment, 2 * segment + 7, 3 * segment + 12_345] {
            let (_dir, s) = store();
            let layout = layout(plaintext);
            let sent = tag_after_segment(&layout);
            let len = layout.len();
            let opener: OpenerFactory = Box::new(|header: &[u8]| {
                assert_eq!(header.len(), HEADER_LEN);
                Err(PackageError::WrongKey)
            });
            let mut spool = Spool::start(
                s.stage_keyed_image(&[5; 16]).unwrap(),
                len,
                None,
                PackageOrder::TagAfterSegment,
                Some(opener),
                pool.clone(),
            )
            .unwrap();
            push_all(&mut spool, &sent);
            let spooled = spool.finish().unwrap();
            assert!(spooled.package[..] == layout[..], "{plaintext}");
            // The opener was asked for once the header was in; its refusal is the package's.
            assert!(matches!(spooled.opened, Some(Err(PackageError::WrongKey))));
            // The file holds the package as it lies, every byte.
            let image = spooled.image.unwrap();
            assert_eq!(image.writer.written(), (image.pad + len) as u64);
            assert!(file_of(&s, image.pad) == layout, "{plaintext}");
            let now = addresses(&pool);
            assert_eq!(now.len(), WRITERS + 1, "{plaintext}");
            assert_eq!(
                first.get_or_insert_with(|| now.clone()),
                &now,
                "{plaintext}"
            );
        }
    }

    #[test]
    fn a_package_with_each_tag_after_its_segment_that_ends_early_is_not_taken() {
        let (_dir, s) = store();
        let layout = layout(2 * sojourn_migration::package::SEGMENT + 99);
        let sent = tag_after_segment(&layout);
        for given in [10, HEADER_LEN, sent.len() - 17, sent.len() - 1] {
            let mut spool = Spool::start(
                s.stage_keyed_image(&[6; 16]).unwrap(),
                layout.len(),
                None,
                PackageOrder::TagAfterSegment,
                None,
                BlockPool::default(),
            )
            .unwrap();
            push_all(&mut spool, &sent[..given]);
            let err = spool.finish().err().unwrap();
            assert!(err.contains("ended after"), "{given}: {err}");
        }
        // Longer than declared.
        let mut long = sent.clone();
        long.extend([1, 2, 3]);
        let mut spool = Spool::start(
            s.stage_keyed_image(&[6; 16]).unwrap(),
            layout.len(),
            None,
            PackageOrder::TagAfterSegment,
            None,
            BlockPool::default(),
        )
        .unwrap();
        push_all(&mut spool, &long);
        assert!(spool.finish().err().unwrap().contains("longer than"));
    }

    #[test]
    fn pieces_cover_the_package_and_all_but_the_ends_are_aligned_in_the_file() {
        for len in [
            0,
            1,
            100,
            4095,
            4096,
            4097,
            BLOCK,
            BLOCK + 5,
            3 * BLOCK + 12_345,
        ] {
            for pad in [0, 16, 4000, 4095] {
                let lengths = piece_lengths(len, pad);
                assert_eq!(lengths.iter().sum::<usize>(), len, "{len} {pad}");
                let mut at = pad;
                for (i, &n) in lengths.iter().enumerate() {
                    assert!(n > 0 && n <= BLOCK);
                    let inner = i > 0 && i + 1 < lengths.len();
                    if inner {
                        assert_eq!(at % DIRECT_ALIGN, 0, "{len} {pad} piece {i}");
                        assert_eq!(n % DIRECT_ALIGN, 0, "{len} {pad} piece {i}");
                    }
                    at += n;
                }
            }
        }
    }
}
