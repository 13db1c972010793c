//! End-to-end: a global OOM — the whole machine out of memory, no memcg limit involved — is
//! seen as such: `out_of_memory` invoked without a memcg, the victim chosen with no memcg
//! constraint, followed to its death. It is caused only inside a disposable guest kernel of
//! `cargo xtask vm`; on the host the test checks instead that the plan says whether the global
//! hook attaches and why not. Alone in its executable so no other test shares the machine.

use std::time::Duration;

use oomtrace_tests::{Sandbox, Watch, disposable_kernel, finding_about, hog, require_root, scaled};
use serde_json::Value;

#[test]
fn a_global_oom_is_seen_as_global() {
    require_root();
    let watch = Watch::start(&["--timeout", "30"]);
    let plan = watch.plan();
    let global = plan["plan"]
        .as_array()
        .expect("plan")
        .iter()
        .find(|h| h["hook"] == "oom_invoke_global")
        .unwrap_or_else(|| panic!("no oom_invoke_global hook in the plan: {plan}"))
        .clone();
    if !disposable_kernel() {
        // The host: never run it out of memory. Its plan must say why the hook is missing.
        if global["attach"] == Value::Null {
            let reasons = global["rejected"].as_array().expect("rejected");
            assert!(
                !reasons.is_empty() && reasons.iter().all(|r| r["reason"].as_str().is_some()),
                "an unattached hook without reasons: {global}"
            );
        } else {
            assert!(
                global["attach"] == "fentry" || global["attach"] == "kprobe",
                "{global}"
            );
        }
        return;
    }
    assert_ne!(global["attach"], Value::Null, "{global}");
    let sandbox = Sandbox::unlimited_in_disposable_guest("global");
    // Far more than the guest has; the most attractive victim by far.
    let mut hog = hog(&sandbox, 8192, false, Some(1000));
    let pid = hog.pid();
    hog.go();
    assert_eq!(
        hog.wait_signal(scaled(Duration::from_secs(60))),
        Some(libc::SIGKILL)
    );
    let wait = scaled(Duration::from_secs(20));
    let inv = watch.wait_for("a global OOM invocation", wait, |l| {
        l["event"] == "oom_invoke" && l["global"] == true
    });
    assert_eq!(inv["memcg_id"], 0, "{inv}");
    let kill = watch.wait_for("the kill decision", wait, |l| {
        l["event"] == "oom_kill" && l["victim"]["tgid"] == pid
    });
    assert_eq!(kill["memcg_id"], 0, "a global OOM has no memcg: {kill}");
    assert_eq!(kill["constraint"], "none", "{kill}");
    // The scan covered the machine's processes: the hog (oom_score_adj 1000) first. Debian's
    // 5.10 reports no oom_badness return in scans (its call is likely inlined).
    let killed = watch.wait_for("the killed finding", wait, |l| {
        finding_about(l, "killed", pid)
    });
    let kernel = plan["environment"]["kernel"].as_str().unwrap_or("");
    let badness = plan["plan"]
        .as_array()
        .expect("plan")
        .iter()
        .any(|h| h["hook"] == "oom_badness" && !h["attach"].is_null());
    if badness && !kernel.starts_with("5.10.") {
        let c = &killed["victim"]["candidates"];
        assert_eq!(c["top"][0]["tgid"], pid, "{killed}");
        assert_eq!(c["top"][0]["oom_score_adj"], 1000, "{killed}");
        assert!(
            c["scored"].as_u64() > Some(1),
            "a machine-wide scan: {killed}"
        );
        assert!(c["runner_up"]["tgid"].is_u64(), "{killed}");
    }
    let dead = watch.wait_for("the victim's death", wait, |l| {
        finding_about(l, "dead", pid)
    });
    // Under a global OOM oomtrace itself may only get to look once the victim is reaped: its
    // parent's notification or its pidfd then, or the kernel's own release (sched_process_free)
    // handled first, or gone.
    assert!(
        ["parent_notified", "pidfd", "released", "gone"]
            .contains(&dead["victim"]["death_seen"].as_str().unwrap_or("")),
        "{dead}"
    );
}
