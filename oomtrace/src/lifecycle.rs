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

use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;
use oomtrace_common::{USERSPACE_CPU, group_dead_source, sender_state, victim_fields};

use crate::event::{Event, Payload, cstr};

mod config;
mod finding;
mod summary;
mod victim;

pub use config::{Filter, Observability, TrackerConfig, kernel_version};
pub use finding::Finding;
pub use summary::{Percentiles, Summary};
use summary::{histogram, percentiles, record_ns};
pub use victim::{AllocStackInfo, KillDecision, MemcgAt, Stage, Task, Timeline, Victim, VictimKey};

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
pub const DEFAULT_LIVELOCK_THRESHOLD: u32 = 10;
/// Events are held this long and released in timestamp order (events from different CPUs can
/// reach the ring buffer slightly out of order).
pub const REORDER_NS: u64 = 10_000_000;
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
    by: Option<(VictimKey, String, Option<u64>)>,
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
    /// Boxed, like the held events: a victim is large, and B-tree nodes move their values.
    victims: BTreeMap<VictimKey, Box<Victim>>,
    /// tgid and marked thread id → victims (keeps lookups O(1) with many victims held).
    by_id: HashMap<u32, Vec<VictimKey>>,
    pending_kills: Vec<PendingKill>,
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
    /// The last allocation stack each task recorded (by thread id): its mark of a victim comes
    /// right after, from the same kernel program.
    last_stack_by: HashMap<u32, (u64, AllocStackInfo)>,
    /// The latest state read of each memcg (id 0: the machine) at a kill, with its time.
    memcg_states: HashMap<u64, (u64, oomtrace_common::MemcgState)>,
    /// Kills counted per victim memcg (to reconcile with the kernel's own counters).
    kills_by_memcg: HashMap<u64, u64>,
    /// Victims created by the event being applied, announced after it.
    announce: Vec<VictimKey>,
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

fn admitted(filter: &Filter, paths: &HashMap<u64, String>, tgid: u32, memcg: Option<u64>) -> bool {
    !filter.active()
        || (filter.pid_ok(tgid)
            && filter.memcg_ok(memcg.and_then(|m| paths.get(&m)).map(String::as_str)))
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker {
            cfg,
            reorder: BTreeMap::new(),
            seq: 0,
            latest_ts: 0,
            latest_kernel_ts: 0,
            victims: BTreeMap::new(),
            by_id: HashMap::new(),
            pending_kills: Vec::new(),
            last_mark_by: HashMap::new(),
            last_choice_by: HashMap::new(),
            memcg_paths: HashMap::new(),
            symbols: HashMap::new(),
            last_stack_by: HashMap::new(),
            memcg_states: HashMap::new(),
            kills_by_memcg: HashMap::new(),
            announce: Vec::new(),
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

    pub fn config(&self) -> &TrackerConfig {
        &self.cfg
    }

    /// Counts only what `filter` admits from now on.
    pub fn set_filter(&mut self, filter: Filter) {
        self.filter = filter;
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Whether the filter admits a finding: its process and memcg (paths as told by
    /// [`Tracker::memcg_path`]). The session shows exactly what the summary counts.
    pub fn admits(&self, f: &Finding) -> bool {
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
        self.reorder
            .insert((ev.header.ts_ns, self.seq), Box::new(*ev));
        // Released up to what the ring has been read to: an event userspace observed (stamped
        // when seen, e.g. a death through a pidfd) may run ahead of kernel events still in the
        // ring, which must come first (a kill's mark before its victim's death). Ticks, which
        // follow a full read of the ring, release the rest.
        self.release_until(self.latest_kernel_ts.saturating_sub(REORDER_NS), out);
    }

    /// Events dropped by a full ring buffer (the running total is `total`).
    pub fn on_lost(&mut self, total: u64) {
        self.lost = self.lost.max(total);
        self.summary.lost_events = self.lost;
    }

    /// Advances time to `now_ns` (CLOCK_MONOTONIC): releases held events, flags timeouts.
    /// Everything up to `now_ns - REORDER_NS` has been applied, so that is the instant judged:
    /// an exit still in the reorder window can never be mistaken for a stuck victim.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Finding>) {
        let judged = now_ns.saturating_sub(REORDER_NS);
        self.release_until(judged, out);
        // A kill waiting for its mark gives up on it only once a later event has arrived (its
        // events may still be in the ring: under emulation userspace reads them tens of ms
        // late), or after MARK_GIVE_UP_NS of silence.
        let heard = judged
            .min(self.latest_kernel_ts)
            .max(judged.saturating_sub(MARK_GIVE_UP_NS));
        self.announce_ready(heard, out);
        self.check_timeouts(judged, now_ns, out);
    }

    /// Processes every held event and judges at `now_ns` (end of a session or a replay).
    pub fn finish(&mut self, now_ns: u64, out: &mut Vec<Finding>) {
        self.release_until(u64::MAX, out);
        self.announce_ready(u64::MAX, out);
        self.check_timeouts(now_ns, now_ns, out);
    }

    /// The earliest `tick` time at which something could be flagged: replays tick exactly
    /// there instead of every few milliseconds.
    pub fn next_tick_due(&self) -> Option<u64> {
        let cfg = &self.cfg;
        let held = self
            .reorder
            .keys()
            .next()
            .map(|(ts, _)| ts.saturating_add(REORDER_NS));
        let pending = self
            .pending_kills
            .iter()
            .map(|k| k.ts.saturating_add(SIGKILL_PAIRING_NS + 1 + REORDER_NS))
            .min();
        let unannounced = self
            .announce
            .iter()
            .filter_map(|k| self.victims.get(k)?.timeline.sigkill)
            .map(|ts| ts.saturating_add(SIGKILL_PAIRING_NS + 1 + REORDER_NS))
            .min();
        self.victims
            .values()
            .filter_map(|v| {
                let since = v.watched_since()?;
                match v.timeline.dead {
                    None if !v.flagged_stuck && !v.flagged_unobservable => {
                        let allowed = if v.killed_at().is_some() {
                            cfg.timeout_ns
                        } else {
                            PRE_EXISTING_GRACE_NS
                        };
                        Some(since.saturating_add(allowed))
                    }
                    Some(dead)
                        if cfg.observability.free
                            && v.timeline.released.is_none()
                            && !v.flagged_release =>
                    {
                        Some(dead.saturating_add(cfg.release_timeout_ns))
                    }
                    _ => None,
                }
            })
            .min()
            .map(|d| d.saturating_add(REORDER_NS))
            .into_iter()
            .chain(held)
            .chain(pending)
            .chain(unannounced)
            .min()
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
        self.victims.insert(key, Box::new(v));
    }

    fn remove_victim(&mut self, key: &VictimKey) -> Option<Victim> {
        let v = *self.victims.remove(key)?;
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

    fn find(&mut self, tgid: u32, start_ns: u64) -> Option<&mut Victim> {
        let key = self.lookup(tgid, |v| v.key.matches(tgid, start_ns))?;
        self.victims.get_mut(&key).map(Box::as_mut)
    }

    /// A victim by a thread id the kernel named (mark_victim's pid, reaper pid).
    fn find_by_tid(&mut self, tid: u32) -> Option<&mut Victim> {
        let key = self.lookup(tid, |v| v.marked_tid == Some(tid) || v.key.tgid == tid)?;
        self.victims.get_mut(&key).map(Box::as_mut)
    }

    fn task(h: &oomtrace_common::Header) -> Task {
        Task {
            pid: h.pid,
            tgid: h.tgid,
            comm: cstr(&h.comm),
        }
    }

    /// Finds or creates the victim (tgid, start); emits `Killed` when created.
    fn victim_entry(&mut self, key: VictimKey, comm: String) -> &mut Victim {
        let existing = self.lookup(key.tgid, |v| v.key.matches(key.tgid, key.start_ns));
        let key = match existing {
            Some(k) if k.start_ns == 0 && key.start_ns != 0 => {
                // Learnt the start time: re-key.
                let mut v = self.remove_victim(&k).expect("present");
                v.key = key;
                self.insert_victim(v);
                key
            }
            Some(k) => k,
            None => {
                let mut v = Victim::new(key, comm);
                v.lost_at_kill = self.lost;
                self.insert_victim(v);
                self.evict_if_full();
                // Announced (and counted) once its SIGKILL or its mark is seen (see `apply`).
                self.announce.push(key);
                key
            }
        };
        self.victims
            .get_mut(&key)
            .map(Box::as_mut)
            .expect("present")
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
        let obs = self.cfg.observability;
        let mut waiting = Vec::new();
        for key in std::mem::take(&mut self.announce) {
            let Some(v) = self.victims.get_mut(&key).map(Box::as_mut) else {
                continue;
            };
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
                    victim: Box::new(v.clone()),
                });
            } else {
                v.already_exiting = true;
                if counted {
                    self.summary.marked_exiting += 1;
                }
                out.push(Finding::Marked {
                    victim: Box::new(v.clone()),
                });
            }
        }
        self.announce = waiting;
    }

    fn apply_event(&mut self, ev: &Event, out: &mut Vec<Finding>) {
        let h = ev.header;
        let ts = h.ts_ns;
        match ev.payload {
            Payload::OomInvoke(p) => self.count_invocation(p.memcg_id, ts, out),
            Payload::OomInvokeDone(_) => {}
            Payload::OomKill(p) => {
                let key = VictimKey {
                    tgid: p.chosen_tgid,
                    start_ns: p.chosen_start_ns,
                };
                let v = self.victim_entry(key, cstr(&p.chosen_comm));
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
                let Some(v) = self.victims.get_mut(&key).map(Box::as_mut) else {
                    return;
                };
                v.domain_id = Some(p.memcg_id);
                v.decision = Some(KillDecision {
                    chosen_points: p.chosen_points,
                    totalpages: p.totalpages,
                    constraint: p.constraint,
                    order: p.order,
                    message: cstr(&p.message),
                });
            }
            Payload::KernelSigkill(p) => self.on_sigkill(ev, &p),
            Payload::MarkVictim(p) => self.on_mark(ev, &p),
            Payload::MemcgState(p) => {
                if self.memcg_states.len() >= MAX_MEMCGS
                    && !self.memcg_states.contains_key(&p.memcg_id)
                {
                    self.memcg_states.clear();
                }
                self.memcg_states.insert(p.memcg_id, (ts, p));
            }
            Payload::AllocStack(p) => {
                let stack = AllocStackInfo::new(&p, &self.symbols);
                if self.last_stack_by.len() >= MAX_MEMCGS {
                    self.last_stack_by.clear();
                }
                self.last_stack_by.insert(h.pid, (ts, stack));
            }
            Payload::WakeReaper(r) => {
                if let Some(v) = self.find_by_tid(r.pid) {
                    v.timeline.reaper_woken.get_or_insert(ts);
                }
            }
            Payload::StartReaping(r) => {
                if let Some(v) = self.find_by_tid(r.pid) {
                    v.timeline.reaping_started.get_or_insert(ts);
                    // A later attempt: the one before failed to unmap everything.
                    v.timeline.reaping_finished = None;
                    v.reaper_attempt(ts);
                }
            }
            Payload::FinishReaping(r) => {
                if let Some(v) = self.find_by_tid(r.pid) {
                    v.timeline.reaping_finished = Some(ts);
                }
            }
            Payload::SkipReaping(r) => {
                if let Some(v) = self.find_by_tid(r.pid) {
                    v.reaper_skips += 1;
                    v.reaper_attempt(ts);
                }
            }
            Payload::TaskExit(p) => {
                let known = p.group_dead_source != group_dead_source::UNKNOWN;
                let legacy = self.cfg.death_at_last_exit;
                self.learn_process_of_thread(h.pid, h.tgid, p.start_ns);
                let Some(v) = self.find(h.tgid, p.start_ns) else {
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
                let how = crate::render::events::exit_seen_name(p.how);
                // By its pid; else by the thread the kernel named it by (classic tracepoints
                // name the marked thread, which is not the leader when the leader had exited).
                let key = self
                    .lookup(p.pid, |v| v.key.matches(p.pid, p.start_ns))
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
            Payload::TaskFree(p) => {
                if self.find(p.pid, p.start_ns).is_none() {
                    return;
                }
                // Released implies dead, even if its death was not seen.
                if let Some(key) = self.find(p.pid, p.start_ns).map(|v| v.key) {
                    self.mark_dead(key, ts, "released", out);
                }
                let Some(v) = self.find(p.pid, p.start_ns) else {
                    return;
                };
                v.timeline.released.get_or_insert(ts);
                let v = v.clone();
                let counted = self.counts(&v);
                if counted {
                    self.summary.released += 1;
                }
                if let Some(k) = v.killed_at() {
                    let d = ts.saturating_sub(k);
                    if counted {
                        record_ns(&mut self.h_released, d);
                    }
                    out.push(Finding::Released {
                        victim: Box::new(v.clone()),
                        kill_to_released_ns: d,
                    });
                }
                self.remove_victim(&v.key);
            }
        }
    }

    fn on_sigkill(&mut self, ev: &Event, p: &oomtrace_common::KernelSigkill) {
        let h = ev.header;
        let tgid = ev.subject().process_or_thread();
        let target = Task {
            pid: p.target_pid,
            tgid,
            comm: cstr(&p.target_comm),
        };
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
        // Named by a thread id only (classic tracepoint), right after its sender chose a victim
        // that has not had its SIGKILL: that victim's thread holding the mm. Its mark will name
        // the same thread.
        if p.target_tgid == 0
            && let Some(choice) = self.last_choice_by.get(&h.pid).copied()
            && h.ts_ns.saturating_sub(choice.ts) <= CHOICE_PAIRING_NS
            && self
                .victims
                .get(&choice.victim)
                .is_some_and(|v| v.timeline.sigkill.is_none())
        {
            let key = choice.victim;
            let earlier = self.victims.get_mut(&key).map(Box::as_mut).and_then(|v| {
                v.timeline.sigkill = Some(h.ts_ns);
                v.marked_tid.replace(p.target_pid)
            });
            self.reindex_tid(key, earlier, Some(p.target_pid));
            return;
        }
        // Sent right after its sender marked a victim, to a process sharing that victim's mm:
        // killed with it (`__oom_kill_process` sends those from the OOM-invoking task's
        // allocation path). A dying PID-namespace init or tracer sends SIGKILLs too, from inside
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
            let v = self.victim_entry(key, target.comm.clone());
            v.timeline.sigkill.get_or_insert(h.ts_ns);
            v.killed_with = Some(last.victim);
            if let Some((memcg_id, trigger)) = primary {
                v.memcg_id = v.memcg_id.or(memcg_id);
                v.trigger = v.trigger.clone().or(trigger);
            }
            return;
        }
        // Otherwise wait for the mark_victim that says this was the OOM killer's.
        let by = (h.tgid != target.tgid)
            .then(|| self.lookup(h.tgid, |v| v.key.tgid == h.tgid))
            .flatten()
            .and_then(|k| self.victims.get(&k))
            .map(|v| (v.key, v.comm.clone(), v.memcg_id));
        self.pending_kills.push(PendingKill {
            ts: h.ts_ns,
            target,
            start_ns: p.target_start_ns,
            sender_tid: h.pid,
            by,
        });
    }

    /// SIGKILLs no mark claimed within the pairing window are not OOM kills. Those a victim
    /// sent to another process are its exit's doing (PID namespace teardown, PT_EXITKILL).
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
            let Some((by, by_comm, memcg_id)) = k.by else {
                continue;
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
        let comm = if has(victim_fields::COMM) {
            cstr(&p.comm)
        } else {
            pending
                .as_ref()
                .map(|k| k.target.comm.clone())
                .unwrap_or_default()
        };
        let trigger = Self::task(&h);
        let v = self.victim_entry(VictimKey { tgid, start_ns }, comm.clone());
        if v.comm.is_empty() {
            v.comm = comm;
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
        let Some(v) = self.victims.get_mut(&key).map(Box::as_mut) else {
            return;
        };
        v.trigger.get_or_insert(trigger);
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

    /// An exiting thread names its process (`current`'s tid and tgid): a victim the classic
    /// tracepoints keyed by that thread's id, which userspace could not map to its process (the
    /// thread was gone from /proc), is re-keyed to the process.
    fn learn_process_of_thread(&mut self, tid: u32, tgid: u32, start_ns: u64) {
        if tid == tgid || tgid == 0 {
            return;
        }
        let Some(key) = self.lookup(tid, |v| v.key.tgid == tid && v.key.start_ns == 0) else {
            return;
        };
        if self
            .lookup(tgid, |v| v.key.matches(tgid, start_ns))
            .is_some()
        {
            return;
        }
        let Some(mut v) = self.remove_victim(&key) else {
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
        if self.find(p.pid, p.start_ns).is_some() {
            return;
        }
        let key = VictimKey {
            tgid: p.pid,
            start_ns: p.start_ns,
        };
        let mut v = Victim::new(key, cstr(&p.comm));
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
        let Some(v) = self.victims.get_mut(&key).map(Box::as_mut) else {
            return;
        };
        if v.timeline.dead.is_some() {
            return;
        }
        v.timeline.dead = Some(ts);
        v.death_seen = Some(how);
        let v = v.clone();
        let kill_to_dead_ns = v.killed_at().map(|k| ts.saturating_sub(k));
        if self.counts(&v) {
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
                victim: Box::new(v.clone()),
                kill_to_dead_ns,
                was_flagged: v.flagged_stuck,
            });
        }
        // Its release cannot be seen (no free hook; a pre-existing victim is not in the
        // kernel's tracked set): nothing more will happen to it here.
        if !self.cfg.observability.free || v.pre_existing {
            self.remove_victim(&v.key);
        }
    }

    /// Kills counted so far per victim memcg id.
    pub fn kills_by_memcg(&self) -> &HashMap<u64, u64> {
        &self.kills_by_memcg
    }

    /// A memcg's path (from the cgroup fs live, from the dump in a replay).
    /// The name of a kernel address (`name+0xoff`), for the allocation stacks that follow.
    pub fn symbol(&mut self, addr: u64, name: &str) {
        if self.symbols.len() >= MAX_SYMBOLS && !self.symbols.contains_key(&addr) {
            self.symbols.clear();
        }
        self.symbols.insert(addr, name.to_string());
    }

    pub fn memcg_path(&mut self, id: u64, path: &str) {
        if self.memcg_paths.len() >= MAX_MEMCGS && !self.memcg_paths.contains_key(&id) {
            self.memcg_paths.clear();
        }
        self.memcg_paths.insert(id, path.to_string());
    }

    /// Whether an OOM in `domain` (the memcg whose limit was hit; 0 = the whole machine) can
    /// be waiting on a victim in `memcg`: the same memcg, or one below it.
    fn in_domain(&self, domain: u64, memcg: Option<u64>) -> bool {
        if domain == 0 {
            return true;
        }
        let Some(memcg) = memcg else {
            return false;
        };
        if memcg == domain {
            return true;
        }
        match (self.memcg_paths.get(&domain), self.memcg_paths.get(&memcg)) {
            (Some(d), Some(m)) => {
                d == "/" || m.starts_with(&format!("{}/", d.trim_end_matches('/')))
            }
            _ => false,
        }
    }

    fn count_invocation(&mut self, memcg_id: u64, ts: u64, out: &mut Vec<Finding>) {
        let threshold = self.cfg.livelock_threshold;
        let in_domain: Vec<VictimKey> = self
            .victims
            .values()
            .filter(|v| !v.is_dead() && self.in_domain(memcg_id, v.memcg_id))
            .map(|v| v.key)
            .collect();
        for key in in_domain {
            let Some(v) = self.victims.get_mut(&key).map(Box::as_mut) else {
                continue;
            };
            v.invocations_since_kill += 1;
            if v.flagged_stuck && !v.livelock_reported && v.invocations_since_kill >= threshold {
                v.livelock_reported = true;
                let f = Finding::Livelock {
                    memcg_id,
                    invocations: v.invocations_since_kill,
                    window_ns: v.watched_since().map_or(0, |k| ts.saturating_sub(k)),
                    victim: v.key,
                    comm: v.comm.clone(),
                };
                if self.admits(&f) {
                    self.summary.livelocks += 1;
                }
                out.push(f);
            }
        }
    }

    /// Flags what is overdue as of `judged`; durations are reported as of `now`.
    fn check_timeouts(&mut self, judged: u64, now: u64, out: &mut Vec<Finding>) {
        self.expire_pending_kills(judged, out);
        let obs = self.cfg.observability;
        let mut stuck_new = 0;
        let mut unobservable_new = 0;
        let death_seen = if self.cfg.death_at_last_exit {
            obs.exit
        } else {
            obs.death
        };
        let timeout = self.cfg.timeout_ns;
        for v in self.victims.values_mut().map(Box::as_mut) {
            let Some(since_ts) = v.watched_since() else {
                continue;
            };
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
                    if !v.flagged_unobservable {
                        v.flagged_unobservable = true;
                        unobservable_new += u64::from(counted);
                        let why = if self.cfg.death_at_last_exit {
                            "process exits are not hooked on this kernel"
                        } else {
                            "no pidfd could be opened for it (pidfd_open needs Linux 5.3)"
                        };
                        out.push(Finding::Unobservable {
                            victim: Box::new(v.clone()),
                            why: why.into(),
                        });
                    }
                    continue;
                }
                if !v.flagged_stuck {
                    v.flagged_stuck = true;
                    stuck_new += u64::from(counted);
                    out.push(Finding::Stuck {
                        stage: v.stage(),
                        since_kill_ns: since,
                        where_stuck: v.where_stuck(self.cfg.kernel),
                        unconfirmed_lost: self.lost.saturating_sub(v.lost_at_kill),
                        victim: Box::new(v.clone()),
                    });
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
                    victim: Box::new(v.clone()),
                });
            }
        }
        self.summary.stuck_now += stuck_new;
        self.summary.flagged_total += stuck_new;
        self.summary.unobservable += unobservable_new;
    }

    /// Keeps memory bounded: drops the oldest dead victims first, then the oldest at all.
    fn evict_if_full(&mut self) {
        while self.victims.len() > MAX_VICTIMS {
            let oldest = self
                .victims
                .values()
                .map(Box::as_ref)
                .filter(|v| v.is_dead())
                .min_by_key(|v| v.killed_at())
                .or_else(|| {
                    self.victims
                        .values()
                        .map(Box::as_ref)
                        .min_by_key(|v| v.killed_at())
                })
                .map(|v| v.key);
            match oldest {
                Some(k) => {
                    self.remove_victim(&k);
                }
                None => break,
            }
        }
    }

    pub fn victim(&self, key: &VictimKey) -> Option<&Victim> {
        self.victims.get(key).map(Box::as_ref)
    }

    /// Victims not yet dead.
    pub fn unresolved(&self) -> impl Iterator<Item = &Victim> {
        self.victims
            .values()
            .map(Box::as_ref)
            .filter(|v| !v.is_dead())
    }

    /// Victims dead and not released (their release event may have been lost).
    pub fn dead_unreleased(&self) -> Vec<u32> {
        self.victims
            .values()
            .filter(|v| v.timeline.dead.is_some() && v.timeline.released.is_none())
            .map(|v| v.key.tgid)
            .collect()
    }

    /// Whether a victim with this process id is held.
    pub fn follows(&self, tgid: u32) -> bool {
        self.by_id.get(&tgid).is_some_and(|v| !v.is_empty())
    }

    /// Victims currently held (bounded).
    pub fn len(&self) -> usize {
        self.victims.len()
    }

    pub fn is_empty(&self) -> bool {
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
