//! A process for the end-to-end tests to get OOM-killed. It sets itself up, prints
//! `ready <pid>`, waits for a line on stdin, then acts.
//!
//! `oomtrace-hog alloc --cgroup DIR --mb N [--hold] [--oom-score-adj V] [--children K]`: join
//! the cgroup (and start K `sleep` children in it), then allocate N MiB touching every page;
//! with `--hold`, print `allocated` and sleep until killed; without, exit 0 if the allocation
//! succeeded.
//!
//! `oomtrace-hog stuck-fuse --cgroup DIR --mb N --file PATH [--orphan]`: the incident's victim.
//! It listens on 127.0.0.1 (prints `port P`), starts a thread that read()s PATH (a FUSE file
//! whose daemon never answers), then allocates on "go". With `--orphan` it forks first and the
//! parent exits, so the victim is reparented away from the test (to init or a subreaper).
//!
//! With `--shmem` (`alloc`, `stuck-fuse`) the N MiB are a memfd mapped shared and touched:
//! shared memory charged to the memcg that the OOM reaper cannot free (it unmaps only private
//! memory), so the memcg stays at its limit while the victim is stuck.
//!
//! `oomtrace-hog stuck-flush --cgroup DIR --mb N --file PATH [--orphan] [--leader-exits]`: the
//! victim stuck *inside* exit. It listens on 127.0.0.1 (`port P`) and keeps PATH open (a FUSE
//! file whose daemon holds FLUSH), then allocates on "go"; killed, its last thread blocks
//! closing PATH in `exit_files`. With `--leader-exits` the allocation runs in a second thread
//! and the main thread exits first (the `exit` syscall): the leader is a zombie before the kill.
//!
//! `oomtrace-hog trace-hold --pid P`: a tracer in its own process. It seizes P with
//! PTRACE_O_TRACEEXIT, prints `seized`, and when P stops at its exit never lets it go on: P
//! stays in `do_exit` until this tracer ends (what `oomtrace unstick` does to it).
//!
//! `oomtrace-hog ns-churn --cgroup DIR --rounds R --children K`: kernel SIGKILLs, many and
//! cheap. R times: a new PID namespace whose init forks K children that pause, then exits; the
//! kernel's namespace teardown (`zap_pid_ns_processes`) SIGKILLs each child (SEND_SIG_PRIV,
//! exactly what oomtrace's in-kernel filter starts tracking). Prints `sigkilled N` at the end.
//!
//! `oomtrace-hog kill --pid P`: sends P a SIGKILL (`kill(2)`) and exits. Run through a link
//! named like a runtime shim, it is a user process with that comm killing P.
//!
//! `oomtrace-hog kill-storm --cgroup DIR --count N`: user SIGKILLs, many and cheap. N times:
//! fork a child that pauses, SIGKILL it, reap it. Prints `killed N` at the end.

use std::io::{BufRead as _, Write as _};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("oomtrace-hog: {e}");
        std::process::exit(2);
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn run(args: &[String]) -> Result<(), String> {
    let mode = args.first().map(String::as_str);
    if mode == Some("ns-churn") {
        return ns_churn(args);
    }
    if mode == Some("trace-hold") {
        return trace_hold(args);
    }
    if mode == Some("kill") {
        let pid: i32 = number(args, "--pid")? as i32;
        // SAFETY: plain kill(2).
        if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
            return Err(format!("kill {pid}: {}", std::io::Error::last_os_error()));
        }
        return Ok(());
    }
    if mode == Some("kill-storm") {
        return kill_storm(args);
    }
    let (stuck, flush) = match mode {
        Some("alloc") => (false, false),
        Some("stuck-fuse") => (true, false),
        Some("stuck-flush") => (false, true),
        other => {
            return Err(format!(
                "unknown mode {other:?}; usage: alloc|stuck-fuse|stuck-flush --cgroup DIR --mb N"
            ));
        }
    };
    if (stuck || flush) && args.iter().any(|a| a == "--orphan") {
        // Still single-threaded here, so fork is safe.
        // SAFETY: plain fork; the parent only exits.
        match unsafe { libc::fork() } {
            -1 => return Err(format!("fork: {}", std::io::Error::last_os_error())),
            0 => {}
            _ => std::process::exit(0),
        }
    }
    let cgroup = flag(args, "--cgroup").ok_or("--cgroup DIR is required")?;
    let mb: usize = flag(args, "--mb")
        .ok_or("--mb N is required")?
        .parse()
        .map_err(|e| format!("--mb: {e}"))?;
    let hold = args.iter().any(|a| a == "--hold");
    if let Some(adj) = flag(args, "--oom-score-adj") {
        std::fs::write("/proc/self/oom_score_adj", adj)
            .map_err(|e| format!("writing oom_score_adj: {e}"))?;
    }
    let procs = format!("{cgroup}/cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .map_err(|e| format!("joining {procs}: {e}"))?;
    let children: usize = flag(args, "--children")
        .map_or(Ok(0), |c| c.parse())
        .map_err(|e| format!("--children: {e}"))?;
    let _children: Vec<std::process::Child> = (0..children)
        .map(|_| std::process::Command::new("sleep").arg("3600").spawn())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("starting a child: {e}"))?;
    let mut out = std::io::stdout();
    if flush {
        return stuck_in_exit(args, mb);
    }
    // Kept open until the process dies: the socket the incident's victim held.
    let _listener = if stuck {
        let file = flag(args, "--file").ok_or("--file PATH is required")?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        writeln!(out, "port {port}").map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            if let Ok(mut f) = std::fs::File::open(&file) {
                let _ = std::io::Read::read(&mut f, &mut buf);
            }
        });
        Some(listener)
    } else {
        None
    };
    writeln!(out, "ready {}", std::process::id()).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let _chunks = if args.iter().any(|a| a == "--shmem") {
        allocate_shmem(mb)?;
        Vec::new()
    } else {
        allocate(mb)
    };
    if hold {
        writeln!(out, "allocated").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    Ok(())
}

/// Allocates `mb` MiB, touching every page so the memory is really charged.
fn allocate(mb: usize) -> Vec<Vec<u8>> {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mb {
        let mut chunk = vec![0u8; 1 << 20];
        for i in (0..chunk.len()).step_by(4096) {
            chunk[i] = 1;
        }
        chunks.push(std::hint::black_box(chunk));
    }
    chunks
}

/// Allocates `mb` MiB of shared memory (a memfd, mapped shared, every page touched). The
/// mapping and the file stay until the process dies.
fn allocate_shmem(mb: usize) -> Result<(), String> {
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    let len = mb << 20;
    // SAFETY: a fresh memfd sized and mapped here; the mapping is only written below and is
    // never unmapped (it lives as long as the process).
    unsafe {
        let fd = libc::memfd_create(c"oomtrace-hog".as_ptr(), 0);
        if fd < 0 {
            return Err(os("memfd_create"));
        }
        if libc::ftruncate(fd, len as libc::off_t) != 0 {
            return Err(os("ftruncate"));
        }
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(os("mmap"));
        }
        let p = p.cast::<u8>();
        for i in (0..len).step_by(4096) {
            p.add(i).write_volatile(1);
        }
    }
    Ok(())
}

/// `stuck-flush`: listen, keep the FUSE file open, allocate on "go" (in a second thread with
/// `--leader-exits`, after the main thread has exited).
fn stuck_in_exit(args: &[String], mb: usize) -> Result<(), String> {
    let file = flag(args, "--file").ok_or("--file PATH is required")?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let held = std::fs::File::open(&file).map_err(|e| format!("opening {file}: {e}"))?;
    let mut out = std::io::stdout();
    writeln!(out, "port {port}").map_err(|e| e.to_string())?;
    writeln!(out, "ready {}", std::process::id()).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    let work = move || {
        // Both stay open until the process is killed.
        let _keep = (listener, held);
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let _chunks = allocate(mb);
        // Not killed (the limit is larger than asked): wait to be.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    };
    if args.iter().any(|a| a == "--leader-exits") {
        std::thread::spawn(work);
        // The raw exit syscall ends only the calling thread, and without unwinding: glibc's
        // pthread_exit force-unwinds, which aborts when it crosses Rust's `main`.
        // SAFETY: the worker owns everything it uses; nothing on this stack is needed again.
        unsafe { libc::syscall(libc::SYS_exit, 0) };
        unreachable!("exit returned");
    }
    work()
}

fn number(args: &[String], name: &str) -> Result<usize, String> {
    flag(args, name)
        .ok_or(format!("{name} N is required"))?
        .parse()
        .map_err(|e| format!("{name}: {e}"))
}

/// See the module docs. Single-threaded throughout, so fork is safe.
fn kill_storm(args: &[String]) -> Result<(), String> {
    let cgroup = flag(args, "--cgroup").ok_or("--cgroup DIR is required")?;
    let count = number(args, "--count")?;
    let procs = format!("{cgroup}/cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .map_err(|e| format!("joining {procs}: {e}"))?;
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    for _ in 0..count {
        // SAFETY: plain fork/kill/waitpid; the child only pauses until killed.
        unsafe {
            let child = libc::fork();
            if child < 0 {
                return Err(os("fork"));
            }
            if child == 0 {
                loop {
                    libc::pause();
                }
            }
            if libc::kill(child, libc::SIGKILL) != 0 {
                return Err(os("kill"));
            }
            if libc::waitpid(child, std::ptr::null_mut(), 0) != child {
                return Err(os("waitpid"));
            }
        }
    }
    println!("killed {count}");
    Ok(())
}

/// See the module docs. Single-threaded throughout, so fork is safe.
fn ns_churn(args: &[String]) -> Result<(), String> {
    let cgroup = flag(args, "--cgroup").ok_or("--cgroup DIR is required")?;
    let rounds = number(args, "--rounds")?;
    let children = number(args, "--children")?;
    let procs = format!("{cgroup}/cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .map_err(|e| format!("joining {procs}: {e}"))?;
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: plain fork/unshare/waitpid/_exit; children only pause or exit.
    unsafe {
        for _ in 0..rounds {
            let holder = libc::fork();
            if holder < 0 {
                return Err(os("fork"));
            }
            if holder == 0 {
                if libc::unshare(libc::CLONE_NEWPID) != 0 {
                    libc::_exit(3);
                }
                let init = libc::fork();
                if init == 0 {
                    // PID 1 of the new namespace.
                    for _ in 0..children {
                        match libc::fork() {
                            0 => loop {
                                libc::pause();
                            },
                            -1 => libc::_exit(4),
                            _ => {}
                        }
                    }
                    // Exiting tears the namespace down: a kernel SIGKILL per child.
                    libc::_exit(0);
                }
                let mut status = 0;
                if init < 0 || libc::waitpid(init, &mut status, 0) != init {
                    libc::_exit(5);
                }
                libc::_exit(if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    6
                });
            }
            let mut status = 0;
            if libc::waitpid(holder, &mut status, 0) != holder {
                return Err(os("waitpid"));
            }
            if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                return Err(format!(
                    "a namespace round failed (wait status {status:#x})"
                ));
            }
        }
    }
    println!("sigkilled {}", rounds * children);
    Ok(())
}

/// See the module docs.
fn trace_hold(args: &[String]) -> Result<(), String> {
    let pid: libc::pid_t = number(args, "--pid")? as libc::pid_t;
    // SAFETY: ptrace on a pid given by the test; waitpid on our tracee.
    unsafe {
        if libc::ptrace(
            libc::PTRACE_SEIZE,
            pid,
            0,
            libc::PTRACE_O_TRACEEXIT as libc::c_ulong,
        ) != 0
        {
            return Err(format!(
                "PTRACE_SEIZE {pid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        println!("seized");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        loop {
            let mut status = 0;
            if libc::waitpid(pid, &mut status, libc::__WALL) != pid {
                return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
            }
            let exit_stop = status >> 8 == (libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8));
            if exit_stop {
                // Held: never continued.
                loop {
                    libc::pause();
                }
            }
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                return Ok(());
            }
            // Any other stop: let it go on (signal-delivery stops pass the signal).
            let sig = if libc::WIFSTOPPED(status) && status >> 16 == 0 {
                libc::WSTOPSIG(status)
            } else {
                0
            };
            libc::ptrace(libc::PTRACE_CONT, pid, 0, sig as libc::c_ulong);
        }
    }
}
