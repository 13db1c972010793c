//! The sockets in a killed process's fd table, read when its SIGKILL is generated (the
//! `KILL_SOCKETS` map, by tgid; see [`KillSockets`]).

use aya_ebpf::{
    helpers::generated,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use oomtrace_common::{
    KILL_FD_CHUNK, KILL_FDS_READ_MAX, KILL_OPEN_FDS_BITS, KILL_SOCKET_INODES, KILL_SOCKETS_MAX,
    KillSockets, kill_sockets,
};

use crate::kernel::{config, read, read_zeroed};

/// The latest SIGKILL's socket record of each process. An LRU: a record userspace never takes
/// (its event lost, or a process it does not follow) is evicted by later ones.
#[map]
static KILL_SOCKETS: LruHashMap<u32, KillSockets> =
    LruHashMap::with_max_entries(KILL_SOCKETS_MAX, 0);

/// Where a record is built (it is too large for the programs' stack).
#[map]
static SOCKETS_SCRATCH: PerCpuArray<KillSockets> = PerCpuArray::with_max_entries(1, 0);

/// `S_IFMT` and `S_IFSOCK` of `inode.i_mode` (include/uapi/linux/stat.h).
const S_IFMT: u16 = 0o170_000;
const S_IFSOCK: u16 = 0o140_000;
/// `SOCKFS_MAGIC` (include/uapi/linux/magic.h): the superblock of every socket's inode. A
/// socket file's own inode on disk (an `O_PATH` fd of a unix socket path) is `S_IFSOCK` too but
/// lives elsewhere; /proc shows it as a path, not as `socket:[…]`, and so is it skipped here.
const SOCKFS_MAGIC: u64 = 0x534F_434B;

/// Records the socket inodes in `task`'s fd table under `tgid`. Does nothing when an offset of
/// the walk is unknown (userspace then reads /proc, as it knows from the same offsets).
#[inline(always)]
pub fn record_kill_sockets(task: u64, tgid: u32, start_ns: u64) {
    let c = config();
    if tgid == 0 || !c.walks_fd_tables() {
        return;
    }
    let Some(s) = SOCKETS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a valid per-CPU map value; programs do not nest on one CPU for this hook
    // (a signal generated from NMI context does not exist).
    let s = unsafe { &mut *s };
    s.start_ns = start_ns;
    // One store a field and a slot: as plain assignments the zeros compiled to a call of
    // `memset` (272 bytes), a byte-at-a-time loop the verifier walked once per byte.
    // SAFETY: valid, aligned fields of the map value.
    unsafe {
        core::ptr::write_volatile(&raw mut s.max_fds, 0);
        core::ptr::write_volatile(&raw mut s.fds_read, 0);
        core::ptr::write_volatile(&raw mut s.count, 0);
        core::ptr::write_volatile(&raw mut s.flags, 0);
    }
    for inode in &mut s.inodes {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(inode, 0) };
    }
    match read::<u64>(task, c.task_files) {
        Some(0) => s.flags = kill_sockets::NO_TABLE,
        Some(files) => walk(files, s),
        None => s.flags = kill_sockets::READ_FAILED,
    }
    // By reference: the record does not fit on the programs' stack.
    let record: &KillSockets = s;
    let _ = KILL_SOCKETS.insert(tgid, record, 0);
}

/// Reads the table's first [`KILL_FDS_READ_MAX`] slots (those past `max_fds` count as empty),
/// a chunk of pointers at a time, and tells from the `open_fds` bitmap whether any fd past
/// them is open (then the record is cut and userspace reads /proc as well).
///
/// The chunks are read by a `bpf_loop()` callback ([`chunk`]), without a branch per slot:
/// unrolled, the verifier walked every slot once per state reaching the walk, and a walk with
/// branches per slot (or one per chunk) made loading cost 0.1 s of CPU for 64 slots, a second
/// for 512, or exhausted its million instructions (measured on 6.18). Reads go through
/// [`peek`] (zeros on a fault: an empty slot has inode 0, mode 0: not a socket); the test for a
/// socket and the store of its inode are arithmetic ([`nonzero`], [`socket_of`]).
#[inline(always)]
fn walk(files: u64, s: &mut KillSockets) {
    let c = config();
    let fdt: u64 = read(files, c.files_fdt).unwrap_or(0);
    let (Some(max), Some(fd)) = (read::<u32>(fdt, c.fdt_max_fds), read::<u64>(fdt, c.fdt_fd))
    else {
        s.flags |= kill_sockets::READ_FAILED;
        return;
    };
    s.max_fds = max;
    let slots = max.min(KILL_FDS_READ_MAX);
    s.fds_read = slots;
    // Whether any fd past the slots read is open (tables grow and never shrink: a process
    // that once held 65 fds has 128 or more slots for good).
    let open: u64 = read(fdt, c.fdt_open_fds).unwrap_or(0);
    // Zeros where the read faults (not zeroed before: see `read_zeroed`).
    let (words, err) = read_zeroed::<[u64; (KILL_OPEN_FDS_BITS / 64) as usize]>(open);
    let table_words = u64::from(max / 64);
    let first_unread = u64::from(KILL_FDS_READ_MAX / 64);
    // A failed read, or a table larger than the bits read: not known.
    let mut beyond = nonzero(err as u64)
        | nonzero_sign(u64::from(KILL_OPEN_FDS_BITS / 64).wrapping_sub(table_words));
    for (w, bits) in words.into_iter().enumerate() {
        let w = w as u64;
        // Words of the bitmap (below `table_words`) past the slots read (from `first_unread`).
        let counted = nonzero_sign(w.wrapping_sub(table_words))
            * (1 - nonzero_sign(w.wrapping_sub(first_unread)));
        beyond |= bits * counted;
    }
    // Nothing open past the slots read: the whole table is known.
    let whole = 1 - nonzero(beyond);
    s.fds_read = (u64::from(slots) * (1 - whole) + u64::from(max) * whole) as u32;
    let mut walk = SlotWalk { fd, slots };
    // SAFETY: `chunk` is a static subprogram of the callback type; `walk` lives on this stack
    // for the whole call. The helper returns the iterations run, nothing to act on.
    unsafe {
        generated::bpf_loop(
            KILL_FDS_READ_MAX / KILL_FD_CHUNK,
            chunk as *mut _,
            (&raw mut walk).cast(),
            0,
        )
    };
}

/// What [`chunk`] needs of the table: where its pointers start and how many slots count.
#[repr(C)]
struct SlotWalk {
    fd: u64,
    slots: u32,
}

/// One chunk of [`KILL_FD_CHUNK`] slots, called by `bpf_loop()` (Linux ≥ 5.17) for each.
///
/// A callback, not an unrolled loop: the verifier walks its body a few times whatever the
/// number of chunks, where it walked an unrolled walk's every slot once per state reaching
/// it (28 012 instructions verified for a 1 236-instruction program, 50–94 ms of
/// `BPF_PROG_LOAD` on this host).
#[inline(never)]
extern "C" fn chunk(ch: u32, walk: *mut core::ffi::c_void) -> i64 {
    // SAFETY: the `SlotWalk` that `walk()` passed, on its stack.
    let walk = unsafe { &*walk.cast::<SlotWalk>() };
    let Some(s) = SOCKETS_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: as in `record_kill_sockets`: its record, being built.
    let s = unsafe { &mut *s };
    let slots = walk.slots;
    let at = walk.fd + u64::from(ch) * u64::from(KILL_FD_CHUNK) * 8;
    // Zeros where the read faults (not zeroed before: see `read_zeroed`).
    let (files, err) = read_zeroed::<[u64; KILL_FD_CHUNK as usize]>(at);
    // A chunk past the table's end may fault: not a failure.
    let inside =
        nonzero_sign(u64::from(ch.wrapping_mul(KILL_FD_CHUNK)).wrapping_sub(u64::from(slots)));
    // SAFETY: a field of a valid, exclusively borrowed record.
    unsafe {
        let flags = core::ptr::read_volatile(&raw const s.flags);
        let failed = (nonzero(err as u64) * inside) as u32 * kill_sockets::READ_FAILED;
        core::ptr::write_volatile(&raw mut s.flags, flags | failed);
    }
    for (i, file) in files.into_iter().enumerate() {
        let slot = u64::from(ch) * u64::from(KILL_FD_CHUNK) + i as u64;
        // 1 for a slot below `slots`: (slot - slots) is negative.
        let valid = nonzero_sign(slot.wrapping_sub(u64::from(slots)));
        socket_of(file * valid, s);
    }
    0
}

/// 1 if `x`, read as signed, is negative, else 0 (its sign bit), without a branch.
#[inline(always)]
fn nonzero_sign(x: u64) -> u64 {
    let out: u64;
    // SAFETY: arithmetic on registers only.
    unsafe {
        core::arch::asm!("{t} = {x}", "{t} >>= 63", x = in(reg) x, t = out(reg) out);
    }
    out
}

/// The `T` at `addr`, or zeros if it cannot be read (the helper zeroes its buffer on a fault).
#[inline(always)]
fn peek<T: Copy>(addr: u64, zero: T) -> T {
    let mut v = zero;
    // SAFETY: as above; `v` is a valid buffer of its size.
    unsafe {
        generated::bpf_probe_read_kernel(
            (&raw mut v).cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const _,
        )
    };
    v
}

/// 1 if `x` is not 0, else 0, without a branch (`(x | -x) >> 63`; in assembly, or the
/// compiler turns it back into a comparison, which the BPF target compiles as a branch).
#[inline(always)]
pub fn nonzero(x: u64) -> u64 {
    let out: u64;
    // SAFETY: arithmetic on registers only.
    unsafe {
        core::arch::asm!(
            "{t} = {x}",
            "{t} = -{t}",
            "{t} |= {x}",
            "{t} >>= 63",
            x = in(reg) x,
            t = out(reg) out,
        );
    }
    out
}

/// Adds `file`'s inode number if it is a socket, without a branch. The count lives in map
/// memory (volatile), so that the verifier sees one state per slot whatever was found before.
#[inline(always)]
fn socket_of(file: u64, s: &mut KillSockets) {
    let c = config();
    let inode = peek(file + u64::from(c.file_inode), 0u64);
    let mode = peek(inode + u64::from(c.inode_mode), 0u16);
    let sb = peek(inode + u64::from(c.inode_sb), 0u64);
    let magic = peek(sb + u64::from(c.sb_magic), 0u64);
    let ino = peek(inode + u64::from(c.inode_ino), 0u64);
    let socket =
        1 - nonzero((u64::from(mode & S_IFMT) ^ u64::from(S_IFSOCK)) | (magic ^ SOCKFS_MAGIC));
    // SAFETY: fields of a valid, exclusively borrowed record.
    let n = u64::from(unsafe { core::ptr::read_volatile(&raw const s.count) });
    // Written only for a socket while there is room; otherwise the entry is rewritten as it is.
    let write = socket * nonzero_sign(n.wrapping_sub(KILL_SOCKET_INODES as u64));
    let at = (n & (KILL_SOCKET_INODES as u64 - 1)) as usize;
    // SAFETY: `at` is masked into the array; volatile: one store, no branch.
    unsafe {
        let entry = s.inodes.as_mut_ptr().add(at);
        let old = core::ptr::read_volatile(entry);
        core::ptr::write_volatile(entry, ino * write + old * (1 - write));
        core::ptr::write_volatile(&raw mut s.count, (n + socket) as u32);
    }
}
