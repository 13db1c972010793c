//! oomtrace itself: `watch --json` in the background with its lines, `check --json`, the metrics
//! endpoint, and predicates on what it prints.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::*;

/// `oomtrace watch --json` running in the background, its lines collected.
pub struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    warnings: Arc<Mutex<Vec<String>>>,
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
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting oomtrace");
        let stdout = child.stdout.take().expect("stdout");
        // stderr is passed on as it comes; its warnings are also kept, for tests that require
        // none (a warning on a busy node is a user's false alarm).
        let stderr = child.stderr.take().expect("stderr");
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let warned = Arc::clone(&warnings);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("{line}");
                if line.contains("warning:") {
                    warned.lock().expect("warnings").push(line);
                }
            }
        });
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
            warnings,
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

    /// The warnings oomtrace printed on stderr so far.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().expect("warnings").clone()
    }

    /// The plan line.
    /// Whether the `parent_notified` hook is attached (on every kernel of the matrix).
    pub fn dates_deaths_by_the_kernel(&self) -> bool {
        let plan = self.plan();
        plan["plan"].as_array().is_some_and(|p| {
            p.iter()
                .any(|h| h["hook"] == "parent_notified" && !h["attach"].is_null())
        })
    }

    /// Asserts how the `dead` finding of a victim whose parent does not ignore SIGCHLD saw it
    /// die: by the kernel's notification of the parent where the `parent_notified` hook is
    /// attached, else by its pidfd. Under emulation (`slowdown` > 1) a guest's CPUs take turns
    /// on one host thread, and the exiting CPU can be held off between waking the pidfd and
    /// notifying the parent for longer than oomtrace waits for that (5 ms): the pidfd then
    /// dates the death, which is taken there too.
    pub fn assert_seen_dead_as_notified(&self, dead: &Value) {
        let seen = &dead["victim"]["death_seen"];
        if !self.dates_deaths_by_the_kernel() {
            assert_eq!(seen, "pidfd", "{dead}");
        } else if crate::slowdown() > 1 {
            assert!(seen == "parent_notified" || seen == "pidfd", "{dead}");
        } else {
            assert_eq!(seen, "parent_notified", "{dead}");
        }
    }

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

    /// The first line matching `pred` within `timeout`, where its absence is no failure (a
    /// finding checked if it comes): returns as soon as it is there; `None` once `timeout` has
    /// passed or oomtrace's output has ended without it.
    pub fn look_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let end = Instant::now() + timeout;
        let mut scanned = 0;
        loop {
            // Read before the lines, as in `wait_for_unless`.
            let ended = self.reader.as_ref().is_none_or(|r| r.is_finished());
            {
                let lines = self.lines.lock().expect("lines");
                if let Some(v) = lines[scanned..].iter().find(|v| pred(v)) {
                    return Some(v.clone());
                }
                scanned = lines.len();
            }
            if ended || Instant::now() >= end {
                return None;
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
        // The reader thread has ended: these are the only hands on the lines, taken without a
        // copy. With the copy, the ~5,000 lines of a livelock test's OOM storm took 26 s from the
        // watcher's end to the test's next step in an emulated 5.10 guest; without, 0.6 s.
        let lines = Arc::try_unwrap(lines)
            .map(|m| m.into_inner().expect("lines"))
            .unwrap_or_else(|shared| shared.lock().expect("lines").clone());
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
    // One write: the request in one segment, as HTTP clients send it.
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
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

/// Whether the kernel side reads a killed process's sockets from its fd table when the SIGKILL
/// is generated (the plan loaded the `signal_generate` variant with the walk): its ports are
/// then recorded whatever the victim does next, under emulation too.
pub fn kernel_reads_kill_sockets(plan: &Value) -> bool {
    plan["plan"]
        .as_array()
        .expect("plan array")
        .iter()
        .any(|h| h["hook"] == "kernel_sigkill" && h["program"] == "signal_generate_btf_fds")
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
