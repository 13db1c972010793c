//! End-to-end: victims that do not die are flagged within the timeout, with forensics that show
//! where they are stuck; victims that die are not (root only).

use std::time::Duration;

use oomtrace_tests::{
    InExit, ReleaseOnDrop, Sandbox, Watch, event_wait, finding_about,
    fuse::{FuseHold, Hold},
    held_victim, hog, proc_state, require_root, scaled, slowdown, stuck_in_exit, stuck_victim,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const TIMEOUT_S: f64 = 1.0;
const TIMEOUT_NS: u64 = 1_000_000_000;
/// The flag must come within the timeout plus this (issue: ≤ 100 ms).
const FLAG_SLACK_NS: u64 = 100_000_000;

/// The flag latency bound, scaled under emulation.
fn slack() -> u64 {
    FLAG_SLACK_NS * u64::from(slowdown())
}

/// A finding after which process `tgid` can never be flagged stuck: it died, or its death
/// cannot be watched (`unobservable` instead of `stuck`).
fn settled(v: &Value, tgid: u32) -> bool {
    finding_about(v, "dead", tgid) || finding_about(v, "unobservable", tgid)
}

/// The STUCK finding of `victim`, on time (within the slack past the timeout) and saying it
/// entered exit; with how long after the kill it came.
fn stuck_on_time_in_exit(watch: &Watch, victim: u32) -> (Value, u64) {
    let stuck = watch.wait_for_unless(
        "the STUCK finding",
        event_wait(),
        |v| finding_about(v, "stuck", victim),
        |v| settled(v, victim),
    );
    let since = stuck["since_kill_ns"].as_u64().expect("since_kill_ns");
    assert!(
        (TIMEOUT_NS..=TIMEOUT_NS + slack()).contains(&since),
        "flagged {since} ns after the kill, want within {} ns past the timeout",
        slack()
    );
    assert_eq!(stuck["stage"], "exiting", "{stuck}");
    (stuck, since)
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
    let InExit {
        mut hog,
        victim,
        port,
    } = stuck_victim(&sandbox, &fuse, "stuck-fuse", &["--orphan"]);
    assert_ne!(victim, hog.pid(), "--orphan must fork");
    assert!(
        fuse.wait_held(event_wait()),
        "the victim's reader never reached the FUSE read"
    );
    hog.go();

    let (stuck, _) = stuck_on_time_in_exit(&watch, victim);
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
    let dead = watch.wait_finding("dead", victim);
    assert_eq!(dead["was_flagged"], true);
    assert!(dead["kill_to_dead_ns"].as_u64() > Some(TIMEOUT_NS));
}

/// A victim held at its exit by ptrace: flagged, then reported dead late once released.
#[test]
fn ptrace_held_victim_is_flagged_then_dies_late() {
    require_root();
    let sandbox = Sandbox::new("ptrace", 64 * MIB);
    let watch = watch();
    let (mut hog, mut hold) = held_victim(&sandbox, event_wait());
    let pid = hog.pid();

    let stuck = watch.wait_for_unless(
        "the STUCK finding",
        event_wait(),
        |v| finding_about(v, "stuck", pid),
        |v| settled(v, pid),
    );
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
    let dead = watch.wait_finding("dead", pid);
    assert_eq!(dead["was_flagged"], true);
    assert_eq!(hog.wait_signal(event_wait()), Some(libc::SIGKILL));
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
    assert_eq!(hog.wait_signal(event_wait()), Some(libc::SIGKILL));
    let dead = watch.wait_finding("dead", pid);
    assert_eq!(dead["was_flagged"], false);
    assert!(dead["kill_to_dead_ns"].as_u64() < Some(TIMEOUT_NS));
    // Past the timeout, still no flag.
    std::thread::sleep(Duration::from_secs_f64(TIMEOUT_S + 0.5));
    assert!(
        !watch.lines().iter().any(|v| finding_about(v, "stuck", pid)),
        "a victim that died was flagged"
    );
}

/// What the issue asks of a victim stuck in exit_files: flagged stuck at the exiting stage
/// within timeout + slack, its port named although no fd table lists it, never dead while
/// held, dead with the right time once released.
fn flush_held_victim_is_stuck_until_released(leader_exits: bool) {
    require_root();
    let label = if leader_exits { "flush-mt" } else { "flush" };
    let sandbox = Sandbox::new(label, 64 * MIB);
    let fuse = FuseHold::mount_holding(label, Hold::Flush);
    let watch = watch();
    let extra: &[&str] = if leader_exits {
        &["--leader-exits"]
    } else {
        &[]
    };
    let mut v = stuck_in_exit(&sandbox, &fuse, extra);
    let _release = ReleaseOnDrop(&fuse);
    let victim = v.victim;
    if leader_exits {
        assert!(
            oomtrace_tests::wait_until(event_wait(), || proc_state(victim)
                .is_some_and(|s| s.starts_with('Z'))),
            "the leader did not exit before the kill"
        );
    }
    v.hog.go();
    assert!(
        fuse.wait_held(event_wait()),
        "the killed victim never reached the FUSE flush in exit_files"
    );

    let (stuck, since) = stuck_on_time_in_exit(&watch, victim);
    assert!(
        stuck["where_stuck"]
            .as_str()
            .is_some_and(|w| w.starts_with("every thread has reached the exit tracepoint")),
        "{stuck}"
    );
    assert_forensics_of_a_victim_in_exit_files(&watch, &stuck, v.port);
    assert!(
        !watch
            .lines()
            .iter()
            .any(|l| finding_about(l, "dead", victim)),
        "reported dead while held in exit_files"
    );

    std::thread::sleep(Duration::from_millis(300));
    fuse.release();
    let dead = watch.wait_finding("dead", victim);
    assert_eq!(dead["was_flagged"], true);
    watch.assert_seen_dead_as_notified(&dead);
    let k2d = dead["kill_to_dead_ns"].as_u64().expect("kill_to_dead_ns");
    assert!(
        k2d > since + 300_000_000,
        "dead {k2d} ns after the kill, before the hold ended"
    );
    assert!(!proc_state(victim).is_some_and(|s| s.starts_with('D')));
}

/// What /proc showed of a victim held in exit_files, in its STUCK finding: a thread in D, and
/// its listening `port` named once, as its own or apart.
fn assert_forensics_of_a_victim_in_exit_files(watch: &Watch, stuck: &Value, port: u16) {
    let fx = &stuck["forensics"];
    assert!(
        fx["threads"]
            .as_array()
            .expect("threads")
            .iter()
            .any(|t| t["state"].as_str().unwrap_or("").starts_with('D')),
        "no thread in D: {fx}"
    );
    let listen = format!("LISTEN 127.0.0.1:{port}");
    let named = |key: &str| {
        fx[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key}: {fx}"))
            .iter()
            .find(|s| s["description"] == listen)
            .cloned()
    };
    // Recorded at the kill: its own. Where the kernel reads the fd table at the SIGKILL,
    // always; where oomtrace reads it through /proc, the victim can reach exit_files first
    // under emulation; then nothing is its own and the port is listed apart, as a listener no
    // process holds (never pinned on it). Never "in an fd table now": the table is detached
    // inside exit_files.
    match (named("sockets"), named("unheld_listeners")) {
        (Some(socket), None) => assert!(
            socket["attribution"]
                .as_str()
                .is_some_and(|a| a.starts_with("in its fd table when it was killed")),
            "the fd table is detached inside exit_files: {socket}"
        ),
        (None, Some(_)) => assert!(
            oomtrace_tests::slowdown() > 1
                && !oomtrace_tests::kernel_reads_kill_sockets(&watch.plan()),
            "the kill is recorded before the victim reaches exit_files (by the kernel at the \
             SIGKILL, or on the host through /proc): {fx}"
        ),
        _ => panic!("the listening port is named once, as its own or apart: {fx}"),
    }
}

#[test]
fn victim_held_in_exit_files_is_stuck_not_dead() {
    flush_held_victim_is_stuck_until_released(false);
}

#[test]
fn threaded_victim_with_a_zombie_leader_held_in_exit_files_is_stuck_not_dead() {
    flush_held_victim_is_stuck_until_released(true);
}

/// A host already in trouble: the victim was killed and stuck before oomtrace started. `check`
/// names it (exit 4), and `watch` flags it within a second of attaching, then sees it die.
#[test]
fn victims_killed_before_oomtrace_starts_are_named_at_once() {
    require_root();
    let sandbox = Sandbox::new("before", 64 * MIB);
    let fuse = FuseHold::mount_holding("before", Hold::Flush);
    let mut v = stuck_in_exit(&sandbox, &fuse, &["--orphan"]);
    let _release = ReleaseOnDrop(&fuse);
    let victim = v.victim;
    v.hog.go();
    assert!(
        fuse.wait_held(event_wait()),
        "the victim never reached the flush"
    );

    let (code, check) = oomtrace_tests::check_json(&[]);
    assert_eq!(code, Some(4), "check must exit 4: {check}");
    let listed = check["pre_existing"]
        .as_array()
        .expect("pre_existing")
        .iter()
        .find(|p| p["pid"] == victim)
        .unwrap_or_else(|| panic!("check does not list {victim}: {check}"))
        .clone();
    assert_eq!(listed["memcg_path"], sandbox.rel_path(), "{listed}");

    let started = std::time::Instant::now();
    let watch = watch();
    let attached = started.elapsed();
    let stuck = watch.wait_for_unless(
        "the pre-existing STUCK finding",
        event_wait(),
        |l| finding_about(l, "stuck", victim),
        |l| settled(l, victim),
    );
    let after_attach = started.elapsed().saturating_sub(attached);
    assert!(
        after_attach <= scaled(Duration::from_secs(1)),
        "named {after_attach:?} after attach, want within a second"
    );
    assert_eq!(stuck["victim"]["pre_existing"], true, "{stuck}");
    assert_eq!(stuck["stage"], "pre_existing", "{stuck}");
    assert_eq!(stuck["memcg_path"], sandbox.rel_path(), "{stuck}");
    // Killed before oomtrace came and inside exit_files: its table is detached and nothing
    // was recorded at its kill. Its port is not pinned on it (it could be anyone's), but it
    // is listed as a listener no process holds, and a note says why.
    let port = format!("LISTEN 127.0.0.1:{}", v.port);
    let fx = &stuck["forensics"];
    let listed = |key: &str| {
        fx[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key}: {fx}"))
            .iter()
            .any(|s| s["description"] == port)
    };
    assert!(!listed("sockets"), "pinned on the victim: {fx}");
    assert!(listed("unheld_listeners"), "{fx}");
    assert!(
        fx["notes"]
            .as_array()
            .expect("notes")
            .iter()
            .any(|n| n.as_str().is_some_and(|n| n.contains("not guessed"))),
        "{fx}"
    );
    fuse.release();
    let dead = watch.wait_finding("dead", victim);
    assert_eq!(
        dead["kill_to_dead_ns"],
        Value::Null,
        "its kill time is unknown"
    );
    let summary = watch.stop_and_collect();
    let s = summary
        .iter()
        .find(|l| l["type"] == "summary")
        .expect("a summary");
    assert!(s["summary"]["pre_existing"].as_u64() >= Some(1), "{s}");
}
