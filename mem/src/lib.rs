//! Large buffers on transparent huge pages, and prefaulted on another thread; pages moved into
//! a linear memory instead of copied ([`AnonPages`]); and which pages of a memory were written
//! since the last look, from the kernel instead of a copy to compare with ([`WriteTracker`]).
//!
//! The first touch of fresh anonymous memory costs a page fault per page. For a 64 MiB buffer
//! in 4 KiB pages that is 16,384 faults, each allocating, zeroing and mapping one page: on the
//! 2-core dev VM about 35 ms, several times the cost of copying 64 MiB into memory already
//! mapped. In 2 MiB pages it is 32 faults (about 7 ms there, most of it zeroing). Linux backs
//! anonymous memory with transparent huge pages where the range is advised `MADV_HUGEPAGE`
//! and `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise` (the default of
//! most distributions, including the Azure and GCP confidential-VM images).
//!
//! A migration touches several such buffers per object (the package at each end, the restored
//! instance's memory, its first checkpoint), so this crate gives them the advice:
//! [`with_capacity`] for a new `Vec<u8>`, [`advise`] for memory someone else allocated (a
//! wasmtime linear memory). Regions below [`MIN_ADVISED`] are left alone, and elsewhere than
//! Linux both are plain allocations and no-ops. The advice changes neither contents nor
//! access; if the kernel has no huge page at hand it falls back to small pages (with
//! `defrag` set to `madvise`, it may first compact memory for one).
//!
//! Where huge pages are not used, the faults can at least be taken elsewhere:
//! [`prefault_in_background`] maps a buffer's pages in on a thread of its own
//! (`MADV_POPULATE_WRITE`) while the owner fills it, as the destination of a migration does
//! with the package buffer while the bytes arrive. It does the same work, on a core that the
//! receiving thread does not need. Or they can be taken in one call instead of one per page:
//! [`populate`] maps in a region about to be overwritten, as a restore does with each run of
//! chunks of the new instance's memory before it copies them in.
//!
//! Whether to advise is a process-wide setting, off until a host sets it with
//! [`set_huge_pages`] (the daemon does at start, from `[runtime] huge_pages`, default `auto`).
//! That call is the only place this crate reads files (two under `/sys`, for `Auto`), so the
//! cores that allocate through it stay free of I/O. `Auto` advises unless the kernel has no
//! transparent huge pages or the machine is a VM whose balloon reports free pages to its host
//! (virtio-balloon `VIRTIO_BALLOON_F_REPORTING`). Such a host
//! takes back every free 2 MiB block a few seconds after it is freed, so a huge page is
//! typically memory the host must back anew, 4 KiB at a time, on first touch: on the
//! firecracker dev VM, which reports free pages, advised 64 MiB migrations measured 220 to
//! 880 ms against 285 to 400 ms unadvised. Confidential VMs (SEV-SNP, TDX) keep their
//! private memory and do not report free pages, so `Auto` advises there.

#![deny(unsafe_code)]

mod anon;
mod tracking;
mod warm;

pub use anon::AnonPages;
pub use tracking::{write_tracking_available, WriteTracker};
pub use warm::{TakenPages, WarmPages};

/// Base pages: 4 KiB on x86-64 and on aarch64 as configured by the clouds' images.
pub const PAGE: usize = 4096;

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether large buffers are advised to use huge pages (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HugePages {
    /// Advise unless the kernel has no transparent huge pages or the VM reports free pages
    /// to its host.
    #[default]
    Auto,
    /// Always advise (the kernel still decides).
    On,
    /// Never advise.
    Off,
}

static IN_USE: AtomicBool = AtomicBool::new(false);

/// Sets the process-wide setting (a host sets it once, at start, before objects run); `Auto`
/// is resolved here, from `/sys`. Returns whether large buffers are advised from now on.
pub fn set_huge_pages(mode: HugePages) -> bool {
    let on = match mode {
        HugePages::Auto => detect(),
        HugePages::On => true,
        HugePages::Off => false,
    };
    IN_USE.store(on, Ordering::Relaxed);
    on
}

/// Whether large buffers are advised (false until [`set_huge_pages`] says otherwise).
pub fn huge_pages_in_use() -> bool {
    IN_USE.load(Ordering::Relaxed)
}

/// `Auto`: transparent huge pages available, and no free-page reporting balloon.
fn detect() -> bool {
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|mode| thp_allows_advice(&mode));
    thp && !balloon_reports_free_pages()
}

/// The `enabled` file names the active mode in brackets: `always [madvise] never`.
fn thp_allows_advice(mode: &str) -> bool {
    mode.contains("[always]") || mode.contains("[madvise]")
}

/// `VIRTIO_BALLOON_F_REPORTING` (feature bit 5) on any virtio balloon device.
fn balloon_reports_free_pages() -> bool {
    let Ok(dir) = std::fs::read_dir("/sys/bus/virtio/drivers/virtio_balloon") else {
        return false;
    };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("virtio"))
        .any(|e| {
            std::fs::read_to_string(e.path().join("features")).is_ok_and(|f| reports_free_pages(&f))
        })
}

/// A virtio `features` file: one `0`/`1` character per feature bit, bit 0 first.
fn reports_free_pages(features: &str) -> bool {
    const VIRTIO_BALLOON_F_REPORTING: usize = 5;
    features.as_bytes().get(VIRTIO_BALLOON_F_REPORTING) == Some(&b'1')
}

/// Allocations at least this large (4 MiB) get a mapping of their own from the C allocator
/// (and give it back when freed) once [`retain_freed_heap`] has set the allocator up.
pub const OWN_MAPPING_MIN: usize = 4 << 20;

/// Makes the C allocator (glibc) keep up to `bytes` of freed memory at the top of each of its
/// heaps for reuse, instead of returning it to the kernel as soon as more than 128 KiB is
/// free there, and serve allocations below [`OWN_MAPPING_MIN`] from its heaps. A process that
/// streams large transfers through buffers of some hundred KiB each (TLS records, HTTP read
/// buffers, a package's parts) otherwise unmaps them as they are freed and faults fresh,
/// zeroed pages in for the next ones, on every megabyte. The price: up to `bytes` per heap
/// stays mapped after a burst. Process-wide; a host sets it once, at start. `0` leaves the
/// allocator's own (adaptive) behaviour. Returns whether the allocator took the setting
/// (false where it is not glibc's).
pub fn retain_freed_heap(bytes: usize) -> bool {
    if bytes == 0 {
        return false;
    }
    set_allocator(bytes)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_allocator(bytes: usize) -> bool {
    let trim = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let own = libc::c_int::try_from(OWN_MAPPING_MIN).unwrap_or(libc::c_int::MAX);
    // SAFETY: `mallopt` only changes the allocator's tuning parameters, under the allocator's
    // own lock; it takes two integers and reads or writes no memory of ours. Memory already
    // allocated is unaffected (a block is freed the way it was allocated).
    #[allow(unsafe_code)]
    let set = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, own) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1
    };
    set
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_allocator(_bytes: usize) -> bool {
    false
}

/// Regions shorter than this (4 MiB) are not advised: they hold at most one whole huge page.
pub const MIN_ADVISED: usize = 4 << 20;

/// The huge-page size the advice aims at (x86-64 and aarch64 with 4 KiB base pages).
pub const HUGE_PAGE: usize = 2 << 20;

/// A `Vec<u8>` with room for `capacity` bytes, its allocation advised to use huge pages when
/// it is at least [`MIN_ADVISED`] long.
pub fn with_capacity(capacity: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(capacity);
    advise_uninit(v.spare_capacity_mut());
    v
}

/// Makes room for `additional` more bytes in `buf` like [`Vec::reserve_exact`], and advises
/// huge pages for a new allocation (moving the bytes already there).
pub fn reserve(buf: &mut Vec<u8>, additional: usize) {
    if buf.capacity() - buf.len() >= additional {
        return;
    }
    let mut bigger = with_capacity(buf.len().saturating_add(additional));
    bigger.extend_from_slice(buf);
    *buf = bigger;
}

/// Advises huge pages for the whole 2 MiB-aligned pages inside `region`. Returns whether the
/// kernel took the advice (false for a short region, elsewhere than Linux, or where the kernel
/// has no transparent huge pages).
///
/// `region` is borrowed mutably only to show that the caller owns those bytes: they are
/// neither read nor changed.
pub fn advise(region: &mut [u8]) -> bool {
    advise_range(region.as_mut_ptr(), region.len())
}

/// [`advise`] for memory not yet initialised, such as a vector's spare capacity.
pub fn advise_uninit(region: &mut [MaybeUninit<u8>]) -> bool {
    advise_range(region.as_mut_ptr().cast::<u8>(), region.len())
}

/// Regions shorter than this (4 MiB) are not prefaulted: their faults cost little.
pub const MIN_PREFAULTED: usize = 4 << 20;

/// Maps the pages of `region` (typically a vector's spare capacity, about to be filled) in
/// ahead of their first touch, on a thread of its own, so that the thread that fills them
/// finds them mapped instead of taking a page fault per 4 KiB page: for a buffer filled as
/// bytes arrive from the network, the faults then run on another core, beside the receiving.
/// It maps the region from its end back, 2 MiB at a time, so that it meets a filler that
/// starts at the front late, and once (the two do not take turns on the same pages).
/// Returns whether that thread started (false for a region below [`MIN_PREFAULTED`],
/// elsewhere than Linux, or if no thread could be started). Nothing waits for it.
///
/// It is `madvise(MADV_POPULATE_WRITE)` (Linux 5.14): the kernel faults the pages in as a
/// write would, without writing. The contents of the region are neither read nor changed, so
/// the caller may fill it at the same time; should the region be freed first, the call fails
/// or maps pages of whatever is there then, still without changing a byte. On an older
/// kernel it fails and nothing changes. Not for memory with guard pages (`PROT_NONE`) or
/// shared file mappings.
pub fn prefault_in_background(region: &mut [MaybeUninit<u8>]) -> bool {
    if region.len() < MIN_PREFAULTED {
        return false;
    }
    // The thread gets the range as an address, not a reference: it never accesses the
    // memory, only names it to the kernel.
    match page_range(region) {
        Some((at, len)) => prefault_range_in_background(at, len),
        None => false,
    }
}

/// [`prefault_in_background`] for initialised bytes: a zeroed buffer not yet touched (such
/// as `vec![0u8; n]`, which the allocator maps in without writing), about to be overwritten
/// by its owner.
pub fn prefault_bytes_in_background(region: &mut [u8]) -> bool {
    if region.len() < MIN_PREFAULTED || !cfg!(target_os = "linux") {
        return false;
    }
    let Some((offset, len)) = pages_inside(region.as_ptr() as usize, region.len()) else {
        return false;
    };
    let at = region.as_mut_ptr().wrapping_add(offset).expose_provenance();
    prefault_range_in_background(at, len)
}

/// Maps in `[at, at + len)` (whole pages) on a thread of its own, from the end back.
fn prefault_range_in_background(at: usize, len: usize) -> bool {
    std::thread::Builder::new()
        .name("sojourn-prefault".into())
        .spawn(move || {
            // Last chunk first: the filler starts at the front, so the two meet once, late.
            let mut end = len;
            while end > 0 {
                let start = end.saturating_sub(PREFAULT_CHUNK);
                populate_write(at + start, end - start);
                end = start;
            }
        })
        .is_ok()
}

/// [`prefault_in_background`] on this thread, waiting for it. Returns whether the kernel
/// mapped the whole range.
pub fn prefault(region: &mut [MaybeUninit<u8>]) -> bool {
    page_range(region).is_some_and(|(at, len)| populate_write(at, len))
}

/// Maps in the whole pages of `region`, which the caller is about to overwrite, in one call
/// (`MADV_POPULATE_WRITE`) instead of a page fault at the first write to each 4 KiB page: on
/// the 2-core dev VM, 64 MiB of fresh memory mapped so and then copied into took about 25 ms,
/// against 30 to 35 ms when the copy took the faults. Pages already mapped stay as they are,
/// and no byte is read or changed. Returns whether the kernel mapped the whole pages of the
/// range (false for a region without one, elsewhere than Linux, or on a kernel before 5.14,
/// where the writes then take the faults as before).
pub fn populate(region: &mut [u8]) -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    let Some((offset, len)) = pages_inside(region.as_ptr() as usize, region.len()) else {
        return false;
    };
    let at = region.as_mut_ptr().wrapping_add(offset).expose_provenance();
    populate_write(at, len)
}

/// The whole base pages inside `region` as (address, length), the address's provenance
/// exposed; `None` elsewhere than Linux or if the region holds no whole page.
fn page_range(region: &mut [MaybeUninit<u8>]) -> Option<(usize, usize)> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let (offset, len) = pages_inside(region.as_ptr() as usize, region.len())?;
    let at = region
        .as_mut_ptr()
        .cast::<u8>()
        .wrapping_add(offset)
        .expose_provenance();
    Some((at, len))
}

/// [`prefault_in_background`] maps this much at a time (a multiple of [`PAGE`]).
const PREFAULT_CHUNK: usize = 2 << 20;

/// The whole base pages inside `[start, start + len)`: (offset from `start`, length).
fn pages_inside(start: usize, len: usize) -> Option<(usize, usize)> {
    let end = start.checked_add(len)?;
    let first = start.checked_next_multiple_of(PAGE)?;
    let last = end - end % PAGE;
    (last > first).then(|| (first - start, last - first))
}

#[cfg(target_os = "linux")]
fn populate_write(at: usize, len: usize) -> bool {
    // SAFETY: MADV_POPULATE_WRITE faults the pages of `[at, at + len)` in writable as a write
    // would, but performs no access: no byte of memory is read or changed, so no Rust
    // reference or concurrent writer to that memory is affected. `at` is page-aligned. If the
    // range is no longer mapped the call fails (ENOMEM) and does nothing; if other memory has
    // been mapped there since, its pages are faulted in, their contents unchanged.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::madvise(
            std::ptr::with_exposed_provenance_mut::<libc::c_void>(at),
            len,
            libc::MADV_POPULATE_WRITE,
        )
    };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn populate_write(_at: usize, _len: usize) -> bool {
    false
}

/// The whole huge pages inside `[start, start + len)`: (offset from `start`, length).
fn aligned_inside(start: usize, len: usize) -> Option<(usize, usize)> {
    let end = start.checked_add(len)?;
    let first = start.checked_next_multiple_of(HUGE_PAGE)?;
    let last = end - end % HUGE_PAGE;
    (last > first).then(|| (first - start, last - first))
}

fn advise_range(start: *mut u8, len: usize) -> bool {
    if len < MIN_ADVISED || !huge_pages_in_use() {
        return false;
    }
    let Some((offset, len)) = aligned_inside(start as usize, len) else {
        return false;
    };
    // Provenance is kept: the pointer is derived from the region's own.
    let at = start.wrapping_add(offset);
    madvise_huge(at, len)
}

#[cfg(target_os = "linux")]
fn madvise_huge(at: *mut u8, len: usize) -> bool {
    // SAFETY: `[at, at + len)` lies inside a region the caller borrows mutably (so it is
    // mapped and owned by the caller for the duration), and `at` is page-aligned (2 MiB).
    // MADV_HUGEPAGE only sets a flag on the mapping that tells the kernel it may back the range
    // with huge pages: it does not read, write, unmap or change the protection of any byte, so
    // no Rust reference to the memory is invalidated. A failure (EINVAL without THP support)
    // changes nothing and is reported as `false`.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::madvise(at.cast::<libc::c_void>(), len, libc::MADV_HUGEPAGE) };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn madvise_huge(_at: *mut u8, _len: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_automatic_setting_reads_the_kernel_files() {
        // The features of the dev VM's balloon (stats, deflate on OOM, free-page reporting).
        let fc = "0110010100000000000000000000000010000000000000000000000000000000";
        assert!(reports_free_pages(fc));
        assert!(!reports_free_pages("0110000100000000"));
        assert!(!reports_free_pages("0110"));
        assert!(thp_allows_advice("always [madvise] never\n"));
        assert!(thp_allows_advice("[always] madvise never\n"));
        assert!(!thp_allows_advice("always madvise [never]\n"));
        assert!(!thp_allows_advice(""));
    }

    #[test]
    fn aligned_inside_rounds_inward() {
        let h = HUGE_PAGE;
        assert_eq!(aligned_inside(0, 4 * h), Some((0, 4 * h)));
        assert_eq!(aligned_inside(16, 4 * h), Some((h - 16, 3 * h)));
        assert_eq!(aligned_inside(h + 1, 2 * h), Some((h - 1, h)));
        assert_eq!(aligned_inside(h + 1, h), None);
        assert_eq!(aligned_inside(h - 1, h + 2), Some((1, h)));
        assert_eq!(aligned_inside(usize::MAX - 10, 20), None);
    }

    /// Tests that change the process-wide setting take turns.
    static SETTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn the_setting_is_what_was_set_last() {
        let _turn = SETTING.lock().unwrap_or_else(|p| p.into_inner());
        assert!(!set_huge_pages(HugePages::Off));
        assert!(!huge_pages_in_use());
        let mut v = vec![1u8; MIN_ADVISED * 2];
        assert!(!advise(&mut v), "off: never advised");
        assert!(set_huge_pages(HugePages::On));
        assert!(huge_pages_in_use());
        assert_eq!(set_huge_pages(HugePages::Auto), huge_pages_in_use());
    }

    #[test]
    fn short_regions_are_left_alone() {
        let mut v = vec![7u8; MIN_ADVISED - 1];
        assert!(!advise(&mut v));
        assert!(v.iter().all(|&b| b == 7));
        let mut w = with_capacity(1000);
        assert!(w.capacity() >= 1000 && w.is_empty());
        w.extend_from_slice(b"abc");
        assert_eq!(w, b"abc");
    }

    #[test]
    fn advice_keeps_contents() {
        let mut v: Vec<u8> = (0..(9 << 20)).map(|i: usize| (i % 251) as u8).collect();
        let _ = advise(&mut v);
        assert!(v.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }

    #[test]
    fn reserve_moves_bytes_and_grows() {
        let mut v = b"head".to_vec();
        reserve(&mut v, MIN_ADVISED);
        assert_eq!(v, b"head");
        assert!(v.capacity() >= 4 + MIN_ADVISED);
        let cap = v.capacity();
        reserve(&mut v, 10);
        assert_eq!(v.capacity(), cap, "enough room: no new allocation");
    }

    /// Where the kernel offers transparent huge pages, the advised range of a large buffer
    /// carries the `hg` (VM_HUGEPAGE) flag in `/proc/self/smaps`.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_flags_the_mapping() {
        let Ok(mode) = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        else {
            eprintln!("no transparent huge pages in this kernel: nothing to check");
            return;
        };
        if !thp_allows_advice(&mode) {
            eprintln!("transparent huge pages are off ({mode:?}): nothing to check");
            return;
        }
        let _turn = SETTING.lock().unwrap_or_else(|p| p.into_inner());
        set_huge_pages(HugePages::On);
        let mut v = with_capacity(16 << 20);
        let addr = v.spare_capacity_mut().as_ptr() as usize;
        let Some((offset, _)) = aligned_inside(addr, 16 << 20) else {
            unreachable!("a 16 MiB region holds whole huge pages");
        };
        let probe = addr + offset;
        v.resize(16 << 20, 1);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let flags = vma_flags(&smaps, probe);
        assert!(
            flags.split_whitespace().any(|f| f == "hg"),
            "THP mode {mode:?}, VmFlags of the buffer: {flags:?}"
        );
    }

    /// Prefaulting maps a buffer's pages in (its mapping's resident size covers it) and
    /// changes nothing a concurrent writer writes.
    #[cfg(target_os = "linux")]
    #[test]
    fn prefaulted_pages_are_resident_and_writes_beside_them_stand() {
        // Above glibc's largest mmap threshold (32 MiB): a mapping of its own.
        let len = 40 << 20;
        let mut v: Vec<u8> = Vec::with_capacity(len);
        let addr = v.spare_capacity_mut().as_ptr() as usize;
        assert!(
            prefault(v.spare_capacity_mut()),
            "MADV_POPULATE_WRITE (Linux 5.14+)"
        );
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let rss_kib = vma_field(&smaps, addr, "Rss:");
        assert!(rss_kib >= (len as u64 >> 10) - 8, "Rss {rss_kib} KiB");
        // In the background, while the buffer is being filled.
        let mut w: Vec<u8> = Vec::with_capacity(len);
        assert!(prefault_in_background(w.spare_capacity_mut()));
        for i in 0..len / 4096 {
            w.extend_from_slice(&[(i % 251) as u8; 4096]);
        }
        assert!(w
            .chunks(4096)
            .enumerate()
            .all(|(i, c)| c.iter().all(|b| *b == (i % 251) as u8)));
        // Memory that is about to be overwritten: mapped in, its bytes unchanged.
        let mut z = vec![0u8; len];
        z[12_345] = 7;
        let zaddr = z.as_ptr() as usize;
        let before = vma_field(
            &std::fs::read_to_string("/proc/self/smaps").unwrap_or_default(),
            zaddr,
            "Rss:",
        );
        assert!(populate(&mut z), "MADV_POPULATE_WRITE (Linux 5.14+)");
        let after = vma_field(
            &std::fs::read_to_string("/proc/self/smaps").unwrap_or_default(),
            zaddr,
            "Rss:",
        );
        assert!(before < (len as u64 >> 11), "Rss before {before} KiB");
        assert!(after >= (len as u64 >> 10) - 8, "Rss after {after} KiB");
        assert!(z
            .iter()
            .enumerate()
            .all(|(i, b)| *b == if i == 12_345 { 7 } else { 0 }));
        assert!(!populate(&mut [0u8; 100]), "no whole page");
        // Short regions are left alone.
        assert!(!prefault_in_background(
            Vec::<u8>::with_capacity(1 << 20).spare_capacity_mut()
        ));
        drop(v);
    }

    /// A numeric field (in kB) of the mapping in `smaps` that holds `addr`.
    #[cfg(target_os = "linux")]
    fn vma_field(smaps: &str, addr: usize, field: &str) -> u64 {
        vma_line(smaps, addr, field)
            .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The `VmFlags` line of the mapping in `smaps` that holds `addr`.
    #[cfg(target_os = "linux")]
    fn vma_flags(smaps: &str, addr: usize) -> String {
        vma_line(smaps, addr, "VmFlags:").unwrap_or_default()
    }

    /// The rest of the line starting with `prefix` in the mapping in `smaps` that holds `addr`.
    #[cfg(target_os = "linux")]
    fn vma_line(smaps: &str, addr: usize, prefix: &str) -> Option<String> {
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or_default();
            if let Some((lo, hi)) = first.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
            if inside {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Some(rest.trim().to_string());
                }
            }
        }
        None
    }
}
