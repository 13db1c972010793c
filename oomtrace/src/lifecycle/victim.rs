//! A victim: who it is, what the kernel decided about it, and its timeline through the
//! kill, the reaper and its exit.

use std::fmt;

use serde::Serialize;

use super::{finding::secs, *};
use crate::comm::Comm;

/// A process across pid reuse: tgid and the leader's start time (ns since boot; 0 = unknown).
/// Ordered by tgid first; serialized with its keys in sorted order (see [`Victim`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VictimKey {
    pub(crate) tgid: u32,
    pub(crate) start_ns: u64,
}

impl Serialize for VictimKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("VictimKey", 2)?;
        st.serialize_field("start_ns", &self.start_ns)?;
        st.serialize_field("tgid", &self.tgid)?;
        st.end()
    }
}

impl VictimKey {
    /// Same process, treating an unknown start time as a wildcard.
    pub(super) fn matches(&self, tgid: u32, start_ns: u64) -> bool {
        self.tgid == tgid && (self.start_ns == 0 || start_ns == 0 || self.start_ns == start_ns)
    }
}

/// A task as the kernel named it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Task {
    pub(crate) comm: Comm,
    pub(crate) pid: u32,
    pub(crate) tgid: u32,
}

/// Who sent a SIGKILL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SenderKind {
    /// The OOM killer (its victims carry no [`Sender`]: `trigger` and `decision` say it).
    OomKiller,
    /// Another kernel path (`SEND_SIG_PRIV` / `SI_KERNEL`): a PID-namespace teardown, a
    /// tracer's exit (`PTRACE_O_EXITKILL`), a forced fatal signal, or (Linux 7.1+) the last
    /// close of the child's `CLONE_PIDFD_AUTOKILL` pidfd — sent by whichever task dropped that
    /// file's last reference (its holder's exit, a plain close, a kworker for a deferred one).
    Kernel,
    /// A user process: `kill(2)`, `tgkill(2)`, `pidfd_send_signal(2)` (`si_code` ≤ 0).
    User,
    /// Not known: a process found with SIGKILL pending at start (/proc does not say who).
    Unknown,
}

impl SenderKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            SenderKind::OomKiller => "oom_killer",
            SenderKind::Kernel => "kernel",
            SenderKind::User => "user",
            SenderKind::Unknown => "unknown",
        }
    }
}

/// The sender of a SIGKILL that was not the OOM killer's: for a user kill the process that
/// called `kill`; for a kernel one the task whose path sent it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Sender {
    pub(crate) comm: Comm,
    pub(crate) kind: SenderKind,
    pub(crate) memcg_id: Option<u64>,
    /// Its memcg's path, where it was known when the kill was seen (its workload).
    pub(crate) memcg_path: Option<String>,
    pub(crate) pid: u32,
    /// The siginfo code (`SI_USER` 0, `SI_TKILL` -6, `SI_KERNEL` 128, ...).
    pub(crate) si_code: i32,
    pub(crate) tgid: u32,
    /// None in records of layouts before it was recorded.
    pub(crate) uid: Option<u32>,
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            SenderKind::User => "user process",
            SenderKind::Kernel => "the kernel, from",
            SenderKind::OomKiller => "the OOM killer, from",
            SenderKind::Unknown => return f.write_str("an unknown sender"),
        };
        write!(f, "{kind} pid {} ({}", self.tgid, self.comm)?;
        if let Some(uid) = self.uid {
            write!(f, ", uid {uid}")?;
        }
        if let Some(p) = &self.memcg_path {
            match crate::workload::of_path(p) {
                crate::workload::Workload::Cgroup { .. } => write!(f, ", memcg {p}")?,
                w => write!(f, ", memcg {p}; {w}")?,
            }
        }
        f.write_str(")")
    }
}

/// What `oom_kill_process` said about the choice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct KillDecision {
    pub(crate) chosen_points: i64,
    pub(crate) constraint: u32,
    /// The same in the kernel's words ("GFP_KERNEL|__GFP_ACCOUNT"), from the recording
    /// kernel's own table ([`crate::kernel::gfp`]).
    pub(crate) gfp: String,
    /// The failed allocation's gfp mask, raw (`oom_control.gfp_mask`).
    pub(crate) gfp_mask: u32,
    pub(crate) message: String,
    /// The allocation order; -1 for a kill asked for with sysrq-f (no allocation failed).
    pub(crate) order: i32,
    pub(crate) totalpages: u64,
}

impl KillDecision {
    /// A manual kill (sysrq-f, `echo f > /proc/sysrq-trigger`), not a memory shortage.
    pub(crate) fn is_sysrq(&self) -> bool {
        self.order == -1
    }
}

/// The kernel stack of the task whose allocation invoked the OOM killer, at the mark: what
/// was allocating (a page fault, a `memory.max` write, a charge for another cgroup, sysrq-f).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct AllocStackInfo {
    /// Why the kernel gave no stack (`bpf_get_stack`'s errno), if it gave none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<i32>,
    /// Innermost first, `name+0xoff` (`[module]` appended for a module's); a frame no symbol
    /// covers (or all of them, when /proc/kallsyms shows no addresses) as its raw address.
    pub(crate) frames: Vec<String>,
}

impl AllocStackInfo {
    pub(super) fn new(
        p: &oomtrace_common::AllocStack,
        symbols: &HashMap<u64, String>,
    ) -> AllocStackInfo {
        let n = (p.frames as usize).min(p.ips.len());
        AllocStackInfo {
            frames: p.ips[..n]
                .iter()
                .map(|a| symbols.get(a).cloned().unwrap_or_else(|| format!("{a:#x}")))
                .collect(),
            error: (p.error != 0).then_some(p.error),
        }
    }

    /// The frames below the OOM killer's own (what called into it).
    pub(crate) fn callers(&self) -> &[String] {
        const OOM_KILLER: [&str; 7] = [
            "mark_oom_victim",
            "__oom_kill_process",
            "oom_kill_process",
            "out_of_memory",
            "mem_cgroup_out_of_memory",
            "oom_kill_memcg_member",
            "dump_header",
        ];
        let start = self
            .frames
            .iter()
            .rposition(|f| OOM_KILLER.contains(&f.split('+').next().unwrap_or("")))
            .map_or(0, |i| i + 1);
        &self.frames[start..]
    }

    /// What the stack says was allocating, in words, when a frame tells it.
    pub(crate) fn cause(&self) -> Option<&'static str> {
        let has = |f: &str| {
            self.frames
                .iter()
                .any(|s| s.split('+').next().is_some_and(|n| n == f))
        };
        if has("memory_max_write") || has("mem_cgroup_resize_max") {
            Some("a write lowering the memcg's limit")
        } else if has("sysrq_handle_moom") || has("moom_callback") {
            Some("sysrq-f (a manual OOM kill)")
        } else if has("handle_mm_fault") || has("do_user_addr_fault") || has("exc_page_fault") {
            Some("a page fault")
        } else {
            None
        }
    }
}

/// One task the OOM killer scored before a kill (`oom_badness`), as the kernel's report's task
/// list shows it. The mm counters are approximate: read as the kernel's report reads them,
/// without the per-CPU deltas not yet folded in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Candidate {
    pub(crate) comm: Comm,
    pub(crate) oom_score_adj: Option<i32>,
    pub(crate) pgtables_kb: Option<u64>,
    pub(crate) pid: u32,
    /// The score; None: not eligible (oom_score_adj -1000, `MMF_OOM_SKIP`, in vfork).
    pub(crate) points: Option<i64>,
    /// anon, file, shmem rss in kB.
    pub(crate) rss_kb: Option<[u64; 3]>,
    /// Swap entries in kB (part of the score).
    pub(crate) swap_kb: Option<u64>,
    pub(crate) tgid: u32,
}

impl Candidate {
    pub(super) fn new(p: &oomtrace_common::OomCandidate) -> Candidate {
        use oomtrace_common::candidate_fields as f;
        let mem = p.fields & f::MEMORY != 0;
        Candidate {
            pid: p.pid,
            tgid: p.tgid,
            comm: Comm::from_kernel(&p.comm),
            points: (p.points != oomtrace_common::BADNESS_INELIGIBLE).then_some(p.points),
            oom_score_adj: (p.fields & f::OOM_SCORE_ADJ != 0).then_some(p.oom_score_adj),
            rss_kb: mem.then_some([p.anon_rss_kb, p.file_rss_kb, p.shmem_rss_kb]),
            swap_kb: mem.then_some(p.swap_kb),
            pgtables_kb: mem.then_some(p.pgtables_kb),
        }
    }
}

/// Candidates kept per kill, best first.
pub(crate) const TOP_CANDIDATES: usize = 5;

/// The OOM killer's scan before a kill: who it scored and how close the choice was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Candidates {
    /// The scan reported its first [`oomtrace_common::CANDIDATES_MAX`] tasks only.
    pub(crate) cut: bool,
    pub(crate) eligible: u32,
    /// The best eligible candidate other than the victim.
    pub(crate) runner_up: Option<Candidate>,
    /// The victim's score less the runner-up's.
    pub(crate) runner_up_gap: Option<i64>,
    /// Tasks scored (eligible or not).
    pub(crate) scored: u32,
    /// The eligible ones with the highest scores, best first (at most [`TOP_CANDIDATES`]).
    pub(crate) top: Vec<Candidate>,
    /// The victim's own row when it is not in `top` (a kill not of the highest score: the
    /// kernel picks the last of equal scores, and a concurrent scan may have chosen).
    pub(crate) victim: Option<Candidate>,
}

impl Candidates {
    pub(super) fn of_scan(mut scan: Vec<Candidate>, victim_tgid: u32) -> Candidates {
        let scored = scan.len() as u32;
        let cut = scan.len() >= oomtrace_common::CANDIDATES_MAX as usize;
        scan.retain(|c| c.points.is_some());
        let eligible = scan.len() as u32;
        scan.sort_by_key(|c| std::cmp::Reverse(c.points));
        let victim_row = scan.iter().find(|c| c.tgid == victim_tgid).cloned();
        let runner_up = scan.iter().find(|c| c.tgid != victim_tgid).cloned();
        let runner_up_gap = match (&victim_row, &runner_up) {
            (Some(v), Some(r)) => Some(v.points.unwrap_or(0) - r.points.unwrap_or(0)),
            _ => None,
        };
        scan.truncate(TOP_CANDIDATES);
        let victim = victim_row.filter(|v| !scan.iter().any(|c| c.tgid == v.tgid));
        Candidates {
            scored,
            eligible,
            cut,
            top: scan,
            victim,
            runner_up,
            runner_up_gap,
        }
    }

    /// One line: the scan and the runner-up.
    fn summary(&self, victim: &Victim) -> String {
        let row = |c: &Candidate| {
            format!(
                "{} ({}) {} points{}",
                c.tgid,
                c.comm,
                c.points.unwrap_or(0),
                c.oom_score_adj
                    .filter(|a| *a != 0)
                    .map_or(String::new(), |a| format!(" (adj {a})"))
            )
        };
        let mut s = format!(
            "candidates: {} scored, {} eligible{}",
            self.scored,
            self.eligible,
            if self.cut {
                " (the first ones only)"
            } else {
                ""
            }
        );
        let own = self
            .top
            .iter()
            .chain(&self.victim)
            .find(|c| c.tgid == victim.key.tgid);
        if let Some(v) = own {
            s += &format!("; chose {}", row(v));
        }
        match (
            &self.runner_up,
            self.runner_up_gap,
            own.and_then(|v| v.points),
        ) {
            (Some(r), Some(gap), Some(vp)) if vp > 0 => {
                let pct = r.points.unwrap_or(0).max(0) as f64 * 100.0 / vp as f64;
                s += &format!(
                    "; runner-up {}, {gap} behind ({pct:.0}% of its score)",
                    row(r)
                );
            }
            (Some(r), _, _) => s += &format!("; runner-up {}", row(r)),
            (None, _, _) => s += "; no other eligible task",
        }
        s
    }
}

/// A memcg (or the machine) at the kill, as its files said when the kill event arrived
/// ([`oomtrace_common::MemcgState`]); each field absent when it was not read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct MemcgAt {
    pub(crate) anon_bytes: Option<u64>,
    /// Times the limit was hit (v1 `memory.failcnt`, v2 `memory.events` max).
    pub(crate) failcnt: Option<u64>,
    pub(crate) file_bytes: Option<u64>,
    pub(crate) kernel_bytes: Option<u64>,
    /// None also when there is no limit ("max").
    pub(crate) limit_bytes: Option<u64>,
    /// The memcg's id; 0 for the machine (a global OOM, from /proc/meminfo).
    pub(crate) memcg_id: u64,
    pub(crate) oom_kills: Option<u64>,
    /// The highest usage so far (v1 `max_usage_in_bytes`, v2 `memory.peak` ≥ 5.19).
    pub(crate) peak_bytes: Option<u64>,
    pub(crate) shmem_bytes: Option<u64>,
    /// Where it was read: `cgroup_v1`, `cgroup_v2` or `meminfo`.
    pub(crate) source: &'static str,
    pub(crate) swap_bytes: Option<u64>,
    pub(crate) swap_limit_bytes: Option<u64>,
    /// When it was read, just after the kill: the victim's memory may be freed already.
    pub(crate) usage_bytes: Option<u64>,
}

impl MemcgAt {
    pub(crate) fn new(s: &oomtrace_common::MemcgState) -> MemcgAt {
        use oomtrace_common::memcg_state as b;
        let has = |bit| s.fields & bit != 0;
        let opt = |bit, v| has(bit).then_some(v);
        let limit = |v: u64| (v != u64::MAX).then_some(v);
        MemcgAt {
            memcg_id: s.memcg_id,
            source: if has(b::MACHINE) {
                "meminfo"
            } else if has(b::V1) {
                "cgroup_v1"
            } else {
                "cgroup_v2"
            },
            usage_bytes: opt(b::USAGE, s.usage_bytes),
            peak_bytes: opt(b::PEAK, s.peak_bytes),
            limit_bytes: opt(b::USAGE, s.limit_bytes).and_then(limit),
            failcnt: opt(b::FAILCNT, s.failcnt),
            swap_bytes: opt(b::SWAP, s.swap_bytes),
            swap_limit_bytes: opt(b::SWAP, s.swap_limit_bytes).and_then(limit),
            oom_kills: opt(b::OOM_KILLS, s.oom_kills),
            anon_bytes: opt(b::STAT, s.anon_bytes),
            file_bytes: opt(b::STAT, s.file_bytes),
            shmem_bytes: opt(b::STAT, s.shmem_bytes),
            kernel_bytes: opt(b::STAT, s.kernel_bytes),
        }
    }

    /// One line: limit, peak, failures, kills, then what was in use just after the kill.
    pub(crate) fn summary(&self) -> String {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
        let mut s = match self.limit_bytes {
            Some(l) => format!("limit {}", mib(l)),
            None => "no limit".into(),
        };
        if let Some(p) = self.peak_bytes {
            s += &format!(", peak {}", mib(p));
        }
        if let Some(f) = self.failcnt {
            s += &format!(", limit hit {f} times");
        }
        if let Some(k) = self.oom_kills {
            s += &format!(", {k} OOM kills");
        }
        if let Some(u) = self.usage_bytes {
            s += &format!("; just after: {} in use", mib(u));
        }
        if let Some(sw) = self.swap_bytes {
            s += &format!(", swap {}", mib(sw));
        }
        if let (Some(a), Some(f), Some(sh), Some(k)) = (
            self.anon_bytes,
            self.file_bytes,
            self.shmem_bytes,
            self.kernel_bytes,
        ) {
            s += &format!(
                " (anon {}, file {}, shmem {}, kernel {})",
                mib(a),
                mib(f),
                mib(sh),
                mib(k)
            );
        }
        s
    }
}

/// When each stage was reached (CLOCK_MONOTONIC ns). In time order the stages are `chosen`,
/// `sigkill`, `marked`, `reaper_woken`, `reaping_started`, `reaping_finished` or
/// `reaper_gave_up`, `first_exit`, `all_entered_exit`, `dead`, `released` (`seen` for a
/// pre-existing victim); declared in key order (see [`Victim`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Timeline {
    /// Its last live thread entered exit (group_dead): every thread is inside `do_exit`.
    pub(crate) all_entered_exit: Option<u64>,
    pub(crate) chosen: Option<u64>,
    pub(crate) dead: Option<u64>,
    /// A thread of it entered exit (`sched_process_exit`): it has started dying.
    pub(crate) first_exit: Option<u64>,
    pub(crate) marked: Option<u64>,
    pub(crate) reaper_gave_up: Option<u64>,
    pub(crate) reaper_woken: Option<u64>,
    pub(crate) reaping_finished: Option<u64>,
    pub(crate) reaping_started: Option<u64>,
    pub(crate) released: Option<u64>,
    /// First seen by oomtrace's start-up scan (pre-existing victims only).
    pub(crate) seen: Option<u64>,
    pub(crate) sigkill: Option<u64>,
}

/// How far a victim got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Found by the start-up scan; nothing of its kill was seen.
    PreExisting,
    Chosen,
    Signalled,
    Marked,
    ReaperWoken,
    Reaping,
    Reaped,
    ReaperGaveUp,
    Exiting,
    Dead,
    Released,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::PreExisting => "killed before oomtrace started (SIGKILL pending), not exited",
            Stage::Chosen => "chosen, not yet signalled",
            Stage::Signalled => {
                "SIGKILL sent, not yet marked; no thread at the exit tracepoint yet"
            }
            Stage::Marked => "marked; no thread at the exit tracepoint yet; reaper not yet woken",
            Stage::ReaperWoken => {
                "oom_reaper woken, not yet reaping; no thread at the exit tracepoint yet"
            }
            Stage::Reaping => "oom_reaper reaping; no thread at the exit tracepoint yet",
            Stage::Reaped => {
                "oom_reaper done (it unmaps what it can: private memory, not hugetlb, PFNMAP or \
                 shared/shmem mappings, nor mlocked ones on Linux 5.10); no thread at the exit \
                 tracepoint yet"
            }
            Stage::ReaperGaveUp => {
                "oom_reaper done after 10 attempts (mmap_lock held, or unmapping failed): its \
                 memory may still be charged"
            }
            Stage::Exiting => "exiting: at or past the exit tracepoint, not finished",
            Stage::Dead => "dead (zombie until its parent reaps it)",
            Stage::Released => "released",
        })
    }
}

/// Where `sched_process_exit` fires moved in Linux 6.16: before, after `exit_mm` (the mm is
/// dropped before the tracepoint); since, before it.
fn exit_tracepoint_before_exit_mm(kernel: Option<(u32, u32)>) -> Option<bool> {
    kernel.map(|k| k >= (6, 16))
}

/// What a thread does in `do_exit` before the tracepoint, beyond what every kernel does there.
fn before_exit_tracepoint(kernel: Option<(u32, u32)>) -> &'static str {
    match exit_tracepoint_before_exit_mm(kernel) {
        Some(true) => "",
        Some(false) => ", or in exit_mm (before Linux 6.16 the tracepoint comes after it)",
        None => ", or, before Linux 6.16, in exit_mm",
    }
}

/// What a thread past the tracepoint still does in `do_exit`.
fn after_exit_tracepoint(kernel: Option<(u32, u32)>) -> &'static str {
    match exit_tracepoint_before_exit_mm(kernel) {
        Some(true) => "dropping its mm, closing its files or notifying its parent",
        Some(false) => {
            "its mm already dropped (before Linux 6.16 the tracepoint comes after exit_mm): \
             closing its files or notifying its parent"
        }
        None => {
            "closing its files or notifying its parent (and, since Linux 6.16, dropping its mm)"
        }
    }
}

/// Everything known about one victim.
///
/// Its fields, and those of every struct a finding serializes, are declared in the order of
/// their JSON keys: a finding's JSON is then written in place, not sorted object by object
/// (`render/json_sorted.rs`; sorting was most of a `report --json`). `finding_keys_in_order`
/// checks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Victim {
    /// Invocations of its domain that returned true without a kill since it was found stuck.
    #[serde(skip)]
    pub(super) aborted_since_stuck: u32,
    /// The allocating task's kernel stack at the mark (`oom:mark_victim` hook).
    pub(crate) alloc_stack: Option<AllocStackInfo>,
    /// Marked by the OOM killer without a SIGKILL: it was already exiting (not a kill).
    pub(crate) already_exiting: bool,
    /// A kernel SIGKILL waiting for the mark that would make it an OOM kill: not announced
    /// and not judged until the pairing window has passed.
    #[serde(skip)]
    pub(super) awaiting_mark: bool,
    /// The OOM killer's scan before this kill (`oom_badness` hooked: fexit only); None where
    /// it is not hooked, or no scan came before the decision.
    pub(crate) candidates: Option<Candidates>,
    /// Why there are no candidates, when a kill has none.
    pub(crate) candidates_unavailable: Option<&'static str>,
    pub(crate) comm: Comm,
    /// How death was seen (`pidfd`, `gone`, `pid_reused`, `released`, `last_thread_exit`).
    pub(crate) death_seen: Option<&'static str>,
    pub(crate) decision: Option<KillDecision>,
    /// The OOM domain at the kill (read by userspace when the kill event arrived).
    pub(crate) domain_at_kill: Option<MemcgAt>,
    /// The OOM domain: the memcg whose limit was hit (0 = the whole machine), where the kill
    /// decision was seen (`oom_kill_process`). May be an ancestor of `memcg_id`.
    pub(crate) domain_id: Option<u64>,
    /// Which threads entered exit, in order (the first few).
    pub(crate) exiting_tids: Vec<u32>,
    pub(super) flagged_release: bool,
    pub(crate) flagged_stuck: bool,
    pub(super) flagged_unobservable: bool,
    /// The `memory.oom.group` incident it is in: one OOM invocation that killed several
    /// victims (see [`super::Incident`]); set from the incident's second victim on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) incident: Option<u64>,
    /// OOM invocations in its memcg since its kill.
    pub(crate) invocations_since_kill: u32,
    pub(crate) key: VictimKey,
    /// The victim whose mm this one shared (killed along with it).
    pub(crate) killed_with: Option<VictimKey>,
    /// The last oom_reaper attempt, when it was a skip (cleared by a later start).
    #[serde(skip)]
    pub(super) last_reaper_skip: Option<u64>,
    pub(super) livelock_reported: bool,
    /// Lost-event count when it was killed: any increase makes its silence unconfirmed.
    pub(super) lost_at_kill: u64,
    /// Thread id the kernel marked (reaper events name it).
    pub(crate) marked_tid: Option<u32>,
    /// The victim's own memcg at the kill.
    pub(crate) memcg_at_kill: Option<MemcgAt>,
    pub(crate) memcg_id: Option<u64>,
    /// Its mm identity (a kernel address: kept out of every output).
    #[serde(skip)]
    pub(super) mm: Option<u64>,
    pub(crate) oom_score_adj: Option<i32>,
    /// Killed before oomtrace started: found by the start-up scan.
    pub(crate) pre_existing: bool,
    /// oom_reaper attempts seen (starts and skips); it makes at most 10.
    pub(crate) reaper_attempts: u32,
    pub(crate) reaper_skips: u32,
    /// anon, file, shmem rss in kB at mark time.
    pub(crate) rss_kb: Option<[u64; 3]>,
    /// Who SIGKILLed it, when that was not the OOM killer: a kill followed like an OOM one,
    /// flagged `kill_stuck` rather than `stuck`. None for OOM victims and pre-existing ones.
    pub(crate) sender: Option<Sender>,
    /// The victim's swap entries in kB at the scan (part of its score), from its candidate row.
    pub(crate) swap_kb: Option<u64>,
    /// Threads seen entering exit (`sched_process_exit`); not threads that finished.
    pub(crate) threads_exited: u32,
    pub(crate) timeline: Timeline,
    /// The task that was allocating when the OOM struck.
    pub(crate) trigger: Option<Task>,
    /// The allocating task's oom_score_adj, when the scan scored it.
    pub(crate) trigger_oom_score_adj: Option<i32>,
    /// The kernel's tracked set was full at its kill: its thread exits and release were not
    /// reported (its death still is, through its pidfd).
    pub(crate) untracked: bool,
}

impl Victim {
    pub(super) fn new(key: VictimKey, comm: Comm) -> Victim {
        Victim {
            key,
            comm,
            marked_tid: None,
            memcg_id: None,
            trigger: None,
            decision: None,
            rss_kb: None,
            oom_score_adj: None,
            alloc_stack: None,
            domain_id: None,
            domain_at_kill: None,
            memcg_at_kill: None,
            candidates: None,
            candidates_unavailable: None,
            swap_kb: None,
            trigger_oom_score_adj: None,
            killed_with: None,
            incident: None,
            timeline: Timeline::default(),
            reaper_skips: 0,
            last_reaper_skip: None,
            reaper_attempts: 0,
            threads_exited: 0,
            exiting_tids: Vec::new(),
            pre_existing: false,
            already_exiting: false,
            sender: None,
            untracked: false,
            awaiting_mark: false,
            death_seen: None,
            mm: None,
            lost_at_kill: 0,
            flagged_stuck: false,
            flagged_release: false,
            flagged_unobservable: false,
            invocations_since_kill: 0,
            aborted_since_stuck: 0,
            livelock_reported: false,
        }
    }

    /// The kill time: the SIGKILL, else the mark, else the choice.
    pub(crate) fn killed_at(&self) -> Option<u64> {
        let t = &self.timeline;
        t.sigkill.or(t.marked).or(t.chosen)
    }

    /// What its deadline counts from: the kill, or for a pre-existing victim, when the scan
    /// first saw it.
    pub(super) fn watched_since(&self) -> Option<u64> {
        self.killed_at().or(self.timeline.seen)
    }

    pub(crate) fn stage(&self) -> Stage {
        let t = &self.timeline;
        if t.released.is_some() {
            Stage::Released
        } else if t.dead.is_some() {
            Stage::Dead
        } else if t.first_exit.is_some() {
            Stage::Exiting
        } else if self.pre_existing && self.killed_at().is_none() {
            Stage::PreExisting
        } else if t.reaper_gave_up.is_some() {
            Stage::ReaperGaveUp
        } else if t.reaping_finished.is_some() {
            Stage::Reaped
        } else if t.reaping_started.is_some() {
            Stage::Reaping
        } else if t.reaper_woken.is_some() {
            Stage::ReaperWoken
        } else if t.marked.is_some() {
            Stage::Marked
        } else if t.sigkill.is_some() {
            Stage::Signalled
        } else {
            Stage::Chosen
        }
    }

    /// The "why" under a KILLED line, in oomtrace's words: what was allocating, and from
    /// where (the frames that called into the OOM killer). Empty when nothing is known.
    pub(crate) fn why_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let own = self.memcg_at_kill.as_ref();
        let domain = self.domain_at_kill.as_ref();
        match (domain, own) {
            (Some(d), o) if d.memcg_id == 0 => {
                lines.push(format!("the machine at the kill: {}", d.summary()));
                if let Some(o) = o {
                    lines.push(format!("its memcg at the kill: {}", o.summary()));
                }
            }
            (Some(d), Some(o)) if d.memcg_id != o.memcg_id => {
                lines.push(format!("OOM domain at the kill: {}", d.summary()));
                lines.push(format!("its own memcg at the kill: {}", o.summary()));
            }
            (Some(m), _) | (None, Some(m)) => {
                lines.push(format!("memcg at the kill: {}", m.summary()));
            }
            (None, None) => {}
        }
        match (&self.candidates, self.candidates_unavailable) {
            (Some(c), _) => lines.push(c.summary(self)),
            // Joined, not `format!`ed: a line of every kill a replay prints where the scan
            // is not seen (its `format!` was 3 % of such a replay's instructions).
            (None, Some(why)) => lines.push(["candidates: unavailable (", why, ")"].concat()),
            (None, None) => {}
        }
        let mut memory = Vec::new();
        if let Some(swap) = self.swap_kb {
            memory.push(format!("its swap {}", crate::text::kb(swap)));
        }
        if let Some(adj) = self.trigger_oom_score_adj {
            memory.push(format!("the allocating task's oom_score_adj {adj}"));
        }
        if !memory.is_empty() {
            lines.push(format!(
                "{} (mm counters approximate: per-CPU deltas not folded in)",
                memory.join(", ")
            ));
        }
        let Some(stack) = &self.alloc_stack else {
            return lines;
        };
        let by = self.trigger.as_ref().map_or(String::new(), |t| {
            format!(" by pid {} ({})", t.tgid, t.comm)
        });
        // gfp and order come from oom_kill_process only: tracepoint-only plans say so.
        let (order, unknown) = match &self.decision {
            Some(d) if d.is_sysrq() => (String::new(), ""),
            Some(d) => (format!(", order {}, gfp {}", d.order, d.gfp), ""),
            None => (
                String::new(),
                "; gfp and order unknown: the kill decision was not seen",
            ),
        };
        let why = match stack.cause() {
            Some(c @ "a write lowering the memcg's limit") => {
                format!("why: {c}{by}{order}: its usage was above the new limit{unknown}")
            }
            Some(c @ "sysrq-f (a manual OOM kill)") => format!("why: {c}{by}"),
            Some(c) => format!("why: {c}{by}{order} hit the limit{unknown}"),
            None => format!(
                "why: an allocation{by}{order} hit the limit{unknown}; of what kind is unknown: \
                 no frame of its stack tells"
            ),
        };
        lines.insert(0, why);
        match stack.error {
            Some(e) => lines.push(format!("allocation stack: none (bpf_get_stack error {e})")),
            None => {
                let callers = stack.callers();
                let shown = &callers[..callers.len().min(8)];
                lines.push(format!(
                    "allocation stack: {}{}",
                    shown.join(" < "),
                    if callers.len() > shown.len() {
                        " < …"
                    } else {
                        ""
                    }
                ));
            }
        }
        lines
    }

    /// What the oom_reaper's silence says about a victim judged stuck at `judged` (with the
    /// reaper's tracepoints attached), in words; empty when there is nothing to add.
    ///
    /// `oom_reap_task` retries an attempt that returned false (`skip_task_reaping` for a busy
    /// mmap_lock) 100 ms later, up to 10 times; a skip that returned true — the mm already has
    /// `MMF_OOM_SKIP`, set by `exit_mmap` once the memory is torn down — ends it. And the
    /// reaper is woken (`wake_reaper`) only if the kernel queued the victim: not when its mm
    /// is shared with init or a kernel thread (`can_oom_reap` false: "has mm pinned by" in the
    /// kernel log), nor, since 5.18 (woken by a 2 s timer), when `MMF_OOM_SKIP` is set by then.
    pub(crate) fn reaper_note(&self, judged: u64) -> String {
        let t = &self.timeline;
        if let Some(skip) = self.last_reaper_skip
            && self.reaper_attempts < REAPER_MAX_RETRIES
            && judged.saturating_sub(skip) >= REAPER_SILENT_AFTER_SKIP_NS
        {
            return "; the oom_reaper's last attempt was a skip and it made no more: it found the \
                    memory already torn down (MMF_OOM_SKIP, set by exit_mmap), not a busy \
                    mmap_lock (that skip is retried 100 ms later)"
                .into();
        }
        match (t.marked, t.reaper_woken) {
            (Some(marked), None) if judged.saturating_sub(marked) >= REAPER_SILENT_NS => {
                "; the oom_reaper was never woken for it: its memory was already torn down when \
                 the reaper's 2 s timer fired (MMF_OOM_SKIP, set by exit_mmap), or the kernel \
                 never queued it — an mm shared with init or a kernel thread, which the reaper \
                 must not touch (the kernel log says 'has mm pinned by')"
                    .into()
            }
            _ => String::new(),
        }
    }

    /// One more oom_reaper attempt; the tenth is its last.
    pub(super) fn reaper_attempt(&mut self, ts: u64) {
        self.reaper_attempts += 1;
        if self.reaper_attempts >= REAPER_MAX_RETRIES {
            self.timeline.reaper_gave_up.get_or_insert(ts);
        }
    }

    /// Who killed it: the OOM killer unless a [`Sender`] says otherwise.
    pub(crate) fn sender_kind(&self) -> SenderKind {
        match &self.sender {
            Some(s) => s.kind,
            None if self.pre_existing => SenderKind::Unknown,
            None => SenderKind::OomKiller,
        }
    }

    /// Killed by someone other than the OOM killer (a user process or another kernel path).
    pub(crate) fn is_other_kill(&self) -> bool {
        self.sender.is_some()
    }

    pub(super) fn is_dead(&self) -> bool {
        self.timeline.dead.is_some() || self.timeline.released.is_some()
    }

    /// Where a victim that is not dead is, in words: which threads entered exit and when, or
    /// that none did.
    pub(crate) fn where_stuck(&self, kernel: Option<(u32, u32)>) -> String {
        let t = &self.timeline;
        let since = |ts: u64| match self.watched_since() {
            Some(k) if ts >= k => format!(" {} after the kill", secs(ts - k)),
            _ => String::new(),
        };
        let tids = self
            .exiting_tids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        match (t.first_exit, t.all_entered_exit) {
            (_, Some(all)) => format!(
                "every thread has reached the exit tracepoint (the last{}; thread(s) {tids}) and \
                 has not finished: it is inside do_exit, {}",
                since(all),
                after_exit_tracepoint(kernel)
            ),
            (Some(first), None) => format!(
                "thread(s) {tids} reached the exit tracepoint (the first{}); the others have \
                 not, or their exit was not seen",
                since(first)
            ),
            (None, None) if self.pre_existing => "killed before oomtrace started; whether a \
                 thread has reached the exit tracepoint is unknown (see its threads' states)"
                .into(),
            (None, None) => format!(
                "no thread has reached the exit tracepoint (sched_process_exit) since the \
                 SIGKILL: each is still in the kernel before it — busy or asleep outside exit, \
                 stopped by a tracer, or inside do_exit ahead of the tracepoint (waiting for a \
                 coredump, at its ptrace exit stop, cancelling io_uring requests, in \
                 exit_signals{})",
                before_exit_tracepoint(kernel)
            ),
        }
    }
}
