//! Thread exits and process release, filtered in the kernel to tracked processes: an ordinary
//! exit costs one map lookup and emits nothing.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task},
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use oomtrace_common::{
    EventKind, NO_OFFSET, ParentNotified, TaskExit, TaskFree, group_dead_source,
};

use crate::{
    emit::{any_tracked, emit, is_tracked, track, untrack},
    kernel::{config, last_live_thread, leader_start_ns, read},
    victim::SIGINFO_CODE,
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

/// `si_code` of an exit signal: `CLD_EXITED` (1), `CLD_KILLED` (2), `CLD_DUMPED` (3).
const CLD_EXITED: i32 = 1;
const CLD_DUMPED: i32 = 3;

/// `trace_signal_generate(int sig, struct kernel_siginfo *info, struct task_struct *task,
/// int group, int result)`: a tracked process's exit signal to another process (see
/// [`EventKind::ParentNotified`]). `info` is a siginfo of its own there (`do_notify_parent`
/// fills one), never `SEND_SIG_NOINFO` (0) or `SEND_SIG_PRIV` (1).
#[btf_tracepoint(function = "signal_generate")]
pub fn parent_notified_btf(ctx: BtfTracePointContext) -> u32 {
    if !any_tracked() {
        return 0;
    }
    let info: u64 = ctx.arg(1);
    if info <= 1 {
        return 0;
    }
    let si_code = read::<i32>(info, SIGINFO_CODE).unwrap_or(0);
    let target: u64 = ctx.arg(2);
    let parent = read::<u32>(target, config().task_tgid).unwrap_or(0);
    notified(ctx.arg(0), si_code, parent)
}

/// The classic record: `sig`, `code` (the siginfo's `si_code`, `SI_USER`/`SI_KERNEL` for the
/// two special pointers) and the target's `pid` (a thread id).
#[tracepoint(category = "signal", name = "signal_generate")]
pub fn parent_notified_tp(ctx: TracePointContext) -> u32 {
    let c = config();
    if !any_tracked() || c.tp_signal_sig == NO_OFFSET || c.tp_signal_code == NO_OFFSET {
        return 0;
    }
    // SAFETY: offsets from this kernel's format file; reads are checked by the helper.
    let int = |off: u32| unsafe { ctx.read_at::<i32>(off as usize) }.unwrap_or(0);
    let parent = if c.tp_signal_pid == NO_OFFSET {
        0
    } else {
        int(c.tp_signal_pid) as u32
    };
    notified(int(c.tp_signal_sig), int(c.tp_signal_code), parent)
}

/// Reports an exit signal (`si_code` a `CLD_*` of an exit) sent to another process by a
/// thread of a tracked one.
#[inline(always)]
fn notified(sig: i32, si_code: i32, parent: u32) -> u32 {
    if !(CLD_EXITED..=CLD_DUMPED).contains(&si_code) {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if parent == tgid || !current_is_tracked() {
        return 0;
    }
    // SAFETY: plain helper.
    let task = unsafe { bpf_get_current_task() };
    emit(
        EventKind::ParentNotified,
        ParentNotified {
            pid: tgid,
            parent,
            start_ns: leader_start_ns(task),
            sig,
            si_code,
        },
    );
    0
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
