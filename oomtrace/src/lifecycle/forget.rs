//! Forgetting removed memcgs: what the tracker keeps per memcg (its path, its state read at a
//! kill, its kill count, its OOM notifications) is dropped a while after the memcg is removed.
//!
//! A node creates and removes memcgs all day (a pod's, a crash-looping container's): kept
//! until a cap, these maps grew for an hour at a node's pace (the soak's RSS, issue 26). Removal
//! is told by userspace ([`Tracker::memcg_removed`], from the sweep that checks every named memcg
//! with the kernel), stamped with the time it was found; the entries go
//! [`REMOVED_MEMCG_KEPT_NS`] later, once no victim the tracker still holds is in that memcg or
//! below that domain. Until then a late finding still names the memcg by its last path (and the
//! renderer says it was removed). Kills counted in a forgotten memcg are not lost to the
//! reconciliation with the kernel's counters: on cgroup v2 an ancestor's `oom_kill` counts them,
//! so they are folded into the parent's path ([`Tracker::kills_below`]), which stays one entry
//! per memcg that still exists.

use std::collections::{HashMap, VecDeque};

use super::{MAX_MEMCGS, Tracker};

/// How long what is known of a memcg is kept after it was found removed: a finding about one of
/// its victims that comes later (its death read late, a release) still names its path. A memcg
/// can only be removed once no task is left in it, so what remains to be said comes within
/// moments; a minute is plenty, and keeps the maps flat on a node (kernel/cgroups.rs keeps the
/// removed memcg's last path as long).
pub(crate) const REMOVED_MEMCG_KEPT_NS: u64 = 60_000_000_000;

/// Memcgs found removed and not yet forgotten, oldest first, and the kills of forgotten ones.
#[derive(Debug, Default)]
pub(super) struct Removed {
    /// (found removed at, memcg id, its last path where the tracker was not told it).
    queue: VecDeque<(u64, u64, Option<String>)>,
    /// Kills counted in forgotten memcgs, by the path of the nearest ancestor not forgotten.
    kills_below: HashMap<String, u64>,
}

/// The parent of a memcg path (`/a/b` → `/a`, `/a` → `/`).
fn parent(path: &str) -> &str {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((p, _)) => p,
    }
}

impl Tracker {
    /// Memcg `id`, last seen at `path` (if ever), was found removed at `at_ns`: what is kept of it is
    /// forgotten [`REMOVED_MEMCG_KEPT_NS`] later (see the module docs). The path places the
    /// kills of memcgs below it forgotten before it, even where no event named it.
    pub(crate) fn memcg_removed(&mut self, id: u64, path: Option<&str>, at_ns: u64) {
        if id == 0 {
            return;
        }
        let untold = path
            .filter(|p| self.memcg_paths.get(&id).map(String::as_str) != Some(p))
            .map(str::to_string);
        self.removed.queue.push_back((at_ns, id, untold));
        // A removal storm faster than the minute: the oldest go early.
        while self.removed.queue.len() > MAX_MEMCGS {
            if let Some((_, old, path)) = self.removed.queue.pop_front() {
                self.forget_memcg(old, path);
            }
        }
    }

    /// Forgets the memcgs removed more than [`REMOVED_MEMCG_KEPT_NS`] before `now_ns` whose
    /// victims are all gone; one still held keeps its memcg until it goes.
    pub(super) fn forget_removed_memcgs(&mut self, now_ns: u64) {
        let mut kept = Vec::new();
        while let Some(&(at, id, _)) = self.removed.queue.front()
            && now_ns.saturating_sub(at) >= REMOVED_MEMCG_KEPT_NS
        {
            let Some((_, _, path)) = self.removed.queue.pop_front() else {
                break;
            };
            let held = self
                .victims
                .values()
                .any(|v| v.memcg_id == Some(id) || v.domain_id == Some(id));
            // A memcg below it still to be forgotten goes first, so that its kills are folded
            // into this one's path before this one's are folded further up.
            let known = path.as_ref().or_else(|| self.memcg_paths.get(&id));
            let below = known.is_some_and(|p| {
                let prefix = format!("{}/", p.trim_end_matches('/'));
                self.removed.queue.iter().chain(&kept).any(|(_, c, cp)| {
                    cp.as_ref()
                        .or_else(|| self.memcg_paths.get(c))
                        .is_some_and(|cp| cp.starts_with(&prefix))
                })
            });
            if held || below {
                kept.push((now_ns, id, path));
            } else {
                self.forget_memcg(id, path);
            }
        }
        self.removed.queue.extend(kept);
    }

    fn forget_memcg(&mut self, id: u64, path: Option<String>) {
        let path = self.memcg_paths.remove(&id).or(path);
        self.memcg_states.remove(&id);
        self.notified_invocations.remove(&id);
        let kills = self.kills_by_memcg.remove(&id).unwrap_or(0);
        let Some(path) = path else {
            // Never named: its kills cannot be placed in the hierarchy (they stay in the
            // summary's count).
            return;
        };
        let up = parent(&path).to_string();
        let below = self.removed.kills_below.remove(&path).unwrap_or(0);
        if kills + below > 0 && path != "/" {
            *self.removed.kills_below.entry(up).or_default() += kills + below;
        }
    }

    /// Kills counted in memcgs forgotten since, by the path of the nearest ancestor not
    /// forgotten (whose memory.events counts them on cgroup v2; v1 counts a memcg's own only).
    pub(crate) fn kills_below(&self) -> &HashMap<String, u64> {
        &self.removed.kills_below
    }

    /// Entries held per memcg (paths, states read at kills, kill counts, removed ones waiting
    /// to be forgotten), to show they stay bounded.
    pub(crate) fn memcg_entries(&self) -> usize {
        self.memcg_paths.len()
            + self.memcg_states.len()
            + self.kills_by_memcg.len()
            + self.notified_invocations.len()
            + self.removed.queue.len()
            + self.removed.kills_below.len()
    }
}

#[cfg(test)]
mod tests {
    use super::parent;

    #[test]
    fn parents_of_memcg_paths() {
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a/b/"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/"), "/");
    }
}
