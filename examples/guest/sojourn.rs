//! Guest helpers for Sojourn objects written in Rust (object ABI version 1).
//!
//! See docs/object-abi.md for the contract. Built for `wasm32-unknown-unknown` with
//! `#![no_std]` (Debian's rustc 1.63 is enough; see examples/build.sh). Include it with
//!
//! ```ignore
//! #[path = "../guest/sojourn.rs"]
//! mod sojourn;
//! ```
//!
//! and export entry points with fixed names:
//!
//! ```ignore
//! #[no_mangle] pub extern "C" fn sojourn_tick(now_ms: i64) -> i64 { sojourn::SLEEP }
//! #[no_mangle] pub extern "C" fn sojourn_on_message(len: i32) -> i32 { sojourn::CONSUME }
//! #[no_mangle] pub extern "C" fn sojourn_init(now_ms: i64) -> i64 { 0 }
//! ```
//!
//! Field writes are staged: nothing changes until the entry returns and the host accepts it.
//! Only the imports an object actually calls end up in its module.
#![allow(dead_code)]

/// Decision: sleep until a message arrives.
pub const SLEEP: i64 = -1;
/// Election: commit this entry's writes and emitted messages.
pub const CONSUME: i32 = 0;
/// Election: keep the message queued; it is offered again at the next wake.
pub const DEFER: i32 = 1;
/// Election: drop the message (recorded).
pub const REJECT: i32 = 2;

pub const LOG_ERROR: i32 = 0;
pub const LOG_WARN: i32 = 1;
pub const LOG_INFO: i32 = 2;
pub const LOG_DEBUG: i32 = 3;

/// The raw imports (module "sojourn"). Pointers are offsets into the exported `memory`.
pub mod raw {
    #[link(wasm_import_module = "sojourn")]
    extern "C" {
        pub fn field_get_i64(name_ptr: *const u8, name_len: i32) -> i64;
        pub fn field_set_i64(name_ptr: *const u8, name_len: i32, value: i64);
        pub fn field_get_bool(name_ptr: *const u8, name_len: i32) -> i32;
        pub fn field_set_bool(name_ptr: *const u8, name_len: i32, value: i32);
        pub fn field_get_bytes(name_ptr: *const u8, name_len: i32, out_ptr: *mut u8, out_cap: i32) -> i32;
        pub fn field_set_bytes(name_ptr: *const u8, name_len: i32, ptr: *const u8, len: i32);
        pub fn field_get_cbor(name_ptr: *const u8, name_len: i32, out_ptr: *mut u8, out_cap: i32) -> i32;
        pub fn field_set_cbor(name_ptr: *const u8, name_len: i32, ptr: *const u8, len: i32);
        pub fn msg_len() -> i32;
        pub fn msg_read(out_ptr: *mut u8, out_cap: i32) -> i32;
        pub fn emit(ptr: *const u8, len: i32);
        pub fn log(level: i32, ptr: *const u8, len: i32);
        pub fn now() -> i64;
        pub fn random(out_ptr: *mut u8, len: i32);
        pub fn last_rejection(out_ptr: *mut u8, out_cap: i32) -> i32;
    }
}

// All slices live in linear memory, whose size is far below i32::MAX, so `as i32` is exact.

/// Value of an `int` field (sees this entry's own staged writes).
pub fn get_i64(name: &str) -> i64 {
    unsafe { raw::field_get_i64(name.as_ptr(), name.len() as i32) }
}

/// Stages a write to an `int` field.
pub fn set_i64(name: &str, value: i64) {
    unsafe { raw::field_set_i64(name.as_ptr(), name.len() as i32, value) }
}

pub fn get_bool(name: &str) -> bool {
    unsafe { raw::field_get_bool(name.as_ptr(), name.len() as i32) != 0 }
}

pub fn set_bool(name: &str, value: bool) {
    unsafe { raw::field_set_bool(name.as_ptr(), name.len() as i32, value as i32) }
}

/// A `string`, `bytes` or `enum` field (enum as its variant name): copies what fits into
/// `buf` and returns the field's full length.
pub fn get_bytes(name: &str, buf: &mut [u8]) -> usize {
    unsafe { raw::field_get_bytes(name.as_ptr(), name.len() as i32, buf.as_mut_ptr(), buf.len() as i32) as usize }
}

/// Like [`get_bytes`], returning the part that fit.
pub fn get_bytes_in<'a>(name: &str, buf: &'a mut [u8]) -> &'a [u8] {
    let n = get_bytes(name, buf);
    let n = if n < buf.len() { n } else { buf.len() };
    &buf[..n]
}

/// Stages a write to a `string`, `bytes` or `enum` (variant name) field.
pub fn set_bytes(name: &str, value: &[u8]) {
    unsafe { raw::field_set_bytes(name.as_ptr(), name.len() as i32, value.as_ptr(), value.len() as i32) }
}

pub fn set_str(name: &str, value: &str) {
    set_bytes(name, value.as_bytes())
}

/// Any field as canonical CBOR; copies what fits and returns the full length.
pub fn get_cbor(name: &str, buf: &mut [u8]) -> usize {
    unsafe { raw::field_get_cbor(name.as_ptr(), name.len() as i32, buf.as_mut_ptr(), buf.len() as i32) as usize }
}

pub fn set_cbor(name: &str, cbor: &[u8]) {
    unsafe { raw::field_set_cbor(name.as_ptr(), name.len() as i32, cbor.as_ptr(), cbor.len() as i32) }
}

/// Length of the message being offered, `None` outside `sojourn_on_message`.
pub fn msg_len() -> Option<usize> {
    let n = unsafe { raw::msg_len() };
    if n < 0 { None } else { Some(n as usize) }
}

/// Copies the offered message into `buf` and returns the part that fit (empty outside
/// `sojourn_on_message`). Compare its length with `msg_len()` to detect truncation.
pub fn msg_read(buf: &mut [u8]) -> &[u8] {
    let n = unsafe { raw::msg_read(buf.as_mut_ptr(), buf.len() as i32) };
    let n = if n < 0 { 0 } else if n as usize > buf.len() { buf.len() } else { n as usize };
    &buf[..n]
}

/// An outbound message; it leaves the object only if the entry commits.
pub fn emit(msg: &[u8]) {
    unsafe { raw::emit(msg.as_ptr(), msg.len() as i32) }
}

/// A log line, recorded with the transition.
pub fn log(level: i32, line: &str) {
    log_bytes(level, line.as_bytes())
}

pub fn log_bytes(level: i32, line: &[u8]) {
    unsafe { raw::log(level, line.as_ptr(), line.len() as i32) }
}

/// The entry's time in ms since the Unix epoch (fixed per entry, recorded).
pub fn now() -> i64 {
    unsafe { raw::now() }
}

/// Fills `buf` with recorded host randomness (at most 256 bytes per call, 1024 per entry).
pub fn random(buf: &mut [u8]) {
    unsafe { raw::random(buf.as_mut_ptr(), buf.len() as i32) }
}

/// If the previous entry was rejected by the schema or policy, the reason (the part that fit
/// into `buf`); otherwise `None`.
pub fn last_rejection(buf: &mut [u8]) -> Option<&[u8]> {
    let n = unsafe { raw::last_rejection(buf.as_mut_ptr(), buf.len() as i32) };
    if n <= 0 {
        return None;
    }
    let n = if n as usize > buf.len() { buf.len() } else { n as usize };
    Some(&buf[..n])
}

/// Parses 1..=18 ASCII digits (all of `s`) as a non-negative integer.
pub fn parse_u63(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as i64;
    }
    Some(v)
}

/// A fixed-capacity text buffer for building messages and log lines without an allocator.
/// Writes past the capacity are dropped.
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    pub const fn new() -> Self {
        Text { buf: [0; N], len: 0 }
    }

    pub fn push(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            if self.len < N {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }

    pub fn push_str(&mut self, s: &str) -> &mut Self {
        self.push(s.as_bytes())
    }

    pub fn push_i64(&mut self, v: i64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut u = v.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (u % 10) as u8;
            u /= 10;
            if u == 0 {
                break;
            }
        }
        if v < 0 {
            self.push(b"-");
        }
        self.push(&digits[i..])
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}
