//! Fixtures for oomtrace's root-only end-to-end tests: a sandbox memory cgroup, a process that
//! gets OOM-killed in it, and the oomtrace binary watching.
//!
//! Rules these fixtures keep: OOM kills happen only in a memory cgroup we created with a small
//! limit; every cgroup and process we create is removed in `Drop`, also when a test panics; we
//! only ever kill processes we started, by pid; other tests may cause OOM kills at the same time,
//! so everything is matched by our own cgroup id and pids.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod fuse;
// The same scratch directory type as oomtrace's unit tests: one source for both crates.
#[path = "../../oomtrace/src/scratch.rs"]
mod scratch;
pub use scratch::ScratchDir;
pub mod unstick_fixtures;

/// Fails the test loudly unless we are root: CI must never mistake "could not run" for "passed".
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "the end-to-end tests load eBPF programs and cause real OOM kills in sandbox cgroups: \
         they need root (run `cargo xtask test` as root)"
    );
}

/// The oomtrace binary under test (`OOMTRACE_BIN`, set by `cargo xtask test`).
pub fn oomtrace_bin() -> PathBuf {
    let bin = std::env::var_os("OOMTRACE_BIN").map(PathBuf::from).expect(
        "OOMTRACE_BIN is not set: run the end-to-end tests with `cargo xtask test`, which builds \
         the binary and points the tests at it",
    );
    assert!(
        bin.is_file(),
        "OOMTRACE_BIN={} does not exist",
        bin.display()
    );
    bin
}

/// How much slower than native this runs: `OOMTRACE_TEST_SLOWDOWN` (the QEMU/TCG guests of
/// `cargo xtask vm` set it; software emulation is 10–30× slower). Scales waits and the flag
/// latency bound, never what is asserted about the kernel's behaviour.
pub fn slowdown() -> u32 {
    std::env::var("OOMTRACE_TEST_SLOWDOWN")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&f| f >= 1)
        .unwrap_or(1)
}

/// A wait scaled by [`slowdown`].
pub fn scaled(d: Duration) -> Duration {
    d * slowdown()
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Which cgroup version has the memory controller here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

fn memory_root() -> (CgroupVersion, PathBuf) {
    let v2 = Path::new("/sys/fs/cgroup");
    if std::fs::read_to_string(v2.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
    {
        return (CgroupVersion::V2, v2.to_path_buf());
    }
    let v1 = Path::new("/sys/fs/cgroup/memory");
    assert!(
        v1.join("memory.limit_in_bytes").exists(),
        "no memory cgroup controller found (neither cgroup v2 with `memory` nor v1 at {})",
        v1.display()
    );
    (CgroupVersion::V1, v1.to_path_buf())
}

static SANDBOXES: AtomicU32 = AtomicU32::new(0);

/// A memory cgroup of our own with a small limit. Dropping it kills what is left in it (only
/// our processes can be there) and removes it.
pub struct Sandbox {
    dir: PathBuf,
    version: CgroupVersion,
    rel: String,
}

/// The sandbox's path as oomtrace names it, if its memcg is on cgroup v2 (which counts OOM
/// invocations in `memory.events`; v1 does not).
pub fn cgroup_version_2(sandbox: &Sandbox) -> Option<String> {
    (sandbox.version() == CgroupVersion::V2).then(|| sandbox.rel_path().to_string())
}

/// Whether this runs in a disposable guest kernel (`cargo xtask vm` says so), where a global
/// OOM is allowed: never on the host.
pub fn disposable_kernel() -> bool {
    std::env::var("OOMTRACE_DISPOSABLE_KERNEL").as_deref() == Ok("1")
}

impl Sandbox {
    /// Creates `oomtrace-test-<pid>-<n>-<label>` with `limit_bytes` (≤ 128 MiB) and no swap.
    pub fn new(label: &str, limit_bytes: u64) -> Sandbox {
        assert!(limit_bytes <= 128 << 20, "sandbox limits stay ≤ 128 MiB");
        Sandbox::create(label, Some(limit_bytes))
    }

    /// A sandbox without a memory limit, for a global OOM: only inside a disposable guest
    /// kernel (panics elsewhere: the host must never run out of memory).
    pub fn unlimited_in_disposable_guest(label: &str) -> Sandbox {
        assert!(
            disposable_kernel(),
            "a global OOM is only ever caused inside a disposable guest kernel"
        );
        Sandbox::create(label, None)
    }

    /// A child memcg with no limit of its own: its processes are limited by this one's. Drop
    /// it before the parent.
    pub fn child(&self, label: &str) -> Sandbox {
        if self.version == CgroupVersion::V2 {
            self.write("cgroup.subtree_control", "+memory");
        }
        let dir = self.dir.join(label);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Sandbox {
            dir,
            version: self.version,
            rel: format!("{}/{label}", self.rel),
        }
    }

    /// Like [`Sandbox::new`], named `<prefix>-oomtrace-<pid>-<n>` at the controller's root:
    /// a node's top-level shape (`kubepods…`) for tests of how memcg paths are read.
    pub fn at_root(prefix: &str, limit_bytes: u64) -> Sandbox {
        assert!(limit_bytes <= 128 << 20, "sandbox limits stay ≤ 128 MiB");
        let n = SANDBOXES.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-oomtrace-{}-{n}", std::process::id());
        Sandbox::create_named(name, Some(limit_bytes))
    }

    fn create(label: &str, limit_bytes: Option<u64>) -> Sandbox {
        let n = SANDBOXES.fetch_add(1, Ordering::Relaxed);
        let name = format!("oomtrace-test-{}-{n}-{label}", std::process::id());
        Sandbox::create_named(name, limit_bytes)
    }

    fn create_named(name: String, limit_bytes: Option<u64>) -> Sandbox {
        let (version, root) = memory_root();
        if version == CgroupVersion::V2 {
            // Children of the root get the memory controller only if the root delegates it.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
        }
        let dir = root.join(&name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let sandbox = Sandbox {
            dir,
            version,
            rel: format!("/{name}"),
        };
        if let Some(limit_bytes) = limit_bytes {
            sandbox.limit(limit_bytes);
        }
        sandbox
    }

    /// Limits this memcg to `limit_bytes` (≤ 128 MiB) without swap (a child made by
    /// [`Sandbox::child`] has no limit of its own until then).
    pub fn limit(&self, limit_bytes: u64) {
        assert!(limit_bytes <= 128 << 20, "sandbox limits stay ≤ 128 MiB");
        match self.version {
            CgroupVersion::V1 => {
                self.write("memory.limit_in_bytes", &limit_bytes.to_string());
                if self.dir.join("memory.memsw.limit_in_bytes").exists() {
                    self.write("memory.memsw.limit_in_bytes", &limit_bytes.to_string());
                }
            }
            CgroupVersion::V2 => {
                self.write("memory.max", &limit_bytes.to_string());
                if self.dir.join("memory.swap.max").exists() {
                    self.write("memory.swap.max", "0");
                }
            }
        }
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.dir.join(file);
        std::fs::write(&path, value)
            .unwrap_or_else(|e| panic!("writing {value} to {}: {e}", path.display()));
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kernel's id of this memcg: the inode number of its directory.
    pub fn id(&self) -> u64 {
        std::fs::metadata(&self.dir).expect("sandbox dir").ino()
    }

    /// The path relative to the controller's mount, as oomtrace reports it.
    pub fn rel_path(&self) -> &str {
        &self.rel
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Pids in the cgroup.
    pub fn procs(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// OOM kills the kernel counted in this cgroup (v2: and below it; v1: in it only).
    pub fn oom_kills(&self) -> u64 {
        oom_kill_counter(&self.dir, self.version)
    }

    /// OOM kills of victims in this cgroup or below it, by the kernel's counters: v2 counts
    /// them hierarchically, v1 in the victim's own memcg only (so they are summed).
    pub fn oom_kills_in_subtree(&self) -> u64 {
        fn below(dir: &Path) -> u64 {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| oom_kill_counter(&e.path(), CgroupVersion::V1) + below(&e.path()))
                .sum()
        }
        match self.version {
            CgroupVersion::V2 => self.oom_kills(),
            CgroupVersion::V1 => self.oom_kills() + below(&self.dir),
        }
    }

    /// Asserts that the summary of a watch filtered to this cgroup (`--memcg`) counts exactly
    /// the kills the kernel counted in it.
    pub fn assert_summary_kills(&self, lines: &[Value]) {
        let summary = lines
            .iter()
            .find(|l| l["type"] == "summary")
            .unwrap_or_else(|| panic!("no summary line among {} lines", lines.len()));
        assert_eq!(
            summary["summary"]["kills"],
            self.oom_kills_in_subtree(),
            "the summary's kills differ from the kernel's oom_kill in {}: {summary}",
            self.rel
        );
    }
}

impl Sandbox {
    /// Asserts that an unfiltered watch's closing reconcile line for this cgroup agrees with
    /// the kernel: `kills` kills by both counts.
    pub fn assert_reconciled(&self, lines: &[Value], kills: u64) {
        let rec = lines
            .iter()
            .find(|v| v["type"] == "reconcile" && v["memcg_path"] == self.rel)
            .unwrap_or_else(|| panic!("no reconcile line for {}", self.rel));
        assert_eq!(
            (
                &rec["kernel_oom_kills"],
                &rec["oomtrace_kills"],
                &rec["agree"]
            ),
            (&Value::from(kills), &Value::from(kills), &Value::from(true)),
            "{rec}"
        );
    }
}

fn oom_kill_counter(dir: &Path, version: CgroupVersion) -> u64 {
    let (file, key) = match version {
        CgroupVersion::V1 => ("memory.oom_control", "oom_kill"),
        CgroupVersion::V2 => ("memory.events", "oom_kill"),
    };
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            // The key exactly: v1 also has `oom_kill_disable`.
            let mut f = l.split_whitespace();
            (f.next() == Some(key))
                .then(|| f.next()?.parse().ok())
                .flatten()
        })
        .unwrap_or(0)
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Everything in our cgroup is ours.
        let gone = wait_until(Duration::from_secs(5), || {
            let procs = self.procs();
            for pid in &procs {
                // SAFETY: plain syscall on a pid in our own cgroup.
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            }
            procs.is_empty()
        });
        if !gone {
            eprintln!(
                "sandbox {}: processes left: {:?}",
                self.dir.display(),
                self.procs()
            );
        }
        let removed = wait_until(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.dir).is_ok()
        });
        if !removed {
            eprintln!(
                "sandbox {}: could not remove the cgroup",
                self.dir.display()
            );
        }
    }
}

/// A child process of ours, killed by pid on drop if still running.
pub struct Proc {
    child: Child,
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

fn hog_bin() -> PathBuf {
    // The hog is a binary of this package, next to the test executable's deps directory.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe dir");
    [dir.join("oomtrace-hog"), dir.join("../oomtrace-hog")]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("oomtrace-hog not found next to {}", exe.display()))
}

/// Runs `cmd` (which ends in the hog's arguments) with piped stdin/stdout.
fn spawn_piped(mut cmd: Command, what: &str) -> Proc {
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
fn with_hog_args(mut cmd: Command, sandbox: &Sandbox, mode: &str, args: &[String]) -> Command {
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

/// `oomtrace watch --json` running in the background, its lines collected.
pub struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    /// Starts the watcher with extra arguments and waits until it printed its plan (attached).
    pub fn start(extra: &[&str]) -> Watch {
        let mut args = vec!["watch", "--json"];
        args.extend_from_slice(extra);
        Watch::start_cmd(&args, &[])
    }

    /// Starts `oomtrace ARGS` (which must print JSON Lines) with extra environment variables.
    pub fn start_cmd(args: &[&str], env: &[(&str, &str)]) -> Watch {
        Watch::start_keeping(args, env, |_| true)
    }

    /// Like [`Watch::start_cmd`], but keeps only the lines `keep` accepts (and the plan): a soak
    /// runs for an hour, and every line kept would grow this process without bound.
    pub fn start_keeping(
        args: &[&str],
        env: &[(&str, &str)],
        keep: impl Fn(&Value) -> bool + Send + 'static,
    ) -> Watch {
        let mut child = Command::new(oomtrace_bin())
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting oomtrace");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("oomtrace printed a line that is not JSON ({e}): {line}")
                });
                if keep(&v) || v["type"] == "plan" {
                    sink.lock().expect("lines").push(v);
                }
            }
        });
        let w = Watch {
            child,
            lines,
            reader: Some(reader),
        };
        w.wait_for("the plan line", scaled(Duration::from_secs(30)), |v| {
            v["type"] == "plan"
        });
        w
    }

    /// Everything printed so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().expect("lines").clone()
    }

    /// The plan line.
    pub fn plan(&self) -> Value {
        self.lines()
            .into_iter()
            .find(|v| v["type"] == "plan")
            .expect("plan line")
    }

    /// Waits for the `kind` finding about process `tgid` (see [`Watch::wait_for`]).
    pub fn wait_finding(&self, kind: &str, tgid: u32) -> Value {
        self.wait_for(&format!("{kind} pid {tgid}"), event_wait(), |v| {
            finding_about(v, kind, tgid)
        })
    }

    /// Waits for a line matching `pred`; panics with everything seen if it does not come —
    /// at once when oomtrace's output has ended (it exited): no line can come after that.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_unless(what, timeout, pred, |_| false)
    }

    /// Like [`Watch::wait_for`], and panics at once, with what was seen, when a line that
    /// `contradicts` the awaited one comes first (say a `dead` finding for the pid whose
    /// `stuck` is awaited): that wait can no longer succeed, and sleeping out a timeout scaled
    /// for emulation (minutes in the guests) would only hide which line said so.
    pub fn wait_for_unless(
        &self,
        what: &str,
        timeout: Duration,
        want: impl Fn(&Value) -> bool,
        contradicts: impl Fn(&Value) -> bool,
    ) -> Value {
        let end = Instant::now() + timeout;
        // Lines are only ever appended: each poll looks at the new ones, in order, under the
        // lock and without copying (with tens of thousands of lines a copy per poll starves the
        // reader thread, and oomtrace then blocks writing to a full pipe).
        let mut scanned = 0;
        loop {
            // Read before the lines: once the reader is done, every line it will ever push is
            // there.
            let ended = self.reader.as_ref().is_none_or(|r| r.is_finished());
            {
                let lines = self.lines.lock().expect("lines");
                for v in &lines[scanned..] {
                    if want(v) {
                        return v.clone();
                    }
                    if contradicts(v) {
                        let seen = tail(&lines);
                        panic!(
                            "no {what}: oomtrace printed a line that rules it out:\n{v}\n\
                             everything it printed {seen}"
                        );
                    }
                }
                scanned = lines.len();
                if ended {
                    let status = self.peek_exit_status();
                    let seen = tail(&lines);
                    panic!(
                        "no {what}: oomtrace's output ended ({status}) before it came; it \
                         printed {seen}"
                    );
                }
            }
            if Instant::now() >= end {
                let seen = tail(&self.lines.lock().expect("lines"));
                panic!("no {what} within {timeout:?}; oomtrace printed {seen}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How the watcher exited, if it has, without reaping it (`waitid` with `WNOWAIT`: `stop`
    /// and `Drop` still wait for it).
    fn peek_exit_status(&self) -> String {
        // SAFETY: a zeroed siginfo_t is valid; waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: our own child, a valid siginfo_t pointer.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                self.child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid and si_status are valid for a SIGCHLD siginfo (waitid's).
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        match (r, pid, info.si_code) {
            (0, 0, _) => "it is still running, its stdout closed".into(),
            (0, _, libc::CLD_EXITED) => format!("exit code {status}"),
            (0, _, _) => format!("killed by signal {status}"),
            _ => format!("waitid: {}", std::io::Error::last_os_error()),
        }
    }

    /// How many lines printed so far satisfy `pred` (counted under the lock, no copy).
    pub fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter(|v| pred(v))
            .count()
    }

    /// Events of one kind concerning a pid (victim, target, exiting or freed process).
    pub fn events_for(&self, kind: &str, pid: u32) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|v| v["type"] == "event" && v["event"] == kind && concerns(v, pid))
            .collect()
    }

    /// The watcher's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the watcher with SIGTERM and returns everything it printed, to its last line.
    pub fn stop_and_collect(self) -> Vec<Value> {
        self.stop_with_lines().1
    }

    /// Stops the watcher with SIGTERM; its exit code and everything it printed.
    pub fn stop_with_lines(self) -> (Option<i32>, Vec<Value>) {
        let lines = Arc::clone(&self.lines);
        let code = self.stop();
        let lines = lines.lock().expect("lines").clone();
        (code, lines)
    }

    /// Stops the watcher with SIGTERM and returns its exit status code.
    pub fn stop(self) -> Option<i32> {
        self.stop_with(libc::SIGTERM)
    }

    /// Stops the watcher with a signal; returns its exit code (None if killed by a signal).
    pub fn stop_with(mut self, sig: i32) -> Option<i32> {
        // SAFETY: our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let status = self.child.wait().ok();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        status.and_then(|s| s.code())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The last lines printed (at most 300), one per line, and how many earlier ones were left
/// out: what a failed wait shows.
fn tail(lines: &[Value]) -> String {
    let skip = lines.len().saturating_sub(300);
    let seen: Vec<String> = lines.iter().skip(skip).map(Value::to_string).collect();
    format!("({skip} earlier lines left out):\n{}", seen.join("\n"))
}

/// How long a test waits for a line oomtrace should print (scaled for emulation): only a
/// failing test waits this long.
pub fn event_wait() -> Duration {
    scaled(Duration::from_secs(30))
}

/// One HTTP/1.0 GET: the status code, the head and the body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(event_wait()))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, head.to_string(), body.to_string()))
}

/// oomtrace's `/metrics` exposition at `addr` (panics unless it answers 200).
pub fn scrape(addr: &str) -> String {
    let (code, head, body) = http_get(addr, "/metrics").expect("scraping oomtrace's /metrics");
    assert_eq!(code, 200, "{head}\n{body}");
    body
}

/// Whether a line is the `kind` finding about process `tgid` (its victim's key).
pub fn finding_about(v: &Value, kind: &str, tgid: u32) -> bool {
    v["type"] == "finding" && v["finding"] == kind && v["victim"]["key"]["tgid"] == tgid
}

/// Whether an event line is about process `pid`.
pub fn concerns(v: &Value, pid: u32) -> bool {
    let p = Value::from(pid);
    match v["event"].as_str() {
        Some("oom_kill" | "mark_victim") => v["victim"]["tgid"] == p || v["victim"]["pid"] == p,
        Some("kernel_sigkill") => v["target"]["tgid"] == p || v["target"]["pid"] == p,
        Some("task_exit") => v["current"]["tgid"] == p,
        Some("task_free" | "wake_reaper" | "start_reaping" | "finish_reaping" | "skip_reaping") => {
            v["pid"] == p
        }
        _ => false,
    }
}

/// The attach type a hook runs as, from a plan (`null` when not attached).
pub fn attach_of(plan: &Value, hook: &str) -> Value {
    plan["plan"]
        .as_array()
        .expect("plan array")
        .iter()
        .find(|h| h["hook"] == hook)
        .unwrap_or_else(|| panic!("hook {hook} missing from the plan"))["attach"]
        .clone()
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

/// Runs `oomtrace check --json ARGS…`: its exit code and its JSON (panics with stderr if the
/// output is not JSON).
pub fn check_json(args: &[&str]) -> (Option<i32>, Value) {
    let out = Command::new(oomtrace_bin())
        .args(["check", "--json"])
        .args(args)
        .output()
        .expect("running oomtrace check");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
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
