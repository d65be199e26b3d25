//! Trust slope: the trust accumulated along an object's lineage, and the policy rules that
//! gate mutations on it. Defined precisely in docs/trust-slope.md.
//!
//! Scores are integers 0..=100 so that every host and every verifier computes the same
//! values: the score of an entry comes from its appraisal's trust vector (worst tier wins),
//! and the slope is a window of recent scores plus an exponentially weighted mean in fixed
//! point (α = 1/8).

use std::collections::VecDeque;

/// Most recent scores kept (the largest window a rule may name).
pub const MAX_WINDOW: usize = 256;

/// Score of an affirming appraisal.
pub const SCORE_AFFIRMING: u8 = 100;
/// Score of an appraisal whose worst claim is a warning.
pub const SCORE_WARNING: u8 = 50;
/// Score of a contraindicated appraisal or one that asserts nothing.
pub const SCORE_NONE: u8 = 0;

/// The trust accumulated along a lineage, as the runtime and the verifier hold it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustView {
    recent: VecDeque<u8>,
    /// Exponentially weighted mean × 256.
    ewma_x256: u32,
    entries: u64,
}

impl TrustView {
    /// An empty view (no entry yet).
    pub fn new() -> TrustView {
        TrustView::default()
    }

    /// Adds the score of the next entry.
    pub fn push(&mut self, score: u8) {
        let s = u32::from(score.min(100)) * 256;
        if self.entries == 0 {
            self.ewma_x256 = s;
        } else if s >= self.ewma_x256 {
            self.ewma_x256 += (s - self.ewma_x256) >> 3;
        } else {
            self.ewma_x256 -= (self.ewma_x256 - s) >> 3;
        }
        if self.recent.len() == MAX_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(score.min(100));
        self.entries += 1;
    }

    /// The minimum over the last `n` scores, or `None` if fewer than `n` entries exist.
    pub fn window_min(&self, n: usize) -> Option<u8> {
        if n == 0 || n > self.recent.len() {
            return None;
        }
        self.recent.iter().rev().take(n).min().copied()
    }

    /// The exponentially weighted mean, 0..=100 (rounded down); `None` before any entry.
    pub fn ewma(&self) -> Option<u8> {
        (self.entries > 0).then(|| u8::try_from(self.ewma_x256 / 256).unwrap_or(100))
    }

    /// Number of entries seen.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// A compact encoding for persistence: entries (u64 BE), weighted mean × 256 (u32 BE),
    /// then the recent scores, oldest first.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.recent.len());
        out.extend_from_slice(&self.entries.to_be_bytes());
        out.extend_from_slice(&self.ewma_x256.to_be_bytes());
        out.extend(self.recent.iter());
        out
    }

    /// Reads [`TrustView::encode`]'s bytes; `None` if they are not a view it could have
    /// written.
    pub fn decode(bytes: &[u8]) -> Option<TrustView> {
        let entries = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let ewma_x256 = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
        let recent: VecDeque<u8> = bytes.get(12..)?.iter().copied().collect();
        let consistent = recent.len() <= MAX_WINDOW
            && recent.iter().all(|s| *s <= 100)
            && ewma_x256 <= 100 * 256
            && (recent.len() as u64 == entries.min(MAX_WINDOW as u64));
        consistent.then_some(TrustView {
            recent,
            ewma_x256,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_round_trips_and_decode_refuses_inconsistent_bytes() {
        let mut v = TrustView::new();
        assert_eq!(TrustView::decode(&v.encode()), Some(v.clone()));
        for i in 0..300u32 {
            v.push(((i * 37) % 101) as u8);
            assert_eq!(TrustView::decode(&v.encode()).as_ref(), Some(&v));
        }
        let bytes = v.encode();
        assert_eq!(TrustView::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(TrustView::decode(&bytes[..11]), None);
        let mut bad = bytes.clone();
        bad[12] = 101;
        assert_eq!(TrustView::decode(&bad), None);
    }
}

/// A field that may change only while the last `window` entries all scored at least
/// `min_score`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTrustRule {
    /// The field.
    pub field: String,
    /// How many recent entries.
    pub window: u32,
    /// The minimum score each must have.
    pub min_score: u8,
}

/// The trust section of a policy. (`no_fall_on_migration`, still accepted in TOML, is the
/// migration rules' `trust`: [`crate::MigrationRules::trust`].)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustPolicy {
    /// Below this weighted mean the object is read-only (no entry may write).
    pub read_only_below: Option<u8>,
    /// Per-field rules.
    pub rules: Vec<FieldTrustRule>,
}

impl TrustPolicy {
    /// Whether the policy has any rule that gates writes.
    pub fn gates_writes(&self) -> bool {
        self.read_only_below.is_some() || !self.rules.is_empty()
    }
}
