//! `memory.oom.group` kills: one OOM invocation, several victims.
//!
//! With `memory.oom.group` set on a cgroup v2 memcg, the kernel's `oom_kill_process()` kills
//! the chosen victim and then every other task of the group memcg (the highest memcg with
//! `memory.oom.group` 1 between the victim's and the OOM domain, `mem_cgroup_get_oom_group`):
//! `mem_cgroup_scan_tasks(oom_group, oom_kill_memcg_member)`, each through
//! `__oom_kill_process()` — a SIGKILL and a mark per member, all sent by the allocating task
//! within that one call. The kernel counts the group kill once (`oom_group_kill` in the group
//! memcg's memory.events) and each victim (`oom_kill`). cgroup v1 has no `memory.oom.group`:
//! one invocation marks one victim there.
//!
//! An incident is the victims one invocation marked. Where the kill decision is hooked
//! (`oom_kill_process`, once per invocation), its marks are those the same task makes until
//! its next decision or the invocation's return (`grouped_by: "invocation"`). Without that
//! hook, a mark by the task that marked a victim less than [`GROUP_PAIRING_NS`] earlier,
//! while that victim has not died, is taken as the same invocation's (`"timing"`): a second
//! invocation can kill only once the first victim's mm is gone (`MMF_OOM_SKIP`), and a group
//! kill marks its members back to back. An incident is reported once it has two victims, as
//! a `group_kill` finding when every victim is dead or the timeout has passed.

use serde::Serialize;

use super::*;

/// How soon after a mark by the same task, without the decision hook, another mark counts as
/// the same invocation's (see the module docs); the kernel marks a group back to back, and
/// 6–7 ms between consecutive statements have been seen under emulation.
pub(super) const GROUP_PAIRING_NS: u64 = SIGKILL_PAIRING_NS;
/// Incidents kept at most.
const MAX_INCIDENTS: usize = 1024;

/// One victim of an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Member {
    pub(crate) comm: crate::comm::Comm,
    /// From the incident's first kill to this victim's death; None while it is not dead.
    pub(crate) dead_after_ns: Option<u64>,
    #[serde(skip)]
    pub(super) key: VictimKey,
    pub(crate) memcg_id: Option<u64>,
    pub(crate) tgid: u32,
}

/// The victims of one OOM invocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Incident {
    /// The OOM domain, where the kill decision was seen.
    pub(crate) domain_id: Option<u64>,
    /// The deepest memcg holding every victim, by path: the group memcg whose
    /// `memory.oom.group` made the kernel kill them all, or a memcg below it when every victim
    /// lived below one of its children. None when a victim's memcg path is unknown.
    pub(crate) group_memcg: Option<String>,
    /// `invocation` (the kill decision hook delimits it) or `timing` (see the module docs).
    pub(crate) grouped_by: &'static str,
    /// Numbered from 1 in the order seen (per session or replay).
    pub(crate) id: u64,
    #[serde(skip)]
    pub(super) last_mark_ns: u64,
    #[serde(skip)]
    pub(super) reported: bool,
    /// The first kill (CLOCK_MONOTONIC ns).
    pub(crate) started_ns: u64,
    /// The task whose allocation invoked the OOM killer (it sends every SIGKILL).
    pub(crate) trigger: Task,
    pub(crate) victims: Vec<Member>,
}

impl Incident {
    pub(crate) fn all_dead(&self) -> bool {
        self.victims.iter().all(|m| m.dead_after_ns.is_some())
    }

    /// The victims not dead, as `pid N (comm)`.
    pub(crate) fn not_dead(&self) -> impl Iterator<Item = &Member> {
        self.victims.iter().filter(|m| m.dead_after_ns.is_none())
    }
}

/// The deepest common ancestor of cgroup paths (`/a/b`, `/a/c` → `/a`).
pub(super) fn common_ancestor<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut common: Option<Vec<&str>> = None;
    for p in paths {
        let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
        common = Some(match common {
            None => parts,
            Some(c) => c
                .iter()
                .zip(&parts)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    common.map(|c| format!("/{}", c.join("/")))
}

/// The incidents of the session and which task's invocation is open.
#[derive(Debug, Default)]
pub(super) struct Incidents {
    next_id: u64,
    by_id: BTreeMap<u64, Incident>,
    /// The open incident of each allocating task (by thread id).
    open: HashMap<u32, u64>,
    /// The incident of each victim marked in one (while the incident is kept).
    of_victim: HashMap<VictimKey, u64>,
    /// When [`Incidents::settled`] has something to do at the earliest, per timeout it is
    /// called with (the session's at ticks, none at deaths): a single kill goes stale, a group
    /// kill's timeout passes, or its pairing window ends. Lowered when an incident opens; a
    /// change that can settle an incident of two victims or more sooner (a mark, a death, an
    /// invocation closed) marks every entry changed instead. Until then `settled` returns at
    /// once: it runs on every tick and death, and an OOM storm keeps hundreds of single kills.
    due: Vec<Due>,
    /// Passes `settled` made over the incidents (tests).
    #[cfg(test)]
    passes: u64,
}

/// See `Incidents::due`.
#[derive(Debug)]
struct Due {
    timeout: u64,
    at_ns: u64,
    changed: bool,
}

/// Timeouts whose [`Due`] is kept (two are used: the session's and none).
const DUE_KEPT: usize = 4;

impl Incidents {
    /// Something changed that may settle a group kill sooner (see `due`).
    fn changed(&mut self) {
        for d in &mut self.due {
            d.changed = true;
        }
    }

    /// A kill decision by `tid` (`oom_kill_process`): a new invocation's incident opens.
    pub(super) fn decision(&mut self, tid: u32, trigger: Task, domain: u64, ts: u64) {
        self.close(tid);
        let id = self.open_new(trigger, Some(domain), "invocation", ts);
        self.open.insert(tid, id);
    }

    /// `tid`'s invocation returned: no more victims join its incident.
    pub(super) fn close(&mut self, tid: u32) {
        if let Some(id) = self.open.remove(&tid) {
            if self.by_id.get(&id).is_some_and(|i| i.victims.len() >= 2) {
                self.changed();
            }
            self.forget_if_single(id);
        }
    }

    fn forget_if_single(&mut self, id: u64) {
        if self.by_id.get(&id).is_some_and(|i| i.victims.len() < 2)
            && let Some(i) = self.by_id.remove(&id)
        {
            for m in i.victims {
                self.of_victim.remove(&m.key);
            }
        }
    }

    fn open_new(
        &mut self,
        trigger: Task,
        domain: Option<u64>,
        grouped_by: &'static str,
        ts: u64,
    ) -> u64 {
        if self.by_id.len() >= MAX_INCIDENTS
            && let Some((&old, _)) = self.by_id.iter().next()
        {
            self.by_id.remove(&old);
            self.of_victim.retain(|_, i| *i != old);
            self.open.retain(|_, i| *i != old);
        }
        self.next_id += 1;
        let id = self.next_id;
        for d in &mut self.due {
            d.at_ns = d.at_ns.min(ts.saturating_add(d.timeout));
        }
        self.by_id.insert(
            id,
            Incident {
                id,
                trigger,
                domain_id: domain,
                group_memcg: None,
                grouped_by,
                started_ns: ts,
                victims: Vec::new(),
                last_mark_ns: ts,
                reported: false,
            },
        );
        id
    }

    /// A victim marked by `tid` (a kill: it was signalled, or no signal hook says otherwise).
    /// `decisions_seen`: the kill decision hook is attached. `alive(key)`: whether that victim
    /// is not known dead. Returns the incident once it has two victims or more, and whether
    /// this mark made it a group kill (its second victim: the kernel's `oom_group_kill`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn mark(
        &mut self,
        tid: u32,
        trigger: Task,
        victim: (VictimKey, crate::comm::Comm, Option<u64>),
        ts: u64,
        decisions_seen: bool,
        alive: impl Fn(&VictimKey) -> bool,
        paths: &HashMap<u64, String>,
    ) -> Option<(u64, bool)> {
        let current = self.open.get(&tid).copied().filter(|id| {
            decisions_seen
                || self.by_id.get(id).is_some_and(|i| {
                    ts.saturating_sub(i.last_mark_ns) <= GROUP_PAIRING_NS
                        && i.victims.last().is_some_and(|m| alive(&m.key))
                })
        });
        let id = match current {
            Some(id) => id,
            // A mark with no decision before it (the task was exiting and was marked, not
            // killed; or the decision was lost): no incident.
            None if decisions_seen => return None,
            None => {
                self.close(tid);
                let id = self.open_new(trigger, None, "timing", ts);
                self.open.insert(tid, id);
                id
            }
        };
        let (key, comm, memcg_id) = victim;
        let inc = self.by_id.get_mut(&id)?;
        inc.last_mark_ns = ts;
        let mut formed = false;
        if !inc.victims.iter().any(|m| m.key == key) {
            inc.victims.push(Member {
                tgid: key.tgid,
                comm,
                memcg_id,
                dead_after_ns: None,
                key,
            });
            self.of_victim.insert(key, id);
            formed = inc.victims.len() == 2;
        }
        if inc.victims.len() < 2 {
            return None;
        }
        let paths: Option<Vec<&str>> = inc
            .victims
            .iter()
            .map(|m| m.memcg_id.and_then(|c| paths.get(&c)).map(String::as_str))
            .collect();
        inc.group_memcg = paths.and_then(common_ancestor);
        self.changed();
        Some((id, formed))
    }

    /// The victims of an incident so far.
    pub(super) fn members(&self, id: u64) -> Vec<VictimKey> {
        self.by_id
            .get(&id)
            .map(|i| i.victims.iter().map(|m| m.key).collect())
            .unwrap_or_default()
    }

    /// A victim died at `ts`.
    pub(super) fn dead(&mut self, key: &VictimKey, ts: u64) {
        let Some(inc) = self
            .of_victim
            .get(key)
            .and_then(|id| self.by_id.get_mut(id))
        else {
            return;
        };
        let started = inc.started_ns;
        let group = inc.victims.len() >= 2;
        if let Some(m) = inc.victims.iter_mut().find(|m| m.key == *key) {
            m.dead_after_ns.get_or_insert(ts.saturating_sub(started));
        }
        if group {
            self.changed();
        }
    }

    /// Incidents of two victims or more whose fate is known at `judged`: every victim dead,
    /// or `timeout` passed since the first kill. Each is reported once, then forgotten.
    pub(super) fn settled(&mut self, judged: u64, timeout: u64) -> Vec<Incident> {
        // Called on every tick and death: nothing to do, and nothing allocated, without one.
        if self.by_id.is_empty() {
            return Vec::new();
        }
        // Nothing changed and nothing is due yet (see `due`).
        if self
            .due
            .iter()
            .any(|d| d.timeout == timeout && !d.changed && judged < d.at_ns)
        {
            return Vec::new();
        }
        // One pass over every incident (a storm keeps each single kill for `timeout`: hundreds);
        // the open invocations are a handful, looked through as is.
        let (mut ready, mut stale) = (Vec::new(), Vec::new());
        let mut due = u64::MAX;
        #[cfg(test)]
        {
            self.passes += 1;
        }
        for i in self.by_id.values() {
            if i.victims.len() < 2 {
                // Single kills are no incident: forgotten once no second victim can join.
                let stale_at = i.last_mark_ns.saturating_add(timeout);
                if judged >= stale_at {
                    stale.push(i.id);
                } else {
                    due = due.min(stale_at);
                }
            } else if !i.reported
                && (i.all_dead() || judged.saturating_sub(i.started_ns) >= timeout)
                // An invocation still open may kill more (the decision hook delimits it).
                && (!self.open.values().any(|&o| o == i.id)
                    || i.grouped_by == "timing"
                    || !i.all_dead()
                    || judged.saturating_sub(i.last_mark_ns) >= GROUP_PAIRING_NS)
            {
                ready.push(i.id);
            } else if !i.reported {
                // Its timeout, or (every victim dead, its invocation open) its pairing window.
                due = due
                    .min(i.started_ns.saturating_add(timeout))
                    .min(i.last_mark_ns.saturating_add(GROUP_PAIRING_NS));
            }
        }
        let entry = Due {
            timeout,
            at_ns: due,
            changed: false,
        };
        match self.due.iter().position(|d| d.timeout == timeout) {
            Some(i) => self.due[i] = entry,
            None if self.due.len() < DUE_KEPT => self.due.push(entry),
            None => self.due[0] = entry,
        }
        for id in stale {
            self.open.retain(|_, o| *o != id);
            self.forget_if_single(id);
        }
        let mut done = Vec::new();
        for id in ready {
            if let Some(mut i) = self.by_id.remove(&id) {
                i.reported = true;
                for m in &i.victims {
                    self.of_victim.remove(&m.key);
                }
                self.open.retain(|_, o| *o != id);
                done.push(i);
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(pid: u32) -> Task {
        Task {
            pid,
            tgid: pid,
            comm: "t".into(),
        }
    }

    fn key(tgid: u32) -> VictimKey {
        VictimKey { tgid, start_ns: 1 }
    }

    /// A storm of single kills: `settled` looks at the incidents only when one is due or a
    /// group kill changed, and says the same as a pass on every call would.
    #[test]
    fn settled_passes_only_when_something_is_due() {
        const MS: u64 = 1_000_000;
        let timeout = 1000 * MS;
        let paths = HashMap::new();
        let mut inc = Incidents::default();
        // Single kills without the decision hook (grouped by timing), one every 10 ms, each
        // dead at once: each is kept until no second victim can join it.
        for n in 0..50u32 {
            let ts = u64::from(n) * 10 * MS;
            let v = (key(n + 1), "v".into(), Some(7));
            assert_eq!(
                inc.mark(n + 1000, task(n + 1000), v, ts, false, |_| true, &paths),
                None
            );
            inc.dead(&key(n + 1), ts + MS);
            // As the tracker calls it: at a death without a timeout, at a tick with its own.
            assert!(inc.settled(ts + MS, u64::MAX).is_empty());
            assert!(inc.settled(ts + 2 * MS, timeout).is_empty());
        }
        // The first call of each passed; later ones had nothing due (no group kill, nothing
        // stale).
        assert_eq!(inc.passes, 2);
        assert_eq!(inc.by_id.len(), 50);
        // The first single kill goes stale at its timeout: a pass, which forgets it.
        assert!(inc.settled(timeout - 1, timeout).is_empty());
        assert_eq!(inc.passes, 2);
        assert!(inc.settled(timeout, timeout).is_empty());
        assert_eq!(inc.passes, 3);
        assert_eq!(inc.by_id.len(), 49);
        // A group kill (two victims marked back to back by one task): reported once both are
        // dead, at once, though no single kill is due.
        let ts = timeout + 5 * MS;
        for v in [100, 101] {
            let m = (key(v), "g".into(), Some(7));
            inc.mark(9, task(9), m, ts, false, |_| true, &paths);
        }
        assert!(inc.settled(ts + MS, timeout).is_empty());
        inc.dead(&key(100), ts + 2 * MS);
        assert!(inc.settled(ts + 2 * MS, timeout).is_empty());
        inc.dead(&key(101), ts + 3 * MS);
        let done = inc.settled(ts + 3 * MS, timeout);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].victims.len(), 2);
        // Nothing more until the next single kill is due.
        let passes = inc.passes;
        assert!(inc.settled(ts + 4 * MS, timeout).is_empty());
        assert_eq!(inc.passes, passes);
    }
}
