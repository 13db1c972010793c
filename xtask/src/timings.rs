//! Where the time of a `cargo xtask test` goes: every step records its wall time and the lane
//! it ran in, and the run ends with one table. Steps in different lanes whose spans overlap
//! ran in parallel; the table says which lanes overlapped and for how long.

use std::{
    fmt::Write as _,
    sync::Mutex,
    time::{Duration, Instant},
};

/// One timed step.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Row {
    pub(crate) lane: String,
    pub(crate) step: String,
    /// Since the run began.
    pub(crate) start: Duration,
    pub(crate) took: Duration,
}

impl Row {
    fn end(&self) -> Duration {
        self.start + self.took
    }
}

/// The steps of one run, shared by the threads that run them.
pub(crate) struct Timings {
    origin: Instant,
    rows: Mutex<Vec<Row>>,
}

impl Timings {
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
            rows: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` as the step `step` of `lane` and records its wall time.
    pub(crate) fn time<T>(&self, lane: &str, step: &str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let r = f();
        self.record(lane, step, start, start.elapsed());
        r
    }

    /// Records a step that began at `start` and took `took`.
    pub(crate) fn record(&self, lane: &str, step: &str, start: Instant, took: Duration) {
        let row = Row {
            lane: lane.to_string(),
            step: step.to_string(),
            start: start.saturating_duration_since(self.origin),
            took,
        };
        self.rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(row);
    }

    pub(crate) fn rows(&self) -> Vec<Row> {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner()).clone();
        rows.sort_by(|a, b| a.start.cmp(&b.start).then(a.lane.cmp(&b.lane)));
        rows
    }

    /// The table: one line per step in order of start, then each lane's busy time, which lanes
    /// overlapped, and the total wall time so far.
    pub(crate) fn table(&self) -> String {
        render(&self.rows(), self.origin.elapsed())
    }
}

/// The union of the spans of `rows` (sorted by start), as disjoint (start, end) pairs.
fn spans(rows: &[&Row]) -> Vec<(Duration, Duration)> {
    let mut out: Vec<(Duration, Duration)> = Vec::new();
    for r in rows {
        match out.last_mut() {
            Some(last) if r.start <= last.1 => last.1 = last.1.max(r.end()),
            _ => out.push((r.start, r.end())),
        }
    }
    out
}

/// How long two sets of disjoint spans overlap.
fn overlap(a: &[(Duration, Duration)], b: &[(Duration, Duration)]) -> Duration {
    let mut total = Duration::ZERO;
    for &(s1, e1) in a {
        for &(s2, e2) in b {
            let (s, e) = (s1.max(s2), e1.min(e2));
            if e > s {
                total += e - s;
            }
        }
    }
    total
}

pub(crate) fn render(rows: &[Row], total: Duration) -> String {
    let mut s = String::from("\ntime table (wall seconds; `start` counts from the run's start)\n");
    let _ = writeln!(s, "{:>7} {:>7}  {:<14} step", "start", "secs", "lane");
    for r in rows {
        let _ = writeln!(
            s,
            "{:>7.0} {:>7.1}  {:<14} {}",
            r.start.as_secs_f64(),
            r.took.as_secs_f64(),
            r.lane,
            r.step
        );
    }
    let mut lanes: Vec<&str> = rows.iter().map(|r| r.lane.as_str()).collect();
    lanes.sort_unstable();
    lanes.dedup();
    // A lane's top-level steps: rows nested inside another row of the same lane (a guest's
    // boot inside the guest's run) would count twice.
    let lane_spans = |lane: &str| {
        let rows: Vec<&Row> = rows.iter().filter(|r| r.lane == lane).collect();
        spans(&rows)
    };
    for lane in &lanes {
        let busy: Duration = lane_spans(lane).iter().map(|(s, e)| *e - *s).sum();
        let _ = writeln!(s, "lane {lane:<14} busy {:>6.0} s", busy.as_secs_f64());
    }
    for (i, a) in lanes.iter().enumerate() {
        for b in &lanes[i + 1..] {
            let o = overlap(&lane_spans(a), &lane_spans(b));
            if !o.is_zero() {
                let _ = writeln!(s, "in parallel: {a} and {b} for {:.0} s", o.as_secs_f64());
            }
        }
    }
    let _ = writeln!(s, "total {:.0} s wall", total.as_secs_f64());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(lane: &str, step: &str, start: u64, took: u64) -> Row {
        Row {
            lane: lane.into(),
            step: step.into(),
            start: Duration::from_secs(start),
            took: Duration::from_secs(took),
        }
    }

    #[test]
    fn the_table_names_each_step_and_what_ran_in_parallel() {
        let rows = [
            row("host", "unit tests", 0, 100),
            row("guests 1", "6.1 run", 50, 300),
            row("guests 1", "6.1 boot", 50, 10),
            row("guests 2", "sid run", 100, 200),
            row("host", "soak", 200, 120),
        ];
        let t = render(&rows, Duration::from_secs(400));
        assert!(
            t.contains("      0   100.0  host           unit tests\n"),
            "{t}"
        );
        assert!(t.contains("lane guests 1       busy    300 s"), "{t}");
        assert!(t.contains("lane host           busy    220 s"), "{t}");
        // host [0,100)+[200,320) against guests 1 [50,350): 50 + 120.
        assert!(
            t.contains("in parallel: guests 1 and host for 170 s"),
            "{t}"
        );
        assert!(
            t.contains("in parallel: guests 1 and guests 2 for 200 s"),
            "{t}"
        );
        assert!(
            t.contains("in parallel: guests 2 and host for 100 s"),
            "{t}"
        );
        assert!(t.ends_with("total 400 s wall\n"), "{t}");
    }

    #[test]
    fn steps_are_timed_in_order_of_start() {
        let t = Timings::new();
        let v = t.time("host", "first", || 7);
        assert_eq!(v, 7);
        t.record("x", "earlier", t.origin, Duration::from_millis(1));
        let rows = t.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].step, "earlier");
        assert_eq!(rows[1].lane, "host");
    }
}
