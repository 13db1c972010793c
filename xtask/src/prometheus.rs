//! Prometheus and promtool for `cargo xtask test`: Debian's `prometheus` package, downloaded
//! with `apt-get download` and unpacked with `dpkg -x` into the cache, as QEMU is
//! ([`guest::fetch_unpack`]); never installed (its maintainer scripts would start a server).
//! Both are Go binaries that need only libc; the package's other dependencies serve its web UI,
//! which nothing here uses.
//!
//! With them, `cargo xtask test` checks and unit-tests the shipped rules of contrib/prometheus
//! (`promtool check rules`, `check config`, `test rules`), and hands their paths to the fleet
//! end-to-end test (tests/tests/fleet.rs) in `OOMTRACE_PROMTOOL` and `OOMTRACE_PROMETHEUS`.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::Context as _;

use crate::{guest, setup, tally::Tally};

/// The environment variables the fleet test finds the binaries by.
pub(crate) const PROMTOOL_VAR: &str = "OOMTRACE_PROMTOOL";
pub(crate) const PROMETHEUS_VAR: &str = "OOMTRACE_PROMETHEUS";

/// The unpacked package.
pub(crate) struct Prometheus {
    root: PathBuf,
}

impl Prometheus {
    pub(crate) fn promtool(&self) -> PathBuf {
        self.root.join("usr/bin/promtool")
    }

    pub(crate) fn server(&self) -> PathBuf {
        self.root.join("usr/bin/prometheus")
    }

    /// `OOMTRACE_PROMTOOL` and `OOMTRACE_PROMETHEUS` for the end-to-end tests.
    pub(crate) fn test_env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            (PROMTOOL_VAR, self.promtool().into_os_string()),
            (PROMETHEUS_VAR, self.server().into_os_string()),
        ]
    }
}

/// Downloads and unpacks Debian's prometheus package once (into `<cache>/prometheus`; the .deb
/// is kept with QEMU's in `<cache>/vm/debs`), and checks that both binaries run.
pub(crate) fn ensure() -> anyhow::Result<Prometheus> {
    let p = Prometheus {
        root: setup::cache_dir()?.join("prometheus"),
    };
    guest::unpack_debian_once("prometheus", &p.root)?;
    for bin in [p.promtool(), p.server()] {
        guest::runs_version(&bin)?;
    }
    Ok(p)
}

/// contrib/prometheus.
pub(crate) fn contrib_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/prometheus")
}

/// Files of contrib/prometheus whose names end in `suffix`, sorted.
fn contrib_files(suffix: &str) -> anyhow::Result<Vec<PathBuf>> {
    let dir = contrib_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The rule files (`*.rules.yml`, `*.alerts.yml`).
pub(crate) fn rule_files() -> anyhow::Result<Vec<PathBuf>> {
    let mut files = contrib_files(".rules.yml")?;
    files.extend(contrib_files(".alerts.yml")?);
    Ok(files)
}

/// Runs one promtool command in contrib/prometheus, echoing what it says; whether it passed.
fn promtool(p: &Prometheus, args: &[&str], files: &[PathBuf]) -> bool {
    let what = format!("promtool {}", args.join(" "));
    eprintln!("xtask: {what} (contrib/prometheus)");
    let out = Command::new(p.promtool())
        .args(args)
        .args(files.iter().map(|f| f.file_name().unwrap_or(f.as_os_str())))
        .current_dir(contrib_dir())
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) => {
            print!("{}", String::from_utf8_lossy(&out.stdout));
            print!("{}", String::from_utf8_lossy(&out.stderr));
            if !out.status.success() {
                eprintln!("xtask: {what}: FAILED ({})", out.status);
            }
            out.status.success()
        }
        Err(e) => {
            eprintln!("xtask: {what}: cannot start promtool: {e}");
            false
        }
    }
}

/// The steps of `cargo xtask test`: the package is fetched (its paths returned for the fleet
/// test), then `promtool check rules` on the rule files, `promtool check config` on the example
/// configuration and `promtool test rules` on each `*_test.yml`, one test each (skipped when a
/// filter is given that is not part of "promtool rules prometheus": `cargo xtask test
/// prometheus` runs them and the fleet test). A package that cannot be had fails one test
/// here, and the fleet test fails for want of the binaries.
pub(crate) fn in_test(filter: Option<&str>) -> (Tally, Vec<(&'static str, OsString)>) {
    let mut tally = Tally::default();
    let p = match ensure() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("xtask: Debian's prometheus package could not be had: {e:#}");
            tally.broken += 1;
            return (tally, Vec::new());
        }
    };
    if filter.is_some_and(|f| !"promtool rules prometheus".contains(f)) {
        return (tally, p.test_env());
    }
    let mut count = |ok: bool| {
        if ok {
            tally.passed += 1;
        } else {
            tally.failed += 1;
        }
    };
    match (rule_files(), contrib_files("_test.yml")) {
        (Ok(rules), Ok(tests)) if !rules.is_empty() && !tests.is_empty() => {
            count(promtool(&p, &["check", "rules"], &rules));
            count(promtool(
                &p,
                &["check", "config"],
                &[PathBuf::from("prometheus.example.yml")],
            ));
            for t in tests {
                count(promtool(&p, &["test", "rules"], &[t]));
            }
        }
        (rules, tests) => {
            eprintln!(
                "xtask: contrib/prometheus has no rule files or no *_test.yml: {rules:?} {tests:?}"
            );
            tally.broken += 1;
        }
    }
    (tally, p.test_env())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Names after `key: ` on lines of a YAML text (a line scan, enough for these files).
    fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
        text.lines()
            .filter_map(|l| {
                l.trim()
                    .trim_start_matches("- ")
                    .strip_prefix(key)?
                    .strip_prefix(':')
            })
            .map(str::trim)
            .collect()
    }

    /// Every alert and recording rule shipped has a promtool unit test.
    #[test]
    fn every_rule_is_unit_tested() {
        let dir = contrib_dir();
        let alerts = read(&dir.join("oomtrace.alerts.yml"));
        let alert_tests = read(&dir.join("alerts_test.yml"));
        let names = values(&alerts, "alert");
        assert!(names.len() >= 5, "{names:?}");
        for a in names {
            assert!(
                values(&alert_tests, "alertname").contains(&a),
                "alert {a} has no test in alerts_test.yml"
            );
        }
        let rules = read(&dir.join("oomtrace.rules.yml"));
        let rule_tests = read(&dir.join("rules_test.yml"));
        let records = values(&rules, "record");
        assert!(!records.is_empty());
        for r in records {
            assert!(
                values(&rule_tests, "expr").contains(&r),
                "recording rule {r} has no test in rules_test.yml"
            );
        }
    }

    /// The DaemonSet asks for the capabilities the systemd unit bounds oomtrace to, and SETPCAP
    /// (which oomtrace needs to drop its own after attaching), no more.
    #[test]
    fn the_daemonset_has_the_units_capabilities() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let unit = read(&root.join("contrib/oomtrace.service"));
        let mut from_unit: Vec<String> = unit
            .lines()
            .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
            .expect("the unit bounds capabilities")
            .split_whitespace()
            .map(|c| c.trim_start_matches("CAP_").to_string())
            .collect();
        from_unit.push("SETPCAP".into());
        let ds = read(&root.join("contrib/kubernetes/daemonset.yaml"));
        let add = ds
            .lines()
            .skip_while(|l| l.trim() != "add:")
            .skip(1)
            .take_while(|l| l.trim_start().starts_with("- "))
            .map(|l| l.trim().trim_start_matches("- ").to_string());
        let mut from_ds: Vec<String> = add.collect();
        from_unit.sort();
        from_unit.dedup();
        from_ds.sort();
        assert_eq!(from_ds, from_unit);
        assert!(!ds.contains("privileged: true"));
    }
}
