//! `cargo xtask soak --minutes N`: oomtrace under continuous OOM churn, exit storms, stuck
//! victims and a node's pod churn (memcgs in kubelet's shapes made and removed 12.5 times a
//! second, containers OOM-killed tens of ms after their memcg appeared) for N minutes
//! (`oomtrace-soak`, as root); fails if a container's kill is not named with its path and pod,
//! or if its RSS, fds, in-kernel filter entries, held victims, memcg names or lost events grow
//! without bound. `cargo xtask test` runs two
//! minutes of it against its debug build.

use std::{path::Path, process::ExitCode};

use anyhow::Context as _;

use crate::{
    guest,
    setup::{self, Env},
};

pub(crate) fn run(minutes: f64, kernel: Option<&str>) -> anyhow::Result<ExitCode> {
    let env = setup::ensure()?;
    if let Some(kernel) = kernel {
        return in_guest(&env, kernel, minutes);
    }
    crate::leftovers::sweep();
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

/// `cargo xtask soak --kernel NAME`: the same soak inside a guest kernel of xtask/matrix.toml
/// (cgroup v2 there; this host's memory controller is v1), against the static release
/// oomtrace the guests run. Under emulation the load runs at the soak's own pace, which is
/// slower; the table and `soak.json` land in target/vm-results/soak-NAME/.
fn in_guest(env: &Env, name: &str, minutes: f64) -> anyhow::Result<ExitCode> {
    let static_bin = crate::dist::build_static(env)?;
    let bins = env.build_test_bins("building the soak")?;
    let tools = {
        let _apt = guest::APT.lock().unwrap_or_else(|e| e.into_inner());
        guest::tools()?
    };
    let spec = guest::load_kernels()?
        .into_iter()
        .find(|k| k.name == name)
        .with_context(|| format!("no kernel named {name} in xtask/matrix.toml"))?;
    let kernel = {
        let _apt = guest::APT.lock().unwrap_or_else(|e| e.into_inner());
        guest::prepare(&tools, &spec)?
    };
    // Not under /root, /tmp, /run or /var/tmp: the guest mounts tmpfs there.
    let results = env
        .target_dir
        .join("vm-results")
        .join(format!("soak-{name}"));
    let script = format!(
        "#!/bin/sh\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root\n\
         export OOMTRACE_BIN='{oomtrace}' OOMTRACE_TEST_SLOWDOWN=20 OOMTRACE_DISPOSABLE_KERNEL=1 \
         RUST_BACKTRACE=1\n\
         cd /\n\
         echo \"guest kernel $(uname -r)\"\n\
         '{soak}' --minutes {minutes} --out '{results}/soak.json'\n",
        oomtrace = static_bin.display(),
        soak = bins.join("oomtrace-soak").display(),
        results = results.display(),
    );
    eprintln!(
        "xtask: soaking oomtrace for {minutes} min in {name} ({}) under QEMU/TCG",
        kernel.release
    );
    // The soak's own minutes, its start and its drain, and a margin for the boot.
    let timeout = std::time::Duration::from_secs_f64(minutes * 60.0 + 900.0);
    let run = guest::run_in_guest(&tools, &kernel, &script, &env.target_dir, &results, timeout)?;
    print!("{}", run.output);
    eprintln!(
        "xtask: the soak in {name} exited {} after {:.0} s (console {})",
        run.exit_code,
        run.wall.as_secs_f64(),
        run.console.display()
    );
    Ok(if run.exit_code == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
