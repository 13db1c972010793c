//! Death, seen from userspace: one pidfd per victim, dated by the kernel where it tells.
//!
//! A victim is dead when every thread of it has finished exiting (passed `exit_notify`: its mm
//! dropped, its files and sockets closed). No tracepoint of its own fires there on any kernel,
//! but a pidfd polls readable exactly then (`pidfd_poll` → `thread_group_exited`: the leader has exited
//! and the thread group is empty), on every kernel since 5.3 — and the BPF ring buffer oomtrace
//! needs came in 5.8. So userspace opens a pidfd for each process the kernel SIGKILLs (a few
//! per OOM kill, nothing per ordinary exit: unrelated processes pay nothing), waits for all of
//! them on one epoll descriptor, and turns "readable" into a [`GroupExited`] event that goes
//! through the tracker and into dumps like a kernel event.
//!
//! The pid may already name another process by the time it is opened (the victim died, was
//! reaped, and the pid was reused). The pidfd pins whichever process it opened, and which one
//! that was is settled without touching the victim's /proc entry at the kill: the OOM killer
//! holds the victim's `task_lock` while it prints the kill on the console, and opening
//! `/proc/PID/stat` then spins on that lock (docs/performance.md):
//! - the kernel's own word, usually: a thread of the victim (same pid, same leader start time)
//!   passing `sched_process_exit` *after* the open proves that the pid still named the victim
//!   when it was opened (a pid is reused only after its process has been reaped, which comes
//!   after every thread's exit);
//! - else, once the pidfd fires (the process is past `exit_notify`, nobody contends for it),
//!   its start time from `/proc/PID/stat`, trusted only if the process is still unreaped after
//!   the read (`pidfd_send_signal(pidfd, 0)`), so that the pid still named it. A process reaped
//!   before it could be checked is reported [`exit_seen::GONE`]: dead, but not seen dying,
//!   since it cannot be told from a later process that had the pid.
//!
//! A reused pid is thus never reported as the victim's death (it is [`exit_seen::PID_REUSED`])
//! and never followed as the victim past the moment it is named by a kill of its own.
//!
//! The time of a [`GroupExited`] is the kernel's where it notified the parent: on every kernel
//! since 5.3 `do_notify_parent` wakes the pidfd's waiters and then sends the exit signal, whose
//! `signal_generate` the `parent_notified` hook reports ([`DeathWatch::notified`]; that also
//! proves which process the pidfd names, with no /proc read, and dates the victims found
//! reaped at their kill). Else (the parent ignores SIGCHLD, the exit signal is 0, the hook is
//! not attached) it is when userspace saw the pidfd readable (CLOCK_MONOTONIC, like kernel
//! events): a fraction of a millisecond after the fact when deaths are awaited, up to the
//! lazy poll's 20 ms while they come in a stream and are read at the loop's other wake-ups
//! ([`DeathWatch::set_lazy`]).

use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
};

use oomtrace_common::{GroupExited, Header, TASK_COMM_LEN, USERSPACE_CPU, exit_seen};

use crate::{
    event::{Event, Payload},
    host::procfs::{same_start, start_ns_of},
};

/// Processes watched at most at once (one descriptor each). Past this, new victims are not
/// watched and their findings say so.
pub(crate) const MAX_WATCHED: usize = 16_384;

/// Why a process cannot be watched.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchError {
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
    /// CLOCK_MONOTONIC just after `pidfd_open` returned.
    opened_ns: u64,
    /// When the kernel last saw a thread of it pass `sched_process_exit` (0: not yet).
    last_exit_ns: u64,
    /// The pidfd is known to name the process started at `start_ns` (or `start_ns` is 0 and
    /// nothing can be checked).
    verified: bool,
    /// In the epoll set (awaited); else polled at [`DeathWatch::ready`] (see
    /// [`DeathWatch::set_lazy`]).
    in_epoll: bool,
}

/// Which process a pidfd names, as far as can be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Identity {
    /// The process started at the victim's start time.
    Victim,
    /// A process started at another time: the victim was gone when the pidfd was opened.
    Other,
    /// Reaped before it could be checked.
    Unknown,
}

/// What [`DeathWatch::watch`] did.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Watching {
    /// [`GroupExited`] events due at once: the process is already gone, or an earlier watch
    /// of the same pid turned out to follow another process.
    pub(crate) events: Vec<Event>,
    /// A pidfd was opened and is watched from now on.
    pub(crate) started: bool,
}

/// An epoll set of pidfds, readable when any watched process has finished exiting.
pub(crate) struct DeathWatch {
    epoll: OwnedFd,
    watched: HashMap<u64, Watched>,
    /// pid → token, so a process is watched once however often it is named.
    tokens: HashMap<u32, u64>,
    next_token: u64,
    /// The latest processes (pid, start time) found gone at their watch, whose exit was
    /// reported then: a kill names its victim twice (its mark and its SIGKILL), and in an OOM
    /// storm the victim is often reaped before the first (~40 % of the kills): the second is
    /// not asked of the kernel (`pidfd_open`, ESRCH) nor reported again. At most
    /// [`GONE_KEPT`]; a start time of 0 (unknown) is never kept.
    gone: std::collections::VecDeque<(u32, u64)>,
    /// New pidfds stay out of the epoll set: deaths are read at the loop's other wake-ups
    /// ([`DeathWatch::set_lazy`]).
    lazy: bool,
    /// Deaths reported since [`DeathWatch::take_died`].
    died: u32,
}

/// Processes found gone remembered at most (see `DeathWatch::gone`).
const GONE_KEPT: usize = 64;

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

/// Whether `pidfd_open`'s error says the process is gone (exited and reaped), not that the call
/// failed. ESRCH on every kernel when no task has the pid; when a `struct pid` is still
/// referenced but no longer names a thread-group leader (the process was reaped), 6.12 says
/// EINVAL (`pidfd_prepare`: `!pid_has_task(pid, PIDTYPE_TGID)`) and 7.3 ENOENT. EINVAL also
/// answers a live thread's id that is not a process's: `listed` (its /proc entry exists) tells
/// the two apart.
fn gone_error(errno: Option<i32>, listed: impl FnOnce() -> bool) -> bool {
    match errno {
        Some(libc::ESRCH) => true,
        Some(libc::EINVAL | libc::ENOENT) => !listed(),
        _ => false,
    }
}

/// Whether the process `pidfd` names has not been reaped yet (`pidfd_send_signal(pidfd, 0)`:
/// a zombie still takes signal 0; a reaped process is ESRCH).
fn unreaped(pidfd: &OwnedFd) -> bool {
    // SAFETY: plain syscall; a valid descriptor, a null siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// `EPOLL_CTL_ADD` or `EPOLL_CTL_DEL` of `pidfd` (as `token`) in the set `epoll`.
fn epoll_ctl(epoll: &OwnedFd, op: i32, pidfd: &OwnedFd, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: both descriptors are valid and owned; ev outlives the call.
    let rc = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, pidfd.as_raw_fd(), &raw mut ev) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `pidfd` polls readable now (its process has finished exiting).
fn readable(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a timeout of 0 never blocks.
    let n = unsafe { libc::poll(&raw mut p, 1, 0) };
    n == 1 && p.revents & libc::POLLIN != 0
}

/// Which process the pidfd of `pid` names, from its start time in `/proc` (read while the
/// process is still unreaped, so that the pid named it during the read).
fn identity(proc_root: &Path, pidfd: &OwnedFd, pid: u32, start_ns: u64) -> Identity {
    let now = start_ns_of(proc_root, pid);
    if !unreaped(pidfd) {
        return Identity::Unknown;
    }
    match now {
        Some(now) if same_start(start_ns, now) => Identity::Victim,
        Some(_) => Identity::Other,
        // Unreaped, yet no /proc entry: a /proc of another PID namespace, or unreadable.
        None => Identity::Unknown,
    }
}

/// Whether pidfds work here (Linux ≥ 5.3 and not filtered by seccomp).
pub fn available() -> Result<(), String> {
    pidfd_open(std::process::id())
        .map(drop)
        .map_err(|e| format!("pidfd_open is not available ({e}): death cannot be observed"))
}

/// A userspace-observed event about `pid`, stamped now.
pub(crate) fn userspace_event(pid: u32, comm: [u8; TASK_COMM_LEN], payload: Payload) -> Event {
    let kind = payload.kind();
    Event {
        header: Header {
            kind: kind as u32,
            cpu: USERSPACE_CPU,
            ts_ns: crate::clock::monotonic_now(),
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
    pub(crate) fn new() -> io::Result<DeathWatch> {
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
            gone: std::collections::VecDeque::new(),
            lazy: false,
            died: 0,
        })
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.watched.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Starts watching process `pid` (a tgid) whose leader started at `start_ns` (ns since
    /// boot; 0 if unknown: then pid reuse cannot be ruled out), named by the kernel through
    /// thread `tid`. Its readiness comes through [`Self::ready`] (a process that is already a
    /// zombie is ready at once); a process watched already is not watched twice.
    pub(crate) fn watch(
        &mut self,
        proc_root: &Path,
        (pid, tid): (u32, u32),
        start_ns: u64,
        comm: [u8; TASK_COMM_LEN],
    ) -> Result<Watching, WatchError> {
        let mut out = Watching::default();
        if let Some(&token) = self.tokens.get(&pid) {
            let w = &self.watched[&token];
            // Named again with another start time: one of the two had the pid after the other
            // was reaped. Only a pidfd not yet known to name its victim is in doubt.
            if start_ns == 0 || w.start_ns == 0 || w.verified || same_start(start_ns, w.start_ns) {
                return Ok(out);
            }
            match identity(proc_root, &w.pidfd, pid, w.start_ns) {
                Identity::Victim => return Ok(out),
                how => {
                    let w = self.forget(token);
                    out.events.push(w.exited(if how == Identity::Other {
                        exit_seen::PID_REUSED
                    } else {
                        exit_seen::GONE
                    }));
                }
            }
        }
        // Found gone already (its exit reported then).
        if start_ns != 0 && self.gone.contains(&(pid, start_ns)) {
            return Ok(out);
        }
        if self.watched.len() >= MAX_WATCHED {
            return Err(WatchError::Full);
        }
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e)
                if gone_error(e.raw_os_error(), || {
                    proc_root.join(pid.to_string()).exists()
                }) =>
            {
                out.events
                    .push(exited(pid, tid, start_ns, comm, exit_seen::GONE));
                self.died += 1;
                if start_ns != 0 {
                    if self.gone.len() >= GONE_KEPT {
                        self.gone.pop_front();
                    }
                    self.gone.push_back((pid, start_ns));
                }
                return Ok(out);
            }
            Err(source) => return Err(WatchError::PidfdOpen { pid, source }),
        };
        // Which process the pidfd pins is settled later (see the module's documentation):
        // reading /proc now would contend with the victim's own exit.
        let opened_ns = crate::clock::monotonic_now();
        let token = self.next_token;
        self.next_token += 1;
        if !self.lazy {
            epoll_ctl(&self.epoll, libc::EPOLL_CTL_ADD, &pidfd, token)
                .map_err(|source| WatchError::Epoll { pid, source })?;
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
                opened_ns,
                last_exit_ns: 0,
                verified: start_ns == 0,
                in_epoll: !self.lazy,
            },
        );
        out.started = true;
        Ok(out)
    }

    /// The kernel saw a thread of process `pid` started at `start_ns` pass
    /// `sched_process_exit` at `ts_ns` (CLOCK_MONOTONIC, like the bpf clock). After the pidfd
    /// was opened, that proves the pidfd names that process: it was not reaped yet, so the pid
    /// was still its own.
    pub(crate) fn kernel_exit(&mut self, pid: u32, start_ns: u64, ts_ns: u64) {
        let Some(token) = self.tokens.get(&pid) else {
            return;
        };
        if let Some(w) = self.watched.get_mut(token)
            && (w.start_ns == 0 || (start_ns != 0 && same_start(w.start_ns, start_ns)))
        {
            w.last_exit_ns = w.last_exit_ns.max(ts_ns);
            if ts_ns > w.opened_ns {
                w.verified = true;
            }
        }
    }

    /// The kernel saw a thread of process `pid` started at `start_ns` send its exit signal to
    /// another process at `ts_ns` (`do_notify_parent`: [`EventKind::ParentNotified`]): the
    /// kernel's own word that this process (pid and start time) died then, whatever process
    /// the pidfd names (no /proc read). Taken when:
    /// - it came after every thread's `sched_process_exit` seen (a tracer detaching from a
    ///   zombie also notifies, from a live process);
    /// - the pidfd polls readable now: the process has finished exiting. (An exiting process
    ///   also notifies for the zombie children it hands to a new parent, from the start of
    ///   its own `exit_notify`, microseconds before it is dead: read once its pidfd is
    ///   readable, such a notification dates its death that much early.)
    ///
    /// Else `None`: the pidfd tells as before ([`DeathWatch::ready`]).
    ///
    /// [`EventKind::ParentNotified`]: oomtrace_common::EventKind::ParentNotified
    pub(crate) fn notified(&mut self, pid: u32, start_ns: u64, ts_ns: u64) -> Option<Event> {
        let &token = self.tokens.get(&pid)?;
        let w = self.watched.get(&token)?;
        // A watch without a start time (the classic tracepoints') is of whatever the pid named
        // at its open: nothing can be checked, as at its pidfd.
        let same = w.start_ns == 0 || (start_ns != 0 && same_start(w.start_ns, start_ns));
        let proves = same && ts_ns >= w.last_exit_ns;
        if !proves || !readable(&w.pidfd) {
            return None;
        }
        let w = self.forget(token);
        self.died += 1;
        let mut ev = w.exited(exit_seen::PARENT_NOTIFIED);
        ev.header.ts_ns = ts_ns;
        Some(ev)
    }

    /// Deaths are awaited (`lazy` false: every pidfd is in the epoll set, which wakes the loop
    /// at each death) or read at the loop's other wake-ups (true: no pidfd is in it, and
    /// [`DeathWatch::ready`] polls them). In an OOM storm a death's wake-up is most of what
    /// it costs, while the kernel dates deaths itself ([`DeathWatch::notified`], from the
    /// ring the loop reads at every wake) where the parent is notified.
    pub(crate) fn set_lazy(&mut self, lazy: bool) {
        if lazy == self.lazy {
            return;
        }
        self.lazy = lazy;
        for (&token, w) in &mut self.watched {
            if w.in_epoll != lazy {
                continue;
            }
            let op = if lazy {
                libc::EPOLL_CTL_DEL
            } else {
                libc::EPOLL_CTL_ADD
            };
            // One the set refuses stays polled at `ready`.
            if epoll_ctl(&self.epoll, op, &w.pidfd, token).is_ok() {
                w.in_epoll = !lazy;
            }
        }
    }

    /// Whether deaths are read at the loop's other wake-ups ([`DeathWatch::set_lazy`]).
    pub(crate) fn lazy(&self) -> bool {
        self.lazy
    }

    /// Deaths reported since the last call.
    pub(crate) fn take_died(&mut self) -> u32 {
        std::mem::take(&mut self.died)
    }

    fn forget(&mut self, token: u64) -> Watched {
        let w = self
            .watched
            .remove(&token)
            .expect("a token names a watched process");
        self.tokens.remove(&w.pid);
        // Dropping the pidfd (by the caller) removes it from the epoll set.
        w
    }

    /// The processes that have finished exiting since the last call (without blocking); they
    /// are no longer watched. A pidfd not known to name its victim is checked now (under
    /// `proc_root`): a later process that had the pid is reported as [`exit_seen::PID_REUSED`],
    /// one reaped before it could be told apart as [`exit_seen::GONE`].
    pub(crate) fn ready(&mut self, proc_root: &Path) -> Vec<Event> {
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
                if self.watched.contains_key(&token) {
                    out.push(self.finish(token, proc_root));
                }
            }
            if n < evs.len() {
                break;
            }
        }
        // Those out of the epoll set (lazy), polled.
        let mut polled: Vec<(u64, libc::pollfd)> = self
            .watched
            .iter()
            .filter(|(_, w)| !w.in_epoll)
            .map(|(&token, w)| {
                let p = libc::pollfd {
                    fd: w.pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                (token, p)
            })
            .collect();
        if !polled.is_empty() {
            let mut fds: Vec<libc::pollfd> = polled.iter().map(|(_, p)| *p).collect();
            // SAFETY: `fds` is a valid array of its length; a timeout of 0 never blocks.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
            if n > 0 {
                for ((token, _), p) in polled.drain(..).zip(fds) {
                    if p.revents & libc::POLLIN != 0 {
                        out.push(self.finish(token, proc_root));
                    }
                }
            }
        }
        self.died += out.len() as u32;
        out
    }

    /// The death of watched `token`, whose pidfd polled readable: no longer watched.
    fn finish(&mut self, token: u64, proc_root: &Path) -> Event {
        let w = self.forget(token);
        let how = if w.verified {
            exit_seen::PIDFD
        } else {
            match identity(proc_root, &w.pidfd, w.pid, w.start_ns) {
                Identity::Victim => exit_seen::PIDFD,
                Identity::Other => exit_seen::PID_REUSED,
                Identity::Unknown => exit_seen::GONE,
            }
        };
        w.exited(how)
    }
}

impl Watched {
    fn exited(self, how: u32) -> Event {
        exited(self.pid, self.tid, self.start_ns, self.comm, how)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn wait_ready(w: &mut DeathWatch, timeout: Duration) -> Vec<Event> {
        let until = Instant::now() + timeout;
        loop {
            let r = w.ready(Path::new("/proc"));
            if !r.is_empty() || Instant::now() > until {
                return r;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap()
    }

    fn how(evs: &[Event]) -> Vec<(u32, u32)> {
        evs.iter()
            .map(|e| match e.payload {
                Payload::GroupExited(g) => (g.pid, g.how),
                _ => panic!("not a GroupExited: {e:?}"),
            })
            .collect()
    }

    #[test]
    fn a_child_is_seen_to_finish_exiting_and_a_live_one_is_not() {
        available().expect("pidfd_open works on every kernel oomtrace runs on");
        let proc_root = Path::new("/proc");
        let mut w = DeathWatch::new().unwrap();
        let mut live = sleeper();
        let mut quick = std::process::Command::new("sleep")
            .arg("0.05")
            .spawn()
            .unwrap();
        let start = |pid| start_ns_of(proc_root, pid).expect("start time");
        let (live_pid, quick_pid) = (live.id(), quick.id());
        let (live_start, quick_start) = (start(live_pid), start(quick_pid));
        let watch = |w: &mut DeathWatch, pid, start| w.watch(proc_root, (pid, pid), start, [0; 16]);
        let started = Watching {
            events: vec![],
            started: true,
        };
        assert_eq!(watch(&mut w, live_pid, live_start).unwrap(), started);
        assert_eq!(watch(&mut w, quick_pid, quick_start).unwrap(), started);
        // Watching twice is a no-op.
        assert_eq!(
            watch(&mut w, quick_pid, quick_start).unwrap(),
            Watching::default()
        );
        assert_eq!(w.len(), 2);
        // Not waited for: it finishes exiting and stays a zombie, which is dead.
        let got = wait_ready(&mut w, Duration::from_secs(10));
        assert_eq!(how(&got), [(quick_pid, exit_seen::PIDFD)]);
        assert_eq!(got[0].header.cpu, USERSPACE_CPU);
        assert!(
            w.ready(proc_root).is_empty(),
            "the live one must not be reported"
        );
        quick.wait().unwrap();
        live.kill().unwrap();
        let got = wait_ready(&mut w, Duration::from_secs(10));
        assert_eq!(how(&got), [(live_pid, exit_seen::PIDFD)]);
        live.wait().unwrap();
        assert!(w.is_empty());
    }

    /// The kernel's notification of the parent dates a death, with no /proc read: only the
    /// victim's (its start time), only after its threads' exits, and only once the pidfd is
    /// readable (an exiting process notifies for the zombie children it hands on before it is
    /// dead itself).
    #[test]
    fn the_parents_notification_dates_a_death_it_proves() {
        let proc_root = Path::new("/proc");
        let mut w = DeathWatch::new().unwrap();
        let mut child = sleeper();
        let pid = child.id();
        let start = start_ns_of(proc_root, pid).unwrap();
        assert!(
            w.watch(proc_root, (pid, pid), start, [0; 16])
                .unwrap()
                .started
        );
        let after_open = crate::clock::monotonic_now();
        // Alive: its pidfd is not readable, whatever the record says.
        assert_eq!(w.notified(pid, start, after_open + 1), None);
        child.kill().unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while !readable(&w.watched.values().next().unwrap().pidfd) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let exit_ns = crate::clock::monotonic_now();
        w.kernel_exit(pid, start, exit_ns);
        // Another process's start, or a time before its last exit: not its death.
        assert_eq!(w.notified(pid, earlier(start), exit_ns + 1), None);
        assert_eq!(w.notified(pid, start, exit_ns - 1), None);
        assert_eq!(w.len(), 1);
        let dead = w
            .notified(pid, start, exit_ns + 7)
            .expect("dated by the notification");
        assert_eq!(dead.header.ts_ns, exit_ns + 7);
        assert_eq!(how(&[dead]), [(pid, exit_seen::PARENT_NOTIFIED)]);
        assert!(w.is_empty());
        assert!(w.ready(proc_root).is_empty(), "reported once");
        assert_eq!(w.take_died(), 1);
        child.wait().unwrap();
    }

    /// Lazy, no pidfd is in the epoll set (whose readiness wakes the loop): deaths are found
    /// by polling them at `ready`. Awaited again, every pidfd is back in the set, and one that
    /// fired meanwhile makes it readable at once.
    #[test]
    fn lazy_deaths_leave_the_epoll_set_and_are_polled() {
        let proc_root = Path::new("/proc");
        let mut w = DeathWatch::new().unwrap();
        let set_readable = |w: &DeathWatch| readable(&w.epoll);
        let mut before = sleeper();
        let (b_pid, b_start) = (before.id(), start_ns_of(proc_root, before.id()).unwrap());
        assert!(
            w.watch(proc_root, (b_pid, b_pid), b_start, [0; 16])
                .unwrap()
                .started
        );
        w.set_lazy(true);
        assert!(w.lazy());
        let mut during = sleeper();
        let (d_pid, d_start) = (during.id(), start_ns_of(proc_root, during.id()).unwrap());
        assert!(
            w.watch(proc_root, (d_pid, d_pid), d_start, [0; 16])
                .unwrap()
                .started
        );
        before.kill().unwrap();
        before.wait().unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.is_empty() && Instant::now() < until {
            assert!(!set_readable(&w), "a lazy death must not wake the loop");
            got = w.ready(proc_root);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(how(&got), [(b_pid, exit_seen::GONE)]);
        during.kill().unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while !readable(&w.watched.values().next().unwrap().pidfd) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!set_readable(&w), "a lazy death must not wake the loop");
        w.set_lazy(false);
        assert!(
            set_readable(&w),
            "awaited again: the death that came meanwhile wakes"
        );
        let got = wait_ready(&mut w, Duration::from_secs(10));
        assert_eq!(how(&got), [(d_pid, exit_seen::PIDFD)]);
        assert_eq!(w.take_died(), 2);
        during.wait().unwrap();
    }

    /// A start time before `real` (an earlier process's): half of it, as the machine may have
    /// been up for less than any fixed span (a fresh CI machine, a VM restored from a snapshot).
    fn earlier(real: u64) -> u64 {
        real / 2
    }

    /// The victim started at `victim_start` had the pid before the process the test spawns
    /// (which plays the later process that got the pid): it must never be reported as the
    /// victim's death, nor followed as the victim once it is named by a kill of its own.
    #[test]
    fn a_reused_pid_is_never_the_victim() {
        let proc_root = Path::new("/proc");
        let mut w = DeathWatch::new().unwrap();
        // Already reaped when named: gone at once.
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        let got = w.watch(proc_root, (pid, pid), 12_345, [0; 16]).unwrap();
        assert!(!got.started);
        assert_eq!(how(&got.events), [(pid, exit_seen::GONE)]);

        // The later process exits and is a zombie when its pidfd is handled: pid reused.
        let mut later = sleeper();
        let pid = later.id();
        let real = start_ns_of(proc_root, pid).unwrap();
        let victim_start = earlier(real);
        let before_open = crate::clock::monotonic_now();
        assert!(
            w.watch(proc_root, (pid, pid), victim_start, [0; 16])
                .unwrap()
                .started
        );
        // The kernel's word counts only for the victim's start time, and only after the open.
        w.kernel_exit(pid, real, crate::clock::monotonic_now());
        w.kernel_exit(pid, victim_start, before_open);
        later.kill().unwrap();
        let got = wait_ready(&mut w, Duration::from_secs(10));
        assert_eq!(how(&got), [(pid, exit_seen::PID_REUSED)]);
        later.wait().unwrap();

        // Reaped before its pidfd is handled: it cannot be told apart, so it is not reported
        // as seen dying.
        let mut later = sleeper();
        let pid = later.id();
        let victim_start = earlier(start_ns_of(proc_root, pid).unwrap());
        assert!(
            w.watch(proc_root, (pid, pid), victim_start, [0; 16])
                .unwrap()
                .started
        );
        later.kill().unwrap();
        later.wait().unwrap();
        let got = wait_ready(&mut w, Duration::from_secs(10));
        assert_eq!(how(&got), [(pid, exit_seen::GONE)]);

        // Named again by a kill of its own (its real start time): the first watch followed
        // the wrong process and says so; the pid is then followed as the new victim.
        let mut later = sleeper();
        let pid = later.id();
        let real = start_ns_of(proc_root, pid).unwrap();
        assert!(
            w.watch(proc_root, (pid, pid), earlier(real), [0; 16])
                .unwrap()
                .started
        );
        let got = w.watch(proc_root, (pid, pid), real, [0; 16]).unwrap();
        assert!(got.started);
        assert_eq!(how(&got.events), [(pid, exit_seen::PID_REUSED)]);
        assert_eq!(w.len(), 1);
        later.kill().unwrap();
        let got = wait_ready(&mut w, Duration::from_secs(10));
        assert_eq!(how(&got), [(pid, exit_seen::PIDFD)]);
        later.wait().unwrap();
        assert!(w.is_empty());
    }

    /// A thread of the victim seen exiting by the kernel after the open proves the pidfd
    /// names the victim: no /proc read is needed, and its death counts even if it was reaped
    /// before the pidfd was handled.
    #[test]
    fn the_kernels_exit_after_the_open_vouches_for_the_pidfd() {
        let proc_root = Path::new("/proc");
        let mut w = DeathWatch::new().unwrap();
        let mut victim = sleeper();
        let pid = victim.id();
        let start = start_ns_of(proc_root, pid).unwrap();
        assert!(
            w.watch(proc_root, (pid, pid), start, [0; 16])
                .unwrap()
                .started
        );
        w.kernel_exit(pid, start, crate::clock::monotonic_now());
        victim.kill().unwrap();
        victim.wait().unwrap();
        let got = wait_ready(&mut w, Duration::from_secs(10));
        assert_eq!(how(&got), [(pid, exit_seen::PIDFD)]);
    }

    /// pidfd_open of a process already gone: ESRCH (every kernel), EINVAL (6.12) or ENOENT
    /// (7.3) while its pid is still referenced. Gone, never a failure (which would leave the
    /// victim unwatched and flagged stuck); EINVAL for a listed thread id is a failure.
    #[test]
    fn pidfd_open_errors_of_a_gone_process_per_kernel() {
        let gone = || false;
        let listed = || true;
        for (kernel, errno) in [
            ("5.10", libc::ESRCH),
            ("6.12", libc::EINVAL),
            ("7.3", libc::ENOENT),
        ] {
            assert!(gone_error(Some(errno), gone), "{kernel}: errno {errno}");
        }
        assert!(gone_error(Some(libc::ESRCH), listed));
        assert!(!gone_error(Some(libc::EINVAL), listed), "a live thread id");
        assert!(!gone_error(Some(libc::ENOENT), listed));
        assert!(!gone_error(Some(libc::EMFILE), gone));
        assert!(!gone_error(None, gone));
    }

    /// The whole path: a /proc without the pid, and a pid no task has.
    #[test]
    fn watching_a_reaped_process_reports_it_gone() {
        let mut w = DeathWatch::new().unwrap();
        let mut child = sleeper();
        let pid = child.id();
        child.kill().unwrap();
        child.wait().unwrap();
        let empty = std::env::temp_dir().join(format!("oomtrace-noproc-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let got = w.watch(&empty, (pid, pid), 0, [0; TASK_COMM_LEN]);
        std::fs::remove_dir(&empty).unwrap();
        let got = got.expect("gone is not a failure");
        assert!(!got.started);
        assert_eq!(how(&got.events), [(pid, exit_seen::GONE)]);
    }

    /// A kill names its victim twice (mark, SIGKILL): one found gone at the first is reported
    /// once; the same pid with another start time is another process, asked anew.
    #[test]
    fn a_process_found_gone_is_reported_once() {
        let mut w = DeathWatch::new().unwrap();
        let mut child = sleeper();
        let pid = child.id();
        child.kill().unwrap();
        child.wait().unwrap();
        let proc_root = Path::new("/proc");
        let first = w
            .watch(proc_root, (pid, pid), 77, [0; TASK_COMM_LEN])
            .unwrap();
        assert_eq!(how(&first.events), [(pid, exit_seen::GONE)]);
        let again = w
            .watch(proc_root, (pid, pid), 77, [0; TASK_COMM_LEN])
            .unwrap();
        assert_eq!(again, Watching::default());
        let other = w
            .watch(proc_root, (pid, pid), 78, [0; TASK_COMM_LEN])
            .unwrap();
        assert_eq!(how(&other.events), [(pid, exit_seen::GONE)]);
        // Unknown start times are never taken for the same process.
        for _ in 0..2 {
            let unknown = w
                .watch(proc_root, (pid, pid), 0, [0; TASK_COMM_LEN])
                .unwrap();
            assert_eq!(how(&unknown.events), [(pid, exit_seen::GONE)]);
        }
    }
}
