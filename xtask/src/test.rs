//! `cargo xtask test`: unit tests, then the root end-to-end suite against the built binary,
//! then one summary line `N passed, N failed` over everything.

use std::{
    collections::VecDeque,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::{Condvar, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::{
    guest::{self, KernelSpec},
    setup::{self, Env},
    tally::{Tally, parse_result_line},
    timings::Timings,
};

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

/// What every guest runs: the oomtrace it tests, the static one its `check` runs as, and the
/// end-to-end executables with the kernel-facing tests of each (`tests/guests.toml`).
#[derive(Clone)]
pub(crate) struct GuestSuite {
    pub(crate) bin: PathBuf,
    pub(crate) static_bin: PathBuf,
    pub(crate) runs: Vec<(PathBuf, Vec<String>)>,
    /// Whether this boot runs `oomtrace check` (and the README column is judged against it):
    /// one part of a split suite does.
    pub(crate) check: bool,
}

/// Seconds each test binary took in the four guest kernels together (the full run of
/// 2026-12-07, 6446c72), and `oomtrace check`'s: only to split a guest's suite into parts of
/// about equal length, so that the two lanes end together. A binary not listed weighs
/// [`UNLISTED_WEIGHT`]; a wrong weight costs time, never a verdict.
const GUEST_WEIGHTS: &[(&str, u32)] = &[
    ("pressure", 516),
    ("livelock", 249),
    ("e2e", 229),
    ("stuck", 171),
    ("global", 144),
    ("unstick", 121),
    ("kills", 84),
    ("group", 50),
    ("hardening", 20),
];
const CHECK_WEIGHT: u32 = 40;
const UNLISTED_WEIGHT: u32 = 100;

/// Into how many boots each kernel's suite is split: `OOMTRACE_GUEST_PARTS`, else 2. Whole
/// kernels were too coarse for two lanes: the last run's second lane sat idle for the last
/// 254 s while the first ran sid.
fn guest_parts_wanted() -> usize {
    std::env::var("OOMTRACE_GUEST_PARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(2)
}

impl GuestSuite {
    /// The kernel-facing tests of `exes` whose name contains `filter` (all without one);
    /// executables with none are left out.
    pub(crate) fn new(
        bin: PathBuf,
        static_bin: PathBuf,
        exes: &[PathBuf],
        filter: Option<&str>,
    ) -> anyhow::Result<Self> {
        let classes = crate::suite::Classes::load()?;
        classes.check_sources()?;
        let runs = exes
            .iter()
            .map(|exe| {
                let tests: Vec<String> = classes
                    .kernel_facing(crate::suite::binary_of(exe))
                    .into_iter()
                    .filter(|t| filter.is_none_or(|f| t.contains(f)))
                    .map(String::from)
                    .collect();
                (exe.clone(), tests)
            })
            .filter(|(_, tests): &(PathBuf, Vec<String>)| !tests.is_empty())
            .collect::<Vec<_>>();
        let host_only = classes.host_only_lines();
        eprintln!(
            "xtask: each guest runs {} of the {} kernel-facing tests; {} host-only tests run on \
             the host alone (tests/guests.toml):\n  {}",
            runs.iter().map(|(_, t)| t.len()).sum::<usize>(),
            classes.kernel_facing_count(),
            host_only.len(),
            host_only.join("\n  ")
        );
        Ok(Self {
            bin,
            static_bin,
            runs,
            check: true,
        })
    }

    /// The suite split into at most `parts` boots of about equal weight ([`GUEST_WEIGHTS`];
    /// the heaviest binary first into the lightest part), each binary whole and in its order;
    /// the first part runs `check`. Never an empty part.
    fn split(&self, parts: usize) -> Vec<GuestSuite> {
        let parts = parts.clamp(1, self.runs.len().max(1));
        let weight = |exe: &Path| {
            let name = crate::suite::binary_of(exe);
            GUEST_WEIGHTS
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(UNLISTED_WEIGHT, |(_, w)| *w)
        };
        let mut by_weight: Vec<usize> = (0..self.runs.len()).collect();
        by_weight.sort_by_key(|&i| std::cmp::Reverse(weight(&self.runs[i].0)));
        let mut load = vec![0u32; parts];
        load[0] = CHECK_WEIGHT;
        let mut part_of = vec![0; self.runs.len()];
        for i in by_weight {
            let lightest = (0..parts).min_by_key(|&p| load[p]).unwrap_or(0);
            load[lightest] += weight(&self.runs[i].0);
            part_of[i] = lightest;
        }
        (0..parts)
            .map(|p| GuestSuite {
                runs: (self.runs.iter().zip(&part_of))
                    .filter(|(_, q)| **q == p)
                    .map(|(r, _)| r.clone())
                    .collect(),
                check: p == 0,
                ..self.clone()
            })
            .filter(|part| part.check || !part.runs.is_empty())
            .collect()
    }

    fn test_count(&self) -> usize {
        self.runs.iter().map(|(_, t)| t.len()).sum()
    }

    /// The script one guest runs: `oomtrace check` — the static dist binary, from a root that
    /// holds nothing but it (no glibc: the copy-and-run case) — then each executable with its
    /// kernel-facing tests named exactly. `xtask-time UPTIME LABEL` lines mark where each part
    /// ended (guest uptime in seconds) for the time table.
    fn script(&self, results: &Path) -> String {
        let mut s = String::from("#!/bin/sh\n");
        s +=
            "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root\n";
        // The tests drive the static release binary here: under emulation the debug build's
        // start (BTF parsing) and event handling cost most of a guest's CPU, and what the
        // guests judge (the kernel's side) is the same in both. The host runs the debug build,
        // with its assertions.
        s += &format!(
            "export OOMTRACE_BIN='{}' OOMTRACE_TEST_SLOWDOWN=20 OOMTRACE_DISPOSABLE_KERNEL=1 \
             RUST_BACKTRACE=1\n",
            self.static_bin.display()
        );
        s += "t() { read up _ < /proc/uptime; echo \"xtask-time $up $1\"; }\n";
        s += "t boot\ncd /\necho \"guest kernel $(uname -r)\"\n";
        if self.check {
            s += &self.check_script(results);
        }
        s += "rc=0\n";
        for (exe, tests) in &self.runs {
            let names: Vec<String> = tests.iter().map(|t| format!("'{t}'")).collect();
            s += &format!(
                "'{}' --exact {} --test-threads=2 || rc=1\nt '{}'\n",
                exe.display(),
                names.join(" "),
                crate::suite::binary_of(exe)
            );
        }
        s += "exit $rc\n";
        s
    }

    /// `oomtrace check`, the static dist binary from a root that holds nothing but it.
    fn check_script(&self, results: &Path) -> String {
        let mut s = format!(
            "r=/tmp/noglibc && mkdir -p $r/proc $r/sys $r/dev && cp '{}' $r/oomtrace \
             && mount -t proc proc $r/proc && mount --rbind /sys $r/sys && mount --rbind /dev $r/dev \
             && chroot $r /oomtrace check --json > '{r}/check.json'\n\
             echo \"static oomtrace check in a root without glibc: exit $?\"\n\
             chroot $r /oomtrace check > '{r}/check.txt' 2>&1\n",
            self.static_bin.display(),
            r = results.display()
        );
        s += "t check\n";
        s
    }
}

/// The `xtask-time` marks of a guest's output as (label, seconds since the previous mark; the
/// first since the guest's clock began: its boot).
fn guest_parts(output: &str) -> Vec<(String, f64)> {
    let mut prev = 0.0;
    output
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("xtask-time ")?.splitn(2, ' ');
            let up: f64 = w.next()?.parse().ok()?;
            let label = w.next()?.to_string();
            let took = (up - prev).max(0.0);
            prev = up;
            Some((label, took))
        })
        .collect()
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

/// Lets guest lanes beyond the first start once the host's own steps are done (each guest is
/// one single-threaded TCG process: one core each, and the host's steps want one too).
pub(crate) struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    pub(crate) fn new(open: bool) -> Self {
        Self {
            open: Mutex::new(open),
            cv: Condvar::new(),
        }
    }

    pub(crate) fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    fn wait(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            open = self.cv.wait(open).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// How many guests run at once: `OOMTRACE_GUEST_LANES`, else 2 (this project's machines have
/// two cores; a guest uses one).
fn guest_lanes() -> usize {
    std::env::var("OOMTRACE_GUEST_LANES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(2)
}

/// One guest's result: its tally and its report line.
struct GuestResult {
    tally: Tally,
    line: String,
}

/// Runs the suite in every guest kernel (or one), `guest_lanes()` at a time: lane 1 at once,
/// the others once `gate` opens. Returns the tally and a report line per kernel, in the
/// matrix's order.
fn run_matrix(
    suite: &GuestSuite,
    only: Option<&str>,
    boots: usize,
    gate: &Gate,
    timings: &Timings,
) -> anyhow::Result<(Tally, Vec<String>)> {
    let tools = {
        let _apt = guest::APT.lock().unwrap_or_else(|e| e.into_inner());
        timings.time("guests 1", "QEMU and busybox (cache)", guest::tools)?
    };
    let kernels: Vec<KernelSpec> = guest::load_kernels()?
        .into_iter()
        .filter(|k| only.is_none_or(|o| o == k.name))
        .collect();
    anyhow::ensure!(
        !kernels.is_empty(),
        "no kernel named {only:?} in xtask/matrix.toml"
    );
    // Each kernel `boots` times, the same kernel's boots apart so that lanes run different ones;
    // each boot of the suite in parts (a boot of `check` alone is one part).
    let parts = suite.split(guest_parts_wanted());
    let order: Vec<(&KernelSpec, usize)> = (0..boots.max(1))
        .flat_map(|_| &kernels)
        .flat_map(|k| (0..parts.len()).map(move |p| (k, p)))
        .collect();
    let queue = Mutex::new(order.iter().copied().enumerate().collect::<VecDeque<_>>());
    let results: Mutex<Vec<Option<GuestResult>>> = Mutex::new(order.iter().map(|_| None).collect());
    let lanes = guest_lanes().min(order.len());
    std::thread::scope(|s| {
        for lane in 1..=lanes {
            let (queue, results, tools, parts) = (&queue, &results, &tools, &parts);
            s.spawn(move || {
                if lane > 1 {
                    gate.wait();
                }
                let lane_name = format!("guests {lane}");
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some((i, (spec, p))) = next else { break };
                    let name = match parts.len() {
                        1 => spec.name.clone(),
                        n => format!("{} {}/{n}", spec.name, p + 1),
                    };
                    // Repeated boots and parts of one kernel get their own results dir.
                    let dir = if boots > 1 || parts.len() > 1 {
                        format!("{}-{i}", spec.name)
                    } else {
                        spec.name.clone()
                    };
                    let part = &parts[p];
                    let r = run_guest(tools, spec, &name, &dir, part, &lane_name, timings);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    let mut tally = Tally::default();
    let mut report = Vec::new();
    for r in results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
    {
        tally.add(r.tally);
        report.push(r.line);
    }
    Ok((tally, report))
}

/// A guest's kernel and initramfs (from the cache, else built), one guest at a time.
fn prepare_kernel(
    tools: &guest::Tools,
    spec: &KernelSpec,
    lane: &str,
    timings: &Timings,
) -> anyhow::Result<guest::Prepared> {
    let _apt = guest::APT.lock().unwrap_or_else(|e| e.into_inner());
    timings.time(
        lane,
        &format!("{}: kernel and initramfs (cache)", spec.name),
        || guest::prepare(tools, spec),
    )
}

/// One guest: prepare its kernel (cached), boot it, run the suite, print its output as one
/// block, and check the README's column for it.
#[allow(clippy::too_many_arguments)]
fn run_guest(
    tools: &guest::Tools,
    spec: &KernelSpec,
    name: &str,
    dir: &str,
    suite: &GuestSuite,
    lane: &str,
    timings: &Timings,
) -> GuestResult {
    let failed = |line: String| GuestResult {
        tally: Tally {
            broken: 1,
            ..Tally::default()
        },
        line,
    };
    let kernel = match prepare_kernel(tools, spec, lane, timings) {
        Ok(k) => k,
        Err(e) => return failed(format!("{name}: FAILED TO PREPARE: {e:#}")),
    };
    // Each guest's target is its own; the share (the cargo target dir) holds every result.
    let Some(target) = suite.bin.parent().and_then(Path::parent) else {
        return failed(format!("{name}: the oomtrace binary has no target dir"));
    };
    // Not under /root, /tmp, /run or /var/tmp: the guest mounts tmpfs there.
    let results = target.join("vm-results").join(dir);
    eprintln!(
        "xtask: booting {name} ({}) under QEMU/TCG in lane {lane}",
        kernel.release
    );
    let script = suite.script(&results);
    let boot = || {
        let started = Instant::now();
        let run = guest::run_in_guest(
            tools,
            &kernel,
            &script,
            target,
            &results,
            Duration::from_secs(2700),
        );
        (started, run)
    };
    // A guest that died before running anything (an early-boot oops under TCG was seen
    // once in a few dozen boots) is booted once more; the tests themselves never are.
    let (started, run) = match boot() {
        (started, Err(e)) if !results.join("output.log").exists() => {
            eprintln!("xtask: {name} never ran the suite ({e:#}); booting it once more");
            timings.record(
                lane,
                &format!("{name}: failed boot"),
                started,
                started.elapsed(),
            );
            let _ = std::fs::copy(
                results.join("console.log"),
                target.join(format!("vm-{dir}-failed-boot.log")),
            );
            boot()
        }
        other => other,
    };
    let run = match run {
        Ok(run) => run,
        Err(e) => {
            timings.record(
                lane,
                &format!("{name}: did not finish"),
                started,
                started.elapsed(),
            );
            return failed(format!("{name} ({}): FAILED TO RUN: {e:#}", kernel.release));
        }
    };
    record_guest_parts(timings, lane, name, started, &run);
    let (t, troubles) = judge_guest(name, &spec.name, suite, &results, &run);
    let plan = match suite.check {
        true => {
            plan_summary(&std::fs::read_to_string(results.join("check.json")).unwrap_or_default())
        }
        false => suite
            .runs
            .iter()
            .map(|(e, _)| crate::suite::binary_of(e))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let line = format!(
        "{name} ({}): {} passed, {} failed, exit {}, {:.0} s, {troubles} kernel oopses (console {}); {}",
        kernel.release,
        t.passed,
        t.failed + t.broken,
        run.exit_code,
        run.wall.as_secs_f64(),
        run.console.display(),
        plan
    );
    GuestResult { tally: t, line }
}

/// A guest's run in the timings: the whole, then each part its output times.
fn record_guest_parts(
    timings: &Timings,
    lane: &str,
    name: &str,
    started: Instant,
    run: &guest::GuestRun,
) {
    timings.record(lane, &format!("{}: the whole run", name), started, run.wall);
    let mut at = started;
    for (label, secs) in guest_parts(&run.output) {
        let took = Duration::from_secs_f64(secs);
        timings.record(lane, &format!("{}:   {label}", name), at, took);
        at += took;
    }
}

/// A guest's tally from its output (test binaries' result lines, `check` alone for a boot),
/// its check.json against the README's column, and its console; with the count of oopses.
fn judge_guest(
    name: &str,
    kernel: &str,
    suite: &GuestSuite,
    results: &Path,
    run: &guest::GuestRun,
) -> (Tally, usize) {
    let mut t = Tally::default();
    let mut results_seen = 0;
    {
        let mut out = std::io::stdout().lock();
        for l in run.output.lines() {
            let _ = writeln!(out, "[{}] {l}", name);
            if let Some((p, f)) = parse_result_line(l) {
                t.passed += p;
                t.failed += f;
                results_seen += 1;
            }
        }
    }
    if run.exit_code != 0 && t.failed == 0 {
        t.broken += 1;
    }
    if suite.runs.is_empty() {
        // A boot of `cargo xtask vm --boots N`: it ran `check` alone.
        t.add(Tally::one(if run.exit_code == 0 {
            Ok(())
        } else {
            Err(format!("{}: check exited {}", name, run.exit_code))
        }));
    } else if results_seen < suite.runs.len() {
        eprintln!(
            "xtask: {}: {results_seen} test binaries reported a result, {} ran",
            name,
            suite.runs.len()
        );
        t.broken += 1;
    }
    if suite.check {
        let check = std::fs::read_to_string(results.join("check.json")).unwrap_or_default();
        let readme = std::fs::read_to_string(readme_path()).unwrap_or_default();
        if let Err(e) = check_readme_column(&readme, kernel, &check) {
            eprintln!("xtask: {e}");
            t.broken += 1;
        }
    }
    let troubles = oopses(&run.console, name);
    t.broken += u64::from(troubles > 0);
    (t, troubles)
}

/// How many lines of a guest's console say its kernel went wrong; each is printed.
fn oopses(console: &Path, kernel: &str) -> usize {
    let text = std::fs::read(console).unwrap_or_default();
    let troubles = guest::console_troubles(&String::from_utf8_lossy(&text));
    for l in &troubles {
        eprintln!("xtask: {kernel}: the guest kernel says: {l}");
    }
    troubles.len()
}

/// Prints the per-kernel report, the time table and the closing `N passed, N failed` line.
fn conclude(tally: Tally, report: &[String], timings: &Timings) -> ExitCode {
    println!();
    for line in report {
        println!("kernel {line}");
    }
    print!("{}", timings.table());
    let failed = tally.failed + tally.broken;
    println!("{} passed, {failed} failed", tally.passed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `cargo xtask vm`: the kernel-facing tests in the guests; with `boots`, only `check`, each
/// kernel booted that many times (a reliability count: every boot must run and no kernel
/// may oops).
pub(crate) fn run_vm_only(
    kernel: Option<&str>,
    filter: Option<&str>,
    boots: Option<usize>,
) -> anyhow::Result<ExitCode> {
    let timings = Timings::new();
    crate::leftovers::sweep();
    let mut env = timings.time("host", "set-up (toolchain, bpf-linker)", setup::ensure)?;
    let (bin, exes, static_bin) = build_all(&mut env, &timings)?;
    let mut suite = GuestSuite::new(bin, static_bin?, &exes, filter)?;
    if boots.is_some() {
        suite.runs.clear();
    } else {
        anyhow::ensure!(
            suite.test_count() > 0,
            "no kernel-facing test matches {filter:?} (tests/guests.toml)"
        );
    }
    let (tally, report) = run_matrix(
        &suite,
        kernel,
        boots.unwrap_or(1),
        &Gate::new(true),
        &timings,
    )?;
    Ok(conclude(tally, &report, &timings))
}

/// The builds everything else runs: the debug oomtrace, the end-to-end tests (cargo builds
/// the package's binaries with them: the hog, the soak and the bench), the static binary.
fn build_all(
    env: &mut Env,
    timings: &Timings,
) -> anyhow::Result<(PathBuf, Vec<PathBuf>, anyhow::Result<PathBuf>)> {
    let bin = timings.time("host", "build oomtrace (debug)", || build_oomtrace(env))?;
    // Its eBPF object serves every later build (tests, clippy, release, fuzz targets).
    env.share_ebpf_object("debug")?;
    let exes = timings.time(
        "host",
        "build the end-to-end tests, hog, soak, bench",
        || build_e2e(env),
    )?;
    let static_bin = timings.time("host", "build the static oomtrace (release)", || {
        crate::dist::build_static(env)
    });
    Ok((bin, exes, static_bin))
}

pub(crate) fn run(filter: Option<&str>, with_vm: bool) -> anyhow::Result<ExitCode> {
    let timings = Timings::new();
    crate::leftovers::sweep();
    let mut env = timings.time("host", "set-up (toolchain, bpf-linker)", setup::ensure)?;
    // The builds come first: the guests need their products, and builds use both cores.
    let (bin, exes, static_bin) = build_all(&mut env, &timings)?;
    let mut tally = Tally::default();
    let mut report = Vec::new();
    // The guests: those with kernel-facing tests that match the filter.
    let suite = match (&static_bin, with_vm) {
        (Ok(s), true) => match GuestSuite::new(bin.clone(), s.clone(), &exes, filter) {
            Ok(suite) if suite.test_count() == 0 => {
                eprintln!("xtask: no kernel-facing test matches {filter:?}: no guest boots");
                None
            }
            Ok(suite) => Some(Ok(suite)),
            Err(e) => Some(Err(e)),
        },
        (Err(e), true) => Some(Err(anyhow::anyhow!("no static binary: {e:#}"))),
        (_, false) => None,
    };
    let gate = Gate::new(false);
    std::thread::scope(|s| -> anyhow::Result<()> {
        let matrix = suite.as_ref().map(|suite| {
            let (gate, timings) = (&gate, &timings);
            s.spawn(move || match suite {
                Ok(suite) => run_matrix(suite, None, 1, gate, timings),
                Err(e) => Err(anyhow::anyhow!("{e:#}")),
            })
        });
        let host = host_steps(
            &env,
            filter,
            &bin,
            &exes,
            static_bin.as_ref(),
            &gate,
            &timings,
        );
        gate.open();
        if let Some(m) = matrix {
            match m.join() {
                Ok(Ok((t, r))) => {
                    tally.add(t);
                    report = r;
                }
                Ok(Err(e)) => {
                    // A machine that cannot boot guests fails the matrix loudly.
                    eprintln!("xtask: the kernel matrix could not run: {e:#}");
                    tally.broken += 1;
                    report.push(format!("matrix FAILED TO RUN: {e:#}"));
                }
                Err(_) => {
                    tally.broken += 1;
                    report.push("matrix FAILED TO RUN: its thread panicked".into());
                }
            }
        }
        tally.add(host?);
        Ok(())
    })?;
    Ok(conclude(tally, &report, &timings))
}

/// Everything the host runs itself, one step after the other. Once the steps whose verdicts
/// depend on having a core (the end-to-end tests' latencies, the soak's lost events) are done,
/// `gate` lets the second guest lane start beside the rest (lints, fuzzing, the bench's unjudged
/// quick run).
fn host_steps(
    env: &Env,
    filter: Option<&str>,
    bin: &Path,
    exes: &[PathBuf],
    static_bin: Result<&PathBuf, &anyhow::Error>,
    gate: &Gate,
    timings: &Timings,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let t =
        |step: &str, f: &mut dyn FnMut() -> anyhow::Result<Tally>| timings.time("host", step, f);
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
    tally.add(t("unit tests", &mut || {
        run_tallied(&mut unit, "unit tests (no root needed)")
    })?);
    // promtool check and test rules on contrib/prometheus (Debian's prometheus package,
    // unpacked into the cache); its binaries go to the fleet end-to-end test below.
    let (prom_tally, prom_env) =
        timings.time("host", "promtool", || crate::prometheus::in_test(filter));
    tally.add(prom_tally);
    // Debian's runc, for the real-runtime end-to-end test (tests/tests/runtime.rs).
    let mut prom_env = prom_env;
    prom_env.extend(crate::runc::test_env());
    if !setup::is_root() {
        eprintln!(
            "xtask: the end-to-end tests cause real OOM kills in sandbox cgroups and need root; \
             they will fail here (run `sudo -E cargo xtask test`)"
        );
    }
    for exe in exes {
        let mut args: Vec<String> = Vec::new();
        if let Some(f) = filter {
            args.push(f.to_string());
        }
        let mut cmd = setup::as_root(exe, &args)?;
        cmd.env("OOMTRACE_BIN", bin).env("RUST_BACKTRACE", "1");
        cmd.envs(prom_env.iter().map(|(k, v)| (k, v)));
        let name = crate::suite::binary_of(exe);
        tally.add(t(&format!("end-to-end {name} (root)"), &mut || {
            run_tallied(&mut cmd, &format!("end-to-end tests ({name}, as root)"))
        })?);
    }
    if filter.is_none_or(|f| "soak".contains(f)) {
        tally.add(t("soak (2 min)", &mut || soak_step(env, bin))?);
    }
    gate.open();
    // The lint habit: rustfmt, clippy -D warnings on every crate (the eBPF one for its target).
    // Its verdict does not depend on having a core either: before the gate it kept the second
    // guest lane closed for its 100 s.
    if filter.is_none() {
        tally.add(t("lints (rustfmt, clippy)", &mut || {
            Ok(crate::lint::run(env))
        })?);
    }
    // Ten seconds of each fuzz target (`cargo xtask fuzz`): one test, passed if none crashed.
    // Its verdict does not depend on having a core, so it runs beside the second guest lane:
    // before the gate it kept that lane closed for its 5 minutes of building on a fresh machine.
    tally.add(t("fuzz (10 s per target)", &mut || {
        Ok(crate::fuzz::in_test(env, filter))
    })?);
    if filter.is_none_or(|f| "bench".contains(f)) {
        tally.add(t("bench, quick run", &mut || bench_step(env, bin))?);
    }
    tally.add(t("static binary in a root without glibc", &mut || {
        Ok(static_step(static_bin))
    })?);
    tally.add(t("README hook table, host column", &mut || {
        readme_step(bin)
    })?);
    Ok(tally)
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

    fn suite_of(binaries: &[&str]) -> GuestSuite {
        GuestSuite {
            bin: "/t/oomtrace".into(),
            static_bin: "/t/static".into(),
            runs: binaries
                .iter()
                .map(|b| {
                    (
                        PathBuf::from(format!("/t/deps/{b}-0123abcd")),
                        vec![format!("{b}_test")],
                    )
                })
                .collect(),
            check: true,
        }
    }

    fn names(part: &GuestSuite) -> Vec<&str> {
        part.runs
            .iter()
            .map(|(e, _)| crate::suite::binary_of(e))
            .collect()
    }

    #[test]
    fn a_guest_suite_splits_into_balanced_parts_each_binary_once_in_order() {
        let all = [
            "e2e",
            "global",
            "group",
            "kills",
            "hardening",
            "livelock",
            "unstick",
            "stuck",
            "pressure",
            "newcomer",
        ];
        let parts = suite_of(&all).split(2);
        assert_eq!(parts.len(), 2);
        assert!(
            parts[0].check && !parts[1].check,
            "only the first runs check"
        );
        let (a, b) = (names(&parts[0]), names(&parts[1]));
        // Every binary in exactly one part, each part in the suite's order.
        let mut both: Vec<&str> = a.iter().chain(&b).copied().collect();
        both.sort();
        let mut want = all.to_vec();
        want.sort();
        assert_eq!(both, want);
        for part in [&a, &b] {
            let pos: Vec<usize> = part
                .iter()
                .map(|n| all.iter().position(|x| x == n).unwrap())
                .collect();
            assert!(pos.windows(2).all(|w| w[0] < w[1]), "{part:?}");
        }
        // The two heaviest apart, and the weights within a tenth of each other.
        assert_ne!(a.contains(&"livelock"), b.contains(&"livelock"));
        assert_ne!(a.contains(&"livelock"), a.contains(&"pressure"));
        let w = |p: &[&str]| -> u32 {
            p.iter()
                .map(|n| {
                    GUEST_WEIGHTS
                        .iter()
                        .find(|(x, _)| x == n)
                        .map_or(UNLISTED_WEIGHT, |(_, w)| *w)
                })
                .sum()
        };
        let (wa, wb) = (w(&a) + CHECK_WEIGHT, w(&b));
        assert!(
            wa.abs_diff(wb) * 10 <= wa.max(wb),
            "{wa} against {wb}: {a:?} / {b:?}"
        );
    }

    #[test]
    fn a_suite_too_small_to_split_stays_whole() {
        let one = suite_of(&["kills"]).split(2);
        assert_eq!(one.len(), 1);
        assert!(one[0].check);
        assert_eq!(names(&one[0]), ["kills"]);
        // A boot of `check` alone (`cargo xtask vm --boots`): one part, with check.
        let none = suite_of(&[]).split(2);
        assert_eq!(none.len(), 1);
        assert!(none[0].check && none[0].runs.is_empty());
        assert_eq!(suite_of(&["e2e", "kills"]).split(1).len(), 1);
    }

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
