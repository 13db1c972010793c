//! The ring buffer, the lost-event counter, the set of tracked processes, and writing events.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_get_stack, bpf_ktime_get_ns,
        generated,
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use oomtrace_common::{
    AllocStack, Event, EventKind, Header, RING_BYTES, STACK_DEPTH, TASK_COMM_LEN, TRACKED_MAX,
};

use crate::kernel::config;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Events that did not fit in the ring buffer (index 0, per CPU; userspace sums).
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Processes (by tgid) whose thread exits and release are reported: every target of a kernel
/// SIGKILL (OOM victims among them). Filled at the kill, emptied at the release.
///
/// A plain hash, not an LRU: an LRU pops a node from a per-CPU free list on *every* update,
/// even of a key it holds, and with ≥ 128 CPUs (on kernels without the 2025 free-target fix)
/// that evicts live entries — a victim's exit and release were then silently dropped. A plain
/// hash never evicts; when full (16384 processes killed and not yet released at once) a new
/// process is not tracked: its death is still seen (through its pidfd), its exit stages and
/// release are not.
#[map]
static TRACKED: HashMap<u32, u32> = HashMap::with_max_entries(TRACKED_MAX, 0);

/// How many entries `TRACKED` holds. It is 0 while
/// no victim is alive, which on a healthy host is nearly always: every process exit and release
/// on the machine then costs one read of this (an array lookup the verifier inlines, on a cache
/// line that is only written when a victim comes or goes) instead of a hash lookup.
#[map]
static TRACKED_COUNT: Array<u64> = Array::with_max_entries(1, 0);

/// Entries userspace removed from `TRACKED` itself (only userspace writes it): a release whose
/// delete the kernel refused (`-EBUSY`: the hash's per-CPU bucket lock is held by the context
/// this softirq interrupted) or whose program was skipped (recursion) would otherwise leave a
/// dead process tracked forever. Userspace sweeps such entries (a process /proc no longer has
/// at two sweeps in a row: one just reaped is still released here, milliseconds later) and
/// counts them here; `TRACKED_COUNT - USER_UNTRACKED` is what is tracked.
#[map]
static USER_UNTRACKED: Array<u64> = Array::with_max_entries(1, 0);

/// `BPF_NOEXIST`: insert only if absent, so each entry is counted once.
const NOEXIST: u64 = 1;

/// `-E2BIG`: what a full hash map answers an insert of a new key.
const E2BIG: i64 = -7;

/// Starts tracking a process's exits. False when the set is full and `tgid` was not in it:
/// the caller says so in its event (never silent).
#[inline(always)]
pub fn track(tgid: u32) -> bool {
    if tgid == 0 {
        return true;
    }
    match TRACKED.insert(tgid, 1, NOEXIST) {
        Ok(()) => {
            count_tracked(1);
            true
        }
        // Already tracked (-EEXIST), or a transient failure of the bucket lock (-EBUSY).
        Err(e) => i64::from(e) != E2BIG,
    }
}

/// False when no process can be tracked: the cheap test before reading anything.
#[inline(always)]
pub fn any_tracked() -> bool {
    if config().trace_all_exits != 0 {
        return true;
    }
    // SAFETY: valid map value pointers; aligned u64 reads cannot tear. Momentarily, userspace
    // has deleted an entry but not yet counted it: the difference is then too high, which
    // costs one hash lookup, never a missed event.
    let read = |a: &Array<u64>| {
        a.get_ptr(0)
            .map_or(0, |v| unsafe { core::ptr::read_volatile(v) })
    };
    read(&TRACKED_COUNT) != read(&USER_UNTRACKED)
}

/// Whether `tgid` is tracked: the hash lookup, for after [`any_tracked`] said it may be.
#[inline(always)]
pub fn is_tracked(tgid: u32) -> bool {
    config().trace_all_exits != 0 || TRACKED.get_ptr(tgid).is_some()
}

#[inline(always)]
pub fn untrack(tgid: u32) {
    if TRACKED.remove(tgid).is_ok() {
        count_tracked(u64::MAX);
    }
}

/// Adds `delta` (wrapping: `u64::MAX` is -1) to `TRACKED_COUNT`, atomically. The BPF target
/// has no compare-and-swap, so Rust's atomics do not exist there; this is the one atomic
/// instruction every kernel with BPF knows (`BPF_XADD`, no fetch).
#[inline(always)]
fn count_tracked(delta: u64) {
    if let Some(count) = TRACKED_COUNT.get_ptr_mut(0) {
        // SAFETY: a valid, aligned map value pointer; only ever changed by this instruction.
        unsafe {
            core::arch::asm!(
                "lock *(u64 *)({count} + 0) += {delta}",
                count = in(reg) count,
                delta = in(reg) delta,
            );
        }
    }
}

/// Writes the header of an event in place, into the ring's reserved record: each field
/// stored once, `current`'s name written by the helper itself (NUL-padded; zeroed where it
/// fails). A `Header` built on the stack and moved into the record was copied byte by byte,
/// its name three times: ~100 instructions in every program, each verified on every path that
/// emits (the reaper programs were 208 instructions for one read and one event).
///
/// # Safety
/// `at` points to a reserved ring-buffer record, valid for writes of a `Header`.
#[inline(always)]
unsafe fn write_header(at: *mut Header, kind: EventKind) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the caller's pointer; plain helpers without arguments, and one writing
    // TASK_COMM_LEN bytes into the record's `comm`, exactly its size.
    unsafe {
        (&raw mut (*at).kind).write(kind as u32);
        (&raw mut (*at).cpu).write(bpf_get_smp_processor_id());
        (&raw mut (*at).ts_ns).write(bpf_ktime_get_ns());
        (&raw mut (*at).pid).write(pid_tgid as u32);
        (&raw mut (*at).tgid).write((pid_tgid >> 32) as u32);
        generated::bpf_get_current_comm((&raw mut (*at).comm).cast(), TASK_COMM_LEN as u32);
    }
}

/// Counts one event that did not fit in the ring buffer.
#[inline(always)]
fn lost() {
    if let Some(n) = LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *n += 1 };
    }
}

/// The wake-up flag an event of `kind` is submitted with.
///
/// A victim's thread exits, the notification of its parent and its release do not wake the
/// reader: the exits come just before the victim's pidfd is notified (`exit_notify`) and the
/// notification just after, and the pidfd wakes the loop (which drains the ring first), or,
/// while deaths come in a stream, the loop reads them at its other wakes and at least every
/// 20 ms (host/deathwatch.rs `set_lazy`); the loop wakes for a victim dead and not yet
/// released on its tick grid (live.rs `next_wake`). A cgroup's removal does not either: it matters only to what a later wake
/// writes, and every wake reads the ring before it writes anything (a node removes cgroups
/// all day). Every other event (the kill path, the reaper, a memcg's creation) wakes it at
/// once, *forced*: the kernel's default wakes the reader only when it has read everything
/// before the record (`consumer_pos == record`), which an exit or a release left unread would
/// otherwise defeat, and a kill's pidfd must be opened before the victim is reaped.
#[inline(always)]
fn wakeup(kind: EventKind) -> u64 {
    match kind {
        EventKind::TaskExit
        | EventKind::TaskFree
        | EventKind::CgroupRmdir
        | EventKind::ParentNotified => u64::from(BPF_RB_NO_WAKEUP),
        _ => u64::from(BPF_RB_FORCE_WAKEUP),
    }
}

/// Writes one event whose payload is too large for the 512-byte BPF stack: `fill` writes the
/// payload in place, every field of it (the ring's memory is not zeroed), and returns false to
/// drop the event. Woken for as [`wakeup`] says.
#[inline(always)]
pub fn emit_in_place<T: 'static>(kind: EventKind, fill: impl FnOnce(*mut T) -> bool) {
    let Some(mut entry) = EVENTS.reserve::<Event<T>>(0) else {
        lost();
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to the reserved, writable record; fields are written through raw
    // pointers, never read.
    let (header_at, data) = unsafe { (&raw mut (*event).header, &raw mut (*event).data) };
    // SAFETY: as above.
    unsafe { write_header(header_at, kind) };
    if fill(data) {
        entry.submit(wakeup(kind));
    } else {
        entry.discard(0);
    }
}

/// Writes one event, woken for as [`wakeup`] says (with every exit traced, a benchmark mode,
/// userspace also polls on a timer).
#[inline(always)]
pub fn emit<T: 'static>(kind: EventKind, data: T) {
    let flags = wakeup(kind);
    match EVENTS.reserve::<Event<T>>(0) {
        Some(mut entry) => {
            let event = entry.as_mut_ptr();
            // SAFETY: `event` points to the reserved record, valid for writes of its whole
            // size: the header in place, then the payload (every byte of it, padding fields
            // included: the ring's memory is not zeroed).
            unsafe {
                write_header(&raw mut (*event).header, kind);
                (&raw mut (*event).data).write(data);
            }
            entry.submit(flags);
        }
        None => lost(),
    }
}

/// Writes `current`'s kernel stack as an [`EventKind::AllocStack`] event. `bpf_get_stack`
/// writes straight into the reserved ring-buffer record (264 bytes would not fit beside the
/// rest on the 512-byte BPF stack). Called only where a victim is marked: a kill, never a
/// per-event cost.
#[inline(always)]
pub fn emit_stack<C: EbpfContext>(ctx: &C) {
    let Some(mut entry) = EVENTS.reserve::<Event<AllocStack>>(0) else {
        if let Some(n) = LOST.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
            unsafe { *n += 1 };
        }
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to the reserved record, valid for writes of its whole size; the
    // header is written in place, the stack by the helper into `ips` (sized exactly).
    unsafe {
        write_header(
            core::ptr::addr_of_mut!((*event).header),
            EventKind::AllocStack,
        );
        let ips = core::ptr::addr_of_mut!((*event).data.ips);
        let n = bpf_get_stack(
            ctx.as_ptr(),
            ips.cast(),
            (STACK_DEPTH * 8) as u32,
            0, // kernel stack, no frames skipped
        );
        let (frames, error) = if n >= 0 {
            ((n as u32) / 8, 0)
        } else {
            (0, n as i32)
        };
        // The helper zero-fills what it did not write only on success; on failure it
        // zeroes the whole buffer too (kernel/bpf/stackmap.c `clear:`), so `ips` is defined.
        core::ptr::addr_of_mut!((*event).data.frames).write(frames);
        core::ptr::addr_of_mut!((*event).data.error).write(error);
    }
    entry.submit(wakeup(EventKind::AllocStack));
}
