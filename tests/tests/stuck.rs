//! End-to-end: victims that do not die are flagged within the timeout, with forensics that show
//! where they are stuck; victims that die are not (root only).

use std::time::Duration;

use oomtrace_tests::{
    Sandbox, Watch, fuse::FuseHold, held_victim, hog, proc_state, require_root, scaled, slowdown,
    spawn_hog,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const TIMEOUT_S: f64 = 1.0;
const TIMEOUT_NS: u64 = 1_000_000_000;
/// The flag must come within the timeout plus this (issue: ≤ 100 ms).
const FLAG_SLACK_NS: u64 = 100_000_000;
const WAIT: Duration = Duration::from_secs(20);

fn wait() -> Duration {
    scaled(WAIT)
}

/// The flag latency bound, scaled under emulation.
fn slack() -> u64 {
    FLAG_SLACK_NS * u64::from(slowdown())
}

fn finding(v: &Value, kind: &str, tgid: u32) -> bool {
    v["type"] == "finding" && v["finding"] == kind && v["victim"]["key"]["tgid"] == tgid
}

fn watch() -> Watch {
    Watch::start(&["--timeout", &TIMEOUT_S.to_string()])
}

/// The incident: the victim's thread is stuck in an unanswered FUSE read, the process is a
/// zombie reparented away from its parent, and it still holds its listening port.
#[test]
fn fuse_stuck_orphan_is_flagged_with_the_incident_shape() {
    require_root();
    let sandbox = Sandbox::new("fuse", 64 * MIB);
    // Dropped before the sandbox: the stuck thread must be released before the cgroup can go.
    let fuse = FuseHold::mount("incident");
    let watch = watch();
    let file = fuse.file().to_str().expect("utf-8").to_string();
    let args: Vec<String> = ["--mb", "256", "--file", &file, "--orphan"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut hog = spawn_hog(&sandbox, "stuck-fuse", &args);
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
    assert_ne!(victim, hog.pid(), "--orphan must fork");
    assert!(
        fuse.wait_held(wait()),
        "the victim's reader never reached the FUSE read"
    );
    hog.go();

    let stuck = watch.wait_for("the STUCK finding", wait(), |v| finding(v, "stuck", victim));
    let since = stuck["since_kill_ns"].as_u64().expect("since_kill_ns");
    assert!(
        (TIMEOUT_NS..=TIMEOUT_NS + slack()).contains(&since),
        "flagged {since} ns after the kill, want within {} ns past the timeout",
        slack()
    );
    assert_eq!(stuck["stage"], "exiting", "{stuck}");
    assert_eq!(stuck["unconfirmed_lost"], 0);
    let fx = &stuck["forensics"];
    assert!(
        fx["state"].as_str().unwrap_or("").starts_with('Z'),
        "not a zombie: {fx}"
    );
    // SAFETY: no preconditions.
    let me = unsafe { libc::getpid() } as u32;
    assert_ne!(fx["ppid"], me, "the victim must have been reparented: {fx}");
    assert_ne!(fx["ppid"], Value::Null, "{fx}");
    let threads = fx["threads"].as_array().expect("threads");
    assert!(
        threads
            .iter()
            .any(|t| t["state"].as_str().unwrap_or("").starts_with('D')
                && t["wchan"] == "request_wait_answer"),
        "no thread in D at request_wait_answer: {fx}"
    );
    let listen = format!("LISTEN 127.0.0.1:{port}");
    assert!(
        fx["sockets"]
            .as_array()
            .expect("sockets")
            .iter()
            .any(|s| s["description"] == listen),
        "the listening socket was not found through the threads' fd tables: {fx}"
    );
    assert_eq!(fx["memcg"]["path"], sandbox.rel_path());
    assert!(proc_state(victim).is_some_and(|s| s.starts_with('Z')));

    fuse.release();
    let dead = watch.wait_for("the late death", wait(), |v| finding(v, "dead", victim));
    assert_eq!(dead["was_flagged"], true);
    assert!(dead["kill_to_dead_ns"].as_u64() > Some(TIMEOUT_NS));
}

/// A victim held at its exit by ptrace: flagged, then reported dead late once released.
#[test]
fn ptrace_held_victim_is_flagged_then_dies_late() {
    require_root();
    let sandbox = Sandbox::new("ptrace", 64 * MIB);
    let watch = watch();
    let (mut hog, mut hold) = held_victim(&sandbox, wait());
    let pid = hog.pid();

    let stuck = watch.wait_for("the STUCK finding", wait(), |v| finding(v, "stuck", pid));
    let since = stuck["since_kill_ns"].as_u64().expect("since_kill_ns");
    assert!(
        (TIMEOUT_NS..=TIMEOUT_NS + slack()).contains(&since),
        "{since}"
    );
    let state = stuck["forensics"]["state"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        state.starts_with('t'),
        "a ptrace-held victim is in tracing stop, not {state}"
    );

    hold.release();
    let dead = watch.wait_for("the late death", wait(), |v| finding(v, "dead", pid));
    assert_eq!(dead["was_flagged"], true);
    assert_eq!(hog.wait_signal(wait()), Some(libc::SIGKILL));
}

/// A victim that dies at once is reported dead and never flagged.
#[test]
fn a_normal_kill_is_not_flagged() {
    require_root();
    let sandbox = Sandbox::new("normal", 64 * MIB);
    let watch = watch();
    let mut hog = hog(&sandbox, 256, false, None);
    let pid = hog.pid();
    hog.go();
    assert_eq!(hog.wait_signal(wait()), Some(libc::SIGKILL));
    let dead = watch.wait_for("the death", wait(), |v| finding(v, "dead", pid));
    assert_eq!(dead["was_flagged"], false);
    assert!(dead["kill_to_dead_ns"].as_u64() < Some(TIMEOUT_NS));
    // Past the timeout, still no flag.
    std::thread::sleep(Duration::from_secs_f64(TIMEOUT_S + 0.5));
    assert!(
        !watch.lines().iter().any(|v| finding(v, "stuck", pid)),
        "a victim that died was flagged"
    );
}
