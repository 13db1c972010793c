use std::{collections::BTreeSet, io::Write as _, time::Duration};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use clap::{Args, Parser, Subcommand};
use oomtrace::{
    cgroups::MemcgPaths,
    event::Event,
    output::{self, Clock, Renderer},
    plan::{self, AttachType},
    probes::{LoadOptions, Probes},
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

#[derive(Args, Default)]
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
    /// Report every process exit on the host, not only victims' (debugging, benchmarks).
    #[arg(long, hide = true)]
    trace_all_exits: bool,
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
    let kill_path = [plan::Hook::MarkVictim, plan::Hook::TaskExit]
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

struct Watcher {
    renderer: Renderer,
    json: bool,
    lost_reported: u64,
    out: std::io::BufWriter<std::io::Stdout>,
}

impl Watcher {
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> anyhow::Result<()> {
        while let Some(item) = ring.next() {
            match Event::decode(&item) {
                Ok(ev) => self.event(&ev)?,
                Err(e) => eprintln!("oomtrace: skipping an undecodable record: {e}"),
            }
        }
        self.out.flush()?;
        Ok(())
    }

    fn event(&mut self, ev: &Event) -> anyhow::Result<()> {
        if self.json {
            writeln!(self.out, "{}", self.renderer.json(ev))?;
        } else {
            writeln!(self.out, "{}", self.renderer.text(ev))?;
        }
        Ok(())
    }

    fn lost(&mut self, total: u64) -> anyhow::Result<()> {
        if total > self.lost_reported {
            let new = total - self.lost_reported;
            self.lost_reported = total;
            if self.json {
                writeln!(
                    self.out,
                    "{}",
                    json!({"type": "lost", "events": new, "total": total})
                )?;
            } else {
                writeln!(
                    self.out,
                    "WARNING: {new} events lost (ring buffer full; {total} in all): results may be incomplete"
                )?;
            }
        }
        Ok(())
    }
}

async fn watch_loop(probes: &mut Probes, args: &WatchArgs) -> anyhow::Result<()> {
    let ring = probes.take_ring()?;
    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("registering the ring buffer with the runtime")?;
    let page_kb = 1u64 << probes.layout.config.page_kb_shift;
    let mut w = Watcher {
        renderer: Renderer {
            clock: Clock::now(),
            memcgs: MemcgPaths::new(probes.env.memory_controller.as_ref()),
            page_kb,
        },
        json: args.json,
        lost_reported: 0,
        out: std::io::BufWriter::new(std::io::stdout()),
    };
    if args.json {
        let header = json!({
            "type": "plan", "schema": output::JSON_SCHEMA, "version": env!("CARGO_PKG_VERSION"),
            "environment": probes.env, "plan": probes.plan,
            "attach_ms": probes.attach_time.as_secs_f64() * 1e3,
        });
        writeln!(w.out, "{header}")?;
    } else {
        writeln!(
            w.out,
            "oomtrace {} on Linux {}; attached in {:.0} ms; times are UTC",
            env!("CARGO_PKG_VERSION"),
            probes.env.kernel,
            probes.attach_time.as_secs_f64() * 1e3
        )?;
        write!(w.out, "{}", plan::render(&probes.plan))?;
    }
    w.out.flush()?;

    let mut tick = tokio::time::interval(Duration::from_millis(100));
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
                w.drain(guard.get_inner_mut())?;
                guard.clear_ready();
            }
            _ = tick.tick() => {
                w.drain(ring.get_mut())?;
                w.lost(probes.lost_events()?)?;
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            () = &mut until => break,
        }
    }
    w.drain(ring.get_mut())?;
    w.lost(probes.lost_events()?)?;
    Ok(())
}
