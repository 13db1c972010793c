//! Fixtures for oomtrace's root-only end-to-end tests: a sandbox memory cgroup, a process that
//! gets OOM-killed in it, and the oomtrace binary watching.
//!
//! Rules these fixtures keep: OOM kills happen only in a memory cgroup we created with a small
//! limit; every cgroup and process we create is removed in `Drop`, also when a test panics; we
//! only ever kill processes we started, by pid; other tests may cause OOM kills at the same time,
//! so everything is matched by our own cgroup id and pids.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

pub mod fuse;
// The same scratch directory type as oomtrace's unit tests: one source for both crates.
#[path = "../../oomtrace/src/scratch.rs"]
mod scratch;
pub use scratch::ScratchDir;
mod procs;
mod sandbox;
pub mod unstick_fixtures;
mod watch;
pub use procs::*;
pub use sandbox::*;
pub use watch::*;

/// Fails the test loudly unless we are root: CI must never mistake "could not run" for "passed".
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "the end-to-end tests load eBPF programs and cause real OOM kills in sandbox cgroups: \
         they need root (run `cargo xtask test` as root)"
    );
}

/// The oomtrace binary under test (`OOMTRACE_BIN`, set by `cargo xtask test`).
pub fn oomtrace_bin() -> PathBuf {
    let bin = std::env::var_os("OOMTRACE_BIN").map(PathBuf::from).expect(
        "OOMTRACE_BIN is not set: run the end-to-end tests with `cargo xtask test`, which builds \
         the binary and points the tests at it",
    );
    assert!(
        bin.is_file(),
        "OOMTRACE_BIN={} does not exist",
        bin.display()
    );
    bin
}

/// How much slower than native this runs: `OOMTRACE_TEST_SLOWDOWN` (the QEMU/TCG guests of
/// `cargo xtask vm` set it; software emulation is 10–30× slower). Scales waits and the flag
/// latency bound, never what is asserted about the kernel's behaviour.
pub fn slowdown() -> u32 {
    std::env::var("OOMTRACE_TEST_SLOWDOWN")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&f| f >= 1)
        .unwrap_or(1)
}

/// A wait scaled by [`slowdown`].
pub fn scaled(d: Duration) -> Duration {
    d * slowdown()
}

/// CLOCK_MONOTONIC now (the clock of the kernel's timestamps), in ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
