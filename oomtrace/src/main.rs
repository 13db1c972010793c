use std::{collections::BTreeSet, io::Write as _, time::Duration};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use clap::{Args, Parser, Subcommand};
use oomtrace::{
    cgroups::MemcgPaths,
    event::Event,
    output::{self, Clock, Renderer},
    plan::{self, AttachType, Hook},
    probes::{LoadOptions, Probes},
    session::{Live, Session, monotonic_now},
    tracker::{Observability, Tracker, TrackerConfig},
};
use serde_json::json;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

const EXAMPLES: &str = "\
EXAMPLES:
    sudo oomtrace                      # watch: the attach plan, then one line per OOM event
    sudo oomtrace watch --json         # the same as JSON Lines (schema: docs/json.md)
    sudo oomtrace check                # what can attach on this kernel, and why not
    sudo oomtrace watch --forbid fentry,fexit   # force the kprobe fallback";

/// Watch the Linux OOM killer with eBPF: every memory-cgroup OOM, the kill decision, the
/// victim's signal, the oom_reaper, and the victim's exit and release.
#[derive(Parser)]
#[command(version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check this host: root, BTF, tracefs, the memory cgroup controller, and what each hook
    /// attaches as here (or exactly why not). Exits 0 if the kill path can be observed.
    Check(CheckArgs),
    /// Attach and print OOM events as they happen (the default command).
    Watch(WatchArgs),
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
    /// Attach types not to use, comma-separated (fentry,fexit,kprobe,kretprobe,tp_btf,raw_tp,tracepoint).
    #[arg(long, value_delimiter = ',', value_parser = parse_attach)]
    forbid: Vec<AttachType>,
    /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Flag a victim not dead this many seconds after its kill (default 5: the oom_reaper
    /// wakes at +2 s and gives up by ~+3.1 s; past that the kernel does nothing more for it).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    timeout: f64,
    /// Report a dead victim whose zombie its parent has not reaped after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    release_timeout: f64,
    /// Report every process exit on the host, not only victims' (debugging, benchmarks).
    #[arg(long, hide = true)]
    trace_all_exits: bool,
}

impl Default for WatchArgs {
    fn default() -> Self {
        WatchArgs {
            json: false,
            forbid: Vec::new(),
            duration: None,
            timeout: 5.0,
            release_timeout: 10.0,
            trace_all_exits: false,
        }
    }
}

fn parse_attach(s: &str) -> Result<AttachType, String> {
    AttachType::parse(s).ok_or_else(|| {
        let all: Vec<_> = AttachType::ALL.iter().map(|a| a.name()).collect();
        format!("unknown attach type `{s}` (one of {})", all.join(", "))
    })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check(args)) => check(&args),
        Some(Command::Watch(args)) => watch(&args),
        None => watch(&WatchArgs::default()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("oomtrace: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn load(forbid: &[AttachType], trace_all_exits: bool) -> anyhow::Result<Probes> {
    Probes::load(&LoadOptions {
        forbid: forbid.iter().copied().collect::<BTreeSet<_>>(),
        trace_all_exits,
    })
}

fn check(args: &CheckArgs) -> anyhow::Result<std::process::ExitCode> {
    let probes = load(&args.forbid, false)?;
    let kill_path = [Hook::MarkVictim, Hook::TaskExit]
        .iter()
        .all(|h| probes.hook(*h).attached());
    if args.json {
        println!(
            "{}",
            json!({ "environment": probes.env, "plan": probes.plan, "kill_path_observable": kill_path })
        );
    } else {
        let env = &probes.env;
        let ok = |r: &Result<(), String>| match r {
            Ok(()) => "yes".to_string(),
            Err(e) => format!("no: {e}"),
        };
        println!("kernel             {}", env.kernel);
        println!("root               yes");
        println!("BTF                {}", ok(&env.btf));
        match &env.tracefs {
            Ok(root) if env.tracefs_mounted_by_us => {
                println!("tracefs            {root} (was not mounted: oomtrace mounted it)");
            }
            Ok(root) => println!("tracefs            {root}"),
            Err(e) => println!("tracefs            no: {e}"),
        }
        println!("kprobes            {}", ok(&env.kprobes));
        match &env.memory_controller {
            Some(c) => println!("memory controller  {c}"),
            None => println!(
                "memory controller  none found (no memory cgroups: memcg OOMs cannot happen)"
            ),
        }
        for m in &env.missing_offsets {
            println!("offset missing     {m}");
        }
        println!("hooks:");
        print!("{}", plan::render(&probes.plan));
        if !kill_path {
            println!(
                "the kill path cannot be observed here: mark_victim or process exit did not attach"
            );
        }
    }
    Ok(if kill_path {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

fn watch(args: &WatchArgs) -> anyhow::Result<std::process::ExitCode> {
    let mut probes = load(&args.forbid, args.trace_all_exits)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(watch_loop(&mut probes, args))?;
    Ok(std::process::ExitCode::SUCCESS)
}

fn observability(probes: &Probes) -> Observability {
    let on = |h| probes.hook(h).attached();
    Observability {
        oom_invoke: on(Hook::OomInvoke),
        oom_kill: on(Hook::OomKill),
        signal: on(Hook::KernelSigkill),
        mark_victim: on(Hook::MarkVictim),
        reaper: on(Hook::WakeReaper),
        exit: on(Hook::TaskExit),
        free: on(Hook::TaskFree),
    }
}

fn seconds_ns(s: f64, what: &str) -> anyhow::Result<u64> {
    anyhow::ensure!(
        s.is_finite() && s >= 0.0,
        "{what} must be a number of seconds ≥ 0, not {s}"
    );
    Ok((s * 1e9) as u64)
}

async fn watch_loop(probes: &mut Probes, args: &WatchArgs) -> anyhow::Result<()> {
    let tracker = Tracker::new(TrackerConfig {
        timeout_ns: seconds_ns(args.timeout, "--timeout")?,
        release_timeout_ns: seconds_ns(args.release_timeout, "--release-timeout")?,
        observability: observability(probes),
        ..TrackerConfig::default()
    });
    let ring = probes.take_ring()?;
    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("registering the ring buffer with the runtime")?;
    let memory = probes.env.memory_controller.clone();
    let renderer = Renderer {
        clock: Clock::now(),
        memcgs: MemcgPaths::new(memory.as_ref()),
        page_kb: 1u64 << probes.layout.config.page_kb_shift,
    };
    let live = Live {
        proc_root: "/proc".into(),
        memcg_root: memory.map(|m| m.mount),
    };
    let out = std::io::BufWriter::new(std::io::stdout());
    let mut session = Session::new(renderer, tracker, args.json, Some(live), out);
    if args.json {
        let header = json!({
            "type": "plan", "schema": output::JSON_SCHEMA, "version": env!("CARGO_PKG_VERSION"),
            "environment": probes.env, "plan": probes.plan,
            "attach_ms": probes.attach_time.as_secs_f64() * 1e3,
            "timeout_s": args.timeout, "release_timeout_s": args.release_timeout,
        });
        writeln!(session.out, "{header}")?;
    } else {
        writeln!(
            session.out,
            "oomtrace {} on Linux {}; attached in {:.0} ms; flags victims not dead {} s after              the kill; times are UTC",
            env!("CARGO_PKG_VERSION"),
            probes.env.kernel,
            probes.attach_time.as_secs_f64() * 1e3,
            args.timeout
        )?;
        write!(session.out, "{}", plan::render(&probes.plan))?;
        if !probes.hook(Hook::OomInvoke).attached() {
            writeln!(
                session.out,
                "note: mem_cgroup_out_of_memory is not hooked here: OOM invocations and the \
                 livelock signature cannot be observed"
            )?;
        }
    }
    session.out.flush()?;

    // Ticks drive the stuck timeouts: 50 ms keeps a flag within ~50 ms of its deadline.
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let deadline = args
        .duration
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let until = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for the ring buffer")?;
                drain(guard.get_inner_mut(), &mut session)?;
                guard.clear_ready();
            }
            _ = tick.tick() => {
                drain(ring.get_mut(), &mut session)?;
                session.lost(probes.lost_events()?)?;
                session.tick(monotonic_now())?;
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            () = &mut until => break,
        }
    }
    drain(ring.get_mut(), &mut session)?;
    session.lost(probes.lost_events()?)?;
    session.finish(monotonic_now())?;
    Ok(())
}

fn drain<W: std::io::Write>(
    ring: &mut RingBuf<MapData>,
    session: &mut Session<W>,
) -> anyhow::Result<()> {
    while let Some(item) = ring.next() {
        match Event::decode(&item) {
            Ok(ev) => session.event(&ev)?,
            Err(e) => eprintln!("oomtrace: skipping an undecodable record: {e}"),
        }
    }
    Ok(())
}
