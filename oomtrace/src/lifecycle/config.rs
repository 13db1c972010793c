//! What the tracker is told: which events the attach plan can deliver, what to count, its
//! timeouts.

use serde::Serialize;

use super::*;
use crate::kernel::plan::{Hook, HookPlan};

/// Which event kinds the running attach plan can deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Observability {
    pub(crate) oom_invoke: bool,
    /// `mem_cgroup_out_of_memory` returns are seen: the kernel's verdict of each invocation
    /// (killed, aborted because a victim is pending, or nothing killable).
    pub(crate) oom_invoke_done: bool,
    pub(crate) oom_kill: bool,
    /// `oom_badness` returns in OOM scans: the candidates of each kill.
    pub(crate) oom_candidates: bool,
    pub(crate) signal: bool,
    pub(crate) mark_victim: bool,
    pub(crate) reaper: bool,
    pub(crate) exit: bool,
    pub(crate) free: bool,
    /// Death itself (every thread finished exiting) can be seen: a pidfd per victim.
    pub(crate) death: bool,
}

impl Observability {
    /// What a plan delivers: `attached(hook)` says whether the hook attached (live: the probes;
    /// replay: the plan the dump recorded); `death` whether a pidfd per victim can be had.
    pub(crate) fn from_plan(attached: impl Fn(Hook) -> bool, death: bool) -> Observability {
        Observability {
            oom_invoke: attached(Hook::OomInvoke),
            oom_invoke_done: attached(Hook::OomInvokeDone),
            oom_kill: attached(Hook::OomKill),
            oom_candidates: attached(Hook::OomBadness),
            signal: attached(Hook::KernelSigkill),
            mark_victim: attached(Hook::MarkVictim),
            reaper: attached(Hook::WakeReaper),
            exit: attached(Hook::TaskExit),
            free: attached(Hook::TaskFree),
            death,
        }
    }

    /// Some hook sees a kill at all (the victim being marked, the kernel's SIGKILL, or the kill
    /// decision): without one oomtrace would watch nothing.
    pub(crate) fn sees_kills(&self) -> bool {
        self.mark_victim || self.signal || self.oom_kill
    }

    /// The whole kill path can be followed: a kill seen (marked or signalled), threads exiting,
    /// and death itself.
    pub fn kill_path(&self) -> bool {
        (self.mark_victim || self.signal) && self.exit && self.death
    }

    /// OOM invocations (the livelock signature) can be seen.
    pub(crate) fn livelock(&self) -> bool {
        self.oom_invoke
    }

    /// What a resolved attach plan delivers.
    pub fn of_plan(plan: &[HookPlan], death: bool) -> Observability {
        Observability::from_plan(|h| plan.iter().any(|p| p.hook == h && p.attached()), death)
    }

    pub(crate) const ALL: Observability = Observability {
        oom_invoke: true,
        oom_invoke_done: true,
        oom_kill: true,
        oom_candidates: true,
        signal: true,
        mark_victim: true,
        reaper: true,
        exit: true,
        free: true,
        death: true,
    };
}

/// `--memcg PATH` / `--pid PID`: report and count only what concerns them. The tracker
/// follows every victim regardless (a co-victim or a domain may span the filter); the filter
/// decides what the summary counts and the session shows.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// A memcg path; its descendants match too.
    pub memcg: Option<String>,
    pub pid: Option<u32>,
}

impl Filter {
    pub(crate) fn active(&self) -> bool {
        self.memcg.is_some() || self.pid.is_some()
    }

    pub(crate) fn memcg_ok(&self, path: Option<&str>) -> bool {
        match &self.memcg {
            None => true,
            Some(want) => {
                let want = want.trim_end_matches('/');
                path.is_some_and(|p| {
                    p == want || p.starts_with(&format!("{want}/")) || want.is_empty()
                })
            }
        }
    }

    pub(crate) fn pid_ok(&self, pid: u32) -> bool {
        self.pid.is_none_or(|p| p == pid)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TrackerConfig {
    pub(crate) timeout_ns: u64,
    pub(crate) release_timeout_ns: u64,
    pub(crate) livelock_threshold: u32,
    pub(crate) observability: Observability,
    /// Take the last thread entering exit (`sched_process_exit` with group_dead) as death, as
    /// oomtrace before dump format 2 did. Only for replaying such dumps: it calls a victim
    /// stuck inside `do_exit` dead.
    pub(crate) death_at_last_exit: bool,
    /// The kernel's version (major, minor), when known: where `sched_process_exit` fires in
    /// `do_exit` depends on it (after `exit_mm` before 6.16, before it since).
    pub(crate) kernel: Option<(u32, u32)>,
}

/// (major, minor) of a kernel release string ("6.12.118+deb12-amd64").
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            timeout_ns: DEFAULT_TIMEOUT_NS,
            release_timeout_ns: DEFAULT_RELEASE_TIMEOUT_NS,
            livelock_threshold: DEFAULT_LIVELOCK_THRESHOLD,
            observability: Observability::ALL,
            death_at_last_exit: false,
            kernel: None,
        }
    }
}
