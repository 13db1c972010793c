//! Pass and fail counts of a test run, from libtest's result lines and single checks: what
//! every step of `cargo xtask test` reports. A leaf: it imports nothing of the crate.

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
