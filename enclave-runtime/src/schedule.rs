//! The scheduling core: which object is due when. Pure data; the host supplies the clock
//! and sleeps until [`WakeQueue::next_at`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;

/// A min-queue of wake times keyed by object, with O(log n) reschedule (stale heap entries
/// are skipped lazily using a per-key generation).
#[derive(Debug)]
pub struct WakeQueue<K: Ord + Clone + Hash> {
    heap: BinaryHeap<Reverse<(i64, u64, K)>>,
    current: HashMap<K, (i64, u64)>,
    next_gen: u64,
}

impl<K: Ord + Clone + Hash> Default for WakeQueue<K> {
    fn default() -> Self {
        WakeQueue {
            heap: BinaryHeap::new(),
            current: HashMap::new(),
            next_gen: 0,
        }
    }
}

impl<K: Ord + Clone + Hash> WakeQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules (or reschedules) `key` at `at_ms`.
    pub fn schedule(&mut self, key: K, at_ms: i64) {
        self.next_gen += 1;
        let g = self.next_gen;
        self.current.insert(key.clone(), (at_ms, g));
        self.heap.push(Reverse((at_ms, g, key)));
        // Bound the garbage: rebuild when stale entries dominate.
        if self.heap.len() > 64 && self.heap.len() > 4 * self.current.len() {
            let live: Vec<_> = self
                .current
                .iter()
                .map(|(k, (at, g))| Reverse((*at, *g, k.clone())))
                .collect();
            self.heap = live.into_iter().collect();
        }
    }

    /// Removes `key` (it sleeps until something reschedules it).
    pub fn cancel(&mut self, key: &K) {
        self.current.remove(key);
    }

    /// Whether `key` is scheduled, and when.
    pub fn scheduled_at(&self, key: &K) -> Option<i64> {
        self.current.get(key).map(|(at, _)| *at)
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse((at, g, k))) = self.heap.peek() {
            if self.current.get(k) == Some(&(*at, *g)) {
                break;
            }
            self.heap.pop();
        }
    }

    /// The earliest scheduled time.
    pub fn next_at(&mut self) -> Option<i64> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Pops one key due at or before `now_ms` (earliest first; ties in scheduling order).
    pub fn pop_due(&mut self, now_ms: i64) -> Option<(K, i64)> {
        self.drop_stale();
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now_ms => {
                let Reverse((at, _, k)) = self.heap.pop()?;
                self.current.remove(&k);
                Some((k, at))
            }
            _ => None,
        }
    }

    /// Number of scheduled keys.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_order_and_honours_reschedule_and_cancel() {
        let mut q = WakeQueue::new();
        q.schedule("a", 30);
        q.schedule("b", 10);
        q.schedule("c", 20);
        q.schedule("a", 5); // reschedule earlier
        q.schedule("c", 50); // reschedule later
        q.cancel(&"b");
        assert_eq!(q.next_at(), Some(5));
        assert_eq!(q.pop_due(4), None);
        assert_eq!(q.pop_due(100), Some(("a", 5)));
        assert_eq!(q.pop_due(49), None);
        assert_eq!(q.pop_due(50), Some(("c", 50)));
        assert!(q.is_empty());
        assert_eq!(q.next_at(), None);
    }

    #[test]
    fn stale_entries_are_bounded() {
        let mut q = WakeQueue::new();
        for i in 0..10_000 {
            q.schedule(i % 3, i);
        }
        // Rebuilt whenever stale entries exceed 4x the live ones past 64.
        assert!(q.heap.len() <= 65);
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop_due(i64::MAX).map(|x| x.1), Some(9_997));
    }
}
