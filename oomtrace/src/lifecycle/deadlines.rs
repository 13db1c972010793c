//! The held victims' due times, indexed: [`Tracker::next_tick_due`](super::Tracker) is asked
//! before every record of a format-1 replay, and walking every victim held each time made it
//! O(victims) per record. Victims changed since the last question are named here (every
//! access that can change one goes through [`Deadlines::touch`]) and their due times brought
//! up to date when next asked, so a format-3 replay, which asks only at its drain marks, pays
//! once per victim changed in between.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    sync::Arc,
};

use foldhash::{HashMap, HashMapExt};

use super::{TrackerConfig, Victim, VictimKey, victim_due};

/// Past this many victims touched between two questions, all are recomputed at once.
const TOUCHED_MAX: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct Deadlines {
    /// Due times as they were set, earliest first. An entry that is no longer its victim's
    /// (`due_of`) is stale and dropped when it comes to the top: a change is one push, not a
    /// B-tree removal and insertion (those were a third of a format-1 replay's questions).
    by_due: BinaryHeap<Reverse<(u64, VictimKey)>>,
    due_of: HashMap<VictimKey, u64>,
    touched: Vec<VictimKey>,
    /// Too many touched: every victim's due time is recomputed at the next question.
    all: bool,
    /// `by_due`'s first due time, the answer while nothing is touched.
    first: Option<u64>,
}

impl Deadlines {
    /// `key`'s victim may have changed (or been inserted or removed).
    pub(super) fn touch(&mut self, key: VictimKey) {
        if self.all || self.touched.last() == Some(&key) {
            return;
        }
        if self.touched.len() >= TOUCHED_MAX {
            self.all = true;
            self.touched.clear();
            return;
        }
        self.touched.push(key);
    }

    /// The earliest due time of any held victim, brought up to date first.
    pub(super) fn first(
        &mut self,
        victims: &BTreeMap<VictimKey, Arc<Victim>>,
        cfg: &TrackerConfig,
    ) -> Option<u64> {
        if !self.all && self.touched.is_empty() {
            return self.first;
        }
        if self.all {
            self.all = false;
            self.by_due.clear();
            self.due_of = HashMap::with_capacity(victims.len());
            for v in victims.values() {
                if let Some(d) = victim_due(cfg, v) {
                    self.due_of.insert(v.key, d);
                    self.by_due.push(Reverse((d, v.key)));
                }
            }
        }
        for key in self.touched.drain(..) {
            let due = victims.get(&key).and_then(|v| victim_due(cfg, v));
            let old = self.due_of.get(&key).copied();
            if old == due {
                continue;
            }
            match due {
                Some(d) => {
                    self.due_of.insert(key, d);
                    self.by_due.push(Reverse((d, key)));
                }
                None => {
                    self.due_of.remove(&key);
                }
            }
        }
        // Stale entries below the top wait there; past twice the live ones, they are dropped.
        if self.by_due.len() > 2 * self.due_of.len() + 64 {
            self.by_due = self
                .due_of
                .iter()
                .map(|(&key, &due)| Reverse((due, key)))
                .collect();
        }
        while let Some(&Reverse((due, key))) = self.by_due.peek() {
            if self.due_of.get(&key) == Some(&due) {
                break;
            }
            self.by_due.pop();
        }
        self.first = self.by_due.peek().map(|&Reverse((due, _))| due);
        self.first
    }
}
