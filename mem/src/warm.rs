//! Pages faulted in ahead of need: the buffer the next migration arrival is received into.
//!
//! An arrival receives its package into fresh anonymous pages ([`AnonPages`]), whose memory
//! part then becomes the object's memory. Each of those pages is faulted in and zeroed by the
//! kernel when it is first written: for 64 MiB, ~16,000 faults and ~18–25 ms of CPU on the
//! VMs this was measured on, spent during the transfer, on cores the transfer itself needs.
//! [`WarmPages`] keeps one buffer of that kind faulted in beforehand, and faults the next one
//! in when asked to after an arrival took it ([`WarmPages::refill`], which the host calls when
//! a package's last byte is in, with a delay that lets the arrival finish), on a thread that runs only when a core would otherwise idle
//! (`SCHED_IDLE`). The work is the same; it moves out of the migration into idle time, at the
//! price of the pool's pages held while no arrival comes.
//!
//! The pages of a new buffer are the kernel's zero pages for this process: they never held
//! another object's bytes, and an arrival that takes them writes them from the start.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::AnonPages;

/// A pool of one buffer of `capacity` bytes, faulted in ahead of need (see the module docs).
/// Cloning it shares the pool.
#[derive(Clone)]
pub struct WarmPages {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WarmPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPages")
            .field("capacity", &self.shared.capacity)
            .field("ready", &self.is_ready())
            .finish()
    }
}

struct Shared {
    capacity: usize,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The buffer, faulted in (whole, or the rest of one an arrival took the front of);
    /// `None` while one is being (or could not be) made.
    pages: Option<AnonPages>,
    /// A thread is making one.
    filling: bool,
    /// The last fill could not map or fault in the buffer: no more are tried.
    failed: bool,
}

/// A buffer from the pool: its first `warm` bytes were faulted in ahead of time.
#[derive(Debug)]
pub struct TakenPages {
    /// The buffer, of the length asked for.
    pub pages: AnonPages,
    /// How many of its first bytes were faulted in (what the pool held or the length, the
    /// smaller); the rest fault in when written, as in a new buffer.
    pub warm: usize,
}

impl WarmPages {
    /// A pool of one buffer of `capacity` bytes, which a thread starts faulting in now.
    /// `None` for a capacity of 0.
    pub fn new(capacity: usize) -> Option<WarmPages> {
        if capacity == 0 {
            return None;
        }
        let pool = WarmPages {
            shared: Arc::new(Shared {
                capacity,
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }),
        };
        pool.start_fill(&mut pool.state(), Duration::ZERO);
        Some(pool)
    }

    /// Whether a buffer is ready to be taken.
    pub fn is_ready(&self) -> bool {
        self.state().pages.is_some()
    }

    /// Waits up to `timeout` for a buffer to be ready; returns whether one is. Returns at once
    /// when the pool could not make one.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        loop {
            if state.pages.is_some() {
                return true;
            }
            if state.failed || !state.filling {
                return false;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            state = match self.shared.changed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// A buffer of `len` bytes (`len` > 0) out of the pool's, if one is ready. A length
    /// above what the pool holds gets all of it, grown (the rest is faulted in when written);
    /// a shorter one gets its first pages, and the pool keeps the rest, still faulted in, for
    /// the next arrival (nothing is unmapped on the way). `None` when no buffer is ready (one
    /// is being made, or the pool could not make one).
    ///
    /// The next buffer is made only when [`WarmPages::refill`] is called: faulting 64 MiB in
    /// takes the idle time of a core and the memory's bandwidth, which the arrival that took
    /// this buffer still needs, even at the lowest priority.
    pub fn take(&self, len: usize) -> Option<TakenPages> {
        if len == 0 {
            return None;
        }
        let mut state = self.state();
        if let Some(front) = state.pages.as_mut().and_then(|p| p.split_front(len)) {
            return Some(TakenPages {
                pages: front,
                warm: len,
            });
        }
        let mut pages = state.pages.take()?;
        drop(state);
        let warm = pages.len().min(len);
        pages.set_len(len).ok()?;
        Some(TakenPages { pages, warm })
    }

    /// Starts making the next buffer after `delay`, unless a whole one is ready or one is
    /// being made. What is left of a buffer an arrival took the front of is grown back to
    /// the capacity (only the pages added are faulted in).
    pub fn refill(&self, delay: Duration) {
        self.start_fill(&mut self.state(), delay);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves a state that is still consistent (every
        // change is one assignment).
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a thread that makes a buffer after `delay`, unless one is running, one is
    /// ready or the pool failed.
    fn start_fill(&self, state: &mut State, delay: Duration) {
        let whole = state
            .pages
            .as_ref()
            .is_some_and(|p| p.len() >= self.shared.capacity);
        if state.filling || state.failed || whole {
            return;
        }
        // A rest kept from the last buffer is grown back; meanwhile no buffer is ready.
        let rest = state.pages.take();
        let shared = Arc::clone(&self.shared);
        let started = std::thread::Builder::new()
            .name("sojourn-warm".into())
            .spawn(move || {
                std::thread::sleep(delay);
                lower_priority();
                let made = match rest {
                    Some(mut rest) => rest.set_len(shared.capacity).map(|()| rest),
                    None => AnonPages::new(shared.capacity),
                };
                let made = made.ok().and_then(|mut p| p.populate().then_some(p));
                let mut state = shared
                    .state
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                state.filling = false;
                match made {
                    Some(pages) => state.pages = Some(pages),
                    None => state.failed = true,
                }
                drop(state);
                shared.changed.notify_all();
            });
        state.filling = started.is_ok();
        state.failed = started.is_err();
    }
}

/// This thread runs only on a core that would otherwise idle (`SCHED_IDLE`), where the
/// kernel allows it; else at the normal priority.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sets the calling thread's (pid 0) scheduling policy; reads `param` only. A
    // refusal changes nothing.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::PAGE;

    const WAIT: Duration = Duration::from_secs(30);

    /// Resident pages of `bytes` (mincore), to see what was faulted in.
    #[allow(unsafe_code)]
    fn resident_pages(bytes: &[u8]) -> usize {
        let pages = bytes.len().div_ceil(PAGE);
        let mut vec = vec![0u8; pages];
        // SAFETY: `bytes` is a mapped, page-aligned range (an AnonPages buffer); mincore
        // writes one byte per page into `vec`, which has that many.
        let rc = unsafe {
            libc::mincore(
                bytes.as_ptr() as *mut libc::c_void,
                bytes.len(),
                vec.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0);
        vec.iter().filter(|b| **b & 1 == 1).count()
    }

    fn disjoint(a: &[u8], b: &[u8]) -> bool {
        let (a, b) = (a.as_ptr_range(), b.as_ptr_range());
        a.end <= b.start || b.end <= a.start
    }

    #[test]
    fn a_taken_buffer_is_warm_zero_and_of_the_length_asked_and_the_rest_stays() {
        let pool = WarmPages::new(64 * PAGE + 100).unwrap();
        assert!(pool.wait_ready(WAIT));
        let taken = pool.take(40 * PAGE + 7).unwrap();
        assert_eq!(taken.pages.len(), 40 * PAGE + 7);
        assert_eq!(taken.warm, 40 * PAGE + 7);
        // A kernel that knows MADV_POPULATE_WRITE (5.14 and later) accepts it for an empty
        // range; the pages were then faulted in ahead.
        if crate::populate_write(0, 0) {
            assert_eq!(resident_pages(&taken.pages), 41);
        }
        assert!(taken.pages.iter().all(|b| *b == 0));
        // The pool keeps the rest, faulted in, for the next arrival; one longer than it gets
        // it grown.
        assert!(pool.is_ready());
        let rest = pool.take(30 * PAGE).unwrap();
        assert_eq!((rest.pages.len(), rest.warm), (30 * PAGE, 23 * PAGE + 100));
        assert!(rest.pages.iter().all(|b| *b == 0));
        assert!(disjoint(&rest.pages, &taken.pages));
        // Nothing left, and no next buffer until asked for.
        assert!(!pool.is_ready() && !pool.wait_ready(Duration::from_millis(50)));
        assert!(pool.take(PAGE).is_none());
        pool.refill(Duration::from_millis(10));
        assert!(pool.wait_ready(WAIT));
        // Asked for again while a whole one is ready: nothing changes.
        pool.refill(Duration::ZERO);
        let next = pool.take(64 * PAGE + 100).unwrap();
        assert_eq!(next.warm, 64 * PAGE + 100);
        assert!(next.pages.iter().all(|b| *b == 0));
        assert!(!pool.is_ready());
    }

    #[test]
    fn a_rest_is_grown_back_to_the_capacity() {
        let pool = WarmPages::new(16 * PAGE).unwrap();
        assert!(pool.wait_ready(WAIT));
        let mut front = pool.take(4 * PAGE).unwrap();
        front.pages.fill(0x5A);
        pool.refill(Duration::ZERO);
        assert!(pool.wait_ready(WAIT));
        let whole = pool.take(16 * PAGE).unwrap();
        assert_eq!((whole.pages.len(), whole.warm), (16 * PAGE, 16 * PAGE));
        assert!(whole.pages.iter().all(|b| *b == 0));
        assert!(disjoint(&whole.pages, &front.pages));
        assert!(front.pages.iter().all(|b| *b == 0x5A));
    }

    #[test]
    fn a_longer_buffer_is_warm_only_up_to_the_capacity() {
        let pool = WarmPages::new(8 * PAGE).unwrap();
        assert!(pool.wait_ready(WAIT));
        let mut taken = pool.take(20 * PAGE + 1).unwrap();
        assert_eq!((taken.pages.len(), taken.warm), (20 * PAGE + 1, 8 * PAGE));
        assert!(taken.pages.iter().all(|b| *b == 0));
        taken.pages[20 * PAGE] = 7;
        assert_eq!(taken.pages[20 * PAGE], 7);
    }

    #[test]
    fn the_same_pages_are_never_handed_out_twice() {
        let pool = WarmPages::new(16 * PAGE).unwrap();
        assert!(pool.take(0).is_none());
        assert!(pool.wait_ready(WAIT));
        let first = pool.take(16 * PAGE).unwrap();
        assert!(pool.take(PAGE).is_none());
        // Asked for twice: one buffer is made.
        pool.refill(Duration::ZERO);
        pool.refill(Duration::ZERO);
        assert!(pool.wait_ready(WAIT));
        let second = pool.take(16 * PAGE).unwrap();
        assert!(disjoint(&second.pages, &first.pages));
        assert!(pool.take(PAGE).is_none());
        assert!(WarmPages::new(0).is_none());
    }

    #[test]
    fn a_buffer_keeps_its_bytes_when_its_length_changes() {
        let mut pages = AnonPages::new(3 * PAGE).unwrap();
        for (i, b) in pages.iter_mut().enumerate() {
            *b = (i % 253) as u8 | 1;
        }
        pages.set_len(PAGE + 10).unwrap();
        assert_eq!(pages.len(), PAGE + 10);
        assert!(pages
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 253) as u8 | 1));
        // Grown again: what was cut reads as zeros, in the kept page as in new ones.
        pages.set_len(5 * PAGE).unwrap();
        assert!(pages[..PAGE + 10]
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 253) as u8 | 1));
        assert!(pages[PAGE + 10..].iter().all(|b| *b == 0));
        assert!(pages.set_len(0).is_err());
        assert_eq!(pages.len(), 5 * PAGE);
    }

    #[test]
    fn a_split_buffer_is_two_buffers_of_the_same_bytes() {
        let mut pages = AnonPages::new(5 * PAGE + 3).unwrap();
        for (i, b) in pages.iter_mut().enumerate() {
            *b = (i % 251) as u8 | 1;
        }
        let mut front = pages.split_front(2 * PAGE + 9).unwrap();
        assert_eq!((front.len(), pages.len()), (2 * PAGE + 9, 2 * PAGE + 3));
        assert!(front
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8 | 1));
        assert!(pages
            .iter()
            .enumerate()
            .all(|(i, b)| *b == ((i + 3 * PAGE) % 251) as u8 | 1));
        // The front's last page reads zeros past its length.
        front.set_len(3 * PAGE).unwrap();
        assert!(front[2 * PAGE + 9..].iter().all(|b| *b == 0));
        // Nothing is split off that would leave no bytes behind.
        assert!(pages.split_front(0).is_none());
        assert!(pages.split_front(2 * PAGE + 1).is_none());
        assert!(pages.split_front(2 * PAGE + 3).is_none());
        assert_eq!(pages.len(), 2 * PAGE + 3);
        drop(front);
        pages[2 * PAGE + 2] = 0;
    }
}
