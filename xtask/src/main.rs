//! Developer tasks: `cargo xtask run`, `cargo xtask test`, `cargo xtask vm`.
//!
//! Each task first installs what it lacks (nightly's rust-src, bpf-linker built against rustc's
//! own libLLVM) so that the README's two commands work on a fresh machine.

mod dist;
#[cfg(test)]
mod fn_length;
mod fuzz;
mod guest;
#[cfg(test)]
mod imports;
mod leftovers;
mod lint;
mod prometheus;
#[cfg(test)]
mod public_api;
mod runc;
mod setup;
mod soak;
#[cfg(test)]
mod sources;
mod suite;
mod tally;
mod test;
mod timings;

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
        /// Only boot each kernel this many times and run `check` (two at a time): counts
        /// boots that failed and kernel oopses, to measure the guests' reliability.
        #[arg(long)]
        boots: Option<usize>,
    },
    /// System-level benchmarks as root (exit-path overhead, start-up, OOM storm, replay
    /// throughput, stuck-flag latency): prints one table, writes target/bench/results.json.
    Bench {
        /// Fewer rounds and events: a smoke run of the benchmark itself.
        #[arg(long)]
        quick: bool,
    },
    /// Soak as root: N minutes of OOM kills, exit storms and stuck victims under one watch;
    /// fails if oomtrace's RSS, fds, filter entries, held victims or lost events keep growing.
    /// Prints one table, writes target/soak/results.json.
    Soak {
        /// How long the load runs.
        #[arg(long, default_value_t = 60.0)]
        minutes: f64,
        /// Inside this guest kernel of xtask/matrix.toml instead (cgroup v2, QEMU/TCG).
        #[arg(long)]
        kernel: Option<String>,
    },
    /// One static x86_64 binary (glibc linked in, the eBPF object embedded) and a tarball with
    /// its man page, shell completions, docs and the systemd unit, plus a sha256:
    /// target/dist/oomtrace-<version>-<rev>-x86_64-linux.tar.gz.
    Dist,
    /// Run each libFuzzer target of fuzz/ for a while; fails if one finds a crash, and prints
    /// where the reproducer is.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Inputs per target instead of a time (e.g. 10000000), however long that takes.
        #[arg(long, conflicts_with = "seconds")]
        runs: Option<u64>,
        /// Build without AddressSanitizer (about 6x faster on the replay; overflow checks and
        /// debug assertions stay): for long runs.
        #[arg(long)]
        no_asan: bool,
        /// Only this target (dump_replay, dump_read, event_decode, tracefs_format, btf_parse).
        #[arg(long)]
        target: Option<String>,
    },
    /// Only install what the build needs (rust-src, bpf-linker).
    Setup,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::ensure().map(|_| ExitCode::SUCCESS),
        Command::Fuzz {
            seconds,
            runs,
            no_asan,
            target,
        } => fuzz::run(
            fuzz::Budget {
                seconds,
                runs,
                asan: !no_asan,
                dev: false,
            },
            target.as_deref(),
        ),
        Command::Dist => dist::run(),
        Command::Bench { quick } => bench(quick),
        Command::Soak { minutes, kernel } => soak::run(minutes, kernel.as_deref()),
        Command::Run { debug, args } => run(debug, &args),
        Command::Test { filter, no_vm } => test::run(filter.as_deref(), !no_vm),
        Command::Vm {
            kernel,
            filter,
            boots,
        } => test::run_vm_only(kernel.as_deref(), filter.as_deref(), boots),
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
    // What users run: the static dist binary.
    let oomtrace = dist::build_static(&env)?;
    let release = env.build_test_bins("building the benchmark")?;
    let out_dir = env.target_dir.join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let results = out_dir.join("results.json");
    let mut cmd = setup::as_root(
        &release.join("oomtrace-bench"),
        &[results.display().to_string()],
    )?;
    cmd.env("OOMTRACE_BIN", &oomtrace);
    if quick {
        cmd.env("OOMTRACE_BENCH_QUICK", "1");
    }
    eprintln!("xtask: running the benchmarks as root (a few minutes; nothing else should run)");
    let status = cmd.status()?;
    if !status.success() {
        return Ok(ExitCode::FAILURE);
    }
    // The pure userspace parts, with criterion (no root).
    let measure = if quick { "1" } else { "5" };
    let out = env
        .cargo()
        .args([
            "bench",
            "--package",
            "oomtrace",
            "--bench",
            "userspace",
            "--",
        ])
        .args(["--warm-up-time", "1", "--measurement-time", measure])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rows = criterion_rows(&text);
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&results)?)?;
    println!(
        "\n| criterion (`cargo bench -p oomtrace`) | throughput (median) | target | verdict |\n|---|---|---|---|"
    );
    let rate = |name: &str| {
        rows.iter()
            .find(|(n, _)| n == name)
            .map_or(f64::NAN, |r| r.1)
    };
    for (name, melem) in &rows {
        println!("| {name} | {melem:.2} M events/s | | |");
    }
    // decode + track, per core: the two stages run one after the other on one core.
    let combined = 1.0 / (1.0 / rate("decode/records") + 1.0 / rate("tracker/normal kills"));
    let met = combined >= 2.0;
    println!(
        "| decode + track (combined) | {combined:.2} M events/s/core | ≥ 2 M events/s/core | {} |",
        if met { "met" } else { "MISSED" }
    );
    doc["criterion"] = serde_json::json!({
        "rows": rows.iter().map(|(n, r)| serde_json::json!({"name": n, "melem_per_s": r})).collect::<Vec<_>>(),
        "decode_plus_track_melem_per_s": combined,
    });
    std::fs::write(&results, serde_json::to_string_pretty(&doc)?)?;
    println!("\n(written to {})", results.display());
    Ok(if out.status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// (benchmark name, median throughput in M elements/s) from criterion's text output.
fn criterion_rows(text: &str) -> Vec<(String, f64)> {
    let mut rows = Vec::new();
    let mut name = None;
    for line in text.lines() {
        if let Some((n, _)) = line.split_once("time:")
            && !n.trim().is_empty()
        {
            name = Some(n.trim().to_string());
        }
        if let (Some(rest), Some(n)) = (line.split_once("thrpt:").map(|x| x.1), &name) {
            // [low unit mid unit high unit]
            let parts: Vec<&str> = rest
                .trim_matches(|c| c == ' ' || c == '[' || c == ']')
                .split_whitespace()
                .collect();
            if let (Some(v), Some(unit)) = (parts.get(2), parts.get(3)) {
                let scale = match *unit {
                    "Gelem/s" => 1e3,
                    "Melem/s" => 1.0,
                    "Kelem/s" => 1e-3,
                    _ => 1e-6,
                };
                if let Ok(v) = v.parse::<f64>() {
                    rows.push((n.clone(), v * scale));
                }
            }
            name = None;
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    #[test]
    fn criterion_throughput_is_parsed() {
        let out = "decode/records          time:   [4.7 ms 4.78 ms 4.83 ms]\n                        thrpt:  [33.3 Melem/s 33.7 Melem/s 34.0 Melem/s]\ntracker/normal kills    time:   [47 ms 49 ms 51 ms]\n                        thrpt:  [3.14 Melem/s 3.27 Melem/s 3.41 Melem/s]\n";
        let rows = super::criterion_rows(out);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, "decode/records");
        assert!((rows[1].1 - 3.27).abs() < 1e-9);
    }
}
