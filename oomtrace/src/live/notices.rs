//! The memcg notifications' place in the loop: awaited while they are rare, read at the loop's
//! other wake-ups while they come in a stream.
//!
//! On cgroup v1 the kernel signals a memcg's eventfd at each OOM of it, microseconds before the
//! kill it leads to, whose events wake the loop anyway (`BPF_RB_FORCE_WAKEUP`); on cgroup v2
//! `memory.events` changes at each OOM and kill. Awaited, the notification is a wake-up of its
//! own at nearly every kill of an OOM storm: 20–30 µs of CPU each in this project's VM, and
//! 0.79× CPU per kill in the bench's storm once it stops (docs/performance.md, "Memcg
//! notifications in a stream"). So a notification that follows another within
//! [`BURST_NS`] takes the watch out of the runtime's epoll set: from then on it is read at the
//! end of every turn of the loop (one `epoll_wait` with no timeout, after the kernel events up
//! to then) and at least every [`LAZY_POLL_NS`], and it goes back into the set once
//! [`QUIET_NS`] pass without a notification. A notification read this way is stamped up to
//! `LAZY_POLL_NS` (and a grid step) later than its signal; an isolated one still wakes the loop
//! at once.

use tokio::io::{Interest, unix::AsyncFd};

use crate::host::memcg_watch::{MemcgWatch, Notice};

/// A notification within this of the previous one makes a stream: the watch is read lazily.
pub(super) const BURST_NS: u64 = 50_000_000;
/// A lazily read watch is read at least this often.
pub(super) const LAZY_POLL_NS: u64 = 20_000_000;
/// This long without a notification, a lazily read watch is awaited again.
pub(super) const QUIET_NS: u64 = 60_000_000;

/// When to read the watch lazily and when to await it again (pure: unit-tested).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pacing {
    /// When the latest notification was read.
    last: Option<u64>,
    /// Read at the loop's wake-ups, not awaited.
    pub(super) lazy: bool,
}

impl Pacing {
    /// Notifications were read (`any`) or not at `now`; returns whether the watch is to be
    /// read lazily from now on.
    pub(super) fn read(&mut self, now: u64, any: bool) -> bool {
        if any {
            let burst = self.last.is_some_and(|l| now.saturating_sub(l) <= BURST_NS);
            self.last = Some(now);
            self.lazy |= burst;
        } else if self.lazy && self.last.is_none_or(|l| now.saturating_sub(l) > QUIET_NS) {
            self.lazy = false;
        }
        self.lazy
    }
}

enum State {
    Awaited(AsyncFd<MemcgWatch>),
    Lazy(MemcgWatch),
}

/// The memcg watch and how the loop reads it.
pub(super) struct Notices {
    /// None only while moving between the states.
    state: Option<State>,
    pacing: Pacing,
    /// The watch's problems said so far.
    problems_said: usize,
}

impl Notices {
    pub(super) fn new(w: MemcgWatch) -> anyhow::Result<Notices> {
        use anyhow::Context as _;
        let problems_said = w.problems.len();
        Ok(Notices {
            state: Some(State::Awaited(
                register(w).context("registering the memcg notifications with the runtime")?,
            )),
            pacing: Pacing::default(),
            problems_said,
        })
    }

    pub(super) fn watch(&self) -> &MemcgWatch {
        match self.state.as_ref().expect("a state") {
            State::Awaited(fd) => fd.get_ref(),
            State::Lazy(w) => w,
        }
    }

    pub(super) fn watch_mut(&mut self) -> &mut MemcgWatch {
        match self.state.as_mut().expect("a state") {
            State::Awaited(fd) => fd.get_mut(),
            State::Lazy(w) => w,
        }
    }

    /// The watch to await, when it is awaited.
    pub(super) fn awaited(&mut self) -> Option<&mut AsyncFd<MemcgWatch>> {
        match self.state.as_mut()? {
            State::Awaited(fd) => Some(fd),
            State::Lazy(_) => None,
        }
    }

    /// When the loop must wake at the latest to read a lazily read watch.
    pub(super) fn wake_by(&self, now: u64) -> Option<u64> {
        self.pacing.lazy.then(|| now.saturating_add(LAZY_POLL_NS))
    }

    /// What the watch has now (the loop's own read: awaited and ready, or lazily at the end of
    /// a turn); lines for its new problems are printed. Moves the watch between awaited and
    /// lazily read as [`Pacing`] says.
    pub(super) fn read(&mut self, now: u64) -> anyhow::Result<Vec<Notice>> {
        let said = self.problems_said;
        let w = self.watch_mut();
        let notices = w.ready();
        let problems: Vec<String> = w.problems.iter().skip(said).cloned().collect();
        self.problems_said += problems.len();
        for p in problems {
            eprintln!("oomtrace: warning: memcg notifications: {p}");
        }
        let lazy = self.pacing.read(now, !notices.is_empty());
        self.state = Some(match self.state.take().expect("a state") {
            State::Awaited(fd) if lazy => State::Lazy(fd.into_inner()),
            State::Lazy(w) if !lazy => State::Awaited(register(w).map_err(|e| {
                anyhow::anyhow!("registering the memcg notifications with the runtime again: {e}")
            })?),
            s => s,
        });
        Ok(notices)
    }

    /// Whether the watch is read lazily (at the end of every turn).
    pub(super) fn lazy(&self) -> bool {
        self.pacing.lazy
    }
}

fn register(w: MemcgWatch) -> std::io::Result<AsyncFd<MemcgWatch>> {
    // SAFETY: the watch owns its epoll fd for as long as the AsyncFd lives.
    unsafe { AsyncFd::register_with_interest(w, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn an_isolated_notification_stays_awaited() {
        let mut p = Pacing::default();
        assert!(!p.read(1000 * MS, true));
        assert!(
            !p.read(1000 * MS + BURST_NS + 1, true),
            "apart: still awaited"
        );
    }

    #[test]
    fn a_stream_is_read_lazily_until_quiet() {
        let mut p = Pacing::default();
        assert!(!p.read(1000 * MS, true));
        assert!(
            p.read(1007 * MS, true),
            "a second within the burst: lazily read"
        );
        assert!(p.read(1020 * MS, false), "nothing yet, but not quiet");
        assert!(p.read(1030 * MS, true));
        assert!(
            p.read(1030 * MS + QUIET_NS, false),
            "exactly QUIET_NS: still lazily"
        );
        assert!(
            !p.read(1030 * MS + QUIET_NS + 1, false),
            "quiet: awaited again"
        );
        assert!(!p.read(1030 * MS + QUIET_NS + 2, false));
        // A notification after the quiet spell is not a burst with the old stream's last.
        assert!(!p.read(2000 * MS, true));
    }
}
