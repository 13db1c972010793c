//! What a killed earlier run left behind. A test process killed by a signal (a timeout, ^C, a
//! runner's teardown) runs none of its Drop guards, so its memory cgroups and FUSE mounts stay
//! (found on this machine: a `fleet` test's memcg and its mount, from a run killed mid-test).
//! All are named after the test process's pid (`tests/src/sandbox.rs`: `oomtrace-test-PID-…`
//! and `PREFIX-oomtrace-PID-N`; `tests/src/fuse.rs`: `oomtrace-fuse-PID-…`; scratch
//! directories, `oomtrace/src/scratch.rs`: `oomtrace-LABEL-PID-N`). Before a run, those
//! whose process is gone are removed and the run says so. Processes still inside such a memcg
//! are not ended (this run did not start them): the memcg is left and named.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The pid in a name the test sandboxes or FUSE mounts give, if `name` is one of theirs.
fn owner_pid(name: &str) -> Option<u32> {
    let digits = |s: &str| -> Option<u32> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok().filter(|_| s[end..].starts_with('-'))
    };
    if let Some(rest) = name
        .strip_prefix("oomtrace-test-")
        .or_else(|| name.strip_prefix("oomtrace-fuse-"))
    {
        return digits(rest);
    }
    // `PREFIX-oomtrace-PID-N` (a node's top-level shape, e.g. `kubepods-oomtrace-123-4`).
    let (_, rest) = name.split_once("-oomtrace-")?;
    let (pid, n) = rest.split_once('-')?;
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if number(pid) && number(n) {
        pid.parse().ok()
    } else {
        None
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A leftover memcg's subtree, deepest first, so that each `rmdir` finds its children gone.
fn subtree(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                subtree(&e.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

fn sweep_memcgs(root: &Path, said: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if alive(pid) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let mut dirs = Vec::new();
        subtree(&e.path(), &mut dirs);
        let mut kept = Vec::new();
        for d in &dirs {
            if let Err(err) = std::fs::remove_dir(d) {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                kept.push(format!(
                    "{} ({err}; processes: [{}])",
                    d.display(),
                    procs.split_whitespace().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if kept.is_empty() {
            said.push(format!(
                "removed memcg {} (test pid {pid} gone)",
                e.path().display()
            ));
        } else {
            said.push(format!(
                "could NOT remove memcg {} of test pid {pid} (gone): {}; not ending processes \
                 this run did not start, remove them by hand",
                e.path().display(),
                kept.join("; ")
            ));
        }
    }
}

/// Mount points (`/proc/self/mountinfo`'s fifth field) of FUSE mounts the tests made.
fn fuse_mounts(mountinfo: &str) -> Vec<(PathBuf, u32)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let point = l.split(' ').nth(4)?;
            let name = Path::new(point).file_name()?.to_str()?;
            let pid = owner_pid(name).filter(|_| name.starts_with("oomtrace-fuse-"))?;
            Some((PathBuf::from(point), pid))
        })
        .collect()
}

fn sweep_fuse(said: &mut Vec<String>) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for (point, pid) in fuse_mounts(&mountinfo) {
        if alive(pid) {
            continue;
        }
        // Lazy: a process stuck on the mount does not hold the sweep.
        let ok = Command::new("umount")
            .arg("-l")
            .arg(&point)
            .status()
            .is_ok_and(|s| s.success());
        let _ = std::fs::remove_dir(&point);
        said.push(if ok {
            format!("unmounted FUSE {} (test pid {pid} gone)", point.display())
        } else {
            format!(
                "could NOT unmount FUSE {} of test pid {pid} (gone)",
                point.display()
            )
        });
    }
}

/// The pid in a test scratch directory's name (`oomtrace/src/scratch.rs`:
/// `oomtrace-LABEL-PID-N`, in the temporary directory).
fn scratch_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("oomtrace-")?;
    let mut parts = rest.rsplitn(3, '-');
    let (n, pid, label) = (parts.next()?, parts.next()?, parts.next()?);
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if label.is_empty() || !number(n) || !number(pid) {
        return None;
    }
    pid.parse().ok()
}

/// Scratch directories (a test's Prometheus data, its files) of test pids that are gone. Only
/// directories on the temporary directory's own file system: never into a mount.
fn sweep_scratch(tmp: &Path, said: &mut Vec<String>) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(tmp_dev) = std::fs::metadata(tmp).map(|m| m.dev()) else {
        return;
    };
    // `/proc/self` belongs to this process's effective user.
    let me = std::fs::metadata("/proc/self").ok().map(|m| m.uid());
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = scratch_pid(&name) else {
            continue;
        };
        let path = e.path();
        // Ours (the sweep runs as root, as the tests did), a directory, not a mount.
        let own_dir = std::fs::symlink_metadata(&path)
            .is_ok_and(|m| m.is_dir() && m.dev() == tmp_dev && Some(m.uid()) == me);
        if alive(pid) || !own_dir {
            continue;
        }
        said.push(match std::fs::remove_dir_all(&path) {
            Ok(()) => format!(
                "removed scratch directory {} (test pid {pid} gone)",
                path.display()
            ),
            Err(e) => format!("could NOT remove scratch directory {}: {e}", path.display()),
        });
    }
}

/// Removes what killed earlier runs left, as root; prints one line per thing touched.
pub(crate) fn sweep() {
    if !crate::setup::is_root() {
        return;
    }
    let mut said = Vec::new();
    sweep_fuse(&mut said);
    sweep_scratch(&std::env::temp_dir(), &mut said);
    for root in ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"] {
        sweep_memcgs(Path::new(root), &mut said);
    }
    for s in said {
        eprintln!("xtask: left by a killed earlier run: {s}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tests_names_give_their_pid_and_nothing_else_does() {
        assert_eq!(owner_pid("oomtrace-test-5380-0-fleet"), Some(5380));
        assert_eq!(owner_pid("oomtrace-fuse-5380-fleet"), Some(5380));
        assert_eq!(owner_pid("kubepods-oomtrace-26289-3"), Some(26289));
        for other in [
            "process_api",
            "kubepods",
            "oomtrace-test-",
            "oomtrace-test-12",
            "oomtrace-test-x1-0-a",
            "kubepods-oomtrace-26289",
            "kubepods-oomtrace-26289-3-x",
            "memory.stat",
        ] {
            assert_eq!(owner_pid(other), None, "{other}");
        }
    }

    #[test]
    fn scratch_directories_give_their_pid() {
        assert_eq!(scratch_pid("oomtrace-fleet-prometheus-5380-0"), Some(5380));
        assert_eq!(scratch_pid("oomtrace-x-12-3"), Some(12));
        for other in [
            "oomtrace-fuse-5380-fleet",
            "oomtrace-12-3",
            "oomtrace--12-3",
            "oomtrace-x-12-",
            "other-x-12-3",
        ] {
            assert_eq!(scratch_pid(other), None, "{other}");
        }
    }

    #[test]
    fn a_gone_runs_scratch_directory_is_removed_and_a_live_ones_kept() {
        let tmp = std::env::temp_dir().join(format!("xtask-scratch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let gone = tmp.join("oomtrace-fleet-prometheus-4999999-0");
        std::fs::create_dir_all(gone.join("data")).unwrap();
        std::fs::write(gone.join("data/x"), "x").unwrap();
        let live = tmp.join(format!("oomtrace-y-{}-0", std::process::id()));
        std::fs::create_dir_all(&live).unwrap();
        let mut said = Vec::new();
        sweep_scratch(&tmp, &mut said);
        assert!(!gone.exists(), "{said:?}");
        assert!(live.exists());
        assert_eq!(said.len(), 1, "{said:?}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn fuse_mounts_are_read_from_mountinfo() {
        let mi = "36 25 0:32 / /sys/kernel/tracing rw,relatime shared:16 - tracefs nodev rw\n\
                  90 29 0:50 / /tmp/oomtrace-fuse-5380-fleet rw,nosuid,nodev,relatime - fuse \
                  oomtrace-test rw,user_id=0\n";
        assert_eq!(
            fuse_mounts(mi),
            vec![(PathBuf::from("/tmp/oomtrace-fuse-5380-fleet"), 5380)]
        );
    }

    #[test]
    fn a_gone_runs_memcg_tree_is_removed_deepest_first() {
        let root = std::env::temp_dir().join(format!("xtask-leftovers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // A pid that cannot be running: above the kernel's pid limit (2^22).
        let tree = root.join("oomtrace-test-4999999-0-x");
        std::fs::create_dir_all(tree.join("pod/ctr")).unwrap();
        let mine = root.join(format!("oomtrace-test-{}-0-y", std::process::id()));
        std::fs::create_dir_all(&mine).unwrap();
        let mut said = Vec::new();
        sweep_memcgs(&root, &mut said);
        assert!(!tree.exists(), "{said:?}");
        assert!(mine.exists(), "a live run's memcg is left alone");
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].starts_with("removed memcg"), "{said:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
