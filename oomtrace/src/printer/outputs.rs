//! What a command says besides the session's events and findings, one type per kind of output
//! (a [`super::Printer`] method each): `watch`'s banner, `check`'s report, `unstick`'s result.
//! Facts only: how each is written is the printer's (text.rs, json.rs).

use std::{net::SocketAddr, path::Path, time::Duration};

use serde_json::Value;

use crate::{
    host::{
        forensics::Forensics,
        memcg_hang::Hang,
        oom_domain::OomDomain,
        scan,
        unstick::{Applied, Remedy, Wait},
    },
    kernel::probes::Probes,
    lifecycle::MemcgTask,
};

/// `watch`'s first words: the plan line (JSON), or the version, kernel, plan and caveats.
pub(crate) struct Banner<'a> {
    /// The plan line (`watch --json`'s first).
    pub(crate) plan_line: &'a Value,
    pub(crate) probes: &'a Probes,
    pub(crate) timeout_ns: u64,
    /// Whether death can be observed (pidfds), or why not.
    pub(crate) death: &'a Result<(), String>,
    /// Which source counts OOM invocations: `hook`, `memcg_notifications_v1`/`_v2`, `none`.
    pub(crate) invocations_source: &'static str,
    /// Whether the memcg notifications watch anything.
    pub(crate) watching: bool,
    /// How many memcgs the notifications watch, set up in `memcgs_start_ms`.
    pub(crate) memcgs: usize,
    pub(crate) memcgs_start_ms: f64,
    pub(crate) memcg_problems: &'a [String],
    /// Why the notifications could not be set up.
    pub(crate) memcg_error: Option<&'a str>,
    /// Where the metrics are served.
    pub(crate) metrics: Option<SocketAddr>,
    /// Where the dump is written.
    pub(crate) record: Option<&'a Path>,
}

/// A memcg hung with the OOM killer disabled, with its tasks as /proc shows them.
pub(crate) type HungNow = (String, Vec<MemcgTask>);

/// A process killed before `check` ran and still not dead, with what /proc says of it.
pub(crate) type StuckNow = (scan::Candidate, Forensics);

/// What `check` found: the environment and plan, and the trouble on the host right now.
pub struct CheckReport {
    pub probes: Probes,
    pub death: Result<(), String>,
    pub kill_path: bool,
    pub stuck: Vec<StuckNow>,
    pub oom_now: Vec<scan::OomNow>,
    /// For each of `oom_now` that killed nothing: its tasks and why each is not eligible.
    pub oom_now_tasks: Vec<Vec<MemcgTask>>,
    pub oom_killer_disabled: Vec<HungNow>,
}

/// What `unstick PID` found and did.
pub enum Unstick<'a> {
    /// An OOM victim (the kernel log's "Killed process", or `--assume-oom-victim`), or a
    /// process that is neither that nor in one of the hangs below.
    Victim(UnstickVictim<'a>),
    /// A task asleep in a cgroup v1 memcg hung with the OOM killer disabled.
    OomKillerOff(UnstickOomKillerOff<'a>),
    /// A task in an OOM domain that keeps invoking the OOM killer and kills nothing.
    OomDomain(UnstickOomDomain<'a>),
}

/// `unstick PID` of an OOM victim.
pub struct UnstickVictim<'a> {
    pub pid: u32,
    /// Whether `--apply` was given.
    pub apply: bool,
    pub fx: &'a Forensics,
    /// Why it is an OOM victim (`Ok`) or why not (`Err`).
    pub evidence: &'a Result<String, String>,
    pub wait_on: &'a Wait,
    pub remedy: Option<&'a Remedy>,
    pub refused: Option<&'a str>,
    pub applied: Option<&'a Applied>,
    /// Whether it died within `wait` of the remedy.
    pub dead: Option<bool>,
    pub wait: Duration,
    pub restored: &'a [String],
}

/// `unstick PID` of a task in a memcg hung with the OOM killer disabled.
pub struct UnstickOomKillerOff<'a> {
    pub pid: u32,
    pub fx: &'a Forensics,
    pub hang: &'a Hang,
    pub waits_on: &'a str,
    pub command: &'a str,
    pub risk: &'a str,
    pub refused: Option<&'a str>,
    /// What was done, and whether the task then died.
    pub applied: Option<&'a (Vec<String>, bool)>,
}

/// `unstick PID` of a task in an OOM domain that kills nothing.
pub struct UnstickOomDomain<'a> {
    pub pid: u32,
    pub fx: &'a Forensics,
    pub domain: &'a OomDomain,
    pub waits_on: &'a str,
    pub remedy: &'a Remedy,
    pub refused: Option<&'a str>,
    pub applied: Option<&'a Applied>,
    /// The kernel's word after the raise: still in OOM (`Err`) or out of it (`Ok`).
    pub after: Option<&'a Result<String, String>>,
    pub restored: &'a [String],
}
