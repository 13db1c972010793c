//! Prometheus text exposition for canary mode (`watch --metrics ADDR`).
//!
//! Counts come from findings and events as the session sees them; memcg labels are capped so
//! a host with thousands of cgroups cannot grow the scrape without bound.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    event::Event,
    kernel::plan::HookPlan,
    lifecycle::{Finding, Summary},
};

/// Distinct memcg label values kept; the rest are counted under `memcg="other"`.
const MAX_MEMCG_LABELS: usize = 500;
/// kill→dead histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Default)]
pub(crate) struct Metrics {
    /// Per OOM domain (memcg whose limit was hit), by label set.
    invocations: BTreeMap<String, i64>,
    /// Per victim label set ([`victim_labels`]).
    kills: BTreeMap<String, i64>,
    /// Victims stuck now, per label set (entries at 0 are kept: a series that drops to 0 is
    /// what resolves an alert).
    stuck_now: BTreeMap<String, i64>,
    /// Victims ever flagged, per label set.
    stuck_total: BTreeMap<String, i64>,
    /// SIGKILLs not sent by the OOM killer, per victim label set and `sender_kind`.
    other_kills: BTreeMap<String, i64>,
    /// Those flagged `kill_stuck` and not dead now (kept at 0, as `stuck_now`), and ever.
    kill_stuck_now: BTreeMap<String, i64>,
    kill_stuck_total: BTreeMap<String, i64>,
    /// Livelocks, per OOM domain label set.
    livelock_by: BTreeMap<String, i64>,
    /// Memcgs hung now with the OOM killer disabled, per label set (kept at 0 once seen).
    oom_disabled_now: BTreeMap<String, i64>,
    /// OOM domains finding nothing killable now, per label set (kept at 0 once seen).
    nothing_killable_now: BTreeMap<String, i64>,
    /// Whether an invocation hook counts invocations; else the memcg notifications do.
    invocation_hook: bool,
    /// Whether mark_victim/signal and exits attach, and death is seen; whether the livelock
    /// signature (OOM invocations) can be seen.
    kill_path_observable: bool,
    livelock_observable: bool,
    dead: u64,
    released: u64,
    flagged: u64,
    livelocks: u64,
    bucket_counts: [u64; BUCKETS.len()],
    dead_count: u64,
    dead_sum_s: f64,
    hooks: Vec<(String, String)>,
    /// Processes the in-kernel filter tracks now (None if it could not be read).
    kernel_tracked: Option<u64>,
    /// Victims the tracker holds now.
    victims_held: u64,
    /// Entries of the memcg id → path cache (live and removed memcgs).
    memcgs_named: u64,
    /// `watch --unstick` remedies by (what the victim waited on, result).
    unstick: BTreeMap<(String, String), u64>,
}

/// The label set of a victim's metrics: its memcg and the workload it names
/// ([`crate::workload`]): `memcg="…",kind="…",workload="…",container="…"`.
pub(crate) fn victim_labels(memcg: &str) -> String {
    let w = crate::workload::of_path(memcg);
    let mut s = format!("memcg=\"{}\"", escape(memcg));
    for (k, v) in w.labels() {
        let _ = write!(s, ",{k}=\"{}\"", escape(&v));
    }
    s
}

/// The label set everything beyond [`MAX_MEMCG_LABELS`] distinct ones is counted under.
const OTHER: &str = "memcg=\"other\",kind=\"other\",workload=\"other\",container=\"\"";

/// Adds `by` to the series of `labels` (a rendered label set), or of [`OTHER`] once the map
/// holds as many label sets as it may: cardinality stays bounded whatever the host runs.
fn add(map: &mut BTreeMap<String, i64>, labels: String, by: i64) {
    let labels = if map.contains_key(&labels) || map.len() < MAX_MEMCG_LABELS {
        labels
    } else {
        OTHER.to_string()
    };
    *map.entry(labels).or_default() += by;
}

fn bump(map: &mut BTreeMap<String, i64>, labels: String) {
    add(map, labels, 1);
}

/// Escapes a label value (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub(crate) fn new(plan: &[HookPlan]) -> Metrics {
        Metrics {
            hooks: plan
                .iter()
                .map(|p| {
                    let hook = serde_json::to_value(p.hook)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    (hook, p.attach.map_or("none", |a| a.name()).to_string())
                })
                .collect(),
            ..Metrics::default()
        }
    }

    /// A `watch --unstick` remedy: `wait` is what the victim waited on (`fuse`, `ptrace`, …),
    /// `result` applied, refused or failed.
    pub(crate) fn unstick(&mut self, wait: &str, result: &str) {
        *self
            .unstick
            .entry((wait.to_string(), result.to_string()))
            .or_default() += 1;
    }

    /// Resource gauges sampled at scrape time: what a soak watches for unbounded growth.
    pub(crate) fn set_held(
        &mut self,
        kernel_tracked: Option<u64>,
        victims_held: u64,
        memcgs_named: u64,
    ) {
        self.kernel_tracked = kernel_tracked;
        self.victims_held = victims_held;
        self.memcgs_named = memcgs_named;
    }

    /// What the attach plan can observe (for the degraded-plan alert).
    pub(crate) fn set_observable(&mut self, kill_path: bool, livelock: bool) {
        self.kill_path_observable = kill_path;
        self.livelock_observable = livelock;
    }

    /// Which source counts invocations: an invocation hook (`true`) or the kernel's memcg
    /// notifications.
    pub(crate) fn set_invocation_hook(&mut self, hooked: bool) {
        self.invocation_hook = hooked;
    }

    /// Counts an event (`memcg` is its memcg's path, if it names one).
    pub(crate) fn event(&mut self, ev: &Event, memcg: Option<&str>) {
        match ev.invocations() {
            Some(i) if i.hooked => bump(
                &mut self.invocations,
                victim_labels(memcg.unwrap_or("unknown")),
            ),
            Some(i) if !self.invocation_hook && i.count > 0 => add(
                &mut self.invocations,
                victim_labels(memcg.unwrap_or("unknown")),
                i64::from(i.count),
            ),
            Some(_) | None => {}
        }
    }

    pub(crate) fn finding(&mut self, f: &Finding, memcg: Option<&str>) {
        let labels = || victim_labels(memcg.unwrap_or("unknown"));
        // Kills by other senders: their own families, labelled by sender kind too.
        if let Some(v) = f.victim()
            && v.is_other_kill()
        {
            let labels = || format!("{},sender_kind=\"{}\"", labels(), v.sender_kind().name());
            match f {
                Finding::Sigkill { .. } => bump(&mut self.other_kills, labels()),
                Finding::KillStuck { .. } => {
                    bump(&mut self.kill_stuck_now, labels());
                    bump(&mut self.kill_stuck_total, labels());
                }
                Finding::Dead {
                    was_flagged: true, ..
                } => add(&mut self.kill_stuck_now, labels(), -1),
                Finding::Dead { .. }
                | Finding::Killed { .. }
                | Finding::Marked { .. }
                | Finding::Stuck { .. }
                | Finding::Unobservable { .. }
                | Finding::NotReleased { .. }
                | Finding::Released { .. }
                | Finding::Collateral { .. }
                | Finding::OomKillerDisabled { .. }
                | Finding::OomKillerDisabledEnded { .. }
                | Finding::Livelock { .. }
                | Finding::NothingKillable { .. }
                | Finding::NothingKillableEnded { .. }
                | Finding::GroupKill { .. } => {}
            }
            return;
        }
        match f {
            Finding::Killed { .. } => bump(&mut self.kills, labels()),
            Finding::Dead {
                kill_to_dead_ns,
                was_flagged,
                ..
            } => {
                self.dead += 1;
                if *was_flagged {
                    add(&mut self.stuck_now, labels(), -1);
                }
                // A victim killed before oomtrace started has no kill→dead time.
                let Some(ns) = kill_to_dead_ns else {
                    return;
                };
                let s = *ns as f64 / 1e9;
                self.dead_count += 1;
                self.dead_sum_s += s;
                for (i, le) in BUCKETS.iter().enumerate() {
                    if s <= *le {
                        self.bucket_counts[i] += 1;
                    }
                }
            }
            Finding::Released { .. } => self.released += 1,
            Finding::Stuck { .. } => {
                self.flagged += 1;
                bump(&mut self.stuck_now, labels());
                bump(&mut self.stuck_total, labels());
            }
            Finding::Livelock { .. } => {
                self.livelocks += 1;
                bump(&mut self.livelock_by, labels());
            }
            Finding::OomKillerDisabled { .. } => add(&mut self.oom_disabled_now, labels(), 1),
            Finding::NothingKillable { .. } => add(&mut self.nothing_killable_now, labels(), 1),
            Finding::NothingKillableEnded { .. } => {
                add(&mut self.nothing_killable_now, labels(), -1);
            }
            Finding::OomKillerDisabledEnded { .. } => {
                add(&mut self.oom_disabled_now, labels(), -1);
            }
            Finding::Unobservable { .. }
            | Finding::Sigkill { .. }
            | Finding::KillStuck { .. }
            | Finding::Marked { .. }
            | Finding::NotReleased { .. }
            | Finding::Collateral { .. }
            | Finding::GroupKill { .. } => {}
        }
    }

    /// The exposition text.
    pub(crate) fn render(&self, summary: &Summary) -> String {
        let mut s = String::new();
        self.write_per_workload(&mut s);
        self.write_observable(&mut s);
        self.write_victim_counts(&mut s, summary);
        self.write_unstick(&mut s);
        self.write_resources(&mut s, summary);
        self.write_kill_to_dead(&mut s);
        self.write_hooks(&mut s);
        s
    }

    /// Appends the families labelled by memcg and workload: invocations, kills, stuck, livelocks.
    fn write_per_workload(&self, s: &mut String) {
        labelled(
            s,
            "oomtrace_oom_invocations_total",
            "counter",
            "Memory cgroup OOM invocations per OOM domain (the mem_cgroup_out_of_memory hook, else the kernel's memcg notifications: v2 memory.events.local oom, v1 oom_control eventfd).",
            &self.invocations,
        );
        labelled(
            s,
            "oomtrace_kills_total",
            "counter",
            "OOM kills (victims), per memcg and the workload it names (pod, container, unit).",
            &self.kills,
        );
        labelled(
            s,
            "oomtrace_oom_killer_disabled",
            "gauge",
            "Memcgs hung at their limit with the OOM killer disabled (v1 oom_kill_disable 1, under_oom 1), per memcg and workload; back to 0 when the hang ends.",
            &self.oom_disabled_now,
        );
        labelled(
            s,
            "oomtrace_nothing_killable",
            "gauge",
            "OOM domains invoking the OOM killer again and again with nothing it may kill (the kernel's verdict: mem_cgroup_out_of_memory returned false), per memcg and workload; back to 0 when it ends.",
            &self.nothing_killable_now,
        );
        labelled(
            s,
            "oomtrace_stuck_victims",
            "gauge",
            "Victims flagged stuck and not dead now, per memcg and workload.",
            &self.stuck_now,
        );
        labelled(
            s,
            "oomtrace_stuck_victims_total",
            "counter",
            "Victims ever flagged stuck, per memcg and workload.",
            &self.stuck_total,
        );
        labelled(
            s,
            "oomtrace_other_kills_total",
            "counter",
            "SIGKILLs not sent by the OOM killer (sender_kind user: a process's kill(2); kernel: a PID-namespace teardown, a tracer's exit), per target memcg, workload and sender kind.",
            &self.other_kills,
        );
        labelled(
            s,
            "oomtrace_kill_stuck_victims",
            "gauge",
            "Processes SIGKILLed by someone other than the OOM killer, flagged kill_stuck and not dead now, per memcg, workload and sender kind.",
            &self.kill_stuck_now,
        );
        labelled(
            s,
            "oomtrace_kill_stuck_victims_total",
            "counter",
            "Processes SIGKILLed by someone other than the OOM killer ever flagged kill_stuck, per memcg, workload and sender kind.",
            &self.kill_stuck_total,
        );
        labelled(
            s,
            "oomtrace_livelocks_by_domain_total",
            "counter",
            "Livelocks (a memcg invoking the OOM killer again and again while a victim is stuck), per OOM domain.",
            &self.livelock_by,
        );
    }

    /// Appends the gauges saying whether kills and deaths, and livelocks, can be seen.
    fn write_observable(&self, s: &mut String) {
        scalar(
            s,
            "oomtrace_kill_path_observable",
            "gauge",
            "1 if kills and deaths can be seen on this kernel (mark_victim or the kernel's SIGKILL, exits, pidfd).",
            u64::from(self.kill_path_observable),
        );
        scalar(
            s,
            "oomtrace_livelock_observable",
            "gauge",
            "1 if OOM invocations (the livelock signature) can be seen.",
            u64::from(self.livelock_observable),
        );
    }

    /// Appends the victim counts: stuck, flagged, dead, released, not released, livelocks.
    fn write_victim_counts(&self, s: &mut String, summary: &Summary) {
        scalar(
            s,
            "oomtrace_victims_stuck",
            "gauge",
            "Victims flagged as not dead within the timeout and still not dead.",
            summary.stuck_now,
        );
        scalar(
            s,
            "oomtrace_victims_flagged_total",
            "counter",
            "Victims ever flagged as stuck.",
            self.flagged,
        );
        scalar(
            s,
            "oomtrace_victims_dead_total",
            "counter",
            "Victims that finished exiting (every thread past exit_notify, files closed).",
            self.dead,
        );
        scalar(
            s,
            "oomtrace_victims_released_total",
            "counter",
            "Victims whose zombie was reaped.",
            self.released,
        );
        scalar(
            s,
            "oomtrace_victims_not_released",
            "gauge",
            "Dead victims whose parent has not reaped the zombie past the release timeout.",
            summary.not_released_now,
        );
        scalar(
            s,
            "oomtrace_livelocks_total",
            "counter",
            "Memcgs that kept hitting OOM while a victim was stuck.",
            self.livelocks,
        );
        scalar(
            s,
            "oomtrace_oom_group_kills_total",
            "counter",
            "OOM invocations that killed several victims (memory.oom.group; the kernel's oom_group_kill). Each victim is also in oomtrace_kills_total, as the kernel's oom_kill counts it.",
            summary.group_kills,
        );
    }

    /// Appends the `watch --unstick` remedies by wait and result, if any was taken.
    fn write_unstick(&self, s: &mut String) {
        if self.unstick.is_empty() {
            return;
        }
        header(
            s,
            "oomtrace_unstick_total",
            "counter",
            "Remedies watch --unstick took (or refused) for flagged victims.",
        );
        for ((wait, result), n) in &self.unstick {
            let _ = writeln!(
                s,
                "oomtrace_unstick_total{{wait=\"{}\",result=\"{}\"}} {n}",
                escape(wait),
                escape(result)
            );
        }
    }

    /// Appends the resource gauges (victims held, kernel-tracked processes) and lost events.
    fn write_resources(&self, s: &mut String, summary: &Summary) {
        scalar(
            s,
            "oomtrace_victims_held",
            "gauge",
            "Victims the tracker holds in memory now (bounded).",
            self.victims_held,
        );
        scalar(
            s,
            "oomtrace_memcgs_named",
            "gauge",
            "Entries oomtrace holds per memcg id now: paths (live, removed, of creations) and per-memcg state (bounded: a removed memcg's go a minute after its removal).",
            self.memcgs_named,
        );
        if let Some(n) = self.kernel_tracked {
            scalar(
                s,
                "oomtrace_kernel_tracked_processes",
                "gauge",
                "Processes the in-kernel filter (the TRACKED map) follows now: killed and not yet released.",
                n,
            );
        }
        scalar(
            s,
            "oomtrace_lost_events_total",
            "counter",
            "Events lost because the ring buffer was full.",
            summary.lost_events,
        );
    }

    /// Appends the kill→dead histogram: its buckets, sum and count.
    fn write_kill_to_dead(&self, s: &mut String) {
        header(
            s,
            "oomtrace_kill_to_dead_seconds",
            "histogram",
            "Time from the kill until the victim finished exiting.",
        );
        for (le, n) in BUCKETS.iter().zip(self.bucket_counts) {
            let _ = writeln!(s, "oomtrace_kill_to_dead_seconds_bucket{{le=\"{le}\"}} {n}");
        }
        let _ = writeln!(
            s,
            "oomtrace_kill_to_dead_seconds_bucket{{le=\"+Inf\"}} {}",
            self.dead_count
        );
        let _ = writeln!(s, "oomtrace_kill_to_dead_seconds_sum {}", self.dead_sum_s);
        let _ = writeln!(s, "oomtrace_kill_to_dead_seconds_count {}", self.dead_count);
    }

    /// Appends one gauge per planned hook: 1 if it attached, with the attach type used.
    fn write_hooks(&self, s: &mut String) {
        header(
            s,
            "oomtrace_hook_attached",
            "gauge",
            "1 if the hook attached, with the attach type used (none: not observable here).",
        );
        for (hook, attach) in &self.hooks {
            let v = u8::from(attach != "none");
            let _ = writeln!(
                s,
                "oomtrace_hook_attached{{hook=\"{hook}\",attach=\"{attach}\"}} {v}"
            );
        }
    }
}

/// Appends the `# HELP` and `# TYPE` lines of family `name`.
fn header(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Appends family `name` with one sample per label set of `map`.
fn labelled(s: &mut String, name: &str, kind: &str, help: &str, map: &BTreeMap<String, i64>) {
    header(s, name, kind, help);
    for (l, n) in map {
        let _ = writeln!(s, "{name}{{{l}}} {n}");
    }
}

/// Appends family `name` with its one unlabelled sample `v`.
fn scalar(s: &mut String, name: &str, kind: &str, help: &str, v: u64) {
    header(s, name, kind, help);
    let _ = writeln!(s, "{name} {v}");
}

/// Parses `--metrics ADDR`: a bare port or `:PORT` binds to loopback.
pub fn parse_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    let s = s.trim();
    let port = s.strip_prefix(':').unwrap_or(s);
    if let Ok(p) = port.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], p)));
    }
    s.parse()
        .map_err(|e| format!("`{s}` is not an address (PORT, :PORT or IP:PORT): {e}"))
}

/// Scrapes answered at once, at most.
const MAX_SCRAPES: usize = 64;
/// How long accepting pauses after an accept error.
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The `--metrics` endpoint: a listener whose scrapes are each answered on their own task.
/// Accepting pauses after an error (EMFILE: retrying at once would spin a core until clients
/// leave) and connections beyond [`MAX_SCRAPES`] at once are closed unanswered, so that
/// scrapers can never take the descriptors that victims' pidfds and /proc reads need.
pub(crate) struct Endpoint {
    listener: tokio::net::TcpListener,
    /// Scrapes being answered now.
    open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    paused_until: Option<tokio::time::Instant>,
}

impl Endpoint {
    pub(crate) async fn bind(addr: std::net::SocketAddr) -> std::io::Result<Endpoint> {
        Ok(Endpoint {
            listener: tokio::net::TcpListener::bind(addr).await?,
            open: Default::default(),
            paused_until: None,
        })
    }

    /// The address bound (the port the kernel chose for `:0`).
    pub(crate) fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The next connection; never, without an endpoint.
    pub(crate) async fn next(
        endpoint: Option<&Endpoint>,
    ) -> std::io::Result<tokio::net::TcpStream> {
        let Some(e) = endpoint else {
            return std::future::pending().await;
        };
        if let Some(t) = e.paused_until {
            tokio::time::sleep_until(t).await;
        }
        e.listener.accept().await.map(|(stream, _)| stream)
    }

    /// Answers a connection with `body()` (built only when the scrape is answered), or, after
    /// an accept error, pauses accepting.
    pub(crate) fn answer(
        &mut self,
        conn: std::io::Result<tokio::net::TcpStream>,
        body: impl FnOnce() -> String,
    ) {
        use std::sync::atomic::Ordering;
        self.paused_until = None;
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                eprintln!("oomtrace: metrics endpoint: accept failed ({e}); pausing 100 ms");
                self.paused_until = Some(tokio::time::Instant::now() + ACCEPT_PAUSE);
                return;
            }
        };
        if self.open.load(Ordering::Relaxed) >= MAX_SCRAPES {
            return;
        }
        let body = body();
        self.open.fetch_add(1, Ordering::Relaxed);
        let open = std::sync::Arc::clone(&self.open);
        tokio::spawn(async move {
            respond(stream, body).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Answers one scrape: the request is read to the end of its headers (for at most 2 s and
/// 2 KiB: a slow client cannot hold a connection open), then `body` is sent and the
/// connection closed. Answering after the first segment of a request that came in several
/// closed the socket with request bytes unread: the kernel then resets the connection, and
/// the client, still writing, got EPIPE instead of the answer.
async fn respond(mut stream: tokio::net::TcpStream, body: String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut req = [0u8; 2048];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let mut got = 0;
        while got < req.len() {
            match stream.read(&mut req[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
            if req[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let resp = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.write_all(resp.as_bytes()),
    )
    .await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request that arrives in several segments is read to the end of its headers before the
    /// answer: answering after the first closed the socket with bytes unread, and the client,
    /// still writing, was reset (EPIPE) instead of answered.
    #[test]
    fn a_request_in_segments_is_answered() {
        use std::io::{Read as _, Write as _};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            for part in [&b"GET /met"[..], b"rics HTTP/1.0\r\n", b"Host: x\r\n\r\n"] {
                s.write_all(part)
                    .expect("the server took the whole request");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let mut out = String::new();
            s.read_to_string(&mut out).expect("the answer, not a reset");
            out
        });
        rt.block_on(async {
            let (stream, _) = listener.accept().await.unwrap();
            respond(stream, "oomtrace_up 1\n".into()).await;
        });
        let got = client.join().unwrap();
        assert!(got.starts_with("HTTP/1.0 200 OK"), "{got}");
        assert!(got.ends_with("oomtrace_up 1\n"), "{got}");
    }

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(parse_addr("9101").unwrap().to_string(), "127.0.0.1:9101");
        assert_eq!(parse_addr(":9101").unwrap().to_string(), "127.0.0.1:9101");
        assert_eq!(
            parse_addr("0.0.0.0:9101").unwrap().to_string(),
            "0.0.0.0:9101"
        );
        assert!(parse_addr("localhost").is_err());
    }

    #[test]
    fn exposition_is_well_formed() {
        let mut m = Metrics::default();
        for i in 0..(MAX_MEMCG_LABELS + 5) {
            bump(&mut m.kills, victim_labels(&format!("/cg{i}")));
        }
        bump(&mut m.kills, victim_labels("/we\"ird"));
        let text = m.render(&Summary::default());
        assert!(
            text.contains(&format!("oomtrace_kills_total{{{OTHER}}} 6")),
            "label cap"
        );
        assert!(
            text.contains(
                "oomtrace_kills_total{memcg=\"/cg0\",kind=\"cgroup\",workload=\"/cg0\",container=\"\"} 1"
            ),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').expect("name value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(name.starts_with("oomtrace_"), "{line}");
        }
        assert!(text.contains("oomtrace_kill_to_dead_seconds_bucket{le=\"+Inf\"} 0"));
    }

    /// The whole exposition of a small Metrics that sets every family (an entry at 0 kept, a
    /// label escaped, both optional families present), pinned byte for byte.
    #[test]
    fn exposition_is_pinned() {
        let mut m = Metrics {
            hooks: vec![
                ("mark_victim".into(), "fentry".into()),
                ("oom_invoke".into(), "none".into()),
            ],
            kill_path_observable: true,
            kernel_tracked: Some(3),
            victims_held: 2,
            memcgs_named: 5,
            released: 4,
            ..Metrics::default()
        };
        bump(&mut m.invocations, victim_labels("/a"));
        bump(&mut m.kills, victim_labels("/a"));
        bump(&mut m.kills, victim_labels("/a"));
        bump(&mut m.kills, victim_labels("/b\"q"));
        bump(&mut m.stuck_now, victim_labels("/a"));
        add(&mut m.stuck_now, victim_labels("/a"), -1);
        bump(&mut m.stuck_total, victim_labels("/a"));
        bump(&mut m.livelock_by, victim_labels("/a"));
        let user = || format!("{},sender_kind=\"user\"", victim_labels("/a"));
        bump(&mut m.other_kills, user());
        bump(&mut m.kill_stuck_now, user());
        add(&mut m.kill_stuck_now, user(), -1);
        bump(&mut m.kill_stuck_total, user());
        m.flagged = 1;
        m.dead = 3;
        m.livelocks = 1;
        m.dead_count = 2;
        m.dead_sum_s = 1.25;
        m.bucket_counts = [0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2];
        m.unstick("fuse", "applied");
        m.unstick("ptrace", "re\"fused");
        m.unstick("fuse", "applied");
        let summary = Summary {
            stuck_now: 0,
            not_released_now: 1,
            lost_events: 7,
            ..Summary::default()
        };
        // The page, byte for byte (a change of what scrapers read shows as a diff of it).
        let expected = include_str!("../../testdata/metrics-exposition.prom");
        assert_eq!(m.render(&summary), expected);
    }
}
