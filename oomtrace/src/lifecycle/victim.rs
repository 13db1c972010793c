//! A victim: who it is, what the kernel decided about it, and its timeline through the
//! kill, the reaper and its exit.

use std::fmt;

use serde::Serialize;

use super::{finding::secs, *};

/// A process across pid reuse: tgid and the leader's start time (ns since boot; 0 = unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct VictimKey {
    pub tgid: u32,
    pub start_ns: u64,
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
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
}

/// What `oom_kill_process` said about the choice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KillDecision {
    pub chosen_points: i64,
    pub totalpages: u64,
    pub constraint: u32,
    /// The allocation order; -1 for a kill asked for with sysrq-f (no allocation failed).
    pub order: i32,
    pub message: String,
}

impl KillDecision {
    /// A manual kill (sysrq-f, `echo f > /proc/sysrq-trigger`), not a memory shortage.
    pub fn is_sysrq(&self) -> bool {
        self.order == -1
    }
}

/// When each stage was reached (CLOCK_MONOTONIC ns).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Timeline {
    pub chosen: Option<u64>,
    pub sigkill: Option<u64>,
    pub marked: Option<u64>,
    pub reaper_woken: Option<u64>,
    pub reaping_started: Option<u64>,
    pub reaping_finished: Option<u64>,
    pub reaper_gave_up: Option<u64>,
    /// A thread of it entered exit (`sched_process_exit`): it has started dying.
    pub first_exit: Option<u64>,
    /// Its last live thread entered exit (group_dead): every thread is inside `do_exit`.
    pub all_entered_exit: Option<u64>,
    /// First seen by oomtrace's start-up scan (pre-existing victims only).
    pub seen: Option<u64>,
    pub dead: Option<u64>,
    pub released: Option<u64>,
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
            Stage::Signalled => "SIGKILL sent, not yet marked; no thread has entered exit",
            Stage::Marked => "marked; no thread has entered exit; reaper not yet woken",
            Stage::ReaperWoken => "oom_reaper woken, not yet reaping; no thread has entered exit",
            Stage::Reaping => "oom_reaper reaping; no thread has entered exit",
            Stage::Reaped => "reaped (memory unmapped) but no thread has entered exit",
            Stage::ReaperGaveUp => {
                "oom_reaper done after 10 attempts (mmap_lock held, or unmapping failed): its \
                 memory may still be charged"
            }
            Stage::Exiting => "exiting: entered exit, not finished",
            Stage::Dead => "dead (zombie until its parent reaps it)",
            Stage::Released => "released",
        })
    }
}

/// Everything known about one victim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Victim {
    pub key: VictimKey,
    pub comm: String,
    /// Thread id the kernel marked (reaper events name it).
    pub marked_tid: Option<u32>,
    pub memcg_id: Option<u64>,
    /// The task that was allocating when the OOM struck.
    pub trigger: Option<Task>,
    pub decision: Option<KillDecision>,
    /// anon, file, shmem rss in kB at mark time.
    pub rss_kb: Option<[u64; 3]>,
    pub oom_score_adj: Option<i32>,
    /// The victim whose mm this one shared (killed along with it).
    pub killed_with: Option<VictimKey>,
    pub timeline: Timeline,
    pub reaper_skips: u32,
    /// oom_reaper attempts seen (starts and skips); it makes at most 10.
    pub reaper_attempts: u32,
    /// Threads seen entering exit (`sched_process_exit`); not threads that finished.
    pub threads_exited: u32,
    /// Which threads entered exit, in order (the first few).
    pub exiting_tids: Vec<u32>,
    /// Killed before oomtrace started: found by the start-up scan.
    pub pre_existing: bool,
    /// Marked by the OOM killer without a SIGKILL: it was already exiting (not a kill).
    pub already_exiting: bool,
    /// How death was seen (`pidfd`, `gone`, `pid_reused`, `released`, `last_thread_exit`).
    pub death_seen: Option<&'static str>,
    /// Its mm identity (a kernel address: kept out of every output).
    #[serde(skip)]
    pub(super) mm: Option<u64>,

    /// Lost-event count when it was killed: any increase makes its silence unconfirmed.
    pub(super) lost_at_kill: u64,
    pub flagged_stuck: bool,
    pub(super) flagged_release: bool,
    pub(super) flagged_unobservable: bool,
    /// OOM invocations in its memcg since its kill.
    pub invocations_since_kill: u32,
    /// Invocations of its domain that returned true without a kill since it was found stuck.
    #[serde(skip)]
    pub(super) aborted_since_stuck: u32,
    pub(super) livelock_reported: bool,
}

impl Victim {
    pub(super) fn new(key: VictimKey, comm: String) -> Victim {
        Victim {
            key,
            comm,
            marked_tid: None,
            memcg_id: None,
            trigger: None,
            decision: None,
            rss_kb: None,
            oom_score_adj: None,
            killed_with: None,
            timeline: Timeline::default(),
            reaper_skips: 0,
            reaper_attempts: 0,
            threads_exited: 0,
            exiting_tids: Vec::new(),
            pre_existing: false,
            already_exiting: false,
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
    pub fn killed_at(&self) -> Option<u64> {
        let t = &self.timeline;
        t.sigkill.or(t.marked).or(t.chosen)
    }

    /// What its deadline counts from: the kill, or for a pre-existing victim, when the scan
    /// first saw it.
    pub(super) fn watched_since(&self) -> Option<u64> {
        self.killed_at().or(self.timeline.seen)
    }

    pub fn stage(&self) -> Stage {
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

    /// One more oom_reaper attempt; the tenth is its last.
    pub(super) fn reaper_attempt(&mut self, ts: u64) {
        self.reaper_attempts += 1;
        if self.reaper_attempts >= REAPER_MAX_RETRIES {
            self.timeline.reaper_gave_up.get_or_insert(ts);
        }
    }

    pub(super) fn is_dead(&self) -> bool {
        self.timeline.dead.is_some() || self.timeline.released.is_some()
    }

    /// Where a victim that is not dead is, in words: which threads entered exit and when, or
    /// that none did.
    pub fn where_stuck(&self) -> String {
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
                "every thread has entered exit (the last{}; thread(s) {tids}) and has not \
                 finished: it is inside do_exit, closing its files, dropping its mm or \
                 notifying its parent",
                since(all)
            ),
            (Some(first), None) => format!(
                "thread(s) {tids} entered exit (the first{}); the others have not, or their \
                 exit was not seen",
                since(first)
            ),
            (None, None) if self.pre_existing => "killed before oomtrace started; whether a \
                 thread has entered exit is unknown (see its threads' states)"
                .into(),
            (None, None) => "no thread has entered exit since the SIGKILL: a thread is still \
                 busy in the kernel (uninterruptible sleep) or stopped by a tracer"
                .into(),
        }
    }
}
