//! `cargo xtask fuzz`: the cargo-fuzz (libFuzzer) targets of `fuzz/`, each for a while; fails
//! if one finds a crash, and says where the reproducer is.
//!
//! cargo-fuzz is built from crates.io (`cargo install --locked`) into the same persistent cache
//! as bpf-linker, keyed by its version, so a fresh machine gets it once. The targets build with
//! nightly (libFuzzer's instrumentation), AddressSanitizer and overflow checks, into
//! `target/fuzz`. What the fuzzer learns goes to `target/fuzz-corpus/<target>` (never checked
//! in); the seeds it starts from are `fuzz/corpus/<target>`; reproducers are written to
//! `fuzz/artifacts/<target>` (ignored by git).

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, bail};

use crate::{
    setup::{self, Env},
    tally::Tally,
};

/// Newest cargo-fuzz on crates.io when this was written; it builds with stable 1.95.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The targets of `fuzz/Cargo.toml`.
pub(crate) const TARGETS: [&str; 5] = [
    "dump_replay",
    "dump_read",
    "event_decode",
    "tracefs_format",
    "btf_parse",
];

/// Seconds per target of the short run inside `cargo xtask test`.
pub(crate) const TEST_SECONDS: u64 = 10;

/// The directory holding a working cargo-fuzz, installing it if needed.
fn ensure_cargo_fuzz() -> anyhow::Result<PathBuf> {
    let prefix = setup::cache_dir()?
        .join("tools")
        .join(format!("cargo-fuzz-{CARGO_FUZZ_VERSION}"));
    let bin = prefix.join("bin");
    if cargo_fuzz_runs(&bin.join("cargo-fuzz")) {
        return Ok(bin);
    }
    eprintln!(
        "xtask: building cargo-fuzz {CARGO_FUZZ_VERSION} (a few minutes, once) into {}",
        prefix.display()
    );
    setup::status(
        Command::new("cargo")
            .args(["+stable", "install", "--locked", "--force"])
            .arg(format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"))
            .arg("--root")
            .arg(&prefix)
            .env_remove("CARGO_TARGET_DIR"),
        "building cargo-fuzz",
    )?;
    if !cargo_fuzz_runs(&bin.join("cargo-fuzz")) {
        bail!("cargo-fuzz was built but does not run: {}", bin.display());
    }
    Ok(bin)
}

fn cargo_fuzz_runs(bin: &Path) -> bool {
    Command::new(bin)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)
        })
}

/// `cargo +nightly fuzz <args>` in `fuzz/`, finding cargo-fuzz and bpf-linker (the oomtrace
/// crate's build script builds the eBPF programs).
fn cargo_fuzz(
    env: &Env,
    fuzz_bin: &Path,
    sub: &str,
    asan: bool,
    dev: bool,
) -> anyhow::Result<Command> {
    let mut paths = vec![fuzz_bin.to_path_buf()];
    paths.extend(std::env::split_paths(&env.path));
    let mut c = Command::new("cargo");
    c.current_dir(env.workspace.join("fuzz"))
        .env("PATH", std::env::join_paths(paths)?)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .args(["+nightly", "fuzz", sub]);
    env.with_ebpf_object(&mut c);
    // Without AddressSanitizer (safe Rust: overflow checks and debug assertions still on) a
    // replay runs about six times as fast: the build for long runs of millions of inputs.
    let dir = match (asan, dev) {
        (true, false) => "fuzz",
        (true, true) => "fuzz-dev",
        (false, false) => "fuzz-noasan",
        (false, true) => "fuzz-noasan-dev",
    };
    if !asan {
        c.args(["--sanitizer", "none", "--debug-assertions"]);
    }
    if dev {
        c.arg("--dev");
    }
    c.arg("--target-dir").arg(env.target_dir.join(dir));
    Ok(c)
}

/// Reproducers libFuzzer wrote for `target` since `since`.
fn new_artifacts(env: &Env, target: &str, since: SystemTime) -> Vec<PathBuf> {
    let dir = env.workspace.join("fuzz/artifacts").join(target);
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// How long each target runs: `seconds`, or `runs` inputs (then without a time limit).
#[derive(Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) seconds: u64,
    pub(crate) runs: Option<u64>,
    pub(crate) asan: bool,
    /// Unoptimized, with debug assertions (`cargo fuzz build --dev`): half the CPU to build
    /// (measured 176 s against 355 s for the release build, whose single codegen unit per
    /// crate is cargo-fuzz's default), slower inputs; for the suite's short smoke run.
    pub(crate) dev: bool,
}

/// Builds every target, then runs each for its budget; returns the targets that failed, each
/// with what it left behind.
fn fuzz(env: &Env, targets: &[&str], budget: Budget) -> anyhow::Result<Vec<String>> {
    let Budget {
        seconds,
        runs,
        asan,
        dev,
    } = budget;
    let fuzz_bin = ensure_cargo_fuzz()?;
    eprintln!(
        "xtask: building the fuzz targets (nightly, {}{}overflow checks)",
        if asan { "AddressSanitizer, " } else { "" },
        if dev { "unoptimized, " } else { "" }
    );
    setup::status(
        &mut cargo_fuzz(env, &fuzz_bin, "build", asan, dev)?,
        "building the fuzz targets",
    )?;
    let mut failed = Vec::new();
    for target in targets {
        let grown = env.target_dir.join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&grown).with_context(|| format!("creating {}", grown.display()))?;
        let seeds = env.workspace.join("fuzz/corpus").join(target);
        let limit = match runs {
            Some(n) => {
                eprintln!("xtask: fuzzing {target} for {n} inputs");
                vec![format!("-runs={n}"), "-max_total_time=0".into()]
            }
            None => {
                eprintln!("xtask: fuzzing {target} for {seconds} s");
                vec![format!("-max_total_time={seconds}")]
            }
        };
        let (since, started) = (SystemTime::now(), Instant::now());
        let status = cargo_fuzz(env, &fuzz_bin, "run", asan, dev)?
            .arg(target)
            .arg(&grown)
            .arg(&seeds)
            .arg("--")
            .args(&limit)
            .args(["-print_final_stats=1", "-rss_limit_mb=2048", "-timeout=10"])
            .status()
            .with_context(|| format!("running the fuzz target {target}"))?;
        let artifacts = new_artifacts(env, target, since);
        if status.success() && artifacts.is_empty() {
            eprintln!(
                "xtask: {target}: no crash in {:.0} s",
                started.elapsed().as_secs_f64()
            );
            continue;
        }
        let what = match artifacts.is_empty() {
            true => format!("{target}: cargo fuzz exited with {status} and left no reproducer"),
            false => format!(
                "{target}: crash; reproducer {} (rerun: cd fuzz && cargo +nightly fuzz run \
                 {target} {})",
                artifacts
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                artifacts[0].display()
            ),
        };
        eprintln!("xtask: FUZZ FAILURE {what}");
        failed.push(what);
    }
    Ok(failed)
}

/// `cargo xtask fuzz [--seconds N | --runs N] [--no-asan] [--target NAME]`.
pub(crate) fn run(budget: Budget, target: Option<&str>) -> anyhow::Result<ExitCode> {
    let targets: Vec<&str> = match target {
        None => TARGETS.to_vec(),
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!("no fuzz target `{t}` (there are: {})", TARGETS.join(", ")),
    };
    let env = setup::ensure()?;
    let failed = fuzz(&env, &targets, budget)?;
    println!();
    for f in &failed {
        println!("FAILED {f}");
    }
    println!(
        "{} passed, {} failed",
        targets.len() - failed.len(),
        failed.len()
    );
    Ok(match failed.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}

/// The short run of `cargo xtask test`: every target for [`TEST_SECONDS`], counted as one test
/// (skipped when a filter that does not match "fuzz" is given). The seed generator
/// (`oomtrace/examples/fuzz_seeds.rs`) is built by the unit tests.
pub(crate) fn in_test(env: &Env, filter: Option<&str>) -> Tally {
    let mut tally = Tally::default();
    if filter.is_some_and(|f| !"fuzz".contains(f)) {
        return tally;
    }
    let budget = Budget {
        seconds: TEST_SECONDS,
        runs: None,
        asan: true,
        dev: true,
    };
    match fuzz(env, &TARGETS, budget) {
        Ok(failed) if failed.is_empty() => tally.passed += 1,
        Ok(_) => tally.failed += 1,
        Err(e) => {
            eprintln!("xtask: the fuzz targets could not run: {e:#}");
            tally.broken += 1;
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    /// What this test reads of fuzz/Cargo.toml.
    #[derive(Deserialize)]
    struct Manifest {
        #[serde(default)]
        bin: Vec<Bin>,
        workspace: Option<toml::Table>,
    }

    #[derive(Deserialize)]
    struct Bin {
        name: String,
    }

    /// The list here is the list in fuzz/Cargo.toml, and every target has seeds.
    #[test]
    fn targets_match_the_fuzz_crate_and_have_seeds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let path = root.join("Cargo.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let manifest: Manifest =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let declared: Vec<&str> = manifest.bin.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(declared, TARGETS);
        for t in TARGETS {
            let seeds = std::fs::read_dir(root.join("corpus").join(t))
                .unwrap()
                .count();
            assert!(seeds > 0, "{t} has no seeds");
        }
        assert!(
            manifest.workspace.is_some(),
            "fuzz/ must be its own workspace"
        );
    }
}
