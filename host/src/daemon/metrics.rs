//! Host counters and the tick-lateness histogram, exposed as Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Lateness histogram resolution: 250 µs buckets up to 100 ms, then one overflow bucket.
const BUCKET_US: u64 = 250;
const BUCKETS: usize = 400;

/// Counters the daemon keeps (all monotonic except `objects`).
#[derive(Debug)]
pub struct Metrics {
    /// Resident objects.
    pub objects: AtomicU64,
    /// Tick entries run.
    pub ticks: AtomicU64,
    /// Transitions of any kind run.
    pub transitions: AtomicU64,
    /// Rejected transitions.
    pub rejections: AtomicU64,
    /// Faulted transitions.
    pub faults: AtomicU64,
    /// Messages accepted (durable).
    pub messages: AtomicU64,
    /// Lineage entries appended.
    pub lineage_appends: AtomicU64,
    /// Store commits.
    pub commits: AtomicU64,
    /// Transitions made durable.
    pub durable_transitions: AtomicU64,
    /// Store commits that failed.
    pub commit_failures: AtomicU64,
    /// Object modules compiled (deploys, loads and arrivals of a module already compiled
    /// reuse it).
    pub modules_compiled: AtomicU64,
    /// Migration packages taken as they arrived (written to the store meanwhile).
    pub packages_spooled: AtomicU64,
    /// Bytes of those packages written to the store with direct I/O.
    pub package_bytes_direct: AtomicU64,
    /// Arrived objects whose memory pages were moved out of the package's pages instead of
    /// copied (`ResidentObject::restore_moving`).
    pub arrivals_moved: AtomicU64,
    /// Bytes of arriving packages received into pages faulted in ahead of time
    /// (`[migration] warm_arrival_mib`).
    pub package_bytes_warm: AtomicU64,
    /// Migration packages whose every segment was authenticated and decrypted as it arrived
    /// (sent with each tag after its segment), not after.
    pub packages_opened_arriving: AtomicU64,
    lateness: Vec<AtomicU64>,
    lateness_sum_us: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            objects: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            lineage_appends: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            durable_transitions: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            modules_compiled: AtomicU64::new(0),
            packages_spooled: AtomicU64::new(0),
            package_bytes_direct: AtomicU64::new(0),
            arrivals_moved: AtomicU64::new(0),
            package_bytes_warm: AtomicU64::new(0),
            packages_opened_arriving: AtomicU64::new(0),
            lateness: (0..=BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            lateness_sum_us: AtomicU64::new(0),
        }
    }
}

/// Percentiles read off the lateness histogram (upper bucket bounds, so never optimistic;
/// infinite when beyond the histogram's 100 ms range).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatenessSummary {
    /// Wakes observed.
    pub count: u64,
    /// Median lateness (ms).
    pub p50_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
    /// 99.9th percentile (ms).
    pub p999_ms: f64,
    /// Mean (ms).
    pub mean_ms: f64,
}

impl Metrics {
    /// Records how late a wake started (µs after its scheduled time).
    pub fn observe_lateness(&self, late_us: u64) {
        let i = usize::try_from(late_us / BUCKET_US)
            .unwrap_or(BUCKETS)
            .min(BUCKETS);
        if let Some(b) = self.lateness.get(i) {
            b.fetch_add(1, Relaxed);
        }
        self.lateness_sum_us.fetch_add(late_us, Relaxed);
    }

    /// Clears the lateness histogram (benchmarks measure a window).
    pub fn reset_lateness(&self) {
        for b in &self.lateness {
            b.store(0, Relaxed);
        }
        self.lateness_sum_us.store(0, Relaxed);
    }

    /// p50/p99/p99.9 of the lateness seen so far.
    pub fn lateness(&self) -> LatenessSummary {
        let counts: Vec<u64> = self.lateness.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let pct = |p: f64| -> f64 {
            if total == 0 {
                return 0.0;
            }
            let want = ((total as f64) * p).ceil().max(1.0) as u64;
            let mut acc = 0;
            for (i, c) in counts.iter().enumerate() {
                acc += c;
                if acc >= want {
                    if i >= BUCKETS {
                        // The overflow bucket: later than the histogram's range.
                        return f64::INFINITY;
                    }
                    return ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0;
                }
            }
            f64::INFINITY
        };
        LatenessSummary {
            count: total,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            p999_ms: pct(0.999),
            mean_ms: if total == 0 {
                0.0
            } else {
                self.lateness_sum_us.load(Relaxed) as f64 / total as f64 / 1000.0
            },
        }
    }

    /// Prometheus text exposition (format 0.0.4).
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let _ = writeln!(
            out,
            "# HELP sojourn_objects Resident objects.\n# TYPE sojourn_objects gauge\nsojourn_objects {}",
            self.objects.load(Relaxed)
        );
        counter(
            &mut out,
            "sojourn_ticks_total",
            "Tick entries run.",
            self.ticks.load(Relaxed),
        );
        counter(
            &mut out,
            "sojourn_transitions_total",
            "Transitions run (init, tick, message).",
            self.transitions.load(Relaxed),
        );
        counter(
            &mut out,
            "sojourn_rejections_total",
            "Transitions rejected by schema or policy.",
            self.rejections.load(Relaxed),
        );
        counter(
            &mut out,
            "sojourn_faults_total",
            "Transitions that faulted (the object was suspended).",
            self.faults.load(Relaxed),
        );
        counter(
            &mut out,
            "sojourn_messages_total",
            "Messages accepted durably.",
            self.messages.load(Relaxed),
        );
        counter(
            &mut out,
            "sojourn_lineage_appends_total",
            "Lineage entries appended.",
            self.lineage_appends.load(Relaxed),
        );
        counter(
            &mut out,
            "sojourn_store_commits_total",
            "Durable store commits (group commits).",
            self.commits.load(Relaxed),
        );
        counter(
            &mut out,
            "sojourn_durable_transitions_total",
            "Transitions made durable.",
            self.durable_transitions.load(Relaxed),
        );
        counter(
            &mut out,
            "sojourn_store_commit_failures_total",
            "Store commits that failed (the host stops scheduling after one).",
            self.commit_failures.load(Relaxed),
        );
        counter(
            &mut out,
            "sojourn_modules_compiled_total",
            "Object modules compiled (a module already compiled is reused).",
            self.modules_compiled.load(Relaxed),
        );
        counter(
            &mut out,
            "sojourn_migration_packages_spooled_total",
            "Migration packages written to the store while they arrived.",
            self.packages_spooled.load(Relaxed),
        );
        counter(
            &mut out,
            "sojourn_migration_package_direct_bytes_total",
            "Bytes of arriving packages written to the store with direct I/O.",
            self.package_bytes_direct.load(Relaxed),
        );
        counter(
            &mut out,
            "sojourn_migration_arrivals_moved_total",
            "Arrived objects whose memory pages were moved out of the package, not copied.",
            self.arrivals_moved.load(Relaxed),
        );
        counter(
            &mut out,
            "sojourn_migration_package_warm_bytes_total",
            "Bytes of arriving packages received into pages faulted in ahead of time.",
            self.package_bytes_warm.load(Relaxed),
        );
        counter(
            &mut out,
            "sojourn_migration_packages_opened_arriving_total",
            "Migration packages whose segments were decrypted as they arrived.",
            self.packages_opened_arriving.load(Relaxed),
        );
        let name = "sojourn_tick_lateness_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} How late wakes start after their scheduled time.\n# TYPE {name} histogram"
        );
        let counts: Vec<u64> = self.lateness.iter().map(|b| b.load(Relaxed)).collect();
        let mut acc = 0u64;
        let bounds_ms = [1u64, 2, 5, 10, 20, 50, 100];
        let mut next = 0usize;
        for (i, c) in counts.iter().enumerate().take(BUCKETS) {
            acc += c;
            let upper_us = (i as u64 + 1) * BUCKET_US;
            if let Some(b) = bounds_ms.get(next) {
                if upper_us == b * 1000 {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {acc}", *b as f64 / 1000.0);
                    next += 1;
                }
            }
        }
        let total: u64 = counts.iter().sum();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {total}",
            self.lateness_sum_us.load(Relaxed) as f64 / 1e6
        );
        for (name, help, v) in extra {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_exposition() {
        let m = Metrics::default();
        for _ in 0..98 {
            m.observe_lateness(100); // 0.1 ms
        }
        m.observe_lateness(7_000);
        m.observe_lateness(500_000); // overflow
        let s = m.lateness();
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ms, 0.25);
        assert_eq!(s.p99_ms, 7.25);
        assert!(s.p999_ms.is_infinite());
        let text = m.render(&[]);
        assert!(text.contains("sojourn_tick_lateness_seconds_bucket{le=\"0.001\"} 98"));
        assert!(text.contains("sojourn_tick_lateness_seconds_bucket{le=\"0.01\"} 99"));
        assert!(text.contains("sojourn_tick_lateness_seconds_bucket{le=\"+Inf\"} 100"));
    }
}
