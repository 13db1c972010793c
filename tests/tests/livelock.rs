//! End-to-end: the OOM the kernel falls into without killing again. A victim is stuck inside
//! exit (after exit_mm: its mm has MMF_OOM_SKIP) while an unkillable process (oom_score_adj
//! -1000) keeps its memcg at the limit: the kernel invokes the OOM killer again and again and
//! finds nothing it may kill. oomtrace reports "nothing killable", the victim already reaped —
//! not a livelock blaming it — where it sees the invocations' returns (the guests: fentry/kprobe on
//! `mem_cgroup_out_of_memory`); on this host, without that hook, the kernel's memcg
//! notifications count the invocations instead (the plan line says which).
//!
//! And the real livelock, told apart from it: a victim held *before* exit_mm (a thread in D in
//! an unanswered FUSE read keeps its mm) whose memory is shared memory the OOM reaper cannot
//! free. Until the kernel sets MMF_OOM_SKIP on its mm (the reaper sets it even when it frees
//! nothing) every invocation aborts victim selection waiting on it: a livelock with the
//! verdict `aborted` naming it. Then the same invocations find nothing killable, the victim
//! named as already reaped. Root only.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use oomtrace_tests::{
    CgroupVersion, ReleaseOnDrop, Sandbox, ScratchDir, Watch, attach_of, event_wait,
    fuse::{FuseHold, Hold},
    hog, oomtrace_bin, require_root, scaled, stuck_in_exit, stuck_victim,
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
    let mut presser = observable.then(|| {
        let mut p = hog(home, 128, true, Some(-1000));
        p.go();
        p
    });

    let victim = v.victim;
    let stuck = watch.wait_finding("stuck", victim);
    assert_eq!(stuck["stage"], "exiting", "{stuck}");
    if observable {
        let presser_pid = presser.as_ref().map(|p| p.pid());
        nothing_killable_names_the_reaped_victim(
            &watch,
            &limited,
            child.as_ref(),
            (victim, &stuck),
            presser_pid,
        );
    } else {
        invocations_are_notified_without_the_hook(&watch, &limited);
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
    // With oomtrace stopped: raising the limit lets a pending charge through (a true return
    // without a kill) and ending the presser makes its own charges return true while it dies,
    // both of which its tracker would read as selection aborted.
    if let (Some(child), Some(p)) = (&child, presser.take()) {
        unstick_raises_the_domain(&limited, child, p);
    }
}

/// Where invocations are seen: `check` sees the OOM killer invoked again and again, killing
/// nothing, and the NOTHING KILLABLE finding names the stuck victim as already reaped and the
/// -1000 presser as not eligible.
fn nothing_killable_names_the_reaped_victim(
    watch: &Watch,
    limited: &Sandbox,
    child: Option<&Sandbox>,
    (victim, stuck): (u32, &Value),
    presser_pid: Option<u32>,
) {
    // Without any hook: `check` reads the memcg's own counters twice (v2 counts
    // invocations) and sees the OOM killer invoked again and again, killing nothing.
    let (code, check) = oomtrace_tests::check_json(&[]);
    assert_eq!(
        code,
        Some(4),
        "check must say the host is in trouble: {check}"
    );
    if let Some(cgroup) = oomtrace_tests::cgroup_version_2(limited) {
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
    if let Some(cgroup) = oomtrace_tests::cgroup_version_2(limited) {
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
    let presser_pid = presser_pid.expect("presser");
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
    if let Some(child) = child.filter(|_| from_task) {
        assert_eq!(stuck["victim"]["memcg_id"], child.id(), "{stuck}");
    }
}

/// No invocation hook (this host): the kernel's own notifications count the invocations — the
/// OOM that killed the victim among them, at its domain.
fn invocations_are_notified_without_the_hook(watch: &Watch, limited: &Sandbox) {
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

/// `oomtrace unstick` of the -1000 task in a nothing-killable domain: the domain is the parent
/// whose limit was hit (the task's own memcg has none); `--apply` raises it, journaled, and
/// the kernel's counters say the insatiable presser fills the margin and is back in OOM; once
/// the task is dead, the next `unstick` puts the limit back.
fn unstick_raises_the_domain(limited: &Sandbox, own: &Sandbox, presser: oomtrace_tests::Proc) {
    let pid = presser.pid();
    let state = ScratchDir::new("livelock-unstick");
    let max = if limited.version() == CgroupVersion::V2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    let file = limited.dir().join(max);
    let limit = || {
        std::fs::read_to_string(&file)
            .expect("limit")
            .trim()
            .to_string()
    };
    let before = limit();
    let run = |pid: u32, args: &[&str]| {
        let out = Command::new(oomtrace_bin())
            .args(["unstick", &pid.to_string(), "--json", "--wait", "1"])
            .args(args)
            .env("OOMTRACE_STATE_DIR", state.path())
            .stdin(Stdio::null())
            .output()
            .expect("running oomtrace unstick");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "unstick --json: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code(), v)
    };
    let (code, v) = run(pid, &[]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["waits_on"]["kind"], "oom_domain", "{v}");
    assert_eq!(v["oom_domain"]["path"], limited.rel_path(), "{v}");
    assert_ne!(v["oom_domain"]["path"], own.rel_path(), "{v}");
    assert!(
        v["remedy"]["command"]
            .as_str()
            .is_some_and(|c| c.ends_with(&file.display().to_string())),
        "the remedy raises the domain's limit: {v}"
    );
    assert_eq!(limit(), before, "not applied, not touched");
    let (code, v) = run(pid, &["--apply"]);
    assert!(v["applied"]["ok"] == true, "{v}");
    assert_ne!(limit(), before, "raised: {v}");
    // The presser wants 128 MiB: the 16 MiB margin is filled and the kernel is in OOM again —
    // unless it has not charged it yet when the kernel's counters are read again (1 s; sid
    // read no invocation once). Either way the exit code says what the kernel said.
    match code {
        Some(6) => assert_eq!(v["out_of_oom"], false, "{v}"),
        Some(0) => assert_eq!(v["out_of_oom"], true, "{v}"),
        _ => panic!("exit {code:?}: {v}"),
    }
    assert!(
        v["restored"].as_array().is_some_and(|r| r.is_empty()),
        "{v}"
    );
    // The task dead, the next unstick (of anything) puts the domain's limit back.
    drop(presser);
    let (_, v) = run(std::process::id(), &[]);
    assert!(
        v["restored"].as_array().is_some_and(|r| !r.is_empty()),
        "{v}"
    );
    assert_eq!(limit(), before, "put back: {v}");
}

#[test]
fn a_memcg_that_keeps_invoking_the_oom_killer_with_a_reaped_victim_finds_nothing_killable() {
    livelock("livelock", false);
}

#[test]
fn a_parent_limit_with_the_reaped_victim_in_a_child_finds_nothing_killable_in_the_parent() {
    livelock("livelock-pod", true);
}

#[test]
fn a_victim_held_before_exit_mm_with_shared_memory_is_a_livelock_until_the_reaper_skips_it() {
    require_root();
    let limited = Sandbox::new("livelock-held", 64 * MIB);
    let fuse = FuseHold::mount_holding("livelock-held", Hold::Read);
    // Stuck half a second after the kill: before the reaper is woken (2 s after the kill since
    // 5.18; on Debian's 5.10 too, as measured: the livelock came before `finish_reaping` on
    // every guest kernel).
    let watch = Watch::start(&["--timeout", "0.5", "--memcg", limited.rel_path()]);
    let plan = watch.plan();
    let verdicts =
        !attach_of(&plan, "oom_invoke").is_null() && !attach_of(&plan, "oom_invoke_done").is_null();

    // A reader thread blocked in FUSE keeps the victim's mm after its SIGKILL (it never reaches
    // exit_mm); its 256 MiB are a memfd, charged here, which the reaper leaves in place.
    let mut v = stuck_victim(&limited, &fuse, "stuck-fuse", &["--shmem"]);
    let _release = ReleaseOnDrop(&fuse);
    assert!(
        fuse.wait_held(event_wait()),
        "the victim's reader never reached the FUSE read"
    );
    // Keeps charging once the victim fills the memcg. Unkillable where oom_score_adj may be
    // lowered (the guests' root; not this project's CI host, where it is the next victim).
    let mut presser = hog(&limited, 128, true, verdicts.then_some(-1000));
    v.hog.go();
    let victim = v.victim;
    watch.wait_for("the victim's kill", event_wait(), |l| {
        l["finding"] == "killed" && l["victim"]["key"]["tgid"] == victim
    });
    presser.go();

    let livelock = the_livelock_comes_after_the_victim_is_stuck(&watch, &limited, victim);
    if !verdicts {
        // No return hook (this host): the invocations are counted, whether the kernel still
        // waits on the victim is not told.
        assert_eq!(livelock["verdict"], "unknown", "{livelock}");
        drop(presser);
        return;
    }
    // The kernel's own verdict: its invocations returned without a kill, waiting on the victim.
    assert_eq!(livelock["verdict"], "aborted", "{livelock}");
    // And it was right then: the reaper (which sets MMF_OOM_SKIP when it finishes, freed
    // memory or not) had not finished with the victim before the livelock was found.
    let before: Vec<Value> = watch
        .lines()
        .into_iter()
        .take_while(|l| l["finding"] != "livelock")
        .collect();
    assert!(
        !before
            .iter()
            .any(|l| l["event"] == "finish_reaping" && l["pid"] == victim),
        "a livelock found after the reaper had finished with the victim: {livelock}"
    );

    after_the_reaper_nothing_killable_names_the_victim(&watch, &limited, victim);
    let lines = watch.stop_and_collect();
    assert_eq!(
        lines.iter().filter(|l| l["finding"] == "livelock").count(),
        1,
        "one livelock, about the held victim"
    );
    // The reaper ran between the two findings (the kernel's own record of it).
    assert!(
        lines.iter().any(|l| l["type"] == "event"
            && l["event"].as_str().is_some_and(|e| e.contains("reap"))
            && oomtrace_tests::concerns(l, victim)),
        "no reaper event for the victim"
    );
    limited.assert_summary_kills(&lines);
    drop(presser);
}

/// The LIVELOCK finding about the held victim, which was found stuck before it.
fn the_livelock_comes_after_the_victim_is_stuck(
    watch: &Watch,
    limited: &Sandbox,
    victim: u32,
) -> Value {
    let livelock = watch.wait_for_unless(
        "the LIVELOCK finding",
        event_wait(),
        |l| l["type"] == "finding" && l["finding"] == "livelock",
        |l| {
            l["finding"] == "nothing_killable"
                || (l["finding"] == "killed" && l["victim"]["key"]["tgid"] != victim)
        },
    );
    assert_eq!(livelock["victim"]["tgid"], victim, "{livelock}");
    assert_eq!(livelock["memcg_id"], limited.id(), "{livelock}");
    assert!(livelock["invocations"].as_u64() >= Some(10), "{livelock}");
    let stuck = watch
        .lines()
        .into_iter()
        .find(|l| l["finding"] == "stuck" && l["victim"]["key"]["tgid"] == victim)
        .expect("the livelock comes after the victim is found stuck");
    // Its reader thread holds the mm: some threads entered exit, not all finished.
    assert_eq!(stuck["stage"], "exiting", "{stuck}");
    livelock
}

/// After the reaper finished with the victim (MMF_OOM_SKIP), a NOTHING KILLABLE finding, if
/// one comes, names it as already reaped.
fn after_the_reaper_nothing_killable_names_the_victim(
    watch: &Watch,
    limited: &Sandbox,
    victim: u32,
) {
    // The reaper sets MMF_OOM_SKIP without freeing the shared memory: from then on the kernel
    // waits on the victim no more. Whether its next invocations return "nothing killable"
    // soon depends on their returning at all: on a busy 6.12 guest they stayed inside
    // mem_cgroup_out_of_memory for minutes (entries, no returns), and with no verdict oomtrace
    // rightly says nothing. The other two tests of this file check that finding; here, where
    // it comes, it must name the victim as already reaped.
    watch.wait_for("the reaper finishing with the victim", event_wait(), |l| {
        (l["event"] == "finish_reaping" || l["event"] == "skip_reaping") && l["pid"] == victim
    });
    // A short look (10 s under emulation, where 40 s was a fixed cost of every guest), over
    // as soon as the finding is there: it is checked where it comes, not waited for.
    let nothing_killable = watch.look_for(scaled(Duration::from_millis(500)), |l| {
        l["type"] == "finding" && l["finding"] == "nothing_killable"
    });
    if let Some(nk) = nothing_killable {
        assert_eq!(nk["memcg_id"], limited.id(), "{nk}");
        assert!(
            nk["already_reaped"]
                .as_array()
                .expect("already_reaped")
                .iter()
                .any(|t| t["tgid"] == victim),
            "the victim is named as already reaped: {nk}"
        );
    }
}
