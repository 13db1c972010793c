//! `cargo xtask soak --minutes N`: oomtrace under continuous OOM churn, exit storms, stuck
//! victims and a node's pod churn (memcgs in kubelet's shapes made and removed 12.5 times a
//! second, containers OOM-killed tens of ms after their memcg appeared) for N minutes
//! (`oomtrace-soak`, as root); fails if a container's kill is not named with its path and pod,
//! or if its RSS, fds, in-kernel filter entries, held victims, memcg names or lost events grow
//! without bound. `cargo xtask test` runs two
//! minutes of it against its debug build.

use std::{path::Path, process::ExitCode};

use anyhow::Context as _;

use crate::setup::{self, Env};

pub(crate) fn run(minutes: f64) -> anyhow::Result<ExitCode> {
    let env = setup::ensure()?;
    setup::status(
        env.cargo()
            .args(["build", "--release", "--package", "oomtrace"]),
        "building oomtrace (release)",
    )?;
    let release = env.build_test_bins("building the soak")?;
    let passed = soak(&env, &release.join("oomtrace"), &release, minutes)?;
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs `oomtrace-soak` (and the hog beside it) from `bins` against `oomtrace` for `minutes`;
/// writes target/soak/results.json. True if nothing grew and every check passed.
pub(crate) fn soak(env: &Env, oomtrace: &Path, bins: &Path, minutes: f64) -> anyhow::Result<bool> {
    let out_dir = env.target_dir.join("soak");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let results = out_dir.join("results.json");
    let mut cmd = setup::as_root(
        &bins.join("oomtrace-soak"),
        &[
            "--minutes".into(),
            minutes.to_string(),
            "--out".into(),
            results.display().to_string(),
        ],
    )?;
    cmd.env("OOMTRACE_BIN", oomtrace).env("RUST_BACKTRACE", "1");
    eprintln!(
        "xtask: soaking oomtrace for {minutes} min as root (results in {})",
        results.display()
    );
    let status = cmd.status().context("starting oomtrace-soak")?;
    Ok(status.success())
}
