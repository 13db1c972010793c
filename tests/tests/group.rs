//! End-to-end: a `memory.oom.group` kill is one incident with its victims (root only).
//!
//! cgroup v2 (the guests): the sandbox has `memory.oom.group` 1 and holds a hog and its two
//! `sleep` children; the hog's allocation makes the kernel kill all three in one invocation
//! (`mem_cgroup_scan_tasks` → `oom_kill_memcg_member`). oomtrace reports three `killed`
//! findings and one `group_kill` naming the sandbox as the group memcg, and counts 3 kills and
//! 1 group kill as the kernel's `oom_kill` and `oom_group_kill` do.
//!
//! cgroup v1 (the host) has no `memory.oom.group`: the same run kills the hog alone, the
//! children live on, and oomtrace reports one kill and no incident — the tool's v1 behaviour,
//! asserted, not skipped.

use std::{collections::BTreeSet, time::Duration};

use oomtrace_tests::{
    CgroupVersion, Sandbox, Watch, attach_of, event_wait, finding_about, proc_state, require_root,
    wait_until,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn memory_events(sandbox: &Sandbox, key: &str) -> Option<u64> {
    std::fs::read_to_string(sandbox.dir().join("memory.events"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn a_memory_oom_group_kill_is_one_incident() {
    require_root();
    let sandbox = Sandbox::new("group", 48 * MIB);
    let v2 = sandbox.version() == CgroupVersion::V2;
    let group_file = sandbox.dir().join("memory.oom.group");
    if v2 {
        std::fs::write(&group_file, "1").expect("writing memory.oom.group");
    } else {
        assert!(
            !group_file.exists(),
            "cgroup v1 has no memory.oom.group: the v1 part of this test is stale"
        );
    }
    let watch = Watch::start(&["--memcg", sandbox.rel_path()]);
    let mut hog = hog_with_children(&sandbox);
    let pid = hog.pid();
    let children: BTreeSet<u32> = sandbox.procs().into_iter().filter(|p| *p != pid).collect();
    assert_eq!(
        children.len(),
        2,
        "the hog's two sleep children: {children:?}"
    );
    hog.go();
    assert_eq!(
        hog.wait_signal(event_wait()),
        Some(libc::SIGKILL),
        "hog was not SIGKILLed"
    );
    let killed = watch.wait_finding("killed", pid);
    assert_eq!(killed["victim"]["comm"], "oomtrace-hog", "{killed}");
    if v2 {
        group_kill_on_v2(&sandbox, watch, pid, &children);
    } else {
        one_kill_on_v1(&sandbox, watch, pid, &children);
    }
}

/// cgroup v1: one invocation, one victim: the children are alive and no incident is reported.
fn one_kill_on_v1(sandbox: &Sandbox, watch: Watch, pid: u32, children: &BTreeSet<u32>) {
    let dead = watch.wait_finding("dead", pid);
    assert!(dead["victim"].get("incident").is_none(), "{dead}");
    for c in children {
        assert!(
            proc_state(*c).is_some_and(|s| !s.starts_with('Z')),
            "child {c} of the hog died on v1: {:?}",
            proc_state(*c)
        );
    }
    assert_eq!(sandbox.oom_kills(), 1, "the kernel's oom_kill on v1");
    let lines = watch.stop_and_collect();
    let groups = lines
        .iter()
        .filter(|v| v["finding"] == "group_kill")
        .count();
    assert_eq!(groups, 0, "a group kill on cgroup v1");
    let summary = &lines.iter().find(|l| l["type"] == "summary").unwrap()["summary"];
    assert_eq!(summary["kills"], 1, "{summary}");
    assert!(summary.get("group_kills").is_none(), "{summary}");
}

/// cgroup v2: every task of the group memcg killed in the same invocation, one incident.
fn group_kill_on_v2(sandbox: &Sandbox, watch: Watch, pid: u32, children: &BTreeSet<u32>) {
    let group = watch.wait_for("the group_kill finding", event_wait(), |v| {
        v["type"] == "finding" && v["finding"] == "group_kill"
    });
    let incident = &group["incident"];
    let victims: BTreeSet<u32> = incident["victims"]
        .as_array()
        .expect("victims")
        .iter()
        .map(|m| m["tgid"].as_u64().expect("tgid") as u32)
        .collect();
    let mut want = children.clone();
    want.insert(pid);
    assert_eq!(victims, want, "{group}");
    assert_eq!(incident["group_memcg"], sandbox.rel_path(), "{group}");
    assert_eq!(incident["trigger"]["tgid"], pid, "{group}");
    let decision_hooked = !attach_of(&watch.plan(), "oom_kill").is_null();
    let grouped_by = if decision_hooked {
        "invocation"
    } else {
        "timing"
    };
    assert_eq!(incident["grouped_by"], grouped_by, "{group}");
    // Sleeping children die at once: the incident is reported when all are dead.
    assert!(
        incident["victims"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["dead_after_ns"].is_u64()),
        "{group}"
    );
    for c in children {
        let k = watch.wait_finding("killed", *c);
        assert_eq!(k["victim"]["comm"], "sleep", "{k}");
    }
    // The second and third victims' findings name the incident.
    let named = watch.count(|v| {
        v["type"] == "finding"
            && v["finding"] == "killed"
            && v["victim"]["incident"] == incident["id"]
    });
    assert_eq!(
        named, 2,
        "killed findings naming incident {}",
        incident["id"]
    );
    // The kernel's counters: each victim, and the group kill once (5.17+ counts it). The
    // group scan kills the chosen victim again while it has its mm — certain here, it is the
    // allocating hog — and `oom_kill` counts it twice (every kernel of the matrix logs its
    // "Killed process" twice): 4.
    assert!(
        wait_until(event_wait(), || sandbox.oom_kills() >= 4),
        "the kernel's oom_kill for 3 victims, the chosen one twice: {}",
        sandbox.oom_kills()
    );
    if let Some(n) = memory_events(sandbox, "oom_group_kill") {
        assert_eq!(n, 1, "the kernel's oom_group_kill");
    }
    assert!(wait_until(Duration::from_secs(2), || sandbox
        .procs()
        .is_empty()));
    let lines = watch.stop_and_collect();
    // oomtrace's own count for the memcg agrees with the kernel's, the second kill included.
    sandbox.assert_reconciled(&lines, 4);
    let summary = &lines.iter().find(|l| l["type"] == "summary").unwrap()["summary"];
    assert_eq!(
        (&summary["kills"], &summary["group_kills"]),
        (&Value::from(3), &Value::from(1)),
        "{summary}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|v| finding_about(v, "stuck", pid))
            .count(),
        0
    );
}

/// The hog with two `sleep` children in the sandbox, ready to allocate 256 MiB on "go".
fn hog_with_children(sandbox: &Sandbox) -> oomtrace_tests::Proc {
    let mut p = oomtrace_tests::spawn_hog(
        sandbox,
        "alloc",
        &["--mb".into(), "256".into(), "--children".into(), "2".into()],
    );
    let ready = p.line();
    assert_eq!(ready, format!("ready {}", p.pid()), "hog did not start");
    p
}
