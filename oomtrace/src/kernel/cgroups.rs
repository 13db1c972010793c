//! Where the memory controller lives (cgroup v1 or v2) and memcg id → path resolution.
//!
//! The kernel side reports a memcg as the id of its cgroup, which is the inode number of the
//! cgroup's directory on either version. Paths are found by walking the controller's hierarchy,
//! once at start and again (rate-limited) when an unknown id shows up.

use std::{
    collections::HashMap,
    fmt,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::Serialize;

/// Which cgroup version carries the memory controller, and where it is mounted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryController {
    pub version: u8,
    pub mount: PathBuf,
}

impl fmt::Display for MemoryController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cgroup v{} at {}", self.version, self.mount.display())
    }
}

/// Finds the memory controller from a mountinfo text (`/proc/self/mountinfo`).
pub fn find_memory_controller(mountinfo: &str) -> Option<MemoryController> {
    let mut v2 = None;
    for line in mountinfo.lines() {
        // id parent major:minor root mountpoint options - fstype source superoptions
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount = left.split_whitespace().nth(4);
        let mut right = right.split_whitespace();
        let (fstype, super_opts) = (right.next(), right.nth(1).unwrap_or(""));
        match (fstype, mount) {
            (Some("cgroup"), Some(m)) if super_opts.split(',').any(|o| o == "memory") => {
                return Some(MemoryController {
                    version: 1,
                    mount: PathBuf::from(m),
                });
            }
            (Some("cgroup2"), Some(m)) if v2.is_none() => v2 = Some(PathBuf::from(m)),
            _ => {}
        }
    }
    let mount = v2?;
    let controllers = std::fs::read_to_string(mount.join("cgroup.controllers")).ok()?;
    controllers
        .split_whitespace()
        .any(|c| c == "memory")
        .then_some(MemoryController { version: 2, mount })
}

/// Detects the memory controller of this host.
pub fn memory_controller() -> Option<MemoryController> {
    find_memory_controller(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// memcg id → path relative to the controller's mount ("/" for the root).
pub struct MemcgPaths {
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    last_scan: Option<Instant>,
}

/// How often an unknown id may trigger a rescan of the hierarchy.
const RESCAN_EVERY: Duration = Duration::from_millis(500);

impl MemcgPaths {
    pub fn new(controller: Option<&MemoryController>) -> Self {
        let mut m = MemcgPaths {
            root: controller.map(|c| c.mount.clone()),
            paths: HashMap::new(),
            last_scan: None,
        };
        m.rescan();
        m
    }

    fn rescan(&mut self) {
        let Some(root) = self.root.clone() else {
            return;
        };
        self.last_scan = Some(Instant::now());
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir.strip_prefix(&root).unwrap_or(Path::new(""));
            self.paths.insert(meta.ino(), format!("/{}", rel.display()));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }

    /// The path of a memcg id, rescanning (at most every 500 ms) when it is unknown.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if !self.paths.contains_key(&id)
            && self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY)
        {
            self.rescan();
        }
        self.paths.get(&id).cloned()
    }

    /// Remembers a path for an id (tests, replays).
    pub fn insert(&mut self, id: u64, path: String) {
        self.paths.insert(id, path);
    }

    /// The mount point of the controller, if any.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDir;

    #[test]
    fn v1_memory_controller_is_found_in_mountinfo() {
        let mi = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755
35 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let c = find_memory_controller(mi).unwrap();
        assert_eq!(c.version, 1);
        assert_eq!(c.mount, Path::new("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn no_cgroup_mounts_means_none() {
        assert_eq!(
            find_memory_controller("1 0 8:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
        assert_eq!(find_memory_controller("garbage\n\n - \n"), None);
    }

    #[test]
    fn paths_are_relative_to_the_mount_and_keyed_by_inode() {
        let scratch = ScratchDir::new("memcg");
        let dir = scratch.path().to_path_buf();
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        let c = MemoryController {
            version: 2,
            mount: dir.clone(),
        };
        let mut m = MemcgPaths::new(Some(&c));
        let ino = std::fs::metadata(dir.join("a/b")).unwrap().ino();
        assert_eq!(m.path(ino).as_deref(), Some("/a/b"));
        std::fs::create_dir_all(dir.join("c")).unwrap();
        let ino_c = std::fs::metadata(dir.join("c")).unwrap().ino();
        m.last_scan = None;
        assert_eq!(m.path(ino_c).as_deref(), Some("/c"));
    }
}
