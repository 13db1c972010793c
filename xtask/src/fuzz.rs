//! `cargo xtask fuzz`: the libFuzzer targets of `fuzz/`, each for a while; fails if one finds
//! a crash, and says where the reproducer is.
//!
//! The targets are cargo-fuzz's layout (`fuzz/Cargo.toml`, `libfuzzer-sys`), but xtask builds
//! and runs them itself with the flags cargo-fuzz 0.13.2 passes (its `src/project.rs`): no
//! cargo-fuzz to build from crates.io on a fresh machine (71 s of CPU measured). They build
//! with nightly (libFuzzer's instrumentation), AddressSanitizer and debug assertions, into
//! `target/fuzz*`. What the fuzzer learns goes to `target/fuzz-corpus/<target>` (never checked
//! in); the seeds it starts from are `fuzz/corpus/<target>`; reproducers are written to
//! `fuzz/artifacts/<target>` (ignored by git). `cargo +nightly fuzz run TARGET` by hand builds
//! the same binaries.

use std::{
    path::PathBuf,
    process::{Command, ExitCode},
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, bail};

use crate::{
    setup::{self, Env},
    tally::Tally,
};

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

/// The instrumentation cargo-fuzz 0.13.2 gives a build on Linux (`BuildOptions` at their
/// defaults: trace-compares, `cfg(fuzzing)`, no branch folding, stack depth, and debug
/// assertions, which it turns on unless `-O` is given).
fn rustflags(asan: bool, dev: bool) -> String {
    let mut f = vec![
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg",
        "fuzzing",
        "-Cllvm-args=-simplifycfg-branch-fold-threshold=0",
    ];
    if asan {
        f.push("-Zsanitizer=address");
    }
    f.extend([
        "-Cllvm-args=-sanitizer-coverage-stack-depth",
        "-Cdebug-assertions",
    ]);
    // cargo-fuzz's release builds: one codegen unit, or the coverage pass keeps ThinLTO from
    // inlining anything.
    if !dev {
        f.push("-Ccodegen-units=1");
    }
    f.join(" ")
}

/// The host's target triple (given explicitly so that RUSTFLAGS skip build scripts and
/// proc-macros, as cargo-fuzz does).
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// Where a build of `budget`'s kind goes.
fn target_dir(env: &Env, asan: bool, dev: bool) -> PathBuf {
    env.target_dir.join(match (asan, dev) {
        (true, false) => "fuzz",
        (true, true) => "fuzz-dev",
        (false, false) => "fuzz-noasan",
        (false, true) => "fuzz-noasan-dev",
    })
}

/// `cargo +nightly build` of every target in `fuzz/` with libFuzzer's instrumentation; the
/// oomtrace crate's build script takes this run's eBPF object.
fn build(env: &Env, asan: bool, dev: bool) -> anyhow::Result<()> {
    let mut c = Command::new("cargo");
    c.current_dir(env.workspace.join("fuzz"))
        .env("PATH", &env.path)
        .env("RUSTFLAGS", rustflags(asan, dev))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .args(["+nightly", "build", "--bins", "--target", TRIPLE]);
    if !dev {
        c.args([
            "--release",
            "--config",
            "profile.release.debug=\"line-tables-only\"",
        ]);
    }
    c.arg("--target-dir").arg(target_dir(env, asan, dev));
    env.with_ebpf_object(&mut c);
    setup::status(&mut c, "building the fuzz targets")
}

/// A built target's executable.
fn executable(env: &Env, asan: bool, dev: bool, target: &str) -> PathBuf {
    target_dir(env, asan, dev)
        .join(TRIPLE)
        .join(if dev { "debug" } else { "release" })
        .join(target)
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
    eprintln!(
        "xtask: building the fuzz targets (nightly, {}{}overflow checks)",
        if asan { "AddressSanitizer, " } else { "" },
        if dev { "unoptimized, " } else { "" }
    );
    build(env, asan, dev)?;
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
        let artifacts_dir = env.workspace.join("fuzz/artifacts").join(target);
        std::fs::create_dir_all(&artifacts_dir)
            .with_context(|| format!("creating {}", artifacts_dir.display()))?;
        let mut prefix = std::ffi::OsString::from("-artifact_prefix=");
        prefix.push(&artifacts_dir);
        prefix.push("/");
        let status = Command::new(executable(env, asan, dev, target))
            .env("ASAN_OPTIONS", "detect_odr_violation=0")
            .arg(prefix)
            .arg(&grown)
            .arg(&seeds)
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
            true => format!("{target}: the fuzzer exited with {status} and left no reproducer"),
            false => format!(
                "{target}: crash; reproducer {} (rerun: {} {})",
                artifacts
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                executable(env, asan, dev, target).display(),
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
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
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
