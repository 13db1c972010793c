//! `oomtrace check`: what can attach here and why not, and what is wrong with the host now.

use std::{io::Write as _, process::ExitCode, time::Duration};

use anyhow::Context as _;
use oomtrace::{
    host::{forensics, scan},
    kernel::{plan, probes::Probes},
    lifecycle::{Observability, PRE_EXISTING_GRACE_NS},
    printer::Format,
    session::Live,
    text::printable,
};
use serde_json::json;

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

/// A memcg hung with the OOM killer disabled, with its tasks as /proc shows them.
type HungNow = (String, Vec<oomtrace::lifecycle::MemcgTask>);

/// A process killed before `check` ran and still not dead, with what /proc says of it.
type StuckNow = (scan::Candidate, forensics::Forensics);

/// What `check` found: the environment and plan, and the trouble on the host right now.
struct CheckReport {
    probes: Probes,
    death: Result<(), String>,
    kill_path: bool,
    stuck: Vec<StuckNow>,
    oom_now: Vec<scan::OomNow>,
    /// For each of `oom_now` that killed nothing: its tasks and why each is not eligible.
    oom_now_tasks: Vec<Vec<oomtrace::lifecycle::MemcgTask>>,
    oom_killer_disabled: Vec<HungNow>,
}

impl CheckReport {
    fn json(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let (probes, death) = (&self.probes, &self.death);
        writeln!(
            out,
            "{}",
            json!({ "environment": probes.env, "plan": probes.plan, "kill_path_observable": self.kill_path,
                "attach_ms": probes.attach_time.as_secs_f64() * 1e3,
                "death": {"pidfd": death.is_ok(), "error": death.as_ref().err()},
                "pre_existing": self.stuck.iter().map(|(c, fx)| json!({
                    "pid": c.pid, "ppid": c.ppid, "comm": c.comm, "memcg_path": c.memcg_path,
                    "threads": c.threads, "flags": c.flags, "forensics": fx,
                    // /proc shows a pending SIGKILL, never who sent it.
                    "sender_kind": "unknown",
                })).collect::<Vec<_>>(),
                "oom_now": self.oom_now.iter().zip(&self.oom_now_tasks).map(|(m, tasks)| json!({
                    "memcg_path": m.path, "invocations": m.invocations, "kills": m.kills,
                    "window_s": PRE_EXISTING_GRACE_NS as f64 / 1e9,
                    "nothing_killable": m.kills == 0 && m.invocations.is_some_and(|n| n > 0),
                    "tasks": tasks,
                })).collect::<Vec<_>>(),
                "oom_killer_disabled": self.oom_killer_disabled.iter().map(|(p, tasks)| json!({
                    "memcg_path": p, "tasks": tasks,
                })).collect::<Vec<_>>() })
        )?;
        Ok(())
    }

    fn text(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        self.text_host(out)?;
        self.text_trouble(out)
    }

    /// What this host offers: kernel, BTF, tracefs, kprobes, pidfd, memory controller, hooks.
    fn text_host(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let CheckReport {
            probes,
            death,
            kill_path,
            ..
        } = self;
        let env = &probes.env;
        let ok = |r: &Result<(), String>| match r {
            Ok(()) => "yes".to_string(),
            Err(e) => format!("no: {e}"),
        };
        writeln!(out, "kernel             {}", env.kernel)?;
        writeln!(out, "root               yes")?;
        writeln!(out, "BTF                {}", ok(&env.btf))?;
        match &env.tracefs {
            Ok(root) if env.tracefs_mounted_by_us => {
                writeln!(
                    out,
                    "tracefs            {root} (was not mounted: oomtrace mounted it)"
                )?;
            }
            Ok(root) => writeln!(out, "tracefs            {root}")?,
            Err(e) => writeln!(out, "tracefs            no: {e}")?,
        }
        writeln!(out, "kprobes            {}", ok(&env.kprobes))?;
        writeln!(out, "death (pidfd)      {}", ok(death))?;
        match &env.memory_controller {
            Some(c) => writeln!(out, "memory controller  {c}")?,
            None => writeln!(
                out,
                "memory controller  none found (no memory cgroups: memcg OOMs cannot happen)"
            )?,
        }
        for m in &env.missing_offsets {
            writeln!(out, "offset missing     {m}")?;
        }
        writeln!(out, "hooks:")?;
        write!(out, "{}", plan::render(&probes.plan))?;
        if !kill_path {
            writeln!(
                out,
                "the kill path cannot be observed here: mark_victim or process exit did not attach"
            )?;
        }
        Ok(())
    }

    /// The trouble the host is in now: stuck processes, memcgs under OOM or with it disabled.
    fn text_trouble(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let CheckReport {
            stuck,
            oom_now,
            oom_now_tasks,
            oom_killer_disabled,
            ..
        } = self;
        if stuck.is_empty() {
            writeln!(
                out,
                "killed, not dead   none: no process with SIGKILL pending is stuck exiting"
            )?;
        }
        for (m, tasks) in oom_now.iter().zip(oom_now_tasks) {
            let what = match m.invocations {
                Some(n) => format!(
                    "the OOM killer was invoked {n} times in {} ms and killed {}",
                    PRE_EXISTING_GRACE_NS / 1_000_000,
                    m.kills
                ),
                None => "under OOM (v1 under_oom) in two readings".into(),
            };
            let mut line = format!("OOM NOW            memcg {}: {what}", m.path);
            if m.kills == 0 && m.invocations.is_some() {
                line += ": NOTHING KILLABLE (every task at oom_score_adj -1000, exiting, or a \
                         victim already reaped); tasks:";
                for t in tasks {
                    line += &format!(
                        " pid {} ({}) {};",
                        t.pid,
                        t.comm,
                        t.not_eligible.as_deref().unwrap_or("eligible")
                    );
                }
            }
            writeln!(out, "{}", printable(&line))?;
        }
        for (path, tasks) in oom_killer_disabled {
            let mut line = format!(
                "OOM KILLER OFF     memcg {path}: at its limit with oom_kill_disable 1 (the kernel \
                 says under_oom 1 in two readings): nothing will be killed; tasks that fault there \
                 sleep until memory is freed ({} task(s)):",
                tasks.len()
            );
            for t in tasks {
                line += &format!(" pid {} ({}) {}", t.pid, t.comm, t.state);
                if let Some(w) = &t.wchan {
                    line += &format!(" in {w}");
                }
                line += ";";
            }
            line += " `oomtrace unstick PID` of one of them offers a way out";
            writeln!(out, "{}", printable(&line))?;
        }
        for (c, fx) in stuck {
            writeln!(
                out,
                "KILLED, NOT DEAD   pid {} ({}): SIGKILL pending since before oomtrace started \
             (sender unknown: /proc does not say who sent it), not finished exiting {} ms later; \
             memcg {}",
                c.pid,
                printable(&c.comm),
                PRE_EXISTING_GRACE_NS / 1_000_000,
                printable(c.memcg_path.as_deref().unwrap_or("unknown"))
            )?;
            write!(out, "{fx}")?;
        }
        Ok(())
    }

    /// 4 when the host is in trouble now, 1 when the kill path cannot be observed, else 0.
    fn exit_code(&self) -> ExitCode {
        if !self.stuck.is_empty()
            || !self.oom_killer_disabled.is_empty()
            || self.oom_now.iter().any(|m| m.kills == 0)
        {
            ExitCode::from(EXIT_PRE_EXISTING)
        } else if self.kill_path {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
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
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = match args.output.format() {
        Format::Json => report.json(&mut out),
        Format::Text => report.text(&mut out),
    };
    written
        .and_then(|()| out.flush())
        .context("writing the report to stdout")?;
    Ok(report.exit_code())
}
