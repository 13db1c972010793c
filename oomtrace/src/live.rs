//! The live loop of `watch` and `record`: ring buffer → session (print, track, flag) → dump,
//! metrics and the on-stuck hook; ticks for timeouts; clean shutdown on SIGINT/SIGTERM.

use std::{
    collections::{BTreeSet, hash_map::Entry},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use serde_json::{Value, json};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

mod banner;
mod hook;
mod loop_stats;
mod notices;
mod recorder;
mod remedy;
mod ring_fill;
mod ticker;

use banner::{WatchInfo, banner, drop_privileges, dump_header, plan_line};
use loop_stats::Part;

use crate::{
    clock::{Clock, monotonic_now},
    event::{Event, Payload, exit_seen},
    hooks::Hooks,
    host::{
        deathwatch::{self, DeathWatch, userspace_event},
        memcg_watch::{self, MemcgWatch},
        procfs::same_start,
        scan,
    },
    kernel::{cgroups::MemcgPaths, plan::Hook, probes::Probes},
    lifecycle::{Finding, Observability, Tracker, TrackerConfig},
    printer::{self, Format},
    record::dump,
    render::{
        events::{self, Renderer},
        metrics::{self, Metrics},
    },
    session::{Filter, Live, Session},
    sink::{EventCx, FindingCx, Held, Note, Record, Said, Sink},
};

/// Exit code of `watch --fail-on-stuck` when a victim was flagged.
pub const EXIT_STUCK: u8 = 3;

/// What the live loop does besides printing.
#[derive(Clone, Debug, Default)]
pub struct LiveOptions {
    pub format: Format,
    pub duration: Option<Duration>,
    pub timeout_ns: u64,
    pub release_timeout_ns: u64,
    pub record: Option<PathBuf>,
    pub compress: bool,
    pub metrics: Option<SocketAddr>,
    pub on_stuck: Option<PathBuf>,
    /// A hook still running after this is killed.
    pub hook_timeout: Duration,
    /// Take the unstick remedy for every flagged victim.
    pub unstick: bool,
    /// What `--unstick` may act on beyond the victim's own (explicit flags).
    pub unstick_policy: crate::host::unstick::Policy,
    /// `--unstick-pre-existing`: remedies for victims found by the start-up scan too (their
    /// kill was not seen: only /proc says they were SIGKILLed, by anyone).
    pub unstick_pre_existing: bool,
    pub filter: Filter,
    /// Print findings only, not every event.
    pub quiet_events: bool,
    /// Count per-program run time in the kernel and print it at exit (benchmarks).
    pub bpf_stats: bool,
    /// Count the loop's own CPU per part of a wake-up and print it at exit (benchmarks).
    pub loop_stats: bool,
}

/// How the run ended.
pub struct Outcome {
    pub flagged: u64,
}

/// The session of a live watch: the tracker told what the plan can see, the renderer told the
/// clocks and memcgs, /proc forensics with each memcg's OOM counters as they were at start.
fn new_session(
    probes: &Probes,
    opts: &LiveOptions,
    death: &Result<(), String>,
) -> (Session, Clock, u64) {
    let tracker = Tracker::new(TrackerConfig {
        timeout_ns: opts.timeout_ns,
        release_timeout_ns: opts.release_timeout_ns,
        observability: Observability::of_plan(&probes.plan, death.is_ok()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|r| crate::lifecycle::kernel_version(&r)),
        ..TrackerConfig::default()
    });
    let memory = probes.env.memory_controller.clone();
    let clock = Clock::now();
    let page_kb = 1u64 << probes.layout.config.page_kb_shift;
    let mut renderer = Renderer {
        symbols: Default::default(),
        gfp: probes.gfp_names.clone(),
        clock,
        memcgs: MemcgPaths::new(memory.as_ref()),
        page_kb,
    };
    renderer.memcgs.rmdir_hooked(
        probes
            .plan
            .iter()
            .any(|p| p.hook == Hook::CgroupRmdir && p.attached()),
    );
    let memcg_root = memory.map(|m| m.mount);
    let mut live = Live::new("/proc".into(), memcg_root.clone());
    live.oom_baseline = memcg_root
        .as_deref()
        .map(scan::memcg_oom_states)
        .unwrap_or_default();
    raise_fd_limit();
    let mut session = Session::new(renderer, tracker, Some(live));
    session.show_events(!opts.quiet_events);
    session.tracker_mut().set_filter(opts.filter.clone());
    session
        .tracker_mut()
        .set_gfp_names(probes.gfp_names.clone());
    (session, clock, page_kb)
}

/// The metrics, told what this plan can observe.
fn metrics_for(probes: &Probes, death: bool, memcgs: &WatchInfo) -> Metrics {
    let mut m = Metrics::new(&probes.plan);
    let sees = Observability::of_plan(&probes.plan, death);
    m.set_observable(sees.kill_path(), sees.livelock() || memcgs.watching());
    m.set_invocation_hook(sees.livelock());
    m
}

/// The process (tgid) a thread id belongs to, from /proc (classic tracepoints name threads).
fn tgid_of(tid: u32) -> Option<u32> {
    crate::host::forensics::tgid_of(std::path::Path::new("/proc"), tid)
}

/// The process a kill-path event names, to watch for its death: (tgid, leader start, comm).
fn killed_process(ev: &Event) -> Option<((u32, u32), u64, [u8; 16])> {
    let (start, comm) = ev.killed()?;
    let who = ev.subject();
    let tgid = match who.tgid {
        Some(tgid) => tgid,
        None => tgid_of(who.tid)?,
    };
    Some(((tgid, who.tid), start, comm))
}

/// Lets this process hold a descriptor per watched victim: the soft fd limit is raised to
/// the hard one (commonly 1024 → 524288). Failing that is not fatal.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } == 0
        && lim.rlim_cur < lim.rlim_max
    {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) };
    }
}

/// How often a v1 memcg under OOM is re-read to see its hang end (the kernel notifies the
/// start only).
const MEMCG_POLL: Duration = Duration::from_millis(250);
/// How often the loop wakes while something must be polled (hooks to reap, a ring buffer
/// without wakeups).
const POLL: Duration = Duration::from_millis(50);
/// How long after a victim's death the loop first wakes to read its release, which the kernel
/// submits without a wake-up (then every `POLL` while it is awaited, until it is flagged as not
/// released): a release usually comes with the death or within a few ms of it (the parent's
/// wait, an RCU grace period), and any wake meanwhile reads it. The reorder window's length,
/// so that this wake is the one the death's own end of window already asks for.
const RELEASE_WAIT_NS: u64 = crate::lifecycle::REORDER_NS;
/// How often processes gone from /proc are swept out of the kernel's tracked set.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How late the tracker's own deadlines (the end of the reorder window, a pairing window, a
/// victim's timeout) may be met, so that the deadlines of events close in time share a
/// wake-up: in an OOM storm one tick judges several kills instead of one tick each. A flag
/// comes at most this much later (the issue allows 100 ms beyond the timeout). A deadline is
/// met by the first wake past it (an event, a death, a memcg notification: see `watch`), or
/// else by a tick [`TICK_SLACK_NS`] after it: all the deadlines of that span share it. (A 10 ms
/// grid the deadlines were rounded up to gave a tick at nearly every grid point of an OOM
/// storm, 0.6 per kill, each a wake-up of its own; meeting a deadline up to a whole step after
/// it lets a wake for something else meet it first: 0.2–0.3 ticks per kill.)
const TICK_GRID_NS: u64 = 10_000_000;
/// A tick for a deadline is armed this long after it: with the timer's own 1 ms grid
/// (ticker.rs), at most [`TICK_GRID_NS`] after it.
const TICK_SLACK_NS: u64 = TICK_GRID_NS - 1_000_000;
/// Memcgs whose files (about ten each on cgroup v1) are kept open between kills: those of a
/// storm's latest kills. Past this many, the least recently read memcg's are closed.
const MEMCG_FILES_KEPT: usize = 16;

struct Runner {
    session: Session,
    /// The findings of the event (or tick) at hand, handed to the sinks (kept for its
    /// allocation).
    found: Vec<Finding>,
    /// Keys the hash that stands for kernel addresses (mm identities) in everything written.
    pointer_key: std::collections::hash_map::RandomState,
    recorded_memcgs: BTreeSet<u64>,
    /// Names kernel addresses of allocation stacks (opened before privileges were dropped).
    kallsyms: crate::kernel::kallsyms::Kallsyms,
    /// Addresses whose names were given to the tracker and the dump.
    named_addrs: std::collections::HashSet<u64>,
    /// The memory controller's cgroup version (1 or 2), to read memcgs at a kill.
    memcg_version: Option<u8>,
    /// When each memcg (0: the machine) was last read at a kill (kernel event time).
    states_read: std::collections::HashMap<u64, u64>,
    /// The files of the memcgs read at the latest kills, kept open (at most
    /// [`MEMCG_FILES_KEPT`] memcgs, the least recently read dropped first; a memcg removed
    /// is dropped at its first failed read or at the sweep that sees it gone).
    memcg_files: std::collections::HashMap<u64, (u64, crate::host::memstate::MemcgFiles)>,
    /// The consumers of events and findings, in order: the printer, the metrics, the on-stuck
    /// hook, --unstick, the dump (see sink.rs).
    sinks: Vec<Box<dyn Sink>>,
    flagged: u64,
    /// Exits traced without ring-buffer wakeups (`--trace-all-exits`) must be polled for.
    poll_ring: bool,
    last_sweep: tokio::time::Instant,
    /// Processes of the kernel's tracked set found gone from /proc at the last sweep (see
    /// [`stale_tracked`]).
    tracked_gone: std::collections::HashSet<u32>,
    /// The sockets the kernel read from killed processes' fd tables, if it reads them here.
    kill_sockets: Option<crate::kernel::probes::KillSocketsMap>,
    /// Deaths not dated by the kernel yet (`GroupExited` of a victim found reaped at its kill,
    /// or whose pidfd fired first), each held until the time beside it: their parent's
    /// notification, later in the ring, dates them (see [`Runner::read_deaths`]).
    undated: Vec<(Event, u64)>,
    /// Whether deaths come in a stream, which the loop then reads at its other wake-ups
    /// ([`DeathWatch::set_lazy`]), as memcg notifications.
    death_pacing: notices::Pacing,
    /// Events were read since the kernel's lost-event counter was last read. Events are lost
    /// only when the ring buffer is full, so a read that finds it empty cannot be followed by
    /// new losses: the counter (a per-CPU map read) is read at a tick after reads that found
    /// events, if the ring may have been full meanwhile (`ring_fill`), else at the sweep.
    lost_unchecked: bool,
    /// Whether the ring can have been full since the lost-event counter was last read: when
    /// it cannot, the counter is read at the sweep only (`None`: at every tick after events).
    ring_fill: Option<ring_fill::RingFill>,
    /// When stdout was last flushed (CLOCK_MONOTONIC ns): a wake that meets a deadline flushes
    /// only once a grid step has passed since (see [`Runner::judge`]).
    last_flush: u64,
    /// A kill's record is taken out of `kill_sockets` in one `bpf` call (see
    /// [`take_kill_record`]); false once the kernel said it cannot.
    kill_record_one_call: bool,
    /// `--loop-stats`: the loop's CPU per part of a wake-up (off unless asked).
    loop_stats: loop_stats::LoopStats,
}

impl Runner {
    /// A runner for `session` that hands what it reads to `sinks`.
    fn new(
        session: Session,
        sinks: Vec<Box<dyn Sink>>,
        kallsyms: crate::kernel::kallsyms::Kallsyms,
    ) -> Runner {
        let now = tokio::time::Instant::now();
        Runner {
            session,
            found: Vec::new(),
            pointer_key: std::collections::hash_map::RandomState::new(),
            recorded_memcgs: BTreeSet::new(),
            kallsyms,
            named_addrs: std::collections::HashSet::new(),
            memcg_version: None,
            states_read: std::collections::HashMap::new(),
            memcg_files: std::collections::HashMap::new(),
            sinks,
            flagged: 0,
            poll_ring: false,
            last_sweep: now,
            tracked_gone: std::collections::HashSet::new(),
            kill_sockets: None,
            undated: Vec::new(),
            death_pacing: notices::Pacing::default(),
            lost_unchecked: false,
            ring_fill: None,
            last_flush: 0,
            kill_record_one_call: true,
            loop_stats: loop_stats::LoopStats::new(false),
        }
    }

    fn raw_event(&mut self, raw: &[u8], deaths: &mut DeathWatch) -> anyhow::Result<()> {
        let mut ev = match Event::decode(raw) {
            Ok(ev) => ev,
            Err(e) => {
                eprintln!("oomtrace: skipping an undecodable record: {e}");
                return Ok(());
            }
        };
        let completed = complete_in_userspace(&mut ev, &self.pointer_key);
        self.read_memcgs_at_kill(&ev)?;
        if completed {
            self.event(&ev, &ev.encode())?;
        } else {
            self.event(&ev, raw)?;
        }
        if let Payload::TaskExit(p) = ev.payload {
            // The kernel's word on which process a pidfd opened earlier names.
            deaths.kernel_exit(ev.header.tgid, p.start_ns, ev.header.ts_ns);
        }
        // A death dated by the kernel, in order with the events around it.
        if let Payload::ParentNotified(p) = ev.payload {
            let ts = ev.header.ts_ns;
            let undated = self.undated.iter().position(|(g, _)| {
                matches!(g.payload, Payload::GroupExited(e)
                    if e.pid == p.pid && p.start_ns != 0 && same_start(p.start_ns, e.start_ns))
            });
            let dead = match undated {
                // Seen dead first (found reaped at its kill, or its pidfd fired before this
                // record was written): the kernel's record names it by pid and start.
                Some(at) => {
                    let (mut dead, _) = self.undated.swap_remove(at);
                    if let Payload::GroupExited(e) = &mut dead.payload {
                        e.how = exit_seen::PARENT_NOTIFIED;
                    }
                    dead.header.ts_ns = ts;
                    Some(dead)
                }
                None => deaths.notified(p.pid, p.start_ns, ts),
            };
            if let Some(dead) = dead {
                self.userspace(&dead)?;
            }
        }
        if let Some((ids, start, comm)) = killed_process(&ev) {
            self.watch_death(deaths, ids, start, comm)?;
            if matches!(ev.payload, Payload::KernelSigkill(_)) {
                self.sockets_from_kernel(ids.0, start);
            }
        }
        Ok(())
    }

    /// The sockets the kernel read from `tgid`'s fd table when its SIGKILL was generated
    /// (the record is taken out of the map). /proc is read instead only when the kernel has
    /// no record of this process or did not list every socket (a table past the slots it
    /// reads, a failed read).
    fn sockets_from_kernel(&mut self, tgid: u32, start_ns: u64) {
        let Some(map) = &mut self.kill_sockets else {
            return;
        };
        let record = match take_kill_record(map, tgid, self.kill_record_one_call) {
            Ok(record) => record,
            Err(NotInOneCall) => {
                // The kernel takes nothing out of a hash map in one call (before 5.14).
                self.kill_record_one_call = false;
                let record = map.get(&tgid, 0).ok();
                if record.is_some() {
                    let _ = map.remove(&tgid);
                }
                record
            }
        };
        if let Some(live) = self.session.live_mut() {
            live.kill_record(tgid, start_ns, record.as_ref());
        }
    }

    /// Starts following a killed process's death (once per process) and records the sockets
    /// it holds while its fd table is still there.
    fn watch_death(
        &mut self,
        deaths: &mut DeathWatch,
        (tgid, tid): (u32, u32),
        start_ns: u64,
        comm: [u8; 16],
    ) -> anyhow::Result<()> {
        match deaths.watch(std::path::Path::new("/proc"), (tgid, tid), start_ns, comm) {
            Ok(w) => {
                for ev in w.events {
                    // Reaped before it could be opened: dated by its parent's notification if
                    // that comes later in the ring, else said gone at the end of the read.
                    if let Payload::GroupExited(g) = ev.payload
                        && g.how == exit_seen::GONE
                        && g.start_ns != 0
                    {
                        self.hold_undated(ev);
                    } else {
                        self.userspace(&ev)?;
                    }
                }
                if w.started {
                    // Where the kernel reads the fd table at the SIGKILL, its record comes
                    // with the kill's `KernelSigkill` event (`sockets_from_kernel`).
                    if self.kill_sockets.is_none()
                        && let Some(live) = self.session.live_mut()
                    {
                        live.record_sockets(tgid);
                    }
                    self.followed(tgid);
                }
                Ok(())
            }
            Err(e) => {
                eprintln!("oomtrace: cannot follow the death of pid {tgid}: {e}");
                Ok(())
            }
        }
    }

    /// A process found at start, killed and not finished exiting: followed like a victim.
    fn pre_existing(&mut self, c: &scan::Candidate, deaths: &mut DeathWatch) -> anyhow::Result<()> {
        match deaths.watch(
            std::path::Path::new("/proc"),
            (c.pid, c.pid),
            c.start_ns,
            c.comm_bytes(),
        ) {
            // Gone meanwhile: it was only dying, not stuck.
            Ok(w) if !w.started => Ok(()),
            Ok(_) => {
                if let Some(live) = self.session.live_mut() {
                    live.record_sockets(c.pid);
                }
                self.followed(c.pid);
                self.userspace(&userspace_event(
                    c.pid,
                    c.comm_bytes(),
                    Payload::PreExisting(c.payload()),
                ))
            }
            Err(e) => {
                eprintln!(
                    "oomtrace: cannot follow pid {} found killed at start: {e}",
                    c.pid
                );
                Ok(())
            }
        }
    }

    /// A killed process whose death is followed from now, told to the sinks.
    fn followed(&mut self, tgid: u32) {
        for sink in &mut self.sinks {
            sink.followed(tgid);
        }
    }

    /// A record, to every sink (the dump, if recording).
    fn record(&mut self, r: Record<'_>) {
        for sink in &mut self.sinks {
            sink.record(&r);
        }
    }

    /// A note, to every sink (the printer writes it).
    fn note(&mut self, n: &Note<'_>) {
        for sink in &mut self.sinks {
            sink.note(n);
        }
    }

    /// The first write to the output that failed since the last check (its reader went away):
    /// the run ends with it.
    fn written(&mut self) -> anyhow::Result<()> {
        for sink in &mut self.sinks {
            if let Some(e) = sink.failed() {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Why a sink stopped the watch (a full disk under the dump), if one did.
    fn stopped(&self) -> Option<String> {
        self.sinks
            .iter()
            .find_map(|s| s.stopped().map(str::to_string))
    }

    /// The kernel's memcg OOM notifications, as events (recorded, tracked, counted).
    fn memcg_notices(&mut self, notices: Vec<memcg_watch::Notice>) -> anyhow::Result<()> {
        for n in notices {
            let id = n.payload.memcg_id;
            self.session.name_memcg(id, &n.path);
            self.userspace(&userspace_event(0, [0; 16], Payload::MemcgOom(n.payload)))?;
        }
        Ok(())
    }

    /// An event userspace observed itself: recorded and tracked like a kernel one.
    fn userspace(&mut self, ev: &Event) -> anyhow::Result<()> {
        self.event(ev, &ev.encode())
    }

    fn event(&mut self, ev: &Event, raw: &[u8]) -> anyhow::Result<()> {
        let ev = *ev;
        // A cgroup created (its path kept for a memcg removed before anything names it) or
        // removed (said so from now on). Other hierarchies' (cgroup v1) are neither recorded
        // nor tracked.
        if self.session.memcgs().cgroup_record(&ev.payload) == Some(false) {
            return Ok(());
        }
        // Every memcg the event names is resolved to its path for the tracker (the filter and
        // OOM domains match by path) and recorded once in the dump.
        // The first is the event's own memcg (`Event::memcg`), the one the metrics label.
        let mut path = None;
        for (i, id) in ev.memcgs().enumerate() {
            let Some(p) = self.session.memcgs().path(id) else {
                continue;
            };
            if self.recorded_memcgs.insert(id) {
                self.session.tracker_mut().memcg_path(id, &p);
                self.record(Record::Memcg(id, &p));
            }
            if i == 0 {
                path = Some(p);
            }
        }
        if let Payload::AllocStack(p) = &ev.payload {
            self.name_frames(p);
        }
        self.record(Record::Event(raw));
        let mut found = std::mem::take(&mut self.found);
        let shown = self.session.event(&ev, &mut found);
        let mut cx = EventCx {
            memcg: path.as_deref(),
            shown,
            renderer: self.session.renderer(),
        };
        for sink in &mut self.sinks {
            sink.event(&ev, &mut cx);
        }
        let said = self.hand_findings(&mut found, ev.header.ts_ns);
        self.found = found;
        self.say(said)
    }

    /// At a kill (the kill decision, or the mark where the decision is not seen), reads the OOM
    /// domain and the victim's own memcg from their files (the machine's /proc/meminfo for a
    /// global OOM) and reports each as a [`Payload::MemcgState`] stamped just before the kill
    /// event, so that the tracker has it when it announces the kill. Each memcg is read once
    /// per kill (the decision and the mark of one kill both name it).
    fn read_memcgs_at_kill(&mut self, ev: &Event) -> anyhow::Result<()> {
        let ids = ev.memcgs_at_kill();
        let ts = ev.header.ts_ns;
        for id in ids.into_iter().flatten() {
            if self
                .states_read
                .get(&id)
                .is_some_and(|t| ts.abs_diff(*t) < 50_000_000)
            {
                continue;
            }
            if self.states_read.len() >= 4096 {
                self.states_read.clear();
            }
            self.states_read.insert(id, ts);
            let state = if id == 0 {
                let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") else {
                    continue;
                };
                crate::host::memstate::of_machine(&meminfo)
            } else {
                let Some(version) = self.memcg_version else {
                    continue;
                };
                let files = match self.memcg_files.entry(id) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let (Some(path), Some(root)) =
                            (self.session.memcgs().path(id), self.session.memcgs().root())
                        else {
                            continue;
                        };
                        let dir = root.join(path.trim_start_matches('/'));
                        let files = crate::host::memstate::MemcgFiles::open(&dir);
                        e.insert((ts, files))
                    }
                };
                files.0 = ts;
                let state = files.1.read(id, version);
                if files.1.failed {
                    self.memcg_files.remove(&id);
                } else if self.memcg_files.len() > MEMCG_FILES_KEPT
                    && let Some(oldest) = self
                        .memcg_files
                        .iter()
                        .min_by_key(|(_, (at, _))| *at)
                        .map(|(k, _)| *k)
                {
                    self.memcg_files.remove(&oldest);
                }
                state
            };
            let mut state_ev = userspace_event(0, [0; 16], Payload::MemcgState(state));
            state_ev.header.ts_ns = ts.saturating_sub(1);
            self.userspace(&state_ev)?;
        }
        Ok(())
    }

    /// Names the frames of an allocation stack (kallsyms) for the tracker and the renderer, and
    /// records each name once in the dump before the event (which keeps the raw addresses).
    fn name_frames(&mut self, p: &oomtrace_common::AllocStack) {
        let n = (p.frames as usize).min(p.ips.len());
        let new: Vec<u64> = p.ips[..n]
            .iter()
            .copied()
            .filter(|a| !self.named_addrs.contains(a))
            .collect();
        if new.is_empty() {
            return;
        }
        let names = self.kallsyms.resolve(&new);
        if let Some(problem) = self.kallsyms.problem.take() {
            eprintln!("oomtrace: warning: {problem}");
        }
        if self.named_addrs.len() + new.len() > 1 << 14 {
            self.named_addrs.clear();
            self.session.renderer().symbols.clear();
        }
        for (addr, name) in new.into_iter().zip(names) {
            // Unnamed ones are looked up again at the next stack (the table may still be read).
            let Some(name) = name else {
                continue;
            };
            self.named_addrs.insert(addr);
            self.session.name_symbol(addr, &name);
            self.record(Record::Symbol(addr, &name));
        }
    }

    /// The kernel's count of lost events, to the session, the dump and the output when it has
    /// grown.
    fn lost(&mut self, total: u64) -> anyhow::Result<()> {
        let Some(new) = self.session.lost(total) else {
            return Ok(());
        };
        self.session.memcgs().events_lost();
        self.record(Record::Lost(total));
        self.note(&Note::Lost { new, total });
        self.written()
    }

    /// Hands each finding the session admitted (found at `at_ns`) to every sink, the printer
    /// first (which reads the forensics the others are given); what they said about remedies,
    /// to be written after every finding.
    fn hand_findings(&mut self, found: &mut Vec<Finding>, at_ns: u64) -> Vec<Said> {
        let mut said = Vec::new();
        for f in found.drain(..) {
            if f.stuck().is_some() {
                self.flagged += 1;
            }
            let mut cx = FindingCx::new(&f, at_ns, &mut self.session);
            for sink in &mut self.sinks {
                sink.finding(&f, &mut cx);
            }
            said.append(&mut cx.said);
        }
        said
    }

    /// Puts back the journaled limits of victims that are gone (a start after a crash, and
    /// every sweep), and whatever else the sinks do periodically.
    fn settle(&mut self) -> anyhow::Result<()> {
        let said: Vec<Said> = self.sinks.iter_mut().flat_map(|s| s.sweep()).collect();
        self.say(said)
    }

    /// Lines about remedies, to every sink: the printer writes them, the metrics count them.
    fn say(&mut self, said: Vec<Said>) -> anyhow::Result<()> {
        for s in said {
            for sink in &mut self.sinks {
                sink.said(&s);
            }
        }
        self.written()
    }

    /// When the loop must next wake up with no event arriving: at a victim's deadline (or
    /// the end of the reorder window), when the dump is due a sync, every `POLL` while
    /// hooks run or the ring buffer must be polled, for a dead victim's release (which wakes
    /// nothing: see [`release_poll`]), and at the sweep
    /// (every `SWEEP_EVERY`).
    /// In CLOCK_MONOTONIC ns, the clock of the loop's timer (see ticker.rs).
    fn next_wake(&self) -> u64 {
        let now = tokio::time::Instant::now();
        let now_ns = monotonic_now();
        // An instant of the runtime's clock (CLOCK_MONOTONIC too) as that clock's ns.
        let ns = |at: tokio::time::Instant| {
            now_ns.saturating_add(at.saturating_duration_since(now).as_nanos() as u64)
        };
        // The tracker's deadlines are met by the first wake past them (see `watch`), else by
        // a tick up to `TICK_GRID_NS` later.
        let due = self
            .session
            .tracker()
            .next_tick_due()
            .map(|d| d.saturating_add(TICK_SLACK_NS));
        let hooks_running = self.sinks.iter().any(|s| s.busy());
        let poll = (self.poll_ring || hooks_running).then(|| ns(now + POLL));
        // A release is in the ring without having woken the loop (see the eBPF `wakeup`).
        let release = self
            .session
            .tracker()
            .release_awaited_since()
            .map(|dead| release_poll(dead, now_ns));
        let sync = self
            .sinks
            .iter()
            .filter_map(|s| s.wake_at(now))
            .min()
            .map(ns);
        // A death held for its parent's notification (see `undated`).
        let undated = self.undated.iter().map(|(_, until)| *until).min();
        // A sweep is due every SWEEP_EVERY (see sweep); it costs nothing per event, and when
        // nothing is tracked it is two map lookups.
        let sweep = ns((self.last_sweep + SWEEP_EVERY).max(now));
        [due, poll, sync, release, undated]
            .into_iter()
            .flatten()
            .fold(sweep, std::cmp::min)
    }

    /// Whether the tracker has a deadline (held events' end of window, a pairing window, a
    /// victim's timeout) at or before `now_ns`: what a tick would judge now. A wake that
    /// finds one passed does the tick's work itself (see `watch`).
    fn tick_due_by(&self, now_ns: u64) -> bool {
        self.session
            .tracker()
            .next_tick_due()
            .is_some_and(|due| due <= now_ns)
    }

    /// Removes processes that no longer exist from the in-kernel filter (their release was seen
    /// by the kernel but not applied to it: see `USER_UNTRACKED` in the eBPF crate), and tells
    /// the tracker of those it follows that they are released (a `task_free` observed by
    /// userspace): otherwise a victim whose release event was lost stays "not released".
    fn sweep(&mut self, probes: &mut Probes) -> anyhow::Result<()> {
        self.settle()?;
        // Memcgs removed since: their entries move to the bounded set of removed ones, and the
        // tracker forgets what it keeps of them a minute later.
        let now_ns = monotonic_now();
        for (id, path) in self.session.memcgs().sweep() {
            self.recorded_memcgs.remove(&id);
            self.memcg_files.remove(&id);
            self.session
                .tracker_mut()
                .memcg_removed(id, path.as_deref(), now_ns);
        }
        // A read at a kill stands for the kills of the next 50 ms only.
        self.states_read
            .retain(|_, at| now_ns.saturating_sub(*at) < 1_000_000_000);
        let proc_root = Path::new("/proc");
        let gone_before = std::mem::take(&mut self.tracked_gone);
        let gone_now = &mut self.tracked_gone;
        let swept = match probes.tracked_count() {
            Ok(0) => Ok(Vec::new()),
            _ => probes.sweep_tracked(|pid| {
                let gone = !proc_root.join(pid.to_string()).exists();
                stale_tracked(pid, gone, &gone_before, gone_now)
            }),
        };
        let removed = match swept {
            Ok(r) => r,
            Err(e) => {
                eprintln!("oomtrace: sweeping the kernel's tracked set failed: {e:#}");
                return Ok(());
            }
        };
        // Dead victims whose process is gone from /proc were released, whether or not the
        // kernel's release event reached us.
        let mut released = removed;
        released.extend(
            self.session
                .tracker()
                .dead_unreleased()
                .into_iter()
                .filter(|pid| !proc_root.join(pid.to_string()).exists()),
        );
        released.sort_unstable();
        released.dedup();
        for pid in released {
            if self.session.tracker().follows(pid) {
                let free = oomtrace_common::TaskFree {
                    pid,
                    _pad: 0,
                    start_ns: 0,
                };
                self.userspace(&userspace_event(pid, [0; 16], Payload::TaskFree(free)))?;
            }
        }
        Ok(())
    }

    /// Flushes what the sinks write (the dump, which also syncs now and then with the summary
    /// so far).
    fn sync_dump(&mut self) {
        let tracker = self.session.tracker();
        let summary = || json!(tracker.summary());
        for sink in &mut self.sinks {
            sink.sync(&summary);
        }
    }

    /// Whatever is due: events not yet woken for, lost-event counts, the sweep, the dump's
    /// sync, timeouts, hooks. `timer`: the loop's timer fired for it (else a wake for
    /// something else found a deadline passed).
    fn on_tick(
        &mut self,
        probes: &mut Probes,
        ring: &mut RingBuf<MapData>,
        deaths: &mut DeathWatch,
        timer: bool,
    ) -> anyhow::Result<()> {
        drain(ring, self, deaths)?;
        if deaths.lazy() {
            self.read_deaths(ring, deaths)?;
        }
        let sweep_due = self.last_sweep.elapsed() >= SWEEP_EVERY;
        // Events are lost only when the ring was full (see ring_fill.rs); the counter is read
        // when it may have been, and at the sweep (a reservation the kernel refused for
        // another reason, rare, is said within `SWEEP_EVERY`).
        if self.lost_unchecked
            && (sweep_due || self.ring_fill.as_ref().is_none_or(|r| r.may_have_lost()))
        {
            self.lost_unchecked = false;
            if let Some(r) = &mut self.ring_fill {
                r.counted();
            }
            self.lost(probes.lost_events()?)?;
        }
        if sweep_due {
            self.last_sweep = tokio::time::Instant::now();
            self.sweep(probes)?;
        }
        // The dump is flushed where stdout is (see `judge`): not at every wake that meets a
        // deadline (a `write` each, a compressed frame's end with --compress).
        let flush = timer || monotonic_now().saturating_sub(self.last_flush) >= TICK_GRID_NS;
        if flush {
            self.sync_dump();
        }
        let now = monotonic_now();
        // Every kernel record stamped before this tick was read (or lost) before it: a
        // replay judges time here, as the tick below does.
        self.record(Record::Drained(now));
        self.judge(now, flush)
    }

    /// Time passes: the session flags victims past their timeout, the sinks get the findings
    /// and, if `flush`, their wake (stdout flushed). A tick of the loop's timer flushes; a
    /// wake that met a deadline of its own accord only a grid step after the last flush (in
    /// an OOM storm those wakes come every few ms, and a `write` is 10-15 us): what it leaves
    /// goes out at the next tick, the next such wake, or before the loop parks with no tick
    /// soon ([`Runner::flush_unless_tick_soon`]): a few tens of ms at most.
    fn judge(&mut self, now_ns: u64, flush: bool) -> anyhow::Result<()> {
        let mut found = std::mem::take(&mut self.found);
        self.session.tick(now_ns, &mut found);
        let said = self.hand_findings(&mut found, now_ns);
        self.found = found;
        self.say(said)?;
        if flush {
            self.tick_sinks();
        }
        self.written()
    }

    /// The metrics page now, told how many processes the kernel side tracks.
    fn metrics_body(&mut self, tracked: Option<u64>) -> String {
        let summary = self.session.tracker().summary();
        // Everything kept per memcg id: names (live, removed, of creations) and the tracker's.
        let memcgs = self.session.memcgs().entries() + self.session.tracker().memcg_entries();
        let held = Held {
            kernel_tracked: tracked,
            victims: self.session.tracker().len() as u64,
            memcgs: memcgs as u64,
        };
        self.sinks
            .iter_mut()
            .find_map(|s| s.page(held, &summary))
            .unwrap_or_default()
    }

    /// The end of a wake: the next wake's findings check their memcgs anew.
    fn wake_done(&mut self) {
        self.session.memcgs().next_wake();
    }

    /// The victims' deaths their pidfds show now, tracked (the kernel events up to now read
    /// first). The kernel wakes a pidfd's waiters just before it notifies the parent, so a
    /// death seen this way is held for one more read of the ring, where that notification
    /// dates it (see `raw_event`); else it keeps the time it was seen.
    fn read_deaths(
        &mut self,
        ring: &mut RingBuf<MapData>,
        deaths: &mut DeathWatch,
    ) -> anyhow::Result<()> {
        for ev in deaths.ready(Path::new("/proc")) {
            match ev.payload {
                Payload::GroupExited(g)
                    if g.start_ns != 0 && matches!(g.how, exit_seen::PIDFD | exit_seen::GONE) =>
                {
                    self.hold_undated(ev);
                }
                _ => self.userspace(&ev)?,
            }
        }
        if self.undated.is_empty() {
            return Ok(());
        }
        drain(ring, self, deaths)
    }

    /// Holds a death for its parent's notification (see `undated`): at most [`UNDATED_HOLD_NS`],
    /// the loop waking for it then if nothing else comes.
    fn hold_undated(&mut self, ev: Event) {
        self.undated
            .push((ev, monotonic_now().saturating_add(UNDATED_HOLD_NS)));
    }

    /// Deaths held past their time (all of them if `all`), tracked with the time they were
    /// first seen: no notification of their parent came (it ignores SIGCHLD, the exit signal
    /// is 0, or the hook is not attached).
    fn flush_undated(&mut self, all: bool) -> anyhow::Result<()> {
        if self.undated.is_empty() {
            return Ok(());
        }
        let now = monotonic_now();
        let (due, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.undated)
            .into_iter()
            .partition(|(_, until)| all || *until <= now);
        self.undated = held;
        for (ev, _) in due {
            self.userspace(&ev)?;
        }
        Ok(())
    }

    /// Before the loop parks until `wake`: what the sinks wrote since the last tick goes out
    /// now unless a tick (which flushes) comes within [`FLUSH_WITHIN_NS`]. In an OOM storm a
    /// tick is due every few ms, and the lines of several wakes (a kill's findings, 6 KB and
    /// more each in JSON) go out in one `write` of the 64 KiB stdout buffer.
    fn flush_unless_tick_soon(&mut self, wake: u64) -> anyhow::Result<()> {
        if wake > monotonic_now().saturating_add(FLUSH_WITHIN_NS) {
            self.tick_sinks();
            self.written()?;
        }
        Ok(())
    }

    fn tick_sinks(&mut self) {
        self.last_flush = monotonic_now();
        for sink in &mut self.sinks {
            sink.tick();
        }
    }
}

/// Sets up every memcg's OOM notifications; says what it covers or why not.
fn start_memcg_watch(probes: &Probes) -> (Option<MemcgWatch>, WatchInfo, Vec<memcg_watch::Notice>) {
    let mut info = WatchInfo::default();
    let Some(root) = probes
        .env
        .memory_controller
        .as_ref()
        .map(|m| m.mount.clone())
    else {
        info.error = Some("no memory controller".into());
        return (None, info, Vec::new());
    };
    let t = std::time::Instant::now();
    match MemcgWatch::new(&root) {
        Ok((w, first)) => {
            info.start_ms = t.elapsed().as_secs_f64() * 1e3;
            info.version = Some(w.version());
            info.memcgs = w.len();
            info.problems = w.problems.clone();
            (Some(w), info, first)
        }
        Err(e) => {
            info.error = Some(format!(
                "creating the inotify/epoll descriptors for {} failed: {e}",
                root.display()
            ));
            (None, info, Vec::new())
        }
    }
}

/// Runs until SIGINT/SIGTERM or `duration`.
pub async fn run(probes: &mut Probes, opts: &LiveOptions) -> anyhow::Result<Outcome> {
    // Every memcg's OOM notifications, set up while all privileges are held (registering a
    // v1 eventfd writes cgroup.event_control).
    let (watcher, info, first) = start_memcg_watch(probes);
    let (mut runner, endpoint) = start(probes, opts, &info).await?;
    runner.kill_sockets = probes.take_kill_sockets();
    // Held for the run: the kernel counts program run time only while it is open.
    let _stats = if opts.bpf_stats {
        Some(
            aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .context("enabling BPF run-time stats")?,
        )
    } else {
        None
    };
    let deaths = DeathWatch::new().context("creating the epoll set for victims' pidfds")?;
    // SAFETY: the DeathWatch owns its epoll fd for as long as the AsyncFd lives.
    let mut deaths = unsafe { AsyncFd::register_with_interest(deaths, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("registering the pidfd epoll set with the runtime")?;
    // What happened before we came: killed processes that never finished exiting.
    let memcg_root = runner.session.live().and_then(|l| l.memcg_root.clone());
    for c in scan::scan(
        Path::new("/proc"),
        memcg_root.as_deref(),
        std::process::id(),
    ) {
        runner.pre_existing(&c, deaths.get_mut())?;
    }
    // Hangs already there (v1 OOM killer disabled and under OOM).
    if info.watching() {
        runner.session.tracker_mut().memcg_notifications_watched();
    }
    runner.memcg_notices(first)?;
    // Flushed: the printer's output so far.
    runner.tick_sinks();
    runner.written()?;
    let memcgs = watcher.map(notices::Notices::new).transpose()?;
    let (ring, ring_size) = probes.take_ring()?;
    runner.ring_fill = ring_size.and_then(|size| {
        ring_fill::RingFill::new(std::os::fd::AsFd::as_fd(&ring), u64::from(size)).ok()
    });
    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("registering the ring buffer with the runtime")?;
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    runner.loop_stats = loop_stats::LoopStats::new(opts.loop_stats);
    watch(
        &mut runner,
        probes,
        &mut ring,
        &mut deaths,
        memcgs,
        endpoint,
        deadline,
    )
    .await?;
    drain(ring.get_mut(), &mut runner, deaths.get_mut())?;
    runner.read_deaths(ring.get_mut(), deaths.get_mut())?;
    runner.flush_undated(true)?;
    if let Some(v) = runner.loop_stats.json() {
        runner.note(&Note::Stats(&v));
    }
    finish(runner, probes, opts.bpf_stats)
}

/// The sinks of the watch, in the order each finding reaches them: the printer of `--format`
/// (which wrote the banner) writes it (with the forensics it reads), the metrics count it, the hook is run with
/// the forensics the printer showed, then --unstick takes them for its remedy; the dump
/// (`--record`) takes the records.
fn register(
    probes: &Probes,
    opts: &LiveOptions,
    printer: Box<dyn printer::Printer>,
    death: bool,
    memcgs: &WatchInfo,
    journal: Option<crate::host::journal::Journal>,
    dump: Option<dump::Writer>,
) -> Vec<Box<dyn Sink>> {
    let mut sinks: Vec<Box<dyn Sink>> = vec![printer];
    if opts.metrics.is_some() {
        sinks.push(Box::new(metrics_for(probes, death, memcgs)));
    }
    if let Some(p) = &opts.on_stuck {
        sinks.push(Box::new(Hooks::new(p.clone(), opts.hook_timeout)));
    }
    if opts.unstick {
        sinks.push(Box::new(remedy::Remedies::new(
            opts.unstick_policy,
            opts.unstick_pre_existing,
            journal,
        )));
    }
    if let (Some(d), Some(path)) = (dump, &opts.record) {
        sinks.push(Box::new(recorder::Recorder::new(d, path.clone())));
    }
    sinks
}

/// `--record PATH`: the dump, its header written.
fn create_dump(
    path: &Path,
    probes: &Probes,
    opts: &LiveOptions,
    page_kb: u64,
    clock: &Clock,
    death: &Result<(), String>,
) -> anyhow::Result<dump::Writer> {
    let h = dump_header(probes, opts, page_kb, clock, death);
    dump::Writer::create(path, opts.compress, &h.to_value())
        .with_context(|| format!("creating the dump {}", path.display()))
}

/// Before the watch: the session, the dump and the metrics endpoint created, privileges
/// dropped, the banner (or plan line) printed.
async fn start(
    probes: &Probes,
    opts: &LiveOptions,
    memcgs: &WatchInfo,
) -> anyhow::Result<(Runner, Option<metrics::Endpoint>)> {
    anyhow::ensure!(
        Observability::of_plan(&probes.plan, true).sees_kills(),
        "none of the hooks that see a kill (oom:mark_victim, signal_generate, oom_kill_process) \
         attached on this kernel: oomtrace would watch nothing. `oomtrace check` says why for \
         each hook"
    );
    let memcg_mount = probes
        .env
        .memory_controller
        .as_ref()
        .map(|m| m.mount.clone());
    for w in filter_warnings(&opts.filter, memcg_mount.as_deref(), Path::new("/proc")) {
        eprintln!("oomtrace: warning: {w}");
    }
    let death = deathwatch::available();
    let (mut session, clock, page_kb) = new_session(probes, opts, &death);
    let dump = match &opts.record {
        Some(path) => Some(create_dump(path, probes, opts, page_kb, &clock, &death)?),
        None => None,
    };
    let endpoint = match opts.metrics {
        Some(addr) => Some(
            metrics::Endpoint::bind(addr)
                .await
                .with_context(|| format!("binding the metrics endpoint to {addr}"))?,
        ),
        None => None,
    };
    let metrics_addr = endpoint.as_ref().and_then(metrics::Endpoint::local_addr);
    // The journal of raised limits (created before the privileges go).
    let (journal, journal_said) = remedy::open_journal(opts.unstick);
    // Read by its own thread through this descriptor: the kernel shows addresses to whoever
    // opened it with CAP_SYSLOG, which goes next.
    let kallsyms = crate::kernel::kallsyms::Kallsyms::open();
    // Everything that needs root's full power is done: attached, mapped, created, bound.
    let mut header = plan_line(
        probes,
        opts,
        &death,
        drop_privileges(opts.unstick),
        metrics_addr,
        memcgs,
    );
    header["memcg_names"] = session.memcgs().method().into();
    let keep_going = opts.record.is_some() || opts.metrics.is_some() || opts.on_stuck.is_some();
    let mut printer = printer::printer(opts.format, Stdout::new(keep_going));
    printer.banner(&banner(&header, probes, opts, &death, metrics_addr, memcgs));
    printer.tick();
    if let Some(e) = printer.failed() {
        return Err(e.into());
    }
    let sinks = register(probes, opts, printer, death.is_ok(), memcgs, journal, dump);
    let mut runner = Runner::new(session, sinks, kallsyms);
    runner.memcg_version = probes.env.memory_controller.as_ref().map(|m| m.version);
    runner.poll_ring = probes.layout.config.trace_all_exits != 0;
    // Kernel symbols for allocation stacks, read by a thread of its own from now on: after
    // the plan line (attaching is not slowed: read alongside, it took launch → attached from
    // 0.46–0.86 s to 1.3–2.0 s in a debug build on this busy host).
    runner.kallsyms.start();
    let said = journal_said
        .into_iter()
        .map(|text| Said {
            tgid: 0,
            result: "restored",
            text,
            wait_kind: None,
        })
        .collect();
    runner.say(said)?;
    // Limits a previous run raised for victims that died meanwhile go back now.
    runner.settle()?;
    Ok((runner, endpoint))
}

/// The watch: kernel events, victims' deaths, ticks and scrapes, until a signal, the end of
/// `--duration`, or a dump that can no longer be written.
async fn watch(
    runner: &mut Runner,
    probes: &mut Probes,
    ring: &mut AsyncFd<RingBuf<MapData>>,
    deaths: &mut AsyncFd<DeathWatch>,
    mut memcgs: Option<notices::Notices>,
    mut endpoint: Option<metrics::Endpoint>,
    deadline: Option<tokio::time::Instant>,
) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let until = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    let ticker = ticker::Ticker::new().context("creating the loop's timer (timerfd)")?;
    // SAFETY: the Ticker owns its timerfd for as long as the AsyncFd lives.
    let mut ticker = unsafe { AsyncFd::register_with_interest(ticker, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("registering the loop's timer with the runtime")?;
    let mut mark = runner.loop_stats.mark();
    while runner.stopped().is_none() {
        arm_next_wake(
            runner,
            memcgs.as_ref(),
            deaths.get_ref().lazy(),
            ticker.get_mut(),
        )?;
        mark = runner.loop_stats.add(Part::Prepare, mark);
        let memcg_ready = async {
            match memcgs.as_mut().and_then(notices::Notices::awaited) {
                Some(m) => m.readable_mut().await.map(|mut g| {
                    g.clear_ready();
                }),
                None => std::future::pending().await,
            }
        };
        let mut part = Part::Other;
        tokio::select! {
            ready = memcg_ready => {
                (part, mark) = (Part::MemcgNotices, runner.loop_stats.add(Part::WaitReady, mark));
                ready.context("waiting for memcg notifications")?;
                // Read below, after the kernel events up to now.
            }
            guard = ring.readable_mut() => {
                (part, mark) = (Part::KernelEvents, runner.loop_stats.add(Part::WaitReady, mark));
                let mut guard = guard.context("waiting for the ring buffer")?;
                drain(guard.get_inner_mut(), runner, deaths.get_mut())?;
                guard.clear_ready();
            }
            guard = deaths.readable_mut() => {
                (part, mark) = (Part::Deaths, runner.loop_stats.add(Part::WaitReady, mark));
                let mut guard = guard.context("waiting for victims' pidfds")?;
                // Kernel events up to now first: the death comes after them.
                drain(ring.get_mut(), runner, guard.get_inner_mut())?;
                runner.read_deaths(ring.get_mut(), guard.get_inner_mut())?;
                guard.clear_ready();
            }
            guard = ticker.readable_mut() => {
                (part, mark) = (Part::Tick, runner.loop_stats.add(Part::WaitReady, mark));
                let mut guard = guard.context("waiting for the loop's timer")?;
                let fired = guard.get_inner_mut().expired();
                guard.clear_ready();
                if fired {
                    if let Some(m) = memcgs.as_mut().filter(|m| m.watch().needs_poll()) {
                        let notices = m.watch_mut().poll_states();
                        runner.memcg_notices(notices)?;
                    }
                    runner.on_tick(probes, ring.get_mut(), deaths.get_mut(), true)?;
                }
            }
            conn = metrics::Endpoint::next(endpoint.as_ref()) => {
                mark = runner.loop_stats.add(Part::WaitReady, mark);
                if let Some(e) = &mut endpoint {
                    e.answer(conn, || runner.metrics_body(probes.tracked_count().ok()));
                }
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            () = &mut until => break,
        }
        end_of_turn(
            part,
            runner,
            probes,
            ring.get_mut(),
            deaths.get_mut(),
            memcgs.as_mut(),
        )?;
        mark = runner.loop_stats.add(part, mark);
    }
    Ok(())
}

/// Before the loop waits: when it must wake with nothing arriving ([`Runner::next_wake`]; also
/// to poll a v1 memcg under OOM, and to read memcg notifications that come in a stream), stdout
/// flushed unless a tick is near, the loop's timer armed for it.
fn arm_next_wake(
    runner: &mut Runner,
    memcgs: Option<&notices::Notices>,
    deaths_lazy: bool,
    ticker: &mut ticker::Ticker,
) -> anyhow::Result<()> {
    let mut wake = runner.next_wake();
    let now = monotonic_now();
    if memcgs.is_some_and(|m| m.watch().needs_poll()) {
        wake = wake.min(now + MEMCG_POLL.as_nanos() as u64);
    }
    if let Some(by) = memcgs.and_then(|m| m.wake_by(now)) {
        wake = wake.min(on_grid(by));
    }
    // Deaths read lazily, at least this often: one its parent was not told of is dated then.
    if deaths_lazy {
        wake = wake.min(on_grid(now.saturating_add(notices::LAZY_POLL_NS)));
    }
    runner.flush_unless_tick_soon(wake)?;
    ticker
        .arm(wake)
        .context("arming the loop's timer (timerfd_settime)")
}

/// The end of a turn of the loop that woke for `part`. Memcg notifications are read when
/// awaited and ready, or at the end of every turn while they come in a stream (see
/// notices.rs), the kernel events up to now first. Then a deadline this wake has passed is met
/// now, not by a tick of its own up to a grid step later: in an OOM storm a wake-up costs more
/// than the tick's work, and the wakes for kills, deaths and memcg notifications come every few
/// ms.
fn end_of_turn(
    part: Part,
    runner: &mut Runner,
    probes: &mut Probes,
    ring: &mut RingBuf<MapData>,
    deaths: &mut DeathWatch,
    memcgs: Option<&mut notices::Notices>,
) -> anyhow::Result<()> {
    if let Some(m) = memcgs
        && (part == Part::MemcgNotices || m.lazy())
    {
        drain(ring, runner, deaths)?;
        let notices = m.read(monotonic_now())?;
        runner.memcg_notices(notices)?;
    }
    if deaths.lazy() && part != Part::Deaths {
        drain(ring, runner, deaths)?;
        runner.read_deaths(ring, deaths)?;
    }
    // Deaths in a stream are read at the loop's other wake-ups from now on, not awaited; a
    // quiet spell makes them awaited again (see `notices::Pacing`).
    let died = deaths.take_died() > 0;
    deaths.set_lazy(runner.death_pacing.read(monotonic_now(), died));
    if matches!(part, Part::MemcgNotices | Part::KernelEvents | Part::Deaths)
        && runner.tick_due_by(monotonic_now())
    {
        runner.on_tick(probes, ring, deaths, false)?;
    }
    runner.wake_done();
    Ok(())
}

/// After the watch: the final judgement and summary, the programs' run times if asked, hooks
/// given their grace, the dump closed with its summary.
fn finish(mut runner: Runner, probes: &Probes, bpf_stats: bool) -> anyhow::Result<Outcome> {
    runner.lost(probes.lost_events()?)?;
    let end = monotonic_now();
    let mut found = std::mem::take(&mut runner.found);
    let summary = runner.session.finish(end, &mut found);
    // Remedies taken for the last findings are said after the summary.
    let said = runner.hand_findings(&mut found, end);
    for (memcg_path, kernel, mine) in runner.session.reconcile() {
        runner.note(&Note::Reconcile {
            memcg_path: &memcg_path,
            kernel,
            mine,
        });
    }
    runner.note(&Note::Summary(&summary));
    if bpf_stats {
        let programs: Vec<Value> = probes
            .program_stats()
            .into_iter()
            .map(|(program, attach, count, ns)| {
                json!({"program": program, "attach": attach, "run_count": count, "run_time_ns": ns,
                       "avg_ns": ns.checked_div(count).unwrap_or(0)})
            })
            .collect();
        runner.note(&Note::Stats(
            &json!({"type": "bpf_stats", "programs": programs}),
        ));
    }
    runner.say(said)?;
    for sink in &mut runner.sinks {
        sink.close(&summary, end)?;
    }
    if let Some(e) = runner.stopped() {
        anyhow::bail!(e);
    }
    Ok(Outcome {
        flagged: runner.flagged,
    })
}

/// What is wrong with `--memcg` / `--pid` now: a filter that matches nothing is a silent
/// no-op unless said (a typo, a path from the wrong cgroup hierarchy, a pid already gone).
fn filter_warnings(filter: &Filter, memcg_mount: Option<&Path>, proc_root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(want) = &filter.memcg {
        match memcg_mount {
            None => out.push(format!(
                "--memcg {want}: this host has no memory controller, so no memcg can match"
            )),
            Some(root) if !root.join(want.trim_start_matches('/')).is_dir() => out.push(format!(
                "--memcg {want}: no such memcg under {} now (give a path as in /proc/PID/cgroup, \
                 e.g. /system.slice/foo.service); it is reported if it appears",
                root.display()
            )),
            Some(_) => {}
        }
    }
    if let Some(pid) = filter.pid
        && !proc_root.join(pid.to_string()).exists()
    {
        out.push(format!(
            "--pid {pid}: no such process now; nothing will match"
        ));
    }
    out
}

/// The live loop's stdout buffer: the lines of a tick and the wakes before it go out in one
/// `write` (see [`Stdout`]).
const STDOUT_BUFFER: usize = 1 << 16;
/// How long a death seen without its parent's notification waits for it (see
/// `Runner::undated`). The kernel wakes a pidfd's waiters a few microseconds before it sends
/// the parent the exit signal, and a reader woken at once can get there first (often under
/// emulation, where a guest's CPUs take turns on one host thread). Under the tracker's reorder
/// window (10 ms), so that a held death is applied before the instant it judges passes it.
const UNDATED_HOLD_NS: u64 = 5_000_000;

/// A line written waits at most this long for the tick that flushes it (see
/// [`Runner::flush_unless_tick_soon`]).
const FLUSH_WITHIN_NS: u64 = 20_000_000;

/// oomtrace's stdout in the live loop. When its reader goes away (`oomtrace record -o F |
/// head`), the run goes on if it serves something else — the dump, the metrics, the hook — and
/// the rest of the output is discarded, said once on stderr; otherwise the broken pipe ends it.
struct Stdout {
    inner: std::io::BufWriter<std::io::Stdout>,
    keep_going: bool,
    closed: bool,
}

impl Stdout {
    fn new(keep_going: bool) -> Stdout {
        Stdout {
            // Large enough for the findings of several wakes (a kill's `killed` line alone
            // is ~6 KB in JSON): the loop flushes at its ticks, or before it parks with no
            // tick soon ([`Runner::flush_unless_tick_soon`]).
            inner: std::io::BufWriter::with_capacity(STDOUT_BUFFER, std::io::stdout()),
            keep_going,
            closed: false,
        }
    }

    fn absorb<T>(&mut self, r: std::io::Result<T>, ok: T) -> std::io::Result<T> {
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe && self.keep_going => {
                if !self.closed {
                    self.closed = true;
                    eprintln!(
                        "oomtrace: stdout was closed; going on (recording, metrics, hooks) \
                         without printing"
                    );
                }
                Ok(ok)
            }
            r => r,
        }
    }
}

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        let r = self.inner.write(buf);
        self.absorb(r, buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = self.inner.flush();
        self.absorb(r, ())
    }
}

/// Reads every event in the ring buffer (all of it per wake-up: the kernel wakes the reader
/// only once it has caught up).
fn drain(
    ring: &mut RingBuf<MapData>,
    runner: &mut Runner,
    deaths: &mut DeathWatch,
) -> anyhow::Result<()> {
    while let Some(item) = ring.next() {
        runner.lost_unchecked = true;
        runner.raw_event(&item, deaths)?;
    }
    // Not dated by a notification in the ring within their time: as first seen.
    runner.flush_undated(false)
}

/// A kill's record was not asked for in one call: the caller looks it up and removes it.
struct NotInOneCall;

/// `tgid`'s record taken out of the kill sockets map in one `BPF_MAP_LOOKUP_AND_DELETE_ELEM`
/// (hash maps since 5.14; before, `ENOTSUPP`/`EINVAL`) instead of a lookup and a delete:
/// one `bpf` call per kill fewer; `Ok(None)`: no record. `one_call` false, or any other
/// failure than "no such record": [`NotInOneCall`].
fn take_kill_record(
    map: &crate::kernel::probes::KillSocketsMap,
    tgid: u32,
    one_call: bool,
) -> Result<Option<oomtrace_common::KillSockets>, NotInOneCall> {
    use std::os::fd::{AsFd as _, AsRawFd as _};

    use aya::maps::IterableMap as _;

    /// The `bpf_attr` of the map element commands.
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
    if !one_call {
        return Err(NotInOneCall);
    }
    let mut value = std::mem::MaybeUninit::<oomtrace_common::KillSockets>::zeroed();
    let attr = ElemAttr {
        map_fd: map.map().fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: &tgid as *const u32 as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: the attr names a hash map of u32 keys and `KillSockets` values, whose key and
    // value buffers live across the call; the kernel writes at most the value's size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_AND_DELETE_ELEM,
            &attr as *const ElemAttr,
            std::mem::size_of::<ElemAttr>() as u32,
        )
    };
    if r == 0 {
        // SAFETY: the kernel filled the value (a plain-old-data record).
        return Ok(Some(unsafe { value.assume_init() }));
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOENT) => Ok(None),
        _ => Err(NotInOneCall),
    }
}

/// When to look for the release of a victim dead since `dead_ns` (its record does not wake the
/// loop): [`RELEASE_WAIT_NS`] after its death, then at least [`POLL`] apart and half as long
/// again as it has been awaited. A release's time is its record's, so reading it later only
/// delays its line; a release that never comes (a victim the kernel did not track, one reaped
/// before its kill was read) costs a few wakes until the sweep finds it gone from /proc, not
/// one every `POLL` (33 in the 2 s an idle host waited for one).
fn release_poll(dead_ns: u64, now_ns: u64) -> u64 {
    match dead_ns.saturating_add(RELEASE_WAIT_NS) {
        first if first > now_ns => on_grid(first),
        _ => {
            let since = now_ns.saturating_sub(dead_ns);
            on_grid(now_ns.saturating_add((POLL.as_nanos() as u64).max(since / 2)))
        }
    }
}

/// Whether process `pid` of the kernel's tracked set, `gone` from /proc now, is taken out of
/// the set by the sweep: only when it was gone at the sweep before too (`gone_before`; those
/// gone now are noted in `gone_now`). A process is gone from /proc once reaped, and the kernel
/// reports its release from an RCU callback milliseconds later, if it is still tracked then:
/// taken out at once, a victim reaped just before a sweep lost its release event, and was
/// said released by userspace up to a sweep (2 s) late. What the sweep is for, an entry whose
/// release the kernel could not apply, waits one sweep more.
fn stale_tracked(
    pid: u32,
    gone: bool,
    gone_before: &std::collections::HashSet<u32>,
    gone_now: &mut std::collections::HashSet<u32>,
) -> bool {
    if !gone {
        return false;
    }
    gone_now.insert(pid);
    gone_before.contains(&pid)
}

/// `due_ns` rounded up to the next multiple of [`TICK_GRID_NS`].
fn on_grid(due_ns: u64) -> u64 {
    due_ns.div_ceil(TICK_GRID_NS).saturating_mul(TICK_GRID_NS)
}

/// Completes, per kind, what the kernel leaves to userspace before anything reads the event
/// (returns whether it changed anything):
/// - the classic tracepoints name the thread the kernel marked or signalled, not its process:
///   the process (tgid) is filled in from /proc while the thread still exists, so that the
///   tracker (and a replay of the dump) follow the process;
/// - the kernel addresses an event carries (mm identities) are replaced by a keyed hash: equal
///   addresses stay equal within the run, and no address reaches a dump (which may be attached
///   to a public bug report) or the output.
fn complete_in_userspace(ev: &mut Event, key: &std::collections::hash_map::RandomState) -> bool {
    use std::hash::BuildHasher as _;

    let hide = |addr: &mut u64| {
        if *addr == 0 {
            return false;
        }
        *addr = key.hash_one(*addr) | 1;
        true
    };
    let c = ev.completion();
    let filled = c.tgid.is_some_and(|m| {
        tgid_of(m.tid).is_some_and(|t| {
            *m.tgid = t;
            if let Some((flags, bit)) = m.from_proc {
                *flags |= bit;
            }
            true
        })
    });
    c.address.is_some_and(hide) || filled
}

#[cfg(test)]
mod tests;
