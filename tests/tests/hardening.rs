//! End-to-end: oomtrace as a root tool on a host in trouble, tried as an attacker and a careless
//! user would (root only): planted links, existing dumps, a closed stdout, a full disk, a
//! descriptor-starved endpoint, bad numbers and filters that match nothing.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use oomtrace_tests::{
    Sandbox, ScratchDir, Watch, event_wait, finding_about, hog, oomtrace_bin, require_root, scaled,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn oomtrace(args: &[&str]) -> std::process::Output {
    Command::new(oomtrace_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running oomtrace")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A world-writable directory with a link planted where root will write the dump, pointing at
/// a file root owns: refused, the file untouched (content and mode); an existing dump likewise.
#[test]
fn record_never_follows_a_planted_link_nor_clobbers_a_dump() {
    require_root();
    let dir = ScratchDir::new("planted");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let precious = dir.path().join("precious");
    std::fs::write(&precious, "root's file").unwrap();
    std::fs::set_permissions(&precious, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = dir.path().join("oom.dump");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    let o = oomtrace(&["record", "-o", link.to_str().unwrap(), "--duration", "0.2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "root's file");
    let mode = std::fs::metadata(&precious).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "the target's mode was changed");

    let old = dir.path().join("crashed.dump");
    std::fs::write(&old, "the crashed run's dump").unwrap();
    let o = oomtrace(&["record", "-o", old.to_str().unwrap(), "--duration", "0.2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("exists"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&old).unwrap(),
        "the crashed run's dump"
    );

    // A directory: a fresh name each run (what the systemd unit does).
    let runs = dir.path().join("runs");
    std::fs::create_dir(&runs).unwrap();
    for _ in 0..2 {
        let o = oomtrace(&["record", "-o", runs.to_str().unwrap(), "--duration", "0.2"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        std::thread::sleep(Duration::from_millis(1100));
    }
    let dumps: Vec<_> = std::fs::read_dir(&runs).unwrap().flatten().collect();
    assert_eq!(dumps.len(), 2, "{dumps:?}");
    for d in dumps {
        assert_eq!(d.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }
}

/// `oomtrace record -o F | head -1`: the reader leaves, recording goes on; the kill that
/// follows is in the dump.
#[test]
fn record_goes_on_when_stdout_is_closed() {
    require_root();
    let dir = ScratchDir::new("closed-stdout");
    let dump = dir.path().join("r.dump");
    let sandbox = Sandbox::new("closed-stdout", 64 * MIB);
    let mut child = Command::new(oomtrace_bin())
        .args(["record", "--json", "-o", dump.to_str().unwrap()])
        .args(["--memcg", sandbox.rel_path()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting oomtrace record");
    let guard = KillOnDrop(child.id());
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"plan\""), "{first}");
    // The reader is gone (dropped above): the next line oomtrace prints hits a broken pipe.
    let mut h = hog(&sandbox, 256, false, None);
    let pid = h.pid();
    h.go();
    assert_eq!(h.wait_signal(event_wait()), Some(libc::SIGKILL));
    std::thread::sleep(scaled(Duration::from_secs(1)));
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "record stopped when stdout closed"
    );
    // SAFETY: our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    drop(guard);
    assert_eq!(status.code(), Some(0));
    let o = oomtrace(&["report", "--json", dump.to_str().unwrap()]);
    let killed = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|v| finding_about(&v, "killed", pid));
    assert!(
        killed,
        "the kill after stdout closed is not in the dump: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// SIGKILLs oomtrace if a test fails before stopping it.
struct KillOnDrop(u32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: a child this test started; if it was reaped already the kill fails harmlessly
        // (the test keeps the Child, so the pid is not reused before this).
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

/// A tmpfs mount that is unmounted when the test ends.
struct Tmpfs<'a>(&'a Path);
impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// The disk fills while recording: the error names the dump, the summary is still printed,
/// and the exit code says it failed.
#[test]
fn a_full_disk_names_the_dump_and_still_ends_with_a_summary() {
    require_root();
    let dir = ScratchDir::new("enospc");
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=64k",
            "oomtrace-test",
            mnt.to_str().unwrap(),
        ])
        .status()
        .expect("mount");
    assert!(ok.success(), "mounting a small tmpfs failed");
    let _unmount = Tmpfs(&mnt);
    let dump = mnt.join("full.dump");
    // Every process exit on the host is recorded (hidden benchmark switch): a fork storm
    // fills 64 KiB quickly.
    let mut child = Command::new(oomtrace_bin())
        .args(["record", "--json", "--findings-only", "--trace-all-exits"])
        .args(["-o", dump.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting oomtrace record");
    let _guard = KillOnDrop(child.id());
    let started = Instant::now();
    loop {
        let _ = Command::new("true").status();
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        assert!(
            started.elapsed() < event_wait(),
            "the dump never filled the disk"
        );
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(dump.to_str().unwrap()) && err.contains("No space left"),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.contains("\"type\":\"summary\"")),
        "no summary: {stdout}"
    );
}

/// 400 idle connections on the metrics endpoint with a low descriptor limit: oomtrace does not
/// spin, and a kill meanwhile is reported with its memcg.
#[test]
fn descriptor_starvation_neither_spins_nor_loses_the_memcg() {
    require_root();
    let sandbox = Sandbox::new("emfile", 64 * MIB);
    let watch = Watch::start(&["--metrics", "127.0.0.1:0", "--memcg", sandbox.rel_path()]);
    let addr = watch.plan()["metrics_addr"].as_str().unwrap().to_string();
    let ok = Command::new("prlimit")
        .args(["--pid", &watch.pid().to_string(), "--nofile=256:256"])
        .status()
        .expect("prlimit (util-linux)");
    assert!(ok.success());
    let conns: Vec<std::net::TcpStream> = (0..400)
        .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
        .collect();
    assert!(conns.len() > 300, "only {} connections", conns.len());
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", watch.pid())).unwrap();
        let f: Vec<u64> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|x| x.parse().unwrap())
            .collect();
        f[0] + f[1]
    };
    let before = cpu();
    std::thread::sleep(Duration::from_secs(2));
    let ticks = cpu() - before;
    // 100 ticks a second: a spinning loop would use ~200 here.
    assert!(
        // Under emulation everything costs ~3x more CPU; a spin still takes the whole core.
        ticks
            < if oomtrace_tests::slowdown() > 1 {
                120
            } else {
                40
            },
        "oomtrace used {ticks} ticks of CPU in 2 s while idle"
    );
    let mut h = hog(&sandbox, 256, false, None);
    let pid = h.pid();
    h.go();
    assert_eq!(h.wait_signal(event_wait()), Some(libc::SIGKILL));
    let k = watch.wait_finding("killed", pid);
    assert_eq!(k["memcg_path"], sandbox.rel_path(), "{k}");
    drop(conns);
}

/// Bad numbers and useless options are refused or said at once, not discovered later.
#[test]
fn bad_options_are_refused_and_empty_filters_are_said() {
    require_root();
    for opt in ["--timeout", "--release-timeout", "--hook-timeout"] {
        let o = oomtrace(&["watch", opt, "1e300", "--duration", "0.1"]);
        assert_eq!(o.status.code(), Some(2), "{opt}: {}", stderr(&o));
        assert!(stderr(&o).contains("a century"), "{}", stderr(&o));
    }
    let dir = ScratchDir::new("badhook");
    let hook = dir.path().join("hook");
    std::fs::write(&hook, "#!/bin/sh\n").unwrap();
    let o = oomtrace(&[
        "watch",
        "--on-stuck",
        hook.to_str().unwrap(),
        "--duration",
        "0.1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not executable"), "{}", stderr(&o));
    let o = oomtrace(&[
        "watch",
        "--memcg",
        "/no/such/memcg-oomtrace",
        "--pid",
        "4194305",
        "--duration",
        "0.1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no such memcg") && stderr(&o).contains("no such process"),
        "{}",
        stderr(&o)
    );
    // Output errors are errors, not panics.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = Command::new(oomtrace_bin())
        .arg("check")
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("No space left"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

/// After attaching, oomtrace keeps four capabilities (docs/privileges.md says why) and sets
/// no_new_privs; a hook it runs has none.
#[test]
fn after_attach_only_the_capabilities_it_needs_remain() {
    require_root();
    let watch = Watch::start(&[]);
    assert_eq!(
        watch.plan()["privileges"]["dropped"],
        true,
        "{}",
        watch.plan()
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", watch.pid())).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {k} in {status}"))
    };
    // CAP_DAC_READ_SEARCH (2), CAP_SYS_PTRACE (19), CAP_SYS_ADMIN (21), CAP_BPF (39).
    let kept: u64 = (1 << 2) | (1 << 19) | (1 << 21) | (1 << 39);
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let v = u64::from_str_radix(&field(set), 16).unwrap();
        assert_eq!(v, kept, "{set} {v:#x}");
    }
    assert_eq!(u64::from_str_radix(&field("CapAmb"), 16).unwrap(), 0);
    assert_eq!(field("NoNewPrivs"), "1");
}
