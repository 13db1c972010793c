//! Which end-to-end tests run where: `tests/guests.toml` classifies every `#[test]` of
//! `tests/tests/*.rs` as kernel-facing (the host and every guest kernel run it) or host-only
//! (the host run proves it; the guests skip it). A test missing from the file fails the unit
//! tests below, so a new one cannot slip into the guests' skip list or out of the matrix by
//! accident.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// `tests/guests.toml`: binary → test → reason, under `kernel` or `host`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Classes {
    #[serde(default)]
    kernel: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    host: BTreeMap<String, BTreeMap<String, String>>,
}

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests")
}

impl Classes {
    pub(crate) fn parse(text: &str) -> anyhow::Result<Self> {
        let c: Classes = toml::from_str(text).map_err(|e| anyhow::anyhow!("guests.toml: {e}"))?;
        for (bin, tests) in c.kernel.iter().chain(&c.host) {
            if let Some((name, _)) = tests.iter().find(|(_, why)| why.trim().is_empty()) {
                bail!("guests.toml: {bin}::{name} has no reason");
            }
        }
        for (bin, tests) in &c.kernel {
            if let Some(name) = tests
                .keys()
                .find(|n| c.host.get(bin).is_some_and(|h| h.contains_key(*n)))
            {
                bail!("guests.toml: {bin}::{name} is both kernel-facing and host-only");
            }
        }
        Ok(c)
    }

    pub(crate) fn load() -> anyhow::Result<Self> {
        let path = tests_dir().join("guests.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text)
    }

    /// The kernel-facing tests of one test binary (`e2e`, `stuck`, …), sorted.
    pub(crate) fn kernel_facing(&self, binary: &str) -> Vec<&str> {
        self.kernel
            .get(binary)
            .map(|t| t.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Every classified test as `binary::name`, with whether it is kernel-facing.
    fn all(&self) -> BTreeMap<String, bool> {
        let mut all = BTreeMap::new();
        for (kernel, table) in [(true, &self.kernel), (false, &self.host)] {
            for (bin, tests) in table {
                for name in tests.keys() {
                    all.insert(format!("{bin}::{name}"), kernel);
                }
            }
        }
        all
    }

    /// The host-only tests with their reasons, as `binary::name: why` lines.
    pub(crate) fn host_only_lines(&self) -> Vec<String> {
        self.host
            .iter()
            .flat_map(|(bin, t)| t.iter().map(move |(n, why)| format!("{bin}::{n}: {why}")))
            .collect()
    }

    /// Fails, naming each, when a test under tests/tests/ is not classified exactly once or a
    /// classified one is gone.
    pub(crate) fn check_sources(&self) -> anyhow::Result<()> {
        let wrong = mismatches(self, &tests_in_sources()?);
        if !wrong.is_empty() {
            bail!("{}", wrong.join("; "));
        }
        Ok(())
    }

    /// How many tests are kernel-facing.
    pub(crate) fn kernel_facing_count(&self) -> usize {
        self.kernel.values().map(BTreeMap::len).sum()
    }
}

/// The test binary a cargo-built executable is (`…/deps/stuck-0123abcd` → `stuck`).
pub(crate) fn binary_of(exe: &Path) -> &str {
    let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.rsplit_once('-').map_or(name, |(bin, _)| bin)
}

/// The `#[test]` functions of one test source file, in order: the name of the first `fn`
/// after each `#[test]` line (attributes and doc comments may come between).
pub(crate) fn test_functions(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut armed = false;
    for line in source.lines().map(str::trim) {
        if line == "#[test]" {
            armed = true;
            continue;
        }
        if armed && let Some(rest) = line.strip_prefix("fn ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
            armed = false;
        }
    }
    out
}

/// Every `#[test]` under tests/tests/, as `binary::name`.
fn tests_in_sources() -> anyhow::Result<Vec<String>> {
    let mut all = Vec::new();
    let dir = tests_dir().join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    for f in files {
        let bin = f.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        let text = std::fs::read_to_string(&f)?;
        all.extend(
            test_functions(&text)
                .into_iter()
                .map(|n| format!("{bin}::{n}")),
        );
    }
    Ok(all)
}

/// What is wrong between the sources and the classification: tests not classified, and
/// classified tests that no longer exist.
pub(crate) fn mismatches(classes: &Classes, sources: &[String]) -> Vec<String> {
    let classified = classes.all();
    let mut wrong: Vec<String> = sources
        .iter()
        .filter(|t| !classified.contains_key(*t))
        .map(|t| format!("{t} is not classified in tests/guests.toml"))
        .collect();
    wrong.extend(
        classified
            .keys()
            .filter(|t| !sources.contains(t))
            .map(|t| format!("{t} is in tests/guests.toml but no such test exists")),
    );
    let mut seen = std::collections::BTreeSet::new();
    wrong.extend(
        sources
            .iter()
            .filter(|t| !seen.insert(*t))
            .map(|t| format!("{t} is defined twice")),
    );
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_end_to_end_test_is_classified_once() {
        let classes = Classes::load().unwrap();
        let sources = tests_in_sources().unwrap();
        assert!(sources.len() > 20, "found only {sources:?}");
        if let Err(e) = classes.check_sources() {
            panic!("{e}");
        }
        assert!(classes.kernel_facing_count() > 0);
    }

    #[test]
    fn test_functions_are_found_past_attributes_and_comments() {
        let src = "fn helper() {}\n#[test]\n/// doc\n#[cfg(x)]\nfn first() {}\n\n#[test]\nfn second_one() -> () {}\nfn not_a_test() {}\n";
        assert_eq!(test_functions(src), ["first", "second_one"]);
    }

    #[test]
    fn a_missing_a_stale_and_a_double_entry_are_named() {
        let c = Classes::parse(
            "[kernel.e2e]\na = \"why\"\ngone = \"why\"\n[host.canary]\nb = \"why\"\n",
        )
        .unwrap();
        let sources = ["e2e::a", "canary::b", "canary::new", "canary::b"].map(String::from);
        let wrong = mismatches(&c, &sources);
        assert_eq!(
            wrong,
            [
                "canary::new is not classified in tests/guests.toml",
                "e2e::gone is in tests/guests.toml but no such test exists",
                "canary::b is defined twice",
            ]
        );
        assert_eq!(c.kernel_facing("e2e"), ["a", "gone"]);
        assert!(c.kernel_facing("canary").is_empty());
    }

    #[test]
    fn a_test_in_both_classes_or_without_a_reason_is_refused() {
        let both = Classes::parse("[kernel.e2e]\na = \"x\"\n[host.e2e]\na = \"y\"\n");
        assert!(both.unwrap_err().to_string().contains("both"));
        let bare = Classes::parse("[host.e2e]\na = \" \"\n");
        assert!(bare.unwrap_err().to_string().contains("no reason"));
        assert!(Classes::parse("[guest.e2e]\na = \"x\"\n").is_err());
    }

    #[test]
    fn binaries_are_named_by_their_source_file() {
        assert_eq!(
            binary_of(Path::new("/t/debug/deps/stuck-0123abcd")),
            "stuck"
        );
        assert_eq!(binary_of(Path::new("/t/debug/deps/e2e-ff")), "e2e");
    }
}
