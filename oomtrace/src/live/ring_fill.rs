//! Whether the ring buffer can have been full: the kernel counts an event lost only when its
//! reservation failed, which needs the ring's unread bytes within a record of its size. Its
//! producer and consumer positions (byte counts that only grow) are read from a read-only
//! mapping of the ring's first two pages, so that the lost-event counter (a per-CPU map read,
//! one `bpf` call: 6–15 µs here, read at nearly every tick of an OOM storm) is read only when a
//! loss was possible: once in a 520-kill storm bench instead of ~250 times.

use std::{
    os::fd::{AsRawFd, BorrowedFd},
    sync::atomic::{AtomicU64, Ordering},
};

/// More than any one record (header and payload, rounded up): a reservation fails only when
/// the unread bytes and its record together pass the ring's size.
const RECORD_MAX: u64 = 64 * 1024;

pub(super) struct RingFill {
    /// The mapping: the consumer position's page, then the producer position's.
    pages: *mut libc::c_void,
    page: usize,
    /// The ring's data size in bytes.
    size: u64,
    /// The consumer position when the lost-event counter was last read (0 before: the ring's
    /// start). A reservation failed since only if the producer has passed it by nearly the
    /// ring's size.
    since: u64,
}

impl RingFill {
    /// Maps the positions of the ring buffer `fd` of `size` data bytes.
    pub(super) fn new(fd: BorrowedFd<'_>, size: u64) -> std::io::Result<RingFill> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: a shared read-only mapping of the ring's first two pages (the kernel allows
        // any read-only range of a ring buffer map); owned here, unmapped on drop.
        let pages = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if pages == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(RingFill {
            pages,
            page,
            size,
            since: 0,
        })
    }

    fn position(&self, offset: usize) -> u64 {
        // SAFETY: an aligned u64 at the start of one of the mapped pages, written by the kernel
        // (producer) or the reader (consumer) as one atomic store.
        unsafe {
            (*self.pages.cast::<u8>().add(offset).cast::<AtomicU64>()).load(Ordering::Acquire)
        }
    }

    /// Whether an event can have been lost since [`RingFill::counted`]: the producer has moved
    /// past the consumer position then by the ring's size less a record.
    pub(super) fn may_have_lost(&self) -> bool {
        may_have_lost(self.since, self.position(self.page), self.size)
    }

    /// The lost-event counter is read now (called just before it is): losses after it come
    /// with the consumer at or past where it is now.
    pub(super) fn counted(&mut self) {
        self.since = self.position(0);
    }
}

/// Whether a reservation can have failed in a ring of `size` bytes since the consumer was at
/// `since`, the producer now at `produced`: a failure needs the producer then (at most
/// `produced`) past the consumer then (at least `since`) by the size less its record.
fn may_have_lost(since: u64, produced: u64, size: u64) -> bool {
    produced.saturating_sub(since).saturating_add(RECORD_MAX) > size
}

impl Drop for RingFill {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, used no more.
        unsafe { libc::munmap(self.pages, 2 * self.page) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_needs_the_producer_a_ring_ahead() {
        let size = 1 << 20;
        assert!(!may_have_lost(0, 0, size));
        assert!(!may_have_lost(5000, 5000 + size - RECORD_MAX, size));
        assert!(may_have_lost(5000, 5001 + size - RECORD_MAX, size));
        // A ring smaller than a record: always possible.
        assert!(may_have_lost(0, 0, 4096));
    }
}
