//! Processes of ours: the hog (OOM-killed in a sandbox, stuck in FUSE or in exit), held in
//! ptrace, killed by a named sender; each killed by pid on drop.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use crate::*;

/// A child process of ours, killed by pid on drop if still running.
pub struct Proc {
    pub(crate) child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Next stdout line (panics with context at EOF).
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .expect("reading child stdout");
        assert!(n > 0, "child {} closed stdout", self.pid());
        line.trim_end().to_string()
    }

    /// Sends a line on stdin (the hog's "go").
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "go").expect("writing to child");
        stdin.flush().expect("flushing child stdin");
    }

    /// Waits for exit; returns the signal that killed it, if any. Panics after `timeout`.
    pub fn wait_signal(&mut self, timeout: Duration) -> Option<i32> {
        let mut status = None;
        let done = wait_until(timeout, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        assert!(
            done,
            "process {} still running after {timeout:?}",
            self.pid()
        );
        std::os::unix::process::ExitStatusExt::signal(&status.expect("status"))
    }

    /// True if it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

pub(crate) fn hog_bin() -> PathBuf {
    // The hog is a binary of this package, next to the test executable's deps directory.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe dir");
    [dir.join("oomtrace-hog"), dir.join("../oomtrace-hog")]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("oomtrace-hog not found next to {}", exe.display()))
}

/// Runs `cmd` (which ends in the hog's arguments) with piped stdin/stdout.
pub(crate) fn spawn_piped(mut cmd: Command, what: &str) -> Proc {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let stdin = child.stdin.take();
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    Proc {
        child,
        stdin,
        stdout,
    }
}

/// `oomtrace-hog MODE --cgroup <sandbox> ARGS…` appended to `cmd`.
pub(crate) fn with_hog_args(
    mut cmd: Command,
    sandbox: &Sandbox,
    mode: &str,
    args: &[String],
) -> Command {
    cmd.arg(mode).arg("--cgroup").arg(sandbox.dir()).args(args);
    cmd
}

/// SIGKILLs `pid` from a user process whose comm is `comm` (the hog run through a link of that
/// name: a runtime shim's, a supervisor's), and waits for it to have sent the signal.
pub fn kill_as(comm: &str, pid: u32) {
    let dir = std::env::temp_dir().join(format!("oomtrace-killer-{}-{comm}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("killer dir");
    let link = dir.join(comm);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(hog_bin(), &link).expect("killer link");
    let status = Command::new(&link)
        .args(["kill", "--pid", &pid.to_string()])
        .status()
        .expect("running the killer");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{comm} could not kill {pid}: {status}");
}

/// Runs `oomtrace-hog kill-storm` in the sandbox: `count` user SIGKILLs of short-lived
/// children; returns once all are reaped.
pub fn kill_storm(sandbox: &Sandbox, count: usize) {
    let out = with_hog_args(
        Command::new(hog_bin()),
        sandbox,
        "kill-storm",
        &["--count".into(), count.to_string()],
    )
    .output()
    .expect("running the kill storm");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim() == format!("killed {count}"),
        "kill-storm: {} {said} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `oomtrace-hog MODE --cgroup <sandbox> ARGS…` with piped stdin/stdout.
pub fn spawn_hog(sandbox: &Sandbox, mode: &str, args: &[String]) -> Proc {
    let cmd = with_hog_args(Command::new(hog_bin()), sandbox, mode, args);
    spawn_piped(cmd, "oomtrace-hog")
}

/// Starts `oomtrace-hog MODE ARGS…` as the init of a new PID namespace (a container's shape:
/// `unshare --pid --fork`); the hog joins the sandbox itself. Returns the `unshare` process
/// (outside the namespace, not in the sandbox).
pub fn spawn_hog_as_namespace_init(sandbox: &Sandbox, mode: &str, args: &[String]) -> Proc {
    let mut unshare = Command::new("unshare");
    unshare
        .args(["--pid", "--fork", "--kill-child"])
        .arg(hog_bin());
    spawn_piped(
        with_hog_args(unshare, sandbox, mode, args),
        "unshare (util-linux)",
    )
}

/// Starts `oomtrace-hog alloc` in a sandbox; returns once it printed `ready`.
pub fn hog(sandbox: &Sandbox, mb: u32, hold: bool, oom_score_adj: Option<i32>) -> Proc {
    let mut args = vec!["--mb".to_string(), mb.to_string()];
    if hold {
        args.push("--hold".into());
    }
    if let Some(adj) = oom_score_adj {
        args.extend(["--oom-score-adj".into(), adj.to_string()]);
    }
    let mut p = spawn_hog(sandbox, "alloc", &args);
    let ready = p.line();
    assert_eq!(ready, format!("ready {}", p.pid()), "hog did not start");
    p
}

/// `State:` of a process from /proc (e.g. `Z (zombie)`), if it exists.
pub fn proc_state(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .map(|s| s.trim().to_string())
}

/// Holds a child of ours in PTRACE_EVENT_EXIT once it is killed: it keeps its memory and does
/// not exit until released. ptrace ties the tracee to this thread: release from the same thread.
pub struct PtraceHold {
    pid: i32,
    released: bool,
}

impl PtraceHold {
    /// Seizes `pid` (a child of ours) with PTRACE_O_TRACEEXIT.
    pub fn seize(pid: u32) -> PtraceHold {
        let pid = pid as i32;
        // SAFETY: plain ptrace on our own child.
        let rc = unsafe {
            libc::ptrace(
                libc::PTRACE_SEIZE,
                pid,
                std::ptr::null_mut::<libc::c_void>(),
                libc::PTRACE_O_TRACEEXIT as usize as *mut libc::c_void,
            )
        };
        assert_eq!(
            rc,
            0,
            "PTRACE_SEIZE {pid}: {}",
            std::io::Error::last_os_error()
        );
        PtraceHold {
            pid,
            released: false,
        }
    }

    /// Waits until the tracee stops at its exit; true if it did within `timeout`.
    pub fn wait_exit_stop(&self, timeout: Duration) -> bool {
        wait_until(timeout, || {
            let mut status = 0;
            // SAFETY: waitpid on our own tracee; WNOHANG never blocks.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG | libc::__WALL) };
            r == self.pid
                && libc::WIFSTOPPED(status)
                && (status >> 8) == (libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8))
        })
    }

    /// Lets the tracee finish exiting.
    pub fn release(&mut self) {
        if !self.released {
            // SAFETY: our tracee.
            unsafe {
                libc::ptrace(
                    libc::PTRACE_DETACH,
                    self.pid,
                    std::ptr::null_mut::<libc::c_void>(),
                    std::ptr::null_mut::<libc::c_void>(),
                )
            };
            self.released = true;
        }
    }
}

/// A victim held at its exit: a hog in `sandbox`, seized, told to allocate, OOM-killed and now
/// stopped in PTRACE_EVENT_EXIT until the returned hold is released (or dropped).
pub fn held_victim(sandbox: &Sandbox, wait: Duration) -> (Proc, PtraceHold) {
    let mut h = hog(sandbox, 256, false, None);
    let hold = PtraceHold::seize(h.pid());
    h.go();
    assert!(
        hold.wait_exit_stop(wait),
        "the victim never stopped at its exit"
    );
    (h, hold)
}

impl Drop for PtraceHold {
    fn drop(&mut self) {
        self.release();
    }
}

/// The kernel's page size.
pub fn page_size() -> u64 {
    // SAFETY: no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// A victim stuck *inside* exit, as `stuck-flush` makes it: the port it listens on and the
/// hog whose last thread will block closing a FUSE file whose FLUSH is held.
pub struct InExit {
    pub hog: Proc,
    pub victim: u32,
    pub port: u16,
}

/// Answers the held FUSE requests when dropped: declared after the hog, it is dropped before
/// it, so a failing test does not wait forever for a victim still held in the kernel.
pub struct ReleaseOnDrop<'a>(pub &'a fuse::FuseHold);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

pub fn stuck_in_exit(sandbox: &Sandbox, fuse: &fuse::FuseHold, extra: &[&str]) -> InExit {
    stuck_victim(sandbox, fuse, "stuck-flush", extra)
}

/// A hog in `mode` (`stuck-fuse`, `stuck-flush`) on the FUSE file, past its `port` and
/// `ready` lines; it allocates on "go".
pub fn stuck_victim(
    sandbox: &Sandbox,
    fuse: &fuse::FuseHold,
    mode: &str,
    extra: &[&str],
) -> InExit {
    let file = fuse.file().to_str().expect("utf-8").to_string();
    let mut args: Vec<String> = ["--mb", "256", "--file", &file]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut hog = spawn_hog(sandbox, mode, &args);
    let port: u16 = hog
        .line()
        .strip_prefix("port ")
        .expect("port line")
        .parse()
        .expect("port");
    let victim: u32 = hog
        .line()
        .strip_prefix("ready ")
        .expect("ready line")
        .parse()
        .expect("pid");
    InExit { hog, victim, port }
}

/// A numeric field of /proc/PID/status (kB for the `Vm*` ones), if the process and field exist.
pub fn proc_status_number(pid: u32, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
}
