//! End-to-end: an OOM that kills nothing. A cgroup v1 memcg with `oom_kill_disable 1` at its
//! limit: the task that faults there sleeps in `mem_cgroup_oom_synchronize` for ever and the
//! kernel kills no one. `watch` (no invocation hook on this host: the memcg's eventfd) names the
//! hang with the sleeper, `check` names it and exits 4, `unstick --apply` re-enables the killer
//! (the kernel then kills the hog and the hang ends) and puts the setting back. Root only; the
//! hierarchy must be cgroup v1 (the host's), where `memory.oom_control` exists.

use std::{process::Command, time::Duration};

use oomtrace_tests::{
    CgroupVersion, Sandbox, Watch, check_json, hog, proc_state, require_root, scaled, wait_until,
};

const MIB: u64 = 1 << 20;

#[test]
fn an_oom_killer_disabled_hang_is_named_checked_and_ended() {
    require_root();
    let sandbox = Sandbox::new("okd", 32 * MIB);
    assert_eq!(
        sandbox.version(),
        CgroupVersion::V1,
        "oom_kill_disable exists on cgroup v1 only; this test runs on the v1 host"
    );
    let control = sandbox.dir().join("memory.oom_control");
    std::fs::write(&control, "1").expect("disabling the OOM killer of the sandbox");
    let watch = Watch::start(&["--timeout", "1", "--memcg", sandbox.rel_path()]);
    let plan = watch.plan();
    assert_eq!(
        plan["invocations_source"], "memcg_notifications_v1",
        "{plan}"
    );
    assert!(
        plan["memcg_notifications"]["memcgs"].as_u64() > Some(0),
        "{plan}"
    );

    let mut h = hog(&sandbox, 64, true, None);
    let pid = h.pid();
    h.go();
    assert!(
        wait_until(scaled(Duration::from_secs(10)), || proc_state(pid)
            .is_some_and(|s| s.starts_with('D'))),
        "the hog never went to sleep at the limit: {:?}",
        proc_state(pid)
    );
    let asleep = std::time::Instant::now();
    let f = watch.wait_for(
        "the oom_killer_disabled finding",
        scaled(Duration::from_secs(2)),
        |l| l["type"] == "finding" && l["finding"] == "oom_killer_disabled",
    );
    assert!(
        asleep.elapsed() <= scaled(Duration::from_secs(2)),
        "named {:?} after the sleeper was seen",
        asleep.elapsed()
    );
    assert_eq!(f["memcg_path"], sandbox.rel_path(), "{f}");
    let task = f["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["pid"] == pid)
        .unwrap_or_else(|| panic!("the sleeper {pid} is not named: {f}"))
        .clone();
    assert_eq!(task["state"], "D", "{task}");
    assert_eq!(task["wchan"], "mem_cgroup_oom_synchronize", "{task}");
    // The kernel's eventfd fired: the invocation is counted for the domain.
    assert!(
        watch.count(|l| l["event"] == "memcg_oom"
            && l["memcg_path"] == sandbox.rel_path()
            && l["oom_kill_disable"] == true)
            > 0
    );

    check_names_the_hang(&sandbox, pid);

    unstick_ends_the_hang(&sandbox, pid);
    // Put back once the hang ended.
    let now = std::fs::read_to_string(&control).expect("oom_control");
    assert!(now.contains("oom_kill_disable 1"), "{now}");
    assert!(now.contains("under_oom 0"), "{now}");
    // The kernel killed the hog, and watch says the hang ended.
    assert!(
        h.wait_signal(scaled(Duration::from_secs(10))).is_some(),
        "the hog was not killed"
    );
    let end = watch.wait_for("the hang's end", scaled(Duration::from_secs(5)), |l| {
        l["type"] == "finding" && l["finding"] == "oom_killer_disabled_ended"
    });
    assert_eq!(end["memcg_path"], sandbox.rel_path(), "{end}");
    let lines = watch.stop_and_collect();
    let summary = lines
        .iter()
        .find(|l| l["type"] == "summary")
        .expect("summary");
    assert_eq!(summary["summary"]["livelock_observable"], true, "{summary}");
}

/// `check` says the host is in trouble and names the hung memcg with its sleeper `pid`.
fn check_names_the_hang(sandbox: &Sandbox, pid: u32) {
    let (code, c) = check_json(&[]);
    assert_eq!(code, Some(4), "check must say the host is in trouble: {c}");
    let hung = c["oom_killer_disabled"]
        .as_array()
        .expect("oom_killer_disabled")
        .iter()
        .find(|m| m["memcg_path"] == sandbox.rel_path())
        .unwrap_or_else(|| panic!("check does not name {}: {c}", sandbox.rel_path()))
        .clone();
    assert!(
        hung["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .any(|t| t["pid"] == pid),
        "{hung}"
    );
}

/// `oomtrace unstick --apply` on the sleeper: it waits on the disabled OOM killer of its
/// domain, and the remedy is applied.
fn unstick_ends_the_hang(sandbox: &Sandbox, pid: u32) {
    let out = Command::new(oomtrace_tests::oomtrace_bin())
        .args(["unstick", "--json", "--apply", "--wait", "10"])
        .arg(pid.to_string())
        .output()
        .expect("running oomtrace unstick");
    let u: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "unstick --json is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{u}");
    assert_eq!(u["waits_on"]["kind"], "oom_killer_disabled", "{u}");
    assert_eq!(
        u["oom_killer_disabled"]["domain"],
        sandbox.rel_path(),
        "{u}"
    );
    assert_eq!(u["applied"]["ok"], true, "{u}");
}
