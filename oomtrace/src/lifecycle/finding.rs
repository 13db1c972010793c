//! What the tracker concludes about victims and OOM domains, and how each reads in words.

use std::{fmt, sync::Arc};

use serde::Serialize;

use super::*;

/// What the tracker concluded. Each is emitted once per victim (per kind).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// A new victim: the kernel's SIGKILL was seen (or, without the signal hook, its mark).
    Killed { victim: Arc<Victim> },
    /// The OOM killer marked a task that was already exiting and killed nothing
    /// (`task_will_free_mem`): not a kill, followed to its death all the same.
    Marked { victim: Arc<Victim> },
    /// The victim finished exiting: every thread passed `exit_notify`.
    Dead {
        victim: Arc<Victim>,
        /// None for a victim killed before oomtrace started (its kill time is unknown).
        kill_to_dead_ns: Option<u64>,
        /// It had been flagged stuck before dying.
        was_flagged: bool,
    },
    /// A SIGKILL not sent by the OOM killer (the victim's `sender` says who): followed to its
    /// death. JSON only: text shows it only if it becomes `kill_stuck`.
    Sigkill { victim: Arc<Victim> },
    /// Like `stuck`, for a process SIGKILLed by a user process or another kernel path: not
    /// dead `since_kill_ns` after the kill.
    KillStuck {
        victim: Arc<Victim>,
        stage: Stage,
        since_kill_ns: u64,
        where_stuck: String,
        unconfirmed_lost: u64,
    },
    /// Not dead `since_kill_ns` after the kill.
    Stuck {
        victim: Arc<Victim>,
        stage: Stage,
        /// Since the kill; for a pre-existing victim, since the start-up scan first saw it.
        since_kill_ns: u64,
        /// Where it is stuck, in words ([`Victim::where_stuck`]).
        where_stuck: String,
        /// Events lost since the kill: the exit may have been among them.
        unconfirmed_lost: u64,
    },
    /// The attach plan cannot see this victim die: no judgement is possible.
    Unobservable { victim: Arc<Victim>, why: String },
    /// Dead, but its zombie has not been reaped by its parent.
    NotReleased {
        victim: Arc<Victim>,
        since_dead_ns: u64,
    },
    /// The zombie was reaped.
    Released {
        victim: Arc<Victim>,
        kill_to_released_ns: u64,
    },
    /// A process the kernel SIGKILLed because a victim exited — the victim was the init of
    /// its PID namespace (`zap_pid_ns_processes`), its tracer (PT_EXITKILL), or (Linux 7.1+)
    /// held the last reference to its `CLONE_PIDFD_AUTOKILL` pidfd, whose release in the
    /// victim's exit sends it SIGKILL (`pidfs_file_release`: `SEND_SIG_PRIV`, `SI_KERNEL`). Not
    /// an OOM kill, not counted as one.
    Collateral {
        target: Task,
        target_start_ns: u64,
        /// The victim whose exit killed it.
        by: VictimKey,
        by_comm: crate::comm::Comm,
        /// That victim's memcg.
        memcg_id: Option<u64>,
    },
    /// The kernel's verdict for a cgroup v1 memcg at its limit with `oom_kill_disable 1`
    /// (`under_oom 1`): the OOM killer will not run, and every task that faults there sleeps
    /// until memory is freed (or the killer is re-enabled, or the limit raised). The tasks are
    /// what /proc showed when it was found (live only; a replay has none).
    OomKillerDisabled {
        memcg_id: u64,
        /// When the kernel's notification said so (CLOCK_MONOTONIC ns).
        since_ns: u64,
        tasks: Vec<MemcgTask>,
    },
    /// An [`Finding::OomKillerDisabled`] hang ended: `under_oom 0` (memory was freed, a task
    /// died, the limit was raised), the killer re-enabled, or the memcg removed.
    OomKillerDisabledEnded {
        memcg_id: u64,
        lasted_ns: u64,
        how: &'static str,
    },
    /// The memcg keeps hitting OOM while one of its victims is stuck.
    Livelock {
        memcg_id: u64,
        invocations: u32,
        window_ns: u64,
        victim: VictimKey,
        comm: crate::comm::Comm,
        /// The kernel's verdict behind it: `aborted` (its invocations returned without a kill:
        /// victim selection aborted because this victim is pending, MMF_OOM_SKIP not set on
        /// its mm), or `unknown` (no `mem_cgroup_out_of_memory` return seen on this plan).
        verdict: &'static str,
    },
    /// An OOM domain keeps invoking the OOM killer and the kernel finds no task it may kill
    /// (`mem_cgroup_out_of_memory` returned false: every task is at oom_score_adj -1000,
    /// exiting, or an earlier victim already skipped with MMF_OOM_SKIP).
    NothingKillable {
        memcg_id: u64,
        invocations: u32,
        window_ns: u64,
        /// Victims of the domain not dead yet: the kernel no longer waits on them (their mm
        /// has MMF_OOM_SKIP: reaped, or exit_mmap ran).
        already_reaped: Vec<Task>,
        /// The tasks of the domain (live only, from /proc) and why each is not eligible.
        tasks: Vec<MemcgTask>,
    },
    /// A [`Finding::NothingKillable`] ended: a kill in the domain, or no such invocation for
    /// a while.
    NothingKillableEnded {
        memcg_id: u64,
        lasted_ns: u64,
        how: &'static str,
    },
    /// One OOM invocation killed several victims (`memory.oom.group`): reported once every
    /// victim is dead, or when the timeout has passed since the first kill.
    GroupKill { incident: Box<Incident> },
}

/// A task of a memcg as /proc showed it when a memcg finding was made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemcgTask {
    pub comm: String,
    /// Its own memcg (the hang's memcg or one below it).
    pub(crate) memcg_path: Option<String>,
    /// Why the OOM killer may not choose it, where /proc says (oom_score_adj -1000,
    /// exiting, already an OOM victim).
    pub not_eligible: Option<String>,
    /// /proc/PID/oom_score_adj.
    pub(crate) oom_score_adj: Option<i32>,
    pub pid: u32,
    /// The top frames of /proc/PID/stack, where readable.
    pub(crate) stack: Vec<String>,
    /// The state letter of /proc/PID/stat (D, S, R...).
    pub state: String,
    /// /proc/PID/wchan: the kernel function it sleeps in (`mem_cgroup_oom_synchronize` for a
    /// task waiting on a disabled OOM killer).
    pub wchan: Option<String>,
}

impl Finding {
    /// When what it reports happened (CLOCK_MONOTONIC ns), if it is tied to an event.
    pub(crate) fn at_ns(&self) -> Option<u64> {
        match self {
            Finding::Killed { victim }
            | Finding::Marked { victim }
            | Finding::Sigkill { victim } => victim.killed_at(),
            Finding::Dead { victim, .. } => victim.timeline.dead,
            Finding::Released { victim, .. } => victim.timeline.released,
            Finding::KillStuck { .. }
            | Finding::Stuck { .. }
            | Finding::Unobservable { .. }
            | Finding::NotReleased { .. }
            | Finding::Collateral { .. }
            | Finding::OomKillerDisabled { .. }
            | Finding::OomKillerDisabledEnded { .. }
            | Finding::Livelock { .. }
            | Finding::NothingKillable { .. }
            | Finding::NothingKillableEnded { .. }
            | Finding::GroupKill { .. } => None,
        }
    }

    /// The victim the finding is about (all but `Livelock`, which names one by key).
    pub(crate) fn victim(&self) -> Option<&Victim> {
        match self {
            Finding::Killed { victim }
            | Finding::Marked { victim }
            | Finding::Dead { victim, .. }
            | Finding::Sigkill { victim }
            | Finding::Stuck { victim, .. }
            | Finding::KillStuck { victim, .. }
            | Finding::Unobservable { victim, .. }
            | Finding::NotReleased { victim, .. }
            | Finding::Released { victim, .. } => Some(victim),
            Finding::Livelock { .. }
            | Finding::Collateral { .. }
            | Finding::OomKillerDisabled { .. }
            | Finding::OomKillerDisabledEnded { .. }
            | Finding::NothingKillable { .. }
            | Finding::NothingKillableEnded { .. }
            | Finding::GroupKill { .. } => None,
        }
    }

    /// The victim whose forensics a printer shows with the finding (read from /proc while
    /// live): one flagged stuck or not released.
    pub(crate) fn forensics_of(&self) -> Option<&Victim> {
        match self {
            Finding::Stuck { victim, .. }
            | Finding::KillStuck { victim, .. }
            | Finding::NotReleased { victim, .. } => Some(victim),
            Finding::Killed { .. }
            | Finding::Marked { .. }
            | Finding::Dead { .. }
            | Finding::Sigkill { .. }
            | Finding::Unobservable { .. }
            | Finding::Released { .. }
            | Finding::Collateral { .. }
            | Finding::OomKillerDisabled { .. }
            | Finding::OomKillerDisabledEnded { .. }
            | Finding::Livelock { .. }
            | Finding::NothingKillable { .. }
            | Finding::NothingKillableEnded { .. }
            | Finding::GroupKill { .. } => None,
        }
    }

    /// The tasks of a hung memcg the finding lists (read from /proc while live): the memcg,
    /// where its tasks go, and the victims among them the kernel already skips.
    pub(crate) fn memcg_tasks(&mut self) -> Option<(u64, &mut Vec<MemcgTask>, &[Task])> {
        match self {
            Finding::OomKillerDisabled {
                memcg_id, tasks, ..
            } => Some((*memcg_id, tasks, &[])),
            Finding::NothingKillable {
                memcg_id,
                tasks,
                already_reaped,
                ..
            } => Some((*memcg_id, tasks, already_reaped)),
            Finding::Killed { .. }
            | Finding::Marked { .. }
            | Finding::Dead { .. }
            | Finding::Sigkill { .. }
            | Finding::KillStuck { .. }
            | Finding::Stuck { .. }
            | Finding::Unobservable { .. }
            | Finding::NotReleased { .. }
            | Finding::Released { .. }
            | Finding::Collateral { .. }
            | Finding::OomKillerDisabledEnded { .. }
            | Finding::Livelock { .. }
            | Finding::NothingKillableEnded { .. }
            | Finding::GroupKill { .. } => None,
        }
    }

    /// The process the finding is about.
    pub(crate) fn tgid(&self) -> u32 {
        match self {
            Finding::Livelock { victim, .. } => victim.tgid,
            Finding::Collateral { by, .. } => by.tgid,
            Finding::OomKillerDisabled { tasks, .. } => tasks.first().map_or(0, |t| t.pid),
            Finding::NothingKillable { already_reaped, .. } => {
                already_reaped.first().map_or(0, |t| t.tgid)
            }
            Finding::GroupKill { incident } => incident.victims.first().map_or(0, |m| m.tgid),
            f => f.victim().map_or(0, |v| v.key.tgid),
        }
    }

    /// The memcg the finding is about.
    pub(crate) fn memcg_id(&self) -> Option<u64> {
        match self {
            Finding::Livelock { memcg_id, .. } => Some(*memcg_id),
            Finding::Collateral { memcg_id, .. } => *memcg_id,
            Finding::OomKillerDisabled { memcg_id, .. }
            | Finding::OomKillerDisabledEnded { memcg_id, .. }
            | Finding::NothingKillable { memcg_id, .. }
            | Finding::NothingKillableEnded { memcg_id, .. } => Some(*memcg_id),
            Finding::GroupKill { incident } => incident.victims.first().and_then(|m| m.memcg_id),
            f => f.victim().and_then(|v| v.memcg_id),
        }
    }

    /// A flagged victim, of either kind (`stuck`, `kill_stuck`): its parts.
    pub(crate) fn stuck(&self) -> Option<(&Victim, Stage, u64)> {
        match self {
            Finding::Stuck {
                victim,
                stage,
                since_kill_ns,
                ..
            }
            | Finding::KillStuck {
                victim,
                stage,
                since_kill_ns,
                ..
            } => Some((victim, *stage, *since_kill_ns)),
            Finding::Killed { .. }
            | Finding::Marked { .. }
            | Finding::Dead { .. }
            | Finding::Sigkill { .. }
            | Finding::Unobservable { .. }
            | Finding::NotReleased { .. }
            | Finding::Released { .. }
            | Finding::Collateral { .. }
            | Finding::OomKillerDisabled { .. }
            | Finding::OomKillerDisabledEnded { .. }
            | Finding::Livelock { .. }
            | Finding::NothingKillable { .. }
            | Finding::NothingKillableEnded { .. }
            | Finding::GroupKill { .. } => None,
        }
    }

    /// A finding about a non-OOM kill that went as it should (its target died in time): text
    /// output leaves it out.
    pub(crate) fn quiet_in_text(&self) -> bool {
        match self {
            Finding::Sigkill { .. } => true,
            Finding::Dead {
                victim,
                was_flagged,
                ..
            } => victim.is_other_kill() && !was_flagged,
            Finding::Released { victim, .. } | Finding::NotReleased { victim, .. } => {
                victim.is_other_kill() && !victim.flagged_stuck
            }
            Finding::Killed { .. }
            | Finding::Marked { .. }
            | Finding::KillStuck { .. }
            | Finding::Stuck { .. }
            | Finding::Unobservable { .. }
            | Finding::Collateral { .. }
            | Finding::OomKillerDisabled { .. }
            | Finding::OomKillerDisabledEnded { .. }
            | Finding::Livelock { .. }
            | Finding::NothingKillable { .. }
            | Finding::NothingKillableEnded { .. }
            | Finding::GroupKill { .. } => false,
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Finding::Killed { .. } => "killed",
            Finding::Marked { .. } => "marked",
            Finding::Dead { .. } => "dead",
            Finding::Stuck { .. } => "stuck",
            Finding::Sigkill { .. } => "sigkill",
            Finding::KillStuck { .. } => "kill_stuck",
            Finding::Unobservable { .. } => "unobservable",
            Finding::NotReleased { .. } => "not_released",
            Finding::Released { .. } => "released",
            Finding::Livelock { .. } => "livelock",
            Finding::Collateral { .. } => "collateral",
            Finding::OomKillerDisabled { .. } => "oom_killer_disabled",
            Finding::OomKillerDisabledEnded { .. } => "oom_killer_disabled_ended",
            Finding::NothingKillable { .. } => "nothing_killable",
            Finding::NothingKillableEnded { .. } => "nothing_killable_ended",
            Finding::GroupKill { .. } => "group_kill",
        }
    }
}

/// A duration for people (`0.33 ms`, `1.20 s`), written where it is formatted (a replay
/// writes one per finding: no `String` of its own).
pub(super) fn secs(ns: u64) -> impl fmt::Display {
    fmt::from_fn(move |f| {
        let (unit, name) = if ns < 10_000_000 {
            (1e6, "ms")
        } else {
            (1e9, "s")
        };
        match hundredths(ns, unit as u64) {
            Some(h) => write!(f, "{}.{:02} {name}", h / 100, h % 100),
            None => write!(f, "{:.2} {name}", ns as f64 / unit),
        }
    })
}

/// `ns / unit` in hundredths, rounded as `{:.2}` rounds the float `ns as f64 / unit`, in
/// integers (the float formatting was ~4 % of a replay's text). None where they could differ:
/// a tie in decimal (the float's rounding and its nearness to the tie decide), or a value so
/// large that the float's error could carry it across the next hundredth's midpoint (the
/// exact quotient is at least 1/unit from a midpoint; the float's error is below
/// 1e15 × 2⁻⁵³ / unit, a ninth of that).
fn hundredths(ns: u64, unit: u64) -> Option<u64> {
    let step = unit / 100;
    let (q, r) = (ns / step, ns % step);
    if ns >= 1_000_000_000_000_000 || r == step / 2 {
        return None;
    }
    Some(q + u64::from(r > step / 2))
}

/// `pid N (comm)`, written where it is formatted.
pub(super) fn who(v: &Victim) -> impl fmt::Display + '_ {
    fmt::from_fn(move |f| write!(f, "pid {} ({})", v.key.tgid, v.comm))
}

/// [`who`], appended without `core::fmt`.
fn push_who(line: &mut String, v: &Victim) {
    line.push_str("pid ");
    line.push_str(itoa::Buffer::new().format(v.key.tgid));
    line.push_str(" (");
    line.push_str(&v.comm);
    line.push(')');
}

/// [`secs`], appended without `core::fmt`; false (nothing appended) where `secs` goes
/// through the float.
fn push_secs(line: &mut String, ns: u64) -> bool {
    let (unit, name) = if ns < 10_000_000 {
        (1_000_000, " ms")
    } else {
        (1_000_000_000, " s")
    };
    let Some(h) = hundredths(ns, unit) else {
        return false;
    };
    line.push_str(itoa::Buffer::new().format(h / 100));
    line.push('.');
    line.push(char::from(b'0' + (h % 100 / 10) as u8));
    line.push(char::from(b'0' + (h % 10) as u8));
    line.push_str(name);
    true
}

impl Finding {
    /// Appends the finding's text, its `Display`, to `line`. The three findings of every kill
    /// (killed, dead, released) are written piece by piece, without `core::fmt` (its nested
    /// `write!`s were 13 % of a replay's instructions); every other finding, and these where
    /// they say more (a group kill, sysrq, a duration written through the float), through
    /// `Display`. Unit test: the same text as `Display` for every kind and the edges.
    pub(crate) fn push_text(&self, line: &mut String) {
        let plain = |v: &Victim| {
            v.incident.is_none() && !v.decision.as_ref().is_some_and(KillDecision::is_sysrq)
        };
        let at = line.len();
        match self {
            Finding::Killed { victim } if plain(victim) => {
                line.push_str("KILLED ");
                push_who(line, victim);
                return;
            }
            Finding::Dead {
                victim,
                kill_to_dead_ns: Some(d),
                was_flagged,
            } => {
                line.push_str("DEAD ");
                push_who(line, victim);
                line.push(' ');
                if push_secs(line, *d) {
                    line.push_str(" after the kill");
                    if *was_flagged {
                        line.push_str(" (flagged)");
                    }
                    return;
                }
            }
            Finding::Released {
                victim,
                kill_to_released_ns,
            } => {
                line.push_str("RELEASED ");
                push_who(line, victim);
                line.push(' ');
                if push_secs(line, *kill_to_released_ns) {
                    line.push_str(" after the kill");
                    return;
                }
            }
            _ => {}
        }
        line.truncate(at);
        // Writing into a String cannot fail.
        let _ = fmt::Write::write_fmt(line, format_args!("{self}"));
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Marked { victim } => write!(
                f,
                "MARKED {}: already exiting; the OOM killer gave it memory reserves and the \
                 reaper, and killed nothing",
                who(victim)
            ),
            Finding::Killed { victim } => {
                write!(f, "KILLED {}", who(victim))?;
                if let Some(id) = victim.incident {
                    write!(f, " (group kill #{id}: memory.oom.group)")?;
                }
                if victim.decision.as_ref().is_some_and(KillDecision::is_sysrq) {
                    write!(f, " by sysrq-f (a manual OOM kill: no allocation failed)")?;
                }
                Ok(())
            }
            Finding::Dead {
                victim,
                kill_to_dead_ns,
                was_flagged,
            } => {
                let late = if *was_flagged { " (flagged)" } else { "" };
                match kill_to_dead_ns {
                    Some(d) => write!(f, "DEAD {} {} after the kill{late}", who(victim), secs(*d)),
                    None => write!(
                        f,
                        "DEAD {}, killed before oomtrace started{late}",
                        who(victim)
                    ),
                }
            }
            Finding::Stuck {
                victim,
                stage,
                since_kill_ns,
                where_stuck,
                unconfirmed_lost,
            } => {
                if victim.pre_existing && victim.killed_at().is_none() {
                    write!(
                        f,
                        "STUCK {} (PRE-EXISTING): killed before oomtrace started (sender \
                         unknown: the OOM killer, another kernel path or a user process) and \
                         still not dead {} after oomtrace found it; stage: {stage}; {where_stuck}",
                        who(victim),
                        secs(*since_kill_ns),
                    )?;
                } else {
                    write!(
                        f,
                        "STUCK {}: not dead {} after the kill; stage: {stage}; {where_stuck}",
                        who(victim),
                        secs(*since_kill_ns),
                    )?;
                }
                if *unconfirmed_lost > 0 {
                    write!(
                        f,
                        " (UNCONFIRMED: {unconfirmed_lost} events were lost since the kill)"
                    )?;
                }
                Ok(())
            }
            Finding::Sigkill { victim } => write!(
                f,
                "SIGKILL {} by {}",
                who(victim),
                victim
                    .sender
                    .as_ref()
                    .map_or("?".into(), ToString::to_string)
            ),
            Finding::KillStuck {
                victim,
                stage,
                since_kill_ns,
                where_stuck,
                unconfirmed_lost,
            } => {
                // No mark follows a kill that is not the OOM killer's.
                let stage = match stage {
                    Stage::Signalled => "SIGKILL sent; no thread has entered exit".to_string(),
                    s => s.to_string(),
                };
                write!(
                    f,
                    "KILL STUCK {}: SIGKILLed by {}, not dead {} after the kill; stage: \
                     {stage}; {where_stuck}",
                    who(victim),
                    victim
                        .sender
                        .as_ref()
                        .map_or("?".into(), ToString::to_string),
                    secs(*since_kill_ns),
                )?;
                if victim.untracked {
                    write!(
                        f,
                        " (its exit stages were not reported: the kernel's tracked set was full)"
                    )?;
                }
                if *unconfirmed_lost > 0 {
                    write!(
                        f,
                        " (UNCONFIRMED: {unconfirmed_lost} events were lost since the kill)"
                    )?;
                }
                Ok(())
            }
            Finding::Unobservable { victim, why } => {
                write!(
                    f,
                    "UNOBSERVABLE {}: cannot tell whether it died: {why}",
                    who(victim)
                )
            }
            Finding::NotReleased {
                victim,
                since_dead_ns,
            } => write!(
                f,
                "NOT RELEASED {}: dead for {} but its parent has not reaped the zombie",
                who(victim),
                secs(*since_dead_ns)
            ),
            Finding::Released {
                victim,
                kill_to_released_ns,
            } => write!(
                f,
                "RELEASED {} {} after the kill",
                who(victim),
                secs(*kill_to_released_ns)
            ),
            Finding::Collateral {
                target,
                by,
                by_comm,
                ..
            } => write!(
                f,
                "COLLATERAL pid {} ({}) SIGKILLed by the kernel as victim pid {} ({by_comm}) \
                 exited (its PID namespace torn down, a PT_EXITKILL tracee, or the child of a \
                 CLONE_PIDFD_AUTOKILL pidfd the victim's exit closed): not an OOM kill",
                target.tgid, target.comm, by.tgid
            ),
            Finding::OomKillerDisabled { tasks, .. } => {
                write!(
                    f,
                    "OOM KILLER DISABLED: the memcg is at its limit with oom_kill_disable 1 \
                     (the kernel says under_oom 1): nothing will be killed and tasks that fault \
                     there sleep until memory is freed; {} task(s):",
                    tasks.len()
                )?;
                for t in tasks {
                    write!(f, " pid {} ({}) {}", t.pid, t.comm, t.state)?;
                    if let Some(w) = &t.wchan {
                        write!(f, " in {w}")?;
                    }
                    write!(f, ";")?;
                }
                write!(f, " `oomtrace unstick` offers a way out")
            }
            Finding::OomKillerDisabledEnded { lasted_ns, how, .. } => write!(
                f,
                "OOM KILLER DISABLED hang ended after {}: {how}",
                secs(*lasted_ns)
            ),
            Finding::Livelock {
                memcg_id,
                invocations,
                window_ns,
                victim,
                comm,
                verdict,
            } => {
                write!(
                    f,
                    "LIVELOCK memcg {memcg_id} re-entered OOM {invocations} times in {} while \
                     victim pid {} ({comm}) is stuck",
                    secs(*window_ns),
                    victim.tgid
                )?;
                match *verdict {
                    "aborted" => write!(
                        f,
                        ": the kernel aborts victim selection, still waiting on it (MMF_OOM_SKIP \
                         not set on its mm)"
                    ),
                    _ => write!(
                        f,
                        " (verdict unknown: whether the kernel still waits on it or already \
                         skipped it cannot be told without the mem_cgroup_out_of_memory return \
                         on this kernel)"
                    ),
                }
            }
            Finding::NothingKillable {
                invocations,
                window_ns,
                already_reaped,
                tasks,
                ..
            } => {
                let per_second = f64::from(*invocations) / (*window_ns as f64 / 1e9).max(1e-3);
                write!(
                    f,
                    "NOTHING KILLABLE: the OOM killer was invoked {invocations} times in {} \
                     ({per_second:.1}/s) and found no task it may kill",
                    secs(*window_ns)
                )?;
                for v in already_reaped {
                    write!(
                        f,
                        "; pid {} ({}) already reaped (MMF_OOM_SKIP: the kernel no longer waits \
                         on it)",
                        v.tgid, v.comm
                    )?;
                }
                for t in tasks {
                    write!(
                        f,
                        "; pid {} ({}): {}",
                        t.pid,
                        t.comm,
                        t.not_eligible.as_deref().unwrap_or("eligible?")
                    )?;
                }
                Ok(())
            }
            Finding::NothingKillableEnded { lasted_ns, how, .. } => write!(
                f,
                "NOTHING KILLABLE ended after {}: {how}",
                secs(*lasted_ns)
            ),
            Finding::GroupKill { incident: i } => {
                write!(
                    f,
                    "GROUP KILL #{}: one OOM invocation (allocation by pid {} ({})) killed {} \
                     processes",
                    i.id,
                    i.trigger.tgid,
                    i.trigger.comm,
                    i.victims.len()
                )?;
                match &i.group_memcg {
                    Some(g) => write!(f, " in {g} (memory.oom.group)")?,
                    None => write!(f, " (memory.oom.group)")?,
                }
                if i.grouped_by == "timing" {
                    write!(
                        f,
                        " [grouped by timing: the kill decision is not hooked on this kernel]"
                    )?;
                }
                let dead = i.victims.len() - i.not_dead().count();
                if i.all_dead() {
                    let last = i.victims.iter().filter_map(|m| m.dead_after_ns).max();
                    write!(
                        f,
                        "; all dead, the last {} after the first kill",
                        secs(last.unwrap_or(0))
                    )?;
                } else {
                    write!(f, "; {dead} dead, not dead:")?;
                    for m in i.not_dead() {
                        write!(f, " pid {} ({})", m.tgid, m.comm)?;
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod secs_tests {
    use super::secs;

    /// The integer rounding writes what `{:.2}` of the float wrote, for the edges, ties,
    /// near-ties and random durations from nanoseconds to days.
    #[test]
    fn durations_are_written_as_the_float_formatting_wrote_them() {
        let old = |ns: u64| {
            if ns < 10_000_000 {
                format!("{:.2} ms", ns as f64 / 1e6)
            } else {
                format!("{:.2} s", ns as f64 / 1e9)
            }
        };
        let mut cases: Vec<u64> = vec![0, 1, 4_999, 5_000, 5_001, 9_999_999, 10_000_000, u64::MAX];
        for base in [
            0u64,
            10_000,
            1_230_000,
            9_990_000,
            10_000_000,
            1_000_000_000,
        ] {
            for d in [
                0u64, 1, 4_999, 5_000, 5_001, 4_999_999, 5_000_000, 5_000_001,
            ] {
                cases.push(base + d);
            }
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(x >> (i % 64));
        }
        for ns in cases {
            assert_eq!(secs(ns).to_string(), old(ns), "{ns} ns");
        }
    }
}

#[cfg(test)]
mod push_text_tests {
    use super::*;

    /// `push_text` writes what `Display` writes: the three findings it writes itself, with
    /// plain and odd names (escaping comes later, on the whole line), every duration edge and
    /// tie `secs` has, and the cases it hands to `Display` (a group kill, sysrq, a kill before
    /// oomtrace started, a flagged death, a tie or a huge duration).
    #[test]
    fn push_text_writes_what_display_writes() {
        let mut victims = Vec::new();
        for (tgid, comm) in [
            (0u32, ""),
            (1, "hog"),
            (4_294_967_295, "a b(c)"),
            (42, "\u{1b}]0;x\u{7}é"),
        ] {
            let v = Victim::new(VictimKey { tgid, start_ns: 5 }, comm.into());
            let mut group = v.clone();
            group.incident = Some(7);
            let mut sysrq = v.clone();
            sysrq.decision = Some(KillDecision {
                chosen_points: 1,
                totalpages: 2,
                constraint: 0,
                order: -1,
                gfp_mask: 0,
                gfp: String::new(),
                message: String::new(),
            });
            let mut ordinary = sysrq.clone();
            ordinary.decision.as_mut().unwrap().order = 0;
            victims.extend([v, group, sysrq, ordinary].map(Arc::new));
        }
        let mut durations: Vec<u64> = vec![0, 1, 4_999, 5_000, 5_001, 9_999_999, 10_000_000];
        durations.extend([5_000_000, 15_000_000, 1_005_000_000, u64::MAX, 1 << 60]);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..2_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            durations.push(x >> (i % 64));
        }
        let mut checked = 0;
        for victim in &victims {
            let mut findings = vec![
                Finding::Killed {
                    victim: victim.clone(),
                },
                Finding::Marked {
                    victim: victim.clone(),
                },
                Finding::Dead {
                    victim: victim.clone(),
                    kill_to_dead_ns: None,
                    was_flagged: true,
                },
            ];
            for &d in &durations {
                for was_flagged in [false, true] {
                    findings.push(Finding::Dead {
                        victim: victim.clone(),
                        kill_to_dead_ns: Some(d),
                        was_flagged,
                    });
                }
                findings.push(Finding::Released {
                    victim: victim.clone(),
                    kill_to_released_ns: d,
                });
            }
            for f in findings {
                let mut line = String::from("prefix");
                f.push_text(&mut line);
                assert_eq!(line, format!("prefix{f}"), "{f:?}");
                checked += 1;
            }
        }
        assert!(checked > 40_000, "{checked}");
    }
}
