//! End-to-end: the OOM the kernel falls into without killing again. A victim is stuck inside
//! exit (after exit_mm: its mm has MMF_OOM_SKIP) while an unkillable process (oom_score_adj
//! -1000) keeps its memcg at the limit: the kernel invokes the OOM killer again and again and
//! finds nothing it may kill. oomtrace reports "nothing killable", the victim already reaped —
//! not a livelock blaming it — where it sees the invocations' returns (the guests: fentry/kprobe on
//! `mem_cgroup_out_of_memory`); on this host, without that hook, the kernel's memcg
//! notifications count the invocations instead (the plan line says which). Root only.

use oomtrace_tests::{
    ReleaseOnDrop, Sandbox, Watch, attach_of, event_wait,
    fuse::{FuseHold, Hold},
    hog, require_root, stuck_in_exit,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// `parent_limit`: the limit is on a parent memcg (a pod, a slice) and the victim lives in a
/// child: the OOM domain in the invocations is the parent, not the victim's own memcg.
fn livelock(label: &str, parent_limit: bool) {
    require_root();
    let limited = Sandbox::new(label, 64 * MIB);
    let child = parent_limit.then(|| limited.child("ctr"));
    let home = child.as_ref().unwrap_or(&limited);
    let fuse = FuseHold::mount_holding(label, Hold::Flush);
    let watch = Watch::start(&["--timeout", "1", "--memcg", limited.rel_path()]);
    let observable = attach_of(&watch.plan(), "oom_invoke") != Value::Null;

    let mut v = stuck_in_exit(home, &fuse, &[]);
    let _release = ReleaseOnDrop(&fuse);
    v.hog.go();
    assert!(
        fuse.wait_held(event_wait()),
        "the victim never reached the FUSE flush"
    );
    // Unkillable, it keeps the memcg at its limit: every fault invokes the OOM killer. (Only
    // where invocations can be seen: lowering oom_score_adj needs CAP_SYS_RESOURCE, which the
    // guests' root has and this project's CI host does not.)
    let presser = observable.then(|| {
        let mut p = hog(home, 128, true, Some(-1000));
        p.go();
        p
    });

    let victim = v.victim;
    let stuck = watch.wait_finding("stuck", victim);
    assert_eq!(stuck["stage"], "exiting", "{stuck}");
    if observable {
        // Without any hook: `check` reads the memcg's own counters twice (v2 counts
        // invocations) and sees the OOM killer invoked again and again, killing nothing.
        let (code, check) = oomtrace_tests::check_json(&[]);
        assert_eq!(
            code,
            Some(4),
            "check must say the host is in trouble: {check}"
        );
        if let Some(cgroup) = oomtrace_tests::cgroup_version_2(&limited) {
            let now = check["oom_now"]
                .as_array()
                .expect("oom_now")
                .iter()
                .find(|m| m["memcg_path"] == cgroup)
                .unwrap_or_else(|| panic!("check does not see {cgroup} in OOM: {check}"))
                .clone();
            assert!(now["invocations"].as_u64() > Some(0), "{now}");
            assert_eq!(now["kills"], 0, "{now}");
        }
        // The victim passed exit_mm (its mm has MMF_OOM_SKIP) before the FUSE flush held it:
        // the kernel no longer waits on it, and with only the -1000 presser left it finds
        // nothing it may kill (mem_cgroup_out_of_memory returns false). That is the finding,
        // naming the victim as already reaped — not a livelock blaming it.
        let nk = watch.wait_for("the NOTHING KILLABLE finding", event_wait(), |l| {
            l["type"] == "finding" && l["finding"] == "nothing_killable"
        });
        assert_eq!(
            nk["memcg_id"],
            limited.id(),
            "the OOM domain is the memcg whose limit was hit: {nk}"
        );
        assert_eq!(nk["memcg_path"], limited.rel_path(), "{nk}");
        assert!(nk["invocations"].as_u64() >= Some(10), "{nk}");
        assert!(
            nk["already_reaped"]
                .as_array()
                .expect("already_reaped")
                .iter()
                .any(|t| t["tgid"] == victim),
            "the stuck victim is named as already reaped: {nk}"
        );
        // v2: the kernel's own notifications (memory.events.local) cross-check the hook.
        if let Some(cgroup) = oomtrace_tests::cgroup_version_2(&limited) {
            assert_eq!(
                watch.plan()["memcg_notifications"]["cgroup"],
                "v2",
                "{}",
                watch.plan()
            );
            let n = watch.wait_for("a memory.events.local notification", event_wait(), |l| {
                l["event"] == "memcg_oom" && l["memcg_path"] == cgroup
            });
            assert!(n["invocations"].as_u64() >= Some(1), "{n}");
        }
        let presser_pid = presser.as_ref().map(|p| p.pid()).expect("presser");
        let p = nk["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .find(|t| t["pid"] == presser_pid)
            .unwrap_or_else(|| panic!("the -1000 task is not listed: {nk}"))
            .clone();
        assert_eq!(p["oom_score_adj"], -1000, "{p}");
        assert!(
            p["not_eligible"]
                .as_str()
                .is_some_and(|w| w.contains("-1000")),
            "{p}"
        );
        // The victim's own memcg, not the OOM domain (its parent here), comes from the task:
        // mark_victim's (tp_btf) or the kill decision's chosen task (oom_kill_process). Only
        // with neither (the classic mark_victim alone: a pid) is the memcg unknown.
        let plan = watch.plan();
        let from_task =
            attach_of(&plan, "mark_victim") == "tp_btf" || !attach_of(&plan, "oom_kill").is_null();
        if let Some(child) = child.as_ref().filter(|_| from_task) {
            assert_eq!(stuck["victim"]["memcg_id"], child.id(), "{stuck}");
        }
    } else {
        // No invocation hook (this host): the kernel's own notifications count the
        // invocations — the OOM that killed the victim among them, at its domain.
        assert_eq!(
            watch.plan()["invocations_source"],
            "memcg_notifications_v1",
            "{}",
            watch.plan()
        );
        let n = watch.wait_for("the kill's invocation, notified", event_wait(), |l| {
            l["event"] == "memcg_oom" && l["memcg_path"] == limited.rel_path()
        });
        assert!(n["invocations"].as_u64() >= Some(1), "{n}");
    }
    let lines = watch.stop_and_collect();
    let summary = lines
        .iter()
        .find(|l| l["type"] == "summary")
        .expect("a summary line");
    // Seen through the hook or the notifications: never "not observable".
    assert_eq!(summary["summary"]["livelock_observable"], true, "{summary}");
    // The kernel skips the reaped victim: no livelock may blame it, on any plan.
    assert!(
        !lines.iter().any(|l| l["finding"] == "livelock"),
        "a livelock blames a victim the kernel no longer waits on"
    );
    // Filtered to the limited memcg: its kills are the kernel's, the victim's among them.
    limited.assert_summary_kills(&lines);
    drop(presser);
}

#[test]
fn a_memcg_that_keeps_invoking_the_oom_killer_with_a_reaped_victim_finds_nothing_killable() {
    livelock("livelock", false);
}

#[test]
fn a_parent_limit_with_the_reaped_victim_in_a_child_finds_nothing_killable_in_the_parent() {
    livelock("livelock-pod", true);
}
