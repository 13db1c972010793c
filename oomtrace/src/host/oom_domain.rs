//! The way out of an OOM domain that keeps invoking the OOM killer and gets nowhere: nothing
//! killable (every task at oom_score_adj -1000, exiting, or a victim already skipped) or a
//! livelock (selection aborted while a stuck victim is pending). `oomtrace unstick PID` of a
//! task there offers raising the limit of the *OOM domain* — the memcg whose limit the charges
//! hit, the task's own or an ancestor (a pod, a slice), not necessarily the task's own memcg —
//! by the unstick margin (10 %, 16–256 MiB); cgroup v1's `memory.memsw.limit_in_bytes` too when that
//! is the limit hit. The raise is journaled ([`crate::host::journal`]) and put back as the
//! victim raise is.
//!
//! The domain is found from the kernel's own files, never guessed: walking up from the task's
//! memcg, the deepest memcg whose usage is at its limit (the charge path fails at the first
//! counter over its limit, leaf first); and the kernel must say it is in OOM now — cgroup v2
//! `memory.events.local` `oom` rising between two readings without `oom_kill` rising with
//! it, cgroup v1 `under_oom 1` in `memory.oom_control` in either reading.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Serialize;

use crate::host::forensics::keyed;

/// Headroom under which a memcg counts as at its limit: the charge that failed was at most a
/// few pages, and reclaim between readings frees a little.
const AT_LIMIT_SLACK: u64 = 2 << 20;

/// An OOM domain found for a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OomDomain {
    /// Relative to the controller's mount, as /proc shows memcgs.
    pub path: String,
    #[serde(skip)]
    pub(crate) dir: PathBuf,
    /// The limit hit (`memory.max`, v1 `memory.limit_in_bytes`), and the usage against it.
    pub limit_bytes: u64,
    pub usage_bytes: u64,
    /// cgroup v1: the memory+swap limit is the one hit (`memory.memsw.*`).
    pub memsw_hit: bool,
    /// The uid owning the domain's directory.
    pub(crate) owner: Option<u32>,
}

fn num(dir: &Path, file: &str) -> Option<u64> {
    let t = std::fs::read_to_string(dir.join(file)).ok()?;
    match t.trim() {
        "max" => Some(u64::MAX),
        v => v.parse().ok(),
    }
}

fn at_limit(usage: Option<u64>, limit: Option<u64>) -> Option<(u64, u64)> {
    let (u, l) = (usage?, limit?);
    (l < 1 << 62 && u.saturating_add(AT_LIMIT_SLACK) >= l).then_some((u, l))
}

/// The OOM domain of `memcg_path` (a task's memcg): the deepest of it and its ancestors whose
/// usage is at its limit. None when none is.
pub fn domain_of(memcg_root: &Path, memcg_path: &str, cgroup_v2: bool) -> Option<OomDomain> {
    let mut path = memcg_path.trim_end_matches('/').to_string();
    while !path.is_empty() {
        let dir = memcg_root.join(path.trim_start_matches('/'));
        let hit = if cgroup_v2 {
            at_limit(num(&dir, "memory.current"), num(&dir, "memory.max")).map(|h| (h, false))
        } else {
            at_limit(
                num(&dir, "memory.usage_in_bytes"),
                num(&dir, "memory.limit_in_bytes"),
            )
            .map(|h| (h, false))
            .or_else(|| {
                at_limit(
                    num(&dir, "memory.memsw.usage_in_bytes"),
                    num(&dir, "memory.memsw.limit_in_bytes"),
                )
                .map(|h| (h, true))
            })
        };
        if let Some(((usage_bytes, limit_bytes), memsw_hit)) = hit {
            // The remedy raises memory.limit_in_bytes (and memsw by as much): the limit
            // reported is always that one's.
            let limit_bytes = if memsw_hit {
                num(&dir, "memory.limit_in_bytes").unwrap_or(limit_bytes)
            } else {
                limit_bytes
            };
            return Some(OomDomain {
                owner: std::fs::metadata(&dir).ok().map(|m| m.uid()),
                path: if path.starts_with('/') {
                    path
                } else {
                    format!("/{path}")
                },
                dir,
                limit_bytes,
                usage_bytes,
                memsw_hit,
            });
        }
        match path.rsplit_once('/') {
            Some((parent, _)) => path = parent.to_string(),
            None => break,
        }
    }
    None
}

/// cgroup v1: whether the memory+swap usage of `dir` is at its limit (then raising the memory
/// limit alone frees nothing: memsw is raised by as much).
pub(crate) fn memsw_at_limit(dir: &Path) -> bool {
    at_limit(
        num(dir, "memory.memsw.usage_in_bytes"),
        num(dir, "memory.memsw.limit_in_bytes"),
    )
    .is_some()
}

/// v2 `memory.events.local` counters `oom` and `oom_kill`.
fn events(dir: &Path) -> Option<(u64, u64)> {
    let t = std::fs::read_to_string(dir.join("memory.events.local")).ok()?;
    Some((keyed(&t, "oom")?, keyed(&t, "oom_kill")?))
}

fn under_oom(dir: &Path) -> Option<bool> {
    let t = std::fs::read_to_string(dir.join("memory.oom_control")).ok()?;
    Some(keyed(&t, "under_oom")? != 0)
}

/// Whether the kernel says the domain is in OOM now without killing, from two readings
/// `apart`: Ok with what it said, Err with why not.
pub fn in_oom_now(d: &OomDomain, cgroup_v2: bool, apart: Duration) -> Result<String, String> {
    if cgroup_v2 {
        let first = events(&d.dir).ok_or("memory.events.local is unreadable")?;
        std::thread::sleep(apart);
        let second = events(&d.dir).ok_or("memory.events.local is unreadable")?;
        let invocations = second.0.saturating_sub(first.0);
        let kills = second.1.saturating_sub(first.1);
        return match (invocations, kills) {
            (0, _) => Err(format!(
                "the kernel invoked no OOM killer in memcg {} in {:.1} s (memory.events.local \
                 oom {})",
                d.path,
                apart.as_secs_f64(),
                second.0
            )),
            (_, 0) => Ok(format!(
                "the kernel invoked the OOM killer of memcg {} {invocations} times in {:.1} s \
                 and killed nothing (memory.events.local)",
                d.path,
                apart.as_secs_f64()
            )),
            (_, k) => Err(format!(
                "the kernel killed {k} tasks in memcg {} meanwhile: its OOMs get somewhere",
                d.path
            )),
        };
    }
    let first = under_oom(&d.dir).ok_or("memory.oom_control is unreadable")?;
    std::thread::sleep(apart);
    let second = under_oom(&d.dir).ok_or("memory.oom_control is unreadable")?;
    if first || second {
        Ok(format!(
            "memcg {} is under OOM (memory.oom_control under_oom 1) at its limit",
            d.path
        ))
    } else {
        Err(format!(
            "memcg {} is at its limit but not under OOM (under_oom 0 in two readings {:.1} s \
             apart)",
            d.path,
            apart.as_secs_f64()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDir;

    const MIB: u64 = 1 << 20;

    fn tree(root: &Path, memcgs: &[(&str, &[(&str, &str)])]) {
        for (d, files) in memcgs {
            let dir = root.join(d);
            std::fs::create_dir_all(&dir).unwrap();
            for (f, text) in *files {
                std::fs::write(dir.join(f), text).unwrap();
            }
        }
    }

    #[test]
    fn v2_the_domain_is_the_ancestor_whose_limit_was_hit_not_the_tasks_own_memcg() {
        let root = ScratchDir::new("oom-domain-v2");
        let at = (64 * MIB - 4096).to_string();
        tree(
            root.path(),
            &[
                (
                    "pod",
                    &[
                        ("memory.max", "67108864\n"),
                        ("memory.current", &at),
                        (
                            "memory.events.local",
                            "low 0\nhigh 0\nmax 9\noom 7\noom_kill 1\n",
                        ),
                    ],
                ),
                (
                    "pod/ctr",
                    &[("memory.max", "max\n"), ("memory.current", &at)],
                ),
                (
                    "idle",
                    &[
                        ("memory.max", "67108864\n"),
                        ("memory.current", "1048576\n"),
                    ],
                ),
            ],
        );
        let d = domain_of(root.path(), "/pod/ctr", true).expect("the pod is at its limit");
        assert_eq!(d.path, "/pod");
        assert_eq!(d.limit_bytes, 64 * MIB);
        assert!(!d.memsw_hit);
        assert!(domain_of(root.path(), "/idle", true).is_none());
        assert!(domain_of(root.path(), "/gone", true).is_none());
        // The remedy (`unstick::raise_remedy` of this path) raises the pod's memory.max.
        assert_eq!(d.dir, root.join("pod"));
        // A fixture's counters do not move: the kernel does not say it is in OOM now.
        let why = in_oom_now(&d, true, Duration::from_millis(1)).unwrap_err();
        assert!(why.contains("invoked no OOM killer"), "{why}");
    }

    #[test]
    fn v2_the_deepest_memcg_at_its_limit_is_the_domain() {
        let root = ScratchDir::new("oom-domain-v2-deep");
        tree(
            root.path(),
            &[
                (
                    "slice",
                    &[
                        ("memory.max", "134217728\n"),
                        ("memory.current", "134217728\n"),
                    ],
                ),
                (
                    "slice/pod",
                    &[
                        ("memory.max", "67108864\n"),
                        ("memory.current", "67108864\n"),
                    ],
                ),
            ],
        );
        let d = domain_of(root.path(), "/slice/pod", true).unwrap();
        assert_eq!(d.path, "/slice/pod");
    }

    #[test]
    fn v1_memsw_hit_is_named_and_under_oom_is_the_kernels_word() {
        let root = ScratchDir::new("oom-domain-v1");
        tree(
            root.path(),
            &[
                (
                    "pod",
                    &[
                        ("memory.limit_in_bytes", "134217728\n"),
                        ("memory.usage_in_bytes", "50331648\n"),
                        ("memory.memsw.limit_in_bytes", "67108864\n"),
                        ("memory.memsw.usage_in_bytes", "67108864\n"),
                        (
                            "memory.oom_control",
                            "oom_kill_disable 0\nunder_oom 1\noom_kill 0\n",
                        ),
                    ],
                ),
                (
                    "pod/ctr",
                    &[
                        ("memory.limit_in_bytes", "9223372036854771712\n"),
                        ("memory.usage_in_bytes", "50331648\n"),
                    ],
                ),
                (
                    "calm",
                    &[
                        ("memory.limit_in_bytes", "67108864\n"),
                        ("memory.usage_in_bytes", "67108864\n"),
                        (
                            "memory.oom_control",
                            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
                        ),
                    ],
                ),
            ],
        );
        let d = domain_of(root.path(), "/pod/ctr", false).unwrap();
        assert_eq!(d.path, "/pod");
        assert!(d.memsw_hit, "{d:?}");
        // The remedy raises memory.limit_in_bytes; memsw goes up by as much (unstick::vet).
        assert_eq!(d.limit_bytes, 128 * MIB);
        assert!(in_oom_now(&d, false, Duration::from_millis(1)).is_ok());
        let calm = domain_of(root.path(), "/calm", false).unwrap();
        let why = in_oom_now(&calm, false, Duration::from_millis(1)).unwrap_err();
        assert!(why.contains("not under OOM"), "{why}");
    }
}
