//! Rendering events for people (one line each) and for machines (JSON Lines, schema in
//! `docs/json.md`).

use oomtrace_common::{BADNESS_INELIGIBLE, candidate_fields};
use serde_json::{Value, json};

use crate::{
    clock::{Clock, rfc3339, time_of_day},
    event::{
        Event, Payload, cgroup_mkdir, cstr, exit_seen, exit_seen_name, group_dead_source,
        memcg_oom, mkdir_path, pre_existing, sender_state, victim_fields,
    },
    kernel::cgroups::MemcgPaths,
    text::{kb, printable},
};

/// Version of the JSON Lines schema. Bump on any incompatible change.
pub(crate) const JSON_SCHEMA: u32 = 3;

fn constraint_name(c: u32) -> &'static str {
    match c {
        0 => "none",
        1 => "cpuset",
        2 => "memory_policy",
        3 => "memcg",
        _ => "unknown",
    }
}

fn group_dead_source_name(s: u32) -> &'static str {
    match s {
        group_dead_source::TRACEPOINT => "tracepoint",
        group_dead_source::SIGNAL_LIVE => "signal_live",
        _ => "unknown",
    }
}

/// Whether a kernel SIGKILL's sender was inside its own exit; `None` when not known.
fn sender_exiting(flags: u32) -> Option<bool> {
    (flags & sender_state::KNOWN != 0).then_some(flags & sender_state::EXITING != 0)
}

/// Who sent a SIGKILL, from its record: `user` (siginfo code ≤ 0) or `kernel`; records of
/// layouts before the code was recorded were all the kernel's.
fn sigkill_sender_kind(p: &oomtrace_common::KernelSigkill) -> &'static str {
    if p.sender_flags & sender_state::CODE != 0 && oomtrace_common::si_code::from_user(p.si_code) {
        "user"
    } else {
        "kernel"
    }
}

/// Whether text output shows an event ([`text_quiet`]); JSON and dumps carry every event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Quiet {
    /// Shown.
    Never,
    /// Left out: a node creates cgroups all day, they would drown the OOM path.
    Always,
    /// A user process's SIGKILL: left out (a kill that works is not news; one that does not
    /// stick is a `kill_stuck` finding), and so are its target's exit events.
    UserKill,
    /// An exit event: left out when its process is a user's SIGKILL target.
    IfUserKilled,
    /// A release: left out when its process is a user's SIGKILL target, which is then forgotten.
    LastIfUserKilled,
}

/// Whether text output shows `ev`.
pub(crate) fn text_quiet(ev: &Event) -> Quiet {
    match ev.payload {
        Payload::KernelSigkill(p)
            if p.sender_flags & oomtrace_common::sender_state::CODE != 0
                && oomtrace_common::si_code::from_user(p.si_code) =>
        {
            Quiet::UserKill
        }
        Payload::TaskExit(_) | Payload::GroupExited(_) => Quiet::IfUserKilled,
        Payload::TaskFree(_) => Quiet::LastIfUserKilled,
        // The death it dates is shown (`group_exited`, "its parent notified").
        Payload::CgroupMkdir(_) | Payload::CgroupRmdir(_) | Payload::ParentNotified(_) => {
            Quiet::Always
        }
        Payload::OomInvoke(_)
        | Payload::OomInvokeDone(_)
        | Payload::OomKill(_)
        | Payload::MarkVictim(_)
        | Payload::KernelSigkill(_)
        | Payload::AllocStack(_)
        | Payload::OomCandidate(_)
        | Payload::WakeReaper(_)
        | Payload::StartReaping(_)
        | Payload::FinishReaping(_)
        | Payload::SkipReaping(_)
        | Payload::PreExisting(_)
        | Payload::MemcgOom(_)
        | Payload::MemcgState(_) => Quiet::Never,
    }
}

/// Turns events into text lines or JSON values.
pub(crate) struct Renderer {
    pub(crate) clock: Clock,
    pub(crate) memcgs: MemcgPaths,
    /// Page size in kB, to show `totalpages` as a size.
    pub(crate) page_kb: u64,
    /// Kernel symbol names by address (`name+0xoff`), for allocation stacks.
    pub(crate) symbols: std::collections::HashMap<u64, String>,
    /// The kernel's gfp flag names (the recording kernel's in a replay).
    pub(crate) gfp: crate::kernel::gfp::GfpNames,
}

impl Renderer {
    fn memcg(&mut self, id: u64) -> Value {
        self.memcgs.path(id).map_or(Value::Null, Value::String)
    }

    fn memcg_text(&mut self, id: u64) -> String {
        if id == 0 {
            return "(none: global)".into();
        }
        self.memcgs
            .path(id)
            .map_or_else(|| format!("id {id}"), |p| format!("{p} (id {id})"))
    }

    /// An allocation stack's frames, named where kallsyms named them.
    fn frames(&self, p: &oomtrace_common::AllocStack) -> Vec<String> {
        let n = (p.frames as usize).min(p.ips.len());
        p.ips[..n]
            .iter()
            .map(|a| {
                self.symbols
                    .get(a)
                    .cloned()
                    .unwrap_or_else(|| format!("{a:#x}"))
            })
            .collect()
    }

    /// One JSON object (a line of `--json` output) for an event.
    pub(crate) fn json(&mut self, ev: &Event) -> Value {
        let h = &ev.header;
        let mut v = json!({
            "type": "event",
            "time": rfc3339(self.clock.wall_ns(h.ts_ns)),
            "ts_ns": h.ts_ns,
            "cpu": h.cpu,
            "event": ev.kind().name(),
            "current": { "pid": h.pid, "tgid": h.tgid, "comm": cstr(&h.comm) },
        });
        let body = match &ev.payload {
            Payload::OomInvoke(p) => json!({
                "memcg_id": p.memcg_id, "memcg_path": self.memcg(p.memcg_id),
                "global": p.memcg_id == 0, "gfp_mask": p.gfp_mask,
                "gfp": self.gfp.decode(p.gfp_mask.into()), "order": p.order,
            }),
            Payload::OomInvokeDone(p) => json!({ "killed": p.killed != 0 }),
            Payload::OomKill(p) => json!({
                "victim": { "pid": p.chosen_pid, "tgid": p.chosen_tgid,
                            "comm": cstr(&p.chosen_comm), "start_ns": p.chosen_start_ns,
                            "memcg_id": (p.chosen_memcg_id != 0).then_some(p.chosen_memcg_id),
                            "memcg_path": match p.chosen_memcg_id {
                                0 => Value::Null,
                                m => self.memcg(m),
                            } },
                "chosen_points": p.chosen_points, "totalpages": p.totalpages,
                "memcg_id": p.memcg_id, "memcg_path": self.memcg(p.memcg_id),
                "constraint": constraint_name(p.constraint), "order": p.order,
                "gfp_mask": p.gfp_mask, "gfp": self.gfp.decode(p.gfp_mask.into()),
                "message": cstr(&p.message),
            }),
            Payload::MarkVictim(p) => {
                let has = |bit| p.fields & bit != 0;
                let opt = |bit, val: Value| if has(bit) { val } else { Value::Null };
                let memcg_path = if has(victim_fields::TASK) {
                    self.memcg(p.memcg_id)
                } else {
                    Value::Null
                };
                json!({
                    "victim": {
                        "pid": p.pid,
                        "tgid": opt(victim_fields::TASK, p.tgid.into()),
                        "comm": opt(victim_fields::COMM, cstr(&p.comm).into()),
                        "start_ns": opt(victim_fields::TASK, p.start_ns.into()),
                    },
                    "memcg_id": opt(victim_fields::TASK, p.memcg_id.into()),
                    "memcg_path": memcg_path,
                    "total_vm_kb": opt(victim_fields::MEMORY, p.total_vm_kb.into()),
                    "anon_rss_kb": opt(victim_fields::MEMORY, p.anon_rss_kb.into()),
                    "file_rss_kb": opt(victim_fields::MEMORY, p.file_rss_kb.into()),
                    "shmem_rss_kb": opt(victim_fields::MEMORY, p.shmem_rss_kb.into()),
                    "pgtables_kb": opt(victim_fields::MEMORY, p.pgtables_kb.into()),
                    "uid": opt(victim_fields::UID, p.uid.into()),
                    "oom_score_adj": opt(victim_fields::OOM_SCORE_ADJ, p.oom_score_adj.into()),
                })
            }
            Payload::KernelSigkill(p) => json!({
                "target": {
                    "pid": p.target_pid,
                    "tgid": ev.subject().tgid,
                    "comm": cstr(&p.target_comm),
                    "start_ns": if p.target_start_ns == 0 { Value::Null } else { p.target_start_ns.into() },
                },
                "group": p.group != 0, "result": p.result,
                "sender_exiting": sender_exiting(p.sender_flags),
                "sender_kind": sigkill_sender_kind(p),
                "si_code": if p.sender_flags & sender_state::CODE != 0 { p.si_code.into() } else { Value::Null },
                "sender_uid": if p.sender_flags & sender_state::CODE != 0 { p.sender_uid.into() } else { Value::Null },
                "sender_memcg_path": if p.sender_memcg_id == 0 { Value::Null } else { self.memcg(p.sender_memcg_id) },
                "target_memcg_path": if p.target_memcg_id == 0 { Value::Null } else { self.memcg(p.target_memcg_id) },
                "target_exiting": if p.target_state & oomtrace_common::target_state::KNOWN != 0 {
                    (p.target_state & oomtrace_common::target_state::EXITING != 0).into()
                } else {
                    Value::Null
                },
                "untracked": p.target_state & oomtrace_common::target_state::UNTRACKED != 0,
            }),
            Payload::MemcgState(p) => {
                let mut m =
                    serde_json::to_value(crate::lifecycle::MemcgAt::new(p)).unwrap_or(Value::Null);
                if let Value::Object(o) = &mut m {
                    o.insert(
                        "memcg_path".into(),
                        if p.memcg_id == 0 {
                            Value::Null
                        } else {
                            self.memcg(p.memcg_id)
                        },
                    );
                }
                m
            }
            Payload::AllocStack(p) => json!({
                "frames": self.frames(p),
                "error": if p.error == 0 { Value::Null } else { p.error.into() },
            }),
            Payload::OomCandidate(p) => {
                let mem = p.fields & candidate_fields::MEMORY != 0;
                let opt = |v: u64| if mem { Value::from(v) } else { Value::Null };
                json!({
                    "task": { "pid": p.pid, "tgid": p.tgid, "comm": cstr(&p.comm),
                              "start_ns": p.start_ns },
                    "points": (p.points != BADNESS_INELIGIBLE).then_some(p.points),
                    "eligible": p.points != BADNESS_INELIGIBLE,
                    "totalpages": p.totalpages,
                    "oom_score_adj": (p.fields & candidate_fields::OOM_SCORE_ADJ != 0)
                        .then_some(p.oom_score_adj),
                    "anon_rss_kb": opt(p.anon_rss_kb), "file_rss_kb": opt(p.file_rss_kb),
                    "shmem_rss_kb": opt(p.shmem_rss_kb), "swap_kb": opt(p.swap_kb),
                    "pgtables_kb": opt(p.pgtables_kb), "seq": p.seq,
                })
            }
            Payload::WakeReaper(p)
            | Payload::StartReaping(p)
            | Payload::FinishReaping(p)
            | Payload::SkipReaping(p) => json!({ "pid": p.pid }),
            Payload::TaskExit(p) => json!({
                "group_dead": if p.group_dead_source == group_dead_source::UNKNOWN {
                    Value::Null
                } else {
                    (p.group_dead != 0).into()
                },
                "group_dead_source": group_dead_source_name(p.group_dead_source),
                "start_ns": p.start_ns,
            }),
            Payload::TaskFree(p) => json!({
                "pid": p.pid,
                "start_ns": if p.start_ns == 0 { Value::Null } else { p.start_ns.into() },
            }),
            Payload::GroupExited(p) => json!({
                "pid": p.pid,
                "how": exit_seen_name(p.how),
                "start_ns": if p.start_ns == 0 { Value::Null } else { p.start_ns.into() },
            }),
            Payload::ParentNotified(p) => json!({
                "pid": p.pid,
                "parent": p.parent,
                "start_ns": if p.start_ns == 0 { Value::Null } else { p.start_ns.into() },
                "sig": p.sig,
                "si_code": p.si_code,
            }),
            Payload::PreExisting(p) => json!({
                "pid": p.pid, "ppid": p.ppid, "comm": cstr(&p.comm), "start_ns": p.start_ns,
                "memcg_id": if p.memcg_id == 0 { Value::Null } else { p.memcg_id.into() },
                "memcg_path": if p.memcg_id == 0 { Value::Null } else { self.memcg(p.memcg_id) },
                "threads": p.threads,
                "zombie_leader": p.flags & pre_existing::ZOMBIE_LEADER != 0,
                "thread_in_d": p.flags & pre_existing::THREAD_IN_D != 0,
                "traced": p.flags & pre_existing::TRACED != 0,
                "parent_init": p.flags & pre_existing::PARENT_INIT != 0,
            }),
            Payload::MemcgOom(p) => {
                let known = p.flags & memcg_oom::STATE_KNOWN != 0;
                json!({
                    "memcg_id": p.memcg_id, "memcg_path": self.memcg(p.memcg_id),
                    "invocations": p.invocations, "kills": p.kills,
                    "under_oom": known.then_some(p.flags & memcg_oom::UNDER_OOM != 0),
                    "oom_kill_disable": known.then_some(p.flags & memcg_oom::KILL_DISABLED != 0),
                    "removed": p.flags & memcg_oom::REMOVED != 0,
                    "source": if p.flags & memcg_oom::V1 != 0 { "v1_eventfd" } else { "v2_memory_events_local" },
                })
            }
            Payload::CgroupMkdir(p) | Payload::CgroupRmdir(p) => json!({
                "cgroup_id": p.id,
                "hierarchy": (p.flags & cgroup_mkdir::HIERARCHY_KNOWN != 0).then_some(p.hierarchy),
                "level": p.level,
                "path": mkdir_path(p),
                "path_truncated": p.flags & cgroup_mkdir::TRUNCATED != 0,
            }),
        };
        if let (Value::Object(m), Value::Object(b)) = (&mut v, body) {
            m.extend(b);
        }
        v
    }

    /// One text line for an event.
    pub(crate) fn text(&mut self, ev: &Event) -> String {
        let h = &ev.header;
        let cur = format!("{} ({})", h.tgid, cstr(&h.comm));
        let what = match &ev.payload {
            Payload::OomInvoke(p) if p.memcg_id == 0 => format!(
                "the whole machine out of memory (global OOM{}): allocation by {cur}, order {}, \
                 gfp {} ({:#x})",
                if p.order == -1 { ", sysrq-f" } else { "" },
                p.order,
                self.gfp.decode(p.gfp_mask.into()),
                p.gfp_mask
            ),
            Payload::OomInvoke(p) => format!(
                "memcg {} out of memory: allocation by {cur}, order {}, gfp {} ({:#x})",
                self.memcg_text(p.memcg_id),
                p.order,
                self.gfp.decode(p.gfp_mask.into()),
                p.gfp_mask
            ),
            Payload::OomInvokeDone(p) => format!(
                "allocation by {cur}: OOM handling {}",
                if p.killed != 0 {
                    "killed (or found a dying victim)"
                } else {
                    "did not kill"
                }
            ),
            Payload::OomKill(p) => format!(
                "pid {} ({}) chosen in memcg {}{}: points {}, totalpages {} ({}), constraint {}, \
                 triggered by {cur}: \"{}\"",
                p.chosen_tgid,
                cstr(&p.chosen_comm),
                self.memcg_text(p.memcg_id),
                match p.chosen_memcg_id {
                    0 => String::new(),
                    own if own == p.memcg_id => String::new(),
                    own => format!(" (itself in {})", self.memcg_text(own)),
                },
                p.chosen_points,
                p.totalpages,
                kb(p.totalpages * self.page_kb),
                constraint_name(p.constraint),
                cstr(&p.message)
            ),
            Payload::MarkVictim(p) => {
                let has = |bit| p.fields & bit != 0;
                let mut s = if has(victim_fields::TASK) {
                    format!(
                        "pid {} ({}) marked, memcg {}",
                        p.tgid,
                        cstr(&p.comm),
                        self.memcg_text(p.memcg_id)
                    )
                } else if has(victim_fields::COMM) {
                    format!("tid {} ({}) marked", p.pid, cstr(&p.comm))
                } else {
                    format!("tid {} marked", p.pid)
                };
                if has(victim_fields::MEMORY) {
                    s += &format!(
                        ", anon-rss {}, file-rss {}, shmem-rss {}, total-vm {}",
                        kb(p.anon_rss_kb),
                        kb(p.file_rss_kb),
                        kb(p.shmem_rss_kb),
                        kb(p.total_vm_kb)
                    );
                }
                if has(victim_fields::OOM_SCORE_ADJ) {
                    s += &format!(", oom_score_adj {}", p.oom_score_adj);
                }
                s + &format!(", allocation by {cur}")
            }
            Payload::KernelSigkill(p) => {
                let who = match ev.subject().tgid {
                    Some(tgid) => format!("pid {tgid}"),
                    None => format!("tid {}", p.target_pid),
                };
                let exiting = if sender_exiting(p.sender_flags) == Some(true) {
                    " inside its own exit"
                } else {
                    ""
                };
                if sigkill_sender_kind(p) == "user" {
                    format!(
                        "SIGKILL to {who} ({}) by user process {cur}, uid {}",
                        cstr(&p.target_comm),
                        p.sender_uid
                    )
                } else {
                    format!(
                        "SIGKILL to {who} ({}) by the kernel, from {cur}{exiting}",
                        cstr(&p.target_comm)
                    )
                }
            }
            Payload::MemcgState(p) => {
                let at = crate::lifecycle::MemcgAt::new(p);
                let what = if p.memcg_id == 0 {
                    "the machine".to_string()
                } else {
                    format!("memcg {}", self.memcg_text(p.memcg_id))
                };
                format!("{what} at the kill: {}", at.summary())
            }
            Payload::AllocStack(p) if p.frames == 0 => {
                format!(
                    "allocation stack of {cur}: none (bpf_get_stack error {})",
                    p.error
                )
            }
            Payload::AllocStack(p) => {
                let frames = self.frames(p);
                // Innermost frames are the OOM killer's own; the caller's end says what allocated.
                format!(
                    "allocation stack of {cur} ({} frames): {}",
                    frames.len(),
                    printable(&frames.join(" < "))
                )
            }
            Payload::OomCandidate(p) => format!(
                "OOM scan by {cur}: pid {} ({}) {}, oom_score_adj {}, rss anon {} file {} shmem \
                 {}, swap {}",
                p.tgid,
                cstr(&p.comm),
                if p.points == BADNESS_INELIGIBLE {
                    "not eligible".to_string()
                } else {
                    format!("points {}", p.points)
                },
                p.oom_score_adj,
                kb(p.anon_rss_kb),
                kb(p.file_rss_kb),
                kb(p.shmem_rss_kb),
                kb(p.swap_kb)
            ),
            Payload::WakeReaper(p) => format!("oom_reaper woken for pid {}", p.pid),
            Payload::StartReaping(p) => format!("oom_reaper started reaping pid {}", p.pid),
            Payload::FinishReaping(p) => format!(
                "oom_reaper finished reaping pid {} (memory unmapped; the process may live on)",
                p.pid
            ),
            Payload::SkipReaping(p) => {
                format!(
                    "oom_reaper skipped pid {} (mmap_lock busy, or its memory already torn down)",
                    p.pid
                )
            }
            Payload::TaskExit(p) => {
                let last = match (p.group_dead_source, p.group_dead) {
                    (group_dead_source::UNKNOWN, _) => "",
                    (_, 0) => ", other threads remain",
                    _ => ", the last live thread (the process is not dead until it has finished)",
                };
                format!(
                    "thread {} of pid {} ({}) entered exit{last}",
                    h.pid,
                    h.tgid,
                    cstr(&h.comm)
                )
            }
            Payload::TaskFree(p) => format!("pid {} released (zombie reaped)", p.pid),
            Payload::GroupExited(p) => match p.how {
                exit_seen::PIDFD => format!(
                    "pid {} ({}) finished exiting: every thread is past exit_notify (pidfd)",
                    p.pid,
                    cstr(&h.comm)
                ),
                exit_seen::GONE => format!("pid {} is gone (already reaped when looked up)", p.pid),
                exit_seen::PID_REUSED => format!(
                    "pid {} is gone (the pid now names a process started later)",
                    p.pid
                ),
                exit_seen::PARENT_NOTIFIED => format!(
                    "pid {} ({}) finished exiting: every thread is past exit_notify (its parent \
                     notified, the pidfd readable)",
                    p.pid,
                    cstr(&h.comm)
                ),
                other => format!("pid {} finished exiting (observed as {other})", p.pid),
            },
            Payload::ParentNotified(p) => format!(
                "pid {} notified its parent {} of its exit (signal {}, si_code {})",
                p.pid, p.parent, p.sig, p.si_code
            ),
            Payload::PreExisting(p) => {
                let mut s = format!(
                    "pid {} ({}) was sent SIGKILL before oomtrace started and has not finished \
                     exiting: {} thread(s), parent {}",
                    p.pid,
                    cstr(&p.comm),
                    p.threads,
                    p.ppid
                );
                for (bit, text) in [
                    (pre_existing::ZOMBIE_LEADER, ", leader a zombie"),
                    (pre_existing::THREAD_IN_D, ", a thread in D"),
                    (pre_existing::TRACED, ", a thread stopped by a tracer"),
                    (pre_existing::PARENT_INIT, ", reparented to PID 1"),
                ] {
                    if p.flags & bit != 0 {
                        s += text;
                    }
                }
                if p.memcg_id != 0 {
                    s += &format!(", memcg {}", self.memcg_text(p.memcg_id));
                }
                s
            }
            Payload::CgroupMkdir(p) | Payload::CgroupRmdir(p) => {
                let made = if matches!(ev.payload, Payload::CgroupMkdir(_)) {
                    "created"
                } else {
                    "removed"
                };
                let hierarchy = if p.flags & cgroup_mkdir::HIERARCHY_KNOWN != 0 {
                    format!("hierarchy {}", p.hierarchy)
                } else {
                    "hierarchy unknown".into()
                };
                let cut = if p.flags & cgroup_mkdir::TRUNCATED != 0 {
                    " (path cut)"
                } else {
                    ""
                };
                format!(
                    "cgroup {}{cut} {made} (id {}, {hierarchy}, level {})",
                    mkdir_path(p),
                    p.id,
                    p.level
                )
            }
            Payload::MemcgOom(p) if p.flags & memcg_oom::REMOVED != 0 => {
                format!("memcg {} removed", self.memcg_text(p.memcg_id))
            }
            Payload::MemcgOom(p) => {
                let mut s = format!(
                    "memcg {}: the kernel counted {} OOM invocation(s), {} kill(s)",
                    self.memcg_text(p.memcg_id),
                    p.invocations,
                    p.kills
                );
                if p.flags & memcg_oom::STATE_KNOWN != 0 {
                    s += if p.flags & memcg_oom::UNDER_OOM != 0 {
                        ", under OOM"
                    } else {
                        ", not under OOM"
                    };
                    if p.flags & memcg_oom::KILL_DISABLED != 0 {
                        s += ", OOM killer DISABLED (oom_kill_disable 1)";
                    }
                }
                s
            }
        };
        format!(
            "{} {:<15} {what}",
            time_of_day(self.clock.wall_ns(h.ts_ns)),
            ev.kind().name()
        )
    }
}

#[cfg(test)]
mod tests {
    use oomtrace_common::{Header, MarkVictim};

    use super::*;
    use crate::event::comm_bytes;

    fn renderer() -> Renderer {
        Renderer {
            symbols: Default::default(),
            gfp: Default::default(),
            clock: Clock {
                realtime_offset_ns: 1_764_180_000_000_000_000,
            },
            memcgs: MemcgPaths::new(None),
            page_kb: 4,
        }
    }

    fn header() -> Header {
        Header {
            kind: 0,
            cpu: 0,
            ts_ns: 1_500_000,
            pid: 42,
            tgid: 40,
            comm: comm_bytes("alloc"),
        }
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339(1_764_180_061_123_456_789),
            "2025-11-26T18:01:01.123456Z"
        );
    }

    #[test]
    fn kill_renders_victim_trigger_and_sizes() {
        let mut r = renderer();
        r.memcgs.insert(77, "/sandbox".into());
        r.memcgs.insert(78, "/sandbox/job".into());
        let ev = Event {
            header: header(),
            payload: Payload::OomKill(crate::event::sample_oom_kill()),
        };
        let line = r.text(&ev);
        assert!(line.starts_with("18:00:00.001500 oom_kill"), "{line}");
        assert!(
            line.contains(
                "pid 50 (hog) chosen in memcg /sandbox (id 77) (itself in /sandbox/job (id 78))"
            ),
            "{line}"
        );
        assert!(line.contains("totalpages 25600 (100 MiB)"), "{line}");
        assert!(line.contains("triggered by 40 (alloc)"), "{line}");
        let j = r.json(&ev);
        assert_eq!(j["event"], "oom_kill");
        assert_eq!(j["victim"]["tgid"], 50);
        assert_eq!(j["memcg_path"], "/sandbox");
        assert_eq!(j["victim"]["memcg_path"], "/sandbox/job");
        assert_eq!(j["constraint"], "memcg");
        assert_eq!(j["current"]["tgid"], 40);
    }

    #[test]
    fn old_kernel_mark_victim_has_nulls_not_zeros() {
        let mut r = renderer();
        let mut v: MarkVictim = unsafe { std::mem::zeroed() };
        v.pid = 51;
        let ev = Event {
            header: header(),
            payload: Payload::MarkVictim(v),
        };
        let j = r.json(&ev);
        assert_eq!(j["victim"]["pid"], 51);
        assert!(j["victim"]["tgid"].is_null());
        assert!(j["anon_rss_kb"].is_null());
        assert!(
            r.text(&ev)
                .contains("tid 51 marked, allocation by 40 (alloc)")
        );
    }
}
