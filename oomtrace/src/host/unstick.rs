//! What a stuck victim waits on, and the cheapest way out that is not a reboot.
//!
//! A victim stuck in exit waits on *something*: a FUSE daemon that does not answer, a network
//! filesystem, a charge its own memcg refuses while at its limit, a tracer keeping it stopped,
//! the mmap lock, or (dead already) a parent that never reaps it. The diagnosis is data: the
//! threads' states and kernel stacks are matched against [`SIGNATURES`], a table of kernel
//! function names; /proc status (`TracerPid`) and the memcg's usage complete it. Each diagnosis
//! names a remedy — one line a person can run, and what it risks — which `oomtrace unstick
//! --apply` (and `watch --unstick`) carry out. Unknown is said, never guessed at.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::host::forensics::Forensics;

/// What a victim waits on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Wait {
    /// A FUSE request the daemon has not answered. `connections`: the FUSE connections (ids
    /// under /sys/fs/fuse/connections) with requests waiting now.
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
    /// Stopped by ptrace: it goes on only when its tracer lets it.
    Ptrace { tracer: u32 },
    /// Waiting for the mmap lock (held by someone else, often another stuck task).
    MmapLock,
    /// Dead: a zombie its parent does not reap.
    ZombieNotReaped { parent: u32 },
    /// None of the above: say so.
    Unknown,
}

/// Which [`Wait`] a kernel function in a stack means (matched as a prefix of the frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sign {
    Fuse,
    Nfs,
    Cifs,
    NineP,
    Ceph,
    MemcgCharge,
    MmapLock,
    Ptrace,
}

/// Kernel stack signatures, innermost frames first within a thread's stack. Names from the
/// kernels of the matrix (5.10 … 7.x): the FUSE request paths (`request_wait_answer`,
/// `fuse_simple_request`, `fuse_flush`, `fuse_dev_…`), NFS/SUNRPC waits, the memcg charge path
/// (`try_charge_memcg`, `mem_cgroup_charge`, `__mem_cgroup_charge`, `charge_memcg`,
/// `mem_cgroup_out_of_memory`), the mmap lock (`rwsem_down_read_slowpath`, `lock_mm_and_find_vma`),
/// ptrace stops (`ptrace_stop`, `ptrace_notify`, `ptrace_event`).
pub const SIGNATURES: &[(&str, Sign)] = &[
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
    ("rwsem_down_read_slowpath", Sign::MmapLock),
    ("rwsem_down_write_slowpath", Sign::MmapLock),
    ("lock_mm_and_find_vma", Sign::MmapLock),
    ("mmap_read_lock", Sign::MmapLock),
    ("ptrace_stop", Sign::Ptrace),
    ("ptrace_notify", Sign::Ptrace),
    ("ptrace_event", Sign::Ptrace),
];

fn sign_of(frame: &str) -> Option<Sign> {
    SIGNATURES
        .iter()
        .find(|(prefix, _)| frame.starts_with(prefix))
        .map(|&(_, s)| s)
}

/// Where the host's FUSE connections are (fusectl).
pub const FUSECTL: &str = "/sys/fs/fuse/connections";

/// Mounts fusectl at [`FUSECTL`] if it is not; returns whether it did (unmount with
/// [`unmount_fusectl`] when done).
pub fn ensure_fusectl() -> bool {
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

/// The FUSE connections a process's mounts name: for each FUSE mount in its mount namespace
/// (`/proc/PID/mountinfo`, read through any of its threads: a leader that is a zombie has
/// none), the minor number of its device, which is the connection's id under fusectl.
pub fn fuse_connections_of(proc_root: &Path, pid: u32) -> Vec<u32> {
    let dir = proc_root.join(pid.to_string());
    let mut sources = vec![dir.join("mountinfo")];
    if let Ok(tasks) = std::fs::read_dir(dir.join("task")) {
        sources.extend(tasks.flatten().map(|t| t.path().join("mountinfo")));
    }
    let Some(text) = sources
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find(|t| !t.is_empty())
    else {
        return Vec::new();
    };
    let mut v: Vec<u32> = text
        .lines()
        .filter_map(|l| {
            let (head, tail) = l.split_once(" - ")?;
            let fstype = tail.split_whitespace().next()?;
            if fstype != "fuse" && !fstype.starts_with("fuse.") && fstype != "fuseblk" {
                return None;
            }
            head.split_whitespace()
                .nth(2)?
                .split(':')
                .nth(1)?
                .parse()
                .ok()
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The connections that may hold the victim: those with requests waiting, narrowed to the
/// victim's own FUSE mounts when they are known.
pub fn candidate_connections(waiting: &[u32], of_victim: &[u32]) -> Vec<u32> {
    let mine: Vec<u32> = waiting
        .iter()
        .copied()
        .filter(|c| of_victim.contains(c))
        .collect();
    if mine.is_empty() {
        waiting.to_vec()
    } else {
        mine
    }
}

/// The FUSE connections with requests waiting (`waiting` > 0) under `fusectl`.
pub fn fuse_connections_waiting(fusectl: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(fusectl)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let id: u32 = e.file_name().to_str()?.parse().ok()?;
            let waiting: u64 = std::fs::read_to_string(e.path().join("waiting"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            (waiting > 0).then_some(id)
        })
        .collect();
    v.sort_unstable();
    v
}

/// Classifies from forensics; `fuse_waiting` are the FUSE connections with requests waiting.
pub fn diagnose(f: &Forensics, fuse_waiting: &[u32]) -> Wait {
    let zombie_only = f
        .threads
        .iter()
        .all(|t| t.state.starts_with('Z') || t.state.starts_with('X'));
    if f.exists
        && !f.threads.is_empty()
        && zombie_only
        && let Some(parent) = f.ppid
    {
        return Wait::ZombieNotReaped { parent };
    }
    // The innermost recognised frame of each thread; ptrace first (a stopped tracee's stack
    // may pass through anything), then in table order of importance.
    let mut signs: Vec<Sign> = Vec::new();
    for t in &f.threads {
        if t.state.starts_with('t') {
            signs.push(Sign::Ptrace);
        }
        if let Some(s) = t.stack.iter().find_map(|fr| sign_of(fr)) {
            signs.push(s);
        } else if let Some(s) = t.wchan.as_deref().and_then(sign_of) {
            signs.push(s);
        }
    }
    let has = |s: Sign| signs.contains(&s);
    if has(Sign::Ptrace)
        && let Some(tracer) = f.tracer_pid
    {
        return Wait::Ptrace { tracer };
    }
    if has(Sign::Fuse) {
        return Wait::Fuse {
            connections: fuse_waiting.to_vec(),
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
    if has(Sign::MmapLock) {
        return Wait::MmapLock;
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
    AbortFuse { connection: u32 },
    RaiseMemcgLimit { file: PathBuf, from: u64, to: u64 },
    EndTracer { tracer: u32 },
    SignalParent { parent: u32 },
}

/// How much a memcg's limit is raised so that a victim's exit can charge what it needs: 10 %,
/// at least 16 MiB, at most 256 MiB.
pub fn margin(limit: u64) -> u64 {
    (limit / 10).clamp(16 << 20, 256 << 20)
}

/// The remedy for a diagnosis, or None (unknown, ambiguous, or nothing safe to do).
pub fn remedy(w: &Wait, memcg_root: Option<&Path>, cgroup_v2: bool) -> Option<Remedy> {
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
        } => {
            let root = memcg_root?;
            let file = root.join(memcg.trim_start_matches('/')).join(if cgroup_v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            });
            let to = limit_bytes.saturating_add(margin(*limit_bytes));
            Some(Remedy {
                command: format!("echo {to} > {}", file.display()),
                risk: format!(
                    "the memcg may use {} MiB more until the limit is put back ({limit_bytes} \
                     bytes, restored by --apply once the victim is dead)",
                    (to - limit_bytes) >> 20
                ),
                action: Some(Action::RaiseMemcgLimit {
                    file,
                    from: *limit_bytes,
                    to,
                }),
            })
        }
        Wait::Ptrace { tracer } => Some(Remedy {
            command: format!("kill -TERM {tracer}; sleep 2; kill -KILL {tracer}"),
            risk: format!(
                "ends the tracer (pid {tracer}: a debugger, strace, or a supervisor using ptrace) \
                 and with it its other tracees' supervision; a tracee set with PTRACE_O_EXITKILL \
                 is killed"
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
        Wait::NetworkFs { .. } | Wait::MmapLock | Wait::Unknown => None,
    }
}

/// Why `pid` may be treated as an OOM victim, or why not. `unstick` touches nothing else:
/// the process must have been SIGKILLed (SIGKILL pending while it exits, or a zombie whose exit
/// status is SIGKILL) *and* the kernel must have counted an OOM kill where it lives (its memcg
/// or one above it; for a process outside any limited memcg, the machine's `oom_kill` in
/// /proc/vmstat). That is evidence, not proof: a process SIGKILLed by hand in a memcg that also
/// saw an OOM kill passes; `watch --unstick` knows its victims from the kernel events instead.
pub fn oom_victim_evidence(
    proc_root: &Path,
    memcg_root: Option<&Path>,
    memcg: Option<&str>,
    pid: u32,
) -> Result<String, String> {
    use crate::host::forensics::{keyed, sigkill_pending, status_field};
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
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .any(|s| sigkill_pending(&s) == Some(true));
    // /proc/PID/stat field 52: the exit code a zombie will report (a signal in the low bits).
    let exit_signal = std::fs::read_to_string(dir.join("stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()?
                .split_whitespace()
                .nth(49)?
                .parse::<i32>()
                .ok()
        })
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
    // The memcg as forensics found it (an exiting task's own cgroup file may already say "/").
    let path = memcg
        .map(str::to_string)
        .or_else(|| crate::host::forensics::memcg_path(&dir))
        .unwrap_or_else(|| "/".into());
    if let Some(root) = memcg_root {
        let mut p = std::path::PathBuf::from(path.trim_start_matches('/'));
        loop {
            let d = root.join(&p);
            let counted = ["memory.events", "memory.oom_control"]
                .iter()
                .filter_map(|f| std::fs::read_to_string(d.join(f)).ok())
                .find_map(|t| keyed(&t, "oom_kill"));
            if let Some(n) = counted.filter(|&n| n > 0) {
                let shown = if p.as_os_str().is_empty() {
                    "/".into()
                } else {
                    format!("/{}", p.display())
                };
                return Ok(format!(
                    "SIGKILLed, and its memcg {shown} counted {n} OOM kill(s)"
                ));
            }
            if !p.pop() {
                break;
            }
        }
    }
    let vmstat = std::fs::read_to_string(proc_root.join("vmstat")).unwrap_or_default();
    match keyed(&vmstat, "oom_kill") {
        Some(n) if n > 0 && path == "/" => Ok(format!(
            "SIGKILLed, outside any memcg, and the machine counted {n} OOM kill(s)"
        )),
        _ => Err(format!(
            "pid {pid} was SIGKILLed, but no OOM kill was counted in its memcg {path} or above: \
             not known to be an OOM victim, not touched"
        )),
    }
}

/// What `--apply` did, and what to undo once the victim is dead.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub did: Vec<String>,
    #[serde(skip)]
    restore_limit: Option<(PathBuf, u64)>,
    #[serde(skip)]
    unmount_fusectl: bool,
}

fn write_file(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("writing {value} to {}: {e}", path.display()))
}

/// Carries out a remedy's action.
pub fn apply(action: &Action) -> Result<Applied, String> {
    let mut a = Applied::default();
    match action {
        Action::AbortFuse { connection } => {
            let ctl = Path::new(FUSECTL);
            if !ctl.join(connection.to_string()).exists() {
                if !ensure_fusectl() {
                    return Err(format!("mounting fusectl at {FUSECTL} failed"));
                }
                a.unmount_fusectl = true;
                a.did.push(format!("mounted fusectl at {FUSECTL}"));
            }
            write_file(&ctl.join(connection.to_string()).join("abort"), "1")?;
            a.did.push(format!("aborted FUSE connection {connection}"));
        }
        Action::RaiseMemcgLimit { file, from, to } => {
            write_file(file, &to.to_string())?;
            a.did
                .push(format!("raised {} from {from} to {to}", file.display()));
            a.restore_limit = Some((file.clone(), *from));
        }
        Action::EndTracer { tracer } => {
            let pid = *tracer as i32;
            // SAFETY: kill(2) on the tracer named by the kernel (TracerPid), checked to be a
            // process just before; it is the remedy the diagnosis stated.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            a.did.push(format!("sent SIGTERM to tracer {tracer}"));
            if !wait_gone(*tracer, std::time::Duration::from_secs(2)) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                a.did
                    .push(format!("tracer {tracer} ignored SIGTERM: sent SIGKILL"));
            }
        }
        Action::SignalParent { parent } => {
            // SAFETY: a harmless signal to the zombie's parent.
            unsafe { libc::kill(*parent as i32, libc::SIGCHLD) };
            a.did.push(format!("sent SIGCHLD to parent {parent}"));
        }
    }
    Ok(a)
}

/// Undoes what can safely be undone once the victim is dead (the memcg limit, if usage is back
/// under it; fusectl, if it was mounted here).
pub fn restore(a: &Applied) -> Vec<String> {
    let mut said = Vec::new();
    if let Some((file, from)) = &a.restore_limit {
        let usage_file = file.with_file_name(if file.ends_with("memory.max") {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        });
        let usage: Option<u64> = std::fs::read_to_string(&usage_file)
            .ok()
            .and_then(|u| u.trim().parse().ok());
        match usage {
            Some(u) if u < *from => match write_file(file, &from.to_string()) {
                Ok(()) => said.push(format!("restored {} to {from}", file.display())),
                Err(e) => said.push(format!("could not restore the limit: {e}")),
            },
            _ => said.push(format!(
                "left {} raised: usage ({usage:?}) is not under the old limit {from}; put it \
                 back by hand once it is",
                file.display()
            )),
        }
    }
    if a.unmount_fusectl {
        unmount_fusectl();
        said.push(format!("unmounted fusectl from {FUSECTL}"));
    }
    said
}

/// Waits until `pid` has finished exiting (its pidfd polls readable), or `timeout`.
pub fn wait_gone(pid: u32, timeout: std::time::Duration) -> bool {
    use std::os::fd::AsRawFd as _;
    let Ok(fd) = crate::host::deathwatch::pidfd_open(pid) else {
        return true;
    };
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&raw mut p, 1, ms) > 0 }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::Fuse { connections } if connections.is_empty() => write!(
                f,
                "an unanswered FUSE request (no connection with requests waiting was found under \
                 {FUSECTL})"
            ),
            Wait::Fuse { connections } => write!(
                f,
                "an unanswered FUSE request (connection(s) with requests waiting: {connections:?})"
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
            Wait::MmapLock => write!(f, "the mmap lock (held by another task)"),
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
                })
                .collect(),
            ..Forensics::default()
        }
    }

    /// Stacks as /proc/PID/stack shows them (function names, innermost first), from the
    /// kernels of the matrix.
    #[test]
    fn stacks_of_several_kernels_are_classified() {
        // 6.1, a thread in an unanswered FUSE read; the leader a zombie.
        let fuse_read: &[&str] = &[
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
        // Two connections waiting: ambiguous, no remedy.
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
        f.tracer_pid = Some(777);
        assert_eq!(diagnose(&f, &[]), Wait::Ptrace { tracer: 777 });
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

    #[test]
    fn the_margin_is_bounded() {
        assert_eq!(margin(64 << 20), 16 << 20);
        assert_eq!(margin(1 << 30), (1 << 30) / 10);
        assert_eq!(margin(64 << 30), 256 << 20);
    }

    /// The victim's FUSE mounts name its connection (device minor); an old aborted connection
    /// still counting waiting requests does not make the diagnosis ambiguous.
    #[test]
    fn the_victims_own_fuse_connection_is_chosen() {
        let dir = crate::scratch::ScratchDir::new("unstick");
        let p = dir.path().join("42/task/43");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            p.join("mountinfo"),
            "22 1 0:21 / /proc rw - proc proc rw\n\
             88 22 0:40 / /tmp/f rw,nosuid - fuse.hold hold rw,user_id=0\n\
             89 22 0:41 / /tmp/g rw - fuseblk dev rw\n",
        )
        .unwrap();
        // The zombie leader's own mountinfo is empty.
        std::fs::write(dir.path().join("42/mountinfo"), "").unwrap();
        let mine = fuse_connections_of(dir.path(), 42);
        assert_eq!(mine, [40, 41]);
        assert_eq!(candidate_connections(&[39, 40], &mine), [40]);
        assert_eq!(candidate_connections(&[39], &[]), [39]);
    }
}
