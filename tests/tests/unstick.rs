//! End-to-end: `oomtrace unstick` frees victims stuck the ways the incident's were, without a
//! reboot, and refuses what it must not touch (root only). One at a time: a FUSE remedy needs
//! exactly one FUSE connection with requests waiting.

use std::{
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use oomtrace_tests::{
    ReleaseOnDrop, Sandbox, Watch,
    fuse::{FuseHold, Hold},
    hog, oomtrace_bin, require_root, scaled, spawn_hog, stuck_victim,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn wait() -> Duration {
    scaled(Duration::from_secs(20))
}

fn unstick(pid: u32, apply: bool) -> (Option<i32>, Value) {
    let mut cmd = Command::new(oomtrace_bin());
    cmd.args(["unstick", &pid.to_string(), "--json", "--wait"])
        .arg(scaled(Duration::from_secs(10)).as_secs().to_string());
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

fn finding(v: &Value, kind: &str, tgid: u32) -> bool {
    v["type"] == "finding" && v["finding"] == kind && v["victim"]["key"]["tgid"] == tgid
}

/// A victim held by an unanswered FUSE request (a READ in a thread, or the FLUSH its last
/// thread sends closing the file inside exit): flagged stuck, diagnosed, its FUSE connection
/// aborted by `unstick --apply`, then reported dead.
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
        fuse.wait_held(wait()),
        "the victim never reached the FUSE request"
    );
    watch.wait_for("the STUCK finding", wait(), |l| finding(l, "stuck", pid));

    // Without --apply: the plan only.
    let (code, plan) = unstick(pid, false);
    assert_eq!(code, Some(0), "{plan}");
    assert_eq!(plan["waits_on"]["kind"], "fuse", "{plan}");
    assert!(
        plan["remedy"]["command"]
            .as_str()
            .is_some_and(|c| c.contains("/abort")),
        "{plan}"
    );
    assert!(plan["applied"].is_null(), "{plan}");

    let (code, done) = unstick(pid, true);
    assert_eq!(code, Some(0), "{done}");
    assert_eq!(done["dead"], true, "{done}");
    let dead = watch.wait_for("the death after unstick", wait(), |l| {
        finding(l, "dead", pid)
    });
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
    watch.wait_for("the STUCK finding", wait(), |l| finding(l, "stuck", pid));
    let (code, done) = unstick(pid, true);
    assert_eq!(code, Some(0), "{done}");
    assert_eq!(done["waits_on"]["kind"], "ptrace", "{done}");
    assert_eq!(done["waits_on"]["tracer"], tracer.pid(), "{done}");
    assert_eq!(done["dead"], true, "{done}");
    assert!(!tracer.running(), "the tracer was not ended");
    assert_eq!(victim.wait_signal(wait()), Some(libc::SIGKILL));
    watch.wait_for("the death after unstick", wait(), |l| {
        finding(l, "dead", pid)
    });
}

/// A killed victim that is dead but a zombie its parent (this test) does not reap: diagnosed as
/// such, the parent reminded with SIGCHLD; dead all along.
#[test]
fn a_zombie_whose_parent_does_not_reap_is_diagnosed_and_its_parent_signalled() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = Sandbox::new("unstick-zombie", 64 * MIB);
    let mut victim = hog(&sandbox, 256, false, None);
    let pid = victim.pid();
    victim.go();
    assert!(
        oomtrace_tests::wait_until(wait(), || oomtrace_tests::proc_state(pid)
            .is_some_and(|s| s.starts_with('Z'))),
        "the victim did not become a zombie"
    );
    let (code, done) = unstick(pid, true);
    assert_eq!(code, Some(0), "{done}");
    assert_eq!(done["waits_on"]["kind"], "zombie_not_reaped", "{done}");
    assert_eq!(done["waits_on"]["parent"], std::process::id(), "{done}");
    assert!(
        done["applied"]["did"][0]
            .as_str()
            .is_some_and(|d| d.contains("SIGCHLD")),
        "{done}"
    );
    assert_eq!(victim.wait_signal(wait()), Some(libc::SIGKILL));
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
    let watch = Watch::start(&[
        "--timeout",
        "1",
        "--unstick",
        "--metrics",
        "127.0.0.1:0",
        "--memcg",
        sandbox.rel_path(),
    ]);
    let mut v = stuck_victim(&sandbox, &fuse, "stuck-flush", &[]);
    let _release = ReleaseOnDrop(&fuse);
    let pid = v.victim;
    v.hog.go();
    watch.wait_for("the STUCK finding", wait(), |l| finding(l, "stuck", pid));
    let u = watch.wait_for("the UNSTICK line", wait(), |l| {
        l["type"] == "unstick" && l["pid"] == pid
    });
    assert_eq!(u["result"], "applied", "{u}");
    watch.wait_for("the death after unstick", wait(), |l| {
        finding(l, "dead", pid)
    });
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
