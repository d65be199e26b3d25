//! Bounds-checked little-endian reads.

pub(crate) fn slice(data: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    data.get(off..off.checked_add(len)?)
}

pub(crate) fn u16_at(data: &[u8], off: usize) -> Option<u16> {
    let b = slice(data, off, 2)?;
    Some(u16::from_le_bytes([*b.first()?, *b.get(1)?]))
}

pub(crate) fn u32_at(data: &[u8], off: usize) -> Option<u32> {
    let b: [u8; 4] = slice(data, off, 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

pub(crate) fn u64_at(data: &[u8], off: usize) -> Option<u64> {
    let b: [u8; 8] = slice(data, off, 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// Write `v` little-endian at `off` into a buffer the caller sized; out of range is ignored
/// only for fixed, in-crate layouts (checked by tests).
pub(crate) fn put(buf: &mut [u8], off: usize, v: &[u8]) {
    if let Some(dst) = off
        .checked_add(v.len())
        .and_then(|end| buf.get_mut(off..end))
    {
        dst.copy_from_slice(v);
    }
}
