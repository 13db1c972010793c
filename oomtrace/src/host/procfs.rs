//! Readers of `/proc` that more than one part of `host` (and the session) need: a process's start
//! time, and the clock ticks /proc counts in. A leaf of `host`.

use std::path::Path;

/// Clock ticks per second of /proc's times (USER_HZ).
pub(crate) fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Start time of `pid` (ns since boot, at clock-tick precision) from `/proc/PID/stat`.
pub(crate) fn start_ns_of(proc_root: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // Fields after the comm, which may itself contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 22 overall is the 20th after the comm (state is the 1st).
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    Some(ticks * (1_000_000_000 / clock_ticks()))
}

/// Whether a start time from the kernel (ns) and one from /proc (ticks) are the same moment.
pub(crate) fn same_start(kernel_ns: u64, proc_ns: u64) -> bool {
    let tick = 1_000_000_000 / clock_ticks();
    kernel_ns / tick == proc_ns / tick
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times_compare_at_tick_precision() {
        let tick = 1_000_000_000 / clock_ticks();
        assert!(same_start(5 * tick + 7, 5 * tick));
        assert!(!same_start(6 * tick + 7, 5 * tick));
    }
}
