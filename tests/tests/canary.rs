//! End-to-end: recording and replaying dumps, the metrics endpoint, the on-stuck hook and the
//! canary exit code, with real OOM kills (root only).

use std::{collections::BTreeSet, time::Duration};

use oomtrace_tests::{
    Sandbox, ScratchDir, Watch, event_wait, held_victim, hog, http_get, oomtrace_bin, require_root,
    scaled,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn findings_of(lines: &[Value], pids: &[u32]) -> BTreeSet<(String, u64)> {
    lines
        .iter()
        .filter(|v| v["type"] == "finding")
        .filter_map(|v| {
            let tgid = v["victim"]["key"]["tgid"].as_u64()?;
            pids.contains(&(tgid as u32))
                .then(|| (v["finding"].as_str().unwrap_or("").to_string(), tgid))
        })
        .collect()
}

fn report(file: &std::path::Path, extra: &[&str]) -> (Option<i32>, Vec<Value>) {
    let out = std::process::Command::new(oomtrace_bin())
        .arg("report")
        .arg(file)
        .arg("--json")
        .args(extra)
        .output()
        .expect("running oomtrace report");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("report printed non-JSON ({e}): {l}"))
        })
        .collect();
    (out.status.code(), lines)
}

/// A recorded session with a stuck victim and a normal kill gives the same findings in
/// `report` as it did live.
#[test]
fn record_then_report_gives_the_same_findings() {
    require_root();
    let dir = ScratchDir::new("roundtrip");
    let dump = dir.join("session.dump");
    let sandbox = Sandbox::new("record", 64 * MIB);
    let watch = Watch::start_cmd(
        &[
            "record",
            "-o",
            dump.to_str().unwrap(),
            "--json",
            "--timeout",
            "1",
        ],
        &[],
    );
    let (mut stuck, mut hold) = held_victim(&sandbox, event_wait());
    let stuck_pid = stuck.pid();
    watch.wait_finding("stuck", stuck_pid);
    hold.release();
    assert_eq!(stuck.wait_signal(event_wait()), Some(libc::SIGKILL));
    let mut normal = hog(&sandbox, 256, false, None);
    let normal_pid = normal.pid();
    normal.go();
    assert_eq!(normal.wait_signal(event_wait()), Some(libc::SIGKILL));
    for pid in [stuck_pid, normal_pid] {
        watch.wait_finding("released", pid);
    }
    let live = watch.lines();
    assert_eq!(watch.stop(), Some(0));
    let pids = [stuck_pid, normal_pid];
    let live_findings = findings_of(&live, &pids);
    assert!(live_findings.contains(&("stuck".into(), u64::from(stuck_pid))));
    assert!(live_findings.contains(&("dead".into(), u64::from(normal_pid))));

    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dump).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "dumps name processes: owner-only");
    let (code, replayed) = report(&dump, &[]);
    assert_eq!(code, Some(0));
    assert_eq!(
        findings_of(&replayed, &pids),
        live_findings,
        "replay must tell the same story"
    );
    assert!(
        !replayed.iter().any(|v| v["type"] == "dump_problem"),
        "a clean dump has no problems"
    );
    // Re-judged with a longer timeout, nothing was stuck.
    let (_, relaxed) = report(&dump, &["--timeout", "30"]);
    assert!(
        !findings_of(&relaxed, &pids)
            .iter()
            .any(|(k, _)| k == "stuck")
    );
    // And the timeline has the stuck victim's track.
    let trace = dir.join("trace.json");
    let _ = report(&dump, &["--perfetto", trace.to_str().unwrap()]);
    let trace: Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).expect("valid JSON");
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    assert!(
        events
            .iter()
            .any(|e| e["name"] == "STUCK (past the timeout)" && e["tid"] == stuck_pid)
    );
    assert!(
        events
            .iter()
            .any(|e| e["name"] == "killed → dead" && e["tid"] == normal_pid)
    );
    assert!(
        events
            .iter()
            .any(|e| e["name"] == "thread_name" && e["tid"] == stuck_pid)
    );
}

/// `record` killed with SIGKILL leaves a dump that reads up to its last record and says it
/// was cut.
#[test]
fn a_recorder_killed_mid_stream_leaves_a_readable_dump() {
    require_root();
    let dir = ScratchDir::new("sigkill");
    let dump = dir.join("cut.dump");
    let sandbox = Sandbox::new("cut", 64 * MIB);
    let watch = Watch::start_cmd(&["record", "-o", dump.to_str().unwrap(), "--json"], &[]);
    let mut h = hog(&sandbox, 256, false, None);
    let pid = h.pid();
    h.go();
    assert_eq!(h.wait_signal(event_wait()), Some(libc::SIGKILL));
    watch.wait_finding("dead", pid);
    // Records are flushed every tick: give it one.
    std::thread::sleep(scaled(Duration::from_millis(200)));
    assert_eq!(watch.stop_with(libc::SIGKILL), None);
    let (code, replayed) = report(&dump, &[]);
    assert_eq!(code, Some(0));
    let problem = replayed
        .iter()
        .find(|v| v["type"] == "dump_problem")
        .expect("a dump problem");
    assert!(
        problem["problem"].as_str().unwrap().contains("truncated"),
        "{problem}"
    );
    assert!(findings_of(&replayed, &[pid]).contains(&("dead".into(), u64::from(pid))));
}

/// The metrics endpoint over real HTTP: valid exposition whose counters match the kills.
#[test]
fn metrics_over_http_count_the_kills() {
    require_root();
    let sandbox = Sandbox::new("metrics", 64 * MIB);
    let watch = Watch::start(&["--metrics", "127.0.0.1:0"]);
    let addr = watch.plan()["metrics_addr"]
        .as_str()
        .expect("metrics_addr")
        .to_string();
    for _ in 0..2 {
        let mut h = hog(&sandbox, 256, false, None);
        let pid = h.pid();
        h.go();
        assert_eq!(h.wait_signal(event_wait()), Some(libc::SIGKILL));
        watch.wait_finding("dead", pid);
    }
    let (_, head, body) = http_get(&addr, "/metrics").expect("scraping oomtrace's /metrics");
    let body = body.as_str();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert_eq!(sandbox.oom_kills(), 2, "the kernel's own count");
    let want = format!(
        "oomtrace_kills_total{{memcg=\"{m}\",kind=\"cgroup\",workload=\"{m}\",container=\"\"}} {}",
        sandbox.oom_kills(),
        m = sandbox.rel_path(),
    );
    assert!(body.lines().any(|l| l == want), "no `{want}` in:\n{body}");
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (_, value) = line.rsplit_once(' ').expect("name value");
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line}");
    }
    assert!(body.contains("oomtrace_hook_attached{hook=\"mark_victim\""));
    assert!(body.contains("# TYPE oomtrace_kill_to_dead_seconds histogram"));
    // Resource gauges a soak watches; both victims are released, so nothing is held for them.
    for gauge in ["oomtrace_kernel_tracked_processes", "oomtrace_victims_held"] {
        assert!(
            body.lines().any(|l| l.starts_with(&format!("{gauge} "))),
            "no {gauge} in:\n{body}"
        );
    }
}

/// `--on-stuck` runs once with the victim's details; `--fail-on-stuck` makes the exit code 3.
#[test]
fn on_stuck_hook_gets_the_details_and_fail_on_stuck_exits_3() {
    require_root();
    let dir = ScratchDir::new("hook");
    let out = dir.join("hook.out");
    let hook = dir.join("hook.sh");
    // It also tries to forge a finding on stdout: a hook's output never reaches oomtrace's.
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nenv >> '{o}'\ngrep -E '^(CapEff|NoNewPrivs):' /proc/self/status >> '{o}'\n\
             echo --- >> '{o}'\n\
             echo '{{\"type\":\"finding\",\"finding\":\"forged\"}}'\n",
            o = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sandbox = Sandbox::new("hook", 64 * MIB);
    let watch = Watch::start_cmd(
        &[
            "watch",
            "--json",
            "--timeout",
            "1",
            "--fail-on-stuck",
            "--on-stuck",
            hook.to_str().unwrap(),
            // Other tests flag victims on this host too: only ours may run the hook.
            "--memcg",
            sandbox.rel_path(),
        ],
        // Not for the hook: it gets a clean environment.
        &[("OOMTRACE_TEST_SECRET", "1")],
    );
    let (mut h, mut hold) = held_victim(&sandbox, event_wait());
    let pid = h.pid();
    watch.wait_finding("stuck", pid);
    assert!(
        oomtrace_tests::wait_until(event_wait(), || std::fs::read_to_string(&out)
            .is_ok_and(|s| s.contains("---"))),
        "the hook did not run"
    );
    hold.release();
    assert_eq!(h.wait_signal(event_wait()), Some(libc::SIGKILL));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text.matches("---").count(),
        1,
        "once per flagged victim:\n{text}"
    );
    assert!(text.contains(&format!("OOMTRACE_PID={pid}\n")), "{text}");
    assert!(text.contains("OOMTRACE_COMM=oomtrace-hog\n"), "{text}");
    assert!(
        text.contains(&format!("OOMTRACE_MEMCG={}\n", sandbox.rel_path())),
        "{text}"
    );
    assert!(text.contains("OOMTRACE_STATE=t"), "{text}");
    assert!(text.contains("OOMTRACE_JSON={"), "{text}");
    assert!(!text.contains("OOMTRACE_TEST_SECRET"), "{text}");
    // Run as root's uid, but with no capability and no way to gain one.
    assert!(text.contains("CapEff:\t0000000000000000\n"), "{text}");
    assert!(text.contains("NoNewPrivs:\t1\n"), "{text}");
    assert!(
        !watch.lines().iter().any(|l| l["finding"] == "forged"),
        "the hook's stdout reached oomtrace's"
    );
    assert_eq!(
        watch.stop(),
        Some(3),
        "--fail-on-stuck exits 3 after a flag"
    );
}
