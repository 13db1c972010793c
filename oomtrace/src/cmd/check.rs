//! `oomtrace check`: what can attach here and why not, and what is wrong with the host now.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use oomtrace::{
    host::scan,
    lifecycle::{Observability, PRE_EXISTING_GRACE_NS},
    printer::{self, Answer, CheckReport},
    session::Live,
};

use crate::{cli::CheckArgs, load};

/// Exit code of `check` when processes killed before it started have not finished exiting.
pub(crate) const EXIT_PRE_EXISTING: u8 = 4;

/// What `check` finds wrong with the host right now.
struct Trouble {
    /// Processes with SIGKILL pending that have not finished exiting, seen twice
    /// `PRE_EXISTING_GRACE_NS` apart (a process that is merely dying is gone by then).
    stuck: Vec<scan::Candidate>,
    /// Memcgs whose OOM counters moved in that interval.
    oom_now: Vec<scan::OomNow>,
    /// v1 memcgs hung with the OOM killer disabled in both readings.
    oom_killer_disabled: Vec<String>,
}

fn trouble_now(memcg_root: Option<&std::path::Path>) -> Trouble {
    let proc_root = std::path::Path::new("/proc");
    let me = std::process::id();
    let memcgs = || memcg_root.map(scan::memcg_oom_states).unwrap_or_default();
    let first = scan::scan(proc_root, memcg_root, me);
    let before = memcgs();
    std::thread::sleep(Duration::from_nanos(PRE_EXISTING_GRACE_NS));
    let after = memcgs();
    let oom_now = scan::oom_now(&before, &after);
    let oom_killer_disabled = scan::oom_killer_disabled(&before, &after);
    let stuck = if first.is_empty() {
        first
    } else {
        scan::scan(proc_root, memcg_root, me)
            .into_iter()
            .filter(|c| {
                first
                    .iter()
                    .any(|f| f.pid == c.pid && f.start_ns == c.start_ns)
            })
            .collect()
    };
    Trouble {
        stuck,
        oom_now,
        oom_killer_disabled,
    }
}

/// 4 when the host is in trouble now, 1 when the kill path cannot be observed, else 0.
fn exit_code(r: &CheckReport) -> ExitCode {
    if !r.stuck.is_empty()
        || !r.oom_killer_disabled.is_empty()
        || r.oom_now.iter().any(|m| m.kills == 0)
    {
        ExitCode::from(EXIT_PRE_EXISTING)
    } else if r.kill_path {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub(crate) fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let probes = load(&args.forbid, false, None)?;
    let memcg_root = probes
        .env
        .memory_controller
        .as_ref()
        .map(|m| m.mount.clone());
    let live = Live::new("/proc".into(), memcg_root.clone());
    let trouble = trouble_now(memcg_root.as_deref());
    let stuck = trouble
        .stuck
        .into_iter()
        .map(|c| {
            let fx = live.forensics(c.pid, c.start_ns);
            (c, fx)
        })
        .collect();
    let death = oomtrace::host::deathwatch::available();
    let oom_killer_disabled = trouble
        .oom_killer_disabled
        .into_iter()
        .map(|path| {
            let tasks = memcg_root.as_deref().map_or_else(Vec::new, |root| {
                oomtrace::host::memcg_watch::memcg_tasks(
                    root,
                    &path,
                    std::path::Path::new("/proc"),
                    64,
                )
            });
            (path, tasks)
        })
        .collect();
    let oom_now_tasks = trouble
        .oom_now
        .iter()
        .map(|m| match memcg_root.as_deref() {
            Some(root) if m.kills == 0 && m.invocations.is_some() => {
                oomtrace::host::memcg_watch::memcg_tasks(
                    root,
                    &m.path,
                    std::path::Path::new("/proc"),
                    64,
                )
            }
            _ => Vec::new(),
        })
        .collect();
    let report = CheckReport {
        kill_path: Observability::of_plan(&probes.plan, death.is_ok()).kill_path(),
        probes,
        death,
        stuck,
        oom_now: trouble.oom_now,
        oom_now_tasks,
        oom_killer_disabled,
    };
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    printer::answer(args.output.format(), out, &Answer::Check(&report))
        .context("writing the report to stdout")?;
    Ok(exit_code(&report))
}
