//! The command line: every subcommand and option, with its help text. `main.rs` dispatches.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use oomtrace::{
    kernel::plan::AttachType,
    lifecycle::{DEFAULT_RELEASE_TIMEOUT_NS, DEFAULT_TIMEOUT_NS},
    printer::Format,
    render::metrics,
};

pub(crate) const EXAMPLES: &str = "\
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
pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("OOMTRACE_GIT_REVISION"),
    ")"
);

#[derive(Parser)]
#[command(version = VERSION, after_help = EXAMPLES)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// Refuses a process that is not an OOM victim, and a diagnosis it does not know — except
    /// a task of an OOM domain the kernel says is in OOM killing nothing (the killer disabled,
    /// nothing killable, a livelock): then the domain's killer or limit (journaled, put back).
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
        /// As `watch --dump` writes it (format 3: in time order, deaths seen through pidfds,
        /// a mark of each full read of the ring), instead of format 1's episode by episode.
        #[arg(long)]
        as_watch: bool,
    },
}

#[derive(Args, Default)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub(crate) output: Output,
    /// Attach types not to use, comma-separated (fentry,fexit,kprobe,kretprobe,tp_btf,raw_tp,tracepoint).
    #[arg(long, value_delimiter = ',', value_parser = parse_attach)]
    pub(crate) forbid: Vec<AttachType>,
}

#[derive(Args)]
pub(crate) struct WatchArgs {
    #[command(flatten)]
    pub(crate) output: Output,
    /// Print findings only (kills, deaths, stuck victims…), not every kernel event.
    #[arg(long)]
    pub(crate) findings_only: bool,
    /// Attach types not to use, comma-separated (fentry,fexit,kprobe,kretprobe,tp_btf,raw_tp,tracepoint).
    #[arg(long, value_delimiter = ',', value_parser = parse_attach)]
    pub(crate) forbid: Vec<AttachType>,
    /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECONDS")]
    pub(crate) duration: Option<f64>,
    /// Flag a victim not dead this many seconds after its kill (default 5: the oom_reaper
    /// wakes at +2 s and gives up by ~+3.1 s; past that the kernel does nothing more for it).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT_NS as f64 / 1e9)]
    pub(crate) timeout: f64,
    /// Report a dead victim whose zombie its parent has not reaped after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_RELEASE_TIMEOUT_NS as f64 / 1e9)]
    pub(crate) release_timeout: f64,
    /// Serve Prometheus metrics at ADDR (PORT or :PORT bind to 127.0.0.1; IP:PORT as given).
    #[arg(long, value_name = "ADDR", value_parser = metrics::parse_addr)]
    pub(crate) metrics: Option<std::net::SocketAddr>,
    /// Run this executable once per flagged victim, with the details in OOMTRACE_* environment
    /// variables (no shell, no arguments: see docs/canary.md).
    #[arg(long, value_name = "PATH")]
    pub(crate) on_stuck: Option<PathBuf>,
    /// Kill an --on-stuck hook (its whole process group) still running after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = oomtrace::hooks::DEFAULT_TIMEOUT.as_secs_f64())]
    pub(crate) hook_timeout: f64,
    /// Take the remedy `oomtrace unstick --apply` would for every victim flagged stuck (abort
    /// its FUSE connection, raise its memcg's limit, end its tracer, signal its parent) whose
    /// OOM kill oomtrace saw, on what the victim owns only (see docs/unstick.md). Off by
    /// default; each action is printed (UNSTICK …) and counted in the metrics.
    #[arg(long)]
    pub(crate) unstick: bool,
    /// With --unstick: act on a tracer, parent, FUSE connection or memcg of another uid than
    /// the victim's too. RISK: a user's victim can then steer root to signal any process or
    /// abort a filesystem other users rely on.
    #[arg(long, requires = "unstick")]
    pub(crate) allow_foreign_owner: bool,
    /// With --unstick: end a tracer that is the victim's real parent too. RISK: any process
    /// makes its parent its tracer with PTRACE_TRACEME (a supervisor, a shell, su, init).
    #[arg(long, requires = "unstick")]
    pub(crate) allow_parent_tracer: bool,
    /// With --unstick: take remedies for victims found SIGKILLed by the start-up scan too,
    /// whose kill oomtrace did not see. RISK: a user's own kill -9 is taken for an OOM kill.
    #[arg(long, requires = "unstick")]
    pub(crate) unstick_pre_existing: bool,
    /// Exit with code 3 if any victim was flagged stuck (canary gate; use with --duration).
    #[arg(long)]
    pub(crate) fail_on_stuck: bool,
    /// Report only victims in this memcg (a path as in /proc/PID/cgroup) or below it.
    #[arg(long, value_name = "PATH")]
    pub(crate) memcg: Option<String>,
    /// Report only this process.
    #[arg(long)]
    pub(crate) pid: Option<u32>,
    /// Report every process exit on the host, not only victims' (debugging, benchmarks).
    #[arg(long, hide = true)]
    pub(crate) trace_all_exits: bool,
    /// Print the kernel's per-program run counts and times at exit (benchmarks).
    #[arg(long, hide = true)]
    pub(crate) bpf_stats: bool,
    /// Print where the event loop's own CPU went at exit, per part of a wake-up (benchmarks).
    #[arg(long, hide = true)]
    pub(crate) loop_stats: bool,
    /// The ring buffer's size in bytes (a power of 2, at least a page): tests that overflow it.
    #[arg(long, hide = true, value_name = "BYTES")]
    pub(crate) ring_bytes: Option<u32>,
}

impl Default for WatchArgs {
    fn default() -> Self {
        WatchArgs::parse_from_default()
    }
}

impl WatchArgs {
    pub(crate) fn parse_from_default() -> Self {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            w: WatchArgs,
        }
        Wrap::parse_from(["oomtrace"]).w
    }
}

#[derive(Args)]
pub(crate) struct UnstickArgs {
    /// The victim's process id.
    pub(crate) pid: u32,
    /// Carry out the remedy (default: only say it).
    #[arg(long)]
    pub(crate) apply: bool,
    /// How long to follow the victim after applying, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub(crate) wait: f64,
    #[command(flatten)]
    pub(crate) output: Output,
    /// Act on a tracer, parent, FUSE connection or memcg of another uid than the victim's too.
    /// RISK: the victim's owner can then steer root to signal any process or abort a
    /// filesystem other users rely on.
    #[arg(long)]
    pub(crate) allow_foreign_owner: bool,
    /// End a tracer that is the victim's real parent too. RISK: any process makes its parent
    /// its tracer with PTRACE_TRACEME (a supervisor, a shell, su, init).
    #[arg(long)]
    pub(crate) allow_parent_tracer: bool,
    /// Take the process for an OOM victim though the kernel's log names no OOM kill of it
    /// (the log rotated). RISK: a user's own kill -9 is taken for an OOM kill.
    #[arg(long)]
    pub(crate) assume_oom_victim: bool,
    /// Raise its memcg's limit (journaled, put back once it is dead) whatever it waits on.
    #[arg(long)]
    pub(crate) raise_memcg_limit: bool,
    /// The FUSE connection (its id under /sys/fs/fuse/connections) the victim waits on, when
    /// its blocked thread names no file any more (a FLUSH held inside exit): still checked to
    /// be the victim's uid's.
    #[arg(long, value_name = "ID")]
    pub(crate) fuse_connection: Option<u32>,
}

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// The dump to replay.
    pub(crate) file: PathBuf,
    /// Re-judge with this timeout (seconds) instead of the recorded one.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) timeout: Option<f64>,
    /// Re-judge zombie release with this timeout (seconds).
    #[arg(long, value_name = "SECONDS")]
    pub(crate) release_timeout: Option<f64>,
    #[command(flatten)]
    pub(crate) output: Output,
    /// Print every recorded event too, not only findings.
    #[arg(long)]
    pub(crate) events: bool,
    /// Also write a timeline (Chrome trace-event JSON; open it in ui.perfetto.dev).
    #[arg(long, value_name = "OUT.json")]
    pub(crate) perfetto: Option<PathBuf>,
}

pub(crate) fn parse_attach(s: &str) -> Result<AttachType, String> {
    AttachType::parse(s).ok_or_else(|| {
        let all: Vec<_> = AttachType::ALL.iter().map(|a| a.name()).collect();
        format!("unknown attach type `{s}` (one of {})", all.join(", "))
    })
}

/// `--format text|json` (and `--json`, short for `--format json`), shared by every command.
#[derive(Args, Clone, Copy, Debug, Default)]
pub(crate) struct Output {
    /// What to print: `text` for people, `json` for machines (check and unstick: one JSON
    /// object; watch, record and report: JSON Lines, schema in docs/json.md).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Format::Text)]
    format: Format,
    /// Short for `--format json`.
    #[arg(long, conflicts_with = "format")]
    json: bool,
}

impl Output {
    pub(crate) fn format(self) -> Format {
        if self.json { Format::Json } else { self.format }
    }
}
