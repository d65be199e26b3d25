//! A redb storage backend that reads a file and keeps every write in memory.
//!
//! `Store::open` verifies an existing store through this backend before it opens the file
//! for real: redb's integrity check (which verifies every page checksum instead of trusting
//! the file, and "commits" a rebuilt allocator state) and its crash recovery both run here,
//! and their writes go to memory. So a store that is refused is never written to, and a
//! tampered file cannot reach redb's trusting open path.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

const BLOCK: u64 = 4096;

#[derive(Debug)]
struct State {
    /// The length redb sees.
    len: u64,
    /// Bytes of the file below this offset are visible where no block overrides them
    /// (it only shrinks, when redb shrinks the storage).
    base_visible: u64,
    /// Written blocks, by block number; each is `BLOCK` bytes.
    blocks: BTreeMap<u64, Vec<u8>>,
}

/// Reads from `file`, writes to memory.
#[derive(Debug)]
pub(crate) struct OverlayBackend {
    file: File,
    state: Mutex<State>,
}

fn poisoned() -> io::Error {
    io::Error::other("overlay backend lock poisoned")
}

fn out_of_range() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "read or write past the end of storage",
    )
}

impl OverlayBackend {
    pub(crate) fn new(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            state: Mutex::new(State {
                len,
                base_visible: len,
                blocks: BTreeMap::new(),
            }),
        })
    }

    /// Reads `out.len()` bytes at `offset` as the file currently looks to redb.
    fn read_state(&self, st: &State, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let len = out.len() as u64;
        let end = offset.checked_add(len).ok_or_else(out_of_range)?;
        if end > st.len {
            return Err(out_of_range());
        }
        // The file's bytes, then zeros past what of the file is visible.
        let from_file = st.base_visible.saturating_sub(offset).min(len);
        let split = usize::try_from(from_file).map_err(|_| out_of_range())?;
        let (file_part, zero_part) = out.split_at_mut(split.min(out.len()));
        if !file_part.is_empty() {
            self.file.read_exact_at(file_part, offset)?;
        }
        zero_part.fill(0);
        // Then the blocks written since.
        let first = offset / BLOCK;
        let last = (end - 1) / BLOCK;
        for (&n, block) in st.blocks.range(first..=last) {
            let b_start = n * BLOCK;
            let lo = b_start.max(offset);
            let hi = (b_start + BLOCK).min(end);
            if lo >= hi {
                continue;
            }
            let src = block
                .get(
                    usize::try_from(lo - b_start).map_err(|_| out_of_range())?
                        ..usize::try_from(hi - b_start).map_err(|_| out_of_range())?,
                )
                .ok_or_else(out_of_range)?;
            let dst = out
                .get_mut(
                    usize::try_from(lo - offset).map_err(|_| out_of_range())?
                        ..usize::try_from(hi - offset).map_err(|_| out_of_range())?,
                )
                .ok_or_else(out_of_range)?;
            dst.copy_from_slice(src);
        }
        Ok(())
    }
}

impl redb::StorageBackend for OverlayBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state.lock().map_err(|_| poisoned())?.len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let st = self.state.lock().map_err(|_| poisoned())?;
        self.read_state(&st, offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        if len < st.len {
            st.base_visible = st.base_visible.min(len);
            // Drop whole blocks past the end; zero the tail of the last one, so that a later
            // growth reads zeros there.
            let keep = len.div_ceil(BLOCK);
            st.blocks.retain(|&n, _| n < keep);
            let tail = len % BLOCK;
            if tail != 0 {
                if let Some(block) = st.blocks.get_mut(&(len / BLOCK)) {
                    let from = usize::try_from(tail).map_err(|_| out_of_range())?;
                    if let Some(rest) = block.get_mut(from..) {
                        rest.fill(0);
                    }
                }
            }
        }
        st.len = len;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(out_of_range)?;
        if end > st.len {
            return Err(out_of_range());
        }
        let mut pos = offset;
        while pos < end {
            let n = pos / BLOCK;
            let b_start = n * BLOCK;
            let hi = (b_start + BLOCK).min(end);
            if !st.blocks.contains_key(&n) {
                // Materialise the block as it reads now (clipped to the storage length).
                let mut block = vec![0u8; BLOCK as usize];
                let avail = st.len.saturating_sub(b_start).min(BLOCK);
                let avail = usize::try_from(avail).map_err(|_| out_of_range())?;
                let head = block.get_mut(..avail).ok_or_else(out_of_range)?;
                self.read_state(&st, b_start, head)?;
                st.blocks.insert(n, block);
            }
            let block = st.blocks.get_mut(&n).ok_or_else(out_of_range)?;
            let dst = block
                .get_mut(
                    usize::try_from(pos - b_start).map_err(|_| out_of_range())?
                        ..usize::try_from(hi - b_start).map_err(|_| out_of_range())?,
                )
                .ok_or_else(out_of_range)?;
            let src = data
                .get(
                    usize::try_from(pos - offset).map_err(|_| out_of_range())?
                        ..usize::try_from(hi - offset).map_err(|_| out_of_range())?,
                )
                .ok_or_else(out_of_range)?;
            dst.copy_from_slice(src);
            pos = hi;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::StorageBackend;
    use std::io::Write;

    #[test]
    fn writes_stay_in_memory_and_reads_see_them() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let original: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&original).unwrap();
        f.flush().unwrap();
        let o = OverlayBackend::new(File::open(f.path()).unwrap()).unwrap();
        assert_eq!(o.len().unwrap(), 10_000);
        o.write(4000, &[0xaa; 200]).unwrap();
        let mut buf = vec![0u8; 300];
        o.read(3950, &mut buf).unwrap();
        assert_eq!(&buf[..50], &original[3950..4000]);
        assert_eq!(&buf[50..250], &[0xaa; 200][..]);
        assert_eq!(&buf[250..], &original[4200..4250]);
        // Grow: zeros; write past the old end.
        o.set_len(20_000).unwrap();
        o.write(15_000, b"xyz").unwrap();
        let mut buf = vec![1u8; 10];
        o.read(14_998, &mut buf).unwrap();
        assert_eq!(&buf, b"\0\0xyz\0\0\0\0\0");
        // Shrink then grow: the cut bytes read as zeros, not as the file's.
        o.set_len(5000).unwrap();
        o.set_len(6000).unwrap();
        let mut buf = vec![1u8; 1100];
        o.read(4900, &mut buf).unwrap();
        assert_eq!(&buf[..100], &original[4900..5000]);
        assert!(buf[100..].iter().all(|&b| b == 0));
        assert!(o.read(5999, &mut [0u8; 2]).is_err());
        assert!(o.write(5999, &[0u8; 2]).is_err());
        // The file is untouched.
        assert_eq!(std::fs::read(f.path()).unwrap(), original);
    }
}
