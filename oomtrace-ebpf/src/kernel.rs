//! Reading kernel memory at offsets userspace found in BTF, and the `CONFIG` global holding them.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes};
use oomtrace_common::{Config, NO_OFFSET, TASK_COMM_LEN};

/// Offsets and switches, written by userspace with `EbpfLoader::override_global` before load.
#[unsafe(no_mangle)]
static CONFIG: Config = Config::UNSET;

/// The loaded configuration. `read_volatile` keeps the compiler from folding the `UNSET` value.
#[inline(always)]
pub fn config() -> &'static Config {
    // SAFETY: CONFIG is a valid static; volatile read of its address only.
    unsafe { &*core::ptr::read_volatile(&&raw const CONFIG) }
}

/// Reads a `T` at `base + off` in kernel memory; `None` if the offset is unknown on this kernel,
/// the base is NULL or the read faults.
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Option<T> {
    if off == NO_OFFSET || base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copes with any address (faults return an error).
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T).ok() }
}

/// The `T` at `base + off` in kernel memory and 1, or `zero` and 0 where the read faults (a
/// NULL `base` included); `None` only where the offset is unknown on this kernel (a constant of
/// the frozen `CONFIG`: the verifier follows one side of that test). No branch on the read's
/// outcome: where a program's reads each branch, the verifier walks the rest of the program
/// once per combination of outcomes. `zero` must be all zero bytes (what a fault leaves, see
/// [`read_zeroed`]).
#[inline(always)]
pub fn read_flat<T: Copy>(base: u64, off: u32, zero: T) -> Option<(T, u64)> {
    if off == NO_OFFSET {
        return None;
    }
    let _ = zero;
    let (v, err) = read_zeroed::<T>(base.wrapping_add(u64::from(off)));
    Some((v, 1 - crate::files::nonzero(err as u64)))
}

/// The `T` at `base + off` in kernel memory, or `zero` where the offset is unknown or the read
/// faults (a NULL `base` included): as `read(…).unwrap_or(zero)`, without a branch on the
/// read's outcome (see [`read_flat`]). `zero` must be all zero bytes.
#[inline(always)]
pub fn read_or_zero<T: Copy>(base: u64, off: u32, zero: T) -> T {
    if off == NO_OFFSET {
        return zero;
    }
    read_zeroed::<T>(base.wrapping_add(u64::from(off))).0
}

/// A `T` of zero bytes, stored a word at a time: zeroed as one value, 16 bytes or more compile
/// to a call of `memset` (see [`read_zeroed`]). `T` is 8-byte aligned and a whole number of
/// words (the BPF stack takes aligned stores only).
#[inline(always)]
pub fn zeroed<T: Copy>() -> T {
    const {
        assert!(core::mem::align_of::<T>() >= 8 && core::mem::size_of::<T>().is_multiple_of(8));
    }
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    let words = v.as_mut_ptr().cast::<u64>();
    for i in 0..core::mem::size_of::<T>() / 8 {
        // SAFETY: word `i` of `v`, aligned (asserted above).
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    // SAFETY: every byte written.
    unsafe { v.assume_init() }
}

/// The `T` at `addr` in kernel memory and the helper's result: where the read faults, all zero
/// bytes (`bpf_probe_read_kernel` zeroes its buffer then, kernel/trace/bpf_trace.c since 5.5),
/// so the buffer is not zeroed before. Zeroed first, a buffer of 16 bytes or more (a task's
/// name) compiled to a call of `memset`: a byte-at-a-time loop the verifier walks once per
/// byte and per call.
#[inline(always)]
pub fn read_zeroed<T: Copy>(addr: u64) -> (T, i64) {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper copes with any address (a fault is an error, the buffer zeroed);
    // `v` is a buffer of `T`'s size, which the helper writes whole either way.
    unsafe {
        let err = aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            v.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const _,
        );
        (v.assume_init(), err)
    }
}

/// Reads a NUL-terminated kernel string at `base + off` into `out` (zero-filled when unknown).
#[inline(always)]
pub fn read_str(base: u64, off: u32, out: &mut [u8]) {
    if off == NO_OFFSET || base == 0 {
        return;
    }
    // SAFETY: as above; the helper bounds the copy by out's length.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes((base + u64::from(off)) as *const u8, out) };
}

/// What we report about a task.
pub struct TaskInfo {
    pub pid: u32,
    pub tgid: u32,
    pub comm: [u8; TASK_COMM_LEN],
    /// Start time (ns since boot) of the task's thread-group leader: with the tgid it names a
    /// process across pid reuse.
    pub start_ns: u64,
}

/// The 16 bytes of a task's name at `task + off`, zeros where unknown or unreadable: read as
/// two words, each zero on its own, because a zero 16-byte value (as `read_or_zero`'s `zero`,
/// or a slot LLVM zeroes before the read) compiles to a call of `memset`, a byte-at-a-time
/// loop the verifier walks once per byte (see [`read_zeroed`]).
#[inline(always)]
pub fn read_comm(task: u64, off: u32) -> [u8; TASK_COMM_LEN] {
    let second = if off == NO_OFFSET { NO_OFFSET } else { off + 8 };
    let words: [u64; 2] = [read_or_zero(task, off, 0), read_or_zero(task, second, 0)];
    // SAFETY: two u64 are 16 bytes, and any bytes are a valid byte array.
    unsafe { core::mem::transmute::<[u64; 2], [u8; TASK_COMM_LEN]>(words) }
}

#[inline(always)]
pub fn task_info(task: u64) -> TaskInfo {
    let c = config();
    TaskInfo {
        pid: read_or_zero(task, c.task_pid, 0),
        tgid: read_or_zero(task, c.task_tgid, 0),
        comm: read_comm(task, c.task_comm),
        start_ns: leader_start_ns(task),
    }
}

#[inline(always)]
pub fn leader_start_ns(task: u64) -> u64 {
    let c = config();
    let leader = read_or_zero(task, c.task_group_leader, 0u64);
    read_or_zero(leader, c.task_start_boottime, 0)
}

/// The cgroup id (inode of its directory) of a `struct cgroup_subsys_state *`.
#[inline(always)]
pub fn css_cgroup_id(css: u64) -> u64 {
    let c = config();
    let cgroup = read_or_zero(css, c.css_cgroup, 0u64);
    let kn = read_or_zero(cgroup, c.cgroup_kn, 0u64);
    read_or_zero(kn, c.kn_id, 0)
}

/// The memory cgroup id of a task: task->cgroups->subsys[memory_cgrp_id]->cgroup->kn->id.
/// Works on cgroup v1 and v2 (`bpf_get_current_cgroup_id()` only knows v2).
#[inline(always)]
pub fn task_memcg_id(task: u64) -> u64 {
    let c = config();
    let cgroups = read_or_zero(task, c.task_cgroups, 0u64);
    let css = read_or_zero(cgroups, c.css_set_subsys, 0u64);
    css_cgroup_id(css)
}

/// The cgroup id of a `struct mem_cgroup *` (0 for NULL: a global OOM).
#[inline(always)]
pub fn memcg_id(memcg: u64) -> u64 {
    if memcg == 0 {
        return 0;
    }
    css_cgroup_id(memcg + u64::from(config().memcg_css))
}

/// `task->signal->live == 0`: the task is the last live thread of its process. Valid at
/// `sched_process_exit`, which runs after `do_exit()` decremented `live`.
#[inline(always)]
pub fn last_live_thread(task: u64) -> Option<bool> {
    let c = config();
    let signal: u64 = read(task, c.task_signal)?;
    let live: i32 = read(signal, c.signal_live)?;
    Some(live == 0)
}

/// mm counters (`enum { MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES }`).
pub const MM_FILEPAGES: u32 = 0;
pub const MM_ANONPAGES: u32 = 1;
pub const MM_SWAPENTS: u32 = 2;
pub const MM_SHMEMPAGES: u32 = 3;

/// mm counter `i` of `mm` in kB, as the kernel's own OOM report reads it (the counter without
/// the per-CPU deltas not yet folded in: approximate); None when its offsets are unknown or
/// the read fails.
#[inline(always)]
pub fn mm_counter_kb(mm: u64, i: u32) -> Option<u64> {
    let c = config();
    if c.mm_rss_base == NO_OFFSET || c.mm_rss_stride == NO_OFFSET {
        return None;
    }
    let pages: i64 = read(mm, c.mm_rss_base + i * c.mm_rss_stride)?;
    Some((pages.max(0) as u64) << c.page_kb_shift)
}
