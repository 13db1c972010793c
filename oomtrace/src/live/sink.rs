//! The consumers of the live loop's events and findings, behind one trait. The loop decodes an
//! event, hands its records to the sinks (the dump), hands it to the session (which tracks it
//! and writes the text or JSON lines), then hands the event and every finding it produced to
//! each registered [`Sink`] in order: the metrics, the `--on-stuck` hook, `--unstick`'s
//! remedies, the dump (`--record`). They are registered in one place (`live::register`); a
//! unit test drives the loop with fake ones (`live/tests.rs`).
//!
//! A sink never writes to the output itself: what it has to say (a remedy taken or a limit put
//! back) it returns as [`Said`], which the loop writes in the session's format and hands to
//! every sink (the metrics count remedies).

use crate::{
    event::Event,
    host::forensics::Forensics,
    lifecycle::{Finding, Summary},
    render::metrics::Metrics,
    session::Live,
};

/// A record of what the loop read, in the order a dump holds it (`--record`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Record<'a> {
    /// A memcg's path, before the first event that names it.
    Memcg(u64, &'a str),
    /// A kernel address's name, before the allocation stack that holds it.
    Symbol(u64, &'a str),
    /// An event's bytes as read (tgids filled in, kernel pointers hashed).
    Event(&'a [u8]),
    /// The kernel's count of events lost, when it has grown.
    Lost(u64),
    /// A tick at this CLOCK_MONOTONIC ns, after a full read of the ring buffer: a replay
    /// judges time there, as the loop does (dump format 3).
    Drained(u64),
}

/// A line about a remedy of `--unstick`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Said {
    /// The victim (0: not about one victim).
    pub(crate) tgid: u32,
    /// `applied`, `refused`, `failed` or `restored`.
    pub(crate) result: &'static str,
    pub(crate) text: String,
    /// What the victim waited on (`fuse`, `ptrace`, …) for a remedy taken or refused, which the
    /// metrics count; `None` for a limit put back.
    pub(crate) wait_kind: Option<String>,
}

/// What a sink is given with a finding.
pub(crate) struct FindingCx<'a> {
    /// The path of the finding's memcg, if it names one that is known.
    pub(crate) memcg: Option<String>,
    /// The forensics the session wrote with a flagged victim's finding (read again from /proc
    /// by a sink that finds none); the last sink that needs them takes them.
    pub(crate) shown: Option<Forensics>,
    /// /proc and the memcg root (`None` in a replay or a test).
    pub(crate) live: Option<&'a Live>,
    /// Filled by the sinks; written and counted by the loop after every sink had the finding.
    pub(crate) said: Vec<Said>,
}

/// The resource gauges of a metrics scrape.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Held {
    /// Processes the kernel side tracks (`None` when the map could not be read).
    pub(crate) kernel_tracked: Option<u64>,
    pub(crate) victims: u64,
    pub(crate) memcgs: u64,
}

/// A consumer of what the live loop sees. Every method has a default that does nothing: a sink
/// implements what it consumes.
pub(crate) trait Sink {
    /// A record, before the session has the event it belongs to.
    fn record(&mut self, _r: &Record<'_>) {}
    /// An event, after the session had it; `memcg` is the path of its own memcg if known.
    fn event(&mut self, _ev: &Event, _memcg: Option<&str>) {}
    /// A killed process whose death is followed from now (its files are still open).
    fn followed(&mut self, _tgid: u32) {}
    /// A finding, after the session wrote it.
    fn finding(&mut self, _f: &Finding, _cx: &mut FindingCx<'_>) {}
    /// A line about a remedy, as the loop writes it.
    fn said(&mut self, _s: &Said) {}
    /// The periodic sweep (every few seconds); what it has to say.
    fn sweep(&mut self) -> Vec<Said> {
        Vec::new()
    }
    /// Every wake of the loop.
    fn tick(&mut self) {}
    /// Every wake of the loop, before the session judges: a sink that writes to disk flushes,
    /// and writes `summary()` (the tracker's so far) when it syncs.
    fn sync(&mut self, _summary: &dyn Fn() -> serde_json::Value) {}
    /// When the loop must wake for this sink at the latest (with nothing else pending).
    fn wake_at(&self, _now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        None
    }
    /// Whether the loop must keep waking up (children to reap).
    fn busy(&self) -> bool {
        false
    }
    /// The metrics page, for a sink that serves one.
    fn page(&mut self, _held: Held, _summary: &Summary) -> Option<String> {
        None
    }
    /// The end of the watch: what is left written (`summary`, at `end_ns`). An error fails
    /// the run.
    fn close(&mut self, _summary: &Summary, _end_ns: u64) -> anyhow::Result<()> {
        Ok(())
    }
    /// Why the sink stopped (a full disk under the dump): the watch ends.
    fn stopped(&self) -> Option<&str> {
        None
    }
}

/// The Prometheus metrics (`--metrics`).
impl Sink for Metrics {
    fn event(&mut self, ev: &Event, memcg: Option<&str>) {
        Metrics::event(self, ev, memcg);
    }

    fn finding(&mut self, f: &Finding, cx: &mut FindingCx<'_>) {
        Metrics::finding(self, f, cx.memcg.as_deref());
    }

    fn said(&mut self, s: &Said) {
        if let Some(kind) = &s.wait_kind {
            self.unstick(kind, s.result);
        }
    }

    fn page(&mut self, held: Held, summary: &Summary) -> Option<String> {
        self.set_held(held.kernel_tracked, held.victims, held.memcgs);
        Some(self.render(summary))
    }
}
