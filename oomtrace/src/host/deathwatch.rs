//! Death, seen from userspace: one pidfd per victim.
//!
//! A victim is dead when every thread of it has finished exiting (passed `exit_notify`: its mm
//! dropped, its files and sockets closed). No tracepoint fires there on any kernel, but a pidfd
//! polls readable exactly then (`pidfd_poll` → `thread_group_exited`: the leader has exited
//! and the thread group is empty), on every kernel since 5.3 — and the BPF ring buffer oomtrace
//! needs came in 5.8. So userspace opens a pidfd for each process the kernel SIGKILLs (a few
//! per OOM kill, nothing per ordinary exit: unrelated processes pay nothing), waits for all of
//! them on one epoll descriptor, and turns "readable" into a [`GroupExited`] event that goes
//! through the tracker and into dumps like a kernel event.
//!
//! The pid may already name another process by the time it is opened (the victim died, was
//! reaped, and the pid was reused). The pidfd pins whichever process it opened, so its start
//! time is checked *after* the open against the victim's: a mismatch means the victim is gone.
//! The time of a [`GroupExited`] is when userspace saw it (CLOCK_MONOTONIC, like kernel
//! events), a fraction of a millisecond after the fact when oomtrace is not starved.

use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
};

use oomtrace_common::{EventKind, GroupExited, Header, TASK_COMM_LEN, USERSPACE_CPU, exit_seen};

use crate::event::{Event, Payload};

/// Processes watched at most at once (one descriptor each). Past this, new victims are not
/// watched and their findings say so.
pub const MAX_WATCHED: usize = 16_384;

/// Why a process cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// `pidfd_open` failed for another reason than the process being gone.
    #[error("pidfd_open({pid}) failed: {source}")]
    PidfdOpen {
        pid: u32,
        #[source]
        source: io::Error,
    },
    /// Adding the pidfd to the epoll set failed.
    #[error("adding the pidfd of {pid} to epoll failed: {source}")]
    Epoll {
        pid: u32,
        #[source]
        source: io::Error,
    },
    /// Too many processes are watched already.
    #[error("already watching {MAX_WATCHED} processes")]
    Full,
}

struct Watched {
    pidfd: OwnedFd,
    pid: u32,
    tid: u32,
    start_ns: u64,
    comm: [u8; TASK_COMM_LEN],
}

/// An epoll set of pidfds, readable when any watched process has finished exiting.
pub struct DeathWatch {
    epoll: OwnedFd,
    watched: HashMap<u64, Watched>,
    /// pid → token, so a process is watched once however often (and with whatever start time)
    /// it is named: while its pidfd is held, the pid cannot name another process.
    tokens: HashMap<u32, u64>,
    next_token: u64,
}

impl AsRawFd for DeathWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

/// `pidfd_open(pid, 0)`.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether pidfds work here (Linux ≥ 5.3 and not filtered by seccomp).
pub fn available() -> Result<(), String> {
    pidfd_open(std::process::id())
        .map(drop)
        .map_err(|e| format!("pidfd_open is not available ({e}): death cannot be observed"))
}

/// Clock ticks per second of /proc's times (USER_HZ).
pub(crate) fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Start time of `pid` (ns since boot, at clock-tick precision) from `/proc/PID/stat`.
pub fn start_ns_of(proc_root: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // Fields after the comm, which may itself contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 22 overall is the 20th after the comm (state is the 1st).
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    Some(ticks * (1_000_000_000 / clock_ticks()))
}

/// Whether a start time from the kernel (ns) and one from /proc (ticks) are the same moment.
pub fn same_start(kernel_ns: u64, proc_ns: u64) -> bool {
    let tick = 1_000_000_000 / clock_ticks();
    kernel_ns / tick == proc_ns / tick
}

/// A userspace-observed event about `pid`, stamped now.
pub fn userspace_event(pid: u32, comm: [u8; TASK_COMM_LEN], payload: Payload) -> Event {
    let kind = match payload {
        Payload::PreExisting(_) => EventKind::PreExisting,
        Payload::TaskFree(_) => EventKind::TaskFree,
        _ => EventKind::GroupExited,
    };
    Event {
        header: Header {
            kind: kind as u32,
            cpu: USERSPACE_CPU,
            ts_ns: crate::session::monotonic_now(),
            pid,
            tgid: pid,
            comm,
        },
        payload,
    }
}

fn exited(pid: u32, tid: u32, start_ns: u64, comm: [u8; TASK_COMM_LEN], how: u32) -> Event {
    let tid = if tid == pid { 0 } else { tid };
    userspace_event(
        pid,
        comm,
        Payload::GroupExited(GroupExited {
            pid,
            how,
            start_ns,
            tid,
            _pad: 0,
        }),
    )
}

impl DeathWatch {
    pub fn new() -> io::Result<DeathWatch> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DeathWatch {
            // SAFETY: a fresh descriptor, owned from here on.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            watched: HashMap::new(),
            tokens: HashMap::new(),
            next_token: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.watched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Whether a process with this pid is being watched.
    pub fn knows(&self, pid: u32) -> bool {
        self.tokens.contains_key(&pid)
    }

    /// Starts watching process `pid` (a tgid) whose leader started at `start_ns` (ns since
    /// boot; 0 if unknown: then pid reuse cannot be ruled out), named by the kernel through
    /// thread `tid`. Returns the [`GroupExited`] event at once if it is already gone; its
    /// readiness comes through [`Self::ready`] otherwise (a process that is already a zombie
    /// is ready at once).
    pub fn watch(
        &mut self,
        proc_root: &Path,
        (pid, tid): (u32, u32),
        start_ns: u64,
        comm: [u8; TASK_COMM_LEN],
    ) -> Result<Option<Event>, WatchError> {
        if self.knows(pid) {
            return Ok(None);
        }
        if self.watched.len() >= MAX_WATCHED {
            return Err(WatchError::Full);
        }
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Ok(Some(exited(pid, tid, start_ns, comm, exit_seen::GONE)));
            }
            Err(source) => return Err(WatchError::PidfdOpen { pid, source }),
        };
        // The pidfd pins the process it opened; only now is its start time worth reading.
        if start_ns != 0 {
            match start_ns_of(proc_root, pid) {
                Some(now) if !same_start(start_ns, now) => {
                    return Ok(Some(exited(
                        pid,
                        tid,
                        start_ns,
                        comm,
                        exit_seen::PID_REUSED,
                    )));
                }
                // /proc/PID is gone between the open and the read: reaped meanwhile. The
                // pidfd still tells (it is readable), so keep watching it.
                _ => {}
            }
        }
        let token = self.next_token;
        self.next_token += 1;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are valid and owned; ev outlives the call.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                pidfd.as_raw_fd(),
                &raw mut ev,
            )
        };
        if rc != 0 {
            return Err(WatchError::Epoll {
                pid,
                source: io::Error::last_os_error(),
            });
        }
        self.tokens.insert(pid, token);
        self.watched.insert(
            token,
            Watched {
                pidfd,
                pid,
                tid,
                start_ns,
                comm,
            },
        );
        Ok(None)
    }

    /// The processes that have finished exiting since the last call (without blocking); they
    /// are no longer watched.
    pub fn ready(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            // SAFETY: evs is a valid buffer of the length given; timeout 0 never blocks.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    evs.as_mut_ptr(),
                    evs.len() as i32,
                    0,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                break; // EINTR or a closed set: the next wake-up tries again.
            };
            for e in &evs[..n] {
                let token = e.u64;
                if let Some(w) = self.watched.remove(&token) {
                    self.tokens.remove(&w.pid);
                    // Dropping the pidfd removes it from the epoll set.
                    drop(w.pidfd);
                    out.push(exited(w.pid, w.tid, w.start_ns, w.comm, exit_seen::PIDFD));
                }
            }
            if n < evs.len() {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn wait_ready(w: &mut DeathWatch, timeout: Duration) -> Vec<Event> {
        let until = Instant::now() + timeout;
        loop {
            let r = w.ready();
            if !r.is_empty() || Instant::now() > until {
                return r;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_child_is_seen_to_finish_exiting_and_a_live_one_is_not() {
        available().expect("pidfd_open works on every kernel oomtrace runs on");
        let proc_root = Path::new("/proc");
        let mut w = DeathWatch::new().unwrap();
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut quick = std::process::Command::new("sleep")
            .arg("0.05")
            .spawn()
            .unwrap();
        let start = |pid| start_ns_of(proc_root, pid).expect("start time");
        let (live_pid, quick_pid) = (live.id(), quick.id());
        let (live_start, quick_start) = (start(live_pid), start(quick_pid));
        let watch = |w: &mut DeathWatch, pid, start| w.watch(proc_root, (pid, pid), start, [0; 16]);
        assert_eq!(watch(&mut w, live_pid, live_start).unwrap(), None);
        assert_eq!(watch(&mut w, quick_pid, quick_start).unwrap(), None);
        // Watching twice is a no-op.
        assert_eq!(watch(&mut w, quick_pid, quick_start).unwrap(), None);
        assert_eq!(w.len(), 2);
        // Not waited for: it finishes exiting and stays a zombie, which is dead.
        let got = wait_ready(&mut w, Duration::from_secs(10));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            matches!(got[0].payload, Payload::GroupExited(g) if g.pid == quick_pid && g.how == exit_seen::PIDFD)
        );
        assert_eq!(got[0].header.cpu, USERSPACE_CPU);
        assert!(w.ready().is_empty(), "the live one must not be reported");
        quick.wait().unwrap();
        live.kill().unwrap();
        let got = wait_ready(&mut w, Duration::from_secs(10));
        assert!(
            matches!(got[..], [Event { payload: Payload::GroupExited(g), .. }] if g.pid == live_pid)
        );
        live.wait().unwrap();
        assert!(w.is_empty());
    }

    #[test]
    fn a_reaped_process_is_gone_and_a_reused_pid_is_not_the_victim() {
        let proc_root = Path::new("/proc");
        let mut w = DeathWatch::new().unwrap();
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        let ev = w
            .watch(proc_root, (pid, pid), 12_345, [0; 16])
            .unwrap()
            .expect("gone");
        assert!(matches!(ev.payload, Payload::GroupExited(g) if g.how == exit_seen::GONE));
        // Our own pid with another start time: the pid was "reused".
        let me = std::process::id();
        let mine = start_ns_of(proc_root, me).unwrap();
        let ev = w
            .watch(proc_root, (me, me), mine + 3_600_000_000_000, [0; 16])
            .unwrap()
            .expect("reused");
        assert!(matches!(ev.payload, Payload::GroupExited(g) if g.how == exit_seen::PID_REUSED));
        assert!(w.is_empty());
    }

    #[test]
    fn start_times_compare_at_tick_precision() {
        let tick = 1_000_000_000 / clock_ticks();
        assert!(same_start(5 * tick + 7, 5 * tick));
        assert!(!same_start(6 * tick + 7, 5 * tick));
    }
}
