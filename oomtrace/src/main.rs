use std::{
    collections::BTreeSet, io::Write as _, path::PathBuf, process::ExitCode, time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use oomtrace::{
    host::{forensics, scan},
    kernel::{
        plan::{self, AttachType, Hook},
        probes::{LoadOptions, Probes},
    },
    lifecycle::{DEFAULT_RELEASE_TIMEOUT_NS, DEFAULT_TIMEOUT_NS, PRE_EXISTING_GRACE_NS},
    live::{self, EXIT_STUCK, LiveOptions},
    record::dump,
    render::{events::printable, metrics},
    report::{self, ReplayOptions},
    session::{Filter, Live},
};
use serde_json::json;

const EXAMPLES: &str = "\
EXAMPLES:
    sudo oomtrace                          # watch: the attach plan, then OOM events and findings
    sudo oomtrace check                    # what can attach on this kernel, and why not
    sudo oomtrace watch --json             # JSON Lines (schema: docs/json.md)
    sudo oomtrace record -o oom.dump       # watch and record a dump for a bug report
    oomtrace report oom.dump --timeout 2   # replay it elsewhere, re-judged with a 2 s timeout
    oomtrace report oom.dump --perfetto oom.json   # a timeline for ui.perfetto.dev
    sudo oomtrace watch --metrics 9101 --on-stuck /usr/local/bin/page-oncall \\
        --duration 3600 --fail-on-stuck    # canary: Prometheus, a hook, an exit code

EXIT CODES:
    0  ok
    1  check: the kill path cannot be observed on this kernel
    2  error (not root, BPF unavailable, bad arguments, unreadable dump)
    3  watch/record --fail-on-stuck: at least one victim was flagged stuck
    4  check: the host is in trouble now: processes killed before oomtrace started have not
       finished exiting, or a memcg keeps invoking the OOM killer without killing";

/// Watch the Linux OOM killer with eBPF: every memory-cgroup OOM, the kill decision, the
/// victim's signal, the oom_reaper, and the victim's exit and release — and flag victims that
/// are not dead within a timeout, with where they are stuck.
/// `oomtrace --version`: the release and the git revision it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("OOMTRACE_GIT_REVISION"),
    ")"
);

#[derive(Parser)]
#[command(version = VERSION, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check this host: root, BTF, tracefs, the memory cgroup controller, and what each hook
    /// attaches as here (or exactly why not), and processes killed before it started that have
    /// not finished exiting. Exits 0 if the kill path can be observed, 4 if such processes exist.
    Check(CheckArgs),
    /// Attach and report OOM events and findings as they happen (the default command).
    Watch(WatchArgs),
    /// Watch and record every event to a dump file (for bug reports; replay with `report`).
    Record {
        /// The dump file to write, created new (0600: it names processes); an existing file is
        /// never written over. A directory: a fresh name in it (oomtrace-<UTC>-<pid>.dump), for
        /// services that restart.
        #[arg(short, long, value_name = "FILE|DIR")]
        output: PathBuf,
        /// Replace an existing file at --output (a link is removed, never followed).
        #[arg(long)]
        force: bool,
        /// Compress the dump (gzip).
        #[arg(long)]
        compress: bool,
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// Replay a dump through the same tracker: the same findings, summary and histograms.
    Report(ReportArgs),
    /// Say what a stuck OOM victim waits on and the way out that costs less than a reboot;
    /// with --apply, take it, follow the victim until it is dead, and put back what was changed.
    /// Refuses a process that is not an OOM victim, and a diagnosis it does not know.
    Unstick(UnstickArgs),
    /// Write the man page (`man`) or a shell's completions (`bash`, `zsh`, `fish`) to stdout
    /// (`cargo xtask dist` packs them).
    #[command(hide = true)]
    Generate {
        #[arg(value_parser = ["man", "bash", "zsh", "fish", "elvish", "powershell"])]
        what: String,
    },
    /// Write a synthetic dump of normal OOM episodes (benchmarks).
    #[command(hide = true)]
    SynthDump {
        #[arg(short, long)]
        output: PathBuf,
        /// About this many events.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
    },
}

#[derive(Args, Default)]
struct CheckArgs {
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Attach types not to use, comma-separated (fentry,fexit,kprobe,kretprobe,tp_btf,raw_tp,tracepoint).
    #[arg(long, value_delimiter = ',', value_parser = parse_attach)]
    forbid: Vec<AttachType>,
}

#[derive(Args)]
struct WatchArgs {
    /// JSON Lines on stdout instead of text (schema: docs/json.md).
    #[arg(long)]
    json: bool,
    /// Print findings only (kills, deaths, stuck victims…), not every kernel event.
    #[arg(long)]
    findings_only: bool,
    /// Attach types not to use, comma-separated (fentry,fexit,kprobe,kretprobe,tp_btf,raw_tp,tracepoint).
    #[arg(long, value_delimiter = ',', value_parser = parse_attach)]
    forbid: Vec<AttachType>,
    /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Flag a victim not dead this many seconds after its kill (default 5: the oom_reaper
    /// wakes at +2 s and gives up by ~+3.1 s; past that the kernel does nothing more for it).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT_NS as f64 / 1e9)]
    timeout: f64,
    /// Report a dead victim whose zombie its parent has not reaped after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_RELEASE_TIMEOUT_NS as f64 / 1e9)]
    release_timeout: f64,
    /// Serve Prometheus metrics at ADDR (PORT or :PORT bind to 127.0.0.1; IP:PORT as given).
    #[arg(long, value_name = "ADDR", value_parser = metrics::parse_addr)]
    metrics: Option<std::net::SocketAddr>,
    /// Run this executable once per flagged victim, with the details in OOMTRACE_* environment
    /// variables (no shell, no arguments: see docs/canary.md).
    #[arg(long, value_name = "PATH")]
    on_stuck: Option<PathBuf>,
    /// Kill an --on-stuck hook (its whole process group) still running after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = oomtrace::hooks::DEFAULT_TIMEOUT.as_secs_f64())]
    hook_timeout: f64,
    /// Take the remedy `oomtrace unstick --apply` would for every victim flagged stuck (abort
    /// its FUSE connection, raise its memcg's limit, end its tracer, signal its parent) whose
    /// OOM kill oomtrace saw, on what the victim owns only (see docs/unstick.md). Off by
    /// default; each action is printed (UNSTICK …) and counted in the metrics.
    #[arg(long)]
    unstick: bool,
    /// With --unstick: act on a tracer, parent, FUSE connection or memcg of another uid than
    /// the victim's too. RISK: a user's victim can then steer root to signal any process or
    /// abort a filesystem other users rely on.
    #[arg(long, requires = "unstick")]
    allow_foreign_owner: bool,
    /// With --unstick: end a tracer that is the victim's real parent too. RISK: any process
    /// makes its parent its tracer with PTRACE_TRACEME (a supervisor, a shell, su, init).
    #[arg(long, requires = "unstick")]
    allow_parent_tracer: bool,
    /// With --unstick: take remedies for victims found SIGKILLed by the start-up scan too,
    /// whose kill oomtrace did not see. RISK: a user's own kill -9 is taken for an OOM kill.
    #[arg(long, requires = "unstick")]
    unstick_pre_existing: bool,
    /// Exit with code 3 if any victim was flagged stuck (canary gate; use with --duration).
    #[arg(long)]
    fail_on_stuck: bool,
    /// Report only victims in this memcg (a path as in /proc/PID/cgroup) or below it.
    #[arg(long, value_name = "PATH")]
    memcg: Option<String>,
    /// Report only this process.
    #[arg(long)]
    pid: Option<u32>,
    /// Report every process exit on the host, not only victims' (debugging, benchmarks).
    #[arg(long, hide = true)]
    trace_all_exits: bool,
    /// Print the kernel's per-program run counts and times at exit (benchmarks).
    #[arg(long, hide = true)]
    bpf_stats: bool,
    /// The ring buffer's size in bytes (a power of 2, at least a page): tests that overflow it.
    #[arg(long, hide = true, value_name = "BYTES")]
    ring_bytes: Option<u32>,
}

impl Default for WatchArgs {
    fn default() -> Self {
        WatchArgs::parse_from_default()
    }
}

impl WatchArgs {
    fn parse_from_default() -> Self {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            w: WatchArgs,
        }
        Wrap::parse_from(["oomtrace"]).w
    }
}

#[derive(Args)]
struct UnstickArgs {
    /// The victim's process id.
    pid: u32,
    /// Carry out the remedy (default: only say it).
    #[arg(long)]
    apply: bool,
    /// How long to follow the victim after applying, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    wait: f64,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Act on a tracer, parent, FUSE connection or memcg of another uid than the victim's too.
    /// RISK: the victim's owner can then steer root to signal any process or abort a
    /// filesystem other users rely on.
    #[arg(long)]
    allow_foreign_owner: bool,
    /// End a tracer that is the victim's real parent too. RISK: any process makes its parent
    /// its tracer with PTRACE_TRACEME (a supervisor, a shell, su, init).
    #[arg(long)]
    allow_parent_tracer: bool,
    /// Take the process for an OOM victim though the kernel's log names no OOM kill of it
    /// (the log rotated). RISK: a user's own kill -9 is taken for an OOM kill.
    #[arg(long)]
    assume_oom_victim: bool,
    /// Raise its memcg's limit (journaled, put back once it is dead) whatever it waits on.
    #[arg(long)]
    raise_memcg_limit: bool,
    /// The FUSE connection (its id under /sys/fs/fuse/connections) the victim waits on, when
    /// its blocked thread names no file any more (a FLUSH held inside exit): still checked to
    /// be the victim's uid's.
    #[arg(long, value_name = "ID")]
    fuse_connection: Option<u32>,
}

#[derive(Args)]
struct ReportArgs {
    /// The dump to replay.
    file: PathBuf,
    /// Re-judge with this timeout (seconds) instead of the recorded one.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Re-judge zombie release with this timeout (seconds).
    #[arg(long, value_name = "SECONDS")]
    release_timeout: Option<f64>,
    /// JSON Lines instead of text.
    #[arg(long)]
    json: bool,
    /// Print every recorded event too, not only findings.
    #[arg(long)]
    events: bool,
    /// Also write a timeline (Chrome trace-event JSON; open it in ui.perfetto.dev).
    #[arg(long, value_name = "OUT.json")]
    perfetto: Option<PathBuf>,
}

fn parse_attach(s: &str) -> Result<AttachType, String> {
    AttachType::parse(s).ok_or_else(|| {
        let all: Vec<_> = AttachType::ALL.iter().map(|a| a.name()).collect();
        format!("unknown attach type `{s}` (one of {})", all.join(", "))
    })
}

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
}

fn trouble_now(memcg_root: Option<&std::path::Path>) -> Trouble {
    let proc_root = std::path::Path::new("/proc");
    let me = std::process::id();
    let memcgs = || memcg_root.map(scan::memcg_oom_states).unwrap_or_default();
    let first = scan::scan(proc_root, memcg_root, me);
    let before = memcgs();
    std::thread::sleep(Duration::from_nanos(PRE_EXISTING_GRACE_NS));
    let oom_now = scan::oom_now(&before, &memcgs());
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
    Trouble { stuck, oom_now }
}

/// A process killed before `check` ran and still not dead, with what /proc says of it.
type StuckNow = (scan::Candidate, forensics::Forensics);

/// What `check` found: the environment and plan, and the trouble on the host right now.
struct CheckReport {
    probes: Probes,
    death: Result<(), String>,
    kill_path: bool,
    stuck: Vec<StuckNow>,
    oom_now: Vec<scan::OomNow>,
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
                "oom_now": self.oom_now.iter().map(|m| json!({
                    "memcg_path": m.path, "invocations": m.invocations, "kills": m.kills,
                    "window_s": PRE_EXISTING_GRACE_NS as f64 / 1e9,
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
        for m in oom_now {
            let what = match m.invocations {
                Some(n) => format!(
                    "the OOM killer was invoked {n} times in {} ms and killed {}",
                    PRE_EXISTING_GRACE_NS / 1_000_000,
                    m.kills
                ),
                None => "under OOM (v1 under_oom) in two readings".into(),
            };
            let livelock = if m.kills == 0 && m.invocations.is_some() {
                ": it finds nothing it may kill (a victim still pending, or only unkillable \
             processes) — a livelock"
            } else {
                ""
            };
            writeln!(
                out,
                "OOM NOW            memcg {}: {what}{livelock}",
                printable(&m.path)
            )?;
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
        if !self.stuck.is_empty() || self.oom_now.iter().any(|m| m.kills == 0) {
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
    let kill_path = [Hook::MarkVictim, Hook::TaskExit]
        .iter()
        .all(|h| probes.hook(*h).attached());
    let report = CheckReport {
        probes,
        death: oomtrace::host::deathwatch::available(),
        kill_path,
        stuck,
        oom_now: trouble.oom_now,
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
    let evidence = unstick::oom_victim_evidence(
        proc_root,
        args.pid,
        &unstick::read_kmsg(),
        args.assume_oom_victim,
    );
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
    let v2 = controller.as_ref().is_some_and(|c| c.version == 2);
    let remedy = if args.raise_memcg_limit {
        fx.memcg
            .as_ref()
            .zip(memcg_root.as_deref())
            .and_then(|(m, root)| unstick::raise_remedy(&m.path, m.limit_bytes?, root, v2))
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
