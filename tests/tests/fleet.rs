//! End-to-end with a real Prometheus (root only; run through `cargo xtask test`, which unpacks
//! Debian's prometheus package and passes its binaries in `OOMTRACE_PROMTOOL` and
//! `OOMTRACE_PROMETHEUS`): a live scrape of `oomtrace watch --metrics` passes
//! `promtool check metrics`; a Prometheus server on loopback, scraping it every second with the
//! shipped rules of contrib/prometheus loaded unchanged, fires OomtraceVictimStuck with the
//! victim's labels while a sandbox victim is held stuck, and resolves it once the victim dies.

use std::{
    io::Write as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use oomtrace_tests::{
    ReleaseOnDrop, Sandbox, ScratchDir, Watch, finding_about,
    fuse::{FuseHold, Hold},
    http_get, require_root, scaled, scrape, stuck_in_exit, wait_until,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const ALERT: &str = "OomtraceVictimStuck";

/// Prints to stderr past libtest's capture: what a passing run shows (the alert as
/// Prometheus's API gave it, the timings).
fn say(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "fleet: {text}");
}

/// A binary `cargo xtask test` points at; fails loudly without it (never a skip).
fn tool(var: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "{var} is not set: the fleet test needs Debian's promtool and prometheus; run it \
             through `cargo xtask test` (as root), which downloads and unpacks them and sets \
             OOMTRACE_PROMTOOL and OOMTRACE_PROMETHEUS"
        )
    });
    assert!(path.is_file(), "{var}={} does not exist", path.display());
    path
}

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib/prometheus")
        .canonicalize()
        .expect("contrib/prometheus")
}

/// A Prometheus API answer's `data` (panics on an error answer).
fn api(addr: &str, path: &str) -> Value {
    let (code, _, body) = http_get(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let v: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {path}: {code}, not JSON ({e}): {body}"));
    assert_eq!(v["status"], "success", "GET {path}: {code} {v}");
    v["data"].clone()
}

/// A Prometheus server of this test: stopped by pid (SIGTERM, then SIGKILL) when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port with `config`, its TSDB and log under `dir`,
    /// and waits until it is ready.
    fn start(bin: &Path, config: &Path, dir: &Path) -> Prometheus {
        let log = dir.join("prometheus.log");
        let mut last = String::new();
        // The port is free when picked, but another process could take it before Prometheus
        // binds it: a few tries.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let addr = format!("127.0.0.1:{port}");
            let child = Command::new(bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("prometheus log"))
                .spawn()
                .expect("starting prometheus");
            let mut p = Prometheus {
                child,
                addr,
                log: log.clone(),
            };
            let ready = wait_until(scaled(Duration::from_secs(30)), || {
                p.exited() || http_get(&p.addr, "/-/ready").is_ok_and(|(code, ..)| code == 200)
            });
            if ready && !p.exited() {
                return p;
            }
            last = p.log_text();
            drop(p);
        }
        panic!("prometheus did not start; its log:\n{last}");
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if !self.exited() {
            // SAFETY: our own child, by pid.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            if !wait_until(Duration::from_secs(10), || self.exited()) {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

/// `promtool check metrics` on a scrape: its exit code and what it said.
fn check_metrics(promtool: &Path, scrape: &str) -> (Option<i32>, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool check metrics");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("writing the scrape to promtool");
    let out = child.wait_with_output().expect("promtool check metrics");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), said)
}

/// Our memcg's OomtraceVictimStuck alert, if Prometheus has one (pending or firing).
fn stuck_alert(prom: &str, memcg: &str) -> Option<Value> {
    api(prom, "/api/v1/alerts")["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .find(|a| a["labels"]["alertname"] == ALERT && a["labels"]["memcg"] == memcg)
        .cloned()
}

#[test]
fn prometheus_fires_the_stuck_alert_for_a_held_victim_and_resolves_it_when_it_dies() {
    require_root();
    let promtool = tool("OOMTRACE_PROMTOOL");
    let prometheus = tool("OOMTRACE_PROMETHEUS");
    let start = Instant::now();

    let sandbox = Sandbox::new("fleet", 64 * MIB);
    let memcg = sandbox.rel_path().to_string();
    let fuse = FuseHold::mount_holding("fleet", Hold::Flush);
    let watch = Watch::start(&[
        "--timeout",
        "1",
        "--memcg",
        &memcg,
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics_addr = watch.plan()["metrics_addr"]
        .as_str()
        .expect("metrics_addr in the plan")
        .to_string();

    // Prometheus with the shipped rule files, unchanged, scraping oomtrace every second.
    let tmp = ScratchDir::new("fleet-prometheus");
    let prom = prometheus_with_the_shipped_rules(&promtool, &prometheus, tmp.path(), &metrics_addr);

    // The victim, held stuck in exit by an unanswered FUSE FLUSH.
    let mut v = stuck_in_exit(&sandbox, &fuse, &[]);
    let _release = ReleaseOnDrop(&fuse);
    let pid = v.victim;
    v.hog.go();
    let wait = scaled(Duration::from_secs(30));
    watch.wait_for("the STUCK finding", wait, |l| {
        finding_about(l, "stuck", pid)
    });
    let flagged = Instant::now();

    a_live_scrape_passes_promtool(&promtool, &metrics_addr, &memcg);

    the_stuck_alert_fires(&prom, &metrics_addr, &memcg, flagged);

    // The victim dies: the gauge drops to 0 and the alert goes (resolved: no longer active).
    fuse.release();
    watch.wait_for("the DEAD finding", wait, |l| finding_about(l, "dead", pid));
    let dead = Instant::now();
    let resolved = wait_until(scaled(Duration::from_secs(30)), || {
        let gone = stuck_alert(&prom.addr, &memcg).is_none();
        if !gone {
            std::thread::sleep(Duration::from_millis(250));
        }
        gone
    });
    assert!(
        resolved,
        "{ALERT} still active after the victim died: {}",
        api(&prom.addr, "/api/v1/alerts")
    );
    let gauge = api(
        &prom.addr,
        "/api/v1/query?query=oomtrace_stuck_victims%7Bjob%3D%22oomtrace%22%7D",
    );
    say(&format!(
        "{ALERT} resolved {:.1} s after the DEAD finding (no longer in /api/v1/alerts); \
         oomtrace_stuck_victims now: {}; test wall time {:.1} s",
        dead.elapsed().as_secs_f64(),
        gauge["result"],
        start.elapsed().as_secs_f64()
    ));
    assert!(
        gauge["result"]
            .as_array()
            .is_some_and(|r| r.iter().all(|s| s["value"][1] == "0")),
        "{gauge}"
    );
}

/// Prometheus with the shipped rule files, unchanged, scraping oomtrace at `metrics_addr`
/// every second (its files in `dir`), once its rules are healthy and the target up.
fn prometheus_with_the_shipped_rules(
    promtool: &Path,
    prometheus: &Path,
    dir: &Path,
    metrics_addr: &str,
) -> Prometheus {
    let rules = contrib();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {0}/oomtrace.alerts.yml\n  - {0}/oomtrace.rules.yml\n\
             scrape_configs:\n  - job_name: oomtrace\n    static_configs:\n      \
             - targets: ['{metrics_addr}']\n",
            rules.display()
        ),
    )
    .expect("writing prometheus.yml");
    let check = Command::new(promtool)
        .args(["check", "config"])
        .arg(&config)
        .output()
        .expect("promtool check config");
    assert!(
        check.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let prom = Prometheus::start(prometheus, &config, dir);
    say(&format!(
        "prometheus at {} scrapes oomtrace at {metrics_addr}",
        prom.addr
    ));

    // The shipped rules loaded and evaluate without error; the target is up.
    let healthy = wait_until(scaled(Duration::from_secs(30)), || {
        let groups = api(&prom.addr, "/api/v1/rules")["groups"].clone();
        let rules: Vec<&Value> = groups
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let up = api(&prom.addr, "/api/v1/targets")["activeTargets"]
            .as_array()
            .is_some_and(|t| t.len() == 1 && t[0]["health"] == "up");
        up && rules.len() >= 12 && rules.iter().all(|r| r["health"] == "ok")
    });
    assert!(
        healthy,
        "rules not all healthy or the target not up:\n{}\n{}\nprometheus log:\n{}",
        api(&prom.addr, "/api/v1/rules"),
        api(&prom.addr, "/api/v1/targets"),
        prom.log_text()
    );

    prom
}

/// A live scrape with the victim's series in it passes promtool's checks and lints.
fn a_live_scrape_passes_promtool(promtool: &Path, metrics_addr: &str, memcg: &str) {
    let body = scrape(metrics_addr);
    assert!(
        body.contains(&format!("oomtrace_stuck_victims{{memcg=\"{memcg}\"")),
        "{body}"
    );
    let (code, said) = check_metrics(promtool, &body);
    say(&format!(
        "promtool check metrics on a live scrape ({} lines): exit {code:?}, output: {:?}",
        body.lines().count(),
        said.trim()
    ));
    assert_eq!(
        code,
        Some(0),
        "promtool check metrics failed:\n{said}\nthe scrape:\n{body}"
    );
}

/// The stuck alert, pending first (the rule's `for: 30s`), then firing with the victim's labels
/// (`flagged`: when the STUCK finding came).
fn the_stuck_alert_fires(prom: &Prometheus, metrics_addr: &str, memcg: &str, flagged: Instant) {
    // Pending first (the rule's `for: 30s`), then firing with the victim's labels.
    let mut pending_seen = None;
    let mut firing = None;
    let fired = wait_until(scaled(Duration::from_secs(90)), || {
        match stuck_alert(&prom.addr, memcg) {
            Some(a) if a["state"] == "firing" => firing = Some(a),
            Some(a) if a["state"] == "pending" && pending_seen.is_none() => {
                pending_seen = Some(flagged.elapsed())
            }
            _ => {}
        }
        if firing.is_none() {
            std::thread::sleep(Duration::from_millis(250));
        }
        firing.is_some()
    });
    assert!(
        fired,
        "{ALERT} never fired for {memcg}; alerts: {}\nprometheus log:\n{}",
        api(&prom.addr, "/api/v1/alerts"),
        prom.log_text()
    );
    let alert = firing.expect("firing");
    say(&format!(
        "{ALERT} pending {:.1} s and firing {:.1} s after the STUCK finding; the alert from \
         Prometheus's /api/v1/alerts:\n{}",
        pending_seen.unwrap_or_default().as_secs_f64(),
        flagged.elapsed().as_secs_f64(),
        serde_json::to_string_pretty(&alert).expect("json")
    ));
    assert!(pending_seen.is_some(), "never seen pending: {alert}");
    let labels = &alert["labels"];
    assert_eq!(labels["severity"], "critical", "{alert}");
    assert_eq!(labels["job"], "oomtrace", "{alert}");
    assert_eq!(labels["instance"], metrics_addr, "{alert}");
    assert_eq!(labels["kind"], "cgroup", "{alert}");
    assert_eq!(labels["workload"], memcg, "{alert}");
    assert!(
        labels["container"].is_null(),
        "an empty label is no label: {alert}"
    );
    assert_eq!(
        alert["annotations"]["summary"],
        format!("OOM victim stuck on {metrics_addr} in cgroup {memcg}"),
        "{alert}"
    );
}
