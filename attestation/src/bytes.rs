//! Bounds-checked reading of untrusted byte strings.

use crate::error::ParseError;

/// A cursor over untrusted bytes; every read is bounds-checked and typed.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let end = self.pos.checked_add(n).ok_or(ParseError::Truncated {
            what: self.what,
            offset: self.pos,
            needed: n,
        })?;
        let out = self.buf.get(self.pos..end).ok_or(ParseError::Truncated {
            what: self.what,
            offset: self.pos,
            needed: n,
        })?;
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        let s = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(u8::from_le_bytes(self.array::<1>()?))
    }
    pub(crate) fn u16_be(&mut self) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32_be(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64_be(&mut self) -> Result<u64, ParseError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32_le(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64_le(&mut self) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Fail unless every byte was consumed.
    pub(crate) fn finish(&self) -> Result<(), ParseError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(ParseError::TrailingBytes {
                what: self.what,
                count: self.remaining(),
            })
        }
    }
}

/// `N` bytes at `offset` of `buf`.
pub(crate) fn field<const N: usize>(
    buf: &[u8],
    offset: usize,
    what: &'static str,
) -> Result<[u8; N], ParseError> {
    let mut r = Reader::new(buf, what);
    r.take(offset)?;
    r.array::<N>()
}

/// A slice of `buf`, or a typed truncation error.
pub(crate) fn slice<'a>(
    buf: &'a [u8],
    start: usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], ParseError> {
    let mut r = Reader::new(buf, what);
    r.take(start)?;
    r.take(len)
}
