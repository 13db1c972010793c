//! The journal of memcg limits `unstick` raised, on disk, so that what it changed is put back
//! even when oomtrace dies (crash, SIGKILL, OOM, restart) between the raise and the victim's
//! death.
//!
//! One JSON file, `memcg-limits.json` (mode 0600), in oomtrace's state directory
//! (`/var/lib/oomtrace`, or `OOMTRACE_STATE_DIR`; created 0700). An entry is written and synced
//! *before* a limit is raised, and removed once it is put back. Putting back:
//! - only once the victim is dead (its pid gone or naming a later process);
//! - in reverse order of raising: an entry waits while a later raise of the same file is out;
//! - compare-and-restore: a limit that no longer reads what oomtrace wrote was changed by
//!   someone else (an admin): it is left alone, and that is said;
//! - whatever the usage: the old limit is written back even when usage is above it (page cache
//!   fills any headroom); the kernel reclaims, or refuses (v1: EBUSY), and that is said;
//! - the writes of one raise are undone in reverse (cgroup v1: `memory.memsw.limit_in_bytes`
//!   is raised before `memory.limit_in_bytes` and lowered after it, as the kernel demands).
//!
//! Entries of an earlier boot are dropped at load (their memcgs do not exist any more).

use std::{
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// The state directory's default.
pub(crate) const STATE_DIR: &str = "/var/lib/oomtrace";
const FILE: &str = "memcg-limits.json";

/// Where oomtrace keeps state: `OOMTRACE_STATE_DIR`, else [`STATE_DIR`].
pub fn state_dir() -> PathBuf {
    std::env::var_os("OOMTRACE_STATE_DIR").map_or_else(|| PathBuf::from(STATE_DIR), PathBuf::from)
}

/// One limit file written: its value before, and the value written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LimitWrite {
    pub(crate) file: PathBuf,
    pub(crate) from: u64,
    pub(crate) to: u64,
}

/// One raise: for which victim, and the writes made, in the order made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Raise {
    pub(crate) id: u64,
    pub(crate) boot_id: String,
    pub(crate) victim: u32,
    /// The victim's start time (/proc/PID/stat field 22, clock ticks): tells it from a later
    /// process with its pid.
    pub(crate) victim_start: u64,
    pub(crate) writes: Vec<LimitWrite>,
    /// The victim is dead: put back as soon as no later raise of the same file is out.
    #[serde(default)]
    pub(crate) due: bool,
}

/// The journal, loaded; every change is written through.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    boot_id: String,
    entries: Vec<Raise>,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map_or_else(|_| "unknown".into(), |s| s.trim().into())
}

/// A limit file's value (`max` on cgroup v2 is `u64::MAX`).
pub(crate) fn read_limit(file: &Path) -> Result<u64, String> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let t = text.trim();
    if t == "max" {
        return Ok(u64::MAX);
    }
    t.parse()
        .map_err(|e| format!("{}: {t:?} is not a number ({e})", file.display()))
}

/// Writes a limit (`u64::MAX` as `max` on v2, `-1` on v1).
pub(crate) fn write_limit(file: &Path, value: u64) -> Result<(), String> {
    let text = match value {
        u64::MAX if file.ends_with("memory.max") => "max".to_string(),
        u64::MAX => "-1".to_string(),
        v => v.to_string(),
    };
    std::fs::write(file, &text).map_err(|e| format!("writing {text} to {}: {e}", file.display()))
}

/// The start time of `pid` in clock ticks (/proc/PID/stat field 22), if it exists.
pub(crate) fn start_ticks(proc_root: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    stat.get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

impl Journal {
    /// Loads the journal in `dir` (an absent file is an empty journal), creating `dir` 0700.
    /// Entries of an earlier boot are dropped, said in the returned lines.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<String>), String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("creating the state directory {}: {e}", dir.display()))?;
        let path = dir.join(FILE);
        let mut j = Journal {
            path,
            boot_id: boot_id(),
            entries: Vec::new(),
        };
        let mut said = Vec::new();
        match std::fs::read(&j.path) {
            Ok(bytes) => {
                let all: Vec<Raise> = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("reading the journal {}: {e}", j.path.display()))?;
                for r in all {
                    if r.boot_id == j.boot_id {
                        j.entries.push(r);
                    } else {
                        said.push(format!(
                            "dropped the journal's raise for pid {} made before the last boot \
                             (its memcg is gone)",
                            r.victim
                        ));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("reading the journal {}: {e}", j.path.display())),
        }
        if !said.is_empty() {
            j.save()?;
        }
        Ok((j, said))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn entries(&self) -> &[Raise] {
        &self.entries
    }

    /// Writes the journal: a temporary file (0600), synced, renamed over the old one.
    fn save(&self) -> Result<(), String> {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&self.entries).map_err(|e| e.to_string())?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| format!("writing the journal {}: {e}", self.path.display()))
    }

    /// Journals, then makes, `writes` (in order) for `victim`; a failed write undoes those made
    /// and drops the entry. Returns what was done.
    pub(crate) fn raise(
        &mut self,
        victim: u32,
        victim_start: u64,
        writes: Vec<LimitWrite>,
    ) -> Result<Vec<String>, String> {
        let id = self.entries.iter().map(|r| r.id + 1).max().unwrap_or(1);
        self.entries.push(Raise {
            id,
            boot_id: self.boot_id.clone(),
            victim,
            victim_start,
            writes: writes.clone(),
            due: false,
        });
        self.save()?;
        let mut did = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            if let Err(e) = write_limit(&w.file, w.to) {
                for u in writes[..i].iter().rev() {
                    let _ = write_limit(&u.file, u.from);
                }
                self.entries.retain(|r| r.id != id);
                self.save()?;
                return Err(if i == 0 {
                    e
                } else {
                    format!("{e} (the writes before it were undone)")
                });
            }
            did.push(format!(
                "raised {} from {} to {}",
                w.file.display(),
                w.from,
                w.to
            ));
        }
        did.push(format!(
            "journaled in {} (put back once pid {victim} is dead, even if oomtrace restarts)",
            self.path.display()
        ));
        Ok(did)
    }

    /// Marks the raises for `victim` (started at `start`, ticks) due, and puts back what can be.
    pub fn victim_dead(&mut self, victim: u32, start: Option<u64>) -> Vec<(u32, String)> {
        for r in &mut self.entries {
            if r.victim == victim && start.is_none_or(|s| s == r.victim_start) {
                r.due = true;
            }
        }
        self.settle()
    }

    /// Marks due the raises whose victim no longer exists (its pid gone, or naming a later
    /// process), and puts back what can be. Cheap when the journal is empty.
    pub fn check_dead(&mut self, proc_root: &Path) -> Vec<(u32, String)> {
        let mut any = false;
        for r in &mut self.entries {
            if !r.due && start_ticks(proc_root, r.victim) != Some(r.victim_start) {
                r.due = true;
                any = true;
            }
        }
        if any || self.entries.iter().any(|r| r.due) {
            self.settle()
        } else {
            Vec::new()
        }
    }

    /// Puts back, latest first, every due raise no later outstanding raise of the same file
    /// waits on; removes them from the journal. Each line with the victim it was raised for.
    fn settle(&mut self) -> Vec<(u32, String)> {
        let mut said = Vec::new();
        loop {
            let ready = (0..self.entries.len()).rev().find(|&i| {
                let r = &self.entries[i];
                r.due
                    && !self.entries[i + 1..].iter().any(|later| {
                        later
                            .writes
                            .iter()
                            .any(|lw| r.writes.iter().any(|w| w.file == lw.file))
                    })
            });
            let Some(i) = ready else {
                break;
            };
            let r = self.entries.remove(i);
            for w in r.writes.iter().rev() {
                said.push((r.victim, put_back(w, r.victim)));
            }
            if let Err(e) = self.save() {
                said.push((r.victim, e));
                break;
            }
        }
        said
    }
}

/// Compare-and-restore of one write: back to `from` if it still reads `to`.
fn put_back(w: &LimitWrite, victim: u32) -> String {
    let file = w.file.display();
    match read_limit(&w.file) {
        Err(e) => format!("could not put back {file} (raised for pid {victim}): {e}"),
        Ok(now) if now != w.to => format!(
            "left {file} at {now}: it no longer reads the {} oomtrace set for pid {victim} \
             (changed by someone else since; their value is kept, the old {} is not restored)",
            w.to, w.from
        ),
        Ok(_) => match write_limit(&w.file, w.from) {
            Ok(()) => format!("put back {file} to {} (raised for pid {victim})", w.from),
            Err(e) => format!(
                "could not put back {file} to {} (raised for pid {victim}): {e}; it stays at {} \
                 — put it back by hand once usage allows",
                w.from, w.to
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(dir: &Path, name: &str, v: u64) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    }

    fn read(p: &Path) -> u64 {
        read_limit(p).unwrap()
    }

    /// A raise survives the process (a new Journal on the same directory), is put back only
    /// when its victim is gone, and the journal file is 0600.
    #[test]
    fn a_raise_is_put_back_by_the_next_start_once_the_victim_is_gone() {
        let d = crate::scratch::ScratchDir::new("journal-restart");
        let f = limit(d.path(), "memory.max", 64 << 20);
        let state = d.path().join("state");
        let (mut j, _) = Journal::open(&state).unwrap();
        // This process is alive: its own pid stands for a victim not yet dead.
        let me = std::process::id();
        let start = start_ticks(Path::new("/proc"), me).unwrap();
        j.raise(
            me,
            start,
            vec![LimitWrite {
                file: f.clone(),
                from: 64 << 20,
                to: 80 << 20,
            }],
        )
        .unwrap();
        assert_eq!(read(&f), 80 << 20);
        let mode = std::fs::metadata(state.join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(j);
        // "Restarted": the victim still lives, nothing is put back.
        let (mut j, _) = Journal::open(&state).unwrap();
        assert!(j.check_dead(Path::new("/proc")).is_empty());
        assert_eq!(read(&f), 80 << 20);
        // The victim (as far as the journal knows) is gone: a later process has its pid.
        j.entries[0].victim_start = start + 1;
        j.save().unwrap();
        let (mut j, _) = Journal::open(&state).unwrap();
        let said = j.check_dead(Path::new("/proc"));
        assert_eq!(read(&f), 64 << 20, "{said:?}");
        assert!(said[0].1.starts_with("put back"), "{said:?}");
        assert!(j.entries().is_empty());
    }

    /// Stacked raises of one file come back in reverse order even when the first victim dies
    /// first; an admin's change is left alone and said; v1's memsw comes down after the limit.
    #[test]
    fn stacked_raises_come_back_in_order_and_an_admins_change_is_kept() {
        let d = crate::scratch::ScratchDir::new("journal-order");
        let f = limit(d.path(), "memory.limit_in_bytes", 100);
        let sw = limit(d.path(), "memory.memsw.limit_in_bytes", 100);
        let (mut j, _) = Journal::open(&d.path().join("s")).unwrap();
        let w = |file: &Path, from, to| LimitWrite {
            file: file.to_path_buf(),
            from,
            to,
        };
        j.raise(1, 1, vec![w(&sw, 100, 200), w(&f, 100, 200)])
            .unwrap();
        j.raise(2, 2, vec![w(&sw, 200, 300), w(&f, 200, 300)])
            .unwrap();
        assert_eq!((read(&f), read(&sw)), (300, 300));
        // The first victim dies first: nothing can come back yet.
        assert!(j.victim_dead(1, Some(1)).is_empty());
        assert_eq!(read(&f), 300);
        let said = j.victim_dead(2, Some(2));
        assert_eq!((read(&f), read(&sw)), (100, 100), "{said:?}");
        // The limit came down before memsw, each time.
        assert!(
            said[0].1.contains("memory.limit_in_bytes to 200"),
            "{said:?}"
        );
        assert!(
            said[1].1.contains("memsw.limit_in_bytes to 200"),
            "{said:?}"
        );
        // An admin sets the limit meanwhile: kept, and said.
        j.raise(3, 3, vec![w(&f, 100, 200)]).unwrap();
        std::fs::write(&f, "150").unwrap();
        let said = j.victim_dead(3, Some(3));
        assert_eq!(read(&f), 150);
        assert!(said[0].1.contains("changed by someone else"), "{said:?}");
        assert!(j.entries().is_empty());
    }

    /// A failed write undoes what was done and leaves no entry.
    #[test]
    fn a_failed_raise_leaves_nothing() {
        let d = crate::scratch::ScratchDir::new("journal-fail");
        let sw = limit(d.path(), "memory.memsw.limit_in_bytes", 100);
        let (mut j, _) = Journal::open(&d.path().join("s")).unwrap();
        let missing = d.path().join("nodir/memory.limit_in_bytes");
        let e = j
            .raise(
                1,
                1,
                vec![
                    LimitWrite {
                        file: sw.clone(),
                        from: 100,
                        to: 200,
                    },
                    LimitWrite {
                        file: missing,
                        from: 100,
                        to: 200,
                    },
                ],
            )
            .unwrap_err();
        assert!(e.contains("undone"), "{e}");
        assert_eq!(read(&sw), 100);
        assert!(j.entries().is_empty());
    }
}
