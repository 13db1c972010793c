//! The `--on-stuck` hook: a program oomtrace (root) runs once per flagged victim, contained so
//! that it can neither corrupt oomtrace's output nor pile up or outlive it.
//!
//! - No shell, no arguments; a clean environment: `PATH` and the `OOMTRACE_*` details only.
//! - Its stdout and stderr go to oomtrace's stderr (the journal under systemd), never to
//!   oomtrace's stdout, which carries the findings (JSON Lines a parser trusts).
//! - Its own process group, killed (SIGKILL, the whole group) past the time limit.
//! - At most [`MAX_RUNNING`] at once; a flag beyond that skips the hook, loudly.
//! - When oomtrace ends, hooks still running get a short grace, then are killed.

use std::{
    os::{
        fd::AsFd as _,
        unix::{fs::PermissionsExt as _, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Hooks running at once, at most.
pub(crate) const MAX_RUNNING: usize = 4;
/// The time limit when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The environment's `PATH` for a hook.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct Running {
    child: Child,
    deadline: Instant,
}

pub(crate) struct Hooks {
    program: PathBuf,
    timeout: Duration,
    running: Vec<Running>,
    /// Flags whose hook did not run: too many running, or it could not start.
    pub(crate) skipped: u64,
    /// Hooks killed at their time limit.
    pub(crate) timed_out: u64,
}

/// Whether `path` is a file this process could execute: checked at start-up, so that a typo
/// is an error then and not a surprise at the first stuck victim.
pub fn check_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt as _;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{}: contains a NUL byte", path.display()))?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0
        || meta.permissions().mode() & 0o111 == 0
    {
        return Err(format!(
            "{}: not executable (chmod +x it; it is run directly, not through a shell)",
            path.display()
        ));
    }
    Ok(())
}

impl Hooks {
    pub(crate) fn new(program: PathBuf, timeout: Duration) -> Hooks {
        Hooks {
            program,
            timeout,
            running: Vec::new(),
            skipped: 0,
            timed_out: 0,
        }
    }

    /// Starts the hook with these `OOMTRACE_*` variables (unless too many are running).
    pub(crate) fn run(&mut self, vars: &[(&str, String)]) {
        self.reap();
        if self.running.len() >= MAX_RUNNING {
            self.skipped += 1;
            eprintln!(
                "oomtrace: --on-stuck {}: not run, {MAX_RUNNING} hooks are still running ({} \
                 skipped so far)",
                self.program.display(),
                self.skipped
            );
            return;
        }
        let out = std::io::stderr().as_fd().try_clone_to_owned();
        let err = std::io::stderr().as_fd().try_clone_to_owned();
        let (Ok(out), Ok(err)) = (out, err) else {
            self.skipped += 1;
            eprintln!("oomtrace: --on-stuck: cannot give the hook an output (no descriptors left)");
            return;
        };
        let mut cmd = Command::new(&self.program);
        cmd.env_clear()
            .env("PATH", PATH)
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        match cmd.spawn() {
            Ok(child) => self.running.push(Running {
                child,
                deadline: Instant::now() + self.timeout,
            }),
            Err(e) => {
                self.skipped += 1;
                eprintln!(
                    "oomtrace: --on-stuck {}: cannot run: {e}",
                    self.program.display()
                );
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Collects finished hooks; kills (the process group of) those past their time limit.
    pub(crate) fn reap(&mut self) {
        let now = Instant::now();
        let timeout = self.timeout;
        let program = &self.program;
        let mut timed_out = 0;
        self.running.retain_mut(|r| {
            if !matches!(r.child.try_wait(), Ok(None)) {
                return false;
            }
            if now < r.deadline {
                return true;
            }
            kill_group(&mut r.child);
            timed_out += 1;
            eprintln!(
                "oomtrace: --on-stuck {}: pid {} killed after its time limit of {} s",
                program.display(),
                r.child.id(),
                timeout.as_secs_f64()
            );
            false
        });
        self.timed_out += timed_out;
    }

    /// At exit: hooks get up to `grace` to finish, then are killed. None outlives oomtrace.
    pub(crate) fn shutdown(&mut self, grace: Duration) {
        let until = Instant::now() + grace;
        while !self.running.is_empty() && Instant::now() < until {
            self.running
                .retain_mut(|r| matches!(r.child.try_wait(), Ok(None)));
            std::thread::sleep(Duration::from_millis(20));
        }
        for mut r in self.running.drain(..) {
            eprintln!(
                "oomtrace: --on-stuck {}: pid {} still running at exit: killed",
                self.program.display(),
                r.child.id()
            );
            kill_group(&mut r.child);
        }
    }
}

/// SIGKILL to the hook's process group (it leads it), then reaps the hook itself.
fn kill_group(child: &mut Child) {
    if let Ok(pgid) = i32::try_from(child.id()) {
        // SAFETY: a process group we created for our own child (it is not reaped yet, so the
        // id cannot have been reused).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_executable_hook_is_refused_at_start() {
        let dir = crate::scratch::ScratchDir::new("hooks");
        let f = dir.path().join("hook");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        assert!(check_executable(&f).unwrap_err().contains("not executable"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_executable(&f), Ok(()));
        assert!(
            check_executable(dir.path())
                .unwrap_err()
                .contains("not a regular file")
        );
        assert!(check_executable(&dir.path().join("missing")).is_err());
    }

    /// A hook that never ends is killed at its limit with its children; the environment is
    /// clean; nothing reaches stdout.
    #[test]
    fn a_hook_is_contained() {
        let dir = crate::scratch::ScratchDir::new("hooks");
        let f = dir.path().join("hook");
        let pids = dir.path().join("pids");
        std::fs::write(
            &f,
            format!(
                // The environment first: the pids file is what the test waits for.
                "#!/bin/sh\nsleep 600 &\nenv > {}.env\necho $$ $! > {}\nexec sleep 600\n",
                pids.display(),
                pids.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut hooks = Hooks::new(f, Duration::from_millis(300));
        hooks.run(&[("OOMTRACE_PID", "42".into())]);
        let started = Instant::now();
        while !std::fs::read_to_string(&pids).is_ok_and(|s| s.ends_with('\n')) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "hook did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(&pids).unwrap();
        let ids: Vec<i32> = text
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        let env = std::fs::read_to_string(format!("{}.env", pids.display())).unwrap();
        assert!(env.contains("OOMTRACE_PID=42\n"), "{env}");
        // Nothing of this process's environment is inherited (a shell adds PWD and the like).
        for (k, _) in std::env::vars() {
            if !["PATH", "PWD", "SHLVL", "_", "OLDPWD"].contains(&k.as_str()) {
                assert!(!env.contains(&format!("\n{k}=")), "{k} inherited: {env}");
            }
        }
        while !hooks.is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "hook never killed"
            );
            hooks.reap();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(hooks.timed_out, 1);
        // The background child went with the group (a zombie until init reaps it at most).
        let alive = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        };
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            !ids.iter().any(|&p| alive(p))
        });
        assert!(gone, "hook processes {ids:?} outlived their limit");
    }

    #[test]
    fn at_most_max_running_at_once() {
        let dir = crate::scratch::ScratchDir::new("hooks");
        let f = dir.path().join("hook");
        std::fs::write(&f, "#!/bin/sh\nexec sleep 600\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut hooks = Hooks::new(f, Duration::from_secs(5));
        for _ in 0..MAX_RUNNING + 2 {
            hooks.run(&[]);
        }
        assert_eq!(hooks.skipped, 2);
        hooks.shutdown(Duration::ZERO);
        assert!(hooks.is_empty());
    }
}
