//! The one place that decides how each kind of line reads: [`Format::Text`] for people,
//! [`Format::Json`] for machines (JSON Lines, docs/json.md). A session, the live loop and the
//! replay say *what* happened; this file says how it is written, both formats side by side.
//! Every function returns whole lines, newline included; text is escaped where it carries
//! names the kernel or a process chose ([`printable`]).

use std::io::{self, Write};

use serde_json::{Value, json};

use crate::{
    clock::{rfc3339, time_of_day},
    event::Event,
    host::forensics::Forensics,
    kernel::cgroups::Memcg,
    lifecycle::{Finding, Summary},
    record::dump::Header,
    render::events::Renderer,
    text::printable,
    workload,
};

/// How a session writes (`--format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines for people.
    #[default]
    Text,
    /// JSON (Lines), for machines.
    Json,
}

impl Format {
    /// One kernel event, written straight to `out` (the per-event path: no line is built
    /// twice).
    pub(crate) fn event(
        self,
        r: &mut Renderer,
        ev: &Event,
        out: &mut impl Write,
    ) -> io::Result<()> {
        match self {
            Format::Json => writeln!(out, "{}", r.json(ev)),
            Format::Text => writeln!(out, "{}", printable(&r.text(ev))),
        }
    }

    /// Events lost to a full ring buffer: `new` since the last report, `total` in all.
    pub(crate) fn lost(self, new: u64, total: u64) -> String {
        match self {
            Format::Json => format!(
                "{}\n",
                json!({"type": "lost", "events": new, "total": total})
            ),
            Format::Text => format!(
                "WARNING: {new} events lost (ring buffer full; {total} in all): findings about \
                 victims killed since are unconfirmed\n"
            ),
        }
    }

    /// The closing counts.
    pub(crate) fn summary(self, s: &Summary) -> String {
        match self {
            Format::Json => format!("{}\n", json!({"type": "summary", "summary": s})),
            // Summary's Display ends its own line.
            Format::Text => format!("summary: {s}"),
        }
    }

    /// A memcg's OOM kills as the kernel counted them against oomtrace's.
    pub(crate) fn reconcile(self, memcg_path: &str, kernel: u64, mine: u64) -> String {
        match self {
            Format::Json => format!(
                "{}\n",
                json!({"type": "reconcile", "memcg_path": memcg_path, "kernel_oom_kills": kernel,
                       "oomtrace_kills": mine, "agree": kernel == mine})
            ),
            Format::Text => {
                let verdict = if kernel == mine {
                    "agree"
                } else {
                    "DIFFER (events lost, a kill before oomtrace attached, or a kill oomtrace \
                     cannot see on this kernel)"
                };
                format!(
                    "reconcile: memcg {}: the kernel counted {kernel} OOM kill(s) while oomtrace \
                     watched, oomtrace {mine}: {verdict}\n",
                    printable(memcg_path)
                )
            }
        }
    }

    /// What `--unstick` did for a victim.
    pub(crate) fn unstick(self, pid: u32, result: &str, detail: &str) -> String {
        match self {
            Format::Json => format!(
                "{}\n",
                json!({"type": "unstick", "pid": pid, "result": result, "detail": detail})
            ),
            Format::Text => format!("UNSTICK pid {pid} ({result}): {}\n", printable(detail)),
        }
    }

    /// A finding at wall time `wall_ns`, with its memcg (and so its workload; its path
    /// live or last seen, and whether it was removed) and, for a victim flagged live, what
    /// /proc says of it.
    pub(crate) fn finding(
        self,
        f: &Finding,
        wall_ns: i128,
        memcg: &Memcg,
        forensics: Option<&Forensics>,
    ) -> String {
        let memcg_path = memcg.path().map(str::to_string);
        match self {
            Format::Json => {
                let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut v {
                    m.insert("type".into(), "finding".into());
                    m.insert("time".into(), rfc3339(wall_ns).into());
                    m.insert(
                        "workload".into(),
                        memcg_path
                            .as_deref()
                            .map(|p| serde_json::to_value(workload::of_path(p)))
                            .and_then(Result::ok)
                            .unwrap_or(Value::Null),
                    );
                    m.insert("memcg_path".into(), memcg_path.into());
                    m.insert("memcg_removed".into(), memcg.removed().into());
                    if let Some(fx) = forensics {
                        m.insert(
                            "forensics".into(),
                            serde_json::to_value(fx).unwrap_or(Value::Null),
                        );
                    }
                }
                format!("{v}\n")
            }
            Format::Text => {
                let gone = if memcg.removed() { ", removed" } else { "" };
                let memcg = match (memcg_path, f.memcg_id()) {
                    (Some(p), _) => match workload::of_path(&p) {
                        workload::Workload::Cgroup { .. } => format!(" [memcg {p}{gone}]"),
                        w => format!(" [memcg {p}{gone}; {w}]"),
                    },
                    (None, Some(id)) if memcg.removed() => {
                        format!(" [memcg id {id}, removed before it was named]")
                    }
                    _ => String::new(),
                };
                let line = format!("{} {f}{memcg}", time_of_day(wall_ns));
                let mut s = format!("{}\n", printable(&line));
                if let Finding::Killed { victim } | Finding::Marked { victim } = f {
                    for why in victim.why_lines() {
                        s += &format!("    {}\n", printable(&why));
                    }
                }
                if let Some(fx) = forensics {
                    s += &fx.to_string();
                }
                s
            }
        }
    }

    /// What a replay says first: the dump's header (`raw` as recorded, for JSON), and whether
    /// death is judged the old way.
    pub(crate) fn replay_header(
        self,
        raw: Option<&Value>,
        header: Option<&Header>,
        timeout_ns: u64,
        death_at_last_exit: bool,
    ) -> String {
        match (self, header) {
            (Format::Json, _) => format!(
                "{}\n",
                json!({"type": "replay", "header": raw, "timeout_ns": timeout_ns})
            ),
            (Format::Text, None) => String::new(),
            (Format::Text, Some(h)) => {
                let mut s = format!(
                    "replaying a dump of oomtrace {} on {} (Linux {}), judged with a {:.2} s \
                     timeout\n",
                    printable(&h.version),
                    printable(&h.hostname),
                    printable(&h.kernel),
                    timeout_ns as f64 / 1e9
                );
                if death_at_last_exit {
                    s += "note: this dump predates dump format 2: it has no record of victims \
                          finishing their exit, so death is taken at the last thread entering \
                          exit, which calls a victim stuck inside do_exit (closing files, \
                          dropping its mm) dead\n";
                }
                s
            }
        }
    }

    /// Damage found while reading a dump (a `DumpProblem`, or records that do not decode).
    pub(crate) fn dump_problem(self, problem: &str) -> String {
        match self {
            Format::Json => format!("{}\n", json!({"type": "dump_problem", "problem": problem})),
            Format::Text => format!(
                "DUMP PROBLEM: {}; what could be read is shown\n",
                printable(problem)
            ),
        }
    }
}
