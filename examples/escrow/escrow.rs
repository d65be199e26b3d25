//! escrow — a governed ledger. The object does arithmetic; the host's schema and policy
//! (object.toml) decide what may commit.
//!
//! Messages (text):
//!   "deposit N"   N in 1..=18 digits, > 0: balance += N, total_deposited += N, emits
//!                 "deposited N balance B" -> consume (deferred while frozen)
//!   "withdraw N"  N > 0: balance -= N with NO overdraft check of its own, emits
//!                 "withdrew N balance B" -> consume (deferred while frozen); an overdraft is
//!                 rejected by the host (schema `min = 0`, invariant `no_overdraft`)
//!   "owner NAME"  stages owner = NAME -> consume; `owner` is immutable, so the host rejects
//!                 any NAME other than the current one
//!   "freeze"      state = "frozen" -> consume
//!   "unfreeze"    state = "open" -> consume, and asks for a prompt wake (tick returns 0) so
//!                 deferred deposits/withdrawals are offered again
//!   "stats"       emits "ops=N rejections_seen=M" -> consume (no writes)
//!   anything else (bad amount, 0, overflow, unknown verb) -> reject
//!
//! The tick sleeps until a message arrives. At every entry the object asks the host whether
//! its previous entry was rejected and logs the reason. The descriptor sets
//! `rollback = "memory"`, so the memory-resident counters below are rolled back too when an
//! entry is rejected: `ops` counts only committed state-changing messages.
#![no_std]

#[path = "../guest/sojourn.rs"]
mod sojourn;

use sojourn::Text;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// Memory-resident state (not fields): lives in linear memory between entries.
struct Memo {
    /// committed state-changing messages (deposit, withdraw, owner, freeze, unfreeze)
    ops: i64,
    /// entries that found their predecessor rejected
    rejections_seen: i64,
    /// set by "unfreeze": the next tick asks for a prompt wake
    wake_soon: bool,
}

static mut MEMO: Memo = Memo { ops: 0, rejections_seen: 0, wake_soon: false };

fn memo() -> &'static mut Memo {
    // Single-threaded: the host runs one entry of an object at a time.
    unsafe { &mut *core::ptr::addr_of_mut!(MEMO) }
}

fn note_last_rejection() {
    let mut buf = [0u8; 160];
    if let Some(reason) = sojourn::last_rejection(&mut buf) {
        memo().rejections_seen += 1;
        let mut line = Text::<192>::new();
        line.push_str("previous entry rejected: ").push(reason);
        sojourn::log_bytes(sojourn::LOG_WARN, line.as_bytes());
    }
}

fn frozen() -> bool {
    let mut buf = [0u8; 8];
    sojourn::get_bytes_in("state", &mut buf) == b"frozen"
}

fn strip_prefix<'a>(msg: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if msg.len() >= prefix.len() && &msg[..prefix.len()] == prefix {
        Some(&msg[prefix.len()..])
    } else {
        None
    }
}

fn amount(arg: &[u8]) -> Option<i64> {
    match sojourn::parse_u63(arg) {
        Some(n) if n > 0 => Some(n),
        _ => None,
    }
}

fn committed(election: i32) -> i32 {
    memo().ops += 1;
    election
}

#[no_mangle]
pub extern "C" fn sojourn_tick(_now_ms: i64) -> i64 {
    note_last_rejection();
    let m = memo();
    if m.wake_soon {
        m.wake_soon = false;
        return 0;
    }
    sojourn::SLEEP
}

#[no_mangle]
pub extern "C" fn sojourn_on_message(len: i32) -> i32 {
    note_last_rejection();

    let mut buf = [0u8; 64];
    if len < 0 || len as usize > buf.len() {
        return sojourn::REJECT;
    }
    let msg = sojourn::msg_read(&mut buf);

    if let Some(arg) = strip_prefix(msg, b"deposit ") {
        let n = match amount(arg) {
            Some(n) => n,
            None => return sojourn::REJECT,
        };
        if frozen() {
            return sojourn::DEFER;
        }
        let (balance, total) = match (
            sojourn::get_i64("balance").checked_add(n),
            sojourn::get_i64("total_deposited").checked_add(n),
        ) {
            (Some(b), Some(t)) => (b, t),
            _ => return sojourn::REJECT,
        };
        sojourn::set_i64("balance", balance);
        sojourn::set_i64("total_deposited", total);
        let mut out = Text::<64>::new();
        out.push_str("deposited ").push_i64(n).push_str(" balance ").push_i64(balance);
        sojourn::emit(out.as_bytes());
        return committed(sojourn::CONSUME);
    }

    if let Some(arg) = strip_prefix(msg, b"withdraw ") {
        let n = match amount(arg) {
            Some(n) => n,
            None => return sojourn::REJECT,
        };
        if frozen() {
            return sojourn::DEFER;
        }
        // Deliberately no overdraft check: the host's policy is the guard.
        let balance = sojourn::get_i64("balance") - n;
        sojourn::set_i64("balance", balance);
        let mut out = Text::<64>::new();
        out.push_str("withdrew ").push_i64(n).push_str(" balance ").push_i64(balance);
        sojourn::emit(out.as_bytes());
        return committed(sojourn::CONSUME);
    }

    if let Some(name) = strip_prefix(msg, b"owner ") {
        sojourn::set_bytes("owner", name);
        return committed(sojourn::CONSUME);
    }

    if msg == b"freeze" {
        sojourn::set_str("state", "frozen");
        return committed(sojourn::CONSUME);
    }

    if msg == b"unfreeze" {
        sojourn::set_str("state", "open");
        memo().wake_soon = true;
        return committed(sojourn::CONSUME);
    }

    if msg == b"stats" {
        let m = memo();
        let mut out = Text::<64>::new();
        out.push_str("ops=").push_i64(m.ops).push_str(" rejections_seen=").push_i64(m.rejections_seen);
        sojourn::emit(out.as_bytes());
        return sojourn::CONSUME;
    }

    sojourn::REJECT
}
