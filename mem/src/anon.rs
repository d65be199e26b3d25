//! A buffer of anonymous pages whose pages can be moved, not copied, into a linear memory.
//!
//! A migration's destination receives the package into a buffer and then lays the object's
//! memory out of it into the new instance: a copy into fresh pages, each faulted in. Where
//! the memory's bytes lie in the buffer page by page, [`AnonPages::move_into`] hands those
//! pages to the memory instead (`mremap`): the page-table entries move, no byte is copied and
//! no page is faulted in. The buffer keeps its length; the moved range reads as zeros after.

use std::io;
use std::ops::{Deref, DerefMut};

/// Anonymous, page-aligned memory of a fixed length, zero to start with. Only on Linux
/// ([`AnonPages::new`] fails elsewhere).
pub struct AnonPages {
    imp: imp::Anon,
}

impl std::fmt::Debug for AnonPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnonPages")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl AnonPages {
    /// `len` zero bytes (`len` > 0), none of them faulted in yet.
    pub fn new(len: usize) -> io::Result<AnonPages> {
        Ok(AnonPages {
            imp: imp::Anon::new(len)?,
        })
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.imp.len()
    }

    /// Whether it has no bytes (never).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the buffer `len` bytes long (`len` > 0), keeping the bytes both lengths hold:
    /// bytes added read as zeros and are not faulted in; pages no longer needed are unmapped.
    /// The buffer may move. On an error it is as it was.
    pub fn set_len(&mut self, len: usize) -> io::Result<()> {
        self.imp.set_len(len)
    }

    /// Splits the buffer in two at the first page boundary at or after `len` (`len` > 0 and
    /// that boundary inside the buffer): returns its first `len` bytes, and keeps the pages
    /// after them. No page is copied, unmapped or faulted: the two own disjoint pages of one
    /// mapping. `None` (nothing changes) where that does not leave both parts bytes.
    pub fn split_front(&mut self, len: usize) -> Option<AnonPages> {
        Some(AnonPages {
            imp: self.imp.split_front(len)?,
        })
    }

    /// Faults every page of the buffer in (writable, as a write would, without writing), so
    /// that writing it later takes no page fault. Returns whether the kernel did
    /// (`MADV_POPULATE_WRITE`, Linux 5.14 and later); else the pages are faulted in on first
    /// write, as before.
    pub fn populate(&mut self) -> bool {
        let bytes: &mut [u8] = self;
        let at = bytes.as_mut_ptr().expose_provenance();
        crate::populate_write(at, bytes.len().next_multiple_of(crate::PAGE))
    }

    /// Moves this buffer's pages `[offset, offset + at.len())` to the bytes `at` of `memory`
    /// (`offset`, `at.start` and `at.end` multiples of [`crate::PAGE`]): afterwards those
    /// bytes of the memory are what the buffer held there, and the buffer reads zeros there.
    /// On an error both are as they were.
    ///
    /// The memory must be one of an engine that allocates memories on demand (wasmtime's
    /// default, which unmaps a memory when it is dropped).
    #[cfg(feature = "wasmtime")]
    pub fn move_into(
        &mut self,
        offset: usize,
        memory: &wasmtime::Memory,
        store: impl wasmtime::AsContextMut,
        at: std::ops::Range<usize>,
    ) -> io::Result<()> {
        let mut store = store;
        let data = memory.data_mut(&mut store);
        let dst = data.get_mut(at).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "a range outside the memory")
        })?;
        self.imp.move_over(offset, dst)
    }
}

impl Deref for AnonPages {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.imp.bytes()
    }
}

impl DerefMut for AnonPages {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.imp.bytes_mut()
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[cfg_attr(not(feature = "wasmtime"), allow(dead_code))]
mod imp {
    use std::io;

    use crate::PAGE;

    fn invalid(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
    }

    pub(super) struct Anon {
        ptr: *mut u8,
        /// The bytes it gives out.
        len: usize,
        /// The mapping's length: `len` rounded up to whole pages.
        mapped: usize,
    }

    // SAFETY: `Anon` owns its mapping as a `Vec` owns its allocation: `&self` gives shared
    // access to the bytes, `&mut self` exclusive access; nothing is tied to a thread.
    unsafe impl Send for Anon {}
    // SAFETY: as above; `&Anon` hands out only `&[u8]`.
    unsafe impl Sync for Anon {}

    /// A new private anonymous mapping of `len` bytes at `at` (`MAP_FIXED`, replacing what
    /// is there) or anywhere (`at` null).
    ///
    /// SAFETY (caller): with `at` non-null, `[at, at + len)` must be memory the caller owns
    /// exclusively and whose contents it gives up.
    unsafe fn map_anon(at: *mut u8, len: usize) -> io::Result<*mut u8> {
        let fixed = if at.is_null() { 0 } else { libc::MAP_FIXED };
        // SAFETY: see the function's contract; a new anonymous mapping reads as zeros.
        let ptr = unsafe {
            libc::mmap(
                at.cast::<libc::c_void>(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | fixed,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(ptr.cast::<u8>())
    }

    impl Anon {
        pub(super) fn new(len: usize) -> io::Result<Anon> {
            if len == 0 {
                return Err(invalid("an empty buffer"));
            }
            let mapped = len
                .checked_next_multiple_of(PAGE)
                .ok_or_else(|| invalid("length"))?;
            // SAFETY: a new mapping where the kernel chooses.
            let ptr = unsafe { map_anon(std::ptr::null_mut(), mapped)? };
            Ok(Anon { ptr, len, mapped })
        }

        pub(super) fn move_over(&mut self, offset: usize, dst: &mut [u8]) -> io::Result<()> {
            let len = dst.len();
            if len == 0 {
                return Ok(());
            }
            let end = offset.checked_add(len).ok_or_else(|| invalid("range"))?;
            if !offset.is_multiple_of(PAGE)
                || !len.is_multiple_of(PAGE)
                || !(dst.as_ptr() as usize).is_multiple_of(PAGE)
                || end > self.mapped
            {
                return Err(invalid("a move not made of whole pages inside the buffer"));
            }
            let src = self.ptr.wrapping_add(offset);
            // SAFETY: `[src, src + len)` lies inside this buffer's own mapping (checked), and
            // `&mut self` means no reference into it exists; `dst` is borrowed mutably, whole
            // pages (checked). MREMAP_FIXED moves the pages of the source range to `dst`,
            // replacing exactly those pages there (as if the caller had written the bytes
            // through `dst`); on failure nothing moves.
            let rc = unsafe {
                libc::mremap(
                    src.cast::<libc::c_void>(),
                    len,
                    len,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                    dst.as_mut_ptr().cast::<libc::c_void>(),
                )
            };
            if rc == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            // The source range is unmapped now: map zero pages there again, so that the
            // buffer stays whole. Should that fail the buffer cannot be used: abort rather
            // than hand out a hole.
            // SAFETY: `[src, src + len)` is this buffer's range, unmapped by the move.
            if unsafe { map_anon(src, len) }.is_err() {
                std::process::abort();
            }
            Ok(())
        }

        pub(super) fn set_len(&mut self, len: usize) -> io::Result<()> {
            if len == 0 {
                return Err(invalid("an empty buffer"));
            }
            let mapped = len
                .checked_next_multiple_of(PAGE)
                .ok_or_else(|| invalid("length"))?;
            if mapped != self.mapped {
                // SAFETY: `[ptr, ptr + mapped)` is this value's own mapping and `&mut self`
                // means no reference into it exists. `mremap` with MREMAP_MAYMOVE resizes it
                // (moving it if it must): the pages both sizes hold keep their contents, pages
                // added are new anonymous pages (zeros), pages cut off are unmapped. On
                // failure nothing changes.
                let ptr = unsafe {
                    libc::mremap(
                        self.ptr.cast::<libc::c_void>(),
                        self.mapped,
                        mapped,
                        libc::MREMAP_MAYMOVE,
                    )
                };
                if ptr == libc::MAP_FAILED {
                    return Err(io::Error::last_os_error());
                }
                self.ptr = ptr.cast::<u8>();
                self.mapped = mapped;
            }
            if len < self.len {
                // The bytes past the new length that are still mapped (in its last page) are
                // zeroed: bytes past the length read as zeros, should it grow again, and a
                // page moved whole carries nothing past it.
                let end = self.len.min(self.mapped);
                // SAFETY: `[ptr + len, ptr + end)` lies inside the mapping (end <= mapped),
                // and `&mut self` makes this the only access.
                unsafe { std::ptr::write_bytes(self.ptr.wrapping_add(len), 0, end - len) };
            }
            self.len = len;
            Ok(())
        }

        pub(super) fn split_front(&mut self, len: usize) -> Option<Anon> {
            let front = len.checked_next_multiple_of(PAGE)?;
            if len == 0 || front >= self.len {
                return None;
            }
            let first = Anon {
                ptr: self.ptr,
                len,
                mapped: front,
            };
            // The bytes of the first part past `len` (in its last page) are zeroed: a part's
            // bytes past its length read as zeros (see `set_len`).
            // SAFETY: `[ptr + len, ptr + front)` lies inside this mapping (front < self.len),
            // and `&mut self` makes this the only access.
            unsafe { std::ptr::write_bytes(self.ptr.wrapping_add(len), 0, front - len) };
            self.ptr = self.ptr.wrapping_add(front);
            self.len -= front;
            self.mapped -= front;
            Some(first)
        }

        pub(super) fn len(&self) -> usize {
            self.len
        }

        pub(super) fn bytes(&self) -> &[u8] {
            // SAFETY: `ptr` is the start of a live mapping of `len` readable bytes (anonymous
            // pages read as zeros until written), owned by this value until it is dropped.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }

        pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
            // SAFETY: as in `bytes`, and `&mut self` makes this the only reference.
            unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
        }
    }

    impl Drop for Anon {
        fn drop(&mut self) {
            // SAFETY: exactly the pages this value owns (its mapping, or its part of one
            // `split_front` divided; kept whole by `move_over`), unmapped once; no reference
            // into them outlives `self`.
            unsafe {
                libc::munmap(self.ptr.cast::<libc::c_void>(), self.mapped);
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
#[cfg_attr(not(feature = "wasmtime"), allow(dead_code))]
mod imp {
    use std::io;

    pub(super) struct Anon(std::convert::Infallible);

    impl Anon {
        pub(super) fn new(_len: usize) -> io::Result<Anon> {
            Err(io::Error::new(io::ErrorKind::Unsupported, "needs Linux"))
        }
        pub(super) fn move_over(&mut self, _offset: usize, _dst: &mut [u8]) -> io::Result<()> {
            match self.0 {}
        }
        pub(super) fn set_len(&mut self, _len: usize) -> io::Result<()> {
            match self.0 {}
        }
        pub(super) fn split_front(&mut self, _len: usize) -> Option<Anon> {
            match self.0 {}
        }
        pub(super) fn len(&self) -> usize {
            match self.0 {}
        }
        pub(super) fn bytes(&self) -> &[u8] {
            match self.0 {}
        }
        pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
            match self.0 {}
        }
    }
}

#[cfg(all(test, target_os = "linux", feature = "wasmtime"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::PAGE;

    #[test]
    fn moved_pages_land_in_the_memory_and_leave_zeros() {
        let engine = wasmtime::Engine::default();
        let mut store = wasmtime::Store::new(&engine, ());
        let mem = wasmtime::Memory::new(&mut store, wasmtime::MemoryType::new(2, None)).unwrap();
        mem.data_mut(&mut store).fill(0x11);
        let mut buf = AnonPages::new(10 * PAGE + 5).unwrap();
        assert_eq!(buf.len(), 10 * PAGE + 5);
        assert!(buf.iter().all(|b| *b == 0));
        let bytes: Vec<u8> = (0..buf.len()).map(|i| (i % 251) as u8).collect();
        buf.copy_from_slice(&bytes);
        buf.move_into(2 * PAGE, &mem, &mut store, 4 * PAGE..7 * PAGE)
            .unwrap();
        let data = mem.data(&store);
        assert!(data[..4 * PAGE].iter().all(|b| *b == 0x11));
        assert!(data[4 * PAGE..7 * PAGE] == bytes[2 * PAGE..5 * PAGE]);
        assert!(data[7 * PAGE..].iter().all(|b| *b == 0x11));
        assert!(buf[2 * PAGE..5 * PAGE].iter().all(|b| *b == 0));
        assert!(buf[..2 * PAGE] == bytes[..2 * PAGE] && buf[5 * PAGE..] == bytes[5 * PAGE..]);
        // The buffer is whole: it can be written where the pages left.
        buf[3 * PAGE] = 9;
        // And bad moves change nothing.
        assert!(buf.move_into(1, &mem, &mut store, 0..PAGE).is_err());
        assert!(buf
            .move_into(10 * PAGE, &mem, &mut store, 0..2 * PAGE)
            .is_err());
        // The last, partial page moves whole.
        buf.move_into(10 * PAGE, &mem, &mut store, 0..PAGE).unwrap();
        assert!(mem.data(&store)[..5] == bytes[10 * PAGE..]);
        assert!(mem.data(&store)[5..PAGE].iter().all(|b| *b == 0));
        assert!(buf.move_into(0, &mem, &mut store, 0..3 * 65536).is_err());
        assert!(mem.data(&store)[PAGE..4 * PAGE].iter().all(|b| *b == 0x11));
    }
}
