//! End-to-end: `oomtrace unstick` frees victims stuck the ways the incident's were, without a
//! reboot, and refuses what it must not touch (root only): an unprivileged user shapes its
//! victim to turn root's remedies against the host (a root parent made tracer by
//! PTRACE_TRACEME, a root-owned FUSE mount, a `kill -9` passed off as an OOM kill), and the
//! remedies act only on what the victim owns. One at a time.

use std::{
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use oomtrace_tests::{
    ReleaseOnDrop, Sandbox, ScratchDir, Watch, event_wait, finding_about,
    fuse::{FuseHold, Hold},
    held_victim, hog, oomtrace_bin, require_root, scaled, spawn_hog, stuck_victim,
    unstick_fixtures::{self as fx, Crowd, TracemeShape, USER},
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn unstick(pid: u32, apply: bool) -> (Option<i32>, Value) {
    let state = ScratchDir::new("unstick-state");
    unstick_with(pid, apply, &[], state.path())
}

/// `oomtrace unstick PID --json [--apply] EXTRA…`, its journal in `state`.
fn unstick_with(
    pid: u32,
    apply: bool,
    extra: &[&str],
    state: &std::path::Path,
) -> (Option<i32>, Value) {
    let mut cmd = Command::new(oomtrace_bin());
    cmd.args(["unstick", &pid.to_string(), "--json", "--wait"])
        .arg(scaled(Duration::from_secs(10)).as_secs().to_string())
        .args(extra)
        .env("OOMTRACE_STATE_DIR", state);
    if apply {
        cmd.arg("--apply");
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("running oomtrace unstick");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "unstick printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

/// The fusectl id of the FUSE mount at `dir`: its `dev_t` as the kernel numbers it.
fn connection_of(dir: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    let dev = std::fs::metadata(dir).expect("stat the mount").dev();
    (libc::major(dev) << 20) | libc::minor(dev)
}

/// A victim held by an unanswered FUSE request (a READ in a thread, or the FLUSH its last
/// thread sends closing the file inside exit): flagged stuck, diagnosed, its FUSE connection
/// aborted by `unstick --apply`, then reported dead. The READ's file is named by the blocked
/// thread's system call; a FLUSH inside exit names none (its fd table is detached): the CLI
/// refuses to guess, and aborts the connection the administrator names.
fn fuse_held(hold: Hold, mode: &str, label: &str) {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new(label, 64 * MIB);
    let fuse = FuseHold::mount_holding(label, hold);
    let watch = Watch::start(&["--timeout", "1", "--memcg", sandbox.rel_path()]);
    let mut v = stuck_victim(&sandbox, &fuse, mode, &[]);
    let _release = ReleaseOnDrop(&fuse);
    let pid = v.victim;
    v.hog.go();
    assert!(
        fuse.wait_held(event_wait()),
        "the victim never reached the FUSE request"
    );
    watch.wait_finding("stuck", pid);

    let mut named = Vec::new();
    let conn = connection_of(fuse.dir()).to_string();
    if hold == Hold::Flush {
        let (code, plan) = unstick(pid, true);
        assert_eq!(code, Some(5), "{plan}");
        assert_eq!(plan["waits_on"]["kind"], "fuse", "{plan}");
        assert!(plan["applied"].is_null(), "{plan}");
        named = vec!["--fuse-connection", conn.as_str()];
    }
    let state = ScratchDir::new("unstick-state");
    // Without --apply: the plan only.
    let (code, plan) = unstick_with(pid, false, &named, state.path());
    assert_eq!(code, Some(0), "{plan}");
    assert_eq!(plan["waits_on"]["kind"], "fuse", "{plan}");
    assert!(
        plan["remedy"]["command"]
            .as_str()
            .is_some_and(|c| c.contains("/abort")),
        "{plan}"
    );
    assert!(plan["applied"].is_null(), "{plan}");
    assert_eq!(
        plan["waits_on"]["connections"][0],
        connection_of(fuse.dir()),
        "{plan}"
    );

    let (code, done) = unstick_with(pid, true, &named, state.path());
    assert_eq!(code, Some(0), "{done}");
    assert_eq!(done["dead"], true, "{done}");
    let dead = watch.wait_finding("dead", pid);
    assert_eq!(dead["was_flagged"], true, "{dead}");
}

#[test]
fn a_victim_held_by_a_fuse_read_is_unstuck_by_aborting_the_connection() {
    fuse_held(Hold::Read, "stuck-fuse", "unstick-read");
}

#[test]
fn a_victim_held_by_a_fuse_flush_in_exit_is_unstuck_by_aborting_the_connection() {
    fuse_held(Hold::Flush, "stuck-flush", "unstick-flush");
}

/// A tracer (its own process) holds the killed victim at its exit: unstick ends the tracer,
/// the victim dies.
#[test]
fn a_ptrace_held_victim_is_unstuck_by_ending_its_tracer() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new("unstick-ptrace", 64 * MIB);
    let watch = Watch::start(&["--timeout", "1", "--memcg", sandbox.rel_path()]);
    let mut victim = hog(&sandbox, 256, false, None);
    let pid = victim.pid();
    let tracers = Sandbox::new("unstick-tracer", 64 * MIB);
    let mut tracer = spawn_hog(
        &tracers,
        "trace-hold",
        &["--pid".to_string(), pid.to_string()],
    );
    // trace-hold takes no --cgroup of its own: it stays where it was started.
    assert_eq!(tracer.line(), "seized");
    victim.go();
    watch.wait_finding("stuck", pid);
    let (code, done) = unstick(pid, true);
    assert_eq!(code, Some(0), "{done}");
    assert_eq!(done["waits_on"]["kind"], "ptrace", "{done}");
    assert_eq!(done["waits_on"]["tracer"], tracer.pid(), "{done}");
    assert_eq!(done["dead"], true, "{done}");
    assert!(!tracer.running(), "the tracer was not ended");
    assert_eq!(victim.wait_signal(event_wait()), Some(libc::SIGKILL));
    watch.wait_finding("dead", pid);
}

/// A killed victim that is dead but a zombie its parent (this test) does not reap: diagnosed as
/// such; the parent is oomtrace's own ancestor (this test started it), which unstick never
/// signals: refused, and said.
#[test]
fn a_zombie_whose_parent_does_not_reap_is_diagnosed_and_its_parent_signalled() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new("unstick-zombie", 64 * MIB);
    let mut victim = hog(&sandbox, 256, false, None);
    let pid = victim.pid();
    victim.go();
    assert!(
        oomtrace_tests::wait_until(event_wait(), || oomtrace_tests::proc_state(pid)
            .is_some_and(|s| s.starts_with('Z'))),
        "the victim did not become a zombie"
    );
    let (code, done) = unstick(pid, true);
    assert_eq!(code, Some(5), "{done}");
    assert_eq!(done["waits_on"]["kind"], "zombie_not_reaped", "{done}");
    assert_eq!(done["waits_on"]["parent"], std::process::id(), "{done}");
    assert!(
        done["refused"]
            .as_str()
            .is_some_and(|d| d.contains("ancestors")),
        "{done}"
    );
    assert!(done["applied"].is_null(), "{done}");
    assert_eq!(victim.wait_signal(event_wait()), Some(libc::SIGKILL));
}

/// Not an OOM victim: refused (exit 5), and the process is untouched.
#[test]
fn unstick_refuses_a_process_that_is_not_an_oom_victim() {
    require_root();
    let mut sleeper = Command::new("sleep").arg("600").spawn().expect("sleep");
    let (code, v) = unstick(sleeper.id(), true);
    assert_eq!(code, Some(5), "{v}");
    assert!(
        v["refused"]
            .as_str()
            .is_some_and(|r| r.contains("not an OOM victim")),
        "{v}"
    );
    assert!(v["applied"].is_null(), "{v}");
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "the process was touched"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// The canary case: `watch --unstick` takes the remedy itself once the victim is flagged, says
/// so, counts it in the metrics, and the victim dies.
#[test]
fn watch_unstick_frees_a_flagged_fuse_victim_by_itself() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new("unstick-auto", 64 * MIB);
    let fuse = FuseHold::mount_holding("unstick-auto", Hold::Flush);
    let state = ScratchDir::new("unstick-state");
    let watch = watch_unstick(&sandbox, &state, &["--metrics", "127.0.0.1:0"]);
    let mut v = stuck_victim(&sandbox, &fuse, "stuck-flush", &[]);
    let _release = ReleaseOnDrop(&fuse);
    let pid = v.victim;
    v.hog.go();
    watch.wait_finding("stuck", pid);
    let u = watch.wait_for("the UNSTICK line", event_wait(), |l| {
        l["type"] == "unstick" && l["pid"] == pid
    });
    assert_eq!(u["result"], "applied", "{u}");
    watch.wait_finding("dead", pid);
    let addr = watch.plan()["metrics_addr"].as_str().unwrap().to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    std::io::Read::read_to_string(&mut s, &mut body).unwrap();
    assert!(
        body.contains("oomtrace_unstick_total{wait=\"fuse\",result=\"applied\"} 1"),
        "{body}"
    );
}

/// `oomtrace watch --json --timeout 1 --unstick --memcg SANDBOX EXTRA…`, its journal in `state`.
fn watch_unstick(sandbox: &Sandbox, state: &ScratchDir, extra: &[&str]) -> Watch {
    let mut args = vec![
        "watch",
        "--json",
        "--timeout",
        "1",
        "--unstick",
        "--memcg",
        sandbox.rel_path(),
    ];
    args.extend_from_slice(extra);
    Watch::start_cmd(
        &args,
        &[("OOMTRACE_STATE_DIR", state.path().to_str().unwrap())],
    )
}

fn unstick_line(watch: &Watch, pid: u32) -> Value {
    watch.wait_for("the UNSTICK line", event_wait(), |l| {
        l["type"] == "unstick" && l["pid"] == pid && l["result"] != "restored"
    })
}

/// The TRACEME shape: a root supervisor (ignoring SIGTERM) started an unprivileged
/// victim whose leader did PTRACE_TRACEME — the supervisor is that thread's tracer — and whose
/// second thread the user's own tracer holds in its exit stop. Root's `watch --unstick` must
/// end the user's tracer (the tracer of the thread that is stopped, of the victim's uid) and
/// leave the supervisor alone; the victim then dies.
#[test]
fn a_traceme_root_parent_is_untouched_and_the_users_own_tracer_is_ended() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new("unstick-traceme", 64 * MIB);
    let state = ScratchDir::new("unstick-state");
    let watch = watch_unstick(&sandbox, &state, &[]);
    let mut shape = TracemeShape::start(&sandbox, USER);
    let pid = shape.victim;
    shape.go();
    watch.wait_finding("stuck", pid);
    let u = unstick_line(&watch, pid);
    assert_eq!(u["result"], "applied", "{u}");
    let text = u["detail"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("tracer {}", shape.tracer.pid())),
        "not the user's tracer: {u}"
    );
    assert!(
        !text.contains(&format!("tracer {}", shape.supervisor)),
        "the supervisor was signalled: {u}"
    );
    watch.wait_finding("dead", pid);
    assert!(!shape.tracer.running(), "the user's tracer was not ended");
    std::thread::sleep(Duration::from_millis(500));
    assert!(shape.supervisor_alive(), "the root supervisor was killed");
}

/// A user's process hung on a root-owned `allow_other` FUSE mount (sshfs, a CSI driver…) and
/// OOM-killed: the connection is root's (its fusectl dir's uid is the mount's user_id), not
/// the victim's: `watch --unstick` and `unstick --apply` refuse, and the mount goes on
/// (the victim stays held until the daemon answers).
#[test]
fn a_users_victim_on_a_root_owned_fuse_mount_leaves_the_mount_alone() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new("unstick-rootfuse", 64 * MIB);
    let fuse = FuseHold::mount_holding("unstick-rootfuse", Hold::Read);
    let state = ScratchDir::new("unstick-state");
    let watch = watch_unstick(&sandbox, &state, &[]);
    let file = fuse.file().to_str().unwrap().to_string();
    let args: Vec<String> = ["--mb", "256", "--file", &file]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut hog = fx::spawn_hog_as(&sandbox, "stuck-fuse", &args, USER);
    let _release = ReleaseOnDrop(&fuse);
    assert!(hog.line().starts_with("port "));
    let pid: u32 = hog.line().strip_prefix("ready ").unwrap().parse().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.contains(&format!("\nUid:\t{USER}\t")),
        "the victim is not the user's: {status}"
    );
    assert!(
        fuse.wait_held(event_wait()),
        "the victim never reached the FUSE read"
    );
    hog.go();
    watch.wait_finding("stuck", pid);
    let u = unstick_line(&watch, pid);
    assert_eq!(u["result"], "refused", "{u}");
    assert!(
        u["detail"]
            .as_str()
            .is_some_and(|t| t.contains("belongs to uid 0")),
        "{u}"
    );
    let (code, v) = unstick(pid, true);
    assert_eq!(code, Some(5), "{v}");
    assert!(
        v["refused"]
            .as_str()
            .is_some_and(|t| t.contains("belongs to uid 0")),
        "{v}"
    );
    assert!(v["applied"].is_null(), "{v}");
    // Not aborted: the victim is still held in the read, and nothing said it died.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        oomtrace_tests::proc_state(pid).is_some(),
        "the victim died: its FUSE connection was aborted"
    );
    assert!(!watch.lines().iter().any(|l| finding_about(l, "dead", pid)));
    fuse.release();
    watch.wait_finding("dead", pid);
}

/// A user's own `kill -9` of a process its tracer holds, in a memcg that has counted an OOM
/// kill before: no OOM kill of it in the kernel's log, so `unstick --apply` does not take it
/// for an OOM victim and ends nobody.
#[test]
fn a_users_own_kill_in_a_memcg_that_saw_an_oom_kill_is_not_an_oom_victim() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new("unstick-userkill", 64 * MIB);
    let mut first = hog(&sandbox, 256, false, None);
    first.go();
    assert_eq!(first.wait_signal(event_wait()), Some(libc::SIGKILL));
    assert!(sandbox.oom_kills() > 0, "the memcg counted no OOM kill");
    let mut victim = hog(&sandbox, 8, true, None);
    let tracers = Sandbox::new("unstick-userkill-tracer", 64 * MIB);
    let mut tracer = spawn_hog(
        &tracers,
        "trace-hold",
        &["--pid".to_string(), victim.pid().to_string()],
    );
    assert_eq!(tracer.line(), "seized");
    victim.go();
    assert_eq!(victim.line(), "allocated");
    // SAFETY: our own child.
    unsafe { libc::kill(victim.pid() as i32, libc::SIGKILL) };
    assert!(
        oomtrace_tests::wait_until(event_wait(), || oomtrace_tests::proc_state(victim.pid())
            .is_some_and(|s| s.starts_with('t'))),
        "the victim did not stop at its exit"
    );
    let (code, v) = unstick(victim.pid(), true);
    assert_eq!(code, Some(5), "{v}");
    assert!(
        v["refused"]
            .as_str()
            .is_some_and(|r| r.contains("names no OOM kill")),
        "{v}"
    );
    assert!(v["applied"].is_null(), "{v}");
    assert!(tracer.running(), "the tracer was ended");
}

/// A memcg limit raised by `unstick --apply` is journaled on disk before it is raised; the
/// oomtrace that raised it is SIGKILLed while it waits; once the victim is dead, the next
/// oomtrace start puts the limit back (and empties the journal).
#[test]
fn a_limit_raise_is_put_back_after_oomtrace_is_killed_and_restarted() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new("unstick-journal", 64 * MIB);
    let state = ScratchDir::new("unstick-journal-state");
    let before = fx::limit_of(&sandbox);
    let fusectl = || {
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/fuse/connections"))
    };
    let fusectl_before = fusectl();
    let (mut h, mut hold) = held_victim(&sandbox, event_wait());
    let pid = h.pid();
    let mut raiser = Command::new(oomtrace_bin())
        .args([
            "unstick",
            &pid.to_string(),
            "--apply",
            "--raise-memcg-limit",
            "--json",
        ])
        .args(["--wait", "600"])
        .env("OOMTRACE_STATE_DIR", state.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("oomtrace unstick");
    let raised = oomtrace_tests::wait_until(event_wait(), || fx::limit_of(&sandbox) > before);
    assert!(raised, "the limit was not raised");
    // cgroup v1 with swap accounting: memsw (equal to the limit here) was raised first, else
    // the kernel refuses the limit (EINVAL).
    let memsw = sandbox.dir().join("memory.memsw.limit_in_bytes");
    let memsw_of = || -> Option<u64> { std::fs::read_to_string(&memsw).ok()?.trim().parse().ok() };
    if let Some(sw) = memsw_of() {
        assert_eq!(
            sw,
            fx::limit_of(&sandbox),
            "memsw not raised with the limit"
        );
    }
    let journal = state.path().join("memcg-limits.json");
    let text = std::fs::read_to_string(&journal).expect("the journal");
    assert!(text.contains(&pid.to_string()), "{text}");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&journal).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // It mounted fusectl to look for the victim's FUSE connections: unmounted once the raise
    // is applied, before its wait (under emulation the raise is seen before the unmount, so
    // the test waits for it), so its SIGKILL in the wait leaves no mount behind.
    assert!(
        oomtrace_tests::wait_until(event_wait(), || fusectl() == fusectl_before),
        "fusectl still mounted during unstick's wait"
    );
    // SAFETY: our own child.
    unsafe { libc::kill(raiser.id() as i32, libc::SIGKILL) };
    let _ = raiser.wait();
    assert!(
        fx::limit_of(&sandbox) > before,
        "put back by a SIGKILLed process?"
    );
    assert_eq!(fusectl(), fusectl_before, "fusectl left mounted");
    hold.release();
    assert_eq!(h.wait_signal(event_wait()), Some(libc::SIGKILL));
    // Page cache fills the headroom: usage above the old limit must not keep the raise (the
    // kernel reclaims the cache when the old limit is written back).
    let cache = ScratchDir::new("unstick-journal-cache");
    if let Some(u) = fill_page_cache(&sandbox, cache.path(), before / MIB + 8) {
        assert!(u > before, "usage {u} is not above the old limit {before}");
    }
    // Restarted (any `unstick` run): the victim is gone, the limit goes back.
    let (_, v) = unstick_with(pid, false, &[], state.path());
    assert_eq!(fx::limit_of(&sandbox), before, "{v}");
    if let Some(sw) = memsw_of() {
        assert_eq!(sw, before, "memsw not put back: {v}");
    }
    assert!(
        v["restored"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("put back")),
        "{v}"
    );
    let text = std::fs::read_to_string(&journal).expect("the journal");
    assert_eq!(text.trim(), "[]");
}

/// A victim with 128 threads × 10k open sockets, every thread held at its exit with the fd
/// table still there: the forensics at its flag are bounded (the STUCK line stays small, the
/// RSS of oomtrace too) and the loop keeps answering scrapes while it reads them.
#[test]
fn a_victim_with_many_threads_and_files_is_read_within_bounds() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new("unstick-crowd", 128 * MIB);
    let watch = Watch::start(&[
        "--timeout",
        "1",
        "--metrics",
        "127.0.0.1:0",
        "--memcg",
        sandbox.rel_path(),
    ]);
    let addr = watch.plan()["metrics_addr"].as_str().unwrap().to_string();
    let crowd = Crowd::start(&sandbox, 128, 10_000);
    let holds: Vec<oomtrace_tests::PtraceHold> = crowd
        .tids
        .iter()
        .map(|&t| oomtrace_tests::PtraceHold::seize(t))
        .collect();
    // Scrapes every 50 ms from before the kill until the flag: the slowest answer.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let (stop, addr) = (stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = std::time::Instant::now();
                let mut s = std::net::TcpStream::connect(&addr).unwrap();
                std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
                let mut body = String::new();
                let _ = std::io::Read::read_to_string(&mut s, &mut body);
                slowest = slowest.max(t.elapsed());
                std::thread::sleep(Duration::from_millis(50));
            }
            slowest
        })
    };
    crowd.go();
    let pid = crowd.victim;
    let flagged = std::time::Instant::now();
    let stuck = watch.wait_finding("stuck", pid);
    let took = flagged.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let slowest = scraper.join().unwrap();
    let line = stuck.to_string().len();
    let hwm = oomtrace_tests::proc_status_number(watch.pid(), "VmHWM:").unwrap_or(0);
    eprintln!(
        "crowd: kill to STUCK line {took:?}, slowest scrape {slowest:?}, STUCK line {line} \
         bytes, oomtrace VmHWM {hwm} kB"
    );
    assert!(line < 256 << 10, "the STUCK line is {line} bytes");
    assert!(
        slowest < scaled(Duration::from_secs(2)),
        "a scrape took {slowest:?}"
    );
    assert!(hwm > 0 && hwm < 96 << 10, "oomtrace's peak RSS {hwm} kB");
    let notes = stuck.to_string();
    assert!(notes.contains("only 64 are detailed"), "{notes:.2000}");
    drop(holds);
    drop(crowd);
}

/// A victim killed before `watch --unstick` started (found by its start-up scan): who killed it
/// is unknown (the OOM killer, or its owner's `kill -9`), so no remedy is taken without
/// `--unstick-pre-existing`; it is said, and the victim stays as it was.
#[test]
fn watch_unstick_leaves_a_victim_found_at_start_alone_without_the_opt_in() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new("unstick-before", 64 * MIB);
    let fuse = FuseHold::mount_holding("unstick-before", Hold::Read);
    let mut v = stuck_victim(&sandbox, &fuse, "stuck-fuse", &[]);
    let _release = ReleaseOnDrop(&fuse);
    let pid = v.victim;
    assert!(
        fuse.wait_held(event_wait()),
        "the victim never reached the FUSE read"
    );
    v.hog.go();
    assert!(
        oomtrace_tests::wait_until(event_wait(), || sandbox.oom_kills() > 0),
        "the victim was not OOM-killed"
    );
    let state = ScratchDir::new("unstick-state");
    let watch = watch_unstick(&sandbox, &state, &[]);
    let stuck = watch.wait_finding("stuck", pid);
    assert_eq!(stuck["victim"]["pre_existing"], true, "{stuck}");
    let u = unstick_line(&watch, pid);
    assert_eq!(u["result"], "refused", "{u}");
    assert!(
        u["detail"]
            .as_str()
            .is_some_and(|t| t.contains("--unstick-pre-existing")),
        "{u}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        oomtrace_tests::proc_state(pid).is_some(),
        "the victim died: a remedy was taken"
    );
    fuse.release();
    watch.wait_finding("dead", pid);
}

/// Writes `mib` MiB to a file under `dir` from a process in `sandbox` (its page cache charged
/// there); the sandbox's usage after, or None where `dir` is a tmpfs (its pages could not be
/// reclaimed without swap: not page cache that a limit write reclaims).
fn fill_page_cache(sandbox: &Sandbox, dir: &std::path::Path, mib: u64) -> Option<u64> {
    // SAFETY: a zeroed statfs, filled by the kernel for a valid path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &raw mut st) } != 0 || st.f_type == 0x0102_1994 {
        eprintln!("{} is a tmpfs: page-cache fill skipped", dir.display());
        return None;
    }
    let procs = sandbox.dir().join("cgroup.procs");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && exec dd if=/dev/zero of={}/fill bs=1M count={mib} status=none",
            procs.display(),
            dir.display()
        ))
        .status()
        .expect("sh");
    assert!(status.success(), "filling the page cache: {status}");
    ["memory.usage_in_bytes", "memory.current"]
        .iter()
        .find_map(|f| std::fs::read_to_string(sandbox.dir().join(f)).ok())
        .and_then(|t| t.trim().parse().ok())
}

/// The tracer holding the victim ignores SIGTERM and traces from a thread that is not its
/// leader (`TracerPid` names that thread): its process is still ended, by SIGKILL after the
/// ignored SIGTERM, each step said; the victim dies.
#[test]
fn a_tracer_tracing_from_a_second_thread_and_ignoring_sigterm_is_ended() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new("unstick-thread-tracer", 64 * MIB);
    let mut victim = hog(&sandbox, 256, false, None);
    let pid = victim.pid();
    let tracer = fx::ThreadedTracer::seize(pid);
    assert_ne!(tracer.tid, tracer.pid);
    victim.go();
    assert!(
        oomtrace_tests::wait_until(event_wait(), || oomtrace_tests::proc_state(pid)
            .is_some_and(|s| s.starts_with('t'))),
        "the victim did not stop at its exit"
    );
    let (code, done) = unstick(pid, true);
    assert_eq!(code, Some(0), "{done}");
    assert_eq!(done["waits_on"]["tracer"], tracer.tid, "{done}");
    let did: Vec<&str> = done["applied"]["did"]
        .as_array()
        .expect("did")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        did.iter()
            .any(|d| d.contains("ignored SIGTERM: sent SIGKILL")),
        "{done}"
    );
    assert_eq!(done["dead"], true, "{done}");
    assert!(fx::child_exited(tracer.pid), "the tracer still runs");
    assert_eq!(victim.wait_signal(event_wait()), Some(libc::SIGKILL));
}
