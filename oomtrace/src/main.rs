use std::{collections::BTreeSet, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use oomtrace::{
    kernel::{
        plan::AttachType,
        probes::{LoadOptions, Probes},
    },
    lifecycle::DEFAULT_TIMEOUT_NS,
    live::{self, EXIT_STUCK, LiveOptions},
    record::dump,
    report::{self, ReplayOptions},
    session::Filter,
};
use serde_json::json;

mod cli;
mod cmd;
use cli::{Cli, Command, ReportArgs, WatchArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check(args)) => cmd::check::check(&args),
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
        Some(Command::Unstick(args)) => cmd::unstick::unstick(&args),
        Some(Command::SynthDump {
            output,
            events,
            as_watch,
        }) => synth_dump(&output, events, as_watch),
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

pub(crate) fn load(
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

/// The longest duration any option takes: a century (as ns it fits in u64 with room for
/// every sum the tracker makes).
const MAX_SECONDS: f64 = 100.0 * 365.25 * 86_400.0;

pub(crate) fn seconds_ns(s: f64, what: &str) -> anyhow::Result<u64> {
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
        format: args.output.format(),
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
        loop_stats: args.loop_stats,
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
        format: args.output.format(),
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

fn synth_dump(path: &std::path::Path, events: u64, as_watch: bool) -> anyhow::Result<ExitCode> {
    use oomtrace::record::synth::{WatchRecord, as_watch as watch_records, episodes};
    const THREADS: u32 = 4;
    let episodes_n =
        (events as f64 / oomtrace::record::synth::events_per_episode(THREADS)).ceil() as u64;
    let mut header = json!({"version": env!("CARGO_PKG_VERSION"), "hostname": "synthetic",
                        "kernel": "synthetic", "options": {"timeout_ns": DEFAULT_TIMEOUT_NS},
                        "clock": {"realtime_offset_ns": 0}});
    if as_watch {
        // Format 2 on: death is when the thread group finished exiting, seen on a pidfd.
        header["death"] = json!({"pidfd": true});
    }
    let mut w = dump::Writer::create(path, false, &header)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut n = 0u64;
    let mut last = 0;
    if as_watch {
        for r in watch_records(episodes_n, THREADS) {
            match r {
                WatchRecord::Event(ev) => {
                    w.event(&ev.encode())?;
                    last = ev.header.ts_ns;
                    n += 1;
                }
                WatchRecord::Drained(t) => w.drained(t)?,
            }
        }
    } else {
        for ev in episodes(episodes_n, THREADS) {
            w.event(&ev.encode())?;
            last = ev.header.ts_ns;
            n += 1;
        }
    }
    w.finish(last)?;
    eprintln!("{n} events written to {}", path.display());
    Ok(ExitCode::SUCCESS)
}
