//! The victim lifecycle tracker: pure correlation of kernel events into victims, stages,
//! latencies and findings. No aya, no I/O, no clock: time comes from event timestamps and from
//! [`Tracker::tick`]. Unit tests drive it with synthetic events; `watch` and `report` feed it the
//! same way.
//!
//! A victim is a process named by (tgid, start time) — pids are reused. Its life: chosen
//! (`oom_kill_process`) → SIGKILL (comes ~4 µs *before* mark_victim) → marked → reaper woken
//! (+2 s, only if still alive) → reaping started/finished/skipped → threads entering exit
//! (`sched_process_exit`) → **dead** → **released** (the zombie reaped by its parent).
//!
//! Dead means *finished exiting*: every thread has passed `exit_notify`, so the mm is dropped
//! and the files (sockets, ports) are closed. `sched_process_exit` is not that: it fires at
//! the start of `do_exit`, before `exit_files` on every kernel and before `exit_mm` since 6.16,
//! so a victim blocked closing a file (a FUSE or NFS flush, a socket close that needs memory)
//! has passed it and still holds everything. Death comes from [`Payload::GroupExited`], which
//! userspace observes through a pidfd per victim (readable exactly when the thread group has
//! exited), or from the leader's release. Dumps recorded before this rule
//! ([`TrackerConfig::death_at_last_exit`]) are judged the old way, and say so.
//!
//! A victim not dead within the timeout is flagged once as stuck; missing events never make a
//! victim "stuck": when death cannot be seen it is "unobservable", when events were lost it is
//! "unconfirmed". Processes already killed and stuck when oomtrace starts
//! ([`Payload::PreExisting`]) are flagged after a short grace, marked pre-existing.

use std::{cell::RefCell, collections::BTreeMap, sync::Arc};

// The tracker's maps are keyed by pids and memcg ids and looked up for every event: foldhash
// (randomly seeded per process) instead of SipHash, which was ~4 % of a replay.
use foldhash::{HashMap, HashMapExt, HashSet};
use hdrhistogram::Histogram;
use oomtrace_common::{
    USERSPACE_CPU, group_dead_source, sender_state, si_code, target_state, victim_fields,
};

use crate::{
    comm::Comm,
    event::{Event, Payload, cstr},
};

mod config;
mod deadlines;
mod finding;
mod forget;
mod incident;
mod summary;
mod victim;

pub use config::{Filter, Observability, TrackerConfig, kernel_version};
pub use finding::{Finding, MemcgTask};
pub use incident::Incident;
pub(crate) use summary::Summary;
use summary::{histogram, percentiles, record_ns};
pub(crate) use victim::{
    AllocStackInfo, Candidate, Candidates, KillDecision, MemcgAt, Sender, SenderKind, Stage, Task,
    Victim, VictimKey,
};

/// Default stuck timeout. The kernel's own timeline for a memcg OOM victim: it normally dies
/// within milliseconds; if not, the oom_reaper wakes at +2 s (`OOM_REAPER_DELAY`, since 5.18)
/// and either reaps it or gives up after 10 attempts 100 ms apart (~+3.1 s). A victim still
/// alive at +5 s is past everything the kernel itself will still do for it, with margin for a
/// large process whose exit takes a while to unmap its memory.
pub const DEFAULT_TIMEOUT_NS: u64 = 5_000_000_000;
/// Default time a dead victim's zombie may wait for its parent before that is reported
/// (init reaps orphans with a delay: ~1.6 s seen on a test host).
pub const DEFAULT_RELEASE_TIMEOUT_NS: u64 = 10_000_000_000;
/// OOM invocations in a memcg while one of its victims is stuck before a livelock is reported.
pub(crate) const DEFAULT_LIVELOCK_THRESHOLD: u32 = 10;
/// True returns without a kill, after a victim of the domain is found stuck, before the
/// kernel's verdict reads "aborted, waiting on it": a pending victim makes every invocation
/// abort, while the other causes give one or two per charge — a margin freed meanwhile (memory
/// freed, a limit raised: the charge then succeeds) or the allocating task itself dying
/// (`task_is_dying`: SIGKILLed by anyone, then the charge fails). Seen in a guest (6.1): raising
/// the limit of a nothing-killable domain and ending its -1000 task while watched made a
/// livelock blame a victim the kernel had already skipped.
pub(crate) const MIN_ABORTED_VERDICTS: u32 = 3;
/// Events are held this long and released in timestamp order (events from different CPUs can
/// reach the ring buffer slightly out of order).
pub(crate) const REORDER_NS: u64 = 10_000_000;
/// How long a kernel SIGKILL waits for the mark_victim that names it an OOM kill, and how soon
/// after a mark the same task's SIGKILLs count as kills of processes sharing the victim's mm
/// (both happen in one `__oom_kill_process()` call).
///
/// In the kernel the three are consecutive statements of one function: microseconds apart on
/// hardware, but 6–7 ms have been seen under software emulation (QEMU/TCG), so the window is
/// generous; co-victims are told apart by their mm where the kernel gives it, else by whether the
/// sender was inside its own exit (see `on_sigkill`), not by time.
const SIGKILL_PAIRING_NS: u64 = 50_000_000;
/// How long after `oom_kill_process()` chose a victim the same task's SIGKILL, named by a thread
/// id only (classic tracepoints), is still that victim's. Between the two the kernel prints the
/// OOM report (`dump_header`: memory state and, by default, every task) to the console, which a
/// slow console or emulation stretches: 56 ms was seen in a 6.12 guest. Nothing else that task
/// does in between sends a kernel SIGKILL to a process not yet killed.
const CHOICE_PAIRING_NS: u64 = 2_000_000_000;
/// Attempts after which the oom_reaper gives up (`MAX_OOM_REAP_RETRIES`). An attempt is a
/// `skip_task_reaping` (mmap_lock busy) or a `start_task_reaping` — whose
/// `finish_task_reaping` fires whether or not the unmapping succeeded: a failed attempt is seen
/// only as the next one, 100 ms later.
const REAPER_MAX_RETRIES: u32 = 10;
/// After a skip, how long without another attempt means the reaper is done with the victim
/// (its retries come 100 ms apart; emulation stretches that).
const REAPER_SILENT_AFTER_SKIP_NS: u64 = 1_000_000_000;
/// After a mark, how long without `wake_reaper` means the reaper will not come (its timer is
/// 2 s since 5.18; before, it is woken at the kill).
const REAPER_SILENT_NS: u64 = 3_000_000_000;
/// Live victims kept at most; past this the oldest resolved ones go first.
const MAX_VICTIMS: usize = 4096;
/// Memcgs whose invocation counts (and paths) are kept at most.
const MAX_MEMCGS: usize = 4096;
/// How long without any later event a kill waits for its mark before it is announced without.
const MARK_GIVE_UP_NS: u64 = 10_000_000_000;
/// How far from a kill a memcg's state read counts as its state at that kill: userspace reads
/// it as the kill event arrives (stamped with that event's time), so only another kill in the
/// same memcg can be close; a second later it is another kill's.
const STATE_PAIRING_NS: u64 = 1_000_000_000;
/// Kernel symbol names kept at most (stacks of kills repeat: a few hundred in practice).
const MAX_SYMBOLS: usize = 1 << 14;
/// A process found at start with SIGKILL pending is flagged if it has still not finished
/// exiting this long after it was first seen: an ordinary exit after SIGKILL takes
/// milliseconds, and the promise is a finding within one second of attach.
pub const PRE_EXISTING_GRACE_NS: u64 = 500_000_000;
/// Kernel SIGKILLs held at most while they wait for a mark (a PID-namespace teardown of
/// thousands); past this the oldest are decided at once (not OOM kills).
const MAX_PENDING_KILLS: usize = 4096;
/// Thread ids kept per victim for "which thread entered exit".
const MAX_EXITING_TIDS: usize = 16;
/// A kernel SIGKILL waiting for its mark_victim (or a co-victim decision).
#[derive(Clone, Debug)]
struct PendingKill {
    ts: u64,
    target: Task,
    start_ns: u64,
    sender_tid: u32,
    /// The victim that sent it, if the sender is one (its exit's doing), as it was then: it
    /// may be released and forgotten before the pairing window ends.
    by: Option<(VictimKey, Comm, Option<u64>)>,
    /// The target, followed meanwhile as a kill by the kernel (`awaiting_mark`).
    key: VictimKey,
}

/// The last victim a task marked: the SIGKILLs it sends right after are to processes sharing
/// that victim's mm.
#[derive(Clone, Copy, Debug)]
struct LastMark {
    ts: u64,
    victim: VictimKey,
    /// The victim's mm identity, when the kernel told it.
    mm: Option<u64>,
}

/// An OOM invocation under way (see [`Tracker::invoking`]).
#[derive(Clone, Copy, Debug)]
struct Invocation {
    memcg: u64,
    killed: bool,
}

/// Invocations of one OOM domain that killed nothing, by the kernel's verdict.
#[derive(Clone, Copy, Debug, Default)]
struct DomainVerdicts {
    /// Returned false: no task it may kill.
    nothing: u32,
    nothing_since: u64,
    nothing_last: u64,
    /// When a nothing-killable finding was made (cleared with its end).
    reported: Option<u64>,
}

/// A domain whose last nothing-killable invocation is this old is no longer in that state.
const NOTHING_KILLABLE_QUIET_NS: u64 = 10_000_000_000;

/// The last [`GoneSet::CAP`] processes that died and were forgotten.
#[derive(Debug, Default)]
struct GoneSet {
    order: std::collections::VecDeque<VictimKey>,
    keys: HashSet<VictimKey>,
}

impl GoneSet {
    const CAP: usize = 4096;

    fn insert(&mut self, key: VictimKey) {
        if !self.keys.insert(key) {
            return;
        }
        self.order.push_back(key);
        if self.order.len() > Self::CAP
            && let Some(old) = self.order.pop_front()
        {
            self.keys.remove(&old);
        }
    }

    fn contains(&self, key: &VictimKey) -> bool {
        key.start_ns != 0 && self.keys.contains(key)
    }
}

/// Follows victims from events; see the module docs.
pub struct Tracker {
    cfg: TrackerConfig,
    /// Held events by (timestamp, arrival).
    /// Boxed: moving a whole event (~170 bytes) within B-tree nodes on every insert and
    /// removal cost more than the allocation (criterion's tracker bench).
    reorder: BTreeMap<(u64, u64), Box<Event>>,
    seq: u64,
    latest_ts: u64,
    /// The latest time of a kernel event received: what the ring buffer has been read up to.
    /// Events userspace observes itself (a death seen through a pidfd) carry their observation
    /// time, which may run ahead of kernel events still in the ring.
    latest_kernel_ts: u64,
    /// A replay: time advances with the records as they were read, and a record userspace
    /// made (a death found at a kill's read, stamped when found) can be followed in the dump
    /// by kernel events from before it that were still in the ring. Live, every tick follows a
    /// full read of the ring, so nothing older than the tick is still to come.
    replaying: bool,
    /// Shared with the findings made of them (a victim is large, and B-tree nodes move their
    /// values): a finding holds the victim as it was when made, the tracker writes through
    /// `Arc::make_mut`, which copies only a victim a finding still holds.
    victims: BTreeMap<VictimKey, Arc<Victim>>,
    /// The held victims' due times ([`victim_due`]), indexed (see [`deadlines`]); brought up
    /// to date when [`Tracker::next_tick_due`] asks.
    deadlines: RefCell<deadlines::Deadlines>,
    /// tgid and marked thread id → victims (keeps lookups O(1) with many victims held).
    by_id: HashMap<u32, Vec<VictimKey>>,
    pending_kills: Vec<PendingKill>,
    /// Processes that finished dying and were forgotten, newest last (bounded): a SIGKILL the
    /// reorder window delivers after its target's death and release names one of these, and
    /// is not followed as a new kill that never dies.
    gone: GoneSet,
    last_mark_by: HashMap<u32, LastMark>,
    /// The last victim each task chose (`oom_kill_process`): the SIGKILL it sends right after
    /// goes to that process's thread that holds the mm, which the classic tracepoint names by
    /// its thread id only.
    last_choice_by: HashMap<u32, LastMark>,
    /// Memcg paths by id, for matching an OOM domain (the memcg whose limit was hit) with the
    /// victims below it.
    memcg_paths: HashMap<u64, String>,
    /// Kernel symbol names by address (`name+0xoff`), told by userspace (kallsyms) or a dump.
    symbols: HashMap<u64, String>,
    /// The kernel's gfp flag names (the recording kernel's in a replay).
    gfp_names: crate::kernel::gfp::GfpNames,
    /// The OOM scan each thread is making (`oom_badness` returns), until its kill decision.
    scans: HashMap<u32, Vec<Candidate>>,
    /// The last allocation stack each task recorded (by thread id): its mark of a victim comes
    /// right after, from the same kernel program.
    last_stack_by: HashMap<u32, (u64, AllocStackInfo)>,
    /// The latest state read of each memcg (id 0: the machine) at a kill, with its time.
    memcg_states: HashMap<u64, (u64, oomtrace_common::MemcgState)>,
    /// Kills counted per victim memcg (to reconcile with the kernel's own counters).
    kills_by_memcg: HashMap<u64, u64>,
    /// OOM invocations per OOM domain as the kernel's memcg notifications counted them
    /// ([`Payload::MemcgOom`]): the count where no invocation hook attaches, a cross-check
    /// where one does.
    notified_invocations: HashMap<u64, u64>,
    /// Memcgs hung with the OOM killer disabled, since when.
    oom_disabled: HashMap<u64, u64>,
    /// Memcgs found removed, forgotten a minute later (see [`forget`]).
    removed: forget::Removed,
    /// OOM invocations under way, by allocating thread: their domain, start, and whether a
    /// kill was seen before their return.
    invoking: HashMap<u32, Invocation>,
    /// The kernel's verdicts per OOM domain (from `mem_cgroup_out_of_memory` returns).
    domains: HashMap<u64, DomainVerdicts>,
    /// Victims created by the event being applied, announced after it.
    announce: Vec<VictimKey>,
    /// The victims of each OOM invocation (`memory.oom.group` kills).
    incidents: incident::Incidents,
    lost: u64,
    /// What the summary counts (every victim is followed regardless).
    filter: Filter,
    summary: Summary,
    h_dead: Histogram<u64>,
    h_released: Histogram<u64>,
    h_reaper: Histogram<u64>,
    h_reaping: Histogram<u64>,
}

/// Whether a kernel SIGKILL's sender was known to be inside its own exit (`PF_EXITING`).
fn sender_exiting(flags: u32) -> bool {
    flags & sender_state::KNOWN != 0 && flags & sender_state::EXITING != 0
}

/// Who sent a SIGKILL, from its record: a user process when the siginfo code says so (≤ 0),
/// else the kernel. Records of layouts before the code was recorded were all the kernel's.
fn sender_of(h: &oomtrace_common::Header, p: &oomtrace_common::KernelSigkill) -> Sender {
    let recorded = p.sender_flags & sender_state::CODE != 0;
    let kind = if recorded && si_code::from_user(p.si_code) {
        SenderKind::User
    } else {
        SenderKind::Kernel
    };
    Sender {
        kind,
        pid: h.pid,
        tgid: h.tgid,
        comm: Comm::from_kernel(&h.comm),
        uid: recorded.then_some(p.sender_uid),
        memcg_id: (p.sender_memcg_id != 0).then_some(p.sender_memcg_id),
        memcg_path: None,
        si_code: if recorded {
            p.si_code
        } else {
            si_code::SI_KERNEL
        },
    }
}

fn admitted(filter: &Filter, paths: &HashMap<u64, String>, tgid: u32, memcg: Option<u64>) -> bool {
    !filter.active()
        || (filter.pid_ok(tgid)
            && filter.memcg_ok(memcg.and_then(|m| paths.get(&m)).map(String::as_str)))
}

/// When a victim's next finding could come due (before the reorder window), by the same rules
/// as `check_timeouts`: a victim awaiting its mark is judged once the pending kill is decided
/// (the pending kill's own due time), one released is dead.
fn victim_due(cfg: &TrackerConfig, v: &Victim) -> Option<u64> {
    if v.awaiting_mark {
        return None;
    }
    let since = v.watched_since()?;
    match v.timeline.dead {
        None if v.is_dead() => None,
        None if !v.flagged_stuck && !v.flagged_unobservable => {
            let allowed = if v.killed_at().is_some() {
                cfg.timeout_ns
            } else {
                PRE_EXISTING_GRACE_NS
            };
            Some(since.saturating_add(allowed))
        }
        Some(dead)
            if cfg.observability.free && v.timeline.released.is_none() && !v.flagged_release =>
        {
            Some(dead.saturating_add(cfg.release_timeout_ns))
        }
        _ => None,
    }
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker {
            cfg,
            reorder: BTreeMap::new(),
            seq: 0,
            latest_ts: 0,
            latest_kernel_ts: 0,
            replaying: false,
            victims: BTreeMap::new(),
            deadlines: RefCell::default(),
            by_id: HashMap::new(),
            pending_kills: Vec::new(),
            gone: GoneSet::default(),
            last_mark_by: HashMap::new(),
            last_choice_by: HashMap::new(),
            memcg_paths: HashMap::new(),
            symbols: HashMap::new(),
            gfp_names: Default::default(),
            scans: HashMap::new(),
            last_stack_by: HashMap::new(),
            memcg_states: HashMap::new(),
            kills_by_memcg: HashMap::new(),
            notified_invocations: HashMap::new(),
            oom_disabled: HashMap::new(),
            removed: forget::Removed::default(),
            invoking: HashMap::new(),
            domains: HashMap::new(),
            announce: Vec::new(),
            incidents: incident::Incidents::default(),
            lost: 0,
            filter: Filter::default(),
            summary: Summary {
                livelock_observable: cfg.observability.oom_invoke,
                ..Summary::default()
            },
            h_dead: histogram(),
            h_released: histogram(),
            h_reaper: histogram(),
            h_reaping: histogram(),
        }
    }

    /// Counts only what `filter` admits from now on.
    pub(crate) fn set_filter(&mut self, filter: Filter) {
        self.filter = filter;
    }

    pub(crate) fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Whether the filter admits a finding: its process and memcg (paths as told by
    /// [`Tracker::memcg_path`]). The session shows exactly what the summary counts.
    pub(crate) fn admits(&self, f: &Finding) -> bool {
        admitted(&self.filter, &self.memcg_paths, f.tgid(), f.memcg_id())
    }

    fn counts(&self, v: &Victim) -> bool {
        admitted(&self.filter, &self.memcg_paths, v.key.tgid, v.memcg_id)
    }

    /// Takes an event; findings it causes (after reordering) are appended to `out`.
    pub fn on_event(&mut self, ev: &Event, out: &mut Vec<Finding>) {
        self.seq += 1;
        self.latest_ts = self.latest_ts.max(ev.header.ts_ns);
        if ev.header.cpu != USERSPACE_CPU {
            self.latest_kernel_ts = self.latest_kernel_ts.max(ev.header.ts_ns);
        }
        // Released up to what the ring has been read to: an event userspace observed (stamped
        // when seen, e.g. a death through a pidfd) may run ahead of kernel events still in the
        // ring, which must come first (a kill's mark before its victim's death). Ticks, which
        // follow a full read of the ring, release the rest.
        let until = self.latest_kernel_ts.saturating_sub(REORDER_NS);
        let ts = ev.header.ts_ns;
        if ts <= until
            && self
                .reorder
                .first_key_value()
                .is_none_or(|(&(held, _), _)| held > ts)
        {
            // Released at once and first (nothing held is as old): applied without its stay
            // in the window, in the order `release_until` would have taken.
            self.apply(ev, out);
        } else {
            self.reorder.insert((ts, self.seq), Box::new(*ev));
        }
        self.release_until(until, out);
    }

    /// Events dropped by a full ring buffer (the running total is `total`).
    pub(crate) fn on_lost(&mut self, total: u64) {
        self.lost = self.lost.max(total);
        self.summary.lost_events = self.lost;
    }

    /// Advances time to `now_ns` (CLOCK_MONOTONIC): releases held events, flags timeouts.
    /// Everything up to `now_ns - REORDER_NS` has been applied, so that is the instant judged:
    /// an exit still in the reorder window can never be mistaken for a stuck victim.
    pub(crate) fn tick(&mut self, now_ns: u64, out: &mut Vec<Finding>) {
        let judged = now_ns.saturating_sub(REORDER_NS);
        self.release_until(judged, out);
        // A kill waiting for its mark gives up on it only once a later event has arrived (its
        // events may still be in the ring: under emulation userspace reads them tens of ms
        // late), or after MARK_GIVE_UP_NS of silence.
        let heard = judged
            .min(self.latest_kernel_ts)
            .max(judged.saturating_sub(MARK_GIVE_UP_NS));
        self.announce_ready(heard, out);
        // A kernel SIGKILL no mark claimed is another kernel path's once its pairing window
        // has passed in the ring. In a replay a record userspace made can carry time past it
        // while the kill's mark, read after that record, is still to come (a reader behind a
        // storm): there the window is judged against the kernel events read so far.
        self.expire_pending_kills(if self.replaying { heard } else { judged }, out);
        self.check_timeouts(judged, now_ns, out);
        self.forget_removed_memcgs(judged);
    }

    /// Judges as a replay of recorded reads (see `replaying`).
    pub(crate) fn replaying(&mut self) {
        self.replaying = true;
    }

    /// Judges as live did from now on: a replay of a dump that marks each full read of the
    /// ring (format 3) ticks only at those marks, where nothing older is still to come.
    pub(crate) fn replaying_at_drains(&mut self) {
        self.replaying = false;
    }

    /// Processes every held event and judges at `now_ns` (end of a session or a replay).
    pub fn finish(&mut self, now_ns: u64, out: &mut Vec<Finding>) {
        self.release_until(u64::MAX, out);
        // No mark can come any more: kernel SIGKILLs still waiting for one are decided.
        for k in std::mem::take(&mut self.pending_kills) {
            self.decide_pending(k, out);
        }
        self.announce_ready(u64::MAX, out);
        self.check_timeouts(now_ns, now_ns, out);
    }

    /// The earliest `tick` time at which something could be flagged: replays tick exactly
    /// there instead of every few milliseconds.
    pub(crate) fn next_tick_due(&self) -> Option<u64> {
        let held = self
            .reorder
            .keys()
            .next()
            .map(|(ts, _)| ts.saturating_add(REORDER_NS));
        let pending = self
            .pending_kills
            .iter()
            .map(|k| {
                let due = k.ts.saturating_add(SIGKILL_PAIRING_NS + 1 + REORDER_NS);
                // A replay waits for the ring's reading to pass the window too (see `tick`):
                // until a later kernel record comes, only the give-up can decide it.
                if self.replaying && self.latest_kernel_ts <= k.ts + SIGKILL_PAIRING_NS {
                    due.saturating_add(MARK_GIVE_UP_NS)
                } else {
                    due
                }
            })
            .min();
        // Announced once what has been heard passes the pairing window (`tick`'s `heard`). In
        // a replay of records alone, until a later kernel record comes only the give-up moves
        // it: without this a replay whose records stop inside the window ticked at the same
        // time for ever (found by the dump_replay fuzz target). Live (and at a dump's drain
        // marks) the tick's own time moves on.
        let unannounced = self
            .announce
            .iter()
            .filter_map(|k| self.victims.get(k)?.timeline.sigkill)
            .map(|ts| {
                let due = ts.saturating_add(SIGKILL_PAIRING_NS + 1 + REORDER_NS);
                match self.replaying
                    && self.latest_kernel_ts <= ts.saturating_add(SIGKILL_PAIRING_NS)
                {
                    true => due.saturating_add(MARK_GIVE_UP_NS),
                    false => due,
                }
            })
            .min();
        let victims = self.deadlines.borrow_mut().first(&self.victims, &self.cfg);
        debug_assert_eq!(
            victims,
            self.victims
                .values()
                .filter_map(|v| victim_due(&self.cfg, v))
                .min(),
            "deadline index out of step"
        );
        victims
            .map(|d| d.saturating_add(REORDER_NS))
            .into_iter()
            .chain(held)
            .chain(pending)
            .chain(unannounced)
            .min()
    }

    /// A victim that may be changed: its due time is brought up to date at the next
    /// [`Tracker::next_tick_due`].
    fn victim_mut(&mut self, key: &VictimKey) -> Option<&mut Victim> {
        let v = self.victims.get_mut(key)?;
        self.deadlines.get_mut().touch(*key);
        Some(Arc::make_mut(v))
    }

    /// A victim changed only where [`victim_due`] does not read (the exits its threads
    /// entered, the reaper's progress): not named to the deadline index, so the next
    /// [`Tracker::next_tick_due`] does not look it up again (in a format-1 replay, asked
    /// before every record, those look-ups were most of its cost). The debug assertion in
    /// `next_tick_due` checks the index against every victim.
    fn victim_mut_untimed(&mut self, key: &VictimKey) -> Option<&mut Victim> {
        self.victims.get_mut(key).map(Arc::make_mut)
    }

    fn release_until(&mut self, until: u64, out: &mut Vec<Finding>) {
        while let Some(entry) = self.reorder.first_entry() {
            if entry.key().0 > until {
                break;
            }
            let ev = entry.remove();
            self.apply(&ev, out);
        }
    }

    /// Index maintenance: every insert and removal of a victim goes through these.
    fn index_add(&mut self, id: u32, key: VictimKey) {
        let keys = self.by_id.entry(id).or_default();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }

    fn index_remove(&mut self, id: u32, key: &VictimKey) {
        if let Some(keys) = self.by_id.get_mut(&id) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_id.remove(&id);
            }
        }
    }

    /// Moves the index entry of a victim's marked thread id from `from` to `to` (the tgid's
    /// own entry stays, even when the thread id is the tgid).
    fn reindex_tid(&mut self, key: VictimKey, from: Option<u32>, to: Option<u32>) {
        if from == to {
            return;
        }
        if let Some(tid) = from.filter(|&t| t != key.tgid) {
            self.index_remove(tid, &key);
        }
        if let Some(tid) = to {
            self.index_add(tid, key);
        }
    }

    fn insert_victim(&mut self, v: Victim) {
        let key = v.key;
        self.index_add(key.tgid, key);
        self.reindex_tid(key, None, v.marked_tid);
        // A new one with no due time (a SIGKILL awaiting its mark) is not named: the index
        // holds nothing for a key not held, or names it already if it was removed since its
        // last question.
        let due = victim_due(&self.cfg, &v).is_some();
        let replaced = self.victims.insert(key, Arc::new(v)).is_some();
        if due || replaced {
            self.deadlines.get_mut().touch(key);
        }
    }

    fn remove_victim(&mut self, key: &VictimKey) -> Option<Arc<Victim>> {
        let v = self.victims.remove(key)?;
        self.deadlines.get_mut().touch(*key);
        if v.timeline.dead.is_some() && key.start_ns != 0 {
            self.gone.insert(*key);
        }
        self.reindex_tid(*key, v.marked_tid, None);
        self.index_remove(key.tgid, key);
        Some(v)
    }

    /// The newest victim (by key) among those an id names that satisfies `pred`.
    fn lookup(&self, id: u32, pred: impl Fn(&Victim) -> bool) -> Option<VictimKey> {
        self.by_id
            .get(&id)?
            .iter()
            .filter_map(|k| self.victims.get(k))
            .filter(|v| pred(v))
            .map(|v| v.key)
            .max()
    }

    /// The newest victim key among those an id names that satisfies `pred`: [`Tracker::lookup`]
    /// for a test of the key alone, without a look at the victims (the index holds exactly
    /// the held victims' keys).
    fn lookup_key(&self, id: u32, pred: impl Fn(&VictimKey) -> bool) -> Option<VictimKey> {
        let key = self
            .by_id
            .get(&id)?
            .iter()
            .filter(|k| pred(k))
            .max()
            .copied();
        debug_assert!(key.is_none_or(|k| self.victims.contains_key(&k)));
        key
    }

    fn find(&mut self, tgid: u32, start_ns: u64) -> Option<&mut Victim> {
        let key = self.lookup_key(tgid, |k| k.matches(tgid, start_ns))?;
        self.victim_mut(&key)
    }

    /// A victim by a thread id the kernel named (mark_victim's pid, reaper pid).
    fn find_by_tid(&mut self, tid: u32) -> Option<&mut Victim> {
        let key = self.tid_key(tid)?;
        self.victim_mut(&key)
    }

    fn tid_key(&self, tid: u32) -> Option<VictimKey> {
        self.lookup(tid, |v| v.marked_tid == Some(tid) || v.key.tgid == tid)
    }

    /// [`Tracker::find`] for a change [`victim_due`] does not read (see
    /// [`Tracker::victim_mut_untimed`]).
    fn find_untimed(&mut self, tgid: u32, start_ns: u64) -> Option<&mut Victim> {
        let key = self.lookup_key(tgid, |k| k.matches(tgid, start_ns))?;
        self.victim_mut_untimed(&key)
    }

    /// [`Tracker::find_by_tid`] for a change [`victim_due`] does not read.
    fn find_by_tid_untimed(&mut self, tid: u32) -> Option<&mut Victim> {
        let key = self.tid_key(tid)?;
        self.victim_mut_untimed(&key)
    }

    fn task(h: &oomtrace_common::Header) -> Task {
        Task {
            pid: h.pid,
            tgid: h.tgid,
            comm: Comm::from_kernel(&h.comm),
        }
    }

    /// Finds or creates the victim (tgid, start); emits `Killed` when created.
    /// `comm` is called only when the victim is created.
    fn victim_entry(&mut self, key: VictimKey, comm: impl FnOnce() -> Comm) -> &mut Victim {
        let existing = self.lookup_key(key.tgid, |k| k.matches(key.tgid, key.start_ns));
        let key = match existing {
            Some(k) if k.start_ns == 0 && key.start_ns != 0 => {
                // Learnt the start time: re-key.
                let mut v = Arc::unwrap_or_clone(self.remove_victim(&k).expect("present"));
                v.key = key;
                self.insert_victim(v);
                key
            }
            Some(k) => k,
            None => {
                let mut v = Victim::new(key, comm());
                v.lost_at_kill = self.lost;
                self.insert_victim(v);
                self.evict_if_full();
                // Announced (and counted) once its SIGKILL or its mark is seen (see `apply`).
                self.announce.push(key);
                key
            }
        };
        self.victim_mut(&key).expect("present")
    }

    fn apply(&mut self, ev: &Event, out: &mut Vec<Finding>) {
        self.expire_pending_kills(ev.header.ts_ns, out);
        // A kill waiting for its mark is announced before anything else about that process
        // (its exit, its death): the killed finding comes first, even when the mark was lost.
        if !self.announce.is_empty()
            && !matches!(
                ev.payload,
                Payload::MarkVictim(_)
                    | Payload::AllocStack(_)
                    | Payload::MemcgState(_)
                    | Payload::KernelSigkill(_)
                    | Payload::OomKill(_)
            )
        {
            let tgid = ev.subject().process_or_thread();
            if self.announce.iter().any(|k| k.tgid == tgid) {
                self.announce_ready(u64::MAX, out);
            }
        }
        self.apply_event(ev, out);
        // A time the ring has been read up to (see `latest_kernel_ts`).
        let heard = if ev.header.cpu == USERSPACE_CPU {
            ev.header.ts_ns.min(self.latest_kernel_ts)
        } else {
            ev.header.ts_ns
        };
        self.announce_ready(heard, out);
    }

    /// Announces the new victims whose fate is known. A kill is the kernel's SIGKILL (it comes
    /// ~4 µs before the mark): a victim marked without one was already exiting — the OOM
    /// killer marks such a task (`task_will_free_mem`) and kills nothing, and the kernel's
    /// `oom_kill` counter does not count it. Where the signal hook is missing, a mark is taken
    /// as a kill (as the kernel's own message would).
    ///
    /// A victim the OOM killer chose is announced at its mark where the mark hook is attached
    /// (the SIGKILL comes first, the mark a few µs later in the same `__oom_kill_process`): the
    /// mark brings the allocation stack and the victim's memory, which the `killed` finding
    /// carries. A mark that does not come within [`SIGKILL_PAIRING_NS`] (lost) does not hold
    /// the announcement longer.
    fn announce_ready(&mut self, now: u64, out: &mut Vec<Finding>) {
        // Called after every event applied; most have no victim to announce.
        if self.announce.is_empty() {
            return;
        }
        let obs = self.cfg.observability;
        let mut waiting = Vec::new();
        for key in std::mem::take(&mut self.announce) {
            // Nothing here moves a due time (`victim_due`): no touch.
            let Some(shared) = self.victims.get_mut(&key) else {
                continue;
            };
            let v = Arc::make_mut(shared);
            let t = &v.timeline;
            let signalled = t.sigkill.is_some();
            if !signalled && t.marked.is_none() && (obs.signal || obs.mark_victim) {
                // Chosen by oom_kill_process: its SIGKILL or mark comes next.
                waiting.push(key);
                continue;
            }
            if let Some(sigkill) = t.sigkill
                && obs.mark_victim
                && t.marked.is_none()
                && t.chosen.is_some()
                && v.killed_with.is_none()
                && now.saturating_sub(sigkill) <= SIGKILL_PAIRING_NS
            {
                waiting.push(key);
                continue;
            }
            // The memcgs as userspace read them when this kill's events arrived.
            let (kill, states) = (v.killed_at(), &self.memcg_states);
            let at_kill = |id: Option<u64>| {
                let (ts, s) = states.get(&id?)?;
                (ts.abs_diff(kill?) <= STATE_PAIRING_NS).then(|| MemcgAt::new(s))
            };
            if v.memcg_at_kill.is_none() {
                v.memcg_at_kill = at_kill(v.memcg_id);
            }
            if v.domain_at_kill.is_none() {
                v.domain_at_kill = at_kill(v.domain_id);
            }
            if v.candidates.is_none() && (signalled || !obs.signal) && v.sender.is_none() {
                v.candidates_unavailable = Some(if !obs.oom_candidates {
                    "oom_badness is not hooked on this plan: it needs fexit"
                } else if v.decision.is_none() {
                    "the kill decision was not seen"
                } else {
                    "no oom_badness return came before the decision: the scan's call may be \
                     inlined on this kernel (Debian's 5.10), or oom_kill_allocating_task chose, \
                     or events were lost"
                });
            }
            let counted = admitted(&self.filter, &self.memcg_paths, key.tgid, v.memcg_id);
            if signalled || !obs.signal {
                if counted {
                    self.summary.kills += 1;
                }
                if let Some(m) = v.memcg_id {
                    if self.kills_by_memcg.len() >= MAX_MEMCGS
                        && !self.kills_by_memcg.contains_key(&m)
                    {
                        self.kills_by_memcg.clear();
                    }
                    *self.kills_by_memcg.entry(m).or_default() += 1;
                }
                out.push(Finding::Killed {
                    victim: Arc::clone(shared),
                });
            } else {
                v.already_exiting = true;
                if counted {
                    self.summary.marked_exiting += 1;
                }
                out.push(Finding::Marked {
                    victim: Arc::clone(shared),
                });
            }
        }
        self.announce = waiting;
    }

    fn apply_event(&mut self, ev: &Event, out: &mut Vec<Finding>) {
        let h = ev.header;
        let ts = h.ts_ns;
        // A kill by an allocating thread inside its OOM invocation: that invocation killed;
        // a kill in a domain ends its nothing-killable state.
        match ev.payload {
            Payload::OomKill(p) => {
                if let Some(i) = self.invoking.get_mut(&h.pid) {
                    i.killed = true;
                }
                self.domain_killed(p.memcg_id, ts, out);
            }
            Payload::MarkVictim(p) => {
                if let Some(i) = self.invoking.get_mut(&h.pid) {
                    i.killed = true;
                }
                if p.fields & victim_fields::TASK != 0 {
                    self.domain_killed(p.memcg_id, ts, out);
                } else if let Some(i) = self.invoking.get(&h.pid).copied() {
                    self.domain_killed(i.memcg, ts, out);
                }
            }
            Payload::KernelSigkill(_) => {
                if let Some(i) = self.invoking.get_mut(&h.pid) {
                    i.killed = true;
                }
            }
            Payload::OomInvoke(_)
            | Payload::OomInvokeDone(_)
            | Payload::AllocStack(_)
            | Payload::OomCandidate(_)
            | Payload::WakeReaper(_)
            | Payload::StartReaping(_)
            | Payload::FinishReaping(_)
            | Payload::SkipReaping(_)
            | Payload::TaskExit(_)
            | Payload::TaskFree(_)
            | Payload::GroupExited(_)
            | Payload::PreExisting(_)
            | Payload::MemcgOom(_)
            | Payload::MemcgState(_)
            | Payload::CgroupMkdir(_)
            | Payload::CgroupRmdir(_)
            | Payload::ParentNotified(_) => {}
        }
        match ev.payload {
            Payload::OomInvoke(p) => {
                // A new invocation's scan starts afresh.
                self.scans.remove(&h.pid);
                if self.invoking.len() >= MAX_MEMCGS {
                    self.invoking.clear();
                }
                self.invoking.insert(
                    h.pid,
                    Invocation {
                        memcg: p.memcg_id,
                        killed: false,
                    },
                );
                self.count_invocation(p.memcg_id, ts, out);
            }
            Payload::OomInvokeDone(p) => {
                self.incidents.close(h.pid);
                self.on_invoke_done(h.pid, p.killed != 0, ts, out);
            }
            Payload::MemcgOom(p) => self.on_memcg_oom(ts, &p, out),
            Payload::OomKill(p) => {
                self.incidents
                    .decision(h.pid, Self::task(&h), p.memcg_id, ts);
                let key = VictimKey {
                    tgid: p.chosen_tgid,
                    start_ns: p.chosen_start_ns,
                };
                let v = self.victim_entry(key, || Comm::from_kernel(&p.chosen_comm));
                v.timeline.chosen.get_or_insert(ts);
                // The victim's own memcg where this kernel side read it (the OOM domain may be
                // an ancestor); older dumps only have the domain.
                v.memcg_id = Some(match p.chosen_memcg_id {
                    0 => p.memcg_id,
                    own => own,
                });
                v.trigger = Some(Self::task(&h));
                // The victim's mm where the decision read it: a classic mark names none.
                if p.chosen_mm != 0 {
                    v.mm = Some(p.chosen_mm);
                }
                let (key, mm) = (v.key, v.mm);
                self.last_choice_by.insert(
                    h.pid,
                    LastMark {
                        ts,
                        victim: key,
                        mm,
                    },
                );
                if self.last_choice_by.len() > MAX_MEMCGS {
                    self.last_choice_by.clear();
                }
                self.deadlines.get_mut().touch(key);
                let Some(v) = self.victims.get_mut(&key).map(Arc::make_mut) else {
                    return;
                };
                v.domain_id = Some(p.memcg_id);
                // The scan this thread made before deciding (none where oom_badness is not
                // hooked, or for oom_kill_allocating_task, which scans nothing).
                let scan = self.scans.remove(&h.pid);
                v.candidates = if self.cfg.observability.oom_candidates {
                    scan.map(|s| Candidates::of_scan(s, key.tgid))
                } else {
                    None
                };
                if let Some(c) = &v.candidates {
                    let own = |tgid: u32| c.top.iter().chain(&c.victim).find(|t| t.tgid == tgid);
                    v.swap_kb = own(key.tgid).and_then(|t| t.swap_kb);
                    v.trigger_oom_score_adj = own(h.tgid).and_then(|t| t.oom_score_adj);
                }
                v.decision = Some(KillDecision {
                    chosen_points: p.chosen_points,
                    totalpages: p.totalpages,
                    constraint: p.constraint,
                    order: p.order,
                    gfp_mask: p.gfp_mask,
                    gfp: self.gfp_names.decode(p.gfp_mask.into()),
                    message: cstr(&p.message),
                });
            }
            Payload::KernelSigkill(p) => self.on_sigkill(ev, &p, out),
            Payload::MarkVictim(p) => self.on_mark(ev, &p),
            Payload::MemcgState(p) => {
                if self.memcg_states.len() >= MAX_MEMCGS
                    && !self.memcg_states.contains_key(&p.memcg_id)
                {
                    self.memcg_states.clear();
                }
                self.memcg_states.insert(p.memcg_id, (ts, p));
            }
            Payload::OomCandidate(p) => {
                if self.scans.len() >= MAX_MEMCGS && !self.scans.contains_key(&h.pid) {
                    self.scans.clear();
                }
                let scan = self.scans.entry(h.pid).or_default();
                if scan.len() < oomtrace_common::CANDIDATES_MAX as usize {
                    scan.push(Candidate::new(&p));
                }
            }
            Payload::AllocStack(p) => {
                let stack = AllocStackInfo::new(&p, &self.symbols);
                if self.last_stack_by.len() >= MAX_MEMCGS {
                    self.last_stack_by.clear();
                }
                self.last_stack_by.insert(h.pid, (ts, stack));
            }
            Payload::WakeReaper(r) => {
                if let Some(v) = self.find_by_tid_untimed(r.pid) {
                    v.timeline.reaper_woken.get_or_insert(ts);
                }
            }
            Payload::StartReaping(r) => {
                if let Some(v) = self.find_by_tid_untimed(r.pid) {
                    v.last_reaper_skip = None;
                    v.timeline.reaping_started.get_or_insert(ts);
                    // A later attempt: the one before failed to unmap everything.
                    v.timeline.reaping_finished = None;
                    v.reaper_attempt(ts);
                }
            }
            Payload::FinishReaping(r) => {
                if let Some(v) = self.find_by_tid_untimed(r.pid) {
                    v.timeline.reaping_finished = Some(ts);
                }
            }
            Payload::SkipReaping(r) => {
                if let Some(v) = self.find_by_tid_untimed(r.pid) {
                    v.reaper_skips += 1;
                    v.last_reaper_skip = Some(ts);
                    v.reaper_attempt(ts);
                }
            }
            Payload::TaskExit(p) => {
                let known = p.group_dead_source != group_dead_source::UNKNOWN;
                let legacy = self.cfg.death_at_last_exit;
                self.learn_process_of_thread(h.pid, h.tgid, p.start_ns);
                // Its death, which the due time reads, is `mark_dead`'s (timed) change.
                let Some(v) = self.find_untimed(h.tgid, p.start_ns) else {
                    return;
                };
                v.threads_exited += 1;
                v.timeline.first_exit.get_or_insert(ts);
                if v.exiting_tids.len() < MAX_EXITING_TIDS && !v.exiting_tids.contains(&h.pid) {
                    v.exiting_tids.push(h.pid);
                }
                if known && p.group_dead != 0 {
                    v.timeline.all_entered_exit.get_or_insert(ts);
                    if legacy {
                        let key = v.key;
                        self.mark_dead(key, ts, "last_thread_exit", out);
                    }
                }
            }
            Payload::GroupExited(p) => {
                let how = crate::event::exit_seen_name(p.how);
                // By its pid; else by the thread the kernel named it by (classic tracepoints
                // name the marked thread, which is not the leader when the leader had exited).
                let key = self
                    .lookup_key(p.pid, |k| k.matches(p.pid, p.start_ns))
                    .or_else(|| {
                        (p.tid != 0)
                            .then(|| self.lookup(p.tid, |v| v.marked_tid == Some(p.tid)))
                            .flatten()
                    });
                if let Some(key) = key {
                    self.mark_dead(key, ts, how, out);
                }
            }
            Payload::PreExisting(p) => self.on_pre_existing(ts, &p),
            // Names only (the id → path service keeps them): nothing about a process.
            Payload::CgroupMkdir(_) | Payload::CgroupRmdir(_) | Payload::ParentNotified(_) => {}
            Payload::TaskFree(p) => {
                let Some(key) = self.lookup_key(p.pid, |k| k.matches(p.pid, p.start_ns)) else {
                    return;
                };
                // Released implies dead, even if its death was not seen.
                self.mark_dead(key, ts, "released", out);
                // Its death may have forgotten it (nothing more can be seen of it).
                let key = match self.victims.contains_key(&key) {
                    true => key,
                    false => match self.lookup_key(p.pid, |k| k.matches(p.pid, p.start_ns)) {
                        Some(k) => k,
                        None => return,
                    },
                };
                let Some(v) = self.victim_mut(&key) else {
                    return;
                };
                v.timeline.released.get_or_insert(ts);
                let v = Arc::clone(&self.victims[&key]);
                // Other kills are counted apart: `released` and its latencies are OOM kills'.
                let counted = self.counts(&v) && !v.is_other_kill();
                if counted {
                    self.summary.released += 1;
                }
                if let Some(k) = v.killed_at() {
                    let d = ts.saturating_sub(k);
                    if counted {
                        record_ns(&mut self.h_released, d);
                    }
                    out.push(Finding::Released {
                        victim: Arc::clone(&v),
                        kill_to_released_ns: d,
                    });
                }
                self.remove_victim(&v.key);
            }
        }
    }

    fn on_sigkill(
        &mut self,
        ev: &Event,
        p: &oomtrace_common::KernelSigkill,
        out: &mut Vec<Finding>,
    ) {
        let h = ev.header;
        let tgid = ev.subject().process_or_thread();
        let target = Task {
            pid: p.target_pid,
            tgid,
            comm: Comm::from_kernel(&p.target_comm),
        };
        let mut sender = sender_of(&h, p);
        sender.memcg_path = sender
            .memcg_id
            .and_then(|m| self.memcg_paths.get(&m).cloned());
        let untracked = p.target_state & target_state::UNTRACKED != 0;
        // Its target already died and was released: the kill was delivered late by the
        // reorder window (or sent to a process already past exit). Nothing is left to follow.
        if self.gone.contains(&VictimKey {
            tgid,
            start_ns: p.target_start_ns,
        }) {
            return;
        }
        // A user process's SIGKILL is never the OOM killer's: followed at once. A process
        // already followed (killed before, by anyone) keeps its first kill.
        if sender.kind == SenderKind::User {
            if self
                .lookup_key(tgid, |k| k.matches(tgid, p.target_start_ns))
                .is_none()
            {
                self.follow_kill(ev, p, target, sender, untracked, false, out);
            }
            return;
        }
        // Already a victim (oom_kill_process seen): record the signal, and the thread it went
        // to (the one holding the mm), which a classic mark names by its thread id.
        if let Some(v) = self.find(tgid, p.target_start_ns) {
            v.timeline.sigkill.get_or_insert(h.ts_ns);
            if p.target_pid != v.key.tgid && v.marked_tid.is_none() {
                v.marked_tid = Some(p.target_pid);
                let key = v.key;
                self.reindex_tid(key, None, Some(p.target_pid));
            }
            return;
        }
        if self.sigkill_to_a_chosen_thread(&h, p) || self.sigkill_to_a_co_victim(&h, p, &target) {
            return;
        }
        self.sigkill_awaiting_its_mark(ev, p, target, sender, untracked, out);
    }

    /// A kernel SIGKILL named by a thread id only (classic tracepoint), right after its sender
    /// chose a victim that has not had its SIGKILL: that victim's thread holding the mm (its
    /// mark will name the same thread). Whether it was.
    fn sigkill_to_a_chosen_thread(
        &mut self,
        h: &oomtrace_common::Header,
        p: &oomtrace_common::KernelSigkill,
    ) -> bool {
        if p.target_tgid == 0
            && let Some(choice) = self.last_choice_by.get(&h.pid).copied()
            && h.ts_ns.saturating_sub(choice.ts) <= CHOICE_PAIRING_NS
            && self
                .victims
                .get(&choice.victim)
                .is_some_and(|v| v.timeline.sigkill.is_none())
        {
            let key = choice.victim;
            let earlier = self.victim_mut(&key).and_then(|v| {
                v.timeline.sigkill = Some(h.ts_ns);
                v.marked_tid.replace(p.target_pid)
            });
            self.reindex_tid(key, earlier, Some(p.target_pid));
            return true;
        }
        false
    }

    /// A kernel SIGKILL sent right after its sender marked a victim, to a process sharing that
    /// victim's mm: killed with it. Whether it was.
    fn sigkill_to_a_co_victim(
        &mut self,
        h: &oomtrace_common::Header,
        p: &oomtrace_common::KernelSigkill,
        target: &Task,
    ) -> bool {
        let tgid = target.tgid;
        // `__oom_kill_process` sends those from the OOM-invoking task's allocation path. A dying PID-namespace init or tracer sends SIGKILLs too, from inside
        // its own `do_exit`, to processes with their own mm: where both mms are known they tell
        // the two apart; where either is not (a classic mark and no kill decision), the
        // sender's state does — a sender inside its own exit is not killing co-victims. Only
        // when that is unknown too (dumps of older layouts) is the kill taken as a co-victim's.
        let killed_with_victim = |victim_mm: Option<u64>| match (victim_mm, p.target_mm) {
            (Some(a), b) if b != 0 => a == b,
            _ => !sender_exiting(p.sender_flags),
        };
        if let Some(last) = self.last_mark_by.get(&h.pid).copied()
            && h.ts_ns.saturating_sub(last.ts) <= SIGKILL_PAIRING_NS
            && last.victim.tgid != tgid
            && killed_with_victim(last.mm)
        {
            let key = VictimKey {
                tgid,
                start_ns: p.target_start_ns,
            };
            let primary = self
                .victim(&last.victim)
                .map(|p| (p.memcg_id, p.trigger.clone()));
            let v = self.victim_entry(key, || target.comm.clone());
            v.timeline.sigkill.get_or_insert(h.ts_ns);
            v.killed_with = Some(last.victim);
            if let Some((memcg_id, trigger)) = primary {
                v.memcg_id = v.memcg_id.or(memcg_id);
                v.trigger = v.trigger.clone().or(trigger);
            }
            return true;
        }
        false
    }

    /// A kernel SIGKILL the OOM killer's or not, told by a mark_victim within the window.
    fn sigkill_awaiting_its_mark(
        &mut self,
        ev: &Event,
        p: &oomtrace_common::KernelSigkill,
        target: Task,
        sender: Sender,
        untracked: bool,
        out: &mut Vec<Finding>,
    ) {
        let h = ev.header;
        // Otherwise wait for the mark_victim that says this was the OOM killer's, following
        // the target meanwhile (its death may come first): not announced, not judged, until
        // the window has passed without a mark.
        let by = (h.tgid != target.tgid)
            .then(|| self.lookup_key(h.tgid, |k| k.tgid == h.tgid))
            .flatten()
            .and_then(|k| self.victims.get(&k))
            .map(|v| (v.key, v.comm.clone(), v.memcg_id));
        let key = self.follow_kill(ev, p, target.clone(), sender, untracked, true, out);
        if self.pending_kills.len() >= MAX_PENDING_KILLS {
            // Decided now: the oldest has waited longest for a mark.
            let oldest = self.pending_kills.remove(0);
            self.decide_pending(oldest, out);
        }
        self.pending_kills.push(PendingKill {
            ts: h.ts_ns,
            target,
            start_ns: p.target_start_ns,
            sender_tid: h.pid,
            by,
            key,
        });
    }

    /// Follows a process SIGKILLed by someone other than the OOM killer: a victim with a
    /// [`Sender`]. A user's kill is announced at once; a kernel one (`awaiting_mark`) once no
    /// mark has claimed it.
    #[allow(clippy::too_many_arguments)]
    fn follow_kill(
        &mut self,
        ev: &Event,
        p: &oomtrace_common::KernelSigkill,
        target: Task,
        sender: Sender,
        untracked: bool,
        awaiting_mark: bool,
        out: &mut Vec<Finding>,
    ) -> VictimKey {
        let key = VictimKey {
            tgid: target.tgid,
            start_ns: p.target_start_ns,
        };
        let mut v = Victim::new(key, target.comm);
        v.lost_at_kill = self.lost;
        v.timeline.sigkill = Some(ev.header.ts_ns);
        v.memcg_id = (p.target_memcg_id != 0).then_some(p.target_memcg_id);
        v.sender = Some(sender);
        v.untracked = untracked;
        v.awaiting_mark = awaiting_mark;
        // The target's mm, where the signal hook read it: a classic mark names none, and the
        // next SIGKILL of a memory.oom.group kill is told from a co-victim's by it.
        if p.target_mm != 0 {
            v.mm = Some(p.target_mm);
        }
        if target.pid != target.tgid {
            v.marked_tid = Some(target.pid);
        }
        self.insert_victim(v);
        if !awaiting_mark {
            self.announce_kill(key, out);
        }
        self.evict_if_full();
        key
    }

    /// Counts and announces a non-OOM kill (JSON; text stays quiet unless it gets stuck).
    fn announce_kill(&mut self, key: VictimKey, out: &mut Vec<Finding>) {
        let Some(v) = self.victims.get(&key).map(Arc::as_ref) else {
            return;
        };
        if self.counts(v) {
            self.summary.other_kills += 1;
            if v.sender_kind() == SenderKind::User {
                self.summary.user_kills += 1;
            }
            if v.untracked {
                self.summary.untracked += 1;
            }
        }
        out.push(Finding::Sigkill {
            victim: Arc::clone(&self.victims[&key]),
        });
    }

    /// A kernel SIGKILL no mark claimed: not an OOM kill. Its target is announced as another
    /// kernel path's kill; one a victim sent to another process is also `collateral` (its
    /// exit's doing: PID namespace teardown, PT_EXITKILL, a CLONE_PIDFD_AUTOKILL pidfd closed).
    fn decide_pending(&mut self, k: PendingKill, out: &mut Vec<Finding>) {
        match self.victim_mut(&k.key) {
            Some(v) if v.awaiting_mark => {
                v.awaiting_mark = false;
                let dead = v.timeline.dead;
                self.announce_kill(k.key, out);
                // Died while its kill waited to be decided: its death, held back, follows.
                if dead.is_some() {
                    self.announce_death(k.key, out);
                }
            }
            Some(_) => {}
            // Released (and forgotten) before the window ended: counted, without a line.
            None => self.summary.other_kills += 1,
        }
        let Some((by, by_comm, memcg_id)) = k.by else {
            return;
        };
        let f = Finding::Collateral {
            target: k.target,
            target_start_ns: k.start_ns,
            by,
            by_comm,
            memcg_id,
        };
        if self.admits(&f) {
            self.summary.collateral += 1;
        }
        out.push(f);
    }

    /// SIGKILLs no mark claimed within the pairing window are not OOM kills. Those a victim
    /// sent to another process are its exit's doing (PID namespace teardown, PT_EXITKILL, the
    /// last close of a CLONE_PIDFD_AUTOKILL pidfd it held: Linux 7.1+).
    fn expire_pending_kills(&mut self, now: u64, out: &mut Vec<Finding>) {
        let is_expired = |k: &PendingKill| now.saturating_sub(k.ts) > SIGKILL_PAIRING_NS;
        // Runs for every event: most find nothing expired, and then allocate nothing.
        if !self.pending_kills.iter().any(is_expired) {
            return;
        }
        let (expired, kept): (Vec<PendingKill>, Vec<PendingKill>) =
            std::mem::take(&mut self.pending_kills)
                .into_iter()
                .partition(is_expired);
        self.pending_kills = kept;
        for k in expired {
            self.decide_pending(k, out);
        }
    }

    fn on_mark(&mut self, ev: &Event, p: &oomtrace_common::MarkVictim) {
        let h = ev.header;
        let has = |bit| p.fields & bit != 0;
        // The pending SIGKILL this mark belongs to (same target, same sender).
        let pending = self
            .pending_kills
            .iter()
            .position(|k| {
                (k.target.pid == p.pid || (has(victim_fields::TASK) && k.target.tgid == p.tgid))
                    && k.sender_tid == h.pid
            })
            .map(|i| self.pending_kills.remove(i));
        let (tgid, start_ns) = if has(victim_fields::TASK) {
            (p.tgid, p.start_ns)
        } else if has(victim_fields::TGID_FROM_PROC) && p.tgid != 0 {
            (p.tgid, pending.as_ref().map_or(0, |k| k.start_ns))
        } else if let Some(k) = &pending {
            (k.target.tgid, k.start_ns)
        } else if let Some(v) = self.find_by_tid(p.pid) {
            (v.key.tgid, v.key.start_ns)
        } else {
            (p.pid, 0)
        };
        // Built only where kept: a victim the SIGKILL already follows has its name (a
        // `String` per mark was 3 % of a replay's instructions).
        let comm = || {
            if has(victim_fields::COMM) {
                Comm::from_kernel(&p.comm)
            } else {
                pending
                    .as_ref()
                    .map(|k| k.target.comm.clone())
                    .unwrap_or_default()
            }
        };
        // The kernel SIGKILL this mark claims was followed meanwhile as another kernel path's:
        // it is the OOM killer's, announced (and counted) as an OOM kill.
        if let Some(k) = &pending
            && let Some(v) = self.victim_mut(&k.key)
            && v.awaiting_mark
        {
            v.awaiting_mark = false;
            v.sender = None;
            self.announce.push(k.key);
        }
        let v = self.victim_entry(VictimKey { tgid, start_ns }, comm);
        if v.comm.is_empty() {
            v.comm = comm();
        }
        v.timeline.marked.get_or_insert(h.ts_ns);
        // Only the chosen victim is marked; processes sharing its mm only get the SIGKILL.
        v.killed_with = None;
        if let Some(k) = &pending {
            v.timeline.sigkill.get_or_insert(k.ts);
        }
        let key = v.key;
        let earlier = v.marked_tid.replace(p.pid);
        self.reindex_tid(key, earlier, Some(p.pid));
        self.deadlines.get_mut().touch(key);
        let Some(v) = self.victims.get_mut(&key).map(Arc::make_mut) else {
            return;
        };
        v.trigger.get_or_insert_with(|| Self::task(&h));
        // The stack the same program wrote just before this mark, in the same task.
        if let Some((ts, stack)) = self.last_stack_by.remove(&h.pid)
            && h.ts_ns.saturating_sub(ts) <= SIGKILL_PAIRING_NS
        {
            v.alloc_stack.get_or_insert(stack);
        }
        if has(victim_fields::TASK) {
            v.memcg_id = Some(p.memcg_id);
        }
        if has(victim_fields::MEMORY) {
            v.rss_kb = Some([p.anon_rss_kb, p.file_rss_kb, p.shmem_rss_kb]);
        }
        if has(victim_fields::OOM_SCORE_ADJ) {
            v.oom_score_adj = Some(p.oom_score_adj);
        }
        if p.mm != 0 {
            v.mm = Some(p.mm);
        }
        let (key, mm) = (v.key, v.mm);
        // A kill (signalled, or no signal hook to say otherwise) joins its invocation's
        // incident; a task marked while already exiting was not killed.
        if v.timeline.sigkill.is_some() || !self.cfg.observability.signal {
            let member = (key, v.comm.clone(), v.memcg_id);
            self.join_incident(&h, member);
        }
        self.last_mark_by.insert(
            h.pid,
            LastMark {
                ts: h.ts_ns,
                victim: key,
                mm,
            },
        );
        if self.last_mark_by.len() > MAX_MEMCGS {
            self.last_mark_by.clear();
        }
    }

    /// A victim's mark by task `h.pid` joins the incident of that task's OOM invocation (a
    /// `memory.oom.group` kill is one incident with several victims).
    fn join_incident(
        &mut self,
        h: &oomtrace_common::Header,
        member: (VictimKey, Comm, Option<u64>),
    ) {
        let (key, v_memcg) = (member.0, member.2);
        let victims = &self.victims;
        let alive = |k: &VictimKey| victims.get(k).is_some_and(|v| !v.is_dead());
        if let Some((id, formed)) = self.incidents.mark(
            h.pid,
            Self::task(h),
            member,
            h.ts_ns,
            self.cfg.observability.oom_kill,
            alive,
            &self.memcg_paths,
        ) {
            if formed && admitted(&self.filter, &self.memcg_paths, key.tgid, v_memcg) {
                self.summary.group_kills += 1;
            }
            let members = self.incidents.members(id);
            // The group scan kills the chosen victim again while it still has its mm, and
            // the kernel's oom_kill counts it twice (no event says so: its mark is not
            // repeated). Certain when it is the allocating task (on the matrix, 5.10 to
            // 7.2, its "Killed process" line is logged twice): counted so, for `reconcile`.
            if formed
                && let Some(first) = members.first()
                && first.tgid == h.tgid
                && let Some(m) = self.victims.get(first).and_then(|v| v.memcg_id)
            {
                *self.kills_by_memcg.entry(m).or_default() += 1;
            }
            for k in members {
                if let Some(v) = self.victim_mut(&k) {
                    v.incident = Some(id);
                }
            }
        }
    }

    /// An exiting thread names its process (`current`'s tid and tgid): a victim the classic
    /// tracepoints keyed by that thread's id, which userspace could not map to its process (the
    /// thread was gone from /proc), is re-keyed to the process.
    fn learn_process_of_thread(&mut self, tid: u32, tgid: u32, start_ns: u64) {
        if tid == tgid || tgid == 0 {
            return;
        }
        let Some(key) = self.lookup_key(tid, |k| k.tgid == tid && k.start_ns == 0) else {
            return;
        };
        if self
            .lookup_key(tgid, |k| k.matches(tgid, start_ns))
            .is_some()
        {
            return;
        }
        let Some(mut v) = self.remove_victim(&key).map(Arc::unwrap_or_clone) else {
            return;
        };
        v.key = VictimKey { tgid, start_ns };
        let new = v.key;
        self.insert_victim(v);
        if let Some(i) = self.announce.iter().position(|k| *k == key) {
            self.announce[i] = new;
        }
    }

    /// A process found at start with SIGKILL pending and not finished exiting.
    fn on_pre_existing(&mut self, ts: u64, p: &oomtrace_common::PreExisting) {
        if self
            .lookup_key(p.pid, |k| k.matches(p.pid, p.start_ns))
            .is_some()
        {
            return;
        }
        let key = VictimKey {
            tgid: p.pid,
            start_ns: p.start_ns,
        };
        let mut v = Victim::new(key, Comm::from_kernel(&p.comm));
        v.pre_existing = true;
        v.timeline.seen = Some(ts);
        v.memcg_id = (p.memcg_id != 0).then_some(p.memcg_id);
        v.lost_at_kill = self.lost;
        if self.counts(&v) {
            self.summary.pre_existing += 1;
        }
        self.insert_victim(v);
        self.evict_if_full();
    }

    fn mark_dead(&mut self, key: VictimKey, ts: u64, how: &'static str, out: &mut Vec<Finding>) {
        self.deadlines.get_mut().touch(key);
        let Some(v) = self.victims.get_mut(&key).map(Arc::make_mut) else {
            return;
        };
        if v.timeline.dead.is_some() {
            return;
        }
        v.timeline.dead = Some(ts);
        v.death_seen = Some(how);
        self.incidents.dead(&key, ts);
        // A kill not yet decided (OOM or not) is announced first, its death right after.
        if v.awaiting_mark {
            return;
        }
        self.announce_death(key, out);
    }

    /// Counts and reports a victim's death (`timeline.dead` set).
    fn announce_death(&mut self, key: VictimKey, out: &mut Vec<Finding>) {
        let Some(v) = self.victims.get(&key).cloned() else {
            return;
        };
        let Some(ts) = v.timeline.dead else {
            return;
        };
        let kill_to_dead_ns = v.killed_at().map(|k| ts.saturating_sub(k));
        if self.counts(&v) && v.is_other_kill() {
            if v.flagged_stuck {
                self.summary.kill_stuck_now = self.summary.kill_stuck_now.saturating_sub(1);
            }
        } else if self.counts(&v) {
            self.summary.dead += 1;
            if v.flagged_stuck {
                self.summary.stuck_now = self.summary.stuck_now.saturating_sub(1);
            }
            let t = &v.timeline;
            if let (Some(w), Some(k)) = (t.reaper_woken, v.killed_at()) {
                record_ns(&mut self.h_reaper, w.saturating_sub(k));
            }
            if let (Some(s), Some(f)) = (t.reaping_started, t.reaping_finished) {
                record_ns(&mut self.h_reaping, f.saturating_sub(s));
            }
            if let Some(d) = kill_to_dead_ns {
                record_ns(&mut self.h_dead, d);
            }
        }
        if kill_to_dead_ns.is_some() || v.pre_existing {
            out.push(Finding::Dead {
                victim: Arc::clone(&v),
                kill_to_dead_ns,
                was_flagged: v.flagged_stuck,
            });
        }
        self.report_incidents(ts, u64::MAX, out);
        // Its release cannot be seen (no free hook; a pre-existing victim is not in the
        // kernel's tracked set): nothing more will happen to it here.
        if !self.cfg.observability.free || v.pre_existing {
            self.remove_victim(&v.key);
        }
    }

    /// Kills counted so far per victim memcg id.
    pub(crate) fn kills_by_memcg(&self) -> &HashMap<u64, u64> {
        &self.kills_by_memcg
    }

    /// A memcg's path (from the cgroup fs live, from the dump in a replay).
    /// The name of a kernel address (`name+0xoff`), for the allocation stacks that follow.
    pub(crate) fn symbol(&mut self, addr: u64, name: &str) {
        if self.symbols.len() >= MAX_SYMBOLS && !self.symbols.contains_key(&addr) {
            self.symbols.clear();
        }
        self.symbols.insert(addr, name.to_string());
    }

    /// The kernel's gfp flag names, for the kill decisions that follow.
    pub(crate) fn set_gfp_names(&mut self, names: crate::kernel::gfp::GfpNames) {
        self.gfp_names = names;
    }

    pub(crate) fn memcg_path(&mut self, id: u64, path: &str) {
        if self.memcg_paths.len() >= MAX_MEMCGS && !self.memcg_paths.contains_key(&id) {
            self.memcg_paths.clear();
        }
        self.memcg_paths.insert(id, path.to_string());
    }

    /// Whether an OOM in `domain` (the memcg whose limit was hit; 0 = the whole machine) can
    /// be waiting on a victim in `memcg`: the same memcg, or one below it.
    fn in_domain(&self, domain: u64, memcg: Option<u64>) -> bool {
        self.domain_members(domain)(memcg)
    }

    /// [`Tracker::in_domain`] of `domain`, its path looked up once (an invocation asks it of
    /// every victim held) and compared without building a prefix.
    fn domain_members(&self, domain: u64) -> impl Fn(Option<u64>) -> bool + '_ {
        let path = (domain != 0)
            .then(|| self.memcg_paths.get(&domain))
            .flatten();
        move |memcg| {
            if domain == 0 {
                return true;
            }
            let Some(memcg) = memcg else {
                return false;
            };
            if memcg == domain {
                return true;
            }
            let Some(d) = path else {
                return false;
            };
            self.memcg_paths.get(&memcg).is_some_and(|m| {
                d == "/"
                    || m.strip_prefix(d.trim_end_matches('/'))
                        .is_some_and(|below| below.starts_with('/'))
            })
        }
    }

    /// The kernel's own OOM notification of a memcg: invocations counted (unless an invocation
    /// hook counts them), and the OOM-killer-disabled hang begun or ended.
    fn on_memcg_oom(&mut self, ts: u64, p: &oomtrace_common::MemcgOom, out: &mut Vec<Finding>) {
        use oomtrace_common::memcg_oom::{KILL_DISABLED, REMOVED, STATE_KNOWN, UNDER_OOM};
        let id = p.memcg_id;
        // Whoever recorded these watched the kernel's notifications: invocations are seen.
        self.summary.livelock_observable = true;
        if p.invocations > 0 {
            if self.notified_invocations.len() >= MAX_MEMCGS
                && !self.notified_invocations.contains_key(&id)
            {
                self.notified_invocations.clear();
            }
            *self.notified_invocations.entry(id).or_default() += u64::from(p.invocations);
            if !self.cfg.observability.oom_invoke {
                for _ in 0..p.invocations.min(1_000) {
                    self.count_invocation(id, ts, out);
                }
            }
        }
        if p.kills > 0 {
            self.domain_killed(id, ts, out);
        } else if p.invocations > 0
            && p.flags & KILL_DISABLED == 0
            && !(self.cfg.observability.oom_invoke && self.cfg.observability.oom_invoke_done)
        {
            // No verdict hook: invocations that kill nothing, no victim of the domain pending
            // (its OOMs wait on no one), are the counters' own "nothing killable". With a
            // victim pending the kernel may be waiting on it or skipping it: not told.
            let pending = self
                .victims
                .values()
                .any(|v| !v.is_dead() && self.in_domain(id, v.memcg_id));
            if !pending {
                for _ in 0..p.invocations.min(1_000) {
                    self.nothing_killable(id, ts, out);
                }
            }
        }
        let ended = if p.flags & REMOVED != 0 {
            Some("the memcg was removed")
        } else if p.flags & STATE_KNOWN == 0 {
            None
        } else if p.flags & UNDER_OOM == 0 {
            Some("no longer under OOM (memory was freed, a task died or the limit was raised)")
        } else if p.flags & KILL_DISABLED == 0 {
            Some("the OOM killer was re-enabled (oom_kill_disable 0)")
        } else {
            // Hung: reported once, at the domain (under_oom is set on every memcg below the
            // one whose limit was hit, which inherit oom_kill_disable).
            let covered = self
                .oom_disabled
                .keys()
                .any(|a| *a == id || self.in_domain(*a, Some(id)));
            if !covered {
                self.oom_disabled.insert(id, ts);
                out.push(Finding::OomKillerDisabled {
                    memcg_id: id,
                    since_ns: ts,
                    tasks: Vec::new(),
                });
            }
            None
        };
        if let Some(how) = ended
            && let Some(since) = self.oom_disabled.remove(&id)
        {
            out.push(Finding::OomKillerDisabledEnded {
                memcg_id: id,
                lasted_ns: ts.saturating_sub(since),
                how,
            });
        }
    }

    /// The kernel's memcg notifications are watched: OOM invocations (the livelock signature)
    /// are seen without an invocation hook.
    pub(crate) fn memcg_notifications_watched(&mut self) {
        self.summary.livelock_observable = true;
    }

    /// OOM invocations per OOM domain from the kernel's memcg notifications.
    #[cfg(test)]
    pub(crate) fn notified_invocations(&self) -> &HashMap<u64, u64> {
        &self.notified_invocations
    }

    /// Memcgs hung now with the OOM killer disabled.
    #[cfg(test)]
    pub(crate) fn oom_disabled_now(&self) -> usize {
        self.oom_disabled.len()
    }

    /// `mem_cgroup_out_of_memory` returned in thread `tid`: the kernel's verdict. False: it
    /// found no task it may kill. True without a kill between: selection was aborted because a
    /// victim is pending (its mm without MMF_OOM_SKIP) — or the allocating task is itself dying
    /// (ignored when it is a victim we follow), or memory was freed meanwhile (the margin check
    /// before selecting: once, not again and again, since the charge then succeeds).
    fn on_invoke_done(&mut self, tid: u32, killed: bool, ts: u64, out: &mut Vec<Finding>) {
        let Some(inv) = self.invoking.remove(&tid) else {
            return;
        };
        let domain = inv.memcg;
        if !killed {
            self.nothing_killable(domain, ts, out);
            return;
        }
        if inv.killed || self.lookup(tid, |_| true).is_some() {
            return;
        }
        // Aborted: a victim in this domain is still waited on. Livelock if it is stuck.
        let threshold = self.cfg.livelock_threshold;
        let keys: Vec<VictimKey> = self
            .victims
            .values()
            .filter(|v| !v.is_dead() && self.in_domain(domain, v.memcg_id))
            .map(|v| v.key)
            .collect();
        for key in keys {
            let Some(v) = self.victim_mut(&key) else {
                continue;
            };
            if v.flagged_stuck {
                v.aborted_since_stuck = v.aborted_since_stuck.saturating_add(1);
            }
            if v.flagged_stuck
                && !v.livelock_reported
                && v.invocations_since_kill >= threshold
                && v.aborted_since_stuck >= MIN_ABORTED_VERDICTS
            {
                v.livelock_reported = true;
                let f = Finding::Livelock {
                    memcg_id: domain,
                    invocations: v.invocations_since_kill,
                    window_ns: v.watched_since().map_or(0, |k| ts.saturating_sub(k)),
                    victim: v.key,
                    comm: v.comm.clone(),
                    verdict: "aborted",
                };
                if self.admits(&f) {
                    self.summary.livelocks += 1;
                }
                out.push(f);
            }
        }
    }

    /// An invocation of `domain` that found nothing it may kill.
    fn nothing_killable(&mut self, domain: u64, ts: u64, out: &mut Vec<Finding>) {
        if self.domains.len() >= MAX_MEMCGS && !self.domains.contains_key(&domain) {
            self.domains.clear();
        }
        let threshold = self.cfg.livelock_threshold;
        let d = self.domains.entry(domain).or_default();
        if d.nothing == 0 || ts.saturating_sub(d.nothing_last) > NOTHING_KILLABLE_QUIET_NS {
            d.nothing = 0;
            d.nothing_since = ts;
        }
        d.nothing += 1;
        d.nothing_last = ts;
        if d.nothing < threshold || d.reported.is_some() {
            return;
        }
        d.reported = Some(ts);
        let (invocations, since) = (d.nothing, d.nothing_since);
        let already_reaped = self
            .victims
            .values()
            .filter(|v| !v.is_dead() && self.in_domain(domain, v.memcg_id))
            .map(|v| Task {
                pid: v.key.tgid,
                tgid: v.key.tgid,
                comm: v.comm.clone(),
            })
            .collect();
        out.push(Finding::NothingKillable {
            memcg_id: domain,
            invocations,
            window_ns: ts.saturating_sub(since),
            already_reaped,
            tasks: Vec::new(),
        });
    }

    /// A kill in `memcg` (or below a domain): the domains above it found something to kill.
    fn domain_killed(&mut self, memcg: u64, ts: u64, out: &mut Vec<Finding>) {
        let hit: Vec<u64> = self
            .domains
            .keys()
            .copied()
            .filter(|d| self.in_domain(*d, Some(memcg)))
            .collect();
        for d in hit {
            if let Some(v) = self.domains.remove(&d)
                && let Some(since) = v.reported
            {
                out.push(Finding::NothingKillableEnded {
                    memcg_id: d,
                    lasted_ns: ts.saturating_sub(since),
                    how: "a task of the domain was killed",
                });
            }
        }
    }

    /// Domains with no nothing-killable invocation for a while are no longer in that state.
    fn quiet_domains(&mut self, now: u64, out: &mut Vec<Finding>) {
        let quiet: Vec<u64> = self
            .domains
            .iter()
            .filter(|(_, v)| now.saturating_sub(v.nothing_last) > NOTHING_KILLABLE_QUIET_NS)
            .map(|(d, _)| *d)
            .collect();
        for d in quiet {
            if let Some(v) = self.domains.remove(&d)
                && let Some(since) = v.reported
            {
                out.push(Finding::NothingKillableEnded {
                    memcg_id: d,
                    lasted_ns: v.nothing_last.saturating_sub(since),
                    how: "no OOM invocation finding nothing killable for 10 s",
                });
            }
        }
    }

    fn count_invocation(&mut self, memcg_id: u64, ts: u64, out: &mut Vec<Finding>) {
        let threshold = self.cfg.livelock_threshold;
        let verdicts = self.cfg.observability.oom_invoke_done && self.cfg.observability.oom_invoke;
        let in_domain: Vec<VictimKey> = {
            let member = self.domain_members(memcg_id);
            self.victims
                .values()
                .filter(|v| !v.is_dead() && member(v.memcg_id))
                .map(|v| v.key)
                .collect()
        };
        for key in in_domain {
            // Its count and whether a livelock was reported: not its due time.
            let Some(v) = self.victim_mut_untimed(&key) else {
                continue;
            };
            v.invocations_since_kill += 1;
            // With the invocation's return seen, the kernel's verdict decides (see
            // `on_invoke_done`); without it the finding says its verdict is unknown.
            if !verdicts
                && v.flagged_stuck
                && !v.livelock_reported
                && v.invocations_since_kill >= threshold
            {
                v.livelock_reported = true;
                let f = Finding::Livelock {
                    memcg_id,
                    invocations: v.invocations_since_kill,
                    window_ns: v.watched_since().map_or(0, |k| ts.saturating_sub(k)),
                    victim: v.key,
                    comm: v.comm.clone(),
                    verdict: "unknown",
                };
                if self.admits(&f) {
                    self.summary.livelocks += 1;
                }
                out.push(f);
            }
        }
    }

    /// Flags what is overdue as of `judged`; durations are reported as of `now`.
    /// Reports the `memory.oom.group` incidents settled at `judged` (see [`incident`]).
    fn report_incidents(&mut self, judged: u64, timeout: u64, out: &mut Vec<Finding>) {
        for i in self.incidents.settled(judged, timeout) {
            out.push(Finding::GroupKill {
                incident: Box::new(i),
            });
        }
    }

    fn check_timeouts(&mut self, judged: u64, now: u64, out: &mut Vec<Finding>) {
        let made = out.len();
        self.flag_overdue(judged, now, out);
        // A victim changes there only where it is flagged, each time with a finding of it.
        for f in &out[made..] {
            if let Some(v) = f.victim() {
                self.deadlines.get_mut().touch(v.key);
            }
        }
    }

    fn flag_overdue(&mut self, judged: u64, now: u64, out: &mut Vec<Finding>) {
        self.report_incidents(judged, self.cfg.timeout_ns, out);
        self.quiet_domains(judged, out);
        let obs = self.cfg.observability;
        let mut stuck_new = 0;
        let mut kill_stuck_new = 0;
        let mut unobservable_new = 0;
        let death_seen = if self.cfg.death_at_last_exit {
            obs.exit
        } else {
            obs.death
        };
        let timeout = self.cfg.timeout_ns;
        // Nothing below is due before the deadline index's first (`victim_due` follows these
        // rules): a tick in an OOM storm, with hundreds of victims held, skips the walk.
        if self
            .deadlines
            .get_mut()
            .first(&self.victims, &self.cfg)
            .is_none_or(|due| due > judged)
        {
            return;
        }
        for v in self.victims.values_mut().map(Arc::make_mut) {
            let Some(since_ts) = v.watched_since() else {
                continue;
            };
            // A kernel SIGKILL still waiting for its mark is judged once decided (the pairing
            // window, 50 ms, is far below any timeout).
            if v.awaiting_mark {
                continue;
            }
            let counted = admitted(&self.filter, &self.memcg_paths, v.key.tgid, v.memcg_id);
            if !v.is_dead() {
                let allowed = if v.killed_at().is_some() {
                    timeout
                } else {
                    PRE_EXISTING_GRACE_NS
                };
                if judged.saturating_sub(since_ts) < allowed {
                    continue;
                }
                let since = now.saturating_sub(since_ts);
                if !death_seen {
                    if let Some(f) = unobservable(v, self.cfg.death_at_last_exit) {
                        unobservable_new += u64::from(counted);
                        out.push(f);
                    }
                    continue;
                }
                if !v.flagged_stuck {
                    v.flagged_stuck = true;
                    let where_stuck = v.where_stuck(self.cfg.kernel)
                        + &(if obs.reaper && v.sender.is_none() {
                            v.reaper_note(judged)
                        } else {
                            String::new()
                        });
                    let (stage, unconfirmed_lost) =
                        (v.stage(), self.lost.saturating_sub(v.lost_at_kill));
                    let victim = Arc::new(v.clone());
                    if v.is_other_kill() {
                        kill_stuck_new += u64::from(counted);
                        out.push(Finding::KillStuck {
                            stage,
                            since_kill_ns: since,
                            where_stuck,
                            unconfirmed_lost,
                            victim,
                        });
                    } else {
                        stuck_new += u64::from(counted);
                        out.push(Finding::Stuck {
                            stage,
                            since_kill_ns: since,
                            where_stuck,
                            unconfirmed_lost,
                            victim,
                        });
                    }
                }
            } else if let Some(dead) = v.timeline.dead
                && obs.free
                && v.timeline.released.is_none()
                && !v.flagged_release
                && judged.saturating_sub(dead) >= self.cfg.release_timeout_ns
            {
                v.flagged_release = true;
                out.push(Finding::NotReleased {
                    since_dead_ns: now.saturating_sub(dead),
                    victim: Arc::new(v.clone()),
                });
            }
        }
        self.count_flags(stuck_new, kill_stuck_new, unobservable_new);
    }

    /// Victims newly flagged stuck (SIGKILLed by the OOM killer, by another sender) and
    /// unobservable, counted in the summary.
    fn count_flags(&mut self, stuck: u64, kill_stuck: u64, unobservable: u64) {
        self.summary.kill_stuck_now += kill_stuck;
        self.summary.kill_flagged_total += kill_stuck;
        self.summary.stuck_now += stuck;
        self.summary.flagged_total += stuck;
        self.summary.unobservable += unobservable;
    }

    /// Keeps memory bounded: drops the oldest dead victims first; then, in a kill storm, the
    /// newest unflagged victim of another sender (the likeliest to die in milliseconds, and
    /// the one that keeps a stuck process killed earlier followed); then the oldest at all.
    fn evict_if_full(&mut self) {
        while self.victims.len() > MAX_VICTIMS {
            let oldest = self
                .victims
                .values()
                .map(Arc::as_ref)
                .filter(|v| v.is_dead())
                .min_by_key(|v| v.killed_at())
                .or_else(|| {
                    self.victims
                        .values()
                        .map(Arc::as_ref)
                        .filter(|v| v.is_other_kill() && !v.flagged_stuck)
                        .max_by_key(|v| v.killed_at())
                })
                .or_else(|| {
                    self.victims
                        .values()
                        .map(Arc::as_ref)
                        .min_by_key(|v| v.killed_at())
                })
                .map(|v| v.key);
            match oldest {
                Some(k) => {
                    if let Some(v) = self.remove_victim(&k)
                        && !v.is_dead()
                    {
                        // Said in the summary: its death is no longer judged.
                        self.summary.dropped_live += 1;
                        if v.flagged_stuck {
                            if v.is_other_kill() {
                                self.summary.kill_stuck_now =
                                    self.summary.kill_stuck_now.saturating_sub(1);
                            } else {
                                self.summary.stuck_now = self.summary.stuck_now.saturating_sub(1);
                            }
                        }
                    }
                }
                None => break,
            }
        }
    }

    pub(crate) fn victim(&self, key: &VictimKey) -> Option<&Victim> {
        self.victims.get(key).map(Arc::as_ref)
    }

    /// Victims not yet dead.
    pub(crate) fn unresolved(&self) -> impl Iterator<Item = &Victim> {
        self.victims
            .values()
            .map(Arc::as_ref)
            .filter(|v| !v.is_dead())
    }

    /// The earliest death of a victim whose release is still awaited (not seen, not yet
    /// flagged as missing): the kernel submits releases without waking the reader, so the live
    /// loop wakes for them (see live.rs `next_wake`).
    pub(crate) fn release_awaited_since(&self) -> Option<u64> {
        if !self.cfg.observability.free {
            return None;
        }
        self.victims
            .values()
            .filter(|v| v.timeline.released.is_none() && !v.flagged_release)
            .filter_map(|v| v.timeline.dead)
            .min()
    }

    /// Victims dead and not released (their release event may have been lost).
    pub(crate) fn dead_unreleased(&self) -> Vec<u32> {
        self.victims
            .values()
            .filter(|v| v.timeline.dead.is_some() && v.timeline.released.is_none())
            .map(|v| v.key.tgid)
            .collect()
    }

    /// Whether a victim with this process id is held.
    pub(crate) fn follows(&self, tgid: u32) -> bool {
        self.by_id.get(&tgid).is_some_and(|v| !v.is_empty())
    }

    /// Victims currently held (bounded).
    pub(crate) fn len(&self) -> usize {
        self.victims.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.victims.is_empty()
    }

    pub fn summary(&self) -> Summary {
        let mut s = self.summary.clone();
        s.not_released_now = self
            .victims
            .values()
            .filter(|v| v.flagged_release && v.timeline.released.is_none())
            .count() as u64;
        s.kill_to_dead = percentiles(&self.h_dead);
        s.kill_to_released = percentiles(&self.h_released);
        s.kill_to_reaper_wake = percentiles(&self.h_reaper);
        s.reaping = percentiles(&self.h_reaping);
        s
    }
}

#[cfg(test)]
mod tests;

/// The finding for a victim whose death cannot be seen here, once: its process exits are not
/// hooked (`death_at_last_exit`, where death is the last exit), or no pidfd could be opened.
fn unobservable(v: &mut Victim, death_at_last_exit: bool) -> Option<Finding> {
    if v.flagged_unobservable {
        return None;
    }
    v.flagged_unobservable = true;
    let why = if death_at_last_exit {
        "process exits are not hooked on this kernel"
    } else {
        "no pidfd could be opened for it (pidfd_open needs Linux 5.3)"
    };
    Some(Finding::Unobservable {
        victim: Arc::new(v.clone()),
        why: why.into(),
    })
}
