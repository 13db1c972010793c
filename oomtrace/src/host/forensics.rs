//! What a stuck victim looks like in /proc at flag time: its state, parent, threads (state,
//! wchan, kernel stack), pending SIGKILL, memcg usage, and the sockets it still holds.
//!
//! Sockets are found through **every thread's** fd table: a zombie leader's `fd/` is empty
//! (that is why `ss -p` shows no owner for the port), while a thread stuck in the kernel still
//! holds the process's files. A thread stuck *inside exit* (in `exit_files`, closing a file
//! whose flush never returns) has no fd table left at all while its sockets still exist, so
//! the live loop records the victim's socket inodes when it is killed ([`socket_inodes`]) and
//! those still open are named too, each with how it was attributed. Everything is read under a root directory so tests can use a
//! fixture tree; nothing here panics on odd input: what cannot be read is left out with a note.

use std::{
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::text::printable;

/// One thread of the victim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct ThreadInfo {
    /// Kernel stack, innermost first (needs root).
    pub(crate) stack: Vec<String>,
    /// `R`, `S`, `D`, `Z`, `t`, …
    pub(crate) state: String,
    pub(crate) tid: u32,
    /// The thread's own `TracerPid` (a thread id of the tracer), if it is traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tracer: Option<u32>,
    pub(crate) wchan: Option<String>,
}

/// A socket the victim holds, described from /proc/net.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct SocketInfo {
    /// How it was attributed to the victim, in words.
    pub(crate) attribution: String,
    /// e.g. `LISTEN 127.0.0.1:47123`.
    pub(crate) description: String,
    /// Threads whose fd table holds it.
    pub(crate) held_by: Vec<u32>,
    pub(crate) inode: u64,
    /// `tcp`, `tcp6`, `udp`, `udp6`, `unix`, or `unknown`.
    pub(crate) proto: String,
}

/// The victim's memory cgroup as /proc and the cgroup fs show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemcgInfo {
    pub(crate) limit_bytes: Option<u64>,
    /// Times it hit OOM (v2 `memory.events` `oom`; v1 does not count them).
    pub(crate) oom_events: Option<u64>,
    /// OOM kills in it so far (v1 `memory.oom_control`, v2 `memory.events` `oom_kill`).
    pub(crate) oom_kills: Option<u64>,
    pub path: String,
    /// v1 `memory.oom_control` `under_oom` (set only while the OOM path runs or waits).
    pub(crate) under_oom: Option<bool>,
    pub(crate) usage_bytes: Option<u64>,
}

/// Everything gathered about one process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Forensics {
    pub(crate) exists: bool,
    pub memcg: Option<MemcgInfo>,
    /// What could not be read, and why.
    pub(crate) notes: Vec<String>,
    pub(crate) parent_comm: Option<String>,
    pub(crate) ppid: Option<u32>,
    pub(crate) sigkill_pending: Option<bool>,
    pub(crate) sockets: Vec<SocketInfo>,
    pub state: Option<String>,
    /// The tracers (`TracerPid`, thread ids) of its threads in a ptrace stop (state `t`), each
    /// once: a tracee in a ptrace stop goes on only when its tracer lets it. Read from every
    /// thread's status up to [`MAX_THREADS`], kept even for threads not detailed below.
    pub(crate) stopped_tracers: Vec<u32>,
    pub(crate) tgid: u32,
    /// Threads in detail: at most [`MAX_DETAILED_THREADS`] (those in D, t, or Z first).
    pub(crate) threads: Vec<ThreadInfo>,
    pub(crate) threads_count: Option<u32>,
    /// The names (`comm`) of its threads' tracers, by `TracerPid`, as /proc showed them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) tracer_comms: BTreeMap<u32, String>,
    /// The tracer (`TracerPid`, a thread id) holding its threads in a ptrace stop, when they all
    /// name the same one (see `stopped_tracers`). Not any thread's tracer: a leader traced by
    /// its parent after `PTRACE_TRACEME` holds nothing while it runs.
    pub(crate) tracer_pid: Option<u32>,
    /// Its real uid (`Uid:` first field): whose process it is, for the remedies' ownership
    /// checks.
    pub uid: Option<u32>,
    /// When no socket could be tied to it (its fd table detached inside exit, nothing recorded
    /// at its kill): the listeners of its network namespace that no process's fd table holds.
    /// Never counted as its own — they may be anyone's (a socket passed on and not held) —
    /// but a listener the victim is closing inside exit is among them. At most
    /// [`MAX_SOCKETS`].
    pub(crate) unheld_listeners: Vec<SocketInfo>,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A `Key:` field of a /proc status file, trimmed.
pub(crate) fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

/// SIGKILL (signal 9) is bit 8 of the pending masks.
fn has_sigkill(mask_hex: &str) -> bool {
    u64::from_str_radix(mask_hex.trim(), 16).is_ok_and(|m| m & (1 << 8) != 0)
}

/// Whether a /proc status file shows SIGKILL pending (shared or the thread's own); None if
/// it has neither mask.
pub(crate) fn sigkill_pending(status: &str) -> Option<bool> {
    match (
        status_field(status, "ShdPnd"),
        status_field(status, "SigPnd"),
    ) {
        (None, None) => None,
        (a, b) => Some(a.is_some_and(has_sigkill) || b.is_some_and(has_sigkill)),
    }
}

/// The process (tgid) thread `tid` belongs to, from `/proc/TID/status`.
pub(crate) fn tgid_of(proc_root: &Path, tid: u32) -> Option<u32> {
    let status = read(&proc_root.join(tid.to_string()).join("status"))?;
    status_field(&status, "Tgid")?.parse().ok()
}

/// Threads whose status is read at most per finding (state, tracer).
pub(crate) const MAX_THREADS: usize = 4096;
/// Threads detailed (wchan, kernel stack) and shown at most per finding.
pub(crate) const MAX_DETAILED_THREADS: usize = 64;
/// fd-table entries read at most per finding, over all threads: a victim's owner decides how
/// many files it holds, and every entry is a readlink in oomtrace's event loop.
pub(crate) const MAX_FD_ENTRIES: usize = 8192;
/// Sockets named at most per finding.
pub(crate) const MAX_SOCKETS: usize = 64;

/// Socket inodes in the fd table of the thread directory `tdir`, reading at most `budget`
/// entries (decremented); the bool says whether the table was cut.
fn thread_sockets(tdir: &Path, budget: &mut usize) -> (Vec<u64>, bool) {
    let Ok(fds) = std::fs::read_dir(tdir.join("fd")) else {
        return (Vec::new(), false);
    };
    let mut out = Vec::new();
    for fd in fds.flatten() {
        if *budget == 0 {
            return (out, true);
        }
        *budget -= 1;
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        {
            out.push(inode);
        }
    }
    (out, false)
}

/// The thread ids of a process (at most [`MAX_THREADS`]), and whether there were more.
fn tids_of(dir: &Path) -> (Vec<u32>, bool) {
    let mut more = false;
    let mut tids: Vec<u32> = Vec::new();
    if let Ok(d) = std::fs::read_dir(dir.join("task")) {
        for e in d.flatten() {
            if tids.len() >= MAX_THREADS {
                more = true;
                break;
            }
            if let Some(t) = e.file_name().to_str().and_then(|n| n.parse().ok()) {
                tids.push(t);
            }
        }
    }
    tids.sort_unstable();
    (tids, more)
}

/// The socket inodes a process holds now, through its threads' fd tables (at most
/// [`MAX_FD_ENTRIES`] entries read): recorded at the kill, before a thread inside exit
/// detaches its table. Threads of one process share one table almost always, so the leader's
/// is read first and another thread's only while the budget lasts.
pub(crate) fn socket_inodes(proc_root: &Path, tgid: u32) -> Vec<u64> {
    let dir = proc_root.join(tgid.to_string());
    let mut budget = MAX_FD_ENTRIES;
    let mut out: Vec<u64> = Vec::new();
    for tid in tids_of(&dir).0 {
        if budget == 0 {
            break;
        }
        out.extend(thread_sockets(&dir.join("task").join(tid.to_string()), &mut budget).0);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Everything about `tgid`; `recorded` are socket inodes it held when it was killed.
///
/// Read under `proc_root` (normally `/proc`), with the memory cgroup controller mounted at
/// `memcg_root` (v1 memory hierarchy or the v2 root), if any. Bounded: at most
/// [`MAX_THREADS`] statuses, [`MAX_DETAILED_THREADS`] stacks, [`MAX_FD_ENTRIES`] fd entries
/// and [`MAX_SOCKETS`] sockets, each cut said in a note.
pub fn collect(
    proc_root: &Path,
    tgid: u32,
    memcg_root: Option<&Path>,
    recorded: &[u64],
) -> Forensics {
    let dir = proc_root.join(tgid.to_string());
    let Some(status) = read(&dir.join("status")) else {
        return gone(tgid, &dir);
    };
    let mut f = from_status(proc_root, tgid, &status);
    let (tids, more) = tids_of(&dir);
    if tids.is_empty() {
        f.notes.push("no threads listed under task/".into());
    }
    if more {
        f.notes.push(format!(
            "more than {MAX_THREADS} threads: only the first {MAX_THREADS} were read"
        ));
    }
    let threads = read_threads(&dir, &tids);
    f.notes.extend(threads.notes);
    f.threads = threads.infos;
    f.stopped_tracers = threads.stopped_tracers;
    if let [t] = f.stopped_tracers.as_slice() {
        f.tracer_pid = Some(*t);
    }
    for t in f.threads.iter().filter_map(|t| t.tracer) {
        if let Some(c) = read(&proc_root.join(t.to_string()).join("comm")) {
            f.tracer_comms.insert(t, c.trim_end().to_string());
        }
    }
    f.sockets = held_sockets(
        proc_root,
        threads.socket_holders,
        threads.net_dir.as_deref(),
        recorded,
    );
    if f.sockets.len() > MAX_SOCKETS {
        f.notes.push(format!(
            "{} sockets held: only the first {MAX_SOCKETS} are named",
            f.sockets.len()
        ));
        f.sockets.truncate(MAX_SOCKETS);
    }
    if f.sockets.is_empty()
        && recorded.is_empty()
        && f.sigkill_pending == Some(true)
        && f.threads.iter().any(is_live)
    {
        // Killed before oomtrace came, or already inside exit_files: its table may be
        // detached. Listeners of its namespace that nobody holds are listed apart, not named
        // as its own: they may be anyone's (the host's sshd in a shared namespace).
        let net = threads
            .net_dir
            .clone()
            .unwrap_or_else(|| proc_root.join("net"));
        f.unheld_listeners = unheld_listeners(proc_root, &net);
        f.notes.push(
            "no socket found in its fd tables and none recorded at its kill; if a thread is \
             inside exit its table is detached, and the sockets it is closing cannot be told \
             from others' (not guessed: listeners no process holds are listed apart)"
                .into(),
        );
    }
    f.memcg = victim_memcg(&dir, &f.threads, memcg_root, &tids);
    f
}

/// A process that no longer exists, with a note saying so.
fn gone(tgid: u32, dir: &Path) -> Forensics {
    Forensics {
        tgid,
        notes: vec![format!(
            "{} is gone: the process no longer exists",
            dir.display()
        )],
        ..Forensics::default()
    }
}

/// The real uid in a status text (`Uid:` real, effective, saved, fs).
pub(crate) fn real_uid(status: &str) -> Option<u32> {
    status_field(status, "Uid")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The process as its `status` text shows it: state, parent (with its comm), threads, SIGKILL.
fn from_status(proc_root: &Path, tgid: u32, status: &str) -> Forensics {
    let ppid: Option<u32> = status_field(status, "PPid").and_then(|p| p.parse().ok());
    Forensics {
        tgid,
        exists: true,
        state: status_field(status, "State").map(str::to_string),
        ppid,
        parent_comm: ppid.and_then(|ppid| {
            read(&proc_root.join(ppid.to_string()).join("comm")).map(|c| c.trim().to_string())
        }),
        threads_count: status_field(status, "Threads").and_then(|p| p.parse().ok()),
        sigkill_pending: sigkill_pending(status),
        uid: real_uid(status),
        ..Forensics::default()
    }
}

/// What a process's threads show, read one thread at a time.
#[derive(Default)]
struct Threads {
    infos: Vec<ThreadInfo>,
    /// The tracers of threads in a ptrace stop, each once.
    stopped_tracers: Vec<u32>,
    /// Socket inode → the threads whose fd table holds it.
    socket_holders: BTreeMap<u64, Vec<u32>>,
    /// A live thread's /proc/net (a zombie leader has none).
    net_dir: Option<PathBuf>,
    notes: Vec<String>,
}

/// Whether a thread in this state is worth detailing first: blocked (D), stopped (t/T), a
/// zombie leader (Z).
fn interesting(state: &str) -> bool {
    // I (idle, uninterruptible without load): a thread in the coredump wait on recent kernels.
    matches!(state.chars().next(), Some('D' | 'I' | 't' | 'T' | 'Z'))
}

/// The threads `tids` of the process in `dir`: every one's state and tracer; the first
/// [`MAX_DETAILED_THREADS`] (interesting ones first) in detail; fd tables within
/// [`MAX_FD_ENTRIES`]; a live /proc/net.
fn read_threads(dir: &Path, tids: &[u32]) -> Threads {
    let mut out = Threads::default();
    let mut states: Vec<(u32, String, Option<u32>)> = Vec::with_capacity(tids.len());
    for &tid in tids {
        let status = read(&dir.join("task").join(tid.to_string()).join("status"));
        let state = status
            .as_deref()
            .and_then(|s| status_field(s, "State").map(str::to_string))
            .unwrap_or_else(|| "?".into());
        let tracer = status
            .as_deref()
            .and_then(|s| status_field(s, "TracerPid")?.parse::<u32>().ok())
            .filter(|&t| t != 0);
        if state.starts_with('t')
            && let Some(t) = tracer
            && !out.stopped_tracers.contains(&t)
        {
            out.stopped_tracers.push(t);
        }
        states.push((tid, state, tracer));
    }
    // Interesting threads first, then by tid; the sort is stable.
    states.sort_by_key(|(_, s, _)| !interesting(s));
    if states.len() > MAX_DETAILED_THREADS {
        out.notes.push(format!(
            "{} threads: only {MAX_DETAILED_THREADS} are detailed (those blocked, stopped or \
             zombie first)",
            states.len()
        ));
        states.truncate(MAX_DETAILED_THREADS);
        states.sort_by_key(|(tid, ..)| *tid);
    }
    let mut budget = MAX_FD_ENTRIES;
    let mut cut = false;
    for (tid, state, tracer) in states {
        let tdir = dir.join("task").join(tid.to_string());
        let stack = kernel_stack(&tdir);
        let wchan = wchan(&tdir, &state, &stack);
        if budget > 0 {
            let (inodes, was_cut) = thread_sockets(&tdir, &mut budget);
            cut |= was_cut;
            for inode in inodes {
                // One pass, one entry per (inode, thread): this thread's entries come together.
                let holders = out.socket_holders.entry(inode).or_default();
                if holders.last() != Some(&tid) {
                    holders.push(tid);
                }
            }
        } else {
            cut = true;
        }
        // A live thread's net namespace view (a zombie leader has none).
        if out.net_dir.is_none() && tdir.join("net/tcp").exists() {
            out.net_dir = Some(tdir.join("net"));
        }
        out.infos.push(ThreadInfo {
            tid,
            state,
            wchan,
            stack,
            tracer,
        });
    }
    if cut {
        out.notes.push(format!(
            "fd tables cut after {MAX_FD_ENTRIES} entries: sockets past them are not named"
        ));
    }
    out
}

/// A thread's kernel stack as function names, innermost first (empty if it cannot be read).
fn kernel_stack(tdir: &Path) -> Vec<String> {
    match read(&tdir.join("stack")) {
        Some(s) => s
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .map(|fnname| fnname.split('+').next().unwrap_or(fnname).to_string())
            .collect(),
        None => Vec::new(),
    }
}

/// Where a thread sleeps: its `wchan`, else the top frame of its `stack` unless it runs.
fn wchan(tdir: &Path, state: &str, stack: &[String]) -> Option<String> {
    // Before 5.16, x86 found wchan by walking frame pointers: on kernels built with the
    // ORC unwinder (Debian's 5.10) /proc/*/wchan always reads 0. The stack's top frame is
    // the same function (both skip the scheduler's own frames) for a thread that sleeps.
    read(&tdir.join("wchan"))
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty() && w != "0")
        .or_else(|| {
            (!state.starts_with('R'))
                .then(|| stack.first().cloned())
                .flatten()
        })
}

/// The sockets in the threads' fd tables now, then those `recorded` at the kill still open.
fn held_sockets(
    proc_root: &Path,
    holders: BTreeMap<u64, Vec<u32>>,
    net_dir: Option<&Path>,
    recorded: &[u64],
) -> Vec<SocketInfo> {
    let recorded_only: Vec<u64> = recorded
        .iter()
        .filter(|i| !holders.contains_key(i))
        .copied()
        .collect();
    if holders.is_empty() && recorded_only.is_empty() {
        return Vec::new();
    }
    let net = net_dir.map_or_else(|| proc_root.join("net"), Path::to_path_buf);
    let table = socket_table(&net);
    let mut sockets = in_fd_tables(holders, &table);
    sockets.extend(recorded_still_open(&recorded_only, &table));
    sockets
}

/// One socket per inode in an fd table now, with its holders, described from `table`.
fn in_fd_tables(
    holders: BTreeMap<u64, Vec<u32>>,
    table: &BTreeMap<u64, (String, String)>,
) -> Vec<SocketInfo> {
    holders
        .into_iter()
        .map(|(inode, held_by)| {
            let (proto, description) = table.get(&inode).cloned().unwrap_or_else(|| {
                (
                    "unknown".into(),
                    "not in /proc/net (another namespace?)".into(),
                )
            });
            let tids: Vec<String> = held_by.iter().map(u32::to_string).collect();
            SocketInfo {
                inode,
                proto,
                description,
                attribution: format!("in the fd table of thread {} now", tids.join(", ")),
                held_by,
            }
        })
        .collect()
}

/// One socket per inode held at the kill, in no fd table now, that `table` still lists.
fn recorded_still_open(
    recorded_only: &[u64],
    table: &BTreeMap<u64, (String, String)>,
) -> Vec<SocketInfo> {
    // Held at the kill, in no fd table now, still open: the table was detached by a
    // thread inside exit (exit_files), which closes them only when it gets out.
    recorded_only
        .iter()
        .filter_map(|&inode| {
            let (proto, description) = table.get(&inode).cloned()?;
            Some(SocketInfo {
                inode,
                proto,
                description,
                held_by: Vec::new(),
                attribution: "in its fd table when it was killed; no fd table lists it now \
                              (a thread inside exit has detached the table) and the socket \
                              is still open"
                    .into(),
            })
        })
        .collect()
}

/// Whether a thread has not exited (neither a zombie nor dead).
fn is_live(t: &ThreadInfo) -> bool {
    !t.state.starts_with('Z') && !t.state.starts_with('X')
}

/// The memcg of the process in `dir`, asked of a live thread first (a zombie leader: root).
fn victim_memcg(
    dir: &Path,
    threads: &[ThreadInfo],
    memcg_root: Option<&Path>,
    tids: &[u32],
) -> Option<MemcgInfo> {
    let live = threads
        .iter()
        .find(|t| is_live(t))
        .map(|t| dir.join("task").join(t.tid.to_string()));
    live.and_then(|t| memcg_of(&t, memcg_root, tids))
        .filter(|m| m.path != "/")
        .or_else(|| memcg_of(dir, memcg_root, tids))
}

/// The memory cgroup path in `<dir>/cgroup` (a process or thread dir) and whether it is v1.
fn memcg_line(dir: &Path) -> Option<(String, bool)> {
    let text = read(&dir.join("cgroup"))?;
    let mut v2 = None;
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path.to_string());
        }
    }
    v1.map(|p| (p, true)).or(v2.map(|p| (p, false)))
}

/// The memory cgroup path of a process or thread directory.
pub(crate) fn memcg_path(dir: &Path) -> Option<String> {
    memcg_line(dir).map(|(p, _)| p)
}

/// Memcgs searched at most by [`memcg_by_tasks`].
const MAX_MEMCG_DIRS: usize = 100_000;

/// The v1 memcg whose `tasks` file lists one of `tids`, searched under `memcg_root`.
///
/// On cgroup v1 the kernel shows `/` in `/proc/PID/cgroup` for a task that is exiting
/// (`PF_EXITING`), however long it is stuck there; the memcg's own `tasks` file still lists
/// it until it leaves its css_set at the end of exit.
pub(crate) fn memcg_by_tasks(memcg_root: &Path, tids: &[u32]) -> Option<String> {
    // The deepest match is the task's own memcg (v1 lists a task in one memcg only; a racing
    // move could list it twice).
    memcgs_under(memcg_root)
        .filter(|(_, path)| path != "/")
        .filter(|(dir, _)| {
            read(&dir.join("tasks")).is_some_and(|tasks| {
                tasks
                    .lines()
                    .filter_map(|l| l.trim().parse::<u32>().ok())
                    .any(|t| tids.contains(&t))
            })
        })
        .map(|(_, path)| path)
        .max_by_key(|path| path.matches('/').count())
}

/// Every memcg directory under the controller's mount (at most [`MAX_MEMCG_DIRS`]), with its
/// path as oomtrace names it (`/` for the root).
pub(crate) fn memcgs_under(memcg_root: &Path) -> impl Iterator<Item = (PathBuf, String)> + '_ {
    let mut stack = vec![memcg_root.to_path_buf()];
    std::iter::from_fn(move || {
        let dir = stack.pop()?;
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        let path = match dir.strip_prefix(memcg_root) {
            Ok(p) if p.as_os_str().is_empty() => "/".to_string(),
            Ok(p) => format!("/{}", p.display()),
            Err(_) => String::new(),
        };
        Some((dir, path))
    })
    .take(MAX_MEMCG_DIRS)
}

/// A `key value` line of a flat-keyed cgroup file.
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// The memory cgroup from `<dir>/cgroup`, with usage, limit and OOM counters; `tids` are the
/// process's threads, to find an exiting task's v1 memcg ([`memcg_by_tasks`]).
fn memcg_of(dir: &Path, memcg_root: Option<&Path>, tids: &[u32]) -> Option<MemcgInfo> {
    let (mut path, v1) = memcg_line(dir)?;
    if v1
        && path == "/"
        && let Some(found) = memcg_root.and_then(|r| memcg_by_tasks(r, tids))
    {
        path = found;
    }
    let cg = memcg_root.map(|r| r.join(path.trim_start_matches('/')));
    let file = |name: &str| cg.as_ref().and_then(|cg| read(&cg.join(name)));
    let num = |name: &str| file(name).and_then(|t| t.trim().parse().ok());
    let info = if v1 {
        let oc = file("memory.oom_control");
        MemcgInfo {
            usage_bytes: num("memory.usage_in_bytes"),
            limit_bytes: num("memory.limit_in_bytes"),
            oom_kills: oc.as_deref().and_then(|t| keyed(t, "oom_kill")),
            oom_events: None,
            under_oom: oc
                .as_deref()
                .and_then(|t| keyed(t, "under_oom"))
                .map(|u| u != 0),
            path,
        }
    } else {
        let ev = file("memory.events");
        MemcgInfo {
            usage_bytes: num("memory.current"),
            limit_bytes: num("memory.max"),
            oom_kills: ev.as_deref().and_then(|t| keyed(t, "oom_kill")),
            oom_events: ev.as_deref().and_then(|t| keyed(t, "oom")),
            under_oom: None,
            path,
        }
    };
    Some(info)
}

/// Processes read at most by [`unheld_listeners`] (each within [`MAX_FD_ENTRIES`]).
const MAX_PROCESSES_SCANNED: usize = 100_000;

/// LISTEN sockets of a network namespace (its /proc/net dir) that no process's fd table
/// holds, at most [`MAX_SOCKETS`]. One pass over every process's fd table (its leader's, else
/// its threads'), building one set of held inodes: linear in the fds read.
fn unheld_listeners(proc_root: &Path, net: &Path) -> Vec<SocketInfo> {
    let listeners: Vec<(u64, (String, String))> = socket_table(net)
        .into_iter()
        .filter(|(_, (_, d))| d.starts_with("LISTEN"))
        .collect();
    if listeners.is_empty() {
        return Vec::new();
    }
    let mut held = std::collections::HashSet::new();
    if let Ok(dir) = std::fs::read_dir(proc_root) {
        for e in dir.flatten().take(MAX_PROCESSES_SCANNED) {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                held.extend(socket_inodes(proc_root, pid));
            }
        }
    }
    listeners
        .into_iter()
        .filter(|(inode, _)| !held.contains(inode))
        .take(MAX_SOCKETS)
        .map(|(inode, (proto, description))| SocketInfo {
            inode,
            proto,
            description,
            held_by: Vec::new(),
            attribution: "a listener of its network namespace that no process's fd table \
                          holds: its own if it is closing it inside exit, else someone's that \
                          was passed on and not held (not attributed)"
                .into(),
        })
        .collect()
}

/// inode → (proto, description) for every socket in a net namespace's /proc/net tables.
pub(crate) fn socket_table(net: &Path) -> BTreeMap<u64, (String, String)> {
    let mut out = BTreeMap::new();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        let Some(text) = read(&net.join(proto)) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(st), Some(inode)) =
                (cols.get(1), cols.get(2), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let Ok(inode) = inode.parse::<u64>() else {
                continue;
            };
            let state = if proto.starts_with("tcp") {
                tcp_state(st)
            } else {
                "UDP"
            };
            let local = decode_addr(local).unwrap_or_else(|| (*local).to_string());
            let description = if state == "LISTEN" || state == "UDP" {
                format!("{state} {local}")
            } else {
                let remote = decode_addr(remote).unwrap_or_else(|| (*remote).to_string());
                format!("{state} {local} -> {remote}")
            };
            out.insert(inode, (proto.to_string(), description));
        }
    }
    if let Some(text) = read(&net.join("unix")) {
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let Some(Ok(inode)) = cols.get(6).map(|i| i.parse::<u64>()) else {
                continue;
            };
            let path = cols.get(7).copied().unwrap_or("(unnamed)");
            let listening =
                cols.get(5) == Some(&"01") && cols.get(3).is_some_and(|f| f.ends_with("10000"));
            let what = if listening { "LISTEN unix" } else { "unix" };
            out.insert(inode, ("unix".to_string(), format!("{what} {path}")));
        }
    }
    out
}

fn tcp_state(hex: &str) -> &'static str {
    match hex {
        "01" => "ESTABLISHED",
        "02" => "SYN_SENT",
        "03" => "SYN_RECV",
        "04" => "FIN_WAIT1",
        "05" => "FIN_WAIT2",
        "06" => "TIME_WAIT",
        "07" => "CLOSE",
        "08" => "CLOSE_WAIT",
        "09" => "LAST_ACK",
        "0A" => "LISTEN",
        "0B" => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// `0100007F:B7D3` → `127.0.0.1:47059`; IPv6 as 4 host-order 32-bit words → `[::1]:port`.
fn decode_addr(s: &str) -> Option<String> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    match addr.len() {
        8 => {
            let n = u32::from_str_radix(addr, 16).ok()?;
            Some(format!("{}:{port}", Ipv4Addr::from(n.swap_bytes())))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.swap_bytes().to_be_bytes());
            }
            Some(format!("[{}]:{port}", Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

impl fmt::Display for Forensics {
    /// Indented lines to print under a STUCK line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.exists {
            writeln!(f, "    process {} no longer exists", self.tgid)?;
            for n in self
                .notes
                .iter()
                .filter(|n| !n.ends_with("no longer exists"))
            {
                writeln!(f, "    note: {}", printable(n))?;
            }
            return Ok(());
        }
        let parent = match (self.ppid, &self.parent_comm) {
            (Some(p), Some(c)) => format!("{p} ({})", printable(c)),
            (Some(p), None) => p.to_string(),
            _ => "?".into(),
        };
        writeln!(
            f,
            "    state {}, parent {parent}, {} thread(s){}",
            printable(self.state.as_deref().unwrap_or("?")),
            self.threads_count.map_or("?".into(), |t| t.to_string()),
            match self.sigkill_pending {
                Some(true) => ", SIGKILL pending",
                _ => "",
            }
        )?;
        for t in &self.threads {
            write!(f, "    thread {}: {}", t.tid, printable(&t.state))?;
            if let Some(w) = &t.wchan {
                write!(f, ", wchan {}", printable(w))?;
            }
            if !t.stack.is_empty() {
                write!(f, ", stack {}", printable(&t.stack.join(" <- ")))?;
            }
            writeln!(f)?;
        }
        for s in &self.sockets {
            writeln!(
                f,
                "    holds {} (socket {}: {})",
                printable(&s.description),
                s.inode,
                s.attribution
            )?;
        }
        for s in &self.unheld_listeners {
            writeln!(
                f,
                "    held by no process in its network namespace: {} (socket {}; not attributed: \
                 its own if it is closing it inside exit)",
                printable(&s.description),
                s.inode
            )?;
        }
        if let Some(m) = &self.memcg {
            let mib = |b: Option<u64>| b.map_or("?".into(), |b| format!("{} MiB", b >> 20));
            write!(
                f,
                "    memcg {}: usage {} of {}",
                printable(&m.path),
                mib(m.usage_bytes),
                mib(m.limit_bytes)
            )?;
            if let Some(k) = m.oom_kills {
                write!(f, ", oom_kill {k}")?;
            }
            if let Some(o) = m.oom_events {
                write!(f, ", oom {o}")?;
            }
            if m.under_oom == Some(true) {
                write!(f, ", under OOM now")?;
            }
            writeln!(f)?;
        }
        for n in &self.notes {
            writeln!(f, "    note: {}", printable(n))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/proc")
    }

    /// The incident's shape: a zombie leader reparented to init with an empty fd table, and a
    /// thread stuck in an unanswered FUSE read that still holds the listening socket.
    #[test]
    fn incident_shape_from_a_fixture_tree() {
        let f = collect(&fixture(), 4242, Some(&fixture().join("memcg")), &[]);
        assert!(f.exists);
        assert_eq!(f.state.as_deref(), Some("Z (zombie)"));
        assert_eq!(
            (f.ppid, f.parent_comm.as_deref()),
            (Some(1), Some("systemd"))
        );
        assert_eq!(f.threads_count, Some(2));
        assert_eq!(f.sigkill_pending, Some(true));
        assert_eq!(f.threads.len(), 2);
        let stuck = &f.threads[1];
        assert_eq!(stuck.tid, 4243);
        assert!(stuck.state.starts_with('D'));
        assert_eq!(stuck.wchan.as_deref(), Some("request_wait_answer"));
        assert_eq!(stuck.stack[0], "request_wait_answer");
        assert_eq!(f.sockets.len(), 1);
        assert_eq!(f.sockets[0].description, "LISTEN 127.0.0.1:47123");
        assert_eq!(f.sockets[0].held_by, [4243]);
        assert_eq!(
            f.sockets[0].attribution,
            "in the fd table of thread 4243 now"
        );
        let m = f.memcg.as_ref().unwrap();
        assert_eq!(m.path, "/oomtrace-test");
        assert_eq!(
            (m.usage_bytes, m.limit_bytes),
            (Some(262_144), Some(67_108_864))
        );
        assert_eq!((m.oom_kills, m.under_oom), (Some(3), Some(false)));
        let text = f.to_string();
        assert!(
            text.contains("state Z (zombie), parent 1 (systemd), 2 thread(s), SIGKILL pending"),
            "{text}"
        );
        assert!(text.contains("holds LISTEN 127.0.0.1:47123"), "{text}");
    }

    /// A thread inside exit_files: no fd table lists the socket, but it was recorded at the
    /// kill and /proc/net still has it; a recorded socket that has closed is not named.
    #[test]
    fn a_socket_recorded_at_the_kill_is_named_when_no_fd_table_lists_it() {
        let f = collect(&fixture(), 4242, None, &[12_345, 99_999, 12_346]);
        let tcp = std::fs::read_to_string(fixture().join("4242/task/4243/net/tcp")).unwrap();
        assert!(
            tcp.contains(" 12346 "),
            "the fixture has a second listener: {tcp}"
        );
        let names: Vec<(&str, &str)> = f
            .sockets
            .iter()
            .map(|s| (s.description.as_str(), s.attribution.as_str()))
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(names[0].1, "in the fd table of thread 4243 now");
        assert!(
            names[1].1.starts_with("in its fd table when it was killed"),
            "{names:?}"
        );
        assert!(f.to_string().contains("when it was killed"), "{f}");
    }

    /// Found already inside exit_files (no fd table, nothing recorded): a listener of its
    /// namespace that no process holds is not pinned on it (it may be the host's) but listed
    /// apart, and a note says why nothing is named as its own.
    #[test]
    fn an_unowned_listener_is_listed_apart_for_a_victim_whose_table_is_gone() {
        let root = crate::scratch::ScratchDir::new("inspect-unowned");
        let copy = |from: &Path, to: &Path| {
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(from, to).unwrap();
        };
        let fx = fixture();
        for f in [
            "status",
            "task/4242/status",
            "task/4243/status",
            "task/4243/net/tcp",
        ] {
            copy(&fx.join("4242").join(f), &root.join(&format!("4242/{f}")));
        }
        std::fs::create_dir_all(root.join("4242/task/4243/fd")).unwrap();
        let f = collect(root.path(), 4242, None, &[]);
        assert!(f.sockets.is_empty(), "{:?}", f.sockets);
        assert!(
            f.notes.iter().any(|n| n.contains("not guessed")),
            "{:?}",
            f.notes
        );
        // No process in this /proc holds anything: both listeners of the fixture's table are
        // unheld, the established connection is not a listener.
        let unheld: Vec<&str> = f
            .unheld_listeners
            .iter()
            .map(|s| s.description.as_str())
            .collect();
        assert_eq!(unheld, ["LISTEN 127.0.0.1:47123", "LISTEN 127.0.0.1:8080"]);
        assert!(f.unheld_listeners.iter().all(|s| s.held_by.is_empty()));
        let text = f.to_string();
        assert!(
            text.contains("held by no process in its network namespace: LISTEN 127.0.0.1:47123"),
            "{text}"
        );
        assert!(!text.contains("holds LISTEN"), "{text}");
    }

    /// A victim with many threads and files: what is read and shown is capped, and said.
    #[test]
    fn many_threads_and_fds_are_read_within_bounds() {
        let root = crate::scratch::ScratchDir::new("inspect-bounds");
        let fx = fixture().join("4242");
        let status = std::fs::read_to_string(fx.join("task/4243/status")).unwrap();
        std::fs::create_dir_all(root.join("4242")).unwrap();
        std::fs::copy(fx.join("status"), root.join("4242/status")).unwrap();
        for tid in 4242..4242 + 100u32 {
            let t = root.join(&format!("4242/task/{tid}"));
            std::fs::create_dir_all(t.join("fd")).unwrap();
            std::fs::write(t.join("status"), status.replace("4243", &tid.to_string())).unwrap();
            for fd in 0..200u64 {
                std::os::unix::fs::symlink(
                    format!("socket:[{}]", 100_000 + fd),
                    t.join(format!("fd/{fd}")),
                )
                .unwrap();
            }
        }
        let f = collect(root.path(), 4242, None, &[]);
        assert_eq!(f.threads.len(), MAX_DETAILED_THREADS);
        assert_eq!(f.sockets.len(), MAX_SOCKETS);
        // Every detailed thread shares the 200 sockets: each names its holders once.
        assert!(f.sockets[0].held_by.len() <= MAX_DETAILED_THREADS);
        for cut in ["only 64 are detailed", "only the first 64 are named"] {
            assert!(
                f.notes.iter().any(|n| n.contains(cut)),
                "{cut}: {:?}",
                f.notes
            );
        }
        assert!(f.to_string().len() < 64 << 10, "{}", f.to_string().len());
    }

    /// 5.10 with the ORC unwinder: wchan reads 0 for every thread; a sleeping thread's wchan is
    /// its stack's top frame, a running one has none.
    #[test]
    fn wchan_falls_back_to_the_stacks_top_frame() {
        let root = crate::scratch::ScratchDir::new("inspect-wchan");
        let fx = fixture().join("4242");
        for f in [
            "status",
            "task/4242/status",
            "task/4243/status",
            "task/4243/stack",
        ] {
            let to = root.join(&format!("4242/{f}"));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(fx.join(f), &to).unwrap();
        }
        for tid in [4242, 4243] {
            std::fs::write(root.join(&format!("4242/task/{tid}/wchan")), "0").unwrap();
        }
        let f = collect(root.path(), 4242, None, &[]);
        assert_eq!(f.threads[1].wchan.as_deref(), Some("request_wait_answer"));
        assert_eq!(f.threads[0].wchan, None, "the zombie leader has no stack");
        let status = std::fs::read_to_string(fx.join("task/4243/status")).unwrap();
        let running = status.replace("State:\tD (disk sleep)", "State:\tR (running)");
        assert_ne!(running, status, "the fixture's thread sleeps in D");
        std::fs::write(root.join("4242/task/4243/status"), running).unwrap();
        let f = collect(root.path(), 4242, None, &[]);
        assert_eq!(f.threads[1].wchan, None);
    }

    /// Everything gathered from the fixture (sockets in an fd table and recorded at the kill,
    /// a v1 memcg), as serialized and as shown, pinned.
    #[test]
    fn the_fixtures_forensics_are_pinned() {
        let f = collect(
            &fixture(),
            4242,
            Some(&fixture().join("memcg")),
            &[12_345, 99_999, 12_346],
        );
        let json = serde_json::to_string_pretty(&f).unwrap();
        assert_eq!(
            json,
            r#"{
  "exists": true,
  "memcg": {
    "limit_bytes": 67108864,
    "oom_events": null,
    "oom_kills": 3,
    "path": "/oomtrace-test",
    "under_oom": false,
    "usage_bytes": 262144
  },
  "notes": [],
  "parent_comm": "systemd",
  "ppid": 1,
  "sigkill_pending": true,
  "sockets": [
    {
      "attribution": "in the fd table of thread 4243 now",
      "description": "LISTEN 127.0.0.1:47123",
      "held_by": [
        4243
      ],
      "inode": 12345,
      "proto": "tcp"
    },
    {
      "attribution": "in its fd table when it was killed; no fd table lists it now (a thread inside exit has detached the table) and the socket is still open",
      "description": "LISTEN 127.0.0.1:8080",
      "held_by": [],
      "inode": 12346,
      "proto": "tcp"
    }
  ],
  "state": "Z (zombie)",
  "stopped_tracers": [],
  "tgid": 4242,
  "threads": [
    {
      "stack": [],
      "state": "Z (zombie)",
      "tid": 4242,
      "wchan": null
    },
    {
      "stack": [
        "request_wait_answer",
        "__fuse_simple_request",
        "fuse_direct_io",
        "fuse_file_read_iter",
        "vfs_read",
        "ksys_read"
      ],
      "state": "D (disk sleep)",
      "tid": 4243,
      "wchan": "request_wait_answer"
    }
  ],
  "threads_count": 2,
  "tracer_pid": null,
  "uid": null,
  "unheld_listeners": []
}"#
        );
        assert_eq!(
            f.to_string(),
            r#"    state Z (zombie), parent 1 (systemd), 2 thread(s), SIGKILL pending
    thread 4242: Z (zombie)
    thread 4243: D (disk sleep), wchan request_wait_answer, stack request_wait_answer <- __fuse_simple_request <- fuse_direct_io <- fuse_file_read_iter <- vfs_read <- ksys_read
    holds LISTEN 127.0.0.1:47123 (socket 12345: in the fd table of thread 4243 now)
    holds LISTEN 127.0.0.1:8080 (socket 12346: in its fd table when it was killed; no fd table lists it now (a thread inside exit has detached the table) and the socket is still open)
    memcg /oomtrace-test: usage 0 MiB of 64 MiB, oom_kill 3
"#
        );
    }

    /// The tracers that matter are those of threads in a ptrace stop (state t), each read
    /// from that thread's own status: a leader traced by its parent (PTRACE_TRACEME) while
    /// running names nobody here.
    #[test]
    fn the_stopped_threads_tracers_are_kept() {
        let root = crate::scratch::ScratchDir::new("inspect-tracer");
        let fx = fixture().join("4242");
        for (f, tracer, stopped) in [
            ("status", None, false),
            ("task/4242/status", Some("55"), false),
            ("task/4243/status", Some("77"), true),
        ] {
            let to = root.join(&format!("4242/{f}"));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            let mut text = std::fs::read_to_string(fx.join(f)).unwrap();
            if let Some(t) = tracer {
                text = text.replace("TracerPid:\t0", &format!("TracerPid:\t{t}"));
            }
            if stopped {
                text = text.replace("State:\tD (disk sleep)", "State:\tt (tracing stop)");
            }
            std::fs::write(&to, text).unwrap();
        }
        let f = collect(root.path(), 4242, None, &[]);
        assert_eq!(f.stopped_tracers, [77]);
        assert_eq!(f.tracer_pid, Some(77));
        assert_eq!(f.threads[0].tracer, Some(55));
        assert_eq!(f.threads[1].tracer, Some(77));
    }

    #[test]
    fn a_vanished_process_is_a_note_not_a_panic() {
        let f = collect(&fixture(), 999_999, None, &[]);
        assert!(!f.exists);
        assert!(f.to_string().contains("no longer exists"));
    }

    #[test]
    fn addresses_decode() {
        assert_eq!(
            decode_addr("0100007F:B7D3").as_deref(),
            Some("127.0.0.1:47059")
        );
        assert_eq!(
            decode_addr("00000000000000000000000001000000:0050").as_deref(),
            Some("[::1]:80")
        );
        assert_eq!(decode_addr("zz:1"), None);
        assert_eq!(decode_addr("nonsense"), None);
    }

    #[test]
    fn this_process_is_readable() {
        // SAFETY: no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        let f = collect(Path::new("/proc"), pid, None, &[]);
        assert!(f.exists);
        assert!(!f.threads.is_empty());
        assert!(f.threads.iter().any(|t| t.tid == pid));
    }
}
