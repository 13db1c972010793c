//! Cgroups being created (`cgroup:cgroup_mkdir`) and removed (`cgroup:cgroup_rmdir`): their id,
//! hierarchy, depth and path, so that userspace names a memcg that is removed before an event
//! naming it is read, and knows it removed in order with the events that name it.

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use oomtrace_common::{CGROUP_PATH_LEN, CgroupMkdir, EventKind, NO_OFFSET, cgroup_mkdir};

use crate::{
    emit::emit_in_place,
    kernel::{config, read_flat},
};

/// What the record holds but its path (which is read in place: too large for the stack).
struct Facts {
    id: u64,
    hierarchy: i32,
    /// 1 if `hierarchy` was read, else 0.
    hierarchy_known: u32,
    level: i32,
    /// The path string's kernel address.
    path: u64,
}

/// Writes the record (`kind`: made or removed): the facts, then the path read straight into the
/// ring buffer.
#[inline(always)]
fn report(kind: EventKind, f: Facts) {
    emit_in_place::<CgroupMkdir>(kind, |m| {
        // SAFETY: `m` is the reserved record's payload; every field is written before submit.
        unsafe {
            let path = &raw mut (*m).path;
            // Zeroed a word at a time (the read stops at the NUL; the ring's memory is not
            // zeroed): `write_bytes` compiled to a call of `memset`, a byte-at-a-time loop the
            // verifier walked 256 times. The path is 8-byte aligned in the record (the
            // header's 40 bytes and the 24 before it).
            for w in 0..CGROUP_PATH_LEN / 8 {
                core::ptr::write_volatile(path.cast::<u64>().add(w), 0);
            }
            // The read stops at the buffer's end with a NUL in its last byte: a path of exactly
            // CGROUP_PATH_LEN - 1 bytes is said cut too.
            let len = bpf_probe_read_kernel_str_bytes(f.path as *const u8, &mut *path)
                .map_or(0, <[u8]>::len);
            let mut flags = 0;
            if len + 1 >= CGROUP_PATH_LEN {
                flags |= cgroup_mkdir::TRUNCATED;
            }
            flags |= f.hierarchy_known * cgroup_mkdir::HIERARCHY_KNOWN;
            (&raw mut (*m).id).write(f.id);
            (&raw mut (*m).hierarchy).write(f.hierarchy as u32);
            (&raw mut (*m).level).write(f.level as u32);
            (&raw mut (*m).flags).write(flags);
            (&raw mut (*m).path_len).write(len as u32);
        }
        true
    });
}

/// `trace_cgroup_mkdir(struct cgroup *cgrp, const char *path)` (5.10 … 6.18 alike): the id is
/// `cgrp->kn->id`, read as `task_memcg_id` reads a task's memcg (a failed read is 0).
///
/// The reads do not branch on their outcome ([`read_flat`]): with a branch each, the verifier
/// walked the record's writing once per combination (3 594 instructions verified for 294, 6–9 ms
/// of `BPF_PROG_LOAD` on this host).
#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn cgroup_mkdir_btf(ctx: BtfTracePointContext) -> u32 {
    from_btf(EventKind::CgroupMkdir, &ctx)
}

/// `trace_cgroup_rmdir`: the same event class (`cgroup`) and arguments as `cgroup_mkdir`, on
/// every kernel since 4.13.
#[btf_tracepoint(function = "cgroup_rmdir")]
pub fn cgroup_rmdir_btf(ctx: BtfTracePointContext) -> u32 {
    from_btf(EventKind::CgroupRmdir, &ctx)
}

#[inline(always)]
fn from_btf(kind: EventKind, ctx: &BtfTracePointContext) -> u32 {
    let cgrp: u64 = ctx.arg(0);
    let c = config();
    let (kn, _) = read_flat(cgrp, c.cgroup_kn, 0u64).unwrap_or((0, 0));
    let (id, _) = read_flat(kn, c.kn_id, 0u64).unwrap_or((0, 0));
    if id == 0 {
        return 0;
    }
    let (root, _) = read_flat(cgrp, c.cgroup_root, 0u64).unwrap_or((0, 0));
    let (hierarchy, hierarchy_known) = read_flat(root, c.root_hierarchy_id, 0i32).unwrap_or((0, 0));
    let (level, _) = read_flat(cgrp, c.cgroup_level, 0i32).unwrap_or((0, 0));
    report(
        kind,
        Facts {
            id,
            hierarchy,
            hierarchy_known: hierarchy_known as u32,
            level,
            path: ctx.arg(1),
        },
    );
    0
}

/// The classic record: `int root`, `int level`, `u64 id` (an `int` before 5.5, left out then),
/// `__data_loc char[] path`.
#[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
pub fn cgroup_mkdir_tp(ctx: TracePointContext) -> u32 {
    from_tp(EventKind::CgroupMkdir, &ctx)
}

/// `cgroup:cgroup_rmdir`: a record of the same event class (`cgroup`) as `cgroup_mkdir`'s, so
/// its fields are where `cgroup_mkdir`'s format file says (the offsets are read from that one).
#[tracepoint(category = "cgroup", name = "cgroup_rmdir")]
pub fn cgroup_rmdir_tp(ctx: TracePointContext) -> u32 {
    from_tp(EventKind::CgroupRmdir, &ctx)
}

#[inline(always)]
fn from_tp(kind: EventKind, ctx: &TracePointContext) -> u32 {
    let c = config();
    if c.tp_cgroup_id == NO_OFFSET || c.tp_cgroup_path == NO_OFFSET {
        return 0;
    }
    // SAFETY: offsets from this kernel's format file; reads are checked by the helper.
    let id = unsafe { ctx.read_at::<u64>(c.tp_cgroup_id as usize) }.unwrap_or(0);
    // SAFETY: as above.
    let Ok(loc) = (unsafe { ctx.read_at::<u32>(c.tp_cgroup_path as usize) }) else {
        return 0;
    };
    if id == 0 {
        return 0;
    }
    let int = |off: u32| -> Option<i32> {
        if off == NO_OFFSET {
            return None;
        }
        // SAFETY: as above.
        unsafe { ctx.read_at::<i32>(off as usize) }.ok()
    };
    let hierarchy = int(c.tp_cgroup_root);
    report(
        kind,
        Facts {
            id,
            hierarchy: hierarchy.unwrap_or(0),
            hierarchy_known: u32::from(hierarchy.is_some()),
            level: int(c.tp_cgroup_level).unwrap_or(0),
            // __data_loc: low 16 bits the string's offset in the record, high 16 its length.
            path: ctx.as_ptr() as u64 + u64::from(loc & 0xffff),
        },
    );
    0
}
