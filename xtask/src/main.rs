//! Developer tasks: `cargo xtask run`, `cargo xtask test`, `cargo xtask vm`.
//!
//! Each task first installs what it lacks (nightly's rust-src, bpf-linker built against rustc's
//! own libLLVM) so that the README's two commands work on a fresh machine.

mod guest;
mod setup;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing, build, and run oomtrace as root (default arguments: `watch`).
    Run {
        /// Build without optimizations.
        #[arg(long)]
        debug: bool,
        /// Arguments for oomtrace, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Install what is missing, then run the unit tests, the root end-to-end suite, and the
    /// same suite inside the guest kernels of xtask/matrix.toml.
    Test {
        /// Run only tests whose name contains this.
        filter: Option<String>,
        /// Skip the guest kernels (they take a few minutes).
        #[arg(long)]
        no_vm: bool,
    },
    /// Run the end-to-end suite inside each guest kernel of xtask/matrix.toml (QEMU, TCG).
    Vm {
        /// Only the kernel with this name (e.g. 6.1).
        #[arg(long)]
        kernel: Option<String>,
        /// Run only tests whose name contains this.
        filter: Option<String>,
    },
    /// System-level benchmarks as root (exit-path overhead, start-up, OOM storm, replay
    /// throughput, stuck-flag latency): prints one table, writes target/bench/results.json.
    Bench {
        /// Fewer rounds and events: a smoke run of the benchmark itself.
        #[arg(long)]
        quick: bool,
    },
    /// Only install what the build needs (rust-src, bpf-linker).
    Setup,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::ensure().map(|_| ExitCode::SUCCESS),
        Command::Bench { quick } => bench(quick),
        Command::Run { debug, args } => run(debug, &args),
        Command::Test { filter, no_vm } => test::run(filter.as_deref(), !no_vm),
        Command::Vm { kernel, filter } => test::run_vm_only(kernel.as_deref(), filter.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(debug: bool, args: &[String]) -> anyhow::Result<ExitCode> {
    let env = setup::ensure()?;
    let profile = if debug { "debug" } else { "release" };
    let mut build = env.cargo();
    build.args(["build", "--package", "oomtrace"]);
    if !debug {
        build.arg("--release");
    }
    setup::status(&mut build, "building oomtrace")?;
    let bin = env.target_dir.join(profile).join("oomtrace");
    let args: Vec<String> = if args.is_empty() {
        vec!["watch".into()]
    } else {
        args.to_vec()
    };
    let mut cmd = setup::as_root(&bin, &args)?;
    eprintln!("xtask: running {} {}", bin.display(), args.join(" "));
    let status = cmd.status()?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

fn bench(quick: bool) -> anyhow::Result<ExitCode> {
    let env = setup::ensure()?;
    setup::status(
        env.cargo()
            .args(["build", "--release", "--package", "oomtrace"]),
        "building oomtrace (release)",
    )?;
    setup::status(
        env.cargo().args([
            "build",
            "--release",
            "--package",
            "oomtrace-tests",
            "--bins",
        ]),
        "building the benchmark",
    )?;
    let release = env.target_dir.join("release");
    let out_dir = env.target_dir.join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let results = out_dir.join("results.json");
    let mut cmd = setup::as_root(
        &release.join("oomtrace-bench"),
        &[results.display().to_string()],
    )?;
    cmd.env("OOMTRACE_BIN", release.join("oomtrace"));
    if quick {
        cmd.env("OOMTRACE_BENCH_QUICK", "1");
    }
    eprintln!("xtask: running the benchmarks as root (a few minutes; nothing else should run)");
    let status = cmd.status()?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
