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
//! Nothing here trusts the bytes: they are ciphertext, checked when the package is opened.
//! A body that ends early or runs long gives no package; a failed write only loses the file,
//! not the package (the arrival then seals its memory image itself). Dropped before the
//! package is taken, the spool's thread ends and the file is deleted.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use bytes::Bytes;
use sojourn_mem::WarmPages;
use sojourn_migration::package::PackageBytes;
use sojourn_store::{KeyedImageWriter, DIRECT_ALIGN};

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
}

/// The file a [`Spool`] wrote: `pad` zero bytes, then the package.
pub(crate) struct SpooledImage {
    pub(crate) writer: KeyedImageWriter,
    pub(crate) pad: usize,
}

impl Spool {
    /// Starts taking a package of `len` bytes, written to `writer`'s file as it comes, into
    /// `warm`'s buffer if it has one ready (see [`sojourn_mem::WarmPages`]). `None` if no
    /// thread could be started.
    pub(crate) fn start(
        writer: KeyedImageWriter,
        len: usize,
        warm: Option<WarmPages>,
    ) -> Option<Spool> {
        let (tx, rx) = channel::<Bytes>();
        let worker = std::thread::Builder::new()
            .name("sojourn-spool".into())
            .spawn(move || take(rx, writer, len, warm.as_ref()))
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
    /// Fills `out` from the pieces; `false` if they end first.
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

/// The spool's thread: copies the pieces into the package buffer and hands each filled block
/// to one of [`WRITERS`] writing threads in turn, which writes it at its place in the file
/// while the next are filled.
fn take(
    rx: Receiver<Bytes>,
    writer: KeyedImageWriter,
    len: usize,
    warm: Option<&WarmPages>,
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
    let (complete, written) = std::thread::scope(|scope| {
        let mut senders = Vec::with_capacity(WRITERS);
        let mut writing = Vec::with_capacity(WRITERS);
        for _ in 0..WRITERS {
            let (tx, blocks) = channel::<(u64, &[u8])>();
            senders.push(tx);
            let writer = &writer;
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
        // Every thread is joined; the first failure is the file's.
        let written = writing
            .into_iter()
            .map(|w| match w {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err("the writing thread stopped".into())),
                Err(e) => Err(format!("cannot start the writing thread: {e}")),
            })
            .fold(Ok(()), Result::and);
        (complete, written)
    });
    let got = pieces.end()?;
    if !complete || got != len {
        return Err(format!("the package ended after {got} of its {len} bytes"));
    }
    Ok(Spooled {
        package,
        warm: warm_bytes,
        image: written.map(|()| SpooledImage { writer, pad }),
    })
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
            let mut spool =
                Spool::start(s.stage_keyed_image(&[1; 16]).unwrap(), len, None).unwrap();
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
            let mut spool = Spool::start(image, len, Some(pool.clone())).unwrap();
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
            let mut spool =
                Spool::start(s.stage_keyed_image(&[2; 16]).unwrap(), len, None).unwrap();
            push_all(&mut spool, &bytes[..given]);
            let err = spool.finish().err().unwrap();
            assert!(
                err.contains("ended after") || err.contains("longer than"),
                "{given}: {err}"
            );
        }
        // A spool dropped before it finished leaves no file behind.
        let mut spool = Spool::start(s.stage_keyed_image(&[3; 16]).unwrap(), len, None).unwrap();
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
