use std::{
    collections::BTreeSet, io::Write as _, path::PathBuf, process::ExitCode, time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use oomtrace::{
    host::{forensics, scan},
    kernel::{
        plan::{self, AttachType},
        probes::{LoadOptions, Probes},
    },
    lifecycle::{DEFAULT_TIMEOUT_NS, Observability, PRE_EXISTING_GRACE_NS},
    live::{self, EXIT_STUCK, LiveOptions},
    record::dump,
    report::{self, ReplayOptions},
    session::{Filter, Live},
    text::printable,
};
use serde_json::json;

mod cli;
use cli::{CheckArgs, Cli, Command, ReportArgs, UnstickArgs, WatchArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check(args)) => check(&args),
        Some(Command::Watch(args)) => watch(&args, None),
        Some(Command::Record {
            output,
            force,
            compress,
            watch: args,
        }) => oomtrace::record::outfile::resolve(&output, force)
            .with_context(|| format!("preparing the dump {}", output.display()))
            .and_then(|output| watch(&args, Some((output, compress)))),
        Some(Command::Report(args)) => report(&args),
        Some(Command::Unstick(args)) => unstick(&args),
        Some(Command::SynthDump { output, events }) => synth_dump(&output, events),
        Some(Command::Generate { what }) => generate(&what),
        None => watch(&WatchArgs::default(), None),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`oomtrace check | head`): nothing to say, and no one to say it
        // to; the shell's convention for a process ended by SIGPIPE.
        Err(e) if broken_pipe(&e) => ExitCode::from(141),
        Err(e) => {
            eprintln!("oomtrace: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn load(
    forbid: &[AttachType],
    trace_all_exits: bool,
    ring_bytes: Option<u32>,
) -> anyhow::Result<Probes> {
    if let Some(b) = ring_bytes {
        anyhow::ensure!(
            b.is_power_of_two() && b >= 4096,
            "--ring-bytes must be a power of 2 of at least 4096, not {b}"
        );
    }
    Probes::load(&LoadOptions {
        forbid: forbid.iter().copied().collect::<BTreeSet<_>>(),
        trace_all_exits,
        ring_bytes,
    })
}

/// Exit code of `check` when processes killed before it started have not finished exiting.
const EXIT_PRE_EXISTING: u8 = 4;

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
        let CheckReport {
            probes,
            death,
            kill_path,
            stuck,
            oom_now,
            oom_now_tasks,
            oom_killer_disabled,
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
                "KILLED, NOT DEAD   pid {} ({}): SIGKILL pending since before oomtrace started, \
             not finished exiting {} ms later; memcg {}",
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

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
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
    let written = match args.json {
        true => report.json(&mut out),
        false => report.text(&mut out),
    };
    written
        .and_then(|()| out.flush())
        .context("writing the report to stdout")?;
    Ok(report.exit_code())
}

/// The longest duration any option takes: a century (as ns it fits in u64 with room for
/// every sum the tracker makes).
const MAX_SECONDS: f64 = 100.0 * 365.25 * 86_400.0;

fn seconds_ns(s: f64, what: &str) -> anyhow::Result<u64> {
    anyhow::ensure!(
        s.is_finite() && (0.0..=MAX_SECONDS).contains(&s),
        "{what} must be a number of seconds from 0 to {MAX_SECONDS:.0} (a century), not {s}"
    );
    Ok((s * 1e9) as u64)
}

fn watch(args: &WatchArgs, record: Option<(PathBuf, bool)>) -> anyhow::Result<ExitCode> {
    if let Some(p) = &args.on_stuck {
        oomtrace::hooks::check_executable(p).map_err(|e| {
            anyhow::anyhow!(
                "--on-stuck {e} (give the path of a program; it gets the details in OOMTRACE_* \
                 environment variables)"
            )
        })?;
    }
    let opts = LiveOptions {
        json: args.json,
        duration: args
            .duration
            .map(|s| seconds_ns(s, "--duration").map(Duration::from_nanos))
            .transpose()?,
        timeout_ns: seconds_ns(args.timeout, "--timeout")?,
        release_timeout_ns: seconds_ns(args.release_timeout, "--release-timeout")?,
        compress: record.as_ref().is_some_and(|r| r.1),
        record: record.map(|r| r.0),
        metrics: args.metrics,
        on_stuck: args.on_stuck.clone(),
        hook_timeout: Duration::from_nanos(seconds_ns(args.hook_timeout, "--hook-timeout")?),
        unstick: args.unstick,
        unstick_policy: oomtrace::host::unstick::Policy {
            allow_foreign_owner: args.allow_foreign_owner,
            allow_parent_tracer: args.allow_parent_tracer,
        },
        unstick_pre_existing: args.unstick_pre_existing,
        filter: Filter {
            memcg: args.memcg.clone(),
            pid: args.pid,
        },
        quiet_events: args.findings_only,
        bpf_stats: args.bpf_stats,
    };
    let mut probes = load(&args.forbid, args.trace_all_exits, args.ring_bytes)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(live::run(&mut probes, &opts))?;
    Ok(if args.fail_on_stuck && outcome.flagged > 0 {
        ExitCode::from(EXIT_STUCK)
    } else {
        ExitCode::SUCCESS
    })
}

fn report(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let mut reader = dump::Reader::open(&args.file)
        .with_context(|| format!("opening the dump {}", args.file.display()))?;
    let opts = ReplayOptions {
        timeout_ns: args
            .timeout
            .map(|s| seconds_ns(s, "--timeout"))
            .transpose()?,
        release_timeout_ns: args
            .release_timeout
            .map(|s| seconds_ns(s, "--release-timeout"))
            .transpose()?,
        json: args.json,
        events: args.events,
        timeline: args.perfetto.is_some(),
    };
    let stdout = std::io::stdout();
    let replay = report::replay(&mut reader, &opts, std::io::BufWriter::new(stdout.lock()))?;
    if let Some(path) = &args.perfetto {
        let timeout = opts
            .timeout_ns
            .or_else(|| replay.header.as_ref()?.options.timeout_ns)
            .unwrap_or(DEFAULT_TIMEOUT_NS);
        report::write_perfetto(&replay, timeout, path)?;
        eprintln!(
            "timeline written to {} (open it in ui.perfetto.dev)",
            path.display()
        );
    }
    let unreadable = replay.problems.iter().any(|p| {
        matches!(
            p,
            dump::DumpProblem::BadMagic | dump::DumpProblem::Version(_)
        )
    });
    Ok(if unreadable {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// `unstick PID` of a task asleep in a cgroup v1 memcg hung with the OOM killer disabled (not
/// an OOM victim: nothing was killed): re-enable the killer of the hang's domain, then put it
/// back (see `host::memcg_hang`). None when the process is in no such hang.
fn unstick_oom_killer_off(
    args: &UnstickArgs,
    fx: &forensics::Forensics,
    memcg_root: Option<&std::path::Path>,
    wait: Duration,
) -> Option<anyhow::Result<ExitCode>> {
    use oomtrace::host::memcg_hang;
    let hang = memcg_hang::hang_of(memcg_root?, &fx.memcg.as_ref()?.path)?;
    let (command, risk) = memcg_hang::remedy_text(&hang);
    let refused = match (hang.owner, fx.uid) {
        (Some(0), _) => None,
        (Some(o), Some(u)) if o == u => None,
        _ if args.allow_foreign_owner => None,
        (o, u) => Some(format!(
            "memcg {} is owned by uid {} and pid {} runs as uid {}: refused              (--allow-foreign-owner to act on it anyway)",
            hang.domain,
            o.map_or("?".into(), |o| o.to_string()),
            args.pid,
            u.map_or("?".into(), |u| u.to_string())
        )),
    };
    let applied = (args.apply && refused.is_none()).then(|| memcg_hang::apply(&hang, wait));
    let waits_on = format!(
        "the OOM killer of memcg {}, which is disabled (oom_kill_disable 1) while the memcg is          at its limit (under_oom 1): pid {} ({}) sleeps until memory is freed",
        hang.domain,
        args.pid,
        fx.state.as_deref().unwrap_or("?")
    );
    if args.json {
        println!(
            "{}",
            json!({"pid": args.pid, "oom_victim": serde_json::Value::Null, "oom_killer_disabled": hang,
                   "waits_on": {"kind": "oom_killer_disabled", "text": waits_on},
                   "remedy": {"command": command, "risk": risk}, "refused": refused,
                   "applied": applied.as_ref().map(|(did, ended)| json!({"did": did, "ok": *ended})),
                   "forensics": fx})
        );
    } else {
        println!("pid {} ({})", args.pid, fx.state.as_deref().unwrap_or("?"));
        println!("OOM victim:  no: nothing was killed; the OOM killer is disabled");
        println!("waits on:    {}", printable(&waits_on));
        println!("remedy:      {}", printable(&command));
        println!("risk:        {risk}");
        if let Some(why) = &refused {
            println!("REFUSED:     {}", printable(why));
        }
        for d in applied.iter().flat_map(|(did, _)| did) {
            println!("applied:     {}", printable(d));
        }
    }
    Some(Ok(match (&refused, &applied) {
        (Some(_), _) => ExitCode::from(EXIT_UNSTICK_REFUSED),
        (None, Some((_, false))) => ExitCode::from(EXIT_UNSTICK_NOT_DEAD),
        _ => ExitCode::SUCCESS,
    }))
}

/// `unstick PID` of a task (not an OOM victim) in an OOM domain that keeps invoking the OOM
/// killer and kills nothing — nothing killable, or a livelock on a stuck victim: raise the
/// limit of the domain (the memcg whose limit was hit, maybe an ancestor of the task's own;
/// v1 memsw by as much), journaled and put back once the task is dead (see
/// `host::oom_domain`). None when the kernel does not say the task's domain is in OOM now.
fn unstick_oom_domain(
    args: &UnstickArgs,
    fx: &forensics::Forensics,
    memcg_root: Option<&std::path::Path>,
    v2: bool,
    journal: Option<&mut oomtrace::host::journal::Journal>,
    restored: &[String],
    wait: Duration,
) -> Option<anyhow::Result<ExitCode>> {
    use oomtrace::host::{oom_domain, unstick};
    let root = memcg_root?;
    let domain = oom_domain::domain_of(root, &fx.memcg.as_ref()?.path, v2)?;
    let said = oom_domain::in_oom_now(&domain, v2, Duration::from_millis(500)).ok()?;
    let mut remedy = unstick::raise_remedy(&domain.path, domain.limit_bytes, root, v2)?;
    let action = remedy.action.clone()?;
    let extra = unstick::margin(domain.limit_bytes) >> 20;
    remedy.risk = format!(
        "memcg {} (the OOM domain{}) may use {extra} MiB more{}; whatever keeps charging there          gets it, and an insatiable one (a leak) fills it and is back in OOM. The old limit          ({} bytes) is journaled on disk and put back once pid {} is dead (by the next          `oomtrace unstick` or `watch --unstick`)",
        domain.path,
        if domain.memsw_hit {
            ", its memory+swap limit hit"
        } else {
            ""
        },
        if domain.memsw_hit || !v2 {
            " (memory.memsw.limit_in_bytes raised by as much where it would be hit)"
        } else {
            ""
        },
        domain.limit_bytes,
        args.pid
    );
    let proc_root = std::path::Path::new("/proc");
    let fusectl = std::path::Path::new(unstick::FUSECTL);
    let policy = unstick::Policy {
        allow_foreign_owner: args.allow_foreign_owner,
        allow_parent_tracer: args.allow_parent_tracer,
    };
    let plan = unstick::vet(&action, fx, proc_root, fusectl, policy);
    let refused = plan.as_ref().err().cloned();
    let mut after = None;
    let applied = match (&plan, args.apply) {
        (Ok(plan), true) => {
            let a = unstick::act(plan, proc_root, fusectl, journal, &mut || {});
            if a.ok {
                // The kernel's word again, after the raise.
                after = Some(
                    match oomtrace::host::oom_domain::in_oom_now(
                        &domain,
                        v2,
                        wait.min(Duration::from_secs(1)),
                    ) {
                        Ok(still) => Err(format!("still in OOM after the raise: {still}")),
                        Err(out) => Ok(format!("out of OOM after the raise: {out}")),
                    },
                );
            }
            Some(a)
        }
        _ => None,
    };
    let waits_on = format!(
        "memcg {}, at its limit ({} of {} bytes): {said}",
        domain.path, domain.usage_bytes, domain.limit_bytes
    );
    let failed = applied.as_ref().is_some_and(|a| !a.ok);
    if args.json {
        println!(
            "{}",
            json!({"pid": args.pid, "oom_victim": serde_json::Value::Null, "oom_domain": domain,
                   "waits_on": {"kind": "oom_domain", "text": waits_on},
                   "remedy": remedy, "refused": refused, "applied": applied,
                   "after": after.as_ref().map(|r| match r { Ok(t) | Err(t) => t }),
                   "out_of_oom": after.as_ref().map(Result::is_ok),
                   "restored": restored, "forensics": fx})
        );
    } else {
        println!("pid {} ({})", args.pid, fx.state.as_deref().unwrap_or("?"));
        println!("OOM victim:  no: its OOM domain keeps invoking the OOM killer, killing nothing");
        println!("waits on:    {}", printable(&waits_on));
        println!("remedy:      {}", printable(&remedy.command));
        println!("risk:        {}", printable(&remedy.risk));
        if let Some(why) = &refused {
            println!("REFUSED:     {}", printable(why));
        }
        for d in applied.iter().flat_map(|a| &a.did) {
            println!("applied:     {}", printable(d));
        }
        if let Some(Ok(t) | Err(t)) = &after {
            println!("result:      {}", printable(t));
        }
        if applied.is_none() && refused.is_none() {
            println!("(not applied: run again with --apply to take this remedy)");
        }
        for r in restored {
            println!("restored:    {}", printable(r));
        }
    }
    Some(Ok(match (&refused, &after) {
        (Some(_), _) => ExitCode::from(EXIT_UNSTICK_REFUSED),
        _ if failed => ExitCode::from(EXIT_UNSTICK_FAILED),
        (None, Some(Err(_))) => ExitCode::from(EXIT_UNSTICK_NOT_DEAD),
        _ => ExitCode::SUCCESS,
    }))
}

/// Exit codes of `unstick`: 0 dead (or, without --apply, a remedy is known); 5 refused (not
/// an OOM victim, no known remedy, or the remedy would touch what the victim does not own);
/// 6 applied but still not dead after --wait; 7 applying failed.
const EXIT_UNSTICK_REFUSED: u8 = 5;
const EXIT_UNSTICK_NOT_DEAD: u8 = 6;
const EXIT_UNSTICK_FAILED: u8 = 7;

fn unstick(args: &UnstickArgs) -> anyhow::Result<ExitCode> {
    use oomtrace::host::{journal, unstick};
    let wait = Duration::from_nanos(seconds_ns(args.wait, "--wait")?);
    let proc_root = std::path::Path::new("/proc");
    let fusectl = std::path::Path::new(unstick::FUSECTL);
    let controller = oomtrace::kernel::cgroups::memory_controller();
    let memcg_root = controller.as_ref().map(|c| c.mount.clone());
    // Limits an earlier run raised for victims that died meanwhile go back first.
    let mut restored: Vec<String> = Vec::new();
    let mut journal = match journal::Journal::open(&journal::state_dir()) {
        Ok((mut j, said)) => {
            restored.extend(said);
            restored.extend(j.check_dead(proc_root).into_iter().map(|(_, r)| r));
            Some(j)
        }
        Err(e) => {
            restored.push(format!("no journal ({e}): no memcg limit will be raised"));
            None
        }
    };
    let fx = forensics::collect(proc_root, args.pid, memcg_root.as_deref(), &[]);
    if let Some(code) = unstick_oom_killer_off(args, &fx, memcg_root.as_deref(), wait) {
        return code;
    }
    let evidence = unstick::oom_victim_evidence(
        proc_root,
        args.pid,
        &unstick::read_kmsg(),
        args.assume_oom_victim,
    );
    let v2 = controller.as_ref().is_some_and(|c| c.version == 2);
    if evidence.is_err()
        && let Some(code) = unstick_oom_domain(
            args,
            &fx,
            memcg_root.as_deref(),
            v2,
            journal.as_mut(),
            &restored,
            wait,
        )
    {
        return code;
    }
    // FUSE connections are listed by fusectl: mounted for the look (and the abort) if needed,
    // unmounted again at the end.
    let mounted_fusectl = unstick::ensure_fusectl();
    let mut conns = unstick::fuse_connections_for(proc_root, &fx, &[], fusectl);
    if conns.is_empty()
        && let Some(c) = args.fuse_connection
    {
        conns.push(c);
    }
    let wait_on = unstick::diagnose(&fx, &conns);
    let remedy = if args.raise_memcg_limit {
        // The OOM domain's limit (the memcg whose limit was hit, maybe an ancestor of the
        // victim's own) where one is at its limit, else the victim's own memcg's.
        fx.memcg
            .as_ref()
            .zip(memcg_root.as_deref())
            .and_then(
                |(m, root)| match oomtrace::host::oom_domain::domain_of(root, &m.path, v2) {
                    Some(d) => unstick::raise_remedy(&d.path, d.limit_bytes, root, v2),
                    None => unstick::raise_remedy(&m.path, m.limit_bytes?, root, v2),
                },
            )
    } else {
        unstick::remedy(&wait_on, memcg_root.as_deref(), v2)
    };
    let policy = unstick::Policy {
        allow_foreign_owner: args.allow_foreign_owner,
        allow_parent_tracer: args.allow_parent_tracer,
    };
    let mut applied = None;
    let mut dead = None;
    let plan = match (&evidence, remedy.as_ref().and_then(|r| r.action.clone())) {
        (Err(e), _) => Err(e.clone()),
        (Ok(_), None) => Err(format!(
            "no remedy oomtrace can take for: {wait_on} — look at the forensics below"
        )),
        (Ok(_), Some(action)) => unstick::vet(&action, &fx, proc_root, fusectl, policy),
    };
    let refused = plan.as_ref().err().cloned();
    if args.apply
        && let Ok(plan) = &plan
    {
        let a = unstick::act(plan, proc_root, fusectl, journal.as_mut(), &mut || {});
        if a.ok {
            let gone = unstick::wait_gone(args.pid, wait);
            dead = Some(gone);
            if a.raised {
                match (&mut journal, gone) {
                    (Some(j), true) => restored.extend(
                        j.victim_dead(args.pid, plan.victim.1)
                            .into_iter()
                            .map(|(_, r)| r),
                    ),
                    (Some(j), false) => restored.push(format!(
                        "left raised: pid {} is not dead; journaled in {}, put back by the next \
                         `oomtrace unstick` or `watch --unstick` once it is",
                        args.pid,
                        j.path().display()
                    )),
                    (None, _) => {}
                }
            }
        }
        if a.unmount_fusectl {
            unstick::unmount_fusectl();
        }
        applied = Some(a);
    }
    if mounted_fusectl {
        unstick::unmount_fusectl();
    }
    let failed = applied.as_ref().is_some_and(|a| !a.ok);
    if args.json {
        println!(
            "{}",
            json!({"pid": args.pid, "oom_victim": evidence.as_ref().ok(),
                   "evidence": match &evidence { Ok(e) | Err(e) => e },
                   "refused": refused, "waits_on": wait_on, "remedy": remedy,
                   "applied": applied, "dead": dead, "restored": restored, "forensics": fx})
        );
    } else {
        println!("pid {} ({})", args.pid, fx.state.as_deref().unwrap_or("?"));
        match &evidence {
            Ok(why) => println!("OOM victim:  {why}"),
            Err(why) => println!("OOM victim:  NO: {why}"),
        }
        println!("waits on:    {wait_on}");
        if let Some(r) = &remedy {
            println!("remedy:      {}", r.command);
            println!("risk:        {}", r.risk);
        }
        if let Some(why) = &refused {
            println!("REFUSED:     {why}");
        }
        if let Some(a) = &applied {
            for d in &a.did {
                println!("applied:     {d}");
            }
            if !a.ok {
                println!("result:      FAILED (see above)");
            }
        }
        match dead {
            Some(true) => println!("result:      DEAD (finished exiting)"),
            Some(false) => println!("result:      STILL NOT DEAD after {} s", wait.as_secs_f64()),
            None if !args.apply && refused.is_none() => {
                println!("(not applied: run again with --apply to take this remedy)")
            }
            None => {}
        }
        for r in &restored {
            println!("restored:    {r}");
        }
        print!("{fx}");
    }
    Ok(match (refused, dead) {
        (Some(_), _) => ExitCode::from(EXIT_UNSTICK_REFUSED),
        _ if failed => ExitCode::from(EXIT_UNSTICK_FAILED),
        (None, Some(false)) => ExitCode::from(EXIT_UNSTICK_NOT_DEAD),
        _ => ExitCode::SUCCESS,
    })
}

fn generate(what: &str) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory as _;
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    if what == "man" {
        clap_mangen::Man::new(cmd).render(&mut out)?;
    } else {
        let shell: clap_complete::Shell = what.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        clap_complete::generate(shell, &mut cmd, "oomtrace", &mut out);
    }
    Ok(ExitCode::SUCCESS)
}

fn synth_dump(path: &std::path::Path, events: u64) -> anyhow::Result<ExitCode> {
    const THREADS: u32 = 4;
    let episodes =
        (events as f64 / oomtrace::record::synth::events_per_episode(THREADS)).ceil() as u64;
    let header = json!({"version": env!("CARGO_PKG_VERSION"), "hostname": "synthetic",
                        "kernel": "synthetic", "options": {"timeout_ns": DEFAULT_TIMEOUT_NS},
                        "clock": {"realtime_offset_ns": 0}});
    let mut w = dump::Writer::create(path, false, &header)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut n = 0u64;
    let mut last = 0;
    for ev in oomtrace::record::synth::episodes(episodes, THREADS) {
        w.event(&ev.encode())?;
        last = ev.header.ts_ns;
        n += 1;
    }
    w.finish(last)?;
    eprintln!("{n} events written to {}", path.display());
    Ok(ExitCode::SUCCESS)
}
