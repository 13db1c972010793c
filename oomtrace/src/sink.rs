//! The consumers of what a session sees, behind one trait. A driver (the live loop of `watch`,
//! the replay of `report`) decodes an event, hands its records to the sinks (the dump), feeds it
//! to the session (which tracks it and says which findings it admits), then hands the event and
//! every finding it produced to each registered [`Sink`] in order: the printer of the chosen
//! format first (text or JSON lines, printer.rs), then the metrics, the `--on-stuck` hook,
//! `--unstick`'s remedies, the dump (`--record`). The live loop registers them in one place
//! (`live::register`); a unit test drives it with fake ones (`live/tests.rs`).
//!
//! Only a printer writes to the output: what another sink has to say (a remedy taken or a limit
//! put back) it returns as [`Said`], which the driver hands to every sink (the printer writes
//! it, the metrics count it).

use std::io;

use serde_json::Value;

use crate::{
    event::Event,
    host::forensics::Forensics,
    kernel::cgroups::Memcg,
    lifecycle::{Finding, Summary},
    record::dump::Header,
    render::{events::Renderer, metrics::Metrics},
    session::{Live, Session},
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

/// What a sink is given with an event.
pub(crate) struct EventCx<'a> {
    /// The path of the event's own memcg (`Event::memcg`), if known: the one the metrics label.
    pub(crate) memcg: Option<&'a str>,
    /// Whether the output shows it: every event was asked for and the filter admits it.
    pub(crate) shown: bool,
    /// The names (symbols, memcgs, gfp flags) and the clock a printer renders it with.
    pub(crate) renderer: &'a mut Renderer,
}

/// What a sink is given with a finding.
pub(crate) struct FindingCx<'a> {
    /// The finding's memcg as it is now (live, removed, unknown), checked as it is handed out.
    pub(crate) memcg: Memcg,
    /// The wall time the finding is stamped with.
    pub(crate) wall_ns: i128,
    /// The forensics the printer showed with a victim's finding (read again from /proc by a
    /// sink that finds none); the last sink that needs them takes them.
    pub(crate) shown: Option<Forensics>,
    /// /proc and the memcg root (`None` in a replay or a test).
    pub(crate) live: Option<&'a Live>,
    /// Filled by the sinks; written and counted by the driver after every sink had the finding.
    pub(crate) said: Vec<Said>,
}

impl<'a> FindingCx<'a> {
    /// What the sinks are given with `f`, found by `session` at `at_ns`.
    pub(crate) fn new(f: &Finding, at_ns: u64, session: &'a mut Session) -> FindingCx<'a> {
        let (memcg, wall_ns) = session.stamp(f, at_ns);
        FindingCx {
            memcg,
            wall_ns,
            shown: None,
            live: session.live(),
            said: Vec::new(),
        }
    }

    /// Reads what /proc says now of the victim of a `stuck`, `kill_stuck` or `not_released`
    /// finding while live into `shown` (once: the sinks after use it).
    pub(crate) fn show_forensics(&mut self, f: &Finding) {
        let Some(victim) = f.forensics_of() else {
            return;
        };
        if let (None, Some(live)) = (&self.shown, self.live) {
            self.shown = Some(live.forensics(victim.key.tgid, victim.key.start_ns));
        }
    }
}

/// What a session says besides events, findings and remedies: written by the printers only.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Note<'a> {
    /// Events lost to a full ring buffer: `new` since the last note, `total` in all.
    Lost { new: u64, total: u64 },
    /// A memcg's OOM kills as the kernel counted them against oomtrace's.
    Reconcile {
        memcg_path: &'a str,
        kernel: u64,
        mine: u64,
    },
    /// The closing counts.
    Summary(&'a Summary),
    /// The programs' run times (`--bpf-stats`): one JSON line in either format.
    Stats(&'a Value),
    /// What a replay says first: the dump's header (`raw` as recorded, for JSON), and whether
    /// death is judged the old way.
    Replay {
        raw: Option<&'a Value>,
        header: Option<&'a Header>,
        timeout_ns: u64,
        death_at_last_exit: bool,
    },
    /// Damage found while reading a dump (a `DumpProblem`, or records that do not decode).
    DumpProblem(&'a str),
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
    /// An event, after the session had it, before the findings it produced.
    fn event(&mut self, _ev: &Event, _cx: &mut EventCx<'_>) {}
    /// A killed process whose death is followed from now (its files are still open).
    fn followed(&mut self, _tgid: u32) {}
    /// A finding the session admitted.
    fn finding(&mut self, _f: &Finding, _cx: &mut FindingCx<'_>) {}
    /// A line about a remedy.
    fn said(&mut self, _s: &Said) {}
    /// Anything else the session says (lost events, the summary, …).
    fn note(&mut self, _n: &Note<'_>) {}
    /// The periodic sweep (every few seconds); what it has to say.
    fn sweep(&mut self) -> Vec<Said> {
        Vec::new()
    }
    /// Every wake of the loop (a printer flushes).
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
    /// A write to the output that failed (its reader went away), taken once: the run ends
    /// with it.
    fn failed(&mut self) -> Option<io::Error> {
        None
    }
}

/// The Prometheus metrics (`--metrics`).
impl Sink for Metrics {
    fn event(&mut self, ev: &Event, cx: &mut EventCx<'_>) {
        Metrics::event(self, ev, cx.memcg);
    }

    fn finding(&mut self, f: &Finding, cx: &mut FindingCx<'_>) {
        Metrics::finding(self, f, cx.memcg.path());
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
