//! The OOM invocation (`mem_cgroup_out_of_memory`, and `out_of_memory` for global OOMs) and
//! the kill decision (`oom_kill_process`). fentry/fexit where the kernel allows them, else
//! kprobe/kretprobe: same facts either way.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use oomtrace_common::{EventKind, MESSAGE_LEN, OomInvoke, OomInvokeDone, OomKill, TASK_COMM_LEN};

use crate::{
    emit::{emit, track},
    kernel::{config, memcg_id, read, read_str, task_info, task_memcg_id},
};

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
    let c = config();
    let chosen: u64 = read(oc, c.oc_chosen).unwrap_or(0);
    let task = task_info(chosen);
    track(task.tgid);
    let mut msg = [0u8; MESSAGE_LEN];
    read_str(message, 0, &mut msg);
    let mut comm = [0u8; TASK_COMM_LEN];
    comm.copy_from_slice(&task.comm);
    emit(
        EventKind::OomKill,
        OomKill {
            chosen_pid: task.pid,
            chosen_tgid: task.tgid,
            chosen_comm: comm,
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
