//! What `watch` says and records before it watches: the plan line (JSON) or banner (text),
//! the dump's header, the privileges it keeps, and what the memcg notifications cover.

use super::*;

/// The plan line (`watch --json`'s first): the plan, the environment, the options, and what
/// privileges were kept.
pub(super) fn plan_line(
    probes: &Probes,
    opts: &LiveOptions,
    death: &Result<(), String>,
    privileges: Value,
    metrics_addr: Option<SocketAddr>,
    memcgs: &WatchInfo,
) -> Value {
    let mut line = json!({
        "type": "plan", "schema": events::JSON_SCHEMA, "version": env!("CARGO_PKG_VERSION"),
        "environment": probes.env, "plan": probes.plan,
        "attach_ms": probes.attach_time.as_secs_f64() * 1e3,
        "timeout_s": opts.timeout_ns as f64 / 1e9,
        "release_timeout_s": opts.release_timeout_ns as f64 / 1e9,
        "death": death_of(death),
        "privileges": privileges,
        "invocations_source": memcgs.invocations_source(probes),
        "memcg_notifications": memcgs.json(),
        "gfp_names": probes.gfp_names.source,
    });
    if let Some(a) = metrics_addr {
        line["metrics_addr"] = a.to_string().into();
    }
    line
}

/// The dump's header: who records, where, with what plan and options.
pub(super) fn dump_header(
    probes: &Probes,
    opts: &LiveOptions,
    page_kb: u64,
    clock: &Clock,
    death: &Result<(), String>,
) -> dump::Header {
    dump::Header {
        format: Some(dump::FORMAT_VERSION),
        version: env!("CARGO_PKG_VERSION").into(),
        hostname: hostname(),
        kernel: probes.env.kernel.clone(),
        boot_id: Some(boot_id()),
        plan: Some(json!(probes.plan)),
        environment: Some(json!(probes.env)),
        page_kb: Some(page_kb),
        options: dump::HeaderOptions {
            timeout_ns: Some(opts.timeout_ns),
            release_timeout_ns: Some(opts.release_timeout_ns),
        },
        death: Some(death_of(death)),
        gfp_names: Some(probes.gfp_names.clone()),
        clock: dump::HeaderClock {
            realtime_offset_ns: i64::try_from(clock.realtime_offset_ns).unwrap_or(0),
            monotonic_ns_at_start: Some(monotonic_now()),
        },
    }
}

/// Drops every capability `watch` no longer needs (see `kernel::privs`); says what is kept, or
/// why nothing could be dropped. --unstick keeps what its remedies need
/// ([`crate::kernel::privs::UNSTICK`]): CAP_KILL to signal a tracer or parent of the victim's
/// uid, CAP_DAC_OVERRIDE to abort a FUSE connection of the victim's uid.
pub(super) fn drop_privileges(unstick: bool) -> Value {
    let extra: &[u32] = if unstick {
        &crate::kernel::privs::UNSTICK
    } else {
        &[]
    };
    match crate::kernel::privs::drop_to_kept(extra) {
        Ok(()) => {
            let mut kept = vec![
                "CAP_SYS_ADMIN",
                "CAP_BPF",
                "CAP_SYS_PTRACE",
                "CAP_DAC_READ_SEARCH",
            ];
            if unstick {
                kept.extend(["CAP_KILL", "CAP_DAC_OVERRIDE"]);
            }
            json!({"dropped": true, "kept": kept, "no_new_privs": true})
        }
        Err(e) => {
            eprintln!(
                "oomtrace: warning: could not drop privileges after attaching ({e}); running on \
                 with all of them"
            );
            json!({"dropped": false, "error": e.to_string()})
        }
    }
}

/// What the memcg notification watcher ([`memcg_watch`]) covers, for the plan line and banner.
#[derive(Default)]
pub(super) struct WatchInfo {
    pub(super) version: Option<memcg_watch::Version>,
    pub(super) memcgs: usize,
    pub(super) start_ms: f64,
    pub(super) problems: Vec<String>,
    pub(super) error: Option<String>,
}

impl WatchInfo {
    pub(super) fn watching(&self) -> bool {
        self.version.is_some() && self.memcgs > 0
    }

    /// Which source counts OOM invocations per domain: the hook, else the notifications.
    pub(super) fn invocations_source(&self, probes: &Probes) -> &'static str {
        match (
            Observability::of_plan(&probes.plan, true).livelock(),
            self.version,
        ) {
            (true, _) => "hook",
            (false, Some(memcg_watch::Version::V2)) if self.watching() => "memcg_notifications_v2",
            (false, Some(memcg_watch::Version::V1)) if self.watching() => "memcg_notifications_v1",
            _ => "none",
        }
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "cgroup": self.version, "memcgs": self.memcgs, "start_ms": self.start_ms,
            "problems": self.problems, "error": self.error,
        })
    }
}

/// The first thing said: the plan line (JSON), or the version, kernel, plan and caveats.
pub(super) fn banner<'a>(
    plan_line: &'a Value,
    probes: &'a Probes,
    opts: &'a LiveOptions,
    death: &'a Result<(), String>,
    metrics_addr: Option<SocketAddr>,
    memcgs: &'a WatchInfo,
) -> printer::Banner<'a> {
    printer::Banner {
        plan_line,
        probes,
        timeout_ns: opts.timeout_ns,
        death,
        invocations_source: memcgs.invocations_source(probes),
        watching: memcgs.watching(),
        memcgs: memcgs.memcgs,
        memcgs_start_ms: memcgs.start_ms,
        memcg_problems: &memcgs.problems,
        memcg_error: memcgs.error.as_deref(),
        metrics: metrics_addr.or(opts.metrics),
        record: opts.record.as_deref(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "unknown".into(), |s| s.trim().into())
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map_or_else(|_| "unknown".into(), |s| s.trim().into())
}

fn death_of(death: &Result<(), String>) -> dump::Death {
    dump::Death {
        pidfd: death.is_ok(),
        error: death.as_ref().err().cloned(),
    }
}
