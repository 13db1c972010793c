//! Types shared by the oomtrace eBPF programs and userspace.
//!
//! The kernel side reports facts and nothing more: every record is an [`Event`] — a fixed
//! [`Header`] (what kind, when, on which CPU, in which task) followed by one payload struct.
//! Kinds have fixed numbers with gaps per hook family so that new kinds never renumber old ones
//! (dumps recorded by one version are replayed by another).
//!
//! All structs are `#[repr(C)]` with explicit padding fields: no implicit padding, so the bytes
//! userspace reads are exactly the bytes the kernel wrote.
#![no_std]

/// Length of `task_struct.comm`.
pub const TASK_COMM_LEN: usize = 16;
/// Bytes of the OOM killer's message kept per kill: the longest the kernel passes, "Out of
/// memory (oom_kill_allocating_task)", is 40.
pub const MESSAGE_LEN: usize = 64;
/// Marker for "this offset is not known on this kernel" in [`Config`].
pub const NO_OFFSET: u32 = u32::MAX;

/// Every event kind, described once: its number, its snake_case name (JSON and text) and its
/// payload struct. `$m` is called with the list; [`EventKind`] (with [`EventKind::ALL`] and
/// [`EventKind::name`]) is derived from it here, and userspace derives its `Payload` enum, the
/// decoding and the encoding from it (`oomtrace::event`): a new kind is one entry here, its
/// payload struct, and the arms the compiler then asks for where kinds are told apart.
///
/// The numbers are part of the dump format: never reuse or renumber.
#[macro_export]
macro_rules! event_kinds {
    ($m:ident) => {
        $m! {
            /// `mem_cgroup_out_of_memory()` entered: a memory cgroup hit its limit and reclaim failed;
            /// or `out_of_memory()` without a memcg (memcg id 0): the whole machine is out of memory.
            OomInvoke = 10, "oom_invoke", OomInvoke;
            /// `mem_cgroup_out_of_memory()` returned (whether it killed).
            OomInvokeDone = 11, "oom_invoke_done", OomInvokeDone;
            /// `oom_kill_process()`: the OOM killer chose a victim.
            OomKill = 20, "oom_kill", OomKill;
            /// `oom:mark_victim`: the victim was marked (gets access to memory reserves).
            MarkVictim = 21, "mark_victim", MarkVictim;
            /// `signal_generate` with SIGKILL, whoever sent it: the kernel itself (`SEND_SIG_PRIV`:
            /// the OOM killer, a PID-namespace teardown, a tracer's exit) or a user process (`kill(2)`,
            /// `tgkill(2)`, `pidfd_send_signal(2)`). Records of layouts before
            /// [`sender_state::CODE`] carry only the kernel's own.
            KernelSigkill = 22, "kernel_sigkill", KernelSigkill;
            /// The kernel stack of the task that invoked the OOM killer (the allocation that failed),
            /// read in `oom:mark_victim`, which runs in that task's context on every kernel
            /// (`__oom_kill_process` / `oom_kill_process` / `out_of_memory` ← the allocation).
            /// Written just before the [`EventKind::MarkVictim`] it belongs to, by the same program.
            AllocStack = 23, "alloc_stack", AllocStack;
            /// `oom_badness()` returned inside an OOM invocation's scan (the task that invoked it,
            /// between the invocation's entry and its kill decision): one eligible-or-not task and
            /// its score. `/proc/PID/oom_score` reads call it too; those are not reported.
            OomCandidate = 24, "oom_candidate", OomCandidate;
            /// `oom:wake_reaper`: the victim was queued for the oom_reaper.
            WakeReaper = 30, "wake_reaper", Reaper;
            /// `oom:start_task_reaping`.
            StartReaping = 31, "start_reaping", Reaper;
            /// `oom:finish_task_reaping`: the victim's memory was unmapped (it is NOT dead yet).
            FinishReaping = 32, "finish_reaping", Reaper;
            /// `oom:skip_task_reaping`: the reaper could not take the victim's mmap_lock this time.
            SkipReaping = 33, "skip_reaping", Reaper;
            /// `sched:sched_process_exit` of a thread of a tracked process.
            TaskExit = 40, "task_exit", TaskExit;
            /// `sched:sched_process_free` of a tracked process leader: the zombie was released.
            TaskFree = 41, "task_free", TaskFree;
            /// Observed by userspace, not by a kernel program: the process has finished exiting —
            /// every thread has passed `exit_notify` (mm dropped, files closed), which is what its
            /// pidfd polling readable means (`thread_group_exited`). **This is death.** Dumps carry it
            /// so that `report` judges exactly as `watch` did.
            GroupExited = 42, "group_exited", GroupExited;
            /// `signal:signal_generate` of a tracked process's exit signal (`si_code` `CLD_EXITED`,
            /// `CLD_KILLED` or `CLD_DUMPED`, SIGCHLD as a rule) to another process, sent by a
            /// thread of it: on every kernel since 5.3 the kernel sends it from
            /// `do_notify_parent`, just after waking its pidfd's waiters (`do_notify_pidfd`), once
            /// the process has finished exiting. Not sent when the parent ignores SIGCHLD
            /// (`SIG_IGN`) or the exit signal is 0. Userspace dates a death by it.
            ParentNotified = 43, "parent_notified", ParentNotified;
            /// Observed by userspace when it starts: a process that was sent SIGKILL before oomtrace
            /// came and has not finished exiting.
            PreExisting = 50, "pre_existing", PreExisting;
            /// Observed by userspace: the kernel published an OOM event of a memcg (cgroup v2
            /// `memory.events.local` changed; cgroup v1 the `memory.oom_control` eventfd fired), or
            /// a watched memcg went away. Counts invocations where no invocation hook attaches.
            MemcgOom = 51, "memcg_oom", MemcgOom;
            /// Observed by userspace at a kill: a memcg's usage, limit, failures and `memory.stat`
            /// (or the machine's `/proc/meminfo` for a global OOM), read from its files when the kill
            /// event arrived. Dumps carry it: the files are gone or changed by the time of a replay.
            MemcgState = 52, "memcg_state", MemcgState;
            /// `cgroup:cgroup_mkdir`: a cgroup was created, in any hierarchy (userspace keeps the
            /// memory controller's). Its id and path, so that a memcg removed before an event naming
            /// it is read is still named.
            CgroupMkdir = 60, "cgroup_mkdir", CgroupMkdir;
            /// `cgroup:cgroup_rmdir`: a cgroup was removed (its directory unlinked: it takes no
            /// new task and its files are gone, though the kernel may free it later), in any
            /// hierarchy, with the same record as its creation. Userspace then knows a memcg is
            /// gone from the stream, in order with the events naming it, without asking the
            /// cgroup filesystem at each finding; a dump carries it, so a replay says so too.
            CgroupRmdir = 61, "cgroup_rmdir", CgroupMkdir;
        }
    };
}

/// Defines [`EventKind`] from [`event_kinds!`].
macro_rules! define_event_kind {
    ($($(#[$doc:meta])* $kind:ident = $num:literal, $name:literal, $payload:ident;)*) => {
        /// What an event is. The numbers are part of the dump format: never reuse or renumber.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind {
            $($(#[$doc])* $kind = $num,)*
        }

        impl EventKind {
            /// All kinds, in number order.
            pub const ALL: [EventKind; [$($name),*].len()] = [$(Self::$kind),*];

            /// The snake_case name of the kind, as in JSON and text.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$kind => $name,)*
                }
            }
        }
    };
}

event_kinds!(define_event_kind);

impl EventKind {
    /// The kind with this number, if any.
    pub fn from_u32(n: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u32 == n)
    }
}

/// Common start of every event: the kind, the time and the task that was running (`current`).
///
/// For kill-path events `current` is the task that allocated and triggered the OOM; for
/// `TaskExit` it is the exiting thread itself; for `TaskFree` it is whatever ran the RCU callback
/// (meaningless: use the payload).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// An [`EventKind`] number.
    pub kind: u32,
    /// CPU the event was recorded on.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Thread id of `current`.
    pub pid: u32,
    /// Process id (tgid) of `current`.
    pub tgid: u32,
    /// `current->comm`, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
}

/// A header followed by a payload: what the ring buffer carries.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event<T> {
    pub header: Header,
    pub data: T,
}

/// `mem_cgroup_out_of_memory(memcg, gfp_mask, order)` entered, or a global `out_of_memory()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomInvoke {
    /// The memcg's cgroup id (inode of its cgroup directory); 0 for a global OOM. An order of
    /// -1 is a sysrq-f (manual) OOM.
    pub memcg_id: u64,
    pub gfp_mask: u32,
    pub order: i32,
}

/// `mem_cgroup_out_of_memory()` returned. Pair it with the [`OomInvoke`] of the same thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomInvokeDone {
    /// 1 if it killed (or found a victim already dying), 0 if not.
    pub killed: u32,
    pub _pad: u32,
}

/// `oom_kill_process(oc, message)`: the chosen victim and the numbers behind the choice.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomKill {
    pub chosen_pid: u32,
    pub chosen_tgid: u32,
    pub chosen_comm: [u8; TASK_COMM_LEN],
    /// Start time (ns since boot, `start_boottime`) of the chosen process's leader.
    pub chosen_start_ns: u64,
    /// `oc->chosen_points`: the badness score (pages, adjusted by oom_score_adj).
    pub chosen_points: i64,
    /// `oc->totalpages`: the memory the choice was relative to (for a memcg, its limit).
    pub totalpages: u64,
    /// `oc->memcg`'s cgroup id; 0 for a global OOM.
    pub memcg_id: u64,
    /// `enum oom_constraint` (0 none, 1 cpuset, 2 memory policy, 3 memcg).
    pub constraint: u32,
    pub order: i32,
    pub gfp_mask: u32,
    pub _pad: u32,
    /// The kernel's message, NUL-padded (truncated).
    pub message: [u8; MESSAGE_LEN],
    /// The memory cgroup id of the chosen process itself (read from its task; 0 if unknown).
    /// `memcg_id` is the OOM domain, which may be an ancestor. Added after `message` so that
    /// records of the older 136-byte layout (dumps) still decode: they read as 0 here.
    pub chosen_memcg_id: u64,
    /// `oc->chosen->mm`: the victim's `mm_struct` address (an identity, never dereferenced by
    /// userspace), which the processes killed along with it share. 0 when unknown: the chosen
    /// task had no mm of its own (a zombie leader whose threads hold it), or a record of an
    /// older layout (144 bytes, before this field).
    pub chosen_mm: u64,
}

/// Bits of [`MarkVictim::fields`]: which optional fields this kernel provided.
pub mod victim_fields {
    /// `tgid`, `start_ns`, `memcg_id` (read from the task: tp_btf only).
    pub const TASK: u32 = 1 << 0;
    /// `comm` of the victim.
    pub const COMM: u32 = 1 << 1;
    /// `total_vm_kb`, `anon_rss_kb`, `file_rss_kb`, `shmem_rss_kb`, `pgtables_kb`.
    pub const MEMORY: u32 = 1 << 2;
    /// `uid`.
    pub const UID: u32 = 1 << 3;
    /// `oom_score_adj`.
    pub const OOM_SCORE_ADJ: u32 = 1 << 4;
    /// `tgid` was filled in by userspace from /proc (the classic tracepoint names a thread):
    /// set only in what oomtrace records, never by a kernel program.
    pub const TGID_FROM_PROC: u32 = 1 << 5;
}

/// `oom:mark_victim`. Before Linux 6.8 the tracepoint carried only `pid` (a thread id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkVictim {
    /// Thread id the kernel marked (not always the leader).
    pub pid: u32,
    /// 0 unless `fields` has [`victim_fields::TASK`].
    pub tgid: u32,
    pub comm: [u8; TASK_COMM_LEN],
    pub start_ns: u64,
    pub memcg_id: u64,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    pub uid: u32,
    pub oom_score_adj: i32,
    /// [`victim_fields`] bits.
    pub fields: u32,
    pub _pad: u32,
    /// The victim's `mm_struct` address (an identity, never dereferenced by userspace): the
    /// processes the OOM killer kills along with it share it. 0 when unknown (classic
    /// tracepoint).
    pub mm: u64,
}

/// Frames of [`AllocStack`] kept: deep enough for a page fault's charge path down to
/// `out_of_memory` (about 20 frames on x86-64, 5.10 to 7.x) with room to spare.
pub const STACK_DEPTH: usize = 32;

/// The kernel stack of `current` (the task whose allocation invoked the OOM killer) when the
/// victim was marked: return addresses, innermost first, as `bpf_get_stack` wrote them.
/// Only written at a kill, never per event.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocStack {
    /// Frames in `ips` (the rest are 0); 0 when the helper failed (`error` says why).
    pub frames: u32,
    /// The helper's negative errno when it failed, else 0.
    pub error: i32,
    pub ips: [u64; STACK_DEPTH],
}

/// `LONG_MIN`: what `oom_badness` returns for a task it may not kill (oom_score_adj -1000,
/// `MMF_OOM_SKIP`, in vfork).
pub const BADNESS_INELIGIBLE: i64 = i64::MIN;

/// Candidates reported per OOM scan: a scan of more tasks (a global OOM of a large machine)
/// reports its first ones only, and userspace says the list was cut.
pub const CANDIDATES_MAX: u32 = 256;

/// One task the OOM killer scored (`oom_badness`), with what the score is made of. The mm
/// counters are read the way the kernel's own report reads them (the counter's value without
/// the per-CPU deltas not yet folded in): approximate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomCandidate {
    pub pid: u32,
    pub tgid: u32,
    pub comm: [u8; TASK_COMM_LEN],
    pub start_ns: u64,
    /// The score, [`BADNESS_INELIGIBLE`] for a task it may not kill.
    pub points: i64,
    pub totalpages: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    /// `MM_SWAPENTS`: part of the score.
    pub swap_kb: u64,
    pub pgtables_kb: u64,
    pub oom_score_adj: i32,
    /// [`candidate_fields`] bits.
    pub fields: u32,
    /// Its number in this scan (1-based): [`CANDIDATES_MAX`] means the list may be cut.
    pub seq: u32,
    pub _pad: u32,
}

/// Bits of [`OomCandidate::fields`].
pub mod candidate_fields {
    /// The mm counters were read (a task without an mm has none).
    pub const MEMORY: u32 = 1 << 0;
    pub const OOM_SCORE_ADJ: u32 = 1 << 1;
}

/// Bits of [`KernelSigkill::sender_flags`]: the state of the task that sent the SIGKILL
/// (`current`), read from its `task_struct.flags` when the signal was generated.
pub mod sender_state {
    /// The sender's flags were read: the other bits are facts. Without it (records of older
    /// layouts, or `task_struct.flags` not found in BTF) nothing is known about the sender.
    pub const KNOWN: u32 = 1 << 0;
    /// The sender was inside its own `do_exit` (`PF_EXITING`, set by `exit_signals`): the
    /// SIGKILLs a task sends from there are its exit's doing — a dying PID-namespace init
    /// killing its namespace (`zap_pid_ns_processes`), a tracer killing its `PTRACE_O_EXITKILL`
    /// tracees — not an OOM kill of processes sharing a victim's mm, which the OOM-invoking
    /// task sends from its allocation.
    pub const EXITING: u32 = 1 << 1;
    /// [`KernelSigkill::si_code`], `sender_uid` and `sender_memcg_id` were recorded (every
    /// SIGKILL is reported). Without it (older layouts) the record is of a SIGKILL the kernel
    /// sent itself (`SEND_SIG_PRIV`, `SI_KERNEL`): those were the only ones reported then.
    pub const CODE: u32 = 1 << 2;
}

/// Bits of [`KernelSigkill::target_state`]: facts about the target and its tracking.
pub mod target_state {
    /// The target's `task_struct.flags` were read (tp_btf only): [`EXITING`] is a fact.
    pub const KNOWN: u32 = 1 << 0;
    /// The target was inside `do_exit` (`PF_EXITING`) when the SIGKILL came: a kill the kernel
    /// reports as ignored (`prepare_signal`: the group is already exiting) still names a
    /// process that was told to die and has not finished.
    pub const EXITING: u32 = 1 << 1;
    /// The in-kernel set of tracked processes was full: this target's thread exits and
    /// release are not reported (its death is still seen through its pidfd).
    pub const UNTRACKED: u32 = 1 << 2;
}

/// `si_code` values of `struct kernel_siginfo` (include/uapi/asm-generic/siginfo.h) as the
/// classic `signal_generate` record stores them (`TP_STORE_SIGINFO`).
pub mod si_code {
    /// `kill(2)`, `pidfd_send_signal(2)` with no siginfo (`SEND_SIG_NOINFO`).
    pub const SI_USER: i32 = 0;
    /// Sent by the kernel (`SEND_SIG_PRIV`, `force_sig`).
    pub const SI_KERNEL: i32 = 0x80;
    /// `SI_FROMUSER`: a code ≤ 0 is a signal a user process sent (`SI_USER`, `SI_QUEUE`,
    /// `SI_TKILL`, ...); a positive one the kernel generated.
    pub const fn from_user(code: i32) -> bool {
        code <= 0
    }
}

/// `TRACE_SIGNAL_*` values of [`KernelSigkill::result`].
pub mod signal_result {
    pub const DELIVERED: i32 = 0;
    /// `prepare_signal` refused it: the target is a global or namespace init that cannot be
    /// killed from inside, or its thread group is already exiting.
    pub const IGNORED: i32 = 1;
    pub const ALREADY_PENDING: i32 = 2;
}

/// A SIGKILL (see [`EventKind::KernelSigkill`]; the name is kept from when only the kernel's
/// own were reported). The header's task (`current`) is the sender for a user kill; for a
/// kernel one it is the task whose path sent it (the OOM-invoking allocator, a dying
/// namespace init).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSigkill {
    pub target_pid: u32,
    /// 0 when the attach type cannot see the target task (classic tracepoint).
    pub target_tgid: u32,
    pub target_comm: [u8; TASK_COMM_LEN],
    /// Leader start time of the target; 0 when unknown.
    pub target_start_ns: u64,
    /// Nonzero if sent to the whole thread group.
    pub group: i32,
    /// `TRACE_SIGNAL_*` result: 0 delivered, 1 ignored, 2 already pending, 3 overflow, 4 lose info.
    pub result: i32,
    /// The target's `mm_struct` address (an identity); 0 when unknown (classic tracepoint, or
    /// a leader that has already dropped its mm).
    pub target_mm: u64,
    /// [`sender_state`] bits about `current`, the task that sent it; 0 when unknown (records of
    /// the older 48- and 40-byte layouts in dumps).
    pub sender_flags: u32,
    pub _pad: u32,
    /// The siginfo code as the classic tracepoint records it ([`si_code`]): ≤ 0 a user
    /// process sent it, > 0 the kernel. Valid with [`sender_state::CODE`]; older layouts
    /// (56 bytes and shorter) were all `SI_KERNEL`.
    pub si_code: i32,
    /// `current`'s uid (`bpf_get_current_uid_gid`, in the initial user namespace).
    pub sender_uid: u32,
    /// `current`'s memory cgroup id (inode of its cgroup directory); 0 if unknown.
    pub sender_memcg_id: u64,
    /// [`target_state`] bits.
    pub target_state: u32,
    pub _pad2: u32,
    /// The target's memory cgroup id; 0 if unknown (classic tracepoint).
    pub target_memcg_id: u64,
}

impl KernelSigkill {
    /// Every field zero: a base for building records (`..KernelSigkill::ZERO`).
    pub const ZERO: KernelSigkill = KernelSigkill {
        target_pid: 0,
        target_tgid: 0,
        target_comm: [0; TASK_COMM_LEN],
        target_start_ns: 0,
        group: 0,
        result: 0,
        target_mm: 0,
        sender_flags: 0,
        _pad: 0,
        si_code: 0,
        sender_uid: 0,
        sender_memcg_id: 0,
        target_state: 0,
        _pad2: 0,
        target_memcg_id: 0,
    };
}

/// The four `oom:*_reaping` / `wake_reaper` tracepoints: all carry just the victim's pid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reaper {
    pub pid: u32,
    pub _pad: u32,
}

/// How [`TaskExit::group_dead`] was obtained.
pub mod group_dead_source {
    /// Not known.
    pub const UNKNOWN: u32 = 0;
    /// The tracepoint's own `group_dead` argument (Linux ≥ 6.16).
    pub const TRACEPOINT: u32 = 1;
    /// `task->signal->live == 0` read at the tracepoint (older kernels).
    pub const SIGNAL_LIVE: u32 = 2;
}

/// A thread of a tracked process exited. `current` in the header is the exiting thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskExit {
    /// 1 if this was the last live thread of its process.
    pub group_dead: u32,
    /// A [`group_dead_source`] value.
    pub group_dead_source: u32,
    /// Leader start time (ns since boot); 0 when unknown.
    pub start_ns: u64,
}

/// A tracked process leader was freed (its zombie reaped by the parent).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskFree {
    pub pid: u32,
    pub _pad: u32,
    /// Start time (ns since boot) when the attach type can read the task; 0 otherwise.
    pub start_ns: u64,
}

/// A tracked process notified another of its exit (see [`EventKind::ParentNotified`]). The
/// header's task is the thread that sent it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParentNotified {
    /// The process (tgid) the sending thread belongs to.
    pub pid: u32,
    /// The process notified (the tgid of the signal's target; its thread id on the classic
    /// tracepoint, which names the target by pid only).
    pub parent: u32,
    /// Leader start time (ns since boot) of `pid`; 0 when unknown.
    pub start_ns: u64,
    /// The signal (the exit signal: SIGCHLD as a rule).
    pub sig: i32,
    /// `CLD_EXITED` (1), `CLD_KILLED` (2) or `CLD_DUMPED` (3).
    pub si_code: i32,
}

/// [`Header::cpu`] of the events userspace observes itself ([`EventKind::GroupExited`],
/// [`EventKind::PreExisting`]): they ran on no CPU's ring.
pub const USERSPACE_CPU: u32 = u32::MAX;

/// How [`GroupExited`] was observed.
pub mod exit_seen {
    /// The process's pidfd polled readable: its thread group has exited.
    pub const PIDFD: u32 = 1;
    /// `pidfd_open` found no such process: it had exited and been reaped already. Also a
    /// process whose pidfd fired but which was reaped before it could be told from a later
    /// process with its pid: dead, not seen dying.
    pub const GONE: u32 = 2;
    /// The pid names a process with another start time: the victim is gone, the pid reused.
    pub const PID_REUSED: u32 = 3;
    /// The kernel notified the process's parent of its exit ([`super::EventKind::ParentNotified`],
    /// naming it by pid and start time) after its threads' exits, and its pidfd polled readable
    /// or it was found reaped: dead at the time of that notification.
    pub const PARENT_NOTIFIED: u32 = 4;
}

/// Every thread of the process has finished exiting (see [`EventKind::GroupExited`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupExited {
    pub pid: u32,
    /// An [`exit_seen`] value.
    pub how: u32,
    /// Leader start time (ns since boot) the observation was checked against; 0 if unknown.
    pub start_ns: u64,
    /// The thread id the kernel named the process by, when that was not its pid (classic
    /// tracepoints name the marked thread); 0 otherwise.
    pub tid: u32,
    pub _pad: u32,
}

/// Bits of [`PreExisting::flags`].
pub mod pre_existing {
    /// The leader is a zombie while other threads live on.
    pub const ZOMBIE_LEADER: u32 = 1 << 0;
    /// At least one thread is in uninterruptible sleep (D, or I: `TASK_IDLE`, where the
    /// threads of a process being core-dumped wait on recent kernels).
    pub const THREAD_IN_D: u32 = 1 << 1;
    /// Reparented to PID 1 (its parent is init, not the process that started it).
    pub const PARENT_INIT: u32 = 1 << 2;
    /// At least one thread is stopped by a tracer (t).
    pub const TRACED: u32 = 1 << 3;
}

/// A process found at start with SIGKILL pending and not finished exiting.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreExisting {
    pub pid: u32,
    pub ppid: u32,
    pub comm: [u8; TASK_COMM_LEN],
    /// Leader start time (ns since boot, from /proc at clock-tick precision).
    pub start_ns: u64,
    /// The memcg of a live thread (inode of its cgroup directory); 0 if unknown.
    pub memcg_id: u64,
    /// Threads listed in /proc.
    pub threads: u32,
    /// [`pre_existing`] bits.
    pub flags: u32,
}

/// Bits of [`MemcgState::fields`].
pub mod memcg_state {
    /// cgroup v1 files (`memory.usage_in_bytes`, `memory.failcnt`, ...).
    pub const V1: u32 = 1 << 0;
    /// cgroup v2 files (`memory.current`, `memory.events`, ...).
    pub const V2: u32 = 1 << 1;
    /// The whole machine (`/proc/meminfo`): a global OOM. `memcg_id` is 0.
    pub const MACHINE: u32 = 1 << 2;
    /// `usage_bytes` and `limit_bytes` were read.
    pub const USAGE: u32 = 1 << 3;
    /// `failcnt` was read.
    pub const FAILCNT: u32 = 1 << 4;
    /// `swap_bytes` and `swap_limit_bytes` were read.
    pub const SWAP: u32 = 1 << 5;
    /// `anon_bytes`, `file_bytes`, `shmem_bytes`, `kernel_bytes` were read.
    pub const STAT: u32 = 1 << 6;
    /// `oom_kills` was read.
    pub const OOM_KILLS: u32 = 1 << 7;
    /// `peak_bytes` was read.
    pub const PEAK: u32 = 1 << 8;
}

/// A memcg (or the machine) at a kill: see [`EventKind::MemcgState`]. Sizes in bytes; a
/// limit of `u64::MAX` is "max" (none). Read by userspace as the kill event arrives: the
/// oom_reaper or the victim's exit may have freed its memory by then, so `usage_bytes` can be
/// low already; `peak_bytes`, `failcnt` and `oom_kills` cannot go back.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemcgState {
    /// The memcg's cgroup id (inode of its directory); 0 for the machine.
    pub memcg_id: u64,
    /// [`memcg_state`] bits: which version's files and which fields were read.
    pub fields: u32,
    pub _pad: u32,
    /// v2 `memory.current`, v1 `memory.usage_in_bytes`; machine: MemTotal - MemAvailable.
    pub usage_bytes: u64,
    /// v2 `memory.max`, v1 `memory.limit_in_bytes`; machine: MemTotal.
    pub limit_bytes: u64,
    /// Times a charge hit the limit: v2 `memory.events` `max`; v1 `memory.failcnt` plus
    /// `memory.memsw.failcnt` (a charge that fails on memory+swap does not try memory).
    pub failcnt: u64,
    /// v2 `memory.swap.current`, v1 `memory.memsw.usage_in_bytes` - usage; machine: swap used.
    pub swap_bytes: u64,
    /// v2 `memory.swap.max`, v1 `memory.memsw.limit_in_bytes`; machine: SwapTotal.
    pub swap_limit_bytes: u64,
    /// v2 `memory.events` `oom_kill`, v1 `memory.oom_control` `oom_kill`.
    pub oom_kills: u64,
    /// `memory.stat` `anon` (v1 `total_rss`); machine: AnonPages.
    pub anon_bytes: u64,
    /// `memory.stat` `file` (v1 `total_cache`); machine: Cached.
    pub file_bytes: u64,
    /// `memory.stat` `shmem` (v1 `total_shmem`); machine: Shmem.
    pub shmem_bytes: u64,
    /// `memory.stat` `kernel` (v2 ≥ 5.18), else `slab` + `kernel_stack` + `pagetables`
    /// (v1: `memory.kmem.usage_in_bytes`); machine: Slab + KernelStack + PageTables.
    pub kernel_bytes: u64,
    /// The highest usage since the memcg was created (or the peak was reset): v1
    /// `memory.max_usage_in_bytes`, v2 `memory.peak` (Linux ≥ 5.19).
    pub peak_bytes: u64,
}

/// Offsets and switches the eBPF programs need, found by userspace at load time (BTF and
/// tracefs format files) and written into the `CONFIG` global before load. Every offset is in
/// bytes; [`NO_OFFSET`] means "not on this kernel" and the program leaves that field out.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    // struct task_struct
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_start_boottime: u32,
    pub task_group_leader: u32,
    pub task_cgroups: u32,
    pub task_signal: u32,
    pub task_mm: u32,
    /// `task_struct.flags` (`PF_*`).
    pub task_flags: u32,
    // struct css_set / cgroup_subsys_state / cgroup / kernfs_node
    pub css_set_subsys: u32,
    /// Index of the memory controller in `css_set.subsys[]` (`memory_cgrp_id`).
    pub memory_cgrp_id: u32,
    pub css_cgroup: u32,
    pub cgroup_kn: u32,
    pub kn_id: u32,
    /// Offset of `css` inside `struct mem_cgroup`.
    pub memcg_css: u32,
    // struct signal_struct
    pub signal_live: u32,
    pub signal_oom_score_adj: u32,
    // struct mm_struct
    pub mm_total_vm: u32,
    /// `rss_stat` counter `i` is an `s64`/`long` at `mm_rss_base + i * mm_rss_stride`.
    pub mm_rss_base: u32,
    pub mm_rss_stride: u32,
    pub mm_pgtables_bytes: u32,
    /// log2(page size) - 10: shift to turn pages into kB.
    pub page_kb_shift: u32,
    // struct oom_control
    pub oc_memcg: u32,
    pub oc_gfp_mask: u32,
    pub oc_order: u32,
    pub oc_totalpages: u32,
    pub oc_chosen: u32,
    pub oc_chosen_points: u32,
    pub oc_constraint: u32,
    // oom:mark_victim record
    pub tp_victim_pid: u32,
    pub tp_victim_comm: u32,
    pub tp_victim_total_vm: u32,
    pub tp_victim_anon_rss: u32,
    pub tp_victim_file_rss: u32,
    pub tp_victim_shmem_rss: u32,
    pub tp_victim_uid: u32,
    pub tp_victim_pgtables: u32,
    pub tp_victim_oom_score_adj: u32,
    // sched:sched_process_exit / sched_process_free records
    pub tp_exit_group_dead: u32,
    pub tp_free_pid: u32,
    // signal:signal_generate record
    pub tp_signal_sig: u32,
    pub tp_signal_code: u32,
    pub tp_signal_comm: u32,
    pub tp_signal_pid: u32,
    pub tp_signal_group: u32,
    pub tp_signal_result: u32,
    // oom:{wake_reaper,*_task_reaping} record
    pub tp_reaper_pid: u32,
    // struct cgroup / cgroup_root (tp_btf cgroup_mkdir)
    pub cgroup_root: u32,
    pub cgroup_level: u32,
    pub root_hierarchy_id: u32,
    // cgroup:cgroup_mkdir record (`root`, `level`, `id` (u64), `path` (__data_loc))
    pub tp_cgroup_root: u32,
    pub tp_cgroup_level: u32,
    pub tp_cgroup_id: u32,
    pub tp_cgroup_path: u32,
    /// 1 if the tp_btf `sched_process_exit` has a `group_dead` argument (Linux ≥ 6.16).
    pub exit_arg_group_dead: u32,
    /// 1 to report every exit and free, not only those of tracked processes (benchmarks, debugging).
    pub trace_all_exits: u32,
    // The fd table walked at a SIGKILL (`KILL_SOCKETS`): task_struct.files, files_struct.fdt,
    // fdtable.{max_fds,fd,open_fds}, file.f_inode, inode.{i_mode,i_ino,i_sb}, super_block.s_magic.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub fdt_open_fds: u32,
    pub file_inode: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_magic: u32,
}

impl Config {
    /// Every offset unknown, every switch off: what the object holds until userspace fills it.
    pub const UNSET: Config = Config {
        task_pid: NO_OFFSET,
        task_tgid: NO_OFFSET,
        task_comm: NO_OFFSET,
        task_start_boottime: NO_OFFSET,
        task_group_leader: NO_OFFSET,
        task_cgroups: NO_OFFSET,
        task_signal: NO_OFFSET,
        task_mm: NO_OFFSET,
        task_flags: NO_OFFSET,
        css_set_subsys: NO_OFFSET,
        memory_cgrp_id: NO_OFFSET,
        css_cgroup: NO_OFFSET,
        cgroup_kn: NO_OFFSET,
        kn_id: NO_OFFSET,
        memcg_css: NO_OFFSET,
        signal_live: NO_OFFSET,
        signal_oom_score_adj: NO_OFFSET,
        mm_total_vm: NO_OFFSET,
        mm_rss_base: NO_OFFSET,
        mm_rss_stride: NO_OFFSET,
        mm_pgtables_bytes: NO_OFFSET,
        page_kb_shift: 2,
        oc_memcg: NO_OFFSET,
        oc_gfp_mask: NO_OFFSET,
        oc_order: NO_OFFSET,
        oc_totalpages: NO_OFFSET,
        oc_chosen: NO_OFFSET,
        oc_chosen_points: NO_OFFSET,
        oc_constraint: NO_OFFSET,
        tp_victim_pid: NO_OFFSET,
        tp_victim_comm: NO_OFFSET,
        tp_victim_total_vm: NO_OFFSET,
        tp_victim_anon_rss: NO_OFFSET,
        tp_victim_file_rss: NO_OFFSET,
        tp_victim_shmem_rss: NO_OFFSET,
        tp_victim_uid: NO_OFFSET,
        tp_victim_pgtables: NO_OFFSET,
        tp_victim_oom_score_adj: NO_OFFSET,
        tp_exit_group_dead: NO_OFFSET,
        tp_free_pid: NO_OFFSET,
        tp_signal_sig: NO_OFFSET,
        tp_signal_code: NO_OFFSET,
        tp_signal_comm: NO_OFFSET,
        tp_signal_pid: NO_OFFSET,
        tp_signal_group: NO_OFFSET,
        tp_signal_result: NO_OFFSET,
        tp_reaper_pid: NO_OFFSET,
        cgroup_root: NO_OFFSET,
        cgroup_level: NO_OFFSET,
        root_hierarchy_id: NO_OFFSET,
        tp_cgroup_root: NO_OFFSET,
        tp_cgroup_level: NO_OFFSET,
        tp_cgroup_id: NO_OFFSET,
        tp_cgroup_path: NO_OFFSET,
        exit_arg_group_dead: 0,
        trace_all_exits: 0,
        task_files: NO_OFFSET,
        files_fdt: NO_OFFSET,
        fdt_max_fds: NO_OFFSET,
        fdt_fd: NO_OFFSET,
        fdt_open_fds: NO_OFFSET,
        file_inode: NO_OFFSET,
        inode_mode: NO_OFFSET,
        inode_ino: NO_OFFSET,
        inode_sb: NO_OFFSET,
        sb_magic: NO_OFFSET,
    };

    /// Whether every offset of the fd-table walk at a SIGKILL is known.
    pub const fn walks_fd_tables(&self) -> bool {
        self.task_files != NO_OFFSET
            && self.files_fdt != NO_OFFSET
            && self.fdt_max_fds != NO_OFFSET
            && self.fdt_fd != NO_OFFSET
            && self.fdt_open_fds != NO_OFFSET
            && self.file_inode != NO_OFFSET
            && self.inode_mode != NO_OFFSET
            && self.inode_ino != NO_OFFSET
            && self.inode_sb != NO_OFFSET
            && self.sb_magic != NO_OFFSET
    }
}

/// Names shared by both sides: maps, the config global, and one program per (hook, attach type).
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const LOST: &str = "LOST";
    pub const TRACKED: &str = "TRACKED";
    pub const TRACKED_COUNT: &str = "TRACKED_COUNT";
    pub const USER_UNTRACKED: &str = "USER_UNTRACKED";
    pub const KILL_SOCKETS: &str = "KILL_SOCKETS";
    pub const CONFIG: &str = "CONFIG";
}

/// Capacity of the `TRACKED` map (processes whose exit and free are reported).
pub const TRACKED_MAX: u32 = 16384;
/// Ring buffer size in bytes (a power of two multiple of the page size).
pub const RING_BYTES: u32 = 1 << 20;

/// Capacity of the `KILL_SOCKETS` map (an LRU: entries userspace never takes are evicted).
pub const KILL_SOCKETS_MAX: u32 = 1024;
/// Socket inodes one [`KillSockets`] holds at most.
pub const KILL_SOCKET_INODES: usize = 32;
/// Slots of a fd table read at a SIGKILL (fds 0..63; slots past the table's `max_fds` count
/// as empty), in chunks of [`KILL_FD_CHUNK`] pointers.
pub const KILL_FDS_READ_MAX: u32 = 64;
pub const KILL_FD_CHUNK: u32 = 8;
/// Bits of a fd table's `open_fds` read to tell that no fd past [`KILL_FDS_READ_MAX`] is open.
pub const KILL_OPEN_FDS_BITS: u32 = 512;

/// Bits of [`KillSockets::flags`].
pub mod kill_sockets {
    /// `task->files` was NULL: the task had passed `exit_files` (nothing to read).
    pub const NO_TABLE: u32 = 1 << 0;
    /// A read of the table failed part-way: what is listed may be incomplete.
    pub const READ_FAILED: u32 = 1 << 1;
}

/// The sockets in a process's fd table when a SIGKILL was generated for it, read by the
/// `signal_generate` program (the `KILL_SOCKETS` map, by tgid; userspace takes the entry when
/// the kill's event arrives). A fact of the fd table at that instant, nothing more: userspace
/// names the sockets through /proc/net later, while the victim's fd table may be gone.
///
/// Read then because that is the last moment the table is surely there (a victim inside
/// `exit_files` has none), and because at an OOM kill the killer holds the victim's
/// `task_lock`, which /proc would wait for while the kernel prints to its console.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KillSockets {
    /// Start time of the process's leader (with the tgid key it names the process).
    pub start_ns: u64,
    /// `fdtable.max_fds`: the table's size.
    pub max_fds: u32,
    /// Slots known (from fd 0): `max_fds` when every open fd was below
    /// [`KILL_FDS_READ_MAX`] (the table's `open_fds` bitmap, read up to
    /// [`KILL_OPEN_FDS_BITS`], says so), else the slots read.
    pub fds_read: u32,
    /// Sockets found in the slots read; those past [`KILL_SOCKET_INODES`] are not listed.
    pub count: u32,
    /// [`kill_sockets`] bits.
    pub flags: u32,
    /// Inode numbers (sockfs) of the first `min(count, KILL_SOCKET_INODES)` sockets.
    pub inodes: [u64; KILL_SOCKET_INODES],
}

impl KillSockets {
    /// Whether every socket of the table is listed: all of it read and none left out.
    pub const fn complete(&self) -> bool {
        self.flags & kill_sockets::READ_FAILED == 0
            && (self.flags & kill_sockets::NO_TABLE != 0 || self.fds_read >= self.max_fds)
            && self.count as usize <= KILL_SOCKET_INODES
    }
}

// No implicit padding: the sizes are the sums of the fields.
/// Bits of [`MemcgOom::flags`].
pub mod memcg_oom {
    /// `under_oom` (v1 `memory.oom_control`) and `oom_kill_disable` were read.
    pub const STATE_KNOWN: u32 = 1 << 0;
    /// v1 `under_oom 1`: an OOM of this memcg (or an ancestor) is being handled or waited on.
    pub const UNDER_OOM: u32 = 1 << 1;
    /// v1 `oom_kill_disable 1`: the OOM killer does not run for this memcg; tasks that fault
    /// at its limit sleep until memory is freed.
    pub const KILL_DISABLED: u32 = 1 << 2;
    /// The memcg was removed (its directory is gone).
    pub const REMOVED: u32 = 1 << 3;
    /// Counted from a cgroup v1 eventfd (`cgroup.event_control`), else v2 `memory.events.local`.
    pub const V1: u32 = 1 << 4;
}

/// A memcg's OOM counters changed (see [`EventKind::MemcgOom`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemcgOom {
    /// The memcg (inode of its cgroup directory).
    pub memcg_id: u64,
    /// OOM invocations with this memcg as the OOM domain since its previous notice: v2
    /// `memory.events.local` `oom`; v1 eventfd signals net of its parent's (an OOM notifies
    /// the domain and every memcg below it).
    pub invocations: u32,
    /// OOM kills counted since its previous notice (v2 `memory.events.local` `oom_kill`, v1
    /// `memory.oom_control` `oom_kill`).
    pub kills: u32,
    /// [`memcg_oom`] bits.
    pub flags: u32,
    pub _pad: u32,
}

/// Bytes of a cgroup's path kept per [`CgroupMkdir`] (the kernel's own buffer is 1024; kubelet's
/// longest, systemd-driver container scopes, are about 170).
pub const CGROUP_PATH_LEN: usize = 256;

/// Bits of [`CgroupMkdir::flags`].
pub mod cgroup_mkdir {
    /// The path was longer than [`super::CGROUP_PATH_LEN`] and is cut.
    pub const TRUNCATED: u32 = 1 << 0;
    /// The hierarchy (`root`) was read; without it the record says nothing of which
    /// hierarchy the cgroup is in.
    pub const HIERARCHY_KNOWN: u32 = 1 << 1;
}

/// A cgroup was created (see [`EventKind::CgroupMkdir`]) or removed ([`EventKind::CgroupRmdir`]).
/// The header's task is the one that made or removed it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupMkdir {
    /// The cgroup's id: its kernfs node id (`cgroup_id()`), the id events carry for memcgs.
    pub id: u64,
    /// The hierarchy (`cgroup_root.hierarchy_id`): 0 is cgroup v2's; v1 has one per mount,
    /// as `/proc/cgroups` lists them. Cgroup ids are only unique within one hierarchy.
    pub hierarchy: u32,
    /// Depth below the hierarchy's root (1 for a child of the root).
    pub level: u32,
    /// [`cgroup_mkdir`] bits.
    pub flags: u32,
    /// Bytes of `path` in use (no NUL).
    pub path_len: u32,
    /// The path from the hierarchy's root (`/a/b`), NUL-padded.
    pub path: [u8; CGROUP_PATH_LEN],
}

const _: () = {
    assert!(core::mem::size_of::<CgroupMkdir>() == 24 + CGROUP_PATH_LEN);
    assert!(core::mem::size_of::<ParentNotified>() == 24);
    assert!(core::mem::size_of::<MemcgOom>() == 24);
    assert!(core::mem::size_of::<Header>() == 40);
    assert!(core::mem::size_of::<OomInvoke>() == 16);
    assert!(core::mem::size_of::<OomInvokeDone>() == 8);
    assert!(core::mem::size_of::<OomKill>() == 152);
    assert!(core::mem::size_of::<MarkVictim>() == 104);
    assert!(core::mem::size_of::<KernelSigkill>() == 88);
    assert!(core::mem::size_of::<AllocStack>() == 8 + 8 * STACK_DEPTH);
    assert!(core::mem::size_of::<OomCandidate>() == 104);
    assert!(core::mem::size_of::<Reaper>() == 8);
    assert!(core::mem::size_of::<TaskExit>() == 16);
    assert!(core::mem::size_of::<TaskFree>() == 16);
    assert!(core::mem::size_of::<GroupExited>() == 24);
    assert!(core::mem::size_of::<PreExisting>() == 48);
    assert!(core::mem::size_of::<MemcgState>() == 104);
    assert!(core::mem::size_of::<Config>() == 66 * 4);
    assert!(core::mem::size_of::<KillSockets>() == 24 + 8 * KILL_SOCKET_INODES);
};

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all of these are repr(C), Copy, without implicit padding, valid for any bytes.
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for Header {}
    unsafe impl aya::Pod for KillSockets {}
}
