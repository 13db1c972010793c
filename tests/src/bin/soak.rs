//! `oomtrace-soak`: the soak behind `cargo xtask soak --minutes N` (root).
//!
//! One `oomtrace watch --json --findings-only --metrics 127.0.0.1:0 --timeout 2` runs for N
//! minutes while four threads keep it busy: OOM kills in sandbox memcgs (one every 2 s, the
//! memcg replaced every 50 kills), exit storms (every 20 s: `oomtrace-hog ns-churn`, 4 PID
//! namespaces of 64 children the kernel SIGKILLs, each one an entry in the in-kernel filter,
//! then 200 fork/exec/exits of `/bin/true`), victims stuck in exit coming and going (every
//! 30 s: held in `exit_files` by a FUSE flush for 5 s, flagged, released, dead), a scrape
//! of `/metrics` every 2 s, and a node's pods: pod and container memcgs in kubelet's shapes
//! made and removed 12.5 times a second, every 10th container OOM-killed moments (tens of ms)
//! after its memcg appeared and every 10th (offset) running a process that exits on its own;
//! every container kill must be named with its path and the pod's workload. Every 10 s it
//! samples oomtrace's RSS and open fds (/proc; the memcg files it keeps open between kills
//! are judged apart, against their bound) and, from `/metrics`, the entries of the in-kernel filter (`oomtrace_kernel_tracked_processes`),
//! the victims the tracker holds (`oomtrace_victims_held`), the entries it holds per memcg
//! (`oomtrace_memcgs_named`) and the lost events.
//!
//! Growth is judged after a warm-up (10 % of the run, 30 s to 5 min): the median of the last
//! third of the samples against the median of the first third (RSS: of the second, since what
//! fills once to a bound early is start-up, not growth), with a tolerance per metric
//! (RSS: 2 MiB or 10 %, for the allocator; fds, held victims and filter entries: a few,
//! for the victims and scrapes in flight when a sample is taken). Then the load stops, and
//! within 60 s the fds, held victims and filter entries must be back to what they were
//! before the load began: exactly. Lost events must not be growing at the end: none in the
//! last third. Besides growth, the soak checks that every OOM kill the kernel counted in its
//! memcgs was reported killed and seen dead, that every stuck victim was flagged, and that
//! every scrape was answered.
//!
//! Usage: `oomtrace-soak --minutes N --out RESULTS.json` (`OOMTRACE_BIN` names oomtrace).
//! Prints a table, writes it with every sample as JSON, exits 1 if anything grew or a check
//! failed, 2 if the soak itself could not run to its end.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    panic::AssertUnwindSafe,
    process::Command,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use oomtrace_tests::{
    ReleaseOnDrop, Sandbox, Watch,
    fuse::{FuseHold, Hold},
    hog, monotonic_ns, require_root, spawn_hog, stuck_in_exit,
};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// The load. Moderate on purpose: the machine has two cores and other work runs beside it.
const KILL_EVERY: Duration = Duration::from_secs(2);
/// Kills per sandbox memcg before it is replaced by a new one (memcg churn).
const KILLS_PER_MEMCG: u32 = 50;
const STORM_EVERY: Duration = Duration::from_secs(20);
const STORM_ROUNDS: u64 = 4;
const STORM_CHILDREN: u64 = 64;
const STORM_EXECS: u64 = 200;
const STUCK_EVERY: Duration = Duration::from_secs(30);
const STUCK_HOLD: Duration = Duration::from_secs(5);
/// oomtrace's `--timeout`: shorter than the hold, so every stuck victim is flagged.
const FLAG_TIMEOUT_S: &str = "2";
const SCRAPE_EVERY: Duration = Duration::from_secs(2);
/// A node's pods: a pod memcg and its container's made and removed every [`POD_EVERY`]
/// (12.5 per second); every [`POD_KILL_EVERY`]th container is OOM-killed moments after its
/// memcg appeared, and another (offset by [`POD_EXIT_OFFSET`]) runs a process that exits.
const POD_EVERY: Duration = Duration::from_millis(80);
const POD_KILL_EVERY: u64 = 10;
const POD_EXIT_OFFSET: u64 = 5;
/// A container's limit: small, so its kill comes within milliseconds.
const POD_LIMIT: u64 = 16 * MIB;
/// How young a container's memcg is at its kill (from `mkdir` to the kernel's SIGKILL).
const POD_YOUNG: Duration = Duration::from_millis(50);
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// How long the fds, held victims and filter entries get to return to their baseline.
const QUIESCE_WITHIN: Duration = Duration::from_secs(60);

/// Set when the soak is to stop: its time is up, something failed, or SIGINT/SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);
/// Set by SIGINT/SIGTERM: the run is cut short and judged as not run.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Sleeps for `d`, waking early when the soak stops.
fn pause(d: Duration) {
    let end = Instant::now() + d;
    while !stopping() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// What the load produced, counted by the threads that produced it.
#[derive(Default)]
struct Produced {
    /// Hogs OOM-killed (SIGKILL) by the kill thread.
    kills: AtomicU64,
    /// Hogs that ended some other way (an anomaly: counted as a failed check).
    kills_unexpected: AtomicU64,
    /// OOM kills the kernel counted in all of the soak's memcgs (`memory.oom_control` or
    /// `memory.events`), read before each memcg is removed.
    kernel_kills: AtomicU64,
    memcgs: AtomicU64,
    storms: AtomicU64,
    /// Kernel SIGKILLs by PID-namespace teardown (each one an entry in the in-kernel filter).
    storm_sigkills: AtomicU64,
    /// Processes that exited in the storms (namespace holders, inits, children, execs).
    storm_exits: AtomicU64,
    /// Victims held in exit_files, then released.
    stuck: AtomicU64,
    /// Of those, how many oomtrace flagged stuck while held.
    stuck_flagged: AtomicU64,
    scrapes: AtomicU64,
    scrape_errors: AtomicU64,
    /// Pod memcgs (each with a container memcg) made and removed.
    pods: AtomicU64,
    /// Containers OOM-killed, and the kills the kernel counted in their memcgs.
    pod_kills: AtomicU64,
    pod_kernel_kills: AtomicU64,
    /// Containers whose process exited on its own.
    pod_exits: AtomicU64,
    /// Per OOM-killed container: its memcg path, container id and when (CLOCK_MONOTONIC ns)
    /// its pod's memcg was made; the victim's pid and the memcg's id.
    pod_births: std::sync::Mutex<Vec<PodKill>>,
}

impl Produced {
    fn add(n: &AtomicU64, v: u64) {
        n.fetch_add(v, Ordering::Relaxed);
    }

    fn json(&self) -> Value {
        let g = |n: &AtomicU64| n.load(Ordering::Relaxed);
        json!({
            "oom_kills": g(&self.kills), "kills_unexpected": g(&self.kills_unexpected),
            "kernel_oom_kills": g(&self.kernel_kills), "memcgs": g(&self.memcgs),
            "exit_storms": g(&self.storms), "storm_kernel_sigkills": g(&self.storm_sigkills),
            "storm_exits": g(&self.storm_exits), "stuck_victims": g(&self.stuck),
            "stuck_flagged": g(&self.stuck_flagged), "scrapes": g(&self.scrapes),
            "scrape_errors": g(&self.scrape_errors), "pods": g(&self.pods),
            "pod_oom_kills": g(&self.pod_kills), "pod_kernel_oom_kills": g(&self.pod_kernel_kills),
            "pod_exits": g(&self.pod_exits),
        })
    }
}

/// OOM kills, one every [`KILL_EVERY`], in a 32 MiB memcg replaced every [`KILLS_PER_MEMCG`].
fn kill_loop(p: &Produced) {
    let mut sandbox: Option<Sandbox> = None;
    let mut in_memcg = 0;
    let retire = |s: Sandbox| Produced::add(&p.kernel_kills, s.oom_kills_in_subtree());
    while !stopping() {
        let started = Instant::now();
        if sandbox.is_none() || in_memcg >= KILLS_PER_MEMCG {
            if let Some(old) = sandbox.take() {
                retire(old);
            }
            let n = p.memcgs.fetch_add(1, Ordering::Relaxed);
            sandbox = Some(Sandbox::new(&format!("soak-oom{n}"), 32 * MIB));
            in_memcg = 0;
        }
        oom_kill(p, sandbox.as_ref().expect("sandbox"), &p.kills, "hog");
        in_memcg += 1;
        pause(KILL_EVERY.saturating_sub(started.elapsed()));
    }
    if let Some(old) = sandbox {
        retire(old);
    }
}

/// Runs a hog of 64 MiB in `s` (over its limit) and counts its end: in `kills` when the
/// kernel SIGKILLed it, as unexpected otherwise. Returns its pid.
fn oom_kill(p: &Produced, s: &Sandbox, kills: &AtomicU64, what: &str) -> u32 {
    let mut h = hog(s, 64, false, None);
    h.go();
    match h.wait_signal(Duration::from_secs(60)) {
        Some(libc::SIGKILL) => Produced::add(kills, 1),
        other => {
            eprintln!(
                "soak: {what} {} ended with signal {other:?}, not SIGKILL",
                h.pid()
            );
            Produced::add(&p.kills_unexpected, 1);
        }
    }
    h.pid()
}

/// A container the pod thread OOM-killed.
#[derive(Clone)]
struct PodKill {
    path: String,
    container_id: String,
    born_ns: u64,
    pid: u32,
    memcg_id: u64,
}

/// A finding whose memcg was removed before oomtrace could name it: only its id is known.
fn said_removed(l: &Value) -> bool {
    l["type"] == "finding" && l["memcg_removed"] == true && l["memcg_path"].is_null()
}

/// A node's pods in kubelet's shapes (`kubepods…/burstable/pod<uid>/<container id>`, the
/// cgroupfs driver): made and removed every [`POD_EVERY`], some OOM-killed moments after
/// their memcg appeared, some with a process that exits on its own.
fn pod_loop(p: &Produced) {
    let kubepods = Sandbox::at_root("kubepods", 64 * MIB);
    let burstable = kubepods.child("burstable");
    Produced::add(&p.memcgs, 2);
    let mut n: u64 = 0;
    while !stopping() {
        let started = Instant::now();
        let born = monotonic_ns();
        let uid = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            std::process::id(),
            n & 0xffff_ffff_ffff
        );
        let pod = burstable.child(&format!("pod{uid}"));
        let cid = format!("{n:016x}{}", "d0c4e7".repeat(8));
        let ctr = pod.child(&cid);
        ctr.limit(POD_LIMIT);
        Produced::add(&p.pods, 1);
        Produced::add(&p.memcgs, 2);
        if n.is_multiple_of(POD_KILL_EVERY) {
            let memcg_id = ctr.id();
            let pid = oom_kill(p, &ctr, &p.pod_kills, "pod hog");
            let counted = ctr.oom_kills();
            Produced::add(&p.pod_kernel_kills, counted);
            Produced::add(&p.kernel_kills, counted);
            p.pod_births.lock().expect("births").push(PodKill {
                path: ctr.rel_path().to_string(),
                container_id: cid[..12].to_string(),
                born_ns: born,
                pid,
                memcg_id,
            });
        } else if n % POD_KILL_EVERY == POD_EXIT_OFFSET {
            let mut h = hog(&ctr, 1, false, None);
            h.go();
            assert_eq!(
                h.wait_signal(Duration::from_secs(60)),
                None,
                "a pod's ordinary process"
            );
            Produced::add(&p.pod_exits, 1);
        }
        // kubelet removes the container's memcg, then the pod's.
        drop(ctr);
        drop(pod);
        n += 1;
        pause(POD_EVERY.saturating_sub(started.elapsed()));
    }
}

/// Exit storms: PID namespaces torn down by the kernel (SIGKILLs the in-kernel filter
/// tracks), then plain fork/exec/exits, every [`STORM_EVERY`].
fn storm_loop(p: &Produced) {
    let sandbox = Sandbox::new("soak-churn", 128 * MIB);
    p.memcgs.fetch_add(1, Ordering::Relaxed);
    let args = [
        "--rounds".to_string(),
        STORM_ROUNDS.to_string(),
        "--children".into(),
        STORM_CHILDREN.to_string(),
    ];
    let execs = format!("i=0; while [ $i -lt {STORM_EXECS} ]; do /bin/true; i=$((i+1)); done");
    while !stopping() {
        let started = Instant::now();
        let mut c = spawn_hog(&sandbox, "ns-churn", &args);
        let line = c.line();
        assert_eq!(line, format!("sigkilled {}", STORM_ROUNDS * STORM_CHILDREN));
        assert_eq!(c.wait_signal(Duration::from_secs(60)), None, "ns-churn");
        let st = Command::new("sh")
            .args(["-c", &execs])
            .status()
            .expect("starting sh");
        assert!(st.success(), "the exec storm failed: {st}");
        Produced::add(&p.storms, 1);
        Produced::add(&p.storm_sigkills, STORM_ROUNDS * STORM_CHILDREN);
        // Per round a holder, an init and its children; the hog itself; sh and its execs.
        Produced::add(
            &p.storm_exits,
            STORM_ROUNDS * (STORM_CHILDREN + 2) + 1 + STORM_EXECS + 1,
        );
        pause(STORM_EVERY.saturating_sub(started.elapsed()));
    }
    Produced::add(&p.kernel_kills, sandbox.oom_kills_in_subtree());
}

/// Victims stuck inside exit, one every [`STUCK_EVERY`], held for [`STUCK_HOLD`] (past
/// oomtrace's timeout, so flagged), then released to die.
fn stuck_loop(p: &Produced, watch: &Watch, prefix: &str) {
    let sandbox = Sandbox::new("soak-stuck", 64 * MIB);
    p.memcgs.fetch_add(1, Ordering::Relaxed);
    let fuse = FuseHold::mount_holding("soak-stuck", Hold::Flush);
    while !stopping() {
        let started = Instant::now();
        let mut v = stuck_in_exit(&sandbox, &fuse, &[]);
        // Declared after the hog: dropped first, so a failure never waits on a held victim.
        let release = ReleaseOnDrop(&fuse);
        v.hog.go();
        assert!(
            fuse.wait_held(Duration::from_secs(30)),
            "the killed victim {} never reached the FUSE flush in exit_files",
            v.victim
        );
        Produced::add(&p.stuck, 1);
        // The whole hold even when the soak is stopping: every victim counted is to be flagged.
        std::thread::sleep(STUCK_HOLD);
        let victim = v.victim;
        if watch.count(|l| is_finding(l, "stuck", prefix) && l["victim"]["key"]["tgid"] == victim)
            > 0
        {
            Produced::add(&p.stuck_flagged, 1);
        }
        drop(release);
        assert_eq!(
            v.hog.wait_signal(Duration::from_secs(30)),
            Some(libc::SIGKILL),
            "the released victim"
        );
        pause(STUCK_EVERY.saturating_sub(started.elapsed()));
    }
    Produced::add(&p.kernel_kills, sandbox.oom_kills_in_subtree());
}

/// Scrapes `/metrics` every [`SCRAPE_EVERY`].
fn scrape_loop(p: &Produced, addr: SocketAddr) {
    while !stopping() {
        match scrape(addr) {
            Ok(_) => Produced::add(&p.scrapes, 1),
            Err(e) => {
                eprintln!("soak: scrape failed: {e}");
                Produced::add(&p.scrape_errors, 1);
            }
        }
        pause(SCRAPE_EVERY);
    }
}

/// A finding about a victim in one of the soak's memcgs (`prefix`, or its pods').
fn is_finding(l: &Value, kind: &str, prefix: &str) -> bool {
    l["type"] == "finding"
        && l["finding"] == kind
        && l["memcg_path"]
            .as_str()
            .is_some_and(|m| m.starts_with(prefix) || m.starts_with(&pods_prefix()))
}

/// Where the soak's pods are, as oomtrace names them (`Sandbox::at_root("kubepods", …)`).
fn pods_prefix() -> String {
    format!("/kubepods-oomtrace-{}-", std::process::id())
}

/// One scrape of `/metrics`: `name{labels}` and value per sample line, and the body's size.
struct Scrape {
    values: Vec<(String, f64)>,
    bytes: usize,
}

impl Scrape {
    /// A metric without labels.
    fn get(&self, name: &str) -> Option<u64> {
        self.values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v as u64)
    }
}

fn scrape(addr: SocketAddr) -> Result<Scrape, String> {
    let timeout = oomtrace_tests::scaled(Duration::from_secs(5));
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| format!("request: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("response: {e}"))?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no end of headers")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("status: {}", head.lines().next().unwrap_or("")));
    }
    let values = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect();
    Ok(Scrape {
        values,
        bytes: body.len(),
    })
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    t_s: f64,
    rss_kb: u64,
    /// Open fds, less one OOM eventfd per v1 memcg and less the memcg files kept open.
    fds: u64,
    /// Fds on files and directories of cgroup mounts: the memcg files oomtrace keeps open
    /// between kills, a bounded cache judged against its bound ([`MEMCG_FILES_BOUND`]).
    memcg_files: u64,
    /// Of those, the ones of the soak's own memcgs or of memcgs removed since: what must be
    /// gone once the load is (memcgs others on the host keep, with a kill in them meanwhile —
    /// this machine's own `process_api/…` — may stay in the cache while they exist).
    memcg_files_stale: u64,
    tracked: Option<u64>,
    held: Option<u64>,
    lost: Option<u64>,
    stuck_now: Option<u64>,
    /// Entries of oomtrace's memcg id → path cache.
    memcgs_named: Option<u64>,
    scrape_bytes: u64,
}

impl Sample {
    fn json(&self) -> Value {
        json!({"t_s": self.t_s, "rss_kb": self.rss_kb, "fds": self.fds,
               "memcg_files": self.memcg_files, "memcg_files_stale": self.memcg_files_stale,
               "kernel_tracked": self.tracked, "victims_held": self.held,
               "lost_events": self.lost, "victims_stuck": self.stuck_now,
               "memcgs_named": self.memcgs_named,
               "scrape_bytes": self.scrape_bytes})
    }
}

fn take_sample(pid: u32, addr: SocketAddr, t0: Instant) -> Result<Sample, String> {
    let rss_kb =
        oomtrace_tests::proc_status_number(pid, "VmRSS:").ok_or("oomtrace is gone (no VmRSS)")?;
    // Counted before the scrape: oomtrace may still hold this scrape's connection for a
    // moment after answering it, an fd that is not growth.
    let (mut fds, mut memcg_files, mut memcg_files_stale) = (0u64, 0u64, 0u64);
    let own = [
        format!("/oomtrace-test-{}-", std::process::id()),
        format!("-oomtrace-{}-", std::process::id()),
    ];
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| format!("oomtrace is gone (/proc/{pid}/fd: {e})"))?
        .flatten()
    {
        match std::fs::read_link(e.path()) {
            Ok(t) if t.starts_with("/sys/fs/cgroup") => {
                memcg_files += 1;
                // A removed memcg's path reads `PATH (deleted)`, which does not exist.
                let name = t.to_string_lossy();
                if !t.exists() || own.iter().any(|o| name.contains(o.as_str())) {
                    memcg_files_stale += 1;
                }
            }
            _ => fds += 1,
        }
    }
    // On cgroup v1 oomtrace holds one OOM eventfd per memcg there is, by design: memcgs that
    // others on the host make or keep (other tests, the node's own) are not its growth.
    let fds = fds.saturating_sub(v1_memcgs());
    let m = scrape(addr)?;
    Ok(Sample {
        t_s: t0.elapsed().as_secs_f64(),
        rss_kb,
        fds,
        memcg_files,
        memcg_files_stale,
        tracked: m.get("oomtrace_kernel_tracked_processes"),
        held: m.get("oomtrace_victims_held"),
        lost: m.get("oomtrace_lost_events_total"),
        stuck_now: m.get("oomtrace_victims_stuck"),
        memcgs_named: m.get("oomtrace_memcgs_named"),
        scrape_bytes: m.bytes as u64,
    })
}

/// Memory cgroups under the cgroup v1 memory controller (the root included); 0 on v2.
fn v1_memcgs() -> u64 {
    let root = std::path::Path::new("/sys/fs/cgroup/memory");
    if !root.join("memory.oom_control").exists() {
        return 0;
    }
    let mut stack = vec![root.to_path_buf()];
    let mut n = 0;
    while let Some(dir) = stack.pop() {
        n += 1;
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    n
}

/// What each of oomtrace's fds points at (`/proc/PID/fd`), sorted: kept with the results, so
/// that an fd that stays open after the load can be named.
fn fd_targets(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map_or_else(|e| format!("<{e}>"), |t| t.display().to_string());
            format!("{} -> {target}", e.file_name().to_string_lossy())
        })
        .collect();
    v.sort();
    v
}

fn median(v: &[u64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2] as f64,
        n => (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0,
    }
}

/// How a metric is judged.
struct Rule {
    name: &'static str,
    get: fn(&Sample) -> Option<u64>,
    /// Growth allowed from the first third's median to the last third's, given the first.
    allowed: fn(f64) -> f64,
    allowed_text: &'static str,
    /// Must be back at (or below) its value before the load once the load has stopped.
    back_to_baseline: bool,
    /// Seconds into the load before it can be flat (beyond the soak's warm-up).
    flat_after_s: f64,
    /// Judged from the second third on: what fills once, to a bound, in the first third (the
    /// allocator's arenas and caches, the minute of removed memcgs kept, maps reaching their
    /// working size) is start-up, not growth; steady growth shows between the second and the
    /// last.
    steady: bool,
    /// What no sample may exceed (a cache bounded by design).
    bound: Option<u64>,
}

/// The memcg files oomtrace keeps open at most: the files read at a kill of the 16 memcgs
/// read last (oomtrace/src/live.rs `MEMCG_FILES_KEPT`; each its directory and up to ten
/// files on cgroup v1, seven on v2: host/memstate.rs) and 64 v1 `memory.oom_control`s
/// (host/memcg_watch.rs `CONTROLS_KEPT`). Bounded by design, so judged against the bound,
/// not as growth (they fill with the first kills of as many memcgs).
const MEMCG_FILES_BOUND: u64 = 16 * (1 + 10) + 64;

const RULES: [Rule; 7] = [
    Rule {
        name: "RSS (kB)",
        get: |s| Some(s.rss_kb),
        allowed: |first| (2048.0f64).max(first * 0.10),
        allowed_text: "last third ≤ second third + max(2 MiB, 10 %)",
        back_to_baseline: false,
        flat_after_s: 0.0,
        steady: true,
        bound: None,
    },
    Rule {
        name: "open fds (less one OOM eventfd per memcg on the host, cgroup v1, and the memcg files kept)",
        get: |s| Some(s.fds),
        allowed: |_| 4.0,
        allowed_text: "last third ≤ first third + 4; after the load = baseline",
        back_to_baseline: true,
        flat_after_s: 0.0,
        steady: false,
        bound: None,
    },
    Rule {
        name: "memcg files kept open (a bounded cache)",
        get: |s| Some(s.memcg_files),
        // Judged by its bound; growth between thirds within it is the cache filling.
        allowed: |_| MEMCG_FILES_BOUND as f64,
        allowed_text: "every sample ≤ 16 memcgs × 11 + 64 v1 oom_control = 240",
        back_to_baseline: false,
        flat_after_s: 0.0,
        steady: false,
        bound: Some(MEMCG_FILES_BOUND),
    },
    Rule {
        name: "of them, of the soak's memcgs or of memcgs removed",
        get: |s| Some(s.memcg_files_stale),
        allowed: |_| MEMCG_FILES_BOUND as f64,
        allowed_text: "within the bound above; after the load = baseline",
        back_to_baseline: true,
        flat_after_s: 0.0,
        steady: false,
        bound: Some(MEMCG_FILES_BOUND),
    },
    Rule {
        name: "in-kernel filter entries",
        get: |s| s.tracked,
        allowed: |_| 16.0,
        allowed_text: "last third ≤ first third + 16; after the load = baseline",
        back_to_baseline: true,
        flat_after_s: 0.0,
        steady: false,
        bound: None,
    },
    Rule {
        name: "victims held",
        get: |s| s.held,
        allowed: |_| 4.0,
        allowed_text: "last third ≤ first third + 4; after the load = baseline",
        back_to_baseline: true,
        flat_after_s: 0.0,
        steady: false,
        bound: None,
    },
    Rule {
        name: "memcg entries (names, creations, per-memcg state)",
        get: |s| s.memcgs_named,
        // Names of live memcgs until the 2 s sweep finds them removed, of creations for 5 s,
        // of removed memcgs and the tracker's per-memcg state for a minute after the removal:
        // the churn of the last minute or so, which varies from one sample to the next.
        allowed: |first| (16.0f64).max(first * 0.25),
        allowed_text: "last third ≤ first third + max(16, 25 %), from 80 s on",
        back_to_baseline: false,
        // A removed memcg's entries go a minute after its removal (kernel/cgroups.rs
        // REMOVED_KEPT, lifecycle/forget.rs), found at most 5 s after its creation.
        flat_after_s: 80.0,
        steady: false,
        bound: None,
    },
];

fn row(metric: &str, cells: Value, rule: &str, ok: bool, why: String) -> Value {
    json!({"metric": metric, "cells": cells, "rule": rule,
           "verdict": if ok { "ok" } else { "GROWS" }, "why": why})
}

/// Judges every metric; returns one row each.
fn judge(samples: &[Sample], warmup_s: f64, baseline: &Sample, quiesced: &[Sample]) -> Vec<Value> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t_s >= warmup_s).collect();
    let third = after.len() / 3;
    let mut rows = Vec::new();
    for r in &RULES {
        let after: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.t_s >= warmup_s.max(r.flat_after_s))
            .collect();
        let third = after.len() / 3;
        let all: Vec<u64> = samples.iter().filter_map(r.get).collect();
        let first: Vec<u64> = after[..third].iter().filter_map(|s| (r.get)(s)).collect();
        let middle: Vec<u64> = after[third..2 * third]
            .iter()
            .filter_map(|s| (r.get)(s))
            .collect();
        let last: Vec<u64> = after[after.len() - third..]
            .iter()
            .filter_map(|s| (r.get)(s))
            .collect();
        let base = (r.get)(baseline);
        let settled = quiesced.iter().filter_map(r.get).min();
        let cells = json!({"baseline": base, "start": median(&first), "middle": median(&middle),
                           "end": median(&last),
                           "max": all.iter().max(), "after_load": settled});
        let (ok, why) =
            if third == 0 || first.len() < third || middle.len() < third || last.len() < third {
                (
                    false,
                    format!("not measured ({} samples after warm-up)", after.len()),
                )
            } else {
                let from = if r.steady { &middle } else { &first };
                let (a, b) = (median(from), median(&last));
                let allowed = (r.allowed)(a);
                let max = all.iter().max().copied().unwrap_or(0);
                if let Some(bound) = r.bound.filter(|&bound| max > bound) {
                    (false, format!("reached {max} (bound {bound})"))
                } else if b - a > allowed {
                    (
                        false,
                        format!("grew by {:.0} (allowed {allowed:.0})", b - a),
                    )
                } else if r.back_to_baseline {
                    match (base, settled) {
                        (Some(base), Some(s)) if s <= base => (true, String::new()),
                        (Some(base), Some(s)) => (
                            false,
                            format!(
                                "{s} after the load, {base} before it (waited {QUIESCE_WITHIN:?})"
                            ),
                        ),
                        _ => (false, "no reading after the load".into()),
                    }
                } else {
                    (true, String::new())
                }
            };
        rows.push(row(r.name, cells, r.allowed_text, ok, why));
    }
    // Lost events: a one-off burst is reported, losses still going on at the end are growth.
    let lost: Vec<(f64, u64)> = samples
        .iter()
        .filter_map(|s| Some((s.t_s, s.lost?)))
        .collect();
    let (ok, why, cells) = match (lost.first(), lost.last(), after.get(after.len() - third)) {
        (Some(first), Some(end), Some(from)) if third > 0 => {
            let at_from = from.lost.unwrap_or(end.1);
            let late = end.1.saturating_sub(at_from);
            (
                late == 0,
                if late == 0 {
                    String::new()
                } else {
                    format!("{late} lost in the last third")
                },
                json!({"baseline": baseline.lost, "start": first.1, "end": end.1,
                       "max": end.1, "after_load": quiesced.last().and_then(|s| s.lost)}),
            )
        }
        _ => (false, "not measured".into(), json!({})),
    };
    rows.push(row(
        "lost events (total)",
        cells,
        "none lost in the last third",
        ok,
        why,
    ));
    rows
}

/// A pass/fail check that is not about growth.
fn check(name: &str, value: String, ok: bool) -> Value {
    json!({"metric": name, "cells": {"value": value}, "rule": "", "verdict": if ok { "ok" } else { "FAILED" }, "why": ""})
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{f:.1}"),
            _ => n.to_string(),
        },
        other => other
            .as_str()
            .map_or_else(|| other.to_string(), str::to_string),
    }
}

/// Runs `f` in a thread of `s`; a panic stops the whole soak and becomes an error message.
fn guarded<'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    name: &'static str,
    f: impl FnOnce() + Send + 'scope,
) -> std::thread::ScopedJoinHandle<'scope, Result<(), String>> {
    s.spawn(move || {
        std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
            STOP.store(true, Ordering::SeqCst);
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            format!("the {name} thread failed: {msg}")
        })
    })
}

fn args() -> (f64, String) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let minutes = flag("--minutes")
        .map(|m| m.parse::<f64>().expect("--minutes N (a number)"))
        .unwrap_or(2.0);
    assert!(minutes > 0.0, "--minutes must be positive");
    let out = flag("--out").unwrap_or_else(|| "soak.json".into());
    (minutes, out)
}

/// Starts oomtrace, keeping only what the soak reads: its own victims' kills, deaths and
/// flags, and the closing lines. Everything else oomtrace prints is parsed and dropped.
fn start_watch(prefix: &str) -> (Watch, SocketAddr) {
    let keep_prefix = prefix.to_string();
    let watch = Watch::start_keeping(
        &[
            "watch",
            "--json",
            "--findings-only",
            "--metrics",
            "127.0.0.1:0",
            "--timeout",
            FLAG_TIMEOUT_S,
        ],
        &[],
        move |l| {
            matches!(l["type"].as_str(), Some("summary" | "reconcile" | "lost"))
                || ["killed", "dead", "stuck"]
                    .iter()
                    .any(|k| is_finding(l, k, &keep_prefix))
                // Possibly the soak's (told apart by pid later): few, and not to be lost.
                || said_removed(l)
        },
    );
    let addr: SocketAddr = watch.plan()["metrics_addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("the plan line names no metrics_addr");
    (watch, addr)
}

/// Before the load: the lowest of a few idle readings, and what oomtrace's fds point at.
fn idle_baseline(pid: u32, addr: SocketAddr) -> (Sample, Vec<String>) {
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(take_sample(pid, addr, t0).expect("an idle sample"));
        std::thread::sleep(Duration::from_secs(1));
    }
    let fds_before = fd_targets(pid);
    let low = |f: fn(&Sample) -> Option<u64>| idle.iter().filter_map(f).min();
    let baseline = Sample {
        t_s: 0.0,
        rss_kb: low(|s| Some(s.rss_kb)).unwrap_or(0),
        fds: low(|s| Some(s.fds)).unwrap_or(0),
        memcg_files: low(|s| Some(s.memcg_files)).unwrap_or(0),
        memcg_files_stale: low(|s| Some(s.memcg_files_stale)).unwrap_or(0),
        tracked: low(|s| s.tracked),
        held: low(|s| s.held),
        lost: low(|s| s.lost),
        stuck_now: low(|s| s.stuck_now),
        memcgs_named: low(|s| s.memcgs_named),
        scrape_bytes: 0,
    };
    if baseline.tracked.is_none() || baseline.held.is_none() {
        eprintln!(
            "soak: this oomtrace's /metrics has no oomtrace_kernel_tracked_processes or \
             oomtrace_victims_held: those rows will fail as not measured"
        );
    }
    (baseline, fds_before)
}

/// The load's samples, the errors that stopped it, and when it began.
struct Load {
    samples: Vec<Sample>,
    errors: Vec<String>,
    t_load: Instant,
    load_s: f64,
}

/// Runs the load threads for `run` (or until one fails or a signal comes), sampling
/// oomtrace every [`SAMPLE_EVERY`]; then stops and joins them.
fn run_load(p: &Produced, watch: &Watch, prefix: &str, addr: SocketAddr, run: Duration) -> Load {
    let pid = watch.pid();
    let mut samples = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let t_load = Instant::now();
    let deadline = t_load + run;
    std::thread::scope(|s| {
        let threads = [
            guarded(s, "OOM kill", move || kill_loop(p)),
            guarded(s, "exit storm", move || storm_loop(p)),
            guarded(s, "stuck victim", move || stuck_loop(p, watch, prefix)),
            guarded(s, "scrape", move || scrape_loop(p, addr)),
            guarded(s, "pod", move || pod_loop(p)),
        ];
        let mut next = Instant::now() + SAMPLE_EVERY;
        while !stopping() {
            pause(next.min(deadline).saturating_duration_since(Instant::now()));
            if stopping() {
                break;
            }
            match take_sample(pid, addr, t_load) {
                Ok(x) => {
                    report_sample(&x, p);
                    samples.push(x);
                }
                Err(e) => {
                    errors.push(format!("sampling oomtrace failed: {e}"));
                    STOP.store(true, Ordering::SeqCst);
                }
            }
            if Instant::now() >= deadline {
                STOP.store(true, Ordering::SeqCst);
            }
            next += SAMPLE_EVERY;
        }
        eprintln!("soak: stopping the load");
        for t in threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push("a load thread panicked outside its guard".into()),
            }
        }
    });
    Load {
        samples,
        errors,
        t_load,
        load_s: t_load.elapsed().as_secs_f64(),
    }
}

/// One progress line per sample, on stderr.
fn report_sample(x: &Sample, p: &Produced) {
    let g = |n: &AtomicU64| n.load(Ordering::Relaxed);
    eprintln!(
        "soak: [{:>5.0} s] rss {} kB, fds {} (+{} memcg files), filter {:?}, held {:?}, memcgs named {:?}, lost {:?} | kills {}+{} in pods, pods {}, stuck {}, storms {}, scrapes {}",
        x.t_s,
        x.rss_kb,
        x.fds,
        x.memcg_files,
        x.tracked,
        x.held,
        x.memcgs_named,
        x.lost,
        g(&p.kills),
        g(&p.pod_kills),
        g(&p.pods),
        g(&p.stuck),
        g(&p.storms),
        g(&p.scrapes)
    );
}

/// After the load: the readings taken while waiting for the baseline, whether it came back,
/// and how long that took.
struct Settled {
    quiesced: Vec<Sample>,
    back: bool,
    settle_s: f64,
}

/// The load is gone: the fds, held victims and filter entries must return to the baseline
/// within [`QUIESCE_WITHIN`].
fn settle(
    pid: u32,
    addr: SocketAddr,
    load: &mut Load,
    baseline: &Sample,
    fds_before: &[String],
) -> Settled {
    let mut quiesced = Vec::new();
    let mut back = false;
    let settle_start = Instant::now();
    while load.errors.is_empty() && settle_start.elapsed() < QUIESCE_WITHIN {
        std::thread::sleep(Duration::from_secs(1));
        match take_sample(pid, addr, load.t_load) {
            Ok(x) => {
                back = x.fds <= baseline.fds
                    && x.memcg_files_stale <= baseline.memcg_files_stale
                    && x.tracked.zip(baseline.tracked).is_none_or(|(a, b)| a <= b)
                    && x.held.zip(baseline.held).is_none_or(|(a, b)| a <= b);
                if x.fds > baseline.fds || x.memcg_files_stale > baseline.memcg_files_stale {
                    // Which descriptors are still open, as they close: the row's evidence.
                    let extra: Vec<String> = fd_targets(pid)
                        .into_iter()
                        .filter(|f| !fds_before.contains(f))
                        .collect();
                    eprintln!(
                        "soak: {:.0} s after the load, fds not open before it: {extra:?}",
                        settle_start.elapsed().as_secs_f64()
                    );
                }
                quiesced.push(x);
                if back {
                    break;
                }
            }
            Err(e) => load
                .errors
                .push(format!("sampling oomtrace after the load failed: {e}")),
        }
    }
    Settled {
        quiesced,
        back,
        settle_s: settle_start.elapsed().as_secs_f64(),
    }
}

/// The checks that are not about growth, from what the load produced, what oomtrace printed
/// (`lines`) and its exit code.
fn checks(
    produced: &Produced,
    lines: &[Value],
    prefix: &str,
    code: Option<i32>,
    load_s: f64,
) -> Vec<Value> {
    let births = produced.pod_births.lock().expect("births").clone();
    let (oom_kills, unnamed_killed) = oom_kill_check(produced, lines, prefix, &births);
    let mut rows = vec![oom_kills];
    rows.push(pod_kill_check(produced, lines, &births, unnamed_killed));
    let g = |n: &AtomicU64| n.load(Ordering::Relaxed);
    let pods_per_s = g(&produced.pods) as f64 / load_s;
    let pace = 10.0 / oomtrace_tests::slowdown() as f64;
    rows.push(check(
        &format!("pod memcgs made and removed per second (≥ {pace}) / ordinary exits in them"),
        format!("{pods_per_s:.1} / {}", g(&produced.pod_exits)),
        pods_per_s >= pace && g(&produced.pod_exits) > 0,
    ));
    let flagged = count_findings(lines, "stuck", prefix);
    rows.push(check(
        "stuck victims held / flagged while held / stuck findings (flagged past the timeout: \
         median, max)",
        format!(
            "{} / {} / {flagged} ({})",
            g(&produced.stuck),
            g(&produced.stuck_flagged),
            flag_lateness(lines, prefix)
        ),
        g(&produced.stuck) > 0 && g(&produced.stuck_flagged) == g(&produced.stuck),
    ));
    rows.push(check(
        "hogs that did not die of SIGKILL",
        g(&produced.kills_unexpected).to_string(),
        g(&produced.kills_unexpected) == 0,
    ));
    rows.push(check(
        "scrapes answered / failed",
        format!("{} / {}", g(&produced.scrapes), g(&produced.scrape_errors)),
        g(&produced.scrapes) > 0 && g(&produced.scrape_errors) == 0,
    ));
    rows.push(check(
        "oomtrace's exit code on SIGTERM",
        format!("{code:?}"),
        code == Some(0),
    ));
    rows
}

/// Findings of `kind` about OOM kills in the soak's memcgs. OOM kills only: a `dead` finding
/// also ends a kill by someone else (`victim.sender`: the soak's clean-up SIGKILLs in pod
/// memcgs removed at once, named too since `cgroup_mkdir`).
/// How late past `--timeout` the soak's stuck victims were flagged (the bench measures it on a
/// quiet machine; here the node's load runs beside it): median and max, or `none`.
fn flag_lateness(lines: &[Value], prefix: &str) -> String {
    let timeout_ns = FLAG_TIMEOUT_S
        .parse::<u64>()
        .expect("a whole number of seconds")
        * 1_000_000_000;
    let mut late: Vec<u64> = lines
        .iter()
        .filter(|l| is_finding(l, "stuck", prefix) && l["victim"]["sender"].is_null())
        .filter_map(|l| l["since_kill_ns"].as_u64())
        .map(|since| since.saturating_sub(timeout_ns))
        .collect();
    late.sort_unstable();
    match (late.get(late.len() / 2), late.last()) {
        (Some(mid), Some(max)) => {
            format!("{:.1} ms, {:.1} ms", *mid as f64 / 1e6, *max as f64 / 1e6)
        }
        _ => "none".into(),
    }
}

fn count_findings(lines: &[Value], kind: &str, prefix: &str) -> u64 {
    lines
        .iter()
        .filter(|l| is_finding(l, kind, prefix) && l["victim"]["sender"].is_null())
        .count() as u64
}

/// Every OOM kill the kernel counted in the soak's memcgs reported killed and seen dead. Also
/// returns how many container kills were said removed before they were named.
fn oom_kill_check(
    produced: &Produced,
    lines: &[Value],
    prefix: &str,
    births: &[PodKill],
) -> (Value, u64) {
    let (killed, dead) = (
        count_findings(lines, "killed", prefix),
        count_findings(lines, "dead", prefix),
    );
    // Container kills whose memcg was gone before oomtrace read the kill: said removed, with the
    // memcg's id (checked), the path unknown.
    let removed_unnamed = |kind: &str| {
        lines
            .iter()
            .filter(|l| said_removed(l) && l["finding"] == kind)
            .filter(|l| {
                births.iter().any(|b| {
                    l["victim"]["key"]["tgid"] == b.pid && l["victim"]["memcg_id"] == b.memcg_id
                })
            })
            .count() as u64
    };
    let (unnamed_killed, unnamed_dead) = (removed_unnamed("killed"), removed_unnamed("dead"));
    let (killed, dead) = (killed + unnamed_killed, dead + unnamed_dead);
    let kernel_kills = produced.kernel_kills.load(Ordering::Relaxed);
    let row = check(
        "OOM kills in the soak's memcgs: kernel / reported killed / seen dead",
        format!("{kernel_kills} / {killed} / {dead}"),
        kernel_kills > 0 && killed == kernel_kills && dead == killed,
    );
    (row, unnamed_killed)
}

/// Every container kill named: its memcg's path and the pod's workload, at once, although
/// its memcg was made moments before and removed moments after (also when removed before
/// oomtrace read the kill: named from its creation).
fn pod_kill_check(
    produced: &Produced,
    lines: &[Value],
    births: &[PodKill],
    unnamed_killed: u64,
) -> Value {
    let mut ages_ms: Vec<f64> = Vec::new();
    let mut named = 0u64;
    for l in lines
        .iter()
        .filter(|l| is_finding(l, "killed", &pods_prefix()))
    {
        let Some(b) = births.iter().find(|b| l["memcg_path"] == b.path) else {
            continue;
        };
        let w = &l["workload"];
        if w["kind"] == "pod" && w["container_id"] == b.container_id && w["qos"] == "burstable" {
            named += 1;
        }
        if let Some(kill) = l["victim"]["timeline"]["sigkill"].as_u64() {
            ages_ms.push(kill.saturating_sub(b.born_ns) as f64 / 1e6);
        }
    }
    ages_ms.sort_by(f64::total_cmp);
    // A pod kill left unnamed is shown with every line about its pid or its memcg: the soak
    // keeps no other copy of oomtrace's output, and one such kill in an hour is otherwise
    // unexplainable after the fact.
    let is_named = |b: &PodKill| {
        lines.iter().any(|l| {
            is_finding(l, "killed", &pods_prefix())
                && l["memcg_path"] == b.path
                && l["workload"]["container_id"] == b.container_id
        })
    };
    for b in births.iter().filter(|b| !is_named(b)).take(3) {
        eprintln!(
            "soak: pod kill not named: pid {} in {} (memcg id {}, container {})",
            b.pid, b.path, b.memcg_id, b.container_id
        );
        // The soak reads findings only: a finding names its victim as `victim.key.tgid` and
        // the victim's own memcg as `victim.memcg_id` (the top-level ids are the OOM domain's).
        for l in lines.iter().filter(|l| {
            oomtrace_tests::concerns(l, b.pid)
                || l["victim"]["key"]["tgid"] == b.pid
                || l["victim"]["memcg_id"] == b.memcg_id
                || l["memcg_id"] == b.memcg_id
                || l["memcg_path"] == b.path
        }) {
            eprintln!("soak:   {l}");
        }
    }
    // And the pod kills reported under a path that is no container's the soak made: a kill
    // named, but with another memcg's path.
    if births.iter().any(|b| !is_named(b)) {
        for l in lines
            .iter()
            .filter(|l| is_finding(l, "killed", &pods_prefix()))
            .filter(|l| !births.iter().any(|b| l["memcg_path"] == b.path))
            .take(3)
        {
            eprintln!("soak: a pod kill under no container's path: {l}");
        }
    }
    // Under emulation (a guest kernel) the load itself runs `slowdown` times slower: the
    // bounds on its own pace are scaled, those on oomtrace's results are not.
    let young_ms = oomtrace_tests::scaled(POD_YOUNG).as_secs_f64() * 1e3;
    let young = ages_ms.iter().filter(|a| **a <= young_ms).count();
    let pod_kernel = produced.pod_kernel_kills.load(Ordering::Relaxed);
    check(
        &format!(
            "pod kills: kernel / named with path and pod workload / said removed before named \
             / memcg ≤ {young_ms:.0} ms old (median, max ms)"
        ),
        format!(
            "{pod_kernel} / {named} / {unnamed_killed} / {young} ({:.1}, {:.1})",
            ages_ms.get(ages_ms.len() / 2).copied().unwrap_or(f64::NAN),
            ages_ms.last().copied().unwrap_or(f64::NAN)
        ),
        // Since `cgroup_mkdir` names memcgs at their creation, one removed before its kill was
        // read is named too (said removed, with its path): none is left unnamed.
        pod_kernel > 0
            && named == pod_kernel
            && unnamed_killed == 0
            && ages_ms
                .get(ages_ms.len() / 2)
                .is_some_and(|m| *m <= young_ms),
    )
}

/// The verdicts as a Markdown table on stdout.
fn print_table(rows: &[Value]) {
    println!(
        "\n| metric | before load | first third | second third | last third | max | after load | rule | verdict |\n|---|---|---|---|---|---|---|---|---|"
    );
    for r in rows {
        let c = &r["cells"];
        let verdict = match r["why"].as_str() {
            Some(w) if !w.is_empty() => format!("{} ({w})", cell(&r["verdict"])),
            _ => cell(&r["verdict"]),
        };
        if c.get("value").is_some() {
            println!(
                "| {} | {} | | | | | | | {verdict} |",
                cell(&r["metric"]),
                cell(&c["value"])
            );
        } else {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {verdict} |",
                cell(&r["metric"]),
                cell(&c["baseline"]),
                cell(&c["start"]),
                cell(&c["middle"]),
                cell(&c["end"]),
                cell(&c["max"]),
                cell(&c["after_load"]),
                cell(&r["rule"])
            );
        }
    }
}

/// The line under the table: what the load did and whether oomtrace came back to its baseline.
fn print_load(p: &Value, load: &Load, warmup_s: f64, settled: &Settled) {
    println!(
        "\nload: {:.0} s; {} OOM kills in {} memcgs, {} stuck victims, {} exit storms \
         ({} kernel SIGKILLs, {} exits), {} scrapes, {} pods ({} OOM-killed, {} exits); {} \
         samples, warm-up {warmup_s:.0} s; {} {:.0} s after the load",
        load.load_s,
        p["oom_kills"],
        p["memcgs"],
        p["stuck_victims"],
        p["exit_storms"],
        p["storm_kernel_sigkills"],
        p["storm_exits"],
        p["scrapes"],
        p["pods"],
        p["pod_oom_kills"],
        p["pod_exits"],
        load.samples.len(),
        if settled.back {
            "back to the baseline"
        } else {
            "NOT back to the baseline"
        },
        settled.settle_s
    );
}

/// The load's settings, as written with the results.
fn load_json() -> Value {
    json!({"kill_every_s": KILL_EVERY.as_secs_f64(), "kills_per_memcg": KILLS_PER_MEMCG,
           "storm_every_s": STORM_EVERY.as_secs_f64(), "storm_rounds": STORM_ROUNDS,
           "storm_children": STORM_CHILDREN, "storm_execs": STORM_EXECS,
           "stuck_every_s": STUCK_EVERY.as_secs_f64(), "stuck_hold_s": STUCK_HOLD.as_secs_f64(),
           "scrape_every_s": SCRAPE_EVERY.as_secs_f64(), "sample_every_s": SAMPLE_EVERY.as_secs_f64(),
           "pod_every_s": POD_EVERY.as_secs_f64(), "pod_kill_every": POD_KILL_EVERY,
           "pod_limit_bytes": POD_LIMIT})
}

/// Writes `doc` to `out_path`, making its directory.
fn write_results(out_path: &str, doc: &Value) {
    if let Some(dir) = std::path::Path::new(out_path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(
        out_path,
        serde_json::to_string_pretty(doc).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("writing {out_path}: {e}"));
    println!("(written to {out_path})");
}

fn main() {
    require_root();
    let (minutes, out_path) = args();
    // SAFETY: the handler only stores to atomics.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let run = Duration::from_secs_f64(minutes * 60.0);
    let warmup_s = (run.as_secs_f64() * 0.1).clamp(30.0, 300.0);
    // The soak's memcgs, as oomtrace names them (`Sandbox` makes `oomtrace-test-<pid>-…`).
    let prefix = format!("/oomtrace-test-{}-", std::process::id());
    let (watch, addr) = start_watch(&prefix);
    let pid = watch.pid();
    eprintln!(
        "soak: oomtrace {pid} watching, metrics at http://{addr}/metrics; {minutes} min of load"
    );
    let (baseline, fds_before) = idle_baseline(pid, addr);
    let produced = Produced::default();
    let mut load = run_load(&produced, &watch, &prefix, addr, run);
    let settled = settle(pid, addr, &mut load, &baseline, &fds_before);
    let fds_after = fd_targets(pid);
    let fds_new: Vec<&String> = fds_after
        .iter()
        .filter(|f| !fds_before.contains(f))
        .collect();

    let warnings = watch.warnings();
    let (code, lines) = watch.stop_with_lines();
    let summary = lines
        .iter()
        .find(|l| l["type"] == "summary")
        .cloned()
        .unwrap_or(Value::Null);
    let mut rows = judge(&load.samples, warmup_s, &baseline, &settled.quiesced);
    rows.extend(checks(&produced, &lines, &prefix, code, load.load_s));
    // Memcgs vanishing mid-read are a node's normal day, not something to warn a user about.
    rows.push(check(
        "warnings oomtrace printed (first one)",
        format!(
            "{} ({})",
            warnings.len(),
            warnings.first().map_or("-", |w| w.as_str())
        ),
        warnings.is_empty(),
    ));
    print_table(&rows);
    let p = produced.json();
    print_load(&p, &load, warmup_s, &settled);
    if !fds_new.is_empty() {
        println!("fds open after the load that were not before it: {fds_new:?}");
    }
    let mut errors = load.errors;
    if INTERRUPTED.load(Ordering::SeqCst) {
        errors.push("interrupted by a signal before the end".into());
    }
    for e in &errors {
        eprintln!("soak: {e}");
    }
    let grew = rows.iter().any(|r| r["verdict"] != "ok");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let doc = json!({
        "kernel": kernel.trim(), "minutes": minutes, "load_s": load.load_s, "warmup_s": warmup_s,
        "settle_s": settled.settle_s, "passed": !grew && errors.is_empty(), "errors": errors,
        "load": load_json(),
        "produced": p, "rows": rows, "summary": summary,
        "baseline": baseline.json(),
        "samples": load.samples.iter().map(Sample::json).collect::<Vec<_>>(),
        "after_load": settled.quiesced.iter().map(Sample::json).collect::<Vec<_>>(),
        "fds_before_load": fds_before, "fds_after_load": fds_after,
    });
    write_results(&out_path, &doc);
    std::process::exit(if !errors.is_empty() {
        2
    } else if grew {
        1
    } else {
        0
    });
}
