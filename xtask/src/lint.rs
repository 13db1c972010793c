//! The lint habit, part of `cargo xtask test` (so of CI): formatting, and clippy with warnings
//! as errors on the userspace crates and on the eBPF crate (built for the BPF target, as
//! aya-build builds it). Each is one test in the tally.

use std::process::Command;

use crate::{setup::Env, tally::Tally};

fn step(tally: &mut Tally, what: &str, cmd: &mut Command) {
    eprintln!("xtask: {what}");
    tally.add(Tally::one(match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{what} failed ({s})")),
        Err(e) => Err(format!("{what}: cannot start: {e}")),
    }));
}

/// Nightly's cargo through rustup (`$CARGO`, under `cargo xtask`, is stable's own binary, which
/// knows no `+toolchain`).
fn nightly(env: &Env) -> Command {
    let mut c = Command::new("rustup");
    c.current_dir(&env.workspace)
        .env("PATH", &env.path)
        .env_remove("RUSTC")
        .env_remove("CARGO")
        .args(["run", "nightly", "cargo"]);
    c
}

/// Installs clippy and rustfmt where a toolchain lacks them (a minimal rustup profile).
fn ensure_components() {
    for toolchain in ["stable", "nightly"] {
        let installed = Command::new("rustup")
            .args(["component", "list", "--installed", "--toolchain", toolchain])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for component in ["clippy", "rustfmt"] {
            if !installed.lines().any(|l| l.starts_with(component)) {
                eprintln!("xtask: installing {component} for {toolchain}");
                let _ = Command::new("rustup")
                    .args(["component", "add", component, "--toolchain", toolchain])
                    .status();
            }
        }
    }
}

pub(crate) fn run(env: &Env) -> Tally {
    ensure_components();
    let mut tally = Tally::default();
    step(
        &mut tally,
        "cargo fmt --check (nightly rustfmt, as rustfmt.toml needs)",
        nightly(env).args(["fmt", "--all", "--", "--check"]),
    );
    step(
        &mut tally,
        "clippy -D warnings on oomtrace, oomtrace-common, xtask, tests",
        env.cargo().args([
            "clippy",
            "--package",
            "oomtrace",
            "--package",
            "oomtrace-common",
            "--package",
            "xtask",
            "--package",
            "oomtrace-tests",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    );
    step(
        &mut tally,
        "clippy -D warnings on oomtrace-ebpf (bpfel-unknown-none)",
        nightly(env)
            .current_dir(env.workspace.join("oomtrace-ebpf"))
            .env("CARGO_TARGET_DIR", env.target_dir.join("clippy-ebpf"))
            .args([
                "clippy",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--bins",
                "--",
                "-D",
                "warnings",
            ]),
    );
    tally
}
