//! Counts and latency percentiles of a session (what the summary line and the metrics say).

use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::finding::secs;

/// Latency percentiles in ns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) count: u64,
    pub(crate) p50_ns: u64,
    pub(crate) p90_ns: u64,
    pub(crate) p99_ns: u64,
    pub(crate) max_ns: u64,
}

pub(super) fn percentiles(h: &Histogram<u64>) -> Percentiles {
    // An empty histogram's quantiles are 0: skip scanning its ~28k empty buckets (the fuzzed
    // replay spent half its time here).
    if h.is_empty() {
        return Percentiles::default();
    }
    let us = |q: f64| h.value_at_quantile(q) * 1000;
    Percentiles {
        count: h.len(),
        p50_ns: us(0.5),
        p90_ns: us(0.9),
        p99_ns: us(0.99),
        max_ns: h.max() * 1000,
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Counts and latencies so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// OOM kills: each victim, as the kernel's `oom_kill` counts them.
    pub(crate) kills: u64,
    /// `memory.oom.group` kills: OOM invocations that killed several victims (each victim is
    /// in `kills`), as the kernel's `oom_group_kill` counts them.
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) group_kills: u64,
    /// Processes found at start already killed and not finished exiting.
    pub(crate) pre_existing: u64,
    /// Processes the kernel killed because a victim exited (not OOM kills).
    pub(crate) collateral: u64,
    /// Tasks the OOM killer marked that were already exiting (not kills).
    pub(crate) marked_exiting: u64,
    pub(crate) dead: u64,
    pub(crate) stuck_now: u64,
    pub(crate) flagged_total: u64,
    pub(crate) unobservable: u64,
    pub(crate) released: u64,
    pub(crate) not_released_now: u64,
    pub(crate) lost_events: u64,
    pub(crate) livelocks: u64,
    pub(crate) livelock_observable: bool,
    /// SIGKILLs not sent by the OOM killer (a user process, another kernel path), each followed
    /// to its death; not in `kills`, which stays the kernel's `oom_kill` count.
    pub(crate) other_kills: u64,
    /// Of those, by a user process.
    pub(crate) user_kills: u64,
    /// Other kills not dead within the timeout (`kill_stuck`), now and in all.
    pub(crate) kill_stuck_now: u64,
    pub(crate) kill_flagged_total: u64,
    /// Killed processes the kernel's tracked set had no room for: their exit stages and
    /// release were not reported (death still was).
    pub(crate) untracked: u64,
    /// Followed processes dropped, not dead, to keep the tracker bounded (a kill storm): their
    /// death is no longer judged.
    pub(crate) dropped_live: u64,
    pub(crate) kill_to_dead: Percentiles,
    pub(crate) kill_to_released: Percentiles,
    pub(crate) kill_to_reaper_wake: Percentiles,
    pub(crate) reaping: Percentiles,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "kills {}, marked exiting {}, pre-existing {}, collateral {}, dead {}, stuck now {} \
             (flagged in all {}), unobservable {}, released {}, not released now {}, lost events \
             {}, livelocks {}",
            self.kills,
            self.marked_exiting,
            self.pre_existing,
            self.collateral,
            self.dead,
            self.stuck_now,
            self.flagged_total,
            self.unobservable,
            self.released,
            self.not_released_now,
            self.lost_events,
            self.livelocks
        )?;
        if self.group_kills > 0 {
            writeln!(
                f,
                "memory.oom.group kills {} (their victims are among the kills)",
                self.group_kills
            )?;
        }
        if self.other_kills > 0 || self.kill_flagged_total > 0 {
            writeln!(
                f,
                "other SIGKILLs (not the OOM killer's) {}, by user processes {}, stuck now {} \
                 (flagged in all {})",
                self.other_kills, self.user_kills, self.kill_stuck_now, self.kill_flagged_total
            )?;
        }
        if self.untracked > 0 || self.dropped_live > 0 {
            writeln!(
                f,
                "WARNING: kill storm: {} killed process(es) not tracked in the kernel (exit stages \
                 and release unseen; death still seen), {} followed process(es) dropped before \
                 their death (not judged)",
                self.untracked, self.dropped_live
            )?;
        }
        let p = &self.kill_to_dead;
        if p.count > 0 {
            writeln!(
                f,
                "kill→dead: p50 {} p90 {} p99 {} max {} (n={})",
                secs(p.p50_ns),
                secs(p.p90_ns),
                secs(p.p99_ns),
                secs(p.max_ns),
                p.count
            )?;
        }
        if !self.livelock_observable {
            writeln!(
                f,
                "livelock signature not observable here: mem_cgroup_out_of_memory is not hooked and \
                 the kernel's memcg notifications were not watched"
            )?;
        }
        Ok(())
    }
}

/// Longest latency a histogram tells apart (µs): one day. Longer ones count as one day.
pub(super) const HISTOGRAM_MAX_US: u64 = 86_400_000_000;

pub(super) fn histogram() -> Histogram<u64> {
    // µs, 3 significant digits. It grows to the largest value recorded instead of allocating
    // buckets up to a day at once (~900 KB for the four of a tracker, zeroed per replay).
    Histogram::new(3).expect("valid histogram precision")
}

/// Records a latency in ns: at least 1 µs, at most [`HISTOGRAM_MAX_US`], so that none is
/// dropped from the count.
pub(super) fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    let _ = h.record((ns / 1000).clamp(1, HISTOGRAM_MAX_US));
}
