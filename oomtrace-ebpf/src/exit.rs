//! Thread exits and process release, filtered in the kernel to tracked processes: an ordinary
//! exit costs one map lookup and emits nothing.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task},
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use oomtrace_common::{EventKind, NO_OFFSET, TaskExit, TaskFree, group_dead_source};

use crate::{
    emit::{any_tracked, emit, is_tracked, track, untrack},
    kernel::{config, last_live_thread, leader_start_ns, read},
};

/// Linux ≥ 6.16: `trace_sched_process_exit(struct task_struct *p, bool group_dead)`.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn exit_btf_group_dead(ctx: BtfTracePointContext) -> u32 {
    if !current_is_tracked() {
        return 0;
    }
    let task: u64 = ctx.arg(0);
    let group_dead: u64 = ctx.arg(1);
    exit(
        task,
        Some(group_dead & 0xff != 0),
        group_dead_source::TRACEPOINT,
    )
}

/// Older kernels: `trace_sched_process_exit(struct task_struct *p)`; group-dead is derived.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn exit_btf(ctx: BtfTracePointContext) -> u32 {
    if !current_is_tracked() {
        return 0;
    }
    let task: u64 = ctx.arg(0);
    exit(task, last_live_thread(task), group_dead_source::SIGNAL_LIVE)
}

/// The classic tracepoint runs in the exiting task: `current` is the task.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn exit_tp(ctx: TracePointContext) -> u32 {
    if !current_is_tracked() {
        return 0;
    }
    // SAFETY: plain helper.
    let task = unsafe { bpf_get_current_task() };
    let off = config().tp_exit_group_dead;
    if off == NO_OFFSET {
        return exit(task, last_live_thread(task), group_dead_source::SIGNAL_LIVE);
    }
    // SAFETY: offset from this kernel's format file; the read is checked by the helper.
    let group_dead = unsafe { ctx.read_at::<u8>(off as usize) }
        .ok()
        .map(|b| b != 0);
    exit(task, group_dead, group_dead_source::TRACEPOINT)
}

/// Whether the exiting thread's process is tracked; the cheap count test comes before the
/// helper call. The classic tracepoints name the thread the kernel marked, which is not the
/// leader when the leader had exited: a tracked *thread* counts too, and its process is then
/// tracked from here on, so that the leader's release is reported.
#[inline(always)]
fn current_is_tracked() -> bool {
    if !any_tracked() {
        return false;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    if is_tracked(tgid) {
        return true;
    }
    if tid != tgid && is_tracked(tid) {
        track(tgid);
        return true;
    }
    false
}

fn exit(task: u64, group_dead: Option<bool>, source: u32) -> u32 {
    let (group_dead, source) = match group_dead {
        Some(dead) => (u32::from(dead), source),
        None => (0, group_dead_source::UNKNOWN),
    };
    emit(
        EventKind::TaskExit,
        TaskExit {
            group_dead,
            group_dead_source: source,
            start_ns: leader_start_ns(task),
        },
    );
    0
}

/// `trace_sched_process_free(struct task_struct *p)`, from an RCU callback (`current` is
/// unrelated). Only a tracked leader matches: its release ends the process for good, so it is
/// also dropped from the tracked set here.
#[raw_tracepoint(tracepoint = "sched_process_free")]
pub fn free_raw_tp(ctx: RawTracePointContext) -> u32 {
    if !any_tracked() {
        return 0;
    }
    let task: u64 = ctx.arg(0);
    let pid: u32 = read(task, config().task_pid).unwrap_or(0);
    free(pid, || leader_start_ns(task))
}

#[tracepoint(category = "sched", name = "sched_process_free")]
pub fn free_tp(ctx: TracePointContext) -> u32 {
    let off = config().tp_free_pid;
    if off == NO_OFFSET || !any_tracked() {
        return 0;
    }
    // SAFETY: offset from this kernel's format file; the read is checked by the helper.
    let pid: i32 = unsafe { ctx.read_at(off as usize) }.unwrap_or(0);
    free(pid as u32, || 0)
}

/// Reports the release of `pid` if it is tracked (callers have checked [`any_tracked`]);
/// `start_ns` is read only then (it costs two reads, and this runs for every task).
#[inline(always)]
fn free(pid: u32, start_ns: impl FnOnce() -> u64) -> u32 {
    if pid == 0 || !is_tracked(pid) {
        return 0;
    }
    untrack(pid);
    emit(
        EventKind::TaskFree,
        TaskFree {
            pid,
            _pad: 0,
            start_ns: start_ns(),
        },
    );
    0
}
