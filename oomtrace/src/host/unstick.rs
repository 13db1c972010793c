//! What a stuck victim waits on, and the cheapest way out that is not a reboot.
//!
//! A victim stuck in exit waits on *something*: a FUSE daemon that does not answer, a network
//! filesystem, a charge its own memcg refuses while at its limit, a tracer keeping it stopped,
//! the mmap lock, or (dead already) a parent that never reaps it. The diagnosis is data: the
//! threads' states and kernel stacks are matched against [`SIGNATURES`], a table of kernel
//! function names; /proc status (`TracerPid`) and the memcg's usage complete it. Each diagnosis
//! names a remedy — one line a person can run, and what it risks — which `oomtrace unstick
//! --apply` (and `watch --unstick`) carry out. Unknown is said, never guessed at.
//!
//! `unstick` runs as root and an unprivileged user decides what its victim looks like, so an
//! action is taken only on what the victim itself owns ([`vet`]): the tracer of the thread that
//! is in the ptrace stop (never PID 1, a PID-namespace init, oomtrace's own ancestors, or the
//! victim's real parent, which any process can make its tracer with `PTRACE_TRACEME`), the FUSE
//! connection of the file its blocked thread waits on, its own memcg; a process or connection
//! of another uid only with [`Policy::allow_foreign_owner`]. Processes are held by pidfds from
//! the diagnosis on and re-checked (start time, tracer) right before a signal, which is sent
//! through the pidfd: a reused pid is never signalled. Every result is reported as it was.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{host::forensics::Forensics, text::printable};

/// What a victim waits on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Wait {
    /// A FUSE request the daemon has not answered. `connections`: the FUSE connections (ids
    /// under /sys/fs/fuse/connections: the mount's `dev_t`) of the files its blocked threads
    /// wait on, found from the file itself (or recorded at the kill), never guessed.
    Fuse { connections: Vec<u32> },
    /// A network filesystem (NFS, CIFS/SMB, 9p, Ceph) that does not answer.
    NetworkFs { fs: String },
    /// A memory charge its memcg refuses: the memcg is at its limit and the victim cannot
    /// free what it holds until this allocation succeeds.
    MemcgCharge {
        memcg: String,
        usage_bytes: u64,
        limit_bytes: u64,
    },
    /// Stopped by ptrace: it goes on only when its tracer lets it. `tracer`: the `TracerPid`
    /// (a thread id) of the threads in the stop.
    Ptrace { tracer: u32 },
    /// Threads in a ptrace stop name different tracers: which to end is not for oomtrace.
    PtraceSeveral { tracers: Vec<u32> },
    /// Waiting for the mmap lock (held by someone else, often another stuck task).
    MmapLock,
    /// Waiting for another read-write semaphore (not the mmap lock), taken in `caller`.
    Rwsem { caller: String },
    /// `cgroup_threadgroup_rwsem`, taken in `exit_signals` on every kernel: a cgroup migration
    /// (a write to `cgroup.procs` or `cgroup.threads`, often a container runtime's) holds it.
    CgroupThreadgroup,
    /// A core dump in progress: the other threads wait in exit (`coredump_task_exit`; inline
    /// in `do_exit` on 5.10) until the dumping thread (`dumper`, a thread id, where one is seen
    /// in `do_coredump`) has written the core — to a file or a `core_pattern` pipe helper.
    Coredump { dumper: Option<u32> },
    /// Cancelling its io_uring requests at exit (`io_uring_cancel_generic`, before the exit
    /// tracepoint): it waits for requests in flight to complete.
    IoUringCancel,
    /// `exit_aio`: waiting for its in-flight AIO requests (dropping its mm).
    ExitAio,
    /// Frozen by a freezer (`__refrigerator`: the cgroup v1 freezer or a system suspend). On
    /// Linux ≤ 6.12 the OOM killer thaws only the thread it marks (`__thaw_task` in
    /// `mark_oom_victim`): the victim's other threads stay frozen.
    Frozen,
    /// Block I/O that does not complete (a slow or dead disk, a blocked device queue); with
    /// `writeback`, waiting for dirty pages to be written back.
    BlockIo { writeback: bool },
    /// Every thread exited, but exited threads that a tracer traces stay zombies until the
    /// tracer waits for them (ptrace): the process cannot be released until it does. `tracer`
    /// is their `TracerPid`, `comm` its name where /proc still showed it.
    TracedZombies { tracer: u32, comm: Option<String> },
    /// Dead: a zombie its parent does not reap.
    ZombieNotReaped { parent: u32 },
    /// None of the above: say so.
    Unknown,
}

/// Which [`Wait`] a kernel function in a stack means (matched as a prefix of the frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sign {
    Fuse,
    Nfs,
    Cifs,
    NineP,
    Ceph,
    MemcgCharge,
    MmapLock,
    Ptrace,
    /// A read-write semaphore's wait: which lock is told by its caller ([`rwsem_wait`]).
    Rwsem,
    /// A per-CPU read-write semaphore's wait (`cgroup_threadgroup_rwsem`, a frozen
    /// filesystem's `sb_writers`): told by its caller too.
    PercpuRwsem,
    Coredump,
    IoUring,
    Aio,
    Frozen,
    /// Weak signs: block I/O and writeback waits are also under FUSE and network filesystems,
    /// so they count only for a thread whose stack shows nothing else.
    Writeback,
    BlockIo,
}

impl Sign {
    fn weak(self) -> bool {
        matches!(self, Sign::Writeback | Sign::BlockIo)
    }
}

/// Kernel stack signatures, innermost frames first within a thread's stack. Names from the
/// kernels of the matrix (5.10 … 7.x): the FUSE request paths (`request_wait_answer`,
/// `fuse_simple_request`, `fuse_flush`, `fuse_dev_…`), NFS/SUNRPC waits, the memcg charge path
/// (`try_charge_memcg`, `mem_cgroup_charge`, `__mem_cgroup_charge`, `charge_memcg`,
/// `mem_cgroup_out_of_memory`), the mmap lock (`rwsem_down_read_slowpath`, `lock_mm_and_find_vma`),
/// ptrace stops (`ptrace_stop`, `ptrace_notify`, `ptrace_event`); the exit path's own waits —
/// the coredump wait (`coredump_task_exit` ≥ 5.16, `coredump_exit_mm` before, the dumper in
/// `do_coredump`), io_uring's cancellation (`io_uring_cancel_generic` and `__io_uring_cancel`
/// on 5.10's backports, 6.1, 6.12 and 7.x; `__io_uring_files_cancel` and
/// `io_uring_cancel_task_requests` on older 5.10), `exit_aio`, the freezer (`__refrigerator`);
/// lock waits (`rwsem_down_{read,write}_slowpath`, `percpu_rwsem_wait`/`__percpu_down_read`);
/// block I/O and writeback (`io_schedule`, `blk_mq_get_tag`, `folio_wait_bit_common` ≥ 5.16
/// and `wait_on_page_bit_common` before, `folio_wait_writeback`/`wait_on_page_writeback`,
/// `balance_dirty_pages`, `__filemap_fdatawait_range`, `jbd2_log_wait_commit`). A name ending
/// in `$` must match the whole frame.
pub(crate) const SIGNATURES: &[(&str, Sign)] = &[
    ("request_wait_answer", Sign::Fuse),
    ("fuse_", Sign::Fuse),
    ("__fuse_", Sign::Fuse),
    ("nfs_", Sign::Nfs),
    ("nfs4_", Sign::Nfs),
    ("rpc_wait_bit_killable", Sign::Nfs),
    ("__rpc_execute", Sign::Nfs),
    ("cifs_", Sign::Cifs),
    ("smb2_", Sign::Cifs),
    ("wait_for_response", Sign::Cifs),
    ("p9_client_", Sign::NineP),
    ("v9fs_", Sign::NineP),
    ("ceph_", Sign::Ceph),
    ("try_charge_memcg", Sign::MemcgCharge),
    ("try_charge", Sign::MemcgCharge),
    ("__mem_cgroup_charge", Sign::MemcgCharge),
    ("mem_cgroup_charge", Sign::MemcgCharge),
    ("charge_memcg", Sign::MemcgCharge),
    ("mem_cgroup_out_of_memory", Sign::MemcgCharge),
    ("mem_cgroup_oom_synchronize", Sign::MemcgCharge),
    ("rwsem_down_read_slowpath", Sign::Rwsem),
    ("rwsem_down_write_slowpath", Sign::Rwsem),
    ("lock_mm_and_find_vma", Sign::MmapLock),
    ("mmap_read_lock", Sign::MmapLock),
    ("percpu_rwsem_wait", Sign::PercpuRwsem),
    ("__percpu_down_read", Sign::PercpuRwsem),
    ("ptrace_stop", Sign::Ptrace),
    ("ptrace_notify", Sign::Ptrace),
    ("ptrace_event", Sign::Ptrace),
    ("coredump_task_exit", Sign::Coredump),
    ("coredump_exit_mm", Sign::Coredump),
    ("do_coredump", Sign::Coredump),
    ("io_uring_cancel_generic", Sign::IoUring),
    ("__io_uring_cancel", Sign::IoUring),
    ("__io_uring_files_cancel", Sign::IoUring),
    ("io_uring_cancel_task_requests", Sign::IoUring),
    ("io_uring_cancel_files", Sign::IoUring),
    ("exit_aio$", Sign::Aio),
    ("__refrigerator", Sign::Frozen),
    ("balance_dirty_pages", Sign::Writeback),
    ("folio_wait_writeback", Sign::Writeback),
    ("wait_on_page_writeback", Sign::Writeback),
    ("__filemap_fdatawait_range", Sign::Writeback),
    ("filemap_fdatawait", Sign::Writeback),
    ("filemap_write_and_wait", Sign::Writeback),
    ("wb_wait_for_completion", Sign::Writeback),
    ("jbd2_log_wait_commit", Sign::Writeback),
    ("io_schedule", Sign::BlockIo),
    ("blk_mq_get_tag", Sign::BlockIo),
    ("folio_wait_bit_common", Sign::BlockIo),
    ("wait_on_page_bit_common", Sign::BlockIo),
    ("submit_bio_wait", Sign::BlockIo),
    ("__wait_on_buffer", Sign::BlockIo),
    ("bit_wait_io", Sign::BlockIo),
    ("rq_qos_wait", Sign::BlockIo),
];

fn sign_of(frame: &str) -> Option<Sign> {
    SIGNATURES
        .iter()
        .find(|(name, _)| match name.strip_suffix('$') {
            Some(whole) => frame == whole,
            None => frame.starts_with(name),
        })
        .map(|&(_, s)| s)
}

/// The scheduler's and the wait primitives' own frames, above the function that waits.
const SCHEDULER_FRAMES: &[&str] = &[
    "__schedule",
    "schedule",
    "schedule_timeout",
    "schedule_preempt_disabled",
    "io_schedule",
    "do_wait_for_common",
    "__wait_for_common",
    "wait_for_common",
    "wait_for_completion",
    "freezable_schedule",
];

/// Lock helpers between a lock's wait and the function that takes it.
const LOCK_HELPERS: &[&str] = &[
    "rwsem_down_",
    "down_read",
    "down_write",
    "__down_read",
    "__down_write",
    "percpu_rwsem_wait",
    "__percpu_down_read",
    "percpu_down_read",
    "mmap_read_lock",
    "mmap_write_lock",
    "__mmap_read_lock",
    "cgroup_threadgroup_change_begin",
];

/// Callers whose rwsem is the mmap lock, on the kernels of the matrix: the fault path
/// (`lock_mm_and_find_vma` ≥ 6.4, `do_user_addr_fault` before), mm system calls, remote
/// access, and the exit path (`exit_mm`, inline in `do_exit` on 5.10; `exit_mmap` ≥ 6.1).
const MMAP_LOCK_CALLERS: &[&str] = &[
    "lock_mm_and_find_vma",
    "do_user_addr_fault",
    "exc_page_fault",
    "vm_mmap_pgoff",
    "__vm_munmap",
    "__do_sys_munmap",
    "__x64_sys_munmap",
    "do_madvise",
    "do_mprotect_pkey",
    "__do_sys_brk",
    "__do_sys_mremap",
    "__mm_populate",
    "get_user_pages",
    "__get_user_pages",
    "get_user_pages_remote",
    "__access_remote_vm",
    "access_remote_vm",
    "get_cmdline",
    "acct_collect",
    "exit_mm",
    "exit_mmap",
    "do_exit",
];

/// The function that waits on a lock: the first frame below the lock's helpers.
fn lock_caller<'a>(frames: &[&'a str]) -> Option<&'a str> {
    let wait = frames
        .iter()
        .position(|f| LOCK_HELPERS.iter().any(|h| f.starts_with(h)))?;
    frames[wait..]
        .iter()
        .copied()
        .find(|f| !LOCK_HELPERS.iter().any(|h| f.starts_with(h)))
}

/// What one thread waits on: its innermost strong sign (a weak one only when there is no
/// other), the lock's caller for a semaphore wait, and the coredump wait inline in
/// `do_exit` (5.10: a thread asleep right in `do_exit`, which sleeps there for nothing else).
fn thread_wait(t: &crate::host::forensics::ThreadInfo) -> Option<(Sign, Option<String>)> {
    let frames: Vec<&str> = if t.stack.is_empty() {
        t.wchan.iter().map(String::as_str).collect()
    } else {
        t.stack.iter().map(String::as_str).collect()
    };
    let strong = frames.iter().find_map(|f| sign_of(f).filter(|s| !s.weak()));
    if let Some(s) = strong {
        return Some(match s {
            Sign::Rwsem | Sign::PercpuRwsem => {
                let caller = lock_caller(&frames);
                // The lock is the mmap lock when the function taking it is one that takes
                // that lock: `exit_mmap` taking `i_mmap_rwsem` deeper down is not.
                if s == Sign::Rwsem && caller.is_some_and(|c| MMAP_LOCK_CALLERS.contains(&c)) {
                    (Sign::MmapLock, None)
                } else {
                    (s, caller.map(str::to_string))
                }
            }
            s => (s, None),
        });
    }
    let asleep = t.state.starts_with('D') || t.state.starts_with('I');
    let first = frames.iter().find(|f| !SCHEDULER_FRAMES.contains(f));
    if asleep && first.is_some_and(|f| *f == "do_exit") {
        return Some((Sign::Coredump, None));
    }
    // Weak signs: writeback where any frame says so (its wait ends in the block layer's).
    let weak: Vec<Sign> = frames.iter().filter_map(|f| sign_of(f)).collect();
    if weak.contains(&Sign::Writeback) {
        Some((Sign::Writeback, None))
    } else {
        weak.first().map(|s| (*s, None))
    }
}

/// Where the host's FUSE connections are (fusectl).
pub const FUSECTL: &str = "/sys/fs/fuse/connections";

/// Mounts fusectl at [`FUSECTL`] if it is not; returns whether it did (unmount with
/// [`unmount_fusectl`] when done).
pub(crate) fn ensure_fusectl() -> bool {
    let mounted = std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split_whitespace().nth(1) == Some(FUSECTL))
    });
    if mounted || !Path::new(FUSECTL).is_dir() {
        return false;
    }
    // mount(2), not mount(8): after attaching, `watch` keeps CAP_SYS_ADMIN but anything it
    // execs gets no capability (see privs).
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (src, dst, fs) = (c("none"), c(FUSECTL), c("fusectl"));
    // SAFETY: valid NUL-terminated strings; no data argument.
    unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) == 0 }
}

pub fn unmount_fusectl() {
    let dst = std::ffi::CString::new(FUSECTL).expect("no NUL");
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::umount2(dst.as_ptr(), 0) };
}

/// A fusectl connection id: the mount's `dev_t` as the kernel numbers it (`MKDEV`: major in
/// the bits above 20, minor below). Anonymous `fuse` mounts have major 0; `fuseblk` mounts
/// name their block device.
pub(crate) fn connection_id(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xf_ffff)
}

/// mount id → FUSE connection id, for the FUSE mounts in a `mountinfo` text.
pub(crate) fn fuse_mounts(mountinfo: &str) -> std::collections::HashMap<u64, u32> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (head, tail) = l.split_once(" - ")?;
            let fstype = tail.split_whitespace().next()?;
            if fstype != "fuse" && !fstype.starts_with("fuse.") && fstype != "fuseblk" {
                return None;
            }
            let mut f = head.split_whitespace();
            let id: u64 = f.next()?.parse().ok()?;
            let (ma, mi) = f.nth(1)?.split_once(':')?;
            Some((id, connection_id(ma.parse().ok()?, mi.parse().ok()?)))
        })
        .collect()
}

/// The mountinfo of process `pid`, read through any of its threads (a zombie leader has none).
fn mountinfo_of(proc_root: &Path, pid: u32) -> String {
    let dir = proc_root.join(pid.to_string());
    let mut sources = vec![dir.join("mountinfo")];
    if let Ok(tasks) = std::fs::read_dir(dir.join("task")) {
        sources.extend(
            tasks
                .flatten()
                .take(crate::host::forensics::MAX_DETAILED_THREADS)
                .map(|t| t.path().join("mountinfo")),
        );
    }
    sources
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find(|t| !t.is_empty())
        .unwrap_or_default()
}

/// The mount id of open file `fd` in thread dir `tdir` (`fdinfo`'s `mnt_id`): no FUSE request
/// is made (a `stat` of the file would ask the daemon that does not answer).
fn mnt_id_of_fd(tdir: &Path, fd: &str) -> Option<u64> {
    let info = std::fs::read_to_string(tdir.join("fdinfo").join(fd)).ok()?;
    crate::host::forensics::status_field(&info, "mnt_id")?
        .parse()
        .ok()
}

/// The FUSE connections of the files `pid` has open now (at most
/// [`crate::host::forensics::MAX_FD_ENTRIES`] read), through its leader or first live thread:
/// `watch --unstick` records them at the kill, before a thread inside exit detaches the table
/// (a FLUSH held at exit names no file any more).
pub(crate) fn fuse_connections_open(proc_root: &Path, pid: u32) -> Vec<u32> {
    let mounts = fuse_mounts(&mountinfo_of(proc_root, pid));
    if mounts.is_empty() {
        return Vec::new();
    }
    let dir = proc_root.join(pid.to_string());
    let tdirs = std::iter::once(dir.clone()).chain(
        std::fs::read_dir(dir.join("task"))
            .into_iter()
            .flatten()
            .flatten()
            .take(crate::host::forensics::MAX_DETAILED_THREADS)
            .map(|e| e.path()),
    );
    let mut budget = crate::host::forensics::MAX_FD_ENTRIES;
    let mut out = Vec::new();
    for tdir in tdirs {
        let Ok(fds) = std::fs::read_dir(tdir.join("fd")) else {
            continue;
        };
        let mut any = false;
        for fd in fds.flatten() {
            any = true;
            if budget == 0 {
                break;
            }
            budget -= 1;
            if let Some(c) = fd
                .file_name()
                .to_str()
                .and_then(|n| mnt_id_of_fd(&tdir, n))
                .and_then(|m| mounts.get(&m))
                && !out.contains(c)
            {
                out.push(*c);
            }
        }
        // Threads share the table: one non-empty table is enough.
        if any {
            break;
        }
    }
    out.sort_unstable();
    out
}

/// The FUSE connections of the files the victim's blocked FUSE threads wait on: each such
/// thread's current system call (`/proc/PID/task/TID/syscall`) names a file descriptor as its
/// first argument (read, write, fsync, getdents, …); its `fdinfo` names the mount. A thread
/// not in a system call (inside exit: a FLUSH at `exit_files`) names none: see
/// [`fuse_connections_open`].
pub(crate) fn fuse_connections_waited_on(proc_root: &Path, f: &Forensics) -> Vec<u32> {
    let mounts = fuse_mounts(&mountinfo_of(proc_root, f.tgid));
    let dir = proc_root.join(f.tgid.to_string());
    let mut out = Vec::new();
    for t in &f.threads {
        let fuse = t.stack.iter().any(|fr| sign_of(fr) == Some(Sign::Fuse))
            || t.wchan.as_deref().and_then(sign_of) == Some(Sign::Fuse);
        if !fuse {
            continue;
        }
        let tdir = dir.join("task").join(t.tid.to_string());
        let Some(sys) = std::fs::read_to_string(tdir.join("syscall")).ok() else {
            continue;
        };
        let mut words = sys.split_whitespace();
        let (Some(nr), Some(arg0)) = (words.next(), words.next()) else {
            continue;
        };
        if nr.starts_with('-') || nr == "running" {
            continue;
        }
        let Ok(fd) = u64::from_str_radix(arg0.trim_start_matches("0x"), 16) else {
            continue;
        };
        if let Some(c) = mnt_id_of_fd(&tdir, &fd.to_string()).and_then(|m| mounts.get(&m))
            && !out.contains(c)
        {
            out.push(*c);
        }
    }
    out.sort_unstable();
    out
}

/// The connections the victim waits on: from its blocked threads' files, else those recorded
/// at its kill that have requests waiting now (under `fusectl`).
pub(crate) fn fuse_connections_for(
    proc_root: &Path,
    f: &Forensics,
    recorded: &[u32],
    fusectl: &Path,
) -> Vec<u32> {
    let from_files = fuse_connections_waited_on(proc_root, f);
    if !from_files.is_empty() {
        return from_files;
    }
    recorded
        .iter()
        .copied()
        .filter(|c| {
            std::fs::read_to_string(fusectl.join(c.to_string()).join("waiting"))
                .ok()
                .and_then(|w| w.trim().parse::<u64>().ok())
                .is_some_and(|w| w > 0)
        })
        .collect()
}

/// Classifies from forensics; `fuse` are the FUSE connections of the files it waits on.
pub(crate) fn diagnose(f: &Forensics, fuse: &[u32]) -> Wait {
    if let Some(w) = zombie_wait(f) {
        return w;
    }
    // The tracers of the threads that are in the stop, each read from that thread: another
    // thread's tracer (a parent that did PTRACE_TRACEME on the leader) holds nothing.
    match f.stopped_tracers.as_slice() {
        [] => {}
        [tracer] => return Wait::Ptrace { tracer: *tracer },
        several => {
            return Wait::PtraceSeveral {
                tracers: several.to_vec(),
            };
        }
    }
    wait_of_signs(f, &ThreadSigns::of(f), fuse)
}

/// A process left only as zombie threads: held by the tracer of one (it, not the parent,
/// must wait for them) or by a parent that does not reap it.
fn zombie_wait(f: &Forensics) -> Option<Wait> {
    let zombie_only = f
        .threads
        .iter()
        .all(|t| t.state.starts_with('Z') || t.state.starts_with('X'));
    if !(f.exists && !f.threads.is_empty() && zombie_only) {
        return None;
    }
    if let Some(tracer) = f
        .threads
        .iter()
        .filter(|t| t.state.starts_with('Z'))
        .find_map(|t| t.tracer)
    {
        return Some(Wait::TracedZombies {
            tracer,
            comm: f.tracer_comms.get(&tracer).cloned(),
        });
    }
    f.ppid.map(|parent| Wait::ZombieNotReaped { parent })
}

/// The innermost recognised frame of each thread, as signs; ptrace first (a stopped tracee's
/// stack may pass through anything).
struct ThreadSigns {
    signs: Vec<Sign>,
    rwsem_caller: Option<String>,
    dumper: Option<u32>,
}

impl ThreadSigns {
    fn of(f: &Forensics) -> ThreadSigns {
        let mut out = ThreadSigns {
            signs: Vec::new(),
            rwsem_caller: None,
            dumper: None,
        };
        for t in &f.threads {
            if t.state.starts_with('t') {
                out.signs.push(Sign::Ptrace);
            }
            let Some((s, caller)) = thread_wait(t) else {
                continue;
            };
            if s == Sign::Coredump && t.stack.iter().any(|fr| fr.starts_with("do_coredump")) {
                out.dumper.get_or_insert(t.tid);
            }
            let cgroup = s == Sign::PercpuRwsem && t.stack.iter().any(|fr| fr == "exit_signals");
            if cgroup {
                out.signs.push(Sign::PercpuRwsem);
            } else if matches!(s, Sign::Rwsem | Sign::PercpuRwsem) {
                out.signs.push(Sign::Rwsem);
                if out.rwsem_caller.is_none() {
                    out.rwsem_caller = caller;
                }
            } else {
                out.signs.push(s);
            }
        }
        out
    }

    fn has(&self, s: Sign) -> bool {
        self.signs.contains(&s)
    }
}

/// The wait the signs name, in order of importance: FUSE and network filesystems, a memcg
/// charge, the exit path's own waits, then locks, then I/O.
fn wait_of_signs(f: &Forensics, t: &ThreadSigns, fuse: &[u32]) -> Wait {
    let has = |s: Sign| t.has(s);
    if has(Sign::Fuse) {
        return Wait::Fuse {
            connections: fuse.to_vec(),
        };
    }
    for (s, fs) in [
        (Sign::Nfs, "nfs"),
        (Sign::Cifs, "cifs"),
        (Sign::NineP, "9p"),
        (Sign::Ceph, "ceph"),
    ] {
        if has(s) {
            return Wait::NetworkFs { fs: fs.into() };
        }
    }
    if has(Sign::MemcgCharge)
        && let Some(m) = &f.memcg
        && let (Some(usage), Some(limit)) = (m.usage_bytes, m.limit_bytes)
    {
        return Wait::MemcgCharge {
            memcg: m.path.clone(),
            usage_bytes: usage,
            limit_bytes: limit,
        };
    }
    // The exit path's own waits, then locks, then I/O.
    if has(Sign::Coredump) {
        return Wait::Coredump { dumper: t.dumper };
    }
    if has(Sign::Frozen) {
        return Wait::Frozen;
    }
    if has(Sign::IoUring) {
        return Wait::IoUringCancel;
    }
    if has(Sign::PercpuRwsem) {
        return Wait::CgroupThreadgroup;
    }
    if has(Sign::Aio) {
        return Wait::ExitAio;
    }
    if has(Sign::MmapLock) {
        return Wait::MmapLock;
    }
    if has(Sign::Rwsem) {
        return Wait::Rwsem {
            caller: t
                .rwsem_caller
                .clone()
                .unwrap_or_else(|| "an unknown function".into()),
        };
    }
    if has(Sign::Writeback) || has(Sign::BlockIo) {
        return Wait::BlockIo {
            writeback: has(Sign::Writeback),
        };
    }
    Wait::Unknown
}

/// A way out: what to run, what it risks, and whether `--apply` may do it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Remedy {
    /// One line a person can run.
    pub command: String,
    pub risk: String,
    #[serde(skip)]
    pub action: Option<Action>,
}

/// What `--apply` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    AbortFuse {
        connection: u32,
    },
    RaiseMemcgLimit {
        file: PathBuf,
        from: u64,
        to: u64,
    },
    /// `tracer`: a `TracerPid`, a thread id: its process is ended.
    EndTracer {
        tracer: u32,
    },
    SignalParent {
        parent: u32,
    },
}

/// How much a memcg's limit is raised so that a victim's exit can charge what it needs: 10 %,
/// at least 16 MiB, at most 256 MiB, in whole MiB (v1 rounds limits to pages: what is written
/// must read back the same for the put-back to recognise it).
pub fn margin(limit: u64) -> u64 {
    (limit / 10).clamp(16 << 20, 256 << 20) & !((1 << 20) - 1)
}

/// The memcg limit remedy for memcg `memcg` (a path as /proc shows it) at `limit_bytes`.
pub fn raise_remedy(
    memcg: &str,
    limit_bytes: u64,
    memcg_root: &Path,
    cgroup_v2: bool,
) -> Option<Remedy> {
    if limit_bytes == u64::MAX || limit_bytes >= 1 << 62 {
        return None;
    }
    let file = memcg_root
        .join(memcg.trim_start_matches('/'))
        .join(if cgroup_v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        });
    let to = limit_bytes.saturating_add(margin(limit_bytes));
    Some(Remedy {
        command: format!("echo {to} > {}", file.display()),
        risk: format!(
            "the memcg may use {} MiB more until the limit is put back ({limit_bytes} bytes, \
             journaled on disk and put back once the victim is dead)",
            (to - limit_bytes) >> 20
        ),
        action: Some(Action::RaiseMemcgLimit {
            file,
            from: limit_bytes,
            to,
        }),
    })
}

/// The remedy for a diagnosis, or None (unknown, ambiguous, or nothing safe to do).
pub(crate) fn remedy(w: &Wait, memcg_root: Option<&Path>, cgroup_v2: bool) -> Option<Remedy> {
    match w {
        Wait::Fuse { connections } => match connections.as_slice() {
            [c] => Some(Remedy {
                command: format!(
                    "mountpoint -q {FUSECTL} || mount -t fusectl none {FUSECTL}; echo 1 > {FUSECTL}/{c}/abort"
                ),
                risk: format!(
                    "every request on FUSE connection {c}, pending and future, fails (ENOTCONN): \
                     that filesystem is dead until remounted; its daemon is not touched"
                ),
                action: Some(Action::AbortFuse { connection: *c }),
            }),
            _ => None,
        },
        Wait::MemcgCharge {
            memcg, limit_bytes, ..
        } => raise_remedy(memcg, *limit_bytes, memcg_root?, cgroup_v2),
        Wait::Ptrace { tracer } => Some(Remedy {
            command: format!("kill -TERM {tracer}; sleep 2; kill -KILL {tracer}"),
            risk: format!(
                "ends the tracer (thread {tracer}'s process: a debugger, strace, or a supervisor \
                 using ptrace) and with it its other tracees' supervision; a tracee set with \
                 PTRACE_O_EXITKILL is killed"
            ),
            action: Some(Action::EndTracer { tracer: *tracer }),
        }),
        Wait::ZombieNotReaped { parent } => Some(Remedy {
            command: format!("kill -CHLD {parent}"),
            risk: format!(
                "none: reminds parent {parent} to reap its children. If it never does, only \
                 ending the parent lets init reap the zombie (a decision for a person)"
            ),
            action: Some(Action::SignalParent { parent: *parent }),
        }),
        // Said, not acted on: which process to end, or which freezer cgroup to thaw, is
        // a person's decision (a tracer of zombies is not in a stop oomtrace can vet).
        Wait::TracedZombies { tracer, .. } => Some(Remedy {
            command: format!("kill -TERM {tracer}"),
            risk: format!(
                "ends the tracer (thread {tracer}'s process), whose exit releases the zombie \
                 threads it traces; not applied by oomtrace"
            ),
            action: None,
        }),
        Wait::Frozen => Some(Remedy {
            command: "echo THAWED > /sys/fs/cgroup/freezer/<its cgroup>/freezer.state (cgroup v1 \
                      freezer; see /proc/PID/cgroup)"
                .into(),
            risk: "thaws every task of that freezer cgroup, not only the victim; not applied by \
                   oomtrace"
                .into(),
            action: None,
        }),
        Wait::PtraceSeveral { .. }
        | Wait::NetworkFs { .. }
        | Wait::MmapLock
        | Wait::Rwsem { .. }
        | Wait::CgroupThreadgroup
        | Wait::Coredump { .. }
        | Wait::IoUringCancel
        | Wait::ExitAio
        | Wait::BlockIo { .. }
        | Wait::Unknown => None,
    }
}

/// What [`prepare`] needs to know of a victim and of the caller's choices.
pub struct Request<'a> {
    pub proc_root: &'a Path,
    pub memcg_root: Option<&'a Path>,
    pub fx: &'a Forensics,
    /// Why this is a victim oomtrace may act for (the OOM kill seen, the kernel log, or a
    /// kill watched), or why not.
    pub evidence: &'a Result<String, String>,
    /// FUSE connections recorded at the kill (a blocked thread may name no file any more).
    pub recorded_fuse: &'a [u32],
    /// The connection the user named (`--fuse-connection`), used when none is found.
    pub named_fuse: Option<u32>,
    /// Raise its memcg's limit whatever it waits on (`--raise-memcg-limit`).
    pub raise_limit: bool,
    /// Killed by the OOM killer (not a user's or another kernel path's SIGKILL): only then
    /// may its memcg's limit be raised.
    pub oom_victim: bool,
    pub policy: Policy,
}

/// The one unstick sequence `oomtrace unstick` and `watch --unstick` share: what the victim
/// waits on, the remedy, and the plan vetted against the policy (or why it is refused).
/// Carried out by [`act`].
pub struct Prepared {
    pub wait_on: Wait,
    pub remedy: Option<Remedy>,
    pub plan: Result<Plan, String>,
    /// fusectl was mounted for the look: to unmount unless the action keeps it.
    pub mounted_fusectl: bool,
}

pub fn prepare(r: &Request) -> Prepared {
    // FUSE connections are listed by fusectl: mounted for the look (and the abort) if needed.
    let mounted_fusectl = ensure_fusectl();
    let fusectl = Path::new(FUSECTL);
    let mut conns = fuse_connections_for(r.proc_root, r.fx, r.recorded_fuse, fusectl);
    if conns.is_empty()
        && let Some(c) = r.named_fuse
    {
        conns.push(c);
    }
    let wait_on = diagnose(r.fx, &conns);
    let v2 = r
        .memcg_root
        .is_some_and(|m| m.join("cgroup.controllers").exists());
    let remedy = if r.raise_limit {
        // The OOM domain's limit (the memcg whose limit was hit, maybe an ancestor of the
        // victim's own) where one is at its limit, else the victim's own memcg's.
        r.fx.memcg.as_ref().zip(r.memcg_root).and_then(|(m, root)| {
            match crate::host::oom_domain::domain_of(root, &m.path, v2) {
                Some(d) => raise_remedy(&d.path, d.limit_bytes, root, v2),
                None => raise_remedy(&m.path, m.limit_bytes?, root, v2),
            }
        })
    } else {
        remedy(&wait_on, r.memcg_root, v2)
    };
    let raises_limit = remedy
        .as_ref()
        .is_some_and(|m| matches!(m.action, Some(Action::RaiseMemcgLimit { .. })));
    let plan = match (r.evidence, remedy.as_ref().and_then(|m| m.action.clone())) {
        (Err(why), _) => Err(why.clone()),
        // A process a user (or another kernel path) killed did not cause its memcg's
        // shortage: raising the limit on its behalf would hand its owner memory for the asking.
        (Ok(_), Some(_)) if raises_limit && !r.oom_victim => {
            Err("not an OOM victim: its memcg's limit is never raised for it".to_string())
        }
        (Ok(_), None) => Err(format!("no remedy oomtrace can take for: {wait_on}")),
        (Ok(_), Some(action)) => vet(&action, r.fx, r.proc_root, fusectl, r.policy),
    };
    Prepared {
        wait_on,
        remedy,
        plan,
        mounted_fusectl,
    }
}

/// What the administrator allows beyond the default (each an explicit flag, documented in
/// docs/unstick.md with its risk).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Act on a process, FUSE connection or memcg owned by another uid than the victim's
    /// (`--allow-foreign-owner`).
    pub allow_foreign_owner: bool,
    /// End a tracer that is the victim's real parent (`--allow-parent-tracer`): with
    /// `PTRACE_TRACEME` any process makes its parent its tracer.
    pub allow_parent_tracer: bool,
}

/// A process a remedy signals, held since the diagnosis.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) pid: u32,
    /// /proc/PID/stat field 22 when the pidfd was opened.
    pub(crate) start: u64,
    pidfd: std::os::fd::OwnedFd,
}

/// A remedy's action, checked against the policy, with what it will touch held.
#[derive(Debug)]
pub struct Plan {
    pub(crate) action: Action,
    /// The victim's pid and start time.
    pub victim: (u32, Option<u64>),
    target: Option<Target>,
    /// cgroup v1: memsw limit and its value, raised along with the limit.
    memsw: Option<(PathBuf, u64)>,
}

/// The uids (real, effective) in `/proc/PID/status`.
fn uids(status: &str) -> Option<(u32, u32)> {
    let mut u = crate::host::forensics::status_field(status, "Uid")?.split_whitespace();
    Some((u.next()?.parse().ok()?, u.next()?.parse().ok()?))
}

/// This process and its ancestors up to PID 1.
fn own_ancestors(proc_root: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let mut pid = std::process::id();
    while pid > 1 && out.len() < 1024 && !out.contains(&pid) {
        out.push(pid);
        let Some(p) = std::fs::read_to_string(proc_root.join(pid.to_string()).join("status"))
            .ok()
            .and_then(|s| {
                crate::host::forensics::status_field(&s, "PPid")?
                    .parse()
                    .ok()
            })
        else {
            break;
        };
        pid = p;
    }
    out
}

/// Why process `pid` must not be signalled for victim `f` (`role`: how the remedy names it),
/// or None.
fn refuse_process(
    proc_root: &Path,
    pid: u32,
    f: &Forensics,
    policy: Policy,
    role: &str,
    is_parent_ok: bool,
) -> Option<String> {
    if pid <= 1 {
        return Some(format!("the {role} is PID 1 (init): never signalled"));
    }
    let Ok(status) = std::fs::read_to_string(proc_root.join(pid.to_string()).join("status")) else {
        return Some(format!("the {role} {pid} is gone"));
    };
    let nspid = crate::host::forensics::status_field(&status, "NSpid").unwrap_or("");
    if nspid.split_whitespace().count() > 1 && nspid.split_whitespace().last() == Some("1") {
        return Some(format!(
            "the {role} {pid} is the init of a PID namespace (a container's): never signalled"
        ));
    }
    if own_ancestors(proc_root).contains(&pid) {
        return Some(format!(
            "the {role} {pid} is oomtrace itself or one of its ancestors: never signalled"
        ));
    }
    if !is_parent_ok && f.ppid == Some(pid) && !policy.allow_parent_tracer {
        return Some(format!(
            "the {role} {pid} is the victim's real parent: any process can make its parent its \
             tracer (PTRACE_TRACEME), so ending it could end a supervisor, a shell, su or init \
             on the victim's say; refused (--allow-parent-tracer to end it anyway)"
        ));
    }
    let Some(victim_uid) = f.uid else {
        return Some(format!(
            "the victim's uid is unknown: the {role} {pid} cannot be checked to be its owner's"
        ));
    };
    match uids(&status) {
        Some((r, e)) if r == victim_uid && e == victim_uid => None,
        _ if policy.allow_foreign_owner => None,
        Some((r, e)) => Some(format!(
            "the {role} {pid} runs as uid {r} (effective {e}), not as the victim's uid \
             {victim_uid}: refused (--allow-foreign-owner to act on it anyway)"
        )),
        None => Some(format!("the {role} {pid}'s uid cannot be read")),
    }
}

/// Opens a pidfd on `pid` and checks it names the process whose start time is read around it.
fn hold(proc_root: &Path, pid: u32) -> Result<Target, String> {
    use crate::host::journal::start_ticks;
    let before = start_ticks(proc_root, pid).ok_or_else(|| format!("pid {pid} is gone"))?;
    let pidfd =
        crate::host::deathwatch::pidfd_open(pid).map_err(|e| format!("pidfd_open({pid}): {e}"))?;
    if start_ticks(proc_root, pid) != Some(before) {
        return Err(format!("pid {pid} changed hands while being opened"));
    }
    Ok(Target {
        pid,
        start: before,
        pidfd,
    })
}

/// The uid owning a path (a fusectl connection dir, a memcg dir).
fn owner(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| m.uid())
}

/// Checks a remedy's action against `policy` for victim `f`, and holds what it will touch
/// (pidfds): the plan to [`act`] on, or why not.
pub fn vet(
    action: &Action,
    f: &Forensics,
    proc_root: &Path,
    fusectl: &Path,
    policy: Policy,
) -> Result<Plan, String> {
    let victim = (f.tgid, crate::host::journal::start_ticks(proc_root, f.tgid));
    let mut plan = Plan {
        action: action.clone(),
        victim,
        target: None,
        memsw: None,
    };
    let victim_uid = f.uid.ok_or("the victim's uid is unknown")?;
    match action {
        Action::EndTracer { tracer } => {
            let tgid = crate::host::forensics::tgid_of(proc_root, *tracer)
                .ok_or_else(|| format!("tracer {tracer} is gone"))?;
            if let Some(why) = refuse_process(proc_root, tgid, f, policy, "tracer", false) {
                return Err(why);
            }
            plan.target = Some(hold(proc_root, tgid)?);
        }
        Action::SignalParent { parent } => {
            if f.ppid != Some(*parent) {
                return Err(format!("{parent} is not the victim's parent"));
            }
            if let Some(why) = refuse_process(proc_root, *parent, f, policy, "parent", true) {
                return Err(why);
            }
            plan.target = Some(hold(proc_root, *parent)?);
        }
        Action::AbortFuse { connection } => {
            let dir = fusectl.join(connection.to_string());
            let uid = owner(&dir).ok_or_else(|| {
                format!(
                    "FUSE connection {connection} is not under {}",
                    fusectl.display()
                )
            })?;
            if uid != victim_uid && !policy.allow_foreign_owner {
                return Err(format!(
                    "FUSE connection {connection} belongs to uid {uid} (its mount's user_id), \
                     not to the victim's uid {victim_uid}: aborting it would fail every request \
                     on that filesystem for everyone; refused (--allow-foreign-owner to abort \
                     it anyway)"
                ));
            }
        }
        Action::RaiseMemcgLimit { file, from, to } => {
            let dir = file.parent().ok_or("a limit file without a directory")?;
            let uid = owner(dir).ok_or_else(|| format!("{} is gone", dir.display()))?;
            if uid != 0 && uid != victim_uid && !policy.allow_foreign_owner {
                return Err(format!(
                    "memcg {} belongs to uid {uid}, neither the system's nor the victim's \
                     ({victim_uid}); refused (--allow-foreign-owner to raise it anyway)",
                    dir.display()
                ));
            }
            let sw = dir.join("memory.memsw.limit_in_bytes");
            if file.ends_with("memory.limit_in_bytes")
                && let Ok(v) = crate::host::journal::read_limit(&sw)
                && (v < *to || crate::host::oom_domain::memsw_at_limit(dir))
            {
                // memsw must stay ≥ the limit, and is the limit hit when at its own: raised by
                // as much, first.
                plan.memsw = Some((sw, v));
            }
            let _ = from;
        }
    }
    Ok(plan)
}

/// What `--apply` did. `ok`: every step succeeded as intended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub did: Vec<String>,
    pub ok: bool,
    /// A memcg limit raised and journaled: put back through the journal once the victim dies.
    pub raised: bool,
    #[serde(skip)]
    pub unmount_fusectl: bool,
}

fn pidfd_send_signal(fd: &std::os::fd::OwnedFd, sig: i32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a pidfd we own; no siginfo; flags 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout` for the process behind `fd` to have exited (the pidfd polls readable).
fn pidfd_exited(fd: &std::os::fd::OwnedFd, timeout: std::time::Duration) -> bool {
    use std::os::fd::AsRawFd as _;
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&raw mut p, 1, ms) > 0 }
}

/// Whether the victim's threads in a ptrace stop still name a thread of process `tracer`.
fn still_traced_by(proc_root: &Path, victim: u32, tracer: u32) -> bool {
    let dir = proc_root.join(victim.to_string()).join("task");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .take(crate::host::forensics::MAX_THREADS)
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|s| {
            crate::host::forensics::status_field(s, "State").is_some_and(|st| st.starts_with('t'))
        })
        .filter_map(|s| {
            crate::host::forensics::status_field(&s, "TracerPid")?
                .parse::<u32>()
                .ok()
        })
        .any(|t| t == tracer || crate::host::forensics::tgid_of(proc_root, t) == Some(tracer))
}

/// Re-checks, right before a signal, that the target is the process diagnosed (same start
/// time) and still plays its part.
fn recheck(plan: &Plan, t: &Target, proc_root: &Path) -> Result<(), String> {
    use crate::host::journal::start_ticks;
    if start_ticks(proc_root, t.pid) != Some(t.start) {
        return Err(format!(
            "pid {} no longer names the process diagnosed (it exited; the pid may be reused): \
             nothing signalled",
            t.pid
        ));
    }
    let (victim, start) = plan.victim;
    if start.is_some() && start_ticks(proc_root, victim) != start {
        return Err(format!("the victim {victim} is gone: nothing signalled"));
    }
    match plan.action {
        Action::EndTracer { .. } if !still_traced_by(proc_root, victim, t.pid) => Err(format!(
            "process {} no longer holds the victim in a ptrace stop: nothing signalled",
            t.pid
        )),
        Action::SignalParent { .. }
            if std::fs::read_to_string(proc_root.join(victim.to_string()).join("status"))
                .ok()
                .and_then(|s| {
                    crate::host::forensics::status_field(&s, "PPid")?
                        .parse()
                        .ok()
                })
                != Some(t.pid) =>
        {
            Err(format!(
                "process {} is no longer the victim's parent: nothing signalled",
                t.pid
            ))
        }
        _ => Ok(()),
    }
}

/// Carries out a vetted plan. `before_acting` runs right before the identity re-check (tests
/// use it to reuse a pid in between). A raise is journaled in `journal` before it is made.
pub fn act(
    plan: &Plan,
    proc_root: &Path,
    fusectl: &Path,
    journal: Option<&mut crate::host::journal::Journal>,
    before_acting: &mut dyn FnMut(),
) -> Applied {
    let mut a = Applied::default();
    before_acting();
    match &plan.action {
        Action::AbortFuse { connection } => {
            let dir = fusectl.join(connection.to_string());
            if !dir.exists() && fusectl == Path::new(FUSECTL) {
                if !ensure_fusectl() {
                    a.did.push(format!("mounting fusectl at {FUSECTL} failed"));
                    return a;
                }
                a.unmount_fusectl = true;
                a.did.push(format!("mounted fusectl at {FUSECTL}"));
            }
            match std::fs::write(dir.join("abort"), "1") {
                Ok(()) => {
                    a.did.push(format!("aborted FUSE connection {connection}"));
                    a.ok = true;
                }
                Err(e) => a
                    .did
                    .push(format!("aborting FUSE connection {connection} failed: {e}")),
            }
        }
        Action::RaiseMemcgLimit { file, from, to } => {
            use crate::host::journal::LimitWrite;
            let mut writes = Vec::new();
            if let Some((sw, v)) = &plan.memsw {
                writes.push(LimitWrite {
                    file: sw.clone(),
                    from: *v,
                    to: v.saturating_add(to - from),
                });
            }
            writes.push(LimitWrite {
                file: file.clone(),
                from: *from,
                to: *to,
            });
            let (victim, start) = plan.victim;
            match journal {
                None => a
                    .did
                    .push("no journal to record the raise in: not raised".to_string()),
                Some(j) => match j.raise(victim, start.unwrap_or(0), writes) {
                    Ok(did) => {
                        a.did.extend(did);
                        a.ok = true;
                        a.raised = true;
                    }
                    Err(e) => a.did.push(format!("raising the limit failed: {e}")),
                },
            }
        }
        Action::EndTracer { .. } | Action::SignalParent { .. } => {
            let Some(t) = &plan.target else {
                a.did.push("no process held: nothing signalled".into());
                return a;
            };
            if let Err(why) = recheck(plan, t, proc_root) {
                a.did.push(why);
                return a;
            }
            if matches!(plan.action, Action::SignalParent { .. }) {
                match pidfd_send_signal(&t.pidfd, libc::SIGCHLD) {
                    Ok(()) => {
                        a.did.push(format!("sent SIGCHLD to parent {}", t.pid));
                        a.ok = true;
                    }
                    Err(e) => a
                        .did
                        .push(format!("sending SIGCHLD to parent {} failed: {e}", t.pid)),
                }
                return a;
            }
            end_process(t, &mut a);
        }
    }
    a
}

/// SIGTERM, two seconds, SIGKILL, two seconds: each step's result as it was.
fn end_process(t: &Target, a: &mut Applied) {
    let two = std::time::Duration::from_secs(2);
    match pidfd_send_signal(&t.pidfd, libc::SIGTERM) {
        Ok(()) => a.did.push(format!("sent SIGTERM to tracer {}", t.pid)),
        Err(e) => {
            a.did
                .push(format!("sending SIGTERM to tracer {} failed: {e}", t.pid));
            if e.raw_os_error() == Some(libc::ESRCH) {
                a.did.push(format!("tracer {} had already exited", t.pid));
                a.ok = true;
            }
            return;
        }
    }
    if pidfd_exited(&t.pidfd, two) {
        a.did.push(format!("tracer {} exited", t.pid));
        a.ok = true;
        return;
    }
    match pidfd_send_signal(&t.pidfd, libc::SIGKILL) {
        Ok(()) => a
            .did
            .push(format!("tracer {} ignored SIGTERM: sent SIGKILL", t.pid)),
        Err(e) => {
            a.did
                .push(format!("sending SIGKILL to tracer {} failed: {e}", t.pid));
            return;
        }
    }
    if pidfd_exited(&t.pidfd, two) {
        a.did.push(format!("tracer {} exited", t.pid));
        a.ok = true;
    } else {
        a.did
            .push(format!("tracer {} has not exited 2 s after SIGKILL", t.pid));
    }
}

/// Why `pid` may be treated as an OOM victim by `oomtrace unstick`, or why not: it was
/// SIGKILLed (SIGKILL pending while it exits, or a zombie killed by one) *and* the kernel's log
/// names its OOM kill (`Killed process PID (comm)`, logged by the OOM killer at the kill) after
/// the process started. A memcg's OOM-kill count is no evidence (a user's own `kill -9` in a
/// memcg that once saw an OOM kill would pass); `kmsg`: the kernel log's records, as
/// `/dev/kmsg` gives them. `assume`: the administrator's `--assume-oom-victim` (said as such).
pub fn oom_victim_evidence(
    proc_root: &Path,
    pid: u32,
    kmsg: &[String],
    assume: bool,
) -> Result<String, String> {
    use crate::host::forensics::{sigkill_pending, status_field};
    let dir = proc_root.join(pid.to_string());
    let status = std::fs::read_to_string(dir.join("status"))
        .map_err(|e| format!("pid {pid}: no such process ({e})"))?;
    if status_field(&status, "Tgid").and_then(|t| t.parse::<u32>().ok()) != Some(pid) {
        return Err(format!(
            "pid {pid} is a thread, not a process: give its process id"
        ));
    }
    let threads_killed = std::fs::read_dir(dir.join("task"))
        .into_iter()
        .flatten()
        .flatten()
        .take(crate::host::forensics::MAX_THREADS)
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .any(|s| sigkill_pending(&s) == Some(true));
    // /proc/PID/stat field 52: the exit code a zombie will report (a signal in the low bits).
    let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
    let after_comm = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let exit_signal = after_comm
        .split_whitespace()
        .nth(49)
        .and_then(|c| c.parse::<i32>().ok())
        .map(|c| c & 0x7f);
    let zombie = status_field(&status, "State").is_some_and(|s| s.starts_with('Z'));
    let killed = sigkill_pending(&status) == Some(true)
        || threads_killed
        || (zombie && exit_signal == Some(libc::SIGKILL));
    if !killed {
        return Err(format!(
            "pid {pid} was not SIGKILLed (no SIGKILL pending, not a zombie killed by one): not an \
             OOM victim, not touched"
        ));
    }
    let started_s = after_comm
        .split_whitespace()
        .nth(19)
        .and_then(|t| t.parse::<u64>().ok())
        .map(|t| t as f64 / crate::host::procfs::clock_ticks() as f64);
    if let Some(found) = oom_kill_logged(kmsg, pid, started_s) {
        return Ok(found);
    }
    if assume {
        return Ok(format!(
            "SIGKILLed; no OOM kill of pid {pid} in the kernel's log, taken as an OOM victim on \
             the administrator's word (--assume-oom-victim)"
        ));
    }
    Err(format!(
        "pid {pid} was SIGKILLed, but the kernel's log names no OOM kill of it (a kill by a \
         user, or a log that has rotated): not known to be an OOM victim, not touched \
         (--assume-oom-victim to take it as one)"
    ))
}

/// The kernel log's record of the OOM kill of `pid` at or after `started_s` (seconds after
/// boot), described; `kmsg` records are `PRI,SEQ,TS_US,FLAGS;MESSAGE`.
pub(crate) fn oom_kill_logged(kmsg: &[String], pid: u32, started_s: Option<f64>) -> Option<String> {
    let needle = format!("Killed process {pid} (");
    kmsg.iter().rev().find_map(|r| {
        let (head, msg) = r.split_once(';')?;
        let msg = msg.lines().next()?;
        if !msg.contains(&needle) {
            return None;
        }
        let ts_s = head.split(',').nth(2)?.parse::<u64>().ok()? as f64 / 1e6;
        // The kernel's log clock and /proc's start times both count from boot; a second of
        // slack for their rounding.
        if started_s.is_some_and(|s| ts_s + 1.0 < s) {
            return None;
        }
        Some(format!(
            "SIGKILLed, and the kernel logged its OOM kill {ts_s:.3} s after boot: \"{msg}\""
        ))
    })
}

/// The kernel log's records (`/dev/kmsg`, needs root or CAP_SYSLOG), as many as it still holds.
pub fn read_kmsg() -> Vec<String> {
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    for _ in 0..1_000_000 {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            // EPIPE: records overwritten while reading; go on with the next.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(_) => break,
        }
    }
    out
}

/// Waits until `pid` has finished exiting (its pidfd polls readable), or `timeout`.
pub fn wait_gone(pid: u32, timeout: std::time::Duration) -> bool {
    let Ok(fd) = crate::host::deathwatch::pidfd_open(pid) else {
        return true;
    };
    pidfd_exited(&fd, timeout)
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::Fuse { connections } if connections.is_empty() => write!(
                f,
                "an unanswered FUSE request (its FUSE file could not be identified: not in the \
                 blocked thread's system call, not recorded at its kill)"
            ),
            Wait::Fuse { connections } => write!(
                f,
                "an unanswered FUSE request (connection(s) of the file(s) it waits on: \
                 {connections:?})"
            ),
            Wait::NetworkFs { fs } => write!(f, "a {fs} server that does not answer"),
            Wait::MemcgCharge {
                memcg,
                usage_bytes,
                limit_bytes,
            } => write!(
                f,
                "a memory charge its memcg {memcg} refuses ({} of {} MiB used)",
                usage_bytes >> 20,
                limit_bytes >> 20
            ),
            Wait::Ptrace { tracer } => write!(f, "a ptrace stop: tracer pid {tracer} holds it"),
            Wait::PtraceSeveral { tracers } => write!(
                f,
                "ptrace stops held by different tracers {tracers:?} (which one to end is a \
                 person's decision)"
            ),
            Wait::MmapLock => write!(f, "the mmap lock (held by another task)"),
            Wait::Rwsem { caller } => write!(
                f,
                "a read-write semaphore (not the mmap lock) taken in {}, held by another task",
                printable(caller)
            ),
            Wait::CgroupThreadgroup => write!(
                f,
                "cgroup_threadgroup_rwsem in exit_signals: a cgroup migration (a write to \
                 cgroup.procs or cgroup.threads, often a container runtime's) holds it"
            ),
            Wait::Coredump { dumper } => {
                write!(
                    f,
                    "a core dump: its threads wait in exit until the core is written"
                )?;
                match dumper {
                    Some(t) => write!(
                        f,
                        " (thread {t} is writing it: to a file, or a core_pattern pipe helper \
                         that does not read)"
                    ),
                    None => write!(f, " (the dumping thread is not among those read)"),
                }
            }
            Wait::IoUringCancel => write!(
                f,
                "io_uring requests being cancelled at exit (before the exit tracepoint): \
                 requests in flight that do not complete"
            ),
            Wait::ExitAio => write!(
                f,
                "exit_aio: its in-flight AIO requests that do not complete"
            ),
            Wait::Frozen => write!(
                f,
                "a freezer (cgroup v1 freezer or suspend): on Linux ≤ 6.12 the OOM killer thaws \
                 only the thread it marks, the others stay frozen"
            ),
            Wait::BlockIo { writeback: true } => write!(
                f,
                "writeback: dirty pages that the device does not write (slow, dead or blocked)"
            ),
            Wait::BlockIo { writeback: false } => write!(
                f,
                "block I/O that does not complete (a slow, dead or blocked device)"
            ),
            Wait::TracedZombies { tracer, comm } => write!(
                f,
                "its tracer pid {tracer} ({}): exited threads it traces stay zombies until it \
                 waits for them",
                comm.as_deref().map_or("?".into(), printable)
            ),
            Wait::ZombieNotReaped { parent } => {
                write!(
                    f,
                    "nothing: it is dead, a zombie parent {parent} does not reap"
                )
            }
            Wait::Unknown => write!(f, "unknown (no known signature in its threads' stacks)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::forensics::{MemcgInfo, ThreadInfo};

    fn victim(threads: &[(&str, &[&str])]) -> Forensics {
        Forensics {
            tgid: 42,
            exists: true,
            ppid: Some(1),
            threads: threads
                .iter()
                .enumerate()
                .map(|(i, (state, stack))| ThreadInfo {
                    tid: 42 + i as u32,
                    state: state.to_string(),
                    wchan: stack.first().map(|s| s.to_string()),
                    stack: stack.iter().map(|s| s.to_string()).collect(),
                    tracer: None,
                })
                .collect(),
            ..Forensics::default()
        }
    }

    /// 6.1's stack of a thread in an unanswered FUSE read.
    const FUSE_READ: &[&str] = &[
        "request_wait_answer",
        "fuse_simple_request",
        "fuse_do_readpage",
        "fuse_read_folio",
        "filemap_read_folio",
        "filemap_get_pages",
        "filemap_read",
        "vfs_read",
        "ksys_read",
        "do_syscall_64",
    ];

    /// Stacks as /proc/PID/stack shows them (function names, innermost first), from the
    /// kernels of the matrix.
    #[test]
    fn stacks_of_several_kernels_are_classified() {
        // 6.1, a thread in an unanswered FUSE read; the leader a zombie.
        let fuse_read = FUSE_READ;
        let f = victim(&[("Z (zombie)", &[]), ("D (disk sleep)", fuse_read)]);
        assert_eq!(
            diagnose(&f, &[47]),
            Wait::Fuse {
                connections: vec![47]
            }
        );
        // 6.18, the victim's last thread closing a FUSE file inside exit_files (FLUSH held).
        let flush: &[&str] = &[
            "__fuse_simple_request",
            "fuse_flush",
            "filp_flush",
            "filp_close",
            "put_files_struct",
            "do_exit",
            "do_group_exit",
            "get_signal",
        ];
        let f = victim(&[("D (disk sleep)", flush)]);
        assert!(matches!(diagnose(&f, &[3, 9]), Wait::Fuse { .. }));
        // Two connections: ambiguous, no remedy.
        assert_eq!(remedy(&diagnose(&f, &[3, 9]), None, true), None);
        // 5.10 NFS.
        let nfs: &[&str] = &[
            "rpc_wait_bit_killable",
            "__rpc_execute",
            "rpc_run_task",
            "nfs4_call_sync_sequence",
            "nfs4_proc_getattr",
            "do_exit",
        ];
        assert_eq!(
            diagnose(&victim(&[("D (disk sleep)", nfs)]), &[]),
            Wait::NetworkFs { fs: "nfs".into() }
        );
        // 6.12, exit needs a page its memcg refuses.
        let charge: &[&str] = &[
            "mem_cgroup_out_of_memory",
            "try_charge_memcg",
            "__mem_cgroup_charge",
            "do_anonymous_page",
            "handle_mm_fault",
            "do_exit",
        ];
        let mut f = victim(&[("D (disk sleep)", charge)]);
        f.memcg = Some(MemcgInfo {
            path: "/pod/ctr".into(),
            usage_bytes: Some(64 << 20),
            limit_bytes: Some(64 << 20),
            oom_kills: Some(1),
            oom_events: None,
            under_oom: None,
        });
        let w = diagnose(&f, &[]);
        assert!(matches!(w, Wait::MemcgCharge { .. }), "{w:?}");
        let r = remedy(&w, Some(Path::new("/sys/fs/cgroup")), true).unwrap();
        assert_eq!(
            r.command,
            format!(
                "echo {} > /sys/fs/cgroup/pod/ctr/memory.max",
                (64 << 20) + (16 << 20)
            )
        );
    }

    /// Waits on locks, tracers and parents, as the stacks of several kernels show them.
    #[test]
    fn stacks_of_locks_tracers_and_zombies_are_classified() {
        // 5.10 mmap lock.
        let mmap: &[&str] = &[
            "rwsem_down_read_slowpath",
            "do_user_addr_fault",
            "exc_page_fault",
        ];
        assert_eq!(
            diagnose(&victim(&[("D (disk sleep)", mmap)]), &[]),
            Wait::MmapLock
        );
        // A tracee held in PTRACE_EVENT_EXIT.
        let traced: &[&str] = &["ptrace_stop", "ptrace_notify", "do_exit", "do_group_exit"];
        let mut f = victim(&[("t (tracing stop)", traced)]);
        f.stopped_tracers = vec![777];
        assert_eq!(diagnose(&f, &[]), Wait::Ptrace { tracer: 777 });
        // Stopped threads held by two tracers: said, no remedy.
        f.stopped_tracers = vec![777, 778];
        let w = diagnose(&f, &[]);
        assert_eq!(
            w,
            Wait::PtraceSeveral {
                tracers: vec![777, 778]
            }
        );
        assert_eq!(remedy(&w, None, true), None);
        // A leader traced by its parent (PTRACE_TRACEME) but not stopped, its other thread in
        // a FUSE read: the parent is no one's answer.
        let mut f = victim(&[("S (sleeping)", &[]), ("D (disk sleep)", FUSE_READ)]);
        f.threads[0].tracer = Some(1);
        assert!(matches!(diagnose(&f, &[40]), Wait::Fuse { .. }));
        // A zombie whose parent does not reap.
        let mut f = victim(&[("Z (zombie)", &[])]);
        f.ppid = Some(900);
        assert_eq!(diagnose(&f, &[]), Wait::ZombieNotReaped { parent: 900 });
        // Nothing known: unknown, and no remedy.
        let odd: &[&str] = &["schedule_timeout", "some_driver_wait", "do_exit"];
        let w = diagnose(&victim(&[("D (disk sleep)", odd)]), &[]);
        assert_eq!(w, Wait::Unknown);
        assert_eq!(remedy(&w, None, true), None);
    }

    /// A stack of a thread inside exit: `head` innermost, then the signal delivery path.
    fn with(head: &[&'static str]) -> Vec<&'static str> {
        const TAIL: &[&str] = &[
            "do_group_exit",
            "get_signal",
            "arch_do_signal_or_restart",
            "syscall_exit_to_user_mode",
            "do_syscall_64",
            "entry_SYSCALL_64_after_hwframe",
        ];
        head.iter().chain(TAIL).copied().collect()
    }

    /// The exit path's own waits and the locks and I/O that are not the mmap lock, as
    /// /proc/PID/task/*/stack shows them on the kernels of the matrix (function names from
    /// each version's sources: 5.10, 6.1, 6.12, 7.x), innermost first.
    #[test]
    fn exit_path_waits_of_each_kernel_are_named() {
        let dumper: &[&str] = &[
            "pipe_write",
            "__kernel_write_iter",
            "dump_emit",
            "elf_core_dump",
            "do_coredump",
            "get_signal",
        ];
        // 7.x: the waiting threads sleep in TASK_IDLE (state I); the dumper writes to a
        // core_pattern pipe helper that does not read.
        let waiting = with(&["__schedule", "schedule", "coredump_task_exit", "do_exit"]);
        let f = victim(&[("I (idle)", &waiting), ("D (disk sleep)", dumper)]);
        assert_eq!(diagnose(&f, &[]), Wait::Coredump { dumper: Some(43) });
        // 6.1 / 6.12: the same wait in D (TASK_UNINTERRUPTIBLE|TASK_FREEZABLE).
        let waiting = with(&["coredump_task_exit", "do_exit"]);
        let f = victim(&[("D (disk sleep)", &waiting)]);
        assert_eq!(diagnose(&f, &[]), Wait::Coredump { dumper: None });
        // 5.10: the wait is inline in exit_mm, itself inline in do_exit: a thread asleep
        // right in do_exit.
        let waiting = with(&["__schedule", "schedule", "do_exit"]);
        let f = victim(&[("D (disk sleep)", &waiting)]);
        assert_eq!(diagnose(&f, &[]), Wait::Coredump { dumper: None });
        // A running thread in do_exit is not waiting for anything.
        let f = victim(&[("R (running)", &waiting)]);
        assert_eq!(diagnose(&f, &[]), Wait::Unknown);

        // io_uring's cancellation at exit: 6.1, 6.12, 7.x (and 5.10's backports) ...
        let uring = with(&["io_uring_cancel_generic", "__io_uring_cancel", "do_exit"]);
        assert_eq!(
            diagnose(&victim(&[("D (disk sleep)", &uring)]), &[]),
            Wait::IoUringCancel
        );
        // ... and 5.10 before them.
        let uring = with(&[
            "io_uring_cancel_task_requests",
            "__io_uring_files_cancel",
            "do_exit",
        ]);
        assert_eq!(
            diagnose(&victim(&[("D (disk sleep)", &uring)]), &[]),
            Wait::IoUringCancel
        );

        // cgroup_threadgroup_rwsem in exit_signals (every kernel; a migration holds it).
        let tg = with(&[
            "percpu_rwsem_wait",
            "__percpu_down_read",
            "exit_signals",
            "do_exit",
        ]);
        let w = diagnose(&victim(&[("D (disk sleep)", &tg)]), &[]);
        assert_eq!(w, Wait::CgroupThreadgroup);
        assert!(w.to_string().contains("cgroup.procs"), "{w}");
    }

    /// Locks that are not the mmap lock, and exit_aio, named by the function that waits.
    #[test]
    fn rwsems_other_than_the_mmap_lock_and_exit_aio_are_named() {
        // Another per-CPU rwsem: a frozen filesystem's sb_writers, named by its caller.
        let frozen_fs: &[&str] = &[
            "percpu_rwsem_wait",
            "__percpu_down_read",
            "mnt_want_write",
            "do_unlinkat",
            "__x64_sys_unlink",
        ];
        assert_eq!(
            diagnose(&victim(&[("D (disk sleep)", frozen_fs)]), &[]),
            Wait::Rwsem {
                caller: "mnt_want_write".into()
            }
        );

        // rwsems: the mmap lock only where the function taking it takes that lock.
        // 6.12's fault path and 6.1's exit_mmap:
        let fault: &[&str] = &[
            "rwsem_down_read_slowpath",
            "down_read_killable",
            "lock_mm_and_find_vma",
            "do_user_addr_fault",
            "exc_page_fault",
        ];
        assert_eq!(
            diagnose(&victim(&[("D (disk sleep)", fault)]), &[]),
            Wait::MmapLock
        );
        let exit_mmap = with(&[
            "rwsem_down_write_slowpath",
            "down_write",
            "exit_mmap",
            "__mmput",
            "mmput",
            "do_exit",
        ]);
        assert_eq!(
            diagnose(&victim(&[("D (disk sleep)", &exit_mmap)]), &[]),
            Wait::MmapLock
        );
        // i_mmap_rwsem, taken below exit_mmap: not the mmap lock.
        let i_mmap = with(&[
            "rwsem_down_write_slowpath",
            "down_write",
            "unlink_file_vma",
            "free_pgtables",
            "exit_mmap",
            "__mmput",
            "mmput",
            "do_exit",
        ]);
        let w = diagnose(&victim(&[("D (disk sleep)", &i_mmap)]), &[]);
        assert_eq!(
            w,
            Wait::Rwsem {
                caller: "unlink_file_vma".into()
            }
        );
        assert!(w.to_string().contains("not the mmap lock"), "{w}");

        // exit_aio, waiting for in-flight AIO as the mm is dropped.
        let aio = with(&[
            "schedule_timeout",
            "wait_for_completion",
            "exit_aio",
            "__mmput",
            "mmput",
            "do_exit",
        ]);
        assert_eq!(
            diagnose(&victim(&[("D (disk sleep)", &aio)]), &[]),
            Wait::ExitAio
        );
    }

    /// A frozen victim, writeback and block I/O (weak signs: a page wait under NFS stays NFS).
    #[test]
    fn frozen_victims_and_io_waits_are_named() {
        // A frozen multi-threaded victim (6.1): the marked thread thawed and exiting, the
        // other still in the refrigerator.
        let refrigerator: &[&str] = &[
            "__refrigerator",
            "get_signal",
            "arch_do_signal_or_restart",
            "exit_to_user_mode_prepare",
        ];
        let f = victim(&[("R (running)", &[]), ("D (disk sleep)", refrigerator)]);
        let w = diagnose(&f, &[]);
        assert_eq!(w, Wait::Frozen);
        assert!(w.to_string().contains("6.12"), "{w}");
        let r = remedy(&w, None, false).unwrap();
        assert_eq!(r.action, None, "thawing a cgroup is a person's decision");

        // Writeback (5.10 names) and plain block I/O (6.12 names) ...
        let writeback = with(&[
            "io_schedule",
            "wait_on_page_bit_common",
            "wait_on_page_writeback",
            "__filemap_fdatawait_range",
            "filemap_write_and_wait_range",
            "ext4_sync_file",
            "filp_close",
            "put_files_struct",
            "do_exit",
        ]);
        assert_eq!(
            diagnose(&victim(&[("D (disk sleep)", &writeback)]), &[]),
            Wait::BlockIo { writeback: true }
        );
        let bio: &[&str] = &[
            "io_schedule",
            "blk_mq_get_tag",
            "__blk_mq_alloc_requests",
            "blk_mq_submit_bio",
            "submit_bio_noacct_nocheck",
        ];
        assert_eq!(
            diagnose(&victim(&[("D (disk sleep)", bio)]), &[]),
            Wait::BlockIo { writeback: false }
        );
        // ... but a page wait under NFS is NFS's (the block layer's frames are weak signs).
        let nfs_page: &[&str] = &[
            "io_schedule",
            "folio_wait_bit_common",
            "nfs_read_folio",
            "filemap_read",
        ];
        assert_eq!(
            diagnose(&victim(&[("D (disk sleep)", nfs_page)]), &[]),
            Wait::NetworkFs { fs: "nfs".into() }
        );
    }

    /// Every thread exited, a traced thread's zombie waiting for its tracer: the tracer is
    /// named (its comm escaped), not the parent.
    #[test]
    fn traced_zombie_threads_blame_their_tracer() {
        let mut f = victim(&[("Z (zombie)", &[]), ("Z (zombie)", &[])]);
        f.ppid = Some(1);
        f.threads[1].tracer = Some(900);
        f.tracer_comms.insert(900, "gdb\u{1b}[2J".into());
        let w = diagnose(&f, &[]);
        assert_eq!(
            w,
            Wait::TracedZombies {
                tracer: 900,
                comm: Some("gdb\u{1b}[2J".into())
            }
        );
        let text = w.to_string();
        assert!(text.contains("tracer pid 900 (gdb"), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "the tracer's name is escaped: {text:?}"
        );
        let r = remedy(&w, None, true).unwrap();
        assert_eq!(r.command, "kill -TERM 900");
        assert_eq!(r.action, None);
        // Without a tracer it is the parent's to reap.
        f.threads[1].tracer = None;
        assert_eq!(diagnose(&f, &[]), Wait::ZombieNotReaped { parent: 1 });
    }

    #[test]
    fn the_margin_is_bounded() {
        assert_eq!(margin(64 << 20), 16 << 20);
        // 10 % of 1 GiB, in whole MiB (v1 would round a byte count to pages).
        assert_eq!(margin(1 << 30), 102 << 20);
        assert_eq!(margin(64 << 30), 256 << 20);
    }

    /// A FUSE mount's connection id is its dev_t: `fuse` mounts have major 0, `fuseblk`
    /// mounts a block device's numbers (major 8, minor 1 → 8 << 20 | 1).
    #[test]
    fn fuse_connection_ids_are_dev_ts() {
        let m = fuse_mounts(
            "22 1 0:21 / /proc rw - proc proc rw\n\
             88 22 0:40 / /tmp/f rw,nosuid - fuse.hold hold rw,user_id=0\n\
             89 22 8:1 / /tmp/g rw - fuseblk /dev/sda1 rw\n",
        );
        assert_eq!(m.get(&88), Some(&40));
        assert_eq!(m.get(&89), Some(&((8 << 20) | 1)));
        assert_eq!(m.len(), 2);
    }

    /// The connection is the one of the file the blocked thread's system call names (its fd's
    /// `mnt_id` → the mount's dev_t), not any connection with requests waiting: a `fuseblk`
    /// mount (major 8) among them is named by its full dev_t.
    #[test]
    fn the_fuse_connection_is_that_of_the_file_waited_on() {
        let dir = crate::scratch::ScratchDir::new("unstick-fusefile");
        let t = dir.path().join("42/task/43");
        std::fs::create_dir_all(t.join("fdinfo")).unwrap();
        std::fs::write(
            dir.path().join("42/mountinfo"),
            "22 1 0:21 / /proc rw - proc proc rw\n\
             88 22 0:40 / /tmp/f rw,nosuid - fuse.hold hold rw,user_id=0\n\
             89 22 8:17 / /tmp/g rw - fuseblk /dev/sdb1 rw\n",
        )
        .unwrap();
        // read(5, …): fd 5 is on the fuseblk mount.
        std::fs::write(
            t.join("syscall"),
            "0 0x5 0x7ffd 0x1000 0x0 0x0 0x0 0x7ffd 0x7f\n",
        )
        .unwrap();
        std::fs::write(
            t.join("fdinfo/5"),
            "pos:\t0\nflags:\t0100000\nmnt_id:\t89\n",
        )
        .unwrap();
        let fuse_read: Vec<String> = ["request_wait_answer", "fuse_simple_request", "vfs_read"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = Forensics {
            tgid: 42,
            exists: true,
            threads: vec![ThreadInfo {
                tid: 43,
                state: "D (disk sleep)".into(),
                wchan: Some("request_wait_answer".into()),
                stack: fuse_read,
                tracer: None,
            }],
            ..Forensics::default()
        };
        assert_eq!(fuse_connections_waited_on(dir.path(), &f), [(8 << 20) | 17]);
        // Not in a system call (inside exit): nothing named; what was recorded at the kill is
        // used only if it has requests waiting.
        std::fs::write(t.join("syscall"), "-1 0x7ffd 0x7f\n").unwrap();
        assert!(fuse_connections_waited_on(dir.path(), &f).is_empty());
        let ctl = dir.path().join("fusectl");
        for (c, w) in [(40, "1"), (41, "0")] {
            std::fs::create_dir_all(ctl.join(c.to_string())).unwrap();
            std::fs::write(ctl.join(c.to_string()).join("waiting"), w).unwrap();
        }
        assert_eq!(fuse_connections_for(dir.path(), &f, &[40, 41], &ctl), [40]);
        assert!(fuse_connections_for(dir.path(), &f, &[], &ctl).is_empty());
    }

    /// The kernel log's OOM-kill line is the evidence; one from before the process started
    /// (an earlier process with the same pid) is not.
    #[test]
    fn evidence_is_the_kernels_log_of_the_kill() {
        let log = [
            "6,100,5000000,-;Memory cgroup out of memory: Killed process 4242 (hog) \
             total-vm:1kB\n"
                .to_string(),
        ];
        assert!(oom_kill_logged(&log, 4242, Some(4.5)).is_some());
        assert!(oom_kill_logged(&log, 4242, Some(9.0)).is_none());
        assert!(oom_kill_logged(&log, 424, Some(1.0)).is_none());
    }

    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("sleep")
    }

    fn me() -> Forensics {
        // SAFETY: no preconditions.
        let uid = unsafe { libc::getuid() };
        Forensics {
            tgid: std::process::id(),
            exists: true,
            uid: Some(uid),
            ppid: Some(1),
            ..Forensics::default()
        }
    }

    /// cgroup v1: memsw goes up with the limit when it would fall below it, and also when it
    /// is the limit hit (at its own limit, above the memory limit): raising the memory limit
    /// alone would free nothing.
    #[test]
    fn v1_memsw_is_raised_along_when_it_is_the_limit_hit() {
        let root = crate::scratch::ScratchDir::new("unstick-memsw");
        let f = Forensics {
            tgid: std::process::id(),
            uid: Some(0),
            ..Forensics::default()
        };
        let allow = Policy {
            allow_foreign_owner: true,
            ..Policy::default()
        };
        let mib = 1u64 << 20;
        for (d, sw_limit, sw_usage, raised) in [
            ("hit", 128 * mib, 128 * mib, true),
            ("roomy", 256 * mib, 64 * mib, false),
            ("below", 70 * mib, 10 * mib, true),
        ] {
            let dir = root.join(d);
            std::fs::create_dir_all(&dir).unwrap();
            for (file, v) in [
                ("memory.limit_in_bytes", 64 * mib),
                ("memory.memsw.limit_in_bytes", sw_limit),
                ("memory.memsw.usage_in_bytes", sw_usage),
            ] {
                std::fs::write(dir.join(file), v.to_string()).unwrap();
            }
            let r = raise_remedy(&format!("/{d}"), 64 * mib, root.path(), false).unwrap();
            let file = dir.join("memory.limit_in_bytes");
            assert!(r.command.ends_with(&file.display().to_string()), "{r:?}");
            let plan = vet(
                r.action.as_ref().unwrap(),
                &f,
                Path::new("/proc"),
                Path::new("/nonexistent"),
                allow,
            )
            .unwrap();
            assert_eq!(plan.memsw.is_some(), raised, "{d}: {:?}", plan.memsw);
        }
    }

    /// PID 1, oomtrace's own ancestors, the victim's real parent and another uid's process are
    /// never the tracer ended (without the explicit flags).
    #[test]
    fn tracers_that_must_not_be_ended_are_refused() {
        let proc_root = Path::new("/proc");
        let ctl = Path::new(FUSECTL);
        let end = |t: u32| Action::EndTracer { tracer: t };
        let v = me();
        let e = vet(&end(1), &v, proc_root, ctl, Policy::default()).unwrap_err();
        assert!(e.contains("PID 1"), "{e}");
        let e = vet(
            &end(std::process::id()),
            &v,
            proc_root,
            ctl,
            Policy::default(),
        )
        .unwrap_err();
        assert!(e.contains("ancestors"), "{e}");
        let mut s = sleeper();
        let mut parented = me();
        parented.ppid = Some(s.id());
        let e = vet(&end(s.id()), &parented, proc_root, ctl, Policy::default()).unwrap_err();
        assert!(e.contains("real parent"), "{e}");
        let allow = Policy {
            allow_parent_tracer: true,
            ..Policy::default()
        };
        assert!(vet(&end(s.id()), &parented, proc_root, ctl, allow).is_ok());
        let mut foreign = me();
        foreign.uid = Some(54_321);
        let e = vet(&end(s.id()), &foreign, proc_root, ctl, Policy::default()).unwrap_err();
        assert!(e.contains("--allow-foreign-owner"), "{e}");
        let allow = Policy {
            allow_foreign_owner: true,
            ..Policy::default()
        };
        assert!(vet(&end(s.id()), &foreign, proc_root, ctl, allow).is_ok());
        // A container's init (its pid in its own namespace is 1), under a fixture /proc.
        let root = crate::scratch::ScratchDir::new("unstick-nsinit");
        std::fs::create_dir_all(root.join("777")).unwrap();
        std::fs::write(
            root.join("777/status"),
            "Name:\tinit\nTgid:\t777\nPid:\t777\nPPid:\t700\nUid:\t0\t0\t0\t0\nNSpid:\t777\t1\n",
        )
        .unwrap();
        let e = vet(&end(777), &v, root.path(), ctl, Policy::default()).unwrap_err();
        assert!(e.contains("init of a PID namespace"), "{e}");
        let _ = s.kill();
        let _ = s.wait();
    }

    /// The tracer's pid is reused between the diagnosis and the action (simulated by the
    /// before-acting hook: the diagnosed process is ended and reaped, another started): the
    /// newcomer is not signalled, and the result says why. The signal goes through the pidfd
    /// opened at diagnosis, so even a pid the kernel hands out again names nothing of it.
    #[test]
    fn a_pid_reused_between_diagnosis_and_action_is_not_signalled() {
        let proc_root = Path::new("/proc");
        let mut old = sleeper();
        let mut victim = sleeper();
        let mut f = me();
        f.tgid = victim.id();
        let target = hold(proc_root, old.id()).unwrap();
        let plan = Plan {
            action: Action::EndTracer { tracer: old.id() },
            victim: (
                victim.id(),
                crate::host::journal::start_ticks(proc_root, victim.id()),
            ),
            target: Some(target),
            memsw: None,
        };
        let mut newcomer = None;
        let a = act(&plan, proc_root, Path::new(FUSECTL), None, &mut || {
            let _ = old.kill();
            let _ = old.wait();
            newcomer = Some(sleeper());
        });
        let mut newcomer = newcomer.unwrap();
        assert!(!a.ok, "{a:?}");
        assert!(a.did[0].contains("no longer names"), "{a:?}");
        assert!(
            newcomer.try_wait().unwrap().is_none(),
            "the newcomer was signalled"
        );
        // And the pidfd of the reaped process signals nothing at all.
        let e = pidfd_send_signal(&plan.target.as_ref().unwrap().pidfd, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        for c in [&mut newcomer, &mut victim] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every signal's result is reported as it was: a tracer that exits on SIGTERM is said to
    /// have exited.
    #[test]
    fn ending_a_process_reports_what_happened() {
        let mut s = sleeper();
        let t = hold(Path::new("/proc"), s.id()).unwrap();
        let mut a = Applied::default();
        end_process(&t, &mut a);
        assert!(a.ok, "{a:?}");
        assert_eq!(
            a.did,
            [
                format!("sent SIGTERM to tracer {}", s.id()),
                format!("tracer {} exited", s.id())
            ]
        );
        let _ = s.wait();
    }
}
