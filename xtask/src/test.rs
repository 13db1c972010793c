//! `cargo xtask test`: unit tests, then the root end-to-end suite against the built binary,
//! then one summary line `N passed, N failed` over everything.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::{
    guest,
    setup::{self, Env},
};

/// Counts from libtest's `test result:` lines.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub passed: u64,
    pub failed: u64,
    /// Test binaries that ended without a result line (crashed, or failed to build).
    pub broken: u64,
}

impl Tally {
    /// One test: passed, or failed with what went wrong said.
    pub(crate) fn one(result: Result<(), String>) -> Tally {
        match result {
            Ok(()) => Tally {
                passed: 1,
                ..Tally::default()
            },
            Err(e) => {
                eprintln!("xtask: {e}");
                Tally {
                    failed: 1,
                    ..Tally::default()
                }
            }
        }
    }

    pub(crate) fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.broken += other.broken;
    }
}

/// Parses `test result: ok. 5 passed; 0 failed; 0 ignored; …`.
pub(crate) fn parse_result_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let num = |word: &str| -> Option<u64> {
        rest.split(';')
            .find(|p| p.trim_end().ends_with(word))?
            .split_whitespace()
            .rev()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((num("passed")?, num("failed")?))
}

fn readme_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")
}

/// Runs a command, echoing its output, and tallies libtest result lines.
fn run_tallied(cmd: &mut Command, what: &str) -> anyhow::Result<Tally> {
    eprintln!("xtask: {what}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut tally = Tally::default();
    let mut results = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some((p, f)) = parse_result_line(&line) {
            tally.passed += p;
            tally.failed += f;
            results += 1;
        }
    }
    let status = child.wait()?;
    if !status.success() && tally.failed == 0 {
        eprintln!("xtask: {what}: exited with {status} without a failed test: counted as broken");
        tally.broken += 1;
    }
    if results == 0 && status.success() {
        eprintln!("xtask: {what}: ran no test");
        tally.broken += 1;
    }
    Ok(tally)
}

/// The parts of one of cargo's `--message-format=json` messages that name a built test.
#[derive(Deserialize)]
struct CargoMessage {
    reason: String,
    target: Option<CargoTarget>,
    executable: Option<PathBuf>,
}

#[derive(Deserialize)]
struct CargoTarget {
    kind: Vec<String>,
}

/// The executable of an integration test target (`tests/*.rs`: `"kind":["test"]`) from one line
/// of cargo's JSON messages; `None` for any other line.
fn test_executable(line: &str) -> Option<PathBuf> {
    let msg: CargoMessage = serde_json::from_str(line).ok()?;
    let is_test = msg.reason == "compiler-artifact" && msg.target?.kind == ["test"];
    if is_test { msg.executable } else { None }
}

/// The end-to-end test executables, built (not run) by cargo.
pub(crate) fn build_e2e(env: &Env) -> anyhow::Result<Vec<PathBuf>> {
    let out = env
        .cargo()
        .args([
            "test",
            "--package",
            "oomtrace-tests",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("building the end-to-end tests")?;
    if !out.status.success() {
        bail!("building the end-to-end tests failed");
    }
    let exes: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(test_executable)
        .collect();
    if exes.is_empty() {
        bail!("cargo built no end-to-end test executable");
    }
    Ok(exes)
}

/// Builds the oomtrace binary the end-to-end tests run.
pub(crate) fn build_oomtrace(env: &Env) -> anyhow::Result<PathBuf> {
    setup::status(
        env.cargo().args(["build", "--package", "oomtrace"]),
        "building oomtrace",
    )?;
    Ok(env.target_dir.join("debug").join("oomtrace"))
}

/// The suite inside one guest kernel: `oomtrace check` — the static dist binary, run from a root
/// that holds nothing but it (no glibc: the copy-and-run case) — then every end-to-end
/// executable.
fn guest_script(
    bin: &Path,
    static_bin: &Path,
    exes: &[PathBuf],
    filter: Option<&str>,
    results: &Path,
) -> String {
    let mut s = String::from("#!/bin/sh\n");
    s += "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root\n";
    s += &format!(
        "export OOMTRACE_BIN='{}' OOMTRACE_TEST_SLOWDOWN=20 OOMTRACE_DISPOSABLE_KERNEL=1 \
         RUST_BACKTRACE=1\n",
        bin.display()
    );
    s += "cd /\necho \"guest kernel $(uname -r)\"\n";
    s += &format!(
        "r=/tmp/noglibc && mkdir -p $r/proc $r/sys $r/dev && cp '{}' $r/oomtrace \
         && mount -t proc proc $r/proc && mount --rbind /sys $r/sys && mount --rbind /dev $r/dev \
         && chroot $r /oomtrace check --json > '{r}/check.json'\n\
         echo \"static oomtrace check in a root without glibc: exit $?\"\n\
         chroot $r /oomtrace check > '{r}/check.txt' 2>&1\n",
        static_bin.display(),
        r = results.display()
    );
    s += "rc=0\n";
    for exe in exes.iter().filter(|e| !crate::prometheus::host_only(e)) {
        let f = filter.map(|f| format!(" '{f}'")).unwrap_or_default();
        // Host only: under emulation the fork loop never fills the small tmpfs within the
        // test's wait (not understood yet; the host runs it).
        let skip = " --skip a_full_disk_names_the_dump_and_still_ends_with_a_summary";
        s += &format!("'{}'{f}{skip} --test-threads=2 || rc=1\n", exe.display());
    }
    s += "exit $rc\n";
    s
}

/// Checks the README's hook table column `column` against a `check --json` result: the table
/// says what each hook attaches as on each kernel, and must say what the runs show.
pub(crate) fn check_readme_column(readme: &str, column: &str, check: &str) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(check).map_err(|e| format!("check --json output unreadable: {e}"))?;
    let attach_of = |hook: &str| -> Option<String> {
        v["plan"]
            .as_array()?
            .iter()
            .find(|h| h["hook"] == hook)
            .map(|h| h["attach"].as_str().unwrap_or("none").to_string())
    };
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut lines = readme.lines().skip_while(|l| !l.starts_with("| hook |"));
    let header = cells(lines.next().ok_or("README has no `| hook |` table")?);
    let col = header
        .iter()
        .position(|h| h == column)
        .ok_or_else(|| format!("README hook table has no column `{column}`"))?;
    let mut checked = 0;
    for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let row = cells(line);
        let hook = row[0].trim_matches('`');
        let said = row.get(col).map(String::as_str).unwrap_or("");
        let ran = attach_of(hook).ok_or_else(|| format!("README row `{hook}` is not a hook"))?;
        if said != ran {
            return Err(format!(
                "README hook table says `{hook}` attaches as `{said}` on {column}, the run used `{ran}`"
            ));
        }
        checked += 1;
    }
    if checked == 0 {
        return Err("README hook table has no rows".into());
    }
    Ok(())
}

/// Attach type per hook from a `check --json` result, as `hook=attach` pairs.
fn plan_summary(check: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(check) else {
        return "no plan (check --json did not run)".into();
    };
    v["plan"]
        .as_array()
        .map(|hooks| {
            hooks
                .iter()
                .map(|h| {
                    format!(
                        "{}={}",
                        h["hook"].as_str().unwrap_or("?"),
                        h["attach"].as_str().unwrap_or("none")
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Runs the suite in every guest kernel (or one); returns the tally and a report line per kernel.
fn run_matrix(
    bin: &Path,
    static_bin: &Path,
    exes: &[PathBuf],
    only: Option<&str>,
    filter: Option<&str>,
) -> anyhow::Result<(Tally, Vec<String>)> {
    let tools = guest::tools()?;
    let mut tally = Tally::default();
    let mut report = Vec::new();
    // Not under /root, /tmp, /run or /var/tmp: the guest mounts tmpfs there.
    let target = bin
        .parent()
        .and_then(Path::parent)
        .context("oomtrace binary has no target directory")?;
    let results_root = target.join("vm-results");
    for spec in guest::load_kernels()? {
        if only.is_some_and(|k| k != spec.name) {
            continue;
        }
        let kernel = guest::prepare(&tools, &spec)?;
        let results = results_root.join(&spec.name);
        eprintln!(
            "xtask: booting {} ({}) under QEMU/TCG",
            spec.name, kernel.release
        );
        let script = guest_script(bin, static_bin, exes, filter, &results);
        let boot = || {
            guest::run_in_guest(
                &tools,
                &kernel,
                &script,
                target,
                &results,
                Duration::from_secs(2700),
            )
        };
        // A guest that died before running anything (an early-boot oops under TCG was seen
        // once in a few dozen boots) is booted once more; the tests themselves never are.
        let run = match boot() {
            Err(e) if !results.join("output.log").exists() => {
                eprintln!(
                    "xtask: {} never ran the suite ({e:#}); booting it once more",
                    spec.name
                );
                let _ = std::fs::copy(
                    results.join("console.log"),
                    target.join(format!("vm-{}-failed-boot.log", spec.name)),
                );
                boot()
            }
            other => other,
        };
        let line = match run {
            Ok(run) => {
                let mut t = Tally::default();
                let mut results_seen = 0;
                for l in run.output.lines() {
                    println!("[{}] {l}", spec.name);
                    if let Some((p, f)) = parse_result_line(l) {
                        t.passed += p;
                        t.failed += f;
                        results_seen += 1;
                    }
                }
                if run.exit_code != 0 && t.failed == 0 {
                    t.broken += 1;
                }
                if results_seen == 0 {
                    t.broken += 1;
                }
                tally.add(t);
                let check = std::fs::read_to_string(results.join("check.json")).unwrap_or_default();
                let readme = std::fs::read_to_string(readme_path()).unwrap_or_default();
                if let Err(e) = check_readme_column(&readme, &spec.name, &check) {
                    eprintln!("xtask: {e}");
                    tally.broken += 1;
                }
                format!(
                    "{} ({}): {} passed, {} failed, exit {}, {:.0} s (console {}); {}",
                    spec.name,
                    kernel.release,
                    t.passed,
                    t.failed + t.broken,
                    run.exit_code,
                    run.wall.as_secs_f64(),
                    run.console.display(),
                    plan_summary(&check)
                )
            }
            Err(e) => {
                tally.broken += 1;
                format!("{} ({}): FAILED TO RUN: {e:#}", spec.name, kernel.release)
            }
        };
        report.push(line);
    }
    Ok((tally, report))
}

/// Prints the per-kernel report and the closing `N passed, N failed` line.
fn conclude(tally: Tally, report: &[String]) -> ExitCode {
    println!();
    for line in report {
        println!("kernel {line}");
    }
    let failed = tally.failed + tally.broken;
    println!("{} passed, {failed} failed", tally.passed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub(crate) fn run_vm_only(kernel: Option<&str>, filter: Option<&str>) -> anyhow::Result<ExitCode> {
    let env = setup::ensure()?;
    let bin = build_oomtrace(&env)?;
    let static_bin = crate::dist::build_static(&env)?;
    let exes = build_e2e(&env)?;
    let (tally, report) = run_matrix(&bin, &static_bin, &exes, kernel, filter)?;
    Ok(conclude(tally, &report))
}

pub(crate) fn run(filter: Option<&str>, with_vm: bool) -> anyhow::Result<ExitCode> {
    let env = setup::ensure()?;
    let mut tally = Tally::default();

    let mut unit = env.cargo();
    unit.args([
        "test",
        "--package",
        "oomtrace",
        "--package",
        "oomtrace-common",
        "--package",
        "xtask",
    ]);
    if let Some(f) = filter {
        unit.args(["--", f]);
    }
    tally.add(run_tallied(&mut unit, "unit tests (no root needed)")?);
    // The lint habit: rustfmt, clippy -D warnings on every crate (the eBPF one for its target).
    if filter.is_none() {
        tally.add(crate::lint::run(&env));
    }

    // Ten seconds of each fuzz target (`cargo xtask fuzz`): one test, passed if none crashed.
    tally.add(crate::fuzz::in_test(&env, filter));
    // promtool check and test rules on contrib/prometheus (Debian's prometheus package,
    // unpacked into the cache); its binaries go to the fleet end-to-end test below.
    let (prom_tally, prom_env) = crate::prometheus::in_test(filter);
    tally.add(prom_tally);

    let bin = build_oomtrace(&env)?;
    let exes = build_e2e(&env)?;
    if !setup::is_root() {
        eprintln!(
            "xtask: the end-to-end tests cause real OOM kills in sandbox cgroups and need root; \
             they will fail here (run `sudo -E cargo xtask test`)"
        );
    }
    for exe in &exes {
        let mut args: Vec<String> = Vec::new();
        if let Some(f) = filter {
            args.push(f.to_string());
        }
        let mut cmd = setup::as_root(exe, &args)?;
        cmd.env("OOMTRACE_BIN", &bin).env("RUST_BACKTRACE", "1");
        cmd.envs(prom_env.iter().map(|(k, v)| (k, v)));
        let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        tally.add(run_tallied(
            &mut cmd,
            &format!("end-to-end tests ({name}, as root)"),
        )?);
    }

    let (soak, bench) = (
        filter.is_none_or(|f| "soak".contains(f)),
        filter.is_none_or(|f| "bench".contains(f)),
    );
    if soak || bench {
        // The soak's and the benchmark's binaries (oomtrace-soak, oomtrace-bench), next to
        // the oomtrace they drive.
        setup::status(
            env.cargo()
                .args(["build", "--package", "oomtrace-tests", "--bins"]),
            "building the soak and the benchmark",
        )?;
    }
    if soak {
        tally.add(soak_step(&env, &bin)?);
    }
    if bench {
        tally.add(bench_step(&env, &bin)?);
    }
    let static_bin = crate::dist::build_static(&env);
    tally.add(static_step(static_bin.as_ref()));
    tally.add(readme_step(&bin)?);

    let mut report = Vec::new();
    if with_vm {
        let matrix = static_bin.and_then(|s| run_matrix(&bin, &s, &exes, None, filter));
        match matrix {
            Ok((t, r)) => {
                tally.add(t);
                report = r;
            }
            Err(e) => {
                // A machine that cannot boot guests fails the matrix loudly.
                eprintln!("xtask: the kernel matrix could not run: {e:#}");
                tally.broken += 1;
                report.push(format!("matrix FAILED TO RUN: {e:#}"));
            }
        }
    }

    Ok(conclude(tally, &report))
}

/// Two minutes of the soak (`cargo xtask soak`) against this build: one test, passed if
/// nothing in oomtrace grew and every check held.
fn soak_step(env: &Env, bin: &Path) -> anyhow::Result<Tally> {
    let bins = bin.parent().context("oomtrace binary has no directory")?;
    let mut t = Tally::default();
    match crate::soak::soak(env, bin, bins, 2.0) {
        Ok(true) => t.passed += 1,
        Ok(false) => t.failed += 1,
        Err(e) => {
            eprintln!("xtask: the soak could not run: {e:#}");
            t.broken += 1;
        }
    }
    Ok(t)
}

/// The benchmark's quick run (`cargo xtask bench --quick`) against this build: one test,
/// passed if it ran to its end and every row has a value. Its figures are not judged here (a
/// shared CI machine is too noisy, and a debug build is measured); this only keeps the
/// benchmark that docs/performance.md quotes runnable.
fn bench_step(env: &Env, bin: &Path) -> anyhow::Result<Tally> {
    let bench = bin
        .parent()
        .context("oomtrace binary has no directory")?
        .join("oomtrace-bench");
    let out = env.target_dir.join("bench-smoke.json");
    let _ = std::fs::remove_file(&out);
    let mut cmd = setup::as_root(&bench, &[out.display().to_string()])?;
    cmd.env("OOMTRACE_BIN", bin)
        .env("OOMTRACE_BENCH_QUICK", "1")
        .stdout(std::process::Stdio::null());
    eprintln!("xtask: the benchmark, quick run (its figures are not judged here)");
    let status = cmd.status()?;
    let rows = std::fs::read(&out)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|d| d["rows"].as_array().cloned())
        .unwrap_or_default();
    let empty: Vec<&str> = rows
        .iter()
        .filter(|r| r["value"].as_str().is_none_or(str::is_empty))
        .filter_map(|r| r["figure"].as_str())
        .collect();
    // Its quick run has 14 rows on this project's CI host; fewer than 10 means a section
    // stopped early.
    let ran = status.success() && rows.len() >= 10 && empty.is_empty();
    Ok(Tally::one(ran.then_some(()).ok_or_else(|| {
        format!(
            "the benchmark's quick run failed: {status}, {} rows in {}, without a value: \
             {empty:?}",
            rows.len(),
            out.display()
        )
    })))
}

/// The static dist binary: no loader, no shared library, and it runs from a root that holds
/// nothing else (the guests run their `check` that way too).
fn static_step(static_bin: Result<&PathBuf, &anyhow::Error>) -> Tally {
    eprintln!("xtask: the static binary (cargo xtask dist) in a root without glibc");
    let check = static_bin
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(|b| crate::dist::run_without_glibc(b));
    Tally::one(match check {
        Ok(v) if v["kill_path_observable"] == true => Ok(()),
        Ok(v) => Err(format!(
            "the static binary's check says the kill path is unobservable: {v}"
        )),
        Err(e) => Err(format!("the static binary failed: {e:#}")),
    })
}

/// The README's hook table must say what this host runs.
fn readme_step(bin: &Path) -> anyhow::Result<Tally> {
    let out = Command::new(bin).args(["check", "--json"]).output()?;
    let readme = std::fs::read_to_string(readme_path())?;
    Ok(Tally::one(check_readme_column(
        &readme,
        "host",
        &String::from_utf8_lossy(&out.stdout),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_are_parsed() {
        assert_eq!(
            parse_result_line(
                "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.03s"
            ),
            Some((12, 0))
        );
        assert_eq!(
            parse_result_line("test result: FAILED. 3 passed; 2 failed; 0 ignored"),
            Some((3, 2))
        );
        assert_eq!(parse_result_line("running 3 tests"), None);
    }

    #[test]
    fn readme_table_is_checked_against_a_plan() {
        let readme = "x\n| hook | chain | host | 6.1 |\n|---|---|---|---|\n| `oom_kill` | a → b | none | fentry |\n| `task_exit` | c | tp_btf | tp_btf |\n\nafter";
        let plan = |kill: &str| {
            format!(
                r#"{{"plan":[{{"hook":"oom_kill","attach":{kill}}},{{"hook":"task_exit","attach":"tp_btf"}}]}}"#
            )
        };
        assert_eq!(check_readme_column(readme, "host", &plan("null")), Ok(()));
        assert_eq!(
            check_readme_column(readme, "6.1", &plan("\"fentry\"")),
            Ok(())
        );
        let err = check_readme_column(readme, "6.1", &plan("\"kprobe\"")).unwrap_err();
        assert!(
            err.contains("`oom_kill` attaches as `fentry` on 6.1, the run used `kprobe`"),
            "{err}"
        );
        assert!(check_readme_column(readme, "6.12", &plan("null")).is_err());
        assert!(check_readme_column("no table", "host", &plan("null")).is_err());
    }

    #[test]
    fn executables_are_picked_from_test_artifacts_only() {
        let test = r#"{"reason":"compiler-artifact","target":{"kind":["test"],"test":true},"profile":{"test":true},"executable":"/t/e2e-abc","fresh":true}"#;
        let bin = r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"test":true},"profile":{"test":false},"executable":"/t/hog"}"#;
        assert_eq!(test_executable(bin), None);
        let lib = r#"{"reason":"compiler-artifact","profile":{"test":false},"executable":null}"#;
        assert_eq!(test_executable(test), Some("/t/e2e-abc".into()));
        assert_eq!(test_executable(lib), None);
        let no_exe =
            r#"{"reason":"compiler-artifact","target":{"kind":["test"]},"executable":null}"#;
        assert_eq!(test_executable(no_exe), None);
        let script = r#"{"reason":"build-script-executed","package_id":"x","executable":"/t/b"}"#;
        assert_eq!(test_executable(script), None);
        assert_eq!(
            test_executable(r#"{"reason":"build-finished","success":true}"#),
            None
        );
        assert_eq!(test_executable("warning: not JSON"), None);
        let quoted =
            r#"{"reason":"compiler-artifact","target":{"kind":["test"]},"executable":"/t/a\"b"}"#;
        assert_eq!(test_executable(quoted), Some(r#"/t/a"b"#.into()));
    }
}
