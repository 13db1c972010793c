//! The oom_reaper tracepoints. All four records carry only the victim's pid.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use oomtrace_common::{EventKind, NO_OFFSET, Reaper};

use crate::{emit::emit, kernel::config};

#[tracepoint(category = "oom", name = "wake_reaper")]
pub fn wake_reaper_tp(ctx: TracePointContext) -> u32 {
    reaper(&ctx, EventKind::WakeReaper)
}

#[tracepoint(category = "oom", name = "start_task_reaping")]
pub fn start_reaping_tp(ctx: TracePointContext) -> u32 {
    reaper(&ctx, EventKind::StartReaping)
}

#[tracepoint(category = "oom", name = "finish_task_reaping")]
pub fn finish_reaping_tp(ctx: TracePointContext) -> u32 {
    reaper(&ctx, EventKind::FinishReaping)
}

#[tracepoint(category = "oom", name = "skip_task_reaping")]
pub fn skip_reaping_tp(ctx: TracePointContext) -> u32 {
    reaper(&ctx, EventKind::SkipReaping)
}

fn reaper(ctx: &TracePointContext, kind: EventKind) -> u32 {
    let off = config().tp_reaper_pid;
    if off == NO_OFFSET {
        return 0;
    }
    // SAFETY: offset from this kernel's format file; the read is checked by the helper.
    let pid: i32 = unsafe { ctx.read_at(off as usize) }.unwrap_or(0);
    emit(
        kind,
        Reaper {
            pid: pid as u32,
            _pad: 0,
        },
    );
    0
}
