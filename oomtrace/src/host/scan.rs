//! What happened before oomtrace came: processes that were sent SIGKILL and have not finished
//! exiting, found in /proc when `watch`, `record` or `check` starts.
//!
//! The first use of oomtrace is often on a host already in trouble: the victim was killed
//! minutes or days ago and never died. Its kill left no event oomtrace could see, but /proc
//! still shows it: SIGKILL pending (bit 8 of `ShdPnd`, where a group kill puts it and where it
//! stays for the life of the signal struct, or of `SigPnd`), and threads that have not
//! finished exiting — in D, stopped by a tracer, or a zombie leader whose other threads live
//! on. A process that is merely being killed at that moment shows the same for a few
//! milliseconds, so callers confirm a candidate is still not dead a moment later
//! ([`crate::lifecycle::PRE_EXISTING_GRACE_NS`]) before calling it stuck.
//!
//! Everything is read under a root directory so tests can use a fixture tree.

use std::{os::unix::fs::MetadataExt as _, path::Path};

use oomtrace_common::{PreExisting, TASK_COMM_LEN, pre_existing};

use crate::{
    event::comm_bytes,
    host::{
        forensics::{self, keyed, sigkill_pending, status_field},
        procfs::start_ns_of,
    },
};

/// A process with SIGKILL pending that has not finished exiting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    /// Leader start time, ns since boot (clock-tick precision).
    pub start_ns: u64,
    /// The memcg path a live thread reports, if any.
    pub memcg_path: Option<String>,
    /// The memcg's id (inode of its directory), when the memory controller is mounted.
    pub(crate) memcg_id: u64,
    pub threads: u32,
    /// [`pre_existing`] bits.
    pub flags: u32,
}

impl Candidate {
    /// The event that brings it into the tracker (and into dumps).
    pub(crate) fn payload(&self) -> PreExisting {
        PreExisting {
            pid: self.pid,
            ppid: self.ppid,
            comm: self.comm_bytes(),
            start_ns: self.start_ns,
            memcg_id: self.memcg_id,
            threads: self.threads,
            flags: self.flags,
        }
    }

    pub(crate) fn comm_bytes(&self) -> [u8; TASK_COMM_LEN] {
        comm_bytes(&self.comm)
    }
}

/// Scans `proc_root` for processes with SIGKILL pending that have not finished exiting
/// (except `exclude`, oomtrace itself). `memcg_root` is the memory controller's mount, to turn
/// a memcg path into its id.
pub fn scan(proc_root: &Path, memcg_root: Option<&Path>, exclude: u32) -> Vec<Candidate> {
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out: Vec<Candidate> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != exclude)
        .filter_map(|pid| candidate(proc_root, memcg_root, pid))
        .collect();
    out.sort_by_key(|c| c.pid);
    out
}

fn candidate(proc_root: &Path, memcg_root: Option<&Path>, pid: u32) -> Option<Candidate> {
    let dir = proc_root.join(pid.to_string());
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    // Kernel threads and threads listed as pids are not processes that can be OOM victims.
    if status_field(&status, "Tgid")?.parse::<u32>().ok()? != pid
        || status_field(&status, "Kthread") == Some("1")
    {
        return None;
    }
    let mut states: Vec<(u32, String, bool)> = std::fs::read_dir(dir.join("task"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let st = std::fs::read_to_string(e.path().join("status")).ok()?;
            let state = status_field(&st, "State")?.to_string();
            Some((tid, state, sigkill_pending(&st) == Some(true)))
        })
        .collect();
    states.sort();
    if sigkill_pending(&status) != Some(true) && !states.iter().any(|s| s.2) {
        return None;
    }
    let finished = |s: &str| s.starts_with('Z') || s.starts_with('X');
    // Every thread finished exiting: dead (a zombie waiting for its parent), not stuck.
    if states.iter().all(|s| finished(&s.1)) {
        return None;
    }
    let ppid: u32 = status_field(&status, "PPid")?.parse().ok()?;
    let mut flags = 0;
    let leader_state = status_field(&status, "State").unwrap_or("");
    if finished(leader_state) {
        flags |= pre_existing::ZOMBIE_LEADER;
    }
    // I (TASK_IDLE: uninterruptible, not counted as load) is where the threads of a process
    // being core-dumped wait on recent kernels (`coredump_task_exit`): in D before.
    if states
        .iter()
        .any(|s| s.1.starts_with('D') || s.1.starts_with('I'))
    {
        flags |= pre_existing::THREAD_IN_D;
    }
    if states.iter().any(|s| s.1.starts_with('t')) {
        flags |= pre_existing::TRACED;
    }
    if ppid == 1 {
        flags |= pre_existing::PARENT_INIT;
    }
    // A zombie leader reports the root memcg: ask a live thread; on v1 an exiting one
    // reports it too, and the memcg's own task list tells.
    let memcg_path = states
        .iter()
        .filter(|s| !finished(&s.1))
        .find_map(|s| forensics::memcg_path(&dir.join("task").join(s.0.to_string())))
        .filter(|p| p != "/")
        .or_else(|| {
            let tids: Vec<u32> = states.iter().map(|s| s.0).collect();
            memcg_root.and_then(|r| forensics::memcg_by_tasks(r, &tids))
        })
        .or_else(|| forensics::memcg_path(&dir));
    let memcg_id = match (memcg_root, &memcg_path) {
        (Some(root), Some(p)) => {
            std::fs::metadata(root.join(p.trim_start_matches('/'))).map_or(0, |m| m.ino())
        }
        _ => 0,
    };
    Some(Candidate {
        pid,
        ppid,
        comm: std::fs::read_to_string(dir.join("comm"))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_default(),
        start_ns: start_ns_of(proc_root, pid).unwrap_or(0),
        memcg_path,
        memcg_id,
        threads: states.len() as u32,
        flags,
    })
}

/// v1 memcgs hung with the OOM killer disabled (`oom_kill_disable 1`, `under_oom 1`) in both
/// readings: the domains only (the memcgs below one inherit the setting and are marked under
/// OOM with it).
pub fn oom_killer_disabled(before: &[MemcgOom], after: &[MemcgOom]) -> Vec<String> {
    let hung = |m: &MemcgOom| m.under_oom == Some(true) && m.kill_disable == Some(true);
    let mut paths: Vec<String> = after
        .iter()
        .filter(|a| hung(a) && before.iter().any(|b| b.path == a.path && hung(b)))
        .map(|a| a.path.clone())
        .collect();
    paths.sort_by_key(|p| p.matches('/').count());
    let mut out: Vec<String> = Vec::new();
    for p in paths {
        let below = out
            .iter()
            .any(|d| d == "/" || p.starts_with(&format!("{}/", d.trim_end_matches('/'))));
        if !below {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/proc")
    }

    #[test]
    fn the_incident_shape_is_a_candidate_with_its_live_threads_memcg() {
        let found = scan(&fixture(), None, 0);
        let c = found
            .iter()
            .find(|c| c.pid == 4242)
            .unwrap_or_else(|| panic!("{found:?}"));
        assert_eq!(c.ppid, 1);
        assert_eq!(c.threads, 2);
        assert_eq!(
            c.flags,
            pre_existing::ZOMBIE_LEADER | pre_existing::THREAD_IN_D | pre_existing::PARENT_INIT
        );
        assert_eq!(c.memcg_path.as_deref(), Some("/oomtrace-test"));
        assert_eq!(c.comm, "stuck-victim");
        assert_eq!(
            c.start_ns,
            5213 * (1_000_000_000 / crate::host::procfs::clock_ticks())
        );
    }

    #[test]
    fn killed_and_finished_or_never_killed_are_not_candidates() {
        let found: Vec<u32> = scan(&fixture(), None, 0).iter().map(|c| c.pid).collect();
        // 4300: a zombie whose threads are all gone (dead, waiting for its parent);
        // 4400: a thread in D with nothing pending (slow I/O, not a kill).
        assert_eq!(found, vec![4242], "only the stuck victim");
    }

    /// cgroup v1 shows `/` for an exiting task; the memcg's `tasks` file still lists it.
    #[test]
    fn an_exiting_tasks_v1_memcg_is_found_by_its_task_list() {
        let memcg = fixture().join("memcg");
        assert_eq!(
            forensics::memcg_by_tasks(&memcg, &[4243]).as_deref(),
            Some("/oomtrace-test/child")
        );
        assert_eq!(forensics::memcg_by_tasks(&memcg, &[1]), None);
    }

    #[test]
    fn a_killed_process_whose_threads_wait_in_idle_for_a_core_dump_is_a_candidate() {
        let root = crate::scratch::ScratchDir::new("proc-coredump");
        let write = |rel: &str, text: &str| {
            let p = root.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        let status = |state: &str, sigpnd: &str| {
            format!(
                "Name:\tdumper\nState:\t{state}\nTgid:\t700\nPPid:\t1\nThreads:\t2\n\
                 SigPnd:\t{sigpnd}\nShdPnd:\t0000000000000000\n"
            )
        };
        write("700/status", &status("D (disk sleep)", "0000000000000100"));
        write("700/comm", "dumper\n");
        write(
            "700/task/700/status",
            &status("D (disk sleep)", "0000000000000100"),
        );
        write(
            "700/task/701/status",
            &status("I (idle)", "0000000000000100"),
        );
        let found = scan(root.path(), None, 0);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_ne!(found[0].flags & pre_existing::THREAD_IN_D, 0);
        // A thread in I alone counts too (the dumper may have finished its part).
        write(
            "700/task/700/status",
            &status("S (sleeping)", "0000000000000100"),
        );
        write("700/status", &status("S (sleeping)", "0000000000000100"));
        let found = scan(root.path(), None, 0);
        assert_ne!(found[0].flags & pre_existing::THREAD_IN_D, 0, "{found:?}");
    }

    #[test]
    fn a_vanished_root_is_empty_not_a_panic() {
        assert!(scan(Path::new("/nonexistent-oomtrace"), None, 0).is_empty());
    }
}

/// Memcgs read at most by [`memcg_oom_states`].
const MAX_MEMCGS_SCANNED: usize = 100_000;

/// A memcg's OOM counters at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemcgOom {
    /// Relative to the controller's mount (`/` is the root).
    pub(crate) path: String,
    /// v2 `memory.events` `oom`: times the OOM killer was invoked for it (v1 does not count).
    pub(crate) oom: Option<u64>,
    /// `oom_kill` (v2 `memory.events`, v1 `memory.oom_control`).
    pub(crate) oom_kill: Option<u64>,
    /// Whether `oom_kill` counts kills in descendant memcgs too: v2 does (unless mounted with
    /// `memory_localevents`); v1 counts a kill only in the victim's own memcg.
    pub(crate) counts_descendants: bool,
    /// v1 `memory.oom_control` `under_oom` (only set while the OOM path runs or waits).
    pub(crate) under_oom: Option<bool>,
    /// v1 `memory.oom_control` `oom_kill_disable`.
    pub(crate) kill_disable: Option<bool>,
}

/// Every memcg's OOM counters under the memory controller's mount.
pub fn memcg_oom_states(memcg_root: &Path) -> Vec<MemcgOom> {
    let local_events = mounted_with(memcg_root, "memory_localevents");
    forensics::memcgs_under(memcg_root)
        .take(MAX_MEMCGS_SCANNED)
        .filter_map(|(dir, path)| {
            let events = std::fs::read_to_string(dir.join("memory.events")).ok();
            let control = std::fs::read_to_string(dir.join("memory.oom_control")).ok();
            if events.is_none() && control.is_none() {
                return None;
            }
            Some(MemcgOom {
                path,
                oom: events.as_deref().and_then(|t| keyed(t, "oom")),
                oom_kill: events
                    .as_deref()
                    .or(control.as_deref())
                    .and_then(|t| keyed(t, "oom_kill")),
                counts_descendants: events.is_some() && !local_events,
                under_oom: control
                    .as_deref()
                    .and_then(|t| keyed(t, "under_oom"))
                    .map(|u| u != 0),
                kill_disable: control
                    .as_deref()
                    .and_then(|t| keyed(t, "oom_kill_disable"))
                    .map(|u| u != 0),
            })
        })
        .collect()
}

/// Whether the filesystem mounted at `dir` has mount option `option` (/proc/self/mounts).
fn mounted_with(dir: &Path, option: &str) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let dir = dir.to_string_lossy();
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1] == dir && f[3].split(',').any(|o| o == option)
    })
}

/// A memcg in OOM now: between two readings the OOM killer was invoked for it (v2), or it was
/// seen under OOM (v1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomNow {
    pub path: String,
    /// OOM invocations between the readings (v2); None on v1.
    pub invocations: Option<u64>,
    /// OOM kills between the readings.
    pub kills: u64,
}

/// The memcgs whose OOM counters show OOM handling between `before` and `after`. Invocations
/// without kills mean the kernel found nothing it could kill: a victim still pending, or only
/// unkillable processes — the livelock signature, readable without any kernel hook.
pub fn oom_now(before: &[MemcgOom], after: &[MemcgOom]) -> Vec<OomNow> {
    after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| b.path == a.path)?;
            let diff = |x: Option<u64>, y: Option<u64>| Some(x?.saturating_sub(y?));
            let invocations = diff(a.oom, b.oom);
            let kills = diff(a.oom_kill, b.oom_kill).unwrap_or(0);
            let active = invocations.is_some_and(|n| n > 0)
                || a.under_oom == Some(true) && b.under_oom == Some(true);
            active.then(|| OomNow {
                path: a.path.clone(),
                invocations,
                kills,
            })
        })
        .collect()
}

#[cfg(test)]
mod memcg_tests {
    use super::*;
    use crate::scratch::ScratchDir;

    #[test]
    fn oom_invocations_without_kills_are_found_between_two_readings() {
        let root = ScratchDir::new("memcg-oom");
        let write = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("memory.events", "low 0\nhigh 0\nmax 9\noom 3\noom_kill 3\n");
        write("pod/memory.events", "low 0\nmax 40\noom 10\noom_kill 1\n");
        write("pod/ctr/memory.events", "oom 0\noom_kill 1\n");
        write("quiet/memory.events", "oom 5\noom_kill 5\n");
        let before = memcg_oom_states(root.path());
        assert_eq!(before.len(), 4, "{before:?}");
        write("pod/memory.events", "low 0\nmax 90\noom 17\noom_kill 1\n");
        let after = memcg_oom_states(root.path());
        assert_eq!(
            oom_now(&before, &after),
            [OomNow {
                path: "/pod".into(),
                invocations: Some(7),
                kills: 0
            }]
        );
    }

    #[test]
    fn v1_oom_killer_disabled_names_the_domain_in_both_readings() {
        let root = ScratchDir::new("memcg-okd-v1");
        for (d, text) in [
            ("a", "oom_kill_disable 1\nunder_oom 1\noom_kill 0\n"),
            ("a/b", "oom_kill_disable 1\nunder_oom 1\noom_kill 0\n"),
            ("c", "oom_kill_disable 1\nunder_oom 0\noom_kill 0\n"),
            ("d", "oom_kill_disable 0\nunder_oom 1\noom_kill 0\n"),
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::write(root.join(d).join("memory.oom_control"), text).unwrap();
        }
        let s = memcg_oom_states(root.path());
        assert_eq!(oom_killer_disabled(&s, &s), ["/a"]);
        assert!(
            oom_killer_disabled(&[], &s).is_empty(),
            "one reading is not enough"
        );
    }

    #[test]
    fn v1_under_oom_in_both_readings_counts() {
        let root = ScratchDir::new("memcg-oom-v1");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(
            root.join("a/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 1\noom_kill 2\n",
        )
        .unwrap();
        let s = memcg_oom_states(root.path());
        let found = oom_now(&s, &s);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].invocations, found[0].kills), (None, 0));
    }
}
