//! The OOM invocation (`mem_cgroup_out_of_memory`, and `out_of_memory` for global OOMs) and
//! the kill decision (`oom_kill_process`). fentry/fexit where the kernel allows them, else
//! kprobe/kretprobe: same facts either way.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::HashMap,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use oomtrace_common::{
    CANDIDATES_MAX, EventKind, MESSAGE_LEN, OomCandidate, OomInvoke, OomInvokeDone, OomKill,
    candidate_fields,
};

use crate::{
    emit::{emit, track},
    kernel::{
        MM_ANONPAGES, MM_FILEPAGES, MM_SHMEMPAGES, MM_SWAPENTS, config, memcg_id, mm_counter_kb,
        read, read_str, task_info, task_memcg_id, zeroed,
    },
};

/// Threads inside an OOM invocation, between its entry and its kill decision (or its return):
/// the `oom_badness` calls they make are the OOM killer's scan. The value counts the
/// candidates reported. Written only at OOM invocations.
#[map]
static SCANNING: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// The current thread starts an OOM scan.
#[inline(always)]
fn scan_starts() {
    let _ = SCANNING.insert(current_tid(), 0, 0);
}

/// The current thread's scan is over (a kill decision, or the invocation returned).
#[inline(always)]
fn scan_ends() {
    let _ = SCANNING.remove(current_tid());
}

// bool mem_cgroup_out_of_memory(struct mem_cgroup *memcg, gfp_t gfp_mask, int order)

#[fentry(function = "mem_cgroup_out_of_memory")]
pub fn oom_invoke_fentry(ctx: FEntryContext) -> u32 {
    invoke(ctx.arg(0), ctx.arg(1), ctx.arg(2))
}

#[kprobe]
pub fn oom_invoke_kprobe(ctx: ProbeContext) -> u32 {
    match (ctx.arg(0), ctx.arg(1), ctx.arg(2)) {
        (Some(memcg), Some(gfp), Some(order)) => invoke(memcg, gfp, order),
        _ => 0,
    }
}

fn invoke(memcg: u64, gfp_mask: u32, order: i32) -> u32 {
    scan_starts();
    emit(
        EventKind::OomInvoke,
        OomInvoke {
            memcg_id: memcg_id(memcg),
            gfp_mask,
            order,
        },
    );
    0
}

// bool out_of_memory(struct oom_control *oc): every OOM goes through it — global ones, sysrq-f
// (order -1), and memcg ones from inside mem_cgroup_out_of_memory. Only those without a memcg
// are reported here (memcg ones already were, with their memcg): memcg id 0 means the machine.

#[fentry(function = "out_of_memory")]
pub fn oom_global_fentry(ctx: FEntryContext) -> u32 {
    global(ctx.arg(0))
}

#[kprobe]
pub fn oom_global_kprobe(ctx: ProbeContext) -> u32 {
    match ctx.arg(0) {
        Some(oc) => global(oc),
        None => 0,
    }
}

fn global(oc: u64) -> u32 {
    let c = config();
    // An unknown offset reads as "has a memcg": nothing is reported rather than a guess.
    if read::<u64>(oc, c.oc_memcg).unwrap_or(1) != 0 {
        return 0;
    }
    scan_starts();
    emit(
        EventKind::OomInvoke,
        OomInvoke {
            memcg_id: 0,
            gfp_mask: read(oc, c.oc_gfp_mask).unwrap_or(0),
            order: read(oc, c.oc_order).unwrap_or(0),
        },
    );
    0
}

#[fexit(function = "mem_cgroup_out_of_memory")]
pub fn oom_invoke_done_fexit(ctx: FExitContext) -> u32 {
    // The return value follows the three arguments.
    let ret: u64 = ctx.arg(3);
    invoke_done(ret)
}

#[kretprobe]
pub fn oom_invoke_done_kretprobe(ctx: RetProbeContext) -> u32 {
    invoke_done(ctx.ret())
}

fn invoke_done(ret: u64) -> u32 {
    scan_ends();
    emit(
        EventKind::OomInvokeDone,
        OomInvokeDone {
            killed: u32::from(ret & 0xff != 0),
            _pad: 0,
        },
    );
    0
}

// static void oom_kill_process(struct oom_control *oc, const char *message)

#[fentry(function = "oom_kill_process")]
pub fn oom_kill_fentry(ctx: FEntryContext) -> u32 {
    kill(ctx.arg(0), ctx.arg(1))
}

#[kprobe]
pub fn oom_kill_kprobe(ctx: ProbeContext) -> u32 {
    match (ctx.arg(0), ctx.arg(1)) {
        (Some(oc), Some(message)) => kill(oc, message),
        _ => 0,
    }
}

fn kill(oc: u64, message: u64) -> u32 {
    scan_ends();
    let c = config();
    let chosen: u64 = read(oc, c.oc_chosen).unwrap_or(0);
    let task = task_info(chosen);
    track(task.tgid);
    // Zeroed a word at a time (a `[0u8; 64]` compiled to a `memset` loop the verifier walked
    // 64 times), then the string read into it.
    let mut msg: [u64; MESSAGE_LEN / 8] = zeroed();
    // SAFETY: the words' bytes, a valid `[u8]` of MESSAGE_LEN for as long as `msg` lives.
    read_str(message, 0, unsafe {
        core::slice::from_raw_parts_mut(msg.as_mut_ptr().cast::<u8>(), MESSAGE_LEN)
    });
    // SAFETY: 8 u64 are 64 bytes, and any bytes are a valid byte array.
    let msg = unsafe { core::mem::transmute::<[u64; MESSAGE_LEN / 8], [u8; MESSAGE_LEN]>(msg) };
    emit(
        EventKind::OomKill,
        OomKill {
            chosen_pid: task.pid,
            chosen_tgid: task.tgid,
            chosen_comm: task.comm,
            chosen_start_ns: task.start_ns,
            chosen_points: read(oc, c.oc_chosen_points).unwrap_or(0),
            totalpages: read(oc, c.oc_totalpages).unwrap_or(0),
            memcg_id: memcg_id(read(oc, c.oc_memcg).unwrap_or(0)),
            constraint: read(oc, c.oc_constraint).unwrap_or(0),
            order: read(oc, c.oc_order).unwrap_or(0),
            gfp_mask: read(oc, c.oc_gfp_mask).unwrap_or(0),
            _pad: 0,
            message: msg,
            chosen_memcg_id: if chosen == 0 {
                0
            } else {
                task_memcg_id(chosen)
            },
            chosen_mm: read(chosen, c.task_mm).unwrap_or(0),
        },
    );
    0
}

// long oom_badness(struct task_struct *p, unsigned long totalpages) (Linux >= 5.9: LONG_MIN
// for a task it may not kill). fexit only: a kretprobe does not see the task.

#[fexit(function = "oom_badness")]
pub fn oom_badness_fexit(ctx: FExitContext) -> u32 {
    // Only inside an OOM scan: /proc/PID/oom_score reads call it too.
    let Some(seen) = SCANNING.get_ptr_mut(current_tid()) else {
        return 0;
    };
    // SAFETY: a valid map value pointer; only this thread's scan writes its entry.
    let seq = unsafe {
        if *seen >= CANDIDATES_MAX {
            return 0;
        }
        *seen += 1;
        *seen
    };
    let task: u64 = ctx.arg(0);
    let totalpages: u64 = ctx.arg(1);
    let points: i64 = ctx.arg(2);
    let c = config();
    let info = task_info(task);
    let mut cand = OomCandidate {
        pid: info.pid,
        tgid: info.tgid,
        comm: info.comm,
        start_ns: info.start_ns,
        points,
        totalpages,
        anon_rss_kb: 0,
        file_rss_kb: 0,
        shmem_rss_kb: 0,
        swap_kb: 0,
        pgtables_kb: 0,
        oom_score_adj: 0,
        fields: 0,
        seq,
        _pad: 0,
    };
    let signal: u64 = read(task, c.task_signal).unwrap_or(0);
    if let Some(adj) = read::<i16>(signal, c.signal_oom_score_adj) {
        cand.oom_score_adj = i32::from(adj);
        cand.fields |= candidate_fields::OOM_SCORE_ADJ;
    }
    let mm: u64 = read(task, c.task_mm).unwrap_or(0);
    if let Some(anon) = mm_counter_kb(mm, MM_ANONPAGES) {
        cand.anon_rss_kb = anon;
        cand.file_rss_kb = mm_counter_kb(mm, MM_FILEPAGES).unwrap_or(0);
        cand.shmem_rss_kb = mm_counter_kb(mm, MM_SHMEMPAGES).unwrap_or(0);
        cand.swap_kb = mm_counter_kb(mm, MM_SWAPENTS).unwrap_or(0);
        cand.pgtables_kb = read::<u64>(mm, c.mm_pgtables_bytes).unwrap_or(0) >> 10;
        cand.fields |= candidate_fields::MEMORY;
    }
    emit(EventKind::OomCandidate, cand);
    0
}
