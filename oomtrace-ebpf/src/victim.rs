//! The victim being marked (`oom:mark_victim`) and the kernel's SIGKILLs (`signal_generate`).

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_task, bpf_get_current_uid_gid},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use oomtrace_common::{
    EventKind, KernelSigkill, MarkVictim, NO_OFFSET, TASK_COMM_LEN, sender_state, si_code,
    signal_result, target_state, victim_fields,
};

use crate::{
    emit::{emit, emit_stack, track},
    files::record_kill_sockets,
    kernel::{
        MM_ANONPAGES, MM_FILEPAGES, MM_SHMEMPAGES, config, mm_counter_kb, read, read_comm,
        read_flat, read_or_zero, task_info, task_memcg_id,
    },
};

const SIGKILL: i32 = 9;
/// `SEND_SIG_PRIV`: the siginfo pointer the kernel passes for its own signals.
const SEND_SIG_PRIV: u64 = 1;
/// `PF_EXITING` in `task_struct.flags` (include/linux/sched.h; 0x4 on every kernel oomtrace
/// supports): set by `exit_signals()` at the start of `do_exit()`.
const PF_EXITING: u32 = 0x0000_0004;

/// [`sender_state`] bits of `current`, the task generating a signal: whether it is inside its
/// own exit. 0 (unknown) when `task_struct.flags` was not found.
#[inline(always)]
fn sender_flags() -> u32 {
    // SAFETY: the helper has no preconditions; it returns `current`'s address.
    let current = unsafe { bpf_get_current_task() };
    task_state(current, sender_state::KNOWN, sender_state::EXITING)
}

/// `known`, with `exiting` where `PF_EXITING` is set, if `task.flags` can be read; else 0.
/// Arithmetic, not a branch on the read (see `read_flat`).
#[inline(always)]
fn task_state(task: u64, known: u32, exiting: u32) -> u32 {
    let Some((flags, was_read)) = read_flat(task, config().task_flags, 0u32) else {
        return 0;
    };
    let is_exiting = (flags & PF_EXITING) >> PF_EXITING.trailing_zeros();
    was_read as u32 * (known | (is_exiting * exiting))
}

const EMPTY_VICTIM: MarkVictim = MarkVictim {
    pid: 0,
    tgid: 0,
    comm: [0; TASK_COMM_LEN],
    start_ns: 0,
    memcg_id: 0,
    total_vm_kb: 0,
    anon_rss_kb: 0,
    file_rss_kb: 0,
    shmem_rss_kb: 0,
    pgtables_kb: 0,
    uid: 0,
    oom_score_adj: 0,
    fields: 0,
    _pad: 0,
    mm: 0,
};

/// Linux ≥ 6.8: `trace_mark_victim(struct task_struct *task, uid_t uid)`. Userspace loads this
/// only when the BTF prototype says so; otherwise the classic tracepoint below.
#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim_btf(ctx: BtfTracePointContext) -> u32 {
    emit_stack(&ctx);
    let task: u64 = ctx.arg(0);
    let uid: u32 = ctx.arg(1);
    let c = config();
    let info = task_info(task);
    track(info.tgid);
    let mut v = EMPTY_VICTIM;
    v.pid = info.pid;
    v.tgid = info.tgid;
    v.comm = info.comm;
    v.start_ns = info.start_ns;
    v.memcg_id = task_memcg_id(task);
    v.uid = uid;
    v.fields = victim_fields::TASK | victim_fields::COMM | victim_fields::UID;
    let signal: u64 = read(task, c.task_signal).unwrap_or(0);
    if let Some(adj) = read::<i16>(signal, c.signal_oom_score_adj) {
        v.oom_score_adj = i32::from(adj);
        v.fields |= victim_fields::OOM_SCORE_ADJ;
    }
    let mm: u64 = read(task, c.task_mm).unwrap_or(0);
    v.mm = mm;
    if let Some(total_vm) = read::<u64>(mm, c.mm_total_vm) {
        v.total_vm_kb = total_vm << c.page_kb_shift;
        v.anon_rss_kb = mm_counter_kb(mm, MM_ANONPAGES).unwrap_or(0);
        v.file_rss_kb = mm_counter_kb(mm, MM_FILEPAGES).unwrap_or(0);
        v.shmem_rss_kb = mm_counter_kb(mm, MM_SHMEMPAGES).unwrap_or(0);
        v.pgtables_kb = read::<u64>(mm, c.mm_pgtables_bytes).unwrap_or(0) >> 10;
        v.fields |= victim_fields::MEMORY;
    }
    emit(EventKind::MarkVictim, v);
    0
}

/// The classic tracepoint: whatever fields this kernel's record has (only `pid` before 6.8).
#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim_tp(ctx: TracePointContext) -> u32 {
    emit_stack(&ctx);
    let c = config();
    let field = |off: u32| -> Option<u64> {
        if off == NO_OFFSET {
            return None;
        }
        // SAFETY: offsets from this kernel's format file; reads are checked by the helper.
        unsafe { ctx.read_at::<u64>(off as usize) }.ok()
    };
    let mut v = EMPTY_VICTIM;
    let Some(pid) = field(c.tp_victim_pid) else {
        return 0;
    };
    v.pid = pid as u32;
    // Before 6.8 we only know a thread id; it is the tgid for single-threaded victims, and the
    // kernel's SIGKILL event tracks the rest.
    track(v.pid);
    if c.tp_victim_comm != NO_OFFSET {
        // __data_loc: low 16 bits offset of the string in the record, high 16 its length.
        // SAFETY: as above.
        if let Ok(loc) = unsafe { ctx.read_at::<u32>(c.tp_victim_comm as usize) } {
            let at = (loc & 0xffff) as usize;
            // SAFETY: as above.
            if let Ok(comm) = unsafe { ctx.read_at::<[u8; TASK_COMM_LEN]>(at) } {
                v.comm = comm;
                v.fields |= victim_fields::COMM;
            }
        }
    }
    if let (Some(total_vm), Some(anon), Some(file), Some(shmem)) = (
        field(c.tp_victim_total_vm),
        field(c.tp_victim_anon_rss),
        field(c.tp_victim_file_rss),
        field(c.tp_victim_shmem_rss),
    ) {
        v.total_vm_kb = total_vm;
        v.anon_rss_kb = anon;
        v.file_rss_kb = file;
        v.shmem_rss_kb = shmem;
        v.pgtables_kb = field(c.tp_victim_pgtables).unwrap_or(0);
        v.fields |= victim_fields::MEMORY;
    }
    if let Some(uid) = field(c.tp_victim_uid) {
        v.uid = uid as u32;
        v.fields |= victim_fields::UID;
    }
    if let Some(adj) = field(c.tp_victim_oom_score_adj) {
        v.oom_score_adj = i32::from(adj as u16 as i16);
        v.fields |= victim_fields::OOM_SCORE_ADJ;
    }
    emit(EventKind::MarkVictim, v);
    0
}

/// Whether a SIGKILL is one to report, from its `TRACE_SIGNAL_*` result: delivered, already
/// pending (a second kill of a process not yet dead) or delivered without its info are kills
/// to follow. An ignored one (`prepare_signal` refused it) is reported only when the target is
/// known to be inside its exit already (its group was exiting: told to die and not finished);
/// a SIGKILL an unkillable init ignores names nothing that will die.
#[inline(always)]
fn worth_reporting(result: i32, target: u32) -> bool {
    result != signal_result::IGNORED
        || (target & target_state::KNOWN != 0 && target & target_state::EXITING != 0)
}

/// `trace_signal_generate(int sig, struct kernel_siginfo *info, struct task_struct *task,
/// int group, int result)` (the same on 5.10, 6.1, 6.12 and later): every SIGKILL. `info` is
/// `SEND_SIG_NOINFO` (0: a user's `pidfd_send_signal`/`kill` without info, `SI_USER`),
/// `SEND_SIG_PRIV` (1: the kernel, `SI_KERNEL`) or a siginfo whose `si_code` says who — the
/// same code the classic record stores (`TP_STORE_SIGINFO`).
#[btf_tracepoint(function = "signal_generate")]
pub fn signal_generate_btf(ctx: BtfTracePointContext) -> u32 {
    signal_generate(&ctx)
}

/// [`signal_generate_btf`] that first records the sockets in the target's fd table
/// ([`record_kill_sockets`]) of a SIGKILL it will report, for kernels whose verifier passes
/// the walk cheaply.
///
/// Before the event (userspace takes the record when the event arrives), as a step of its
/// own: what it leaves live is the context alone, so the paths through the checks before it
/// (the target's state, which reads failed) do not each carry their values through the walk
/// and the rest of the program (with its chunks read by a `bpf_loop()` callback as well, the
/// verifier's count for this program went 28 012 → 16 069 → 8 143 instructions on this host,
/// its `BPF_PROG_LOAD` ~65 → ~8 ms). The target's fields are read again for the event: a few
/// reads more per SIGKILL beside the walk's ~320.
#[btf_tracepoint(function = "signal_generate")]
pub fn signal_generate_btf_fds(ctx: BtfTracePointContext) -> u32 {
    let task: u64 = ctx.arg(2);
    if sigkill_target(&ctx).is_some() {
        let t = task_info(task);
        record_kill_sockets(task, t.tgid, t.start_ns);
    }
    signal_generate(&ctx)
}

/// The target's [`target_state`] of a SIGKILL worth reporting ([`worth_reporting`]), or
/// `None` for another signal or a SIGKILL not reported.
#[inline(always)]
fn sigkill_target(ctx: &BtfTracePointContext) -> Option<u32> {
    let sig: i32 = ctx.arg(0);
    if sig != SIGKILL {
        return None;
    }
    let task: u64 = ctx.arg(2);
    let result: i32 = ctx.arg(4);
    let target = task_state(task, target_state::KNOWN, target_state::EXITING);
    worth_reporting(result, target).then_some(target)
}

#[inline(always)]
fn signal_generate(ctx: &BtfTracePointContext) -> u32 {
    let Some(mut target) = sigkill_target(ctx) else {
        return 0;
    };
    let info: u64 = ctx.arg(1);
    let task: u64 = ctx.arg(2);
    let result: i32 = ctx.arg(4);
    let si_code = match info {
        SEND_SIG_NOINFO => si_code::SI_USER,
        SEND_SIG_PRIV => si_code::SI_KERNEL,
        // `struct kernel_siginfo` starts `int si_signo, si_errno, si_code` on x86 and arm64.
        _ => read::<i32>(info, SIGINFO_CODE).unwrap_or(si_code::SI_KERNEL),
    };
    let t = task_info(task);
    if !track(t.tgid) {
        target |= target_state::UNTRACKED;
    }
    let mut k = sigkill(ctx.arg(3), result, si_code, target);
    k.target_pid = t.pid;
    k.target_tgid = t.tgid;
    k.target_comm = t.comm;
    k.target_start_ns = t.start_ns;
    k.target_mm = read_or_zero(task, config().task_mm, 0);
    k.target_memcg_id = task_memcg_id(task);
    emit(EventKind::KernelSigkill, k);
    0
}

/// Offset of `si_code` in `struct kernel_siginfo`.
pub(crate) const SIGINFO_CODE: u32 = 8;
/// `SEND_SIG_NOINFO`: the siginfo pointer of a user's signal sent without one.
const SEND_SIG_NOINFO: u64 = 0;

/// A SIGKILL record with the sender's facts filled in (`current`: its state, uid, memcg).
#[inline(always)]
fn sigkill(group: i32, result: i32, si_code: i32, target_state: u32) -> KernelSigkill {
    // SAFETY: plain helpers without preconditions.
    let current = unsafe { bpf_get_current_task() };
    let uid_gid = bpf_get_current_uid_gid();
    KernelSigkill {
        target_pid: 0,
        target_tgid: 0,
        target_comm: [0; TASK_COMM_LEN],
        target_start_ns: 0,
        group,
        result,
        target_mm: 0,
        sender_flags: sender_flags() | sender_state::CODE,
        _pad: 0,
        si_code,
        sender_uid: uid_gid as u32,
        sender_memcg_id: task_memcg_id(current),
        target_state,
        _pad2: 0,
        target_memcg_id: 0,
    }
}

/// The classic record names the target by pid and comm only: whether it was exiting is not
/// known, so an ignored SIGKILL is not reported here.
#[tracepoint(category = "signal", name = "signal_generate")]
pub fn signal_generate_tp(ctx: TracePointContext) -> u32 {
    let c = config();
    let int = |off: u32| -> Option<i32> {
        if off == NO_OFFSET {
            return None;
        }
        // SAFETY: offsets from this kernel's format file; reads are checked by the helper.
        unsafe { ctx.read_at::<i32>(off as usize) }.ok()
    };
    if int(c.tp_signal_sig) != Some(SIGKILL) {
        return 0;
    }
    let result = int(c.tp_signal_result).unwrap_or(0);
    if !worth_reporting(result, 0) {
        return 0;
    }
    let Some(code) = int(c.tp_signal_code) else {
        return 0;
    };
    let pid = int(c.tp_signal_pid).unwrap_or(0) as u32;
    let mut target = 0;
    if !track(pid) {
        target |= target_state::UNTRACKED;
    }
    // Two words from the record (a zero `[u8; 16]` compiled to a `memset` loop: see
    // `read_comm`).
    let comm = read_comm(ctx.as_ptr() as u64, c.tp_signal_comm);
    let mut k = sigkill(int(c.tp_signal_group).unwrap_or(0), result, code, target);
    k.target_pid = pid;
    k.target_comm = comm;
    emit(EventKind::KernelSigkill, k);
    0
}
