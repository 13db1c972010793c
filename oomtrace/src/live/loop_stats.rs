//! `--loop-stats` (benchmarks): where the event loop's own CPU goes, per part of a wake-up.
//!
//! An OOM storm's CPU per kill (`cargo xtask bench`) is a sum of small costs, and `perf` in
//! this project's VM cannot see inside the context switch (no PMU: its samples land where
//! interrupts come back on). This counts the loop's thread CPU time (`CLOCK_THREAD_CPUTIME_ID`,
//! the scheduler's own account) around each part of every turn of the loop: the wait (the
//! runtime's futures, `epoll_wait` and the sleep it ends in, on both sides of the context
//! switch), and what each kind of wake-up then does. A wait that slept (the thread's voluntary
//! context switches went up) is counted apart from one that found something ready at once.
//! Off by default: then nothing is read, and a turn costs one branch more.

use serde_json::{Value, json};

/// The parts of a turn of the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    /// Deciding the next wake, flushing stdout unless a tick is near, arming the timer.
    Prepare,
    /// Waiting, when the thread slept.
    WaitSlept,
    /// Waiting, when something was ready at once.
    WaitReady,
    /// A memcg OOM notification (and the kernel events read before it).
    MemcgNotices,
    /// Kernel events from the ring buffer.
    KernelEvents,
    /// Victims' pidfds: deaths.
    Deaths,
    /// The loop's timer: timeouts, the release poll, the sweep.
    Tick,
    /// A scrape, a signal, the end of `--duration`.
    Other,
}

const PARTS: [(Part, &str); 8] = [
    (Part::Prepare, "prepare"),
    (Part::WaitSlept, "wait_slept"),
    (Part::WaitReady, "wait_ready"),
    (Part::MemcgNotices, "memcg_notices"),
    (Part::KernelEvents, "kernel_events"),
    (Part::Deaths, "deaths"),
    (Part::Tick, "tick"),
    (Part::Other, "other"),
];

/// Turns and thread CPU per part; `None` when off.
pub(super) struct LoopStats {
    parts: Option<[(u64, u64); PARTS.len()]>,
}

/// This thread's CPU time so far, in ns.
fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill; this clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// This thread's voluntary context switches so far (its sleeps).
fn thread_sleeps() -> u64 {
    // SAFETY: a zeroed rusage is a valid buffer to fill.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid buffer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    u.ru_nvcsw as u64
}

/// A point of a turn: the thread's CPU time and sleeps then (when on).
#[derive(Clone, Copy)]
pub(super) struct Mark(Option<(u64, u64)>);

impl LoopStats {
    pub(super) fn new(on: bool) -> LoopStats {
        LoopStats {
            parts: on.then_some([(0, 0); PARTS.len()]),
        }
    }

    /// Now, to measure a part from (nothing read when off).
    pub(super) fn mark(&self) -> Mark {
        Mark(self.parts.map(|_| (thread_cpu_ns(), thread_sleeps())))
    }

    /// The part from `since` to now was `part`; returns now. A wait is counted as slept or
    /// ready by whether the thread slept meanwhile.
    pub(super) fn add(&mut self, part: Part, since: Mark) -> Mark {
        let now = self.mark();
        if let (Some((cpu0, sleeps0)), Some((cpu1, sleeps1))) = (since.0, now.0) {
            self.count(part, cpu1.saturating_sub(cpu0), sleeps1 > sleeps0);
        }
        now
    }

    fn count(&mut self, part: Part, cpu_ns: u64, slept: bool) {
        let part = match part {
            Part::WaitSlept | Part::WaitReady if slept => Part::WaitSlept,
            Part::WaitSlept | Part::WaitReady => Part::WaitReady,
            p => p,
        };
        if let Some(parts) = &mut self.parts
            && let Some(i) = PARTS.iter().position(|(p, _)| *p == part)
        {
            parts[i].0 += 1;
            parts[i].1 += cpu_ns;
        }
    }

    /// `{"type": "loop_stats", "parts": {"wait_slept": {"turns": N, "cpu_ns": T}, …}}`, or
    /// None when off.
    pub(super) fn json(&self) -> Option<Value> {
        let parts = self.parts?;
        let mut m = serde_json::Map::new();
        for ((_, name), (turns, cpu_ns)) in PARTS.iter().zip(parts) {
            m.insert(
                (*name).to_string(),
                json!({"turns": turns, "cpu_ns": cpu_ns}),
            );
        }
        Some(json!({"type": "loop_stats", "parts": m}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_reads_nothing_and_says_nothing() {
        let mut s = LoopStats::new(false);
        let m = s.mark();
        assert!(m.0.is_none());
        let m = s.add(Part::Tick, m);
        assert!(m.0.is_none());
        assert_eq!(s.json(), None);
    }

    #[test]
    fn parts_are_counted_with_their_cpu_and_waits_split_by_sleeping() {
        let mut s = LoopStats::new(true);
        s.count(Part::Tick, 5, false);
        s.count(Part::Tick, 7, false);
        s.count(Part::WaitReady, 3, true);
        s.count(Part::WaitSlept, 2, false);
        let j = s.json().expect("on");
        assert_eq!(j["type"], "loop_stats");
        assert_eq!(j["parts"]["tick"], json!({"turns": 2, "cpu_ns": 12}));
        assert_eq!(j["parts"]["wait_slept"], json!({"turns": 1, "cpu_ns": 3}));
        assert_eq!(j["parts"]["wait_ready"], json!({"turns": 1, "cpu_ns": 2}));
        assert_eq!(j["parts"]["deaths"], json!({"turns": 0, "cpu_ns": 0}));
        assert_eq!(j["parts"].as_object().unwrap().len(), PARTS.len());
    }

    /// The thread's own clock moves with work done on it, and a sleep is seen as one.
    #[test]
    fn a_real_sleep_is_counted_as_slept() {
        let mut s = LoopStats::new(true);
        let m = s.mark();
        std::thread::sleep(std::time::Duration::from_millis(2));
        s.add(Part::WaitReady, m);
        let m = s.mark();
        let mut x = 0u64;
        for i in 0..200_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        s.add(Part::WaitReady, m);
        let j = s.json().unwrap();
        assert_eq!(j["parts"]["wait_slept"]["turns"], 1, "{j}");
        assert_eq!(j["parts"]["wait_ready"]["turns"], 1, "{j}");
        assert!(
            j["parts"]["wait_ready"]["cpu_ns"].as_u64().unwrap() > 0,
            "{j}"
        );
    }
}
