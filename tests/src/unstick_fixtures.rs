//! Fixtures for the `unstick` security tests: victims an unprivileged user shapes to turn
//! root's `unstick` against the host, and the processes around them.
//!
//! The processes made here by `fork` from the (multi-threaded) test process call only libc
//! between the fork and their end (no Rust allocation, no locks of the parent's): plain
//! syscalls, `pthread_create` (glibc resets its own locks in a fork child) and `mmap`.
//! Everything is ended by pid in `Drop`, and only what was started here.

use std::{
    ffi::CString,
    os::unix::process::CommandExt as _,
    process::Command,
    time::{Duration, Instant},
};

use crate::{Proc, Sandbox, hog_bin, spawn_piped, with_hog_args};

/// The uid victims of these tests run as (`nobody`): not root, and not oomtrace's.
pub const USER: u32 = 65534;

/// Lets `uid` move its own process into `sandbox` (the hog joins its cgroup itself): the
/// sandbox's `cgroup.procs` is given to it (cgroup v2 asks for write access to the common
/// ancestor's `cgroup.procs`; a process already in the sandbox moves within it).
pub fn let_user_join(sandbox: &Sandbox, uid: u32) {
    for f in ["cgroup.procs", "tasks"] {
        let p = sandbox.dir().join(f);
        if p.exists() {
            std::os::unix::fs::chown(&p, Some(uid), Some(uid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
        }
    }
}

/// Starts `oomtrace-hog MODE --cgroup <sandbox> ARGS…` as `uid`: moved into the sandbox as
/// root first, then the uid dropped, then exec'd.
pub fn spawn_hog_as(sandbox: &Sandbox, mode: &str, args: &[String], uid: u32) -> Proc {
    let_user_join(sandbox, uid);
    let procs = CString::new(
        sandbox
            .dir()
            .join("cgroup.procs")
            .to_str()
            .expect("utf-8")
            .to_string(),
    )
    .expect("no NUL");
    let mut cmd = with_hog_args(Command::new(hog_bin()), sandbox, mode, args);
    // SAFETY: between fork and exec: open/write/close and the set*id calls only.
    unsafe {
        cmd.pre_exec(move || {
            join_and_drop(procs.as_ptr(), uid);
            Ok(())
        });
    }
    spawn_piped(cmd, "oomtrace-hog as another uid")
}

/// Starts `oomtrace-hog trace-hold --pid TID` as `uid`: seizes that thread with
/// PTRACE_O_TRACEEXIT and never lets it out of its exit stop. Returns once it said `seized`.
pub fn user_tracer(sandbox: &Sandbox, tid: u32, uid: u32) -> Proc {
    let mut cmd = with_hog_args(
        Command::new(hog_bin()),
        sandbox,
        "trace-hold",
        &["--pid".to_string(), tid.to_string()],
    );
    // SAFETY: between fork and exec: the set*id calls only.
    unsafe {
        cmd.pre_exec(move || {
            drop_to(uid);
            Ok(())
        });
    }
    let mut p = spawn_piped(cmd, "oomtrace-hog trace-hold as another uid");
    assert_eq!(p.line(), "seized", "the user's tracer did not seize {tid}");
    p
}

/// Writes "0" (this process) to the cgroup.procs at `procs`, then becomes `uid`.
///
/// # Safety
/// `procs` is a NUL-terminated path. Async-signal-safe calls only (used after fork).
unsafe fn join_and_drop(procs: *const libc::c_char, uid: u32) {
    // SAFETY: plain syscalls on a valid path and buffer.
    unsafe {
        let fd = libc::open(procs, libc::O_WRONLY);
        if fd >= 0 {
            libc::write(fd, c"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
    drop_to(uid);
}

/// setgroups(0), setgid, setuid to `uid`, and dumpable again (a uid change clears it; the
/// user's own tracer must be able to attach, as it could to any of the user's processes).
fn drop_to(uid: u32) {
    // SAFETY: plain syscalls; async-signal-safe.
    unsafe {
        libc::setgroups(0, std::ptr::null());
        libc::setgid(uid);
        libc::setuid(uid);
        libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
    }
}

/// A pipe, both ends O_CLOEXEC.
fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: a valid two-int array.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

/// Reads one u32 from `fd` within `timeout`.
fn read_u32(fd: i32, timeout: Duration) -> u32 {
    let end = Instant::now() + timeout;
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "a fixture process said nothing in {timeout:?}"
        );
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&raw mut p, 1, left.as_millis() as i32) } > 0 {
            break;
        }
    }
    let mut b = [0u8; 4];
    // SAFETY: a 4-byte buffer.
    let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 4) };
    assert_eq!(n, 4, "a fixture process closed its pipe");
    u32::from_ne_bytes(b)
}

/// Writes this thread's tid to `fd` (after fork: syscalls only).
fn say_tid(fd: i32) {
    // SAFETY: plain syscalls.
    unsafe {
        let tid = libc::gettid() as u32;
        libc::write(fd, tid.to_ne_bytes().as_ptr().cast(), 4);
    }
}

extern "C" fn idle_thread(arg: *mut libc::c_void) -> *mut libc::c_void {
    say_tid(arg as usize as i32);
    loop {
        // SAFETY: no preconditions.
        unsafe { libc::pause() };
    }
}

/// Starts a thread that says its tid on `fd` and then sleeps forever.
fn idle_thread_saying_on(fd: i32) {
    let mut t: libc::pthread_t = 0;
    // SAFETY: a valid start routine; its argument is an fd number.
    unsafe {
        libc::pthread_create(
            &raw mut t,
            std::ptr::null(),
            idle_thread,
            fd as usize as *mut libc::c_void,
        );
    }
}

/// Waits for one byte on `fd`, then allocates (touching every page) until killed.
fn allocate_on_go(fd: i32) -> ! {
    let mut b = [0u8; 1];
    // SAFETY: plain syscalls; the mappings are ours.
    unsafe {
        libc::read(fd, b.as_mut_ptr().cast(), 1);
        loop {
            let p = libc::mmap(
                std::ptr::null_mut(),
                1 << 20,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                libc::pause();
                continue;
            }
            let p = p.cast::<u8>();
            for i in (0..1 << 20).step_by(4096) {
                std::ptr::write_volatile(p.add(i), 1);
            }
        }
    }
}

/// Sends the "go" byte on `fd`.
fn go(fd: i32) {
    // SAFETY: a one-byte buffer.
    let n = unsafe { libc::write(fd, c"g".as_ptr().cast(), 1) };
    assert_eq!(n, 1, "telling the victim to allocate");
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: a pid this fixture started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Whether our child `pid` has exited (reaps it if so).
pub fn child_exited(pid: u32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid on our own child; WNOHANG never blocks.
    let r = unsafe { libc::waitpid(pid as i32, &raw mut status, libc::WNOHANG) };
    r == pid as i32 || r < 0
}

/// The TRACEME shape: a root supervisor (ignores SIGTERM) started an unprivileged
/// victim whose leader did PTRACE_TRACEME (the supervisor is its tracer) and whose second
/// thread is seized by the user's own tracer with PTRACE_O_TRACEEXIT. On "go" the victim
/// allocates in its sandbox until the OOM killer kills it; then its leader is a zombie still
/// traced by the supervisor and its second thread is held in its exit stop by the user's tracer.
pub struct TracemeShape {
    /// Root, our child; its SIGTERM is ignored.
    pub supervisor: u32,
    /// The user's process (the supervisor's child), in the sandbox.
    pub victim: u32,
    /// The victim's second thread, seized by `tracer`.
    pub thread: u32,
    /// The user's tracer (our child, running as [`USER`]).
    pub tracer: Proc,
    go: i32,
    fds: [i32; 2],
}

impl TracemeShape {
    pub fn start(sandbox: &Sandbox, uid: u32) -> TracemeShape {
        let (rep_r, rep_w) = pipe();
        let (go_r, go_w) = pipe();
        // SAFETY: the child runs only libc calls (see the module docs).
        let supervisor = unsafe { libc::fork() };
        assert!(supervisor >= 0, "fork: {}", std::io::Error::last_os_error());
        if supervisor == 0 {
            // SAFETY: after fork: syscalls only.
            unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
                let victim = libc::fork();
                if victim == 0 {
                    libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
                    drop_to(uid);
                    say_tid(rep_w);
                    idle_thread_saying_on(rep_w);
                    allocate_on_go(go_r);
                }
                loop {
                    libc::pause();
                }
            }
        }
        let supervisor = supervisor as u32;
        let victim = read_u32(rep_r, Duration::from_secs(10));
        let thread = read_u32(rep_r, Duration::from_secs(10));
        // Into the sandbox, all its threads (root moves it: the user could not).
        std::fs::write(sandbox.dir().join("cgroup.procs"), victim.to_string())
            .expect("moving the victim into the sandbox");
        let tracer = user_tracer(sandbox, thread, uid);
        TracemeShape {
            supervisor,
            victim,
            thread,
            tracer,
            go: go_w,
            fds: [rep_r, go_r],
        }
    }

    /// The victim allocates until the OOM killer kills it.
    pub fn go(&self) {
        go(self.go);
    }

    /// Whether the supervisor is still running (untouched).
    pub fn supervisor_alive(&self) -> bool {
        !child_exited(self.supervisor)
    }
}

impl Drop for TracemeShape {
    fn drop(&mut self) {
        kill(self.victim, libc::SIGKILL);
        let _ = self.tracer.child.kill();
        let _ = self.tracer.child.wait();
        kill(self.supervisor, libc::SIGKILL);
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(self.supervisor as i32, &raw mut status, 0) };
        for fd in [self.go, self.fds[0], self.fds[1]] {
            // SAFETY: fds this fixture opened.
            unsafe { libc::close(fd) };
        }
    }
}

/// A victim with `threads` threads and `fds` open sockets (unix datagram), in a sandbox; each
/// thread seized by this test's thread with PTRACE_O_TRACEEXIT, so that once killed every
/// thread stops at its exit with the fd table still there.
pub struct Crowd {
    pub victim: u32,
    pub tids: Vec<u32>,
    go: i32,
    fds: [i32; 2],
}

impl Crowd {
    pub fn start(sandbox: &Sandbox, threads: usize, fds: usize) -> Crowd {
        let (rep_r, rep_w) = pipe();
        let (go_r, go_w) = pipe();
        let procs = CString::new(
            sandbox
                .dir()
                .join("cgroup.procs")
                .to_str()
                .expect("utf-8")
                .to_string(),
        )
        .expect("no NUL");
        // SAFETY: the child runs only libc calls (see the module docs).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: after fork: syscalls only.
            unsafe {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd >= 0 {
                    libc::write(fd, c"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
                let lim = libc::rlimit {
                    rlim_cur: (fds + 64) as u64,
                    rlim_max: (fds + 64) as u64,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim);
                for _ in 0..fds {
                    libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
                }
                say_tid(rep_w);
                for _ in 1..threads {
                    idle_thread_saying_on(rep_w);
                }
                allocate_on_go(go_r);
            }
        }
        let victim = pid as u32;
        let mut tids = vec![read_u32(rep_r, Duration::from_secs(30))];
        for _ in 1..threads {
            tids.push(read_u32(rep_r, Duration::from_secs(30)));
        }
        Crowd {
            victim,
            tids,
            go: go_w,
            fds: [rep_r, go_r],
        }
    }

    pub fn go(&self) {
        go(self.go);
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        kill(self.victim, libc::SIGKILL);
        let mut status = 0;
        // SAFETY: our own child (the victim was forked here).
        unsafe { libc::waitpid(self.victim as i32, &raw mut status, 0) };
        for fd in [self.go, self.fds[0], self.fds[1]] {
            // SAFETY: fds this fixture opened.
            unsafe { libc::close(fd) };
        }
    }
}

/// A memcg limit file of `sandbox` (v2 `memory.max`, v1 `memory.limit_in_bytes`) as a number.
pub fn limit_of(sandbox: &Sandbox) -> u64 {
    let f = match sandbox.version() {
        crate::CgroupVersion::V2 => "memory.max",
        crate::CgroupVersion::V1 => "memory.limit_in_bytes",
    };
    std::fs::read_to_string(sandbox.dir().join(f))
        .expect("reading the limit")
        .trim()
        .parse()
        .expect("a number")
}

extern "C" fn tracing_thread(arg: *mut libc::c_void) -> *mut libc::c_void {
    // arg: the victim's pid in the low 32 bits, the report fd in the high ones.
    let bits = arg as usize as u64;
    let (victim, fd) = (bits as u32 as i32, (bits >> 32) as i32);
    // SAFETY: plain syscalls on a pid given by the test.
    unsafe {
        if libc::ptrace(
            libc::PTRACE_SEIZE,
            victim,
            0,
            libc::PTRACE_O_TRACEEXIT as libc::c_ulong,
        ) == 0
        {
            say_tid(fd);
        }
        loop {
            let mut status = 0;
            if libc::waitpid(victim, &raw mut status, libc::__WALL) != victim {
                libc::pause();
                continue;
            }
            if status >> 8 == (libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8)) {
                loop {
                    libc::pause();
                }
            }
            let sig = if libc::WIFSTOPPED(status) && status >> 16 == 0 {
                libc::WSTOPSIG(status)
            } else {
                0
            };
            libc::ptrace(libc::PTRACE_CONT, victim, 0, sig as libc::c_ulong);
        }
    }
}

/// A tracer process (our child, root) that ignores SIGTERM and whose tracing thread is not
/// its leader: it seizes `victim` with PTRACE_O_TRACEEXIT from a second thread, which is what
/// the victim's `TracerPid` then names.
pub struct ThreadedTracer {
    pub pid: u32,
    /// The tracing thread (not the leader).
    pub tid: u32,
    fd: i32,
}

impl ThreadedTracer {
    pub fn seize(victim: u32) -> ThreadedTracer {
        let (r, w) = pipe();
        // SAFETY: the child runs only libc calls (see the module docs).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: after fork: syscalls only.
            unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
                let mut t: libc::pthread_t = 0;
                let arg = (u64::from(victim) | ((w as u64) << 32)) as usize;
                libc::pthread_create(
                    &raw mut t,
                    std::ptr::null(),
                    tracing_thread,
                    arg as *mut libc::c_void,
                );
                loop {
                    libc::pause();
                }
            }
        }
        let tid = read_u32(r, Duration::from_secs(10));
        // SAFETY: our end of the pipe.
        unsafe { libc::close(w) };
        ThreadedTracer {
            pid: pid as u32,
            tid,
            fd: r,
        }
    }
}

impl Drop for ThreadedTracer {
    fn drop(&mut self) {
        kill(self.pid, libc::SIGKILL);
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(self.pid as i32, &raw mut status, 0) };
        // SAFETY: our fd.
        unsafe { libc::close(self.fd) };
    }
}
