//! The loop's own timer: a `timerfd` armed at the absolute `CLOCK_MONOTONIC` time of the next
//! wake (the clock of the kernel's event stamps and of the tracker's deadlines).
//!
//! Not tokio's timer: once its one timer has fired, tokio's wheel is empty, and the timer
//! the loop registers for its next wake unparks the runtime's driver (a deadline before the
//! one it parked for, or none): an `eventfd` write and one more `epoll_wait` that returns at
//! once, at every tick and at every kill that brings a nearer deadline. A `timerfd` is
//! re-armed with one `timerfd_settime`, only when the wake moves, and read once when it fires.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Wakes are rounded up to this grid (1 ms): a wake computed again from the same deadlines
/// is the same, and the timer is not re-armed for nanoseconds of clock reads between them.
const WAKE_GRID_NS: u64 = 1_000_000;

pub(super) struct Ticker {
    fd: OwnedFd,
    /// The absolute time (CLOCK_MONOTONIC ns) the timer is armed for, until read expired.
    armed: Option<u64>,
}

impl Ticker {
    pub(super) fn new() -> std::io::Result<Ticker> {
        // SAFETY: plain syscall; the descriptor is owned at once.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Ticker {
            // SAFETY: just created, owned by nothing else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            armed: None,
        })
    }

    /// Arms the timer at `at_ns` (CLOCK_MONOTONIC, rounded up to [`WAKE_GRID_NS`]) unless it
    /// is armed there already. A time already past fires at once.
    pub(super) fn arm(&mut self, at_ns: u64) -> std::io::Result<()> {
        let at_ns = on_wake_grid(at_ns);
        if self.armed == Some(at_ns) {
            return Ok(());
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid descriptor and itimerspec; the old value is not asked for.
        let r = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &raw const spec,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            self.armed = None;
            return Err(std::io::Error::last_os_error());
        }
        self.armed = Some(at_ns);
        Ok(())
    }

    /// Whether the timer fired since it was armed (its count read, so the descriptor is no
    /// longer readable until it fires again).
    pub(super) fn expired(&mut self) -> bool {
        let mut n = [0u8; 8];
        // SAFETY: valid descriptor and an 8-byte buffer, as a timerfd read needs.
        let r = unsafe { libc::read(self.fd.as_raw_fd(), n.as_mut_ptr().cast(), n.len()) };
        let fired = r == 8 && u64::from_ne_bytes(n) > 0;
        if fired {
            self.armed = None;
        }
        fired
    }
}

impl AsRawFd for Ticker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// `at_ns` rounded up to the next multiple of [`WAKE_GRID_NS`].
pub(super) fn on_wake_grid(at_ns: u64) -> u64 {
    at_ns
        .div_ceil(WAKE_GRID_NS)
        .saturating_mul(WAKE_GRID_NS)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timer fires at the time it is armed for, not before, once; re-arming at the same
    /// time (within the grid) does not reset it; a time past fires at once.
    #[test]
    fn fires_once_at_its_time() {
        let mut t = Ticker::new().unwrap();
        let now = crate::clock::monotonic_now();
        let at = on_wake_grid(now + 30_000_000);
        t.arm(now + 30_000_000).unwrap();
        // Read before its time: not expired (a test thread held up past it may see it fired,
        // never before it).
        if t.expired() {
            assert!(crate::clock::monotonic_now() >= at, "fired before its time");
            t.arm(now + 30_000_000).unwrap();
        }
        assert_eq!(t.armed, Some(at));
        t.arm(now + 30_000_000 - 1).unwrap();
        assert_eq!(
            t.armed,
            Some(at),
            "the same wake on the grid is not re-armed"
        );
        while crate::clock::monotonic_now() < at + 10_000_000 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(t.expired());
        assert!(!t.expired(), "read once");
        assert_eq!(t.armed, None);
        t.arm(now).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(t.expired(), "a time past fires (at once)");
    }

    #[test]
    fn wakes_round_up_to_the_grid() {
        assert_eq!(on_wake_grid(0), 1);
        assert_eq!(on_wake_grid(1), WAKE_GRID_NS);
        assert_eq!(on_wake_grid(WAKE_GRID_NS), WAKE_GRID_NS);
        assert_eq!(on_wake_grid(WAKE_GRID_NS + 1), 2 * WAKE_GRID_NS);
    }
}
