//! `oomtrace report`: replays a dump through the same tracker as `watch`, and optionally draws
//! it as a Perfetto / Chrome trace-event timeline.
//!
//! Time in a replay advances with the recorded events; between them the tracker is ticked
//! exactly when a timeout could fire ([`Tracker::next_tick_due`]), so `--timeout` re-judges a
//! recording with another threshold and gets the same answer a live run with that threshold
//! would have given.

use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use crate::{
    clock::Clock,
    event::{Event, Payload},
    kernel::cgroups::MemcgPaths,
    lifecycle::{Finding, Observability, Summary, Tracker, TrackerConfig, Victim, VictimKey},
    printer::{Format, replay_printer},
    record::dump::{DumpProblem, Header, Next, Reader, Record},
    render::events::Renderer,
    session::Session,
    sink::{EventCx, FindingCx, Note, Sink},
};

#[cfg(test)]
mod golden;
mod perfetto;
pub use perfetto::{perfetto, write_perfetto};

/// How to replay.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// Re-judge with this timeout instead of the recorded one.
    pub timeout_ns: Option<u64>,
    pub release_timeout_ns: Option<u64>,
    pub format: Format,
    /// Print every event too, not only findings.
    pub events: bool,
    /// Keep what `--perfetto` draws (every finding with its victim, every invocation and
    /// thread exit) in the [`Replay`]: memory then grows with the dump, so only when asked.
    pub timeline: bool,
}

/// What a replay found, for callers that go on (Perfetto, tests). `findings`, `victims`,
/// `invocations` and `exits` are filled only with [`ReplayOptions::timeline`].
pub struct Replay {
    pub(crate) summary: Summary,
    pub(crate) findings: Vec<Finding>,
    pub problems: Vec<DumpProblem>,
    pub header: Option<Header>,
    /// Every victim's last known state.
    pub(crate) victims: BTreeMap<VictimKey, Victim>,
    /// (memcg id, ts) of every OOM invocation.
    pub(crate) invocations: Vec<(u64, u64)>,
    /// (tgid, tid, ts) of every thread exit seen.
    pub(crate) exits: Vec<(u32, u32, u64)>,
    pub(crate) undecodable: u64,
    pub(crate) memcg_paths: BTreeMap<u64, String>,
}

/// What the recording's plan could deliver; everything for a dump without a plan.
fn observability_from(header: &Header) -> Observability {
    if !header.has_plan() {
        return Observability::ALL;
    }
    Observability::from_plan(
        |hook| header.attached(hook.name()).unwrap_or(false),
        header.death.as_ref().is_some_and(|d| d.pidfd),
    )
}

/// How the tracker judges a dump: the recorded timeouts unless overridden, what the
/// recording's plan could see, and the old death rule for format-1 dumps.
fn tracker_config(header: Option<&Header>, opts: &ReplayOptions) -> TrackerConfig {
    let h = header.cloned().unwrap_or_default();
    let defaults = TrackerConfig::default();
    TrackerConfig {
        timeout_ns: opts
            .timeout_ns
            .or(h.options.timeout_ns)
            .unwrap_or(defaults.timeout_ns),
        release_timeout_ns: opts
            .release_timeout_ns
            .or(h.options.release_timeout_ns)
            .unwrap_or(defaults.release_timeout_ns),
        observability: observability_from(&h),
        kernel: crate::lifecycle::kernel_version(&h.kernel),
        // Dumps recorded before death meant "finished exiting" (format 1) carry no
        // `GroupExited` records nor a `death` key: they can only be judged the old way, by the
        // last thread entering exit, which calls a victim stuck inside `do_exit` dead.
        death_at_last_exit: header.is_some() && h.death.is_none(),
        ..defaults
    }
}

/// Applies a dump's records to a session, one at a time, handing what it admits to the printer
/// and keeping what Perfetto and the tests need beside the findings.
struct Replayer<'a> {
    session: Session,
    printer: Box<dyn Sink + 'a>,
    /// The findings of the record at hand (kept for its allocation).
    found: Vec<Finding>,
    /// Keep what `--perfetto` draws ([`ReplayOptions::timeline`]).
    timeline: bool,
    replay: Replay,
    last_ts: u64,
    end: Option<u64>,
    /// The dump marks each full read of the ring (format 3, [`Record::Drained`]): time is
    /// judged at those marks only, as `watch` judged it.
    at_drains: bool,
    /// Events are shown ([`ReplayOptions::events`]): only then are they handed to the printer
    /// (which writes nothing of an event not shown: a call per event for nothing).
    events: bool,
}

impl<'a> Replayer<'a> {
    fn new<W: Write + 'a>(
        header: Option<Header>,
        cfg: TrackerConfig,
        opts: &ReplayOptions,
        out: W,
    ) -> Self {
        let h = header.clone().unwrap_or_default();
        // The recording kernel's gfp names; a dump from before they were recorded is decoded
        // with the built-in table (its source says so).
        let gfp = h
            .gfp_names
            .clone()
            .unwrap_or_else(crate::kernel::gfp::GfpNames::builtin);
        let renderer = Renderer {
            symbols: Default::default(),
            gfp: gfp.clone(),
            clock: Clock {
                realtime_offset_ns: i128::from(h.clock.realtime_offset_ns),
            },
            memcgs: MemcgPaths::new(None),
            page_kb: h.page_kb.unwrap_or(4),
        };
        let mut session = Session::new(renderer, Tracker::new(cfg), None);
        session.tracker_mut().set_gfp_names(gfp);
        session.tracker_mut().replaying();
        session.show_events(opts.events);
        Replayer {
            session,
            printer: replay_printer(opts.format, out),
            found: Vec::new(),
            timeline: opts.timeline,
            replay: Replay {
                summary: Summary::default(),
                findings: Vec::new(),
                problems: Vec::new(),
                header,
                victims: BTreeMap::new(),
                invocations: Vec::new(),
                exits: Vec::new(),
                undecodable: 0,
                memcg_paths: BTreeMap::new(),
            },
            last_ts: 0,
            end: None,
            at_drains: false,
            events: opts.events,
        }
    }

    /// [`ReplayOptions::timeline`]: findings are kept exactly then.
    fn timeline(&self) -> bool {
        self.timeline
    }

    /// Time up to `ts` passes for the tracker: every tick due before it.
    /// A tick that leaves the next one due no later (a rule of `next_tick_due` out of step
    /// with `tick`'s) ends the walk with one tick at `ts`: a replay never spins on one time.
    /// Debug builds (the unit tests, the fuzz targets) stop there instead, to show the rule.
    fn advance_to(&mut self, ts: u64) -> io::Result<()> {
        let mut last = None;
        while let Some(t) = self.session.tracker().next_tick_due().filter(|&t| t <= ts) {
            if last.is_some_and(|l| t <= l) {
                debug_assert!(false, "the tracker is due again at {t} after a tick there");
                return self.tick_at(ts);
            }
            self.tick_at(t)?;
            last = Some(t);
        }
        Ok(())
    }

    /// One tick at `t`: its findings to the printer.
    fn tick_at(&mut self, t: u64) -> io::Result<()> {
        let mut found = std::mem::take(&mut self.found);
        self.session.tick(t, &mut found);
        self.hand_findings(&mut found, t);
        self.found = found;
        self.printer.tick();
        self.written()
    }

    /// An event record's bytes: decoded, time advanced to it, tracked, handed to the printer.
    fn event(&mut self, raw: &[u8]) -> io::Result<()> {
        // Borrowed where it was decoded (moving the event out of the `Result` copied its
        // ~330 bytes: 2 % of a replay's instructions).
        let decoded = Event::decode(raw);
        let Ok(ev) = &decoded else {
            self.replay.undecodable += 1;
            return Ok(());
        };
        let ts = ev.header.ts_ns;
        // Without drain marks, time passes with each record. A record userspace made while
        // reading a kill (a death found through pidfd_open, stamped when found) precedes
        // kernel records from before it that were still in the ring, so the old way can
        // judge too early (see `Tracker::replaying`).
        if !self.at_drains {
            self.advance_to(ts)?;
        }
        if self.timeline() {
            match ev.invocations() {
                Some(i) if i.hooked => self.replay.invocations.push((i.memcg_id, ts)),
                Some(_) | None => {}
            }
            if let Payload::TaskExit(_) = ev.payload {
                self.replay.exits.push((ev.header.tgid, ev.header.pid, ts));
            }
        }
        // Recorded only when in the memory controller's hierarchy.
        self.session.memcgs().cgroup_record(&ev.payload);
        self.last_ts = self.last_ts.max(ts);
        let mut found = std::mem::take(&mut self.found);
        let shown = self.session.event(ev, &mut found);
        if self.events {
            let mut cx = EventCx {
                memcg: None,
                shown,
                renderer: self.session.renderer(),
            };
            self.printer.event(ev, &mut cx);
        }
        self.hand_findings(&mut found, ts);
        self.found = found;
        self.written()
    }

    /// Hands the findings the session admitted (found at `at_ns`) to the printer, keeping them
    /// for the timeline.
    fn hand_findings(&mut self, found: &mut Vec<Finding>, at_ns: u64) {
        for f in found.drain(..) {
            let mut cx = FindingCx::new(&f, at_ns, &mut self.session);
            self.printer.finding(&f, &mut cx);
            if self.timeline {
                self.replay.findings.push(f);
            }
        }
    }

    /// The first write that failed since the last check.
    fn written(&mut self) -> io::Result<()> {
        self.printer.failed().map_or(Ok(()), Err)
    }

    fn apply(&mut self, rec: Record) -> io::Result<()> {
        match rec {
            Record::Event(raw) => self.event(&raw)?,
            Record::Lost(total) => {
                if let Some(new) = self.session.lost(total) {
                    self.printer.note(&Note::Lost { new, total });
                }
            }
            Record::Symbol(addr, name) => self.session.name_symbol(addr, &name),
            Record::Memcg(id, path) => {
                self.session.name_memcg(id, &path);
                self.replay.memcg_paths.insert(id, path);
            }
            Record::End(t) => self.end = Some(t),
            Record::Summary(_) => {}
            // Everything the ring held before this tick was read before it: time passes to
            // it, as at the live tick that wrote it.
            Record::Drained(t) => {
                if !self.at_drains {
                    self.at_drains = true;
                    self.session.tracker_mut().replaying_at_drains();
                }
                self.advance_to(t)?;
            }
        }
        self.written()
    }

    /// The end of the dump (its end record, or the last event): what is left is judged, the
    /// damage found is said, the summary printed.
    fn finish(mut self, problems: Vec<DumpProblem>) -> io::Result<Replay> {
        let end = self.end.unwrap_or(self.last_ts).max(self.last_ts);
        self.advance_to(end)?;
        let mut said: Vec<String> = problems.iter().map(ToString::to_string).collect();
        if self.replay.undecodable > 0 {
            said.push(format!(
                "{} event records could not be decoded",
                self.replay.undecodable
            ));
        }
        for p in &said {
            self.printer.note(&Note::DumpProblem(p));
        }
        let mut found = std::mem::take(&mut self.found);
        let summary = self.session.finish(end, &mut found);
        self.hand_findings(&mut found, end);
        self.printer.note(&Note::Summary(&summary));
        // Flushed (a replay's printer flushes only here).
        self.printer
            .close(&summary, end)
            .map_err(io::Error::other)?;
        self.written()?;
        let mut r = self.replay;
        r.problems = problems;
        r.summary = summary;
        for f in &r.findings {
            if let Some(v) = f.victim() {
                r.victims.insert(v.key, v.clone());
            }
        }
        if self.timeline {
            for v in self.session.tracker().unresolved() {
                r.victims.insert(v.key, v.clone());
            }
        }
        Ok(r)
    }
}

/// Replays a dump, writing findings (and events if asked) to `out`.
pub fn replay<W: Write>(
    reader: &mut Reader,
    opts: &ReplayOptions,
    out: W,
) -> anyhow::Result<Replay> {
    // The reader recognizes the header strictly and never takes another record for it.
    let raw_header = reader.header().cloned();
    let header = raw_header.as_ref().map(Header::from_value);
    let cfg = tracker_config(header.as_ref(), opts);
    let mut replayer = Replayer::new(header.clone(), cfg, opts, out);
    replayer.printer.note(&Note::Replay {
        raw: raw_header.as_ref(),
        header: header.as_ref(),
        timeout_ns: cfg.timeout_ns,
        death_at_last_exit: cfg.death_at_last_exit,
    });
    replayer.written()?;
    while let Some(next) = reader.next_borrowed() {
        match next {
            Next::Event(raw) => replayer.event(raw)?,
            Next::Record(rec) => replayer.apply(rec)?,
        }
    }
    Ok(replayer.finish(reader.problems.clone())?)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use oomtrace_common::{Header, KernelSigkill, MarkVictim, Reaper, TaskExit, victim_fields};
    use serde_json::json;

    use super::*;
    use crate::{
        event::{comm_bytes, sample_sigkill},
        kernel::cgroups::MemcgPaths,
        record::dump::Writer,
        scratch::ScratchDir,
    };

    const MS: u64 = 1_000_000;

    fn ev(ts_ms: u64, tid: u32, tgid: u32, payload: Payload) -> Vec<u8> {
        Event {
            header: Header {
                kind: 0,
                cpu: 0,
                ts_ns: 1_000_000 * MS + ts_ms * MS,
                pid: tid,
                tgid,
                comm: comm_bytes("x"),
            },
            payload,
        }
        .encode()
    }

    /// A stuck victim (pid 42: one thread exits at once, the last after 7 s) and a normal one
    /// (pid 50), written as a dump.
    pub(super) fn stuck_dump(path: &Path) {
        stuck_dump_as(path, false);
    }

    fn stuck_dump_as(path: &Path, compress: bool) {
        let mut m: MarkVictim = unsafe { std::mem::zeroed() };
        m.fields = victim_fields::TASK | victim_fields::COMM;
        m.memcg_id = 77;
        let mark = |tgid: u32| {
            let mut m = m;
            m.pid = tgid;
            m.tgid = tgid;
            m.start_ns = 5;
            m.comm = comm_bytes("hog");
            Payload::MarkVictim(m)
        };
        let kill = |tgid: u32| Payload::KernelSigkill(sample_sigkill(tgid, "hog", 5));
        let exit = |dead: bool| {
            Payload::TaskExit(TaskExit {
                group_dead: u32::from(dead),
                group_dead_source: 1,
                start_ns: 5,
            })
        };
        let header = json!({"version": "t", "hostname": "h", "kernel": "k",
                            "options": {"timeout_ns": 5_000_000_000u64},
                            "clock": {"realtime_offset_ns": 0}});
        let mut w = Writer::create(path, compress, &header).unwrap();
        w.memcg(77, "/sandbox").unwrap();
        for raw in [
            ev(0, 9, 9, kill(42)),
            ev(0, 9, 9, mark(42)),
            ev(4, 42, 42, exit(false)),
            ev(2020, 1, 1, Payload::WakeReaper(Reaper { pid: 42, _pad: 0 })),
            ev(3000, 9, 9, kill(50)),
            ev(3000, 9, 9, mark(50)),
            ev(3001, 50, 50, exit(true)),
            ev(7000, 43, 42, exit(true)),
        ] {
            w.event(&raw).unwrap();
        }
        w.finish(1_000_000 * MS + 9000 * MS).unwrap();
    }

    fn run(path: &Path, opts: &ReplayOptions) -> (Replay, String) {
        let mut out = Vec::new();
        let mut reader = Reader::open(path).unwrap();
        let opts = ReplayOptions {
            timeline: true,
            ..opts.clone()
        };
        let r = replay(&mut reader, &opts, &mut out).unwrap();
        (r, String::from_utf8(out).unwrap())
    }

    /// A dump decodes gfp masks with the recording kernel's table (its header), not this
    /// host's; a dump from before tables were recorded uses the built-in one and says so.
    #[test]
    fn gfp_masks_are_decoded_with_the_recording_kernels_table() {
        let scratch = ScratchDir::new("gfp-table");
        let invoke = Payload::OomInvoke(oomtrace_common::OomInvoke {
            memcg_id: 77,
            gfp_mask: 0xcc0 | 0x200,
            order: 0,
        });
        let table = json!({"source": "tracefs kmem:mm_page_alloc",
                           "flags": [[0xcc0u32, "GFP_KERNEL"], [0x200u32, "__GFP_ATOMIC"]]});
        for (name, gfp_names, want) in [
            ("recorded", Some(table), "GFP_KERNEL|__GFP_ATOMIC"),
            ("older", None, "GFP_KERNEL|0x200"),
        ] {
            let path = scratch.join(name);
            let mut header = json!({"version": "t", "hostname": "h", "kernel": "k",
                                    "clock": {"realtime_offset_ns": 0}});
            if let Some(t) = gfp_names {
                header["gfp_names"] = t;
            }
            let mut w = Writer::create(&path, false, &header).unwrap();
            w.event(&ev(0, 9, 9, invoke)).unwrap();
            w.finish(1_000_000 * MS + 10 * MS).unwrap();
            let opts = ReplayOptions {
                format: Format::Json,
                events: true,
                ..Default::default()
            };
            let (_, out) = run(&path, &opts);
            let line = out
                .lines()
                .find(|l| l.contains("\"oom_invoke\""))
                .unwrap_or_else(|| panic!("{out}"));
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["gfp"], want, "{name}: {line}");
        }
    }

    /// An event of the storm dumps at `ns` past the clock's base.
    fn storm_at(ns: u64, cpu: u32, tgid: u32, payload: Payload) -> Event {
        Event {
            header: Header {
                kind: 0,
                cpu,
                ts_ns: 1_000_000 * MS + ns,
                pid: tgid,
                tgid,
                comm: comm_bytes("hog"),
            },
            payload,
        }
    }

    /// The kernel's records of a storm of `kills` SIGKILLs, a third of them the OOM killer's
    /// (marked 5 µs later), the rest PID-namespace teardowns, each victim exiting and reaped
    /// within 150 ms, in timestamp order; with the OOM victims and when each victim died.
    fn storm_ring(rnd: &mut impl FnMut(u64) -> u64, kills: u32) -> StormRing {
        use oomtrace_common::{TaskFree, sender_state, si_code};
        let sigkill = |tgid: u32, ns_churn: bool| {
            Payload::KernelSigkill(KernelSigkill {
                sender_flags: sender_state::KNOWN
                    | sender_state::CODE
                    | if ns_churn { sender_state::EXITING } else { 0 },
                si_code: si_code::SI_KERNEL,
                ..sample_sigkill(tgid, "hog", 5)
            })
        };
        let (mut ring, mut dies, mut oom) = (Vec::new(), Vec::new(), Vec::new());
        let mut t = 0;
        for i in 0..kills {
            t += 1_000 + rnd(30 * MS);
            let tgid = 1_000 + i;
            let churn = rnd(3) != 0;
            ring.push(storm_at(t, 0, 9, sigkill(tgid, churn)));
            if !churn {
                let mut m: MarkVictim = unsafe { std::mem::zeroed() };
                m.fields = victim_fields::TASK | victim_fields::COMM;
                (m.pid, m.tgid, m.start_ns, m.memcg_id) = (tgid, tgid, 5, 77);
                m.comm = comm_bytes("hog");
                ring.push(storm_at(t + 5_000, 0, 9, Payload::MarkVictim(m)));
                oom.push(tgid);
            }
            let dead = t + 1 + rnd(150 * MS);
            let exit = TaskExit {
                group_dead: 1,
                group_dead_source: 1,
                start_ns: 5,
            };
            ring.push(storm_at(dead, 1, tgid, Payload::TaskExit(exit)));
            let free = TaskFree {
                pid: tgid,
                _pad: 0,
                start_ns: 5,
            };
            ring.push(storm_at(dead + MS, 1, 1, Payload::TaskFree(free)));
            dies.push((tgid, 1_000_000 * MS + dead));
        }
        ring.sort_by_key(|e| e.header.ts_ns);
        (ring, dies, oom)
    }

    /// The ring's records, (pid, time of death) of every victim, the OOM victims.
    type StormRing = (Vec<Event>, Vec<(u32, u64)>, Vec<u32>);

    /// A storm of kernel SIGKILLs and OOM kills ([`storm_ring`]), read by a reader that falls
    /// behind: the ring is read in chunks, and a kill whose victim finished dying before its
    /// read gets its death record (`gone`, stamped at the read) written into the dump right
    /// after the kill and before its mark. The dump is written as `watch` writes it, with a
    /// drained mark at each tick after a read (when `drained`). Returns the OOM victims, the
    /// records as `watch` read them (a `Drained` per tick), and how many deaths were recorded
    /// before their kill's mark.
    pub(super) fn storm_dump(
        path: &Path,
        seed: u64,
        kills: u32,
        drained: bool,
    ) -> (Vec<u32>, Vec<Record>, usize) {
        use oomtrace_common::{GroupExited, USERSPACE_CPU, exit_seen};
        let mut x = seed | 1;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let (ring, dies, oom) = storm_ring(&mut rnd, kills);
        // The reader: a chunk of the ring at each wake, 0-400 ms behind.
        let header = json!({"version": "t", "hostname": "h", "kernel": "k",
                            "options": {"timeout_ns": 5_000_000_000u64}, "death": {"pidfd": true},
                            "clock": {"realtime_offset_ns": 0}});
        let mut w = Writer::create(path, false, &header).unwrap();
        let mut live = Vec::new();
        let (mut i, mut now, mut ahead) = (0, 0, 0);
        while i < ring.len() {
            now = (now + rnd(100 * MS)).max(ring[i].header.ts_ns + rnd(400 * MS));
            while i < ring.len() && ring[i].header.ts_ns <= now {
                let ev = ring[i];
                w.event(&ev.encode()).unwrap();
                live.push(Record::Event(ev.encode()));
                if let Payload::KernelSigkill(k) = ev.payload
                    && let Some(&(_, dead)) = dies.iter().find(|(p, _)| *p == k.target_tgid)
                    && dead < now
                {
                    let gone = GroupExited {
                        pid: k.target_tgid,
                        how: exit_seen::GONE,
                        start_ns: 5,
                        tid: 0,
                        _pad: 0,
                    };
                    let u = storm_at(
                        now - 1_000_000 * MS,
                        USERSPACE_CPU,
                        k.target_tgid,
                        Payload::GroupExited(gone),
                    );
                    w.event(&u.encode()).unwrap();
                    live.push(Record::Event(u.encode()));
                    // An OOM kill's mark is the ring's next record: this death precedes it.
                    ahead += usize::from(oom.contains(&k.target_tgid));
                }
                i += 1;
            }
            // `now` is a time of the ring's records (the clock's base included).
            if drained {
                w.drained(now).unwrap();
            }
            live.push(Record::Drained(now));
        }
        w.finish(now + 10_000 * MS).unwrap();
        (oom, live, ahead)
    }

    /// What each OOM victim was called: replayed, or as `watch` judged it (the same records
    /// to a session, ticked after each read of the ring).
    fn verdicts(findings: &[Finding], oom: &[u32]) -> Vec<(u32, &'static str)> {
        oom.iter()
            .map(|&p| {
                let first = findings
                    .iter()
                    .find(|f| f.tgid() == p && matches!(f.name(), "killed" | "sigkill"));
                (p, first.map_or("none", Finding::name))
            })
            .collect()
    }

    /// The fix for a replay that called an OOM kill "another kernel path's sigkill" beside a
    /// SIGKILL storm: a dump of format 3 marks each full read of the ring, and the replay judges
    /// time only there, as `watch` did. Every OOM kill is then `killed`, as live.
    #[test]
    fn a_death_recorded_before_its_kills_mark_is_judged_at_the_drains_as_live() {
        let scratch = ScratchDir::new("replay-drained");
        let mut ahead = 0;
        for seed in 1..=12u64 {
            let path = scratch.join(&format!("storm-{seed}.dump"));
            let (oom, live, n) = storm_dump(&path, seed * 0x9e37_79b9, 60, true);
            ahead += n;
            // As live: the records as read, a tick after each read.
            let mut s = Session::in_memory(MemcgPaths::new(None));
            let mut kept = Vec::new();
            let mut end = 0;
            for r in &live {
                match r {
                    Record::Event(raw) => {
                        s.event(&Event::decode(raw).unwrap(), &mut kept);
                    }
                    Record::Drained(t) => {
                        s.tick(*t, &mut kept);
                        end = *t;
                    }
                    _ => unreachable!(),
                }
            }
            s.finish(end + 10_000 * MS, &mut kept);
            let want = verdicts(&kept, &oom);
            assert!(want.iter().all(|(_, v)| *v == "killed"), "live: {want:?}");
            let (r, out) = run(&path, &ReplayOptions::default());
            assert_eq!(verdicts(&r.findings, &oom), want, "seed {seed}: {out}");
        }
        assert!(
            ahead >= 12,
            "{ahead} deaths recorded before their kill's mark"
        );
    }

    /// The timeline is kept only for `--perfetto`; without it the replay prints and sums up
    /// exactly the same.
    #[test]
    fn a_replay_without_the_timeline_says_the_same() {
        let scratch = ScratchDir::new("no-timeline");
        let path = scratch.join("stuck.dump");
        stuck_dump(&path);
        let (with, with_text) = run(&path, &ReplayOptions::default());
        let mut out = Vec::new();
        let opts = ReplayOptions::default();
        let without = replay(&mut Reader::open(&path).unwrap(), &opts, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), with_text);
        assert_eq!(without.summary, with.summary);
        assert!(!with.findings.is_empty() && !with.exits.is_empty());
        assert!(without.findings.is_empty() && without.exits.is_empty());
        assert!(without.victims.is_empty() && without.invocations.is_empty());
    }

    /// A dump as the oomtrace of dump format 1 wrote it (testdata/README.md): its events have
    /// the older, shorter layouts, and every one must decode, as that version's own replay did
    /// (8 kills, 8 dead, 8 released).
    #[test]
    fn a_dump_written_by_format_1s_oomtrace_replays_in_full() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/dumps/format1-b14698b.dump");
        let (r, text) = run(&path, &ReplayOptions::default());
        assert_eq!(r.undecodable, 0, "{text}");
        let s = &r.summary;
        assert_eq!((s.kills, s.dead, s.released), (8, 8, 8), "{text}");
        assert!(text.contains("predates dump format 2"), "{text}");
    }

    /// A dump of format 2 as oomtrace wrote it before the sender's state (testdata/README.md):
    /// its `kernel_sigkill` records have the 48-byte layout, and every one must decode, the
    /// sender unknown, as that version's own replay did (8 kills, 8 dead, 8 released).
    #[test]
    fn a_dump_written_before_the_senders_state_replays_in_full() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/dumps/format2-71dfb86.dump");
        let (r, text) = run(&path, &ReplayOptions::default());
        assert_eq!(r.undecodable, 0, "{text}");
        let s = &r.summary;
        assert_eq!((s.kills, s.dead, s.released), (8, 8, 8), "{text}");
    }

    /// A dump whose records stop inside a kill's pairing window (testdata/README.md: found by
    /// fuzzing) replays to its end; before, the replay ticked at one time for ever. Run in a
    /// thread so that a regression fails here instead of hanging the suite.
    #[test]
    fn a_replay_never_spins_on_one_time() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/dumps/fuzz-spin-announce.dump");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(run(&path, &ReplayOptions::default()));
        });
        let (r, text) = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the replay did not finish in 20 s");
        assert_eq!(r.summary.kills, 2, "{text}");
        assert!(text.contains("summary: kills 2"), "{text}");
    }

    #[test]
    fn replay_finds_the_stuck_victim_and_rejudges_with_another_timeout() {
        let scratch = ScratchDir::new("replay");
        let path = scratch.join("stuck.dump");
        stuck_dump(&path);
        let (r, text) = run(&path, &ReplayOptions::default());
        assert_eq!(
            (r.summary.kills, r.summary.dead, r.summary.flagged_total),
            (2, 2, 1),
            "{text}"
        );
        assert!(text.contains("STUCK pid 42 (hog)"), "{text}");
        assert!(text.contains("[memcg /sandbox]"), "{text}");
        assert!(r.problems.is_empty());
        // With a 10 s timeout nothing was stuck; with 1 ms both were.
        let (r, _) = run(
            &path,
            &ReplayOptions {
                timeout_ns: Some(10_000 * MS),
                ..Default::default()
            },
        );
        assert_eq!(r.summary.flagged_total, 0);
        let (r, _) = run(
            &path,
            &ReplayOptions {
                timeout_ns: Some(MS / 2),
                ..Default::default()
            },
        );
        assert_eq!(r.summary.flagged_total, 2);

        let (r, _) = run(&path, &ReplayOptions::default());
        let trace = perfetto(&r, 5_000 * MS);
        let events = trace["traceEvents"].as_array().unwrap();
        let named = |n: &str| events.iter().filter(|e| e["name"] == n).count();
        assert_eq!(named("killed → dead"), 2);
        // The "why" fields ride on each victim's slice: its why lines (none known in this
        // dump: no stack, no memcg read) and its incident (none).
        for slice in events.iter().filter(|e| e["name"] == "killed → dead") {
            assert!(slice["args"]["why"].is_array(), "{slice}");
            assert!(slice["args"]["incident"].is_null(), "{slice}");
        }
        assert_eq!(named("STUCK (past the timeout)"), 1);
        assert_eq!(named("oom_reaper woken"), 1);
        assert!(
            events
                .iter()
                .any(|e| e["name"] == "process_name" && e["args"]["name"] == "memcg /sandbox")
        );
        assert!(events.iter().any(|e| e["name"] == "thread 43 exited"));
        let stuck = events
            .iter()
            .find(|e| e["name"] == "STUCK (past the timeout)")
            .unwrap();
        assert_eq!(
            stuck["dur"], 2_000_000.0,
            "from kill+5 s to death at 7 s, in µs"
        );
    }

    #[test]
    fn a_truncated_dump_is_reported_with_what_was_read() {
        let scratch = ScratchDir::new("replay-cut");
        let path = scratch.join("stuck.dump");
        stuck_dump(&path);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 30]).unwrap();
        let (r, text) = run(&path, &ReplayOptions::default());
        assert!(
            matches!(r.problems[..], [DumpProblem::Truncated { .. }]),
            "{:?}",
            r.problems
        );
        assert!(text.contains("DUMP PROBLEM: truncated at byte"), "{text}");
        assert_eq!(r.summary.kills, 2, "what was read is still judged");
    }

    /// Item 7 of #12: one flipped bit in a gzip dump used to give "not an oomtrace dump (bad
    /// magic)" and nothing. The gzip damage is named, with its byte, and what came before it
    /// is replayed.
    #[test]
    fn a_flipped_bit_in_a_gzip_dump_is_named_and_what_came_before_is_replayed() {
        let scratch = ScratchDir::new("replay-gzbit");
        let small = scratch.join("stuck.dump.gz");
        stuck_dump_as(&small, true);
        let gz = std::fs::read(&small).unwrap();
        let mut bad = gz.clone();
        bad[gz.len() - 30] ^= 0x04;
        std::fs::write(&small, &bad).unwrap();
        let (r, text) = run(&small, &ReplayOptions::default());
        assert!(
            text.contains("DUMP PROBLEM: gzip stream corrupt at byte"),
            "{text}"
        );
        assert!(!text.contains("bad magic"), "{text}");
        assert!(r.header.is_some(), "{text}");

        // A longer dump: damage three quarters in keeps about three quarters of the kills.
        let big = scratch.join("synth.dump.gz");
        let header = json!({"version": "t", "hostname": "h", "kernel": "k",
                            "clock": {"realtime_offset_ns": 0}});
        let mut w = Writer::create(&big, true, &header).unwrap();
        let mut last = 0;
        for ev in crate::record::synth::episodes(400, 2) {
            last = ev.header.ts_ns;
            w.event(&ev.encode()).unwrap();
        }
        w.finish(last).unwrap();
        let gz = std::fs::read(&big).unwrap();
        // A flipped bit that breaks the deflate stream itself, about three quarters in: a
        // flip inside a literal inflates cleanly (only the CRC at the end notices, and every
        // record is replayed), so which byte does depends on how the dump compressed; the
        // first of a few that does is taken.
        let r = (0..256)
            .find_map(|k| {
                let mut bad = gz.clone();
                bad[gz.len() * 3 / 4 + k] ^= 0x10;
                std::fs::write(&big, &bad).unwrap();
                let (r, text) = run(&big, &ReplayOptions::default());
                (text.contains("DUMP PROBLEM: gzip stream corrupt at byte")
                    && r.summary.kills < 400)
                    .then_some(r)
            })
            .expect("a flipped bit among 256 that breaks the deflate stream where it is");
        assert!(r.header.is_some());
        assert!(
            r.summary.kills >= 400 * 3 / 4 - 25 && r.summary.kills < 400,
            "{} kills replayed",
            r.summary.kills
        );
    }

    /// A memcg created, killed in and removed with no memcg record of it (the recorder never
    /// named it): `report` names it from its recorded creation (`cgroup_mkdir`).
    #[test]
    fn report_names_a_memcg_from_its_recorded_creation() {
        let scratch = ScratchDir::new("replay-mkdir");
        let path = scratch.join("mkdir.dump");
        let header = json!({"version": "t", "hostname": "h", "kernel": "k",
                            "clock": {"realtime_offset_ns": 0}});
        let mut w = Writer::create(&path, false, &header).unwrap();
        let mut mkdir = oomtrace_common::CgroupMkdir {
            id: 88,
            hierarchy: 4,
            level: 3,
            flags: crate::event::cgroup_mkdir::HIERARCHY_KNOWN,
            path_len: 0,
            path: [0; oomtrace_common::CGROUP_PATH_LEN],
        };
        let p = b"/kubepods/pod1/ctr";
        mkdir.path[..p.len()].copy_from_slice(p);
        mkdir.path_len = p.len() as u32;
        let mut m: MarkVictim = unsafe { std::mem::zeroed() };
        m.fields = victim_fields::TASK | victim_fields::COMM;
        (m.pid, m.tgid, m.start_ns, m.memcg_id) = (42, 42, 5, 88);
        m.comm = comm_bytes("hog");
        let kill = KernelSigkill {
            target_memcg_id: 88,
            ..sample_sigkill(42, "hog", 5)
        };
        let events = [
            ev(0, 7, 7, Payload::CgroupMkdir(mkdir)),
            ev(1, 9, 9, Payload::KernelSigkill(kill)),
            ev(1, 9, 9, Payload::MarkVictim(m)),
        ];
        for raw in &events {
            w.event(raw).unwrap();
        }
        w.finish(1_000_000 * MS + 100 * MS).unwrap();
        let (r, text) = run(&path, &ReplayOptions::default());
        assert_eq!(r.undecodable, 0, "{text}");
        assert!(text.contains("[memcg /kubepods/pod1/ctr]"), "{text}");

        // Its removal recorded (`cgroup_rmdir`) just after the kill: the replay says the memcg
        // was removed when the kill was written, as `watch` did.
        let path = scratch.join("rmdir.dump");
        let mut w = Writer::create(&path, false, &header).unwrap();
        for raw in &events {
            w.event(raw).unwrap();
        }
        w.event(&ev(2, 3, 3, Payload::CgroupRmdir(mkdir))).unwrap();
        w.finish(1_000_000 * MS + 100 * MS).unwrap();
        let (r, text) = run(&path, &ReplayOptions::default());
        assert_eq!(r.undecodable, 0, "{text}");
        assert!(
            text.contains("[memcg /kubepods/pod1/ctr, removed]"),
            "{text}"
        );
    }

    /// Item 7 of #12: a few memcg records with 16 MiB paths drove `report` to a gigabyte. A
    /// path longer than PATH_MAX is a damaged record, and the paths kept are bounded.
    #[test]
    fn memcg_paths_are_bounded() {
        let scratch = ScratchDir::new("replay-memcg");
        let path = scratch.join("memcg.dump");
        let header = json!({"version": "t", "hostname": "h", "kernel": "k",
                            "clock": {"realtime_offset_ns": 0}});
        let mut w = Writer::create(&path, false, &header).unwrap();
        w.memcg(1, &"/x".repeat(2500)).unwrap();
        for id in 0..70_000 {
            w.memcg(100 + id, "/m").unwrap();
        }
        w.finish(1).unwrap();
        let (r, text) = run(&path, &ReplayOptions::default());
        assert!(!r.memcg_paths.contains_key(&1));
        assert!(r.memcg_paths.len() <= 65_536, "{}", r.memcg_paths.len());
        assert!(
            text.contains("memcg record with a path of 5000 bytes (at most 4096; skipped)"),
            "{text}"
        );
        assert!(text.contains("later memcg records are dropped"), "{text}");
    }

    /// Item 7 of #12: a flipped bit in the header record made the replay take the first
    /// record after it for the header (and drop it). The damage is reported and the record
    /// after the header (here the memcg path) is replayed as itself.
    #[test]
    fn a_damaged_header_is_reported_and_the_next_record_is_not_taken_for_it() {
        let scratch = ScratchDir::new("replay-hdr");
        let path = scratch.join("stuck.dump");
        stuck_dump(&path);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12 + 8 + 1 + 3] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let (r, text) = run(&path, &ReplayOptions::default());
        assert!(r.header.is_none());
        assert!(
            text.contains("DUMP PROBLEM: no usable header record at byte 12"),
            "{text}"
        );
        assert!(text.contains("[memcg /sandbox]"), "{text}");
        assert_eq!(r.summary.kills, 2, "{text}");
        assert_eq!(r.memcg_paths.get(&77).map(String::as_str), Some("/sandbox"));

        // An intact record that is not a header of ours is not used as one.
        let path = scratch.join("odd-header.dump");
        let w = Writer::create(&path, false, &json!({"hostname": "h"})).unwrap();
        w.finish(1).unwrap();
        let (r, text) = run(&path, &ReplayOptions::default());
        assert!(r.header.is_none(), "{text}");
        assert!(text.contains("the header has no `version`"), "{text}");
    }

    /// A dump records the sender of every SIGKILL, and `report` judges a user's kill exactly
    /// as `watch` did: one that did not stick is `kill_stuck` naming the sender, one that
    /// worked is counted apart and quiet in text.
    #[test]
    fn report_judges_a_users_kill_as_watch_did() {
        let scratch = ScratchDir::new("replay-user-kill");
        let path = scratch.join("kills.dump");
        let header = json!({"version": "t", "hostname": "h", "kernel": "k",
                            "clock": {"realtime_offset_ns": 0}});
        let mut w = Writer::create(&path, false, &header).unwrap();
        let kill = |tgid: u32| {
            Payload::KernelSigkill(KernelSigkill {
                sender_flags: oomtrace_common::sender_state::KNOWN
                    | oomtrace_common::sender_state::CODE,
                si_code: oomtrace_common::si_code::SI_USER,
                sender_uid: 1000,
                ..sample_sigkill(tgid, "listener", 5)
            })
        };
        let gone = Payload::GroupExited(oomtrace_common::GroupExited {
            pid: 43,
            how: oomtrace_common::exit_seen::PIDFD,
            start_ns: 5,
            tid: 0,
            _pad: 0,
        });
        for raw in [
            ev(0, 300, 300, kill(42)),
            ev(1, 300, 300, kill(43)),
            ev(2, 43, 43, gone),
        ] {
            w.event(&raw).unwrap();
        }
        w.finish(1_000_000 * MS + 9000 * MS).unwrap();
        let (r, text) = run(&path, &ReplayOptions::default());
        let names: Vec<_> = r.findings.iter().map(|f| (f.name(), f.tgid())).collect();
        assert_eq!(
            names,
            [
                ("sigkill", 42),
                ("sigkill", 43),
                ("dead", 43),
                ("kill_stuck", 42)
            ],
            "{text}"
        );
        let s = &r.summary;
        assert_eq!(
            (s.kills, s.other_kills, s.user_kills, s.kill_stuck_now),
            (0, 2, 2, 1)
        );
        assert!(
            text.contains(
                "KILL STUCK pid 42 (listener): SIGKILLed by user process pid 300 (x, uid 1000)"
            ),
            "{text}"
        );
        assert!(!text.contains("pid 43"), "{text}");
    }

    /// `report --perfetto` on a dump whose timestamps go backwards (a victim dead before it
    /// was killed) panicked subtracting them.
    #[test]
    fn perfetto_survives_timestamps_out_of_order() {
        let scratch = ScratchDir::new("replay-order");
        let path = scratch.join("order.dump");
        let header = json!({"version": "t", "hostname": "h", "kernel": "k",
                            "clock": {"realtime_offset_ns": 0}});
        let mut w = Writer::create(&path, false, &header).unwrap();
        let kill = |tgid: u32| Payload::KernelSigkill(sample_sigkill(tgid, "hog", 5));
        let mark = |tgid: u32| {
            let mut m: MarkVictim = unsafe { std::mem::zeroed() };
            m.fields = victim_fields::TASK | victim_fields::COMM;
            (m.pid, m.tgid, m.start_ns) = (tgid, tgid, 5);
            m.comm = comm_bytes("hog");
            Payload::MarkVictim(m)
        };
        let exit = Payload::TaskExit(TaskExit {
            group_dead: 1,
            group_dead_source: 1,
            start_ns: 5,
        });
        let free = |pid: u32| {
            Payload::TaskFree(oomtrace_common::TaskFree {
                pid,
                _pad: 0,
                start_ns: 5,
            })
        };
        for raw in [
            // Released (5.5 s) before dead (6 s).
            ev(5000, 9, 9, kill(42)),
            ev(5000, 9, 9, mark(42)),
            ev(6000, 42, 42, exit),
            ev(5500, 0, 0, free(42)),
            // Marked at 8 s, dead at 9 s, the SIGKILL stamped 10 s.
            ev(8000, 9, 9, mark(50)),
            ev(9000, 50, 50, exit),
            ev(10000, 9, 9, kill(50)),
        ] {
            w.event(&raw).unwrap();
        }
        w.finish(0).unwrap();
        let (mut r, text) = run(&path, &ReplayOptions::default());
        assert_eq!(r.victims.len(), 2, "{text}");
        // What the tracker makes of such a dump depends on its version; the export must take
        // any order: death before the kill, release before death, a kill near 2^64.
        let mut odd = r.victims.values().next().unwrap().clone();
        for (i, (kill, dead, released)) in [
            (5_000 * MS, Some(1_000 * MS), Some(500 * MS)),
            (u64::MAX - 10, None, None),
            (u64::MAX - 10, Some(u64::MAX), None),
        ]
        .into_iter()
        .enumerate()
        {
            odd.key.tgid = 1000 + i as u32;
            odd.timeline.sigkill = Some(kill);
            (odd.timeline.dead, odd.timeline.released) = (dead, released);
            r.victims.insert(odd.key, odd.clone());
        }
        r.exits.push((1001, 1001, 0));
        for timeout in [1, 5_000 * MS, u64::MAX] {
            let trace = perfetto(&r, timeout);
            for e in trace["traceEvents"].as_array().unwrap() {
                if let Some(dur) = e["dur"].as_f64() {
                    assert!(dur >= 0.0, "{e}");
                }
            }
        }
    }
}
