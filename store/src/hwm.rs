//! The high-water-mark file `store.hwm`: the highest commit counter known to be durable.
//!
//! Two 56-byte slots, A (offset 0) and B (offset 56), each
//! `store id (16) ‖ commit counter (u64 BE) ‖ HMAC-SHA256(mac key, "sojourn/store/hwm/v1" ‖
//! store id ‖ counter)`. Counter `c` is written to slot `c mod 2` and fdatasync'ed after the
//! store's commit of `c` is durable, so a torn write spoils at most one slot and the other
//! still holds `c - 1`. The high-water mark is the highest counter among the valid slots
//! of this store.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::seal::Sealer;
use crate::StoreError;

pub(crate) const SLOT_LEN: usize = 16 + 8 + 32;
pub(crate) const FILE_LEN: usize = 2 * SLOT_LEN;

/// The open, locked high-water-mark file.
#[derive(Debug)]
pub(crate) struct Hwm {
    file: File,
    path: PathBuf,
}

/// A slot that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) store_id: [u8; 16],
    pub(crate) counter: u64,
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn lock(file: &File, path: &Path) -> Result<(), StoreError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(path, e)),
    }
}

fn encode(sealer: &Sealer, store_id: &[u8; 16], counter: u64) -> [u8; SLOT_LEN] {
    let mut slot = [0u8; SLOT_LEN];
    let mac = sealer.hwm_mac(store_id, counter);
    let (id, rest) = slot.split_at_mut(16);
    id.copy_from_slice(store_id);
    let (ctr, tag) = rest.split_at_mut(8);
    ctr.copy_from_slice(&counter.to_be_bytes());
    tag.copy_from_slice(&mac);
    slot
}

fn decode(sealer: &Sealer, bytes: &[u8]) -> Option<Slot> {
    let id: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
    let counter = u64::from_be_bytes(bytes.get(16..24)?.try_into().ok()?);
    let tag = bytes.get(24..SLOT_LEN)?;
    sealer.hwm_verify(&id, counter, tag).then_some(Slot {
        store_id: id,
        counter,
    })
}

impl Hwm {
    /// Opens and locks an existing file; `Ok(None)` if there is none. Opening for writing
    /// changes nothing in the file; the lock is released when the file is closed.
    pub(crate) fn open_existing(path: &Path) -> Result<Option<Hwm>, StoreError> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(path, e)),
        };
        lock(&file, path)?;
        Ok(Some(Hwm {
            file,
            path: path.to_path_buf(),
        }))
    }

    /// Creates a new file with both slots at counter 0, durably.
    pub(crate) fn create(
        path: &Path,
        sealer: &Sealer,
        store_id: &[u8; 16],
    ) -> Result<Hwm, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io(path, e))?;
        lock(&file, path)?;
        let slot = encode(sealer, store_id, 0);
        let mut both = [0u8; FILE_LEN];
        both[..SLOT_LEN].copy_from_slice(&slot);
        both[SLOT_LEN..].copy_from_slice(&slot);
        file.write_all_at(&both, 0)
            .and_then(|()| file.sync_all())
            .and_then(|()| crate::key::sync_parent_dir(path))
            .map_err(|e| io(path, e))?;
        Ok(Hwm {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The slots that verify with this key (any store id).
    pub(crate) fn read(&self, sealer: &Sealer) -> Result<Vec<Slot>, StoreError> {
        let mut buf = [0u8; FILE_LEN];
        let len = self.file.metadata().map_err(|e| io(&self.path, e))?.len();
        let n = usize::try_from(len.min(FILE_LEN as u64)).unwrap_or(0);
        let head = buf.get_mut(..n).unwrap_or_default();
        self.file
            .read_exact_at(head, 0)
            .map_err(|e| io(&self.path, e))?;
        Ok(buf
            .chunks_exact(SLOT_LEN)
            .take(n / SLOT_LEN)
            .filter_map(|s| decode(sealer, s))
            .collect())
    }

    /// The high-water mark for `store_id`: the highest counter among its valid slots.
    pub(crate) fn high_water(
        &self,
        sealer: &Sealer,
        store_id: &[u8; 16],
    ) -> Result<Option<u64>, StoreError> {
        Ok(self
            .read(sealer)?
            .into_iter()
            .filter(|s| &s.store_id == store_id)
            .map(|s| s.counter)
            .max())
    }

    /// Records `counter` in slot `counter mod 2`, durably.
    pub(crate) fn write(
        &self,
        sealer: &Sealer,
        store_id: &[u8; 16],
        counter: u64,
    ) -> std::io::Result<()> {
        let slot = encode(sealer, store_id, counter);
        let offset = (counter % 2) * SLOT_LEN as u64;
        self.file.write_all_at(&slot, offset)?;
        self.file.sync_data()
    }
}
