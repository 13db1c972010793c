//! The sandbox: a memory cgroup of our own with a small limit, removed (with what is left in it)
//! on drop.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde_json::Value;

use crate::*;

/// Which cgroup version has the memory controller here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

fn memory_root() -> (CgroupVersion, PathBuf) {
    let v2 = Path::new("/sys/fs/cgroup");
    if std::fs::read_to_string(v2.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
    {
        return (CgroupVersion::V2, v2.to_path_buf());
    }
    let v1 = Path::new("/sys/fs/cgroup/memory");
    assert!(
        v1.join("memory.limit_in_bytes").exists(),
        "no memory cgroup controller found (neither cgroup v2 with `memory` nor v1 at {})",
        v1.display()
    );
    (CgroupVersion::V1, v1.to_path_buf())
}

static SANDBOXES: AtomicU32 = AtomicU32::new(0);

/// A memory cgroup of our own with a small limit. Dropping it kills what is left in it (only
/// our processes can be there) and removes it.
pub struct Sandbox {
    dir: PathBuf,
    version: CgroupVersion,
    rel: String,
}

/// The sandbox's path as oomtrace names it, if its memcg is on cgroup v2 (which counts OOM
/// invocations in `memory.events`; v1 does not).
pub fn cgroup_version_2(sandbox: &Sandbox) -> Option<String> {
    (sandbox.version() == CgroupVersion::V2).then(|| sandbox.rel_path().to_string())
}

/// Whether this runs in a disposable guest kernel (`cargo xtask vm` says so), where a global
/// OOM is allowed: never on the host.
pub fn disposable_kernel() -> bool {
    std::env::var("OOMTRACE_DISPOSABLE_KERNEL").as_deref() == Ok("1")
}

impl Sandbox {
    /// Creates `oomtrace-test-<pid>-<n>-<label>` with `limit_bytes` (≤ 128 MiB) and no swap.
    pub fn new(label: &str, limit_bytes: u64) -> Sandbox {
        assert!(limit_bytes <= 128 << 20, "sandbox limits stay ≤ 128 MiB");
        Sandbox::create(label, Some(limit_bytes))
    }

    /// A sandbox without a memory limit, for a global OOM: only inside a disposable guest
    /// kernel (panics elsewhere: the host must never run out of memory).
    pub fn unlimited_in_disposable_guest(label: &str) -> Sandbox {
        assert!(
            disposable_kernel(),
            "a global OOM is only ever caused inside a disposable guest kernel"
        );
        Sandbox::create(label, None)
    }

    /// A child memcg with no limit of its own: its processes are limited by this one's. Drop
    /// it before the parent.
    pub fn child(&self, label: &str) -> Sandbox {
        if self.version == CgroupVersion::V2 {
            self.write("cgroup.subtree_control", "+memory");
        }
        let dir = self.dir.join(label);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Sandbox {
            dir,
            version: self.version,
            rel: format!("{}/{label}", self.rel),
        }
    }

    /// Like [`Sandbox::new`], named `<prefix>-oomtrace-<pid>-<n>` at the controller's root:
    /// a node's top-level shape (`kubepods…`) for tests of how memcg paths are read.
    pub fn at_root(prefix: &str, limit_bytes: u64) -> Sandbox {
        assert!(limit_bytes <= 128 << 20, "sandbox limits stay ≤ 128 MiB");
        let n = SANDBOXES.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-oomtrace-{}-{n}", std::process::id());
        Sandbox::create_named(name, Some(limit_bytes))
    }

    fn create(label: &str, limit_bytes: Option<u64>) -> Sandbox {
        let n = SANDBOXES.fetch_add(1, Ordering::Relaxed);
        let name = format!("oomtrace-test-{}-{n}-{label}", std::process::id());
        Sandbox::create_named(name, limit_bytes)
    }

    fn create_named(name: String, limit_bytes: Option<u64>) -> Sandbox {
        let (version, root) = memory_root();
        if version == CgroupVersion::V2 {
            // Children of the root get the memory controller only if the root delegates it.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
        }
        let dir = root.join(&name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let sandbox = Sandbox {
            dir,
            version,
            rel: format!("/{name}"),
        };
        if let Some(limit_bytes) = limit_bytes {
            sandbox.limit(limit_bytes);
        }
        sandbox
    }

    /// Limits this memcg to `limit_bytes` (≤ 128 MiB) without swap (a child made by
    /// [`Sandbox::child`] has no limit of its own until then).
    pub fn limit(&self, limit_bytes: u64) {
        assert!(limit_bytes <= 128 << 20, "sandbox limits stay ≤ 128 MiB");
        match self.version {
            CgroupVersion::V1 => {
                self.write("memory.limit_in_bytes", &limit_bytes.to_string());
                if self.dir.join("memory.memsw.limit_in_bytes").exists() {
                    self.write("memory.memsw.limit_in_bytes", &limit_bytes.to_string());
                }
            }
            CgroupVersion::V2 => {
                self.write("memory.max", &limit_bytes.to_string());
                if self.dir.join("memory.swap.max").exists() {
                    self.write("memory.swap.max", "0");
                }
            }
        }
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.dir.join(file);
        std::fs::write(&path, value)
            .unwrap_or_else(|e| panic!("writing {value} to {}: {e}", path.display()));
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kernel's id of this memcg: the inode number of its directory.
    pub fn id(&self) -> u64 {
        std::fs::metadata(&self.dir).expect("sandbox dir").ino()
    }

    /// The path relative to the controller's mount, as oomtrace reports it.
    pub fn rel_path(&self) -> &str {
        &self.rel
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Pids in the cgroup.
    pub fn procs(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// OOM kills the kernel counted in this cgroup (v2: and below it; v1: in it only).
    pub fn oom_kills(&self) -> u64 {
        oom_kill_counter(&self.dir, self.version)
    }

    /// OOM kills of victims in this cgroup or below it, by the kernel's counters: v2 counts
    /// them hierarchically, v1 in the victim's own memcg only (so they are summed).
    pub fn oom_kills_in_subtree(&self) -> u64 {
        fn below(dir: &Path) -> u64 {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| oom_kill_counter(&e.path(), CgroupVersion::V1) + below(&e.path()))
                .sum()
        }
        match self.version {
            CgroupVersion::V2 => self.oom_kills(),
            CgroupVersion::V1 => self.oom_kills() + below(&self.dir),
        }
    }

    /// Asserts that the summary of a watch filtered to this cgroup (`--memcg`) counts exactly
    /// the kills the kernel counted in it.
    pub fn assert_summary_kills(&self, lines: &[Value]) {
        let summary = lines
            .iter()
            .find(|l| l["type"] == "summary")
            .unwrap_or_else(|| panic!("no summary line among {} lines", lines.len()));
        assert_eq!(
            summary["summary"]["kills"],
            self.oom_kills_in_subtree(),
            "the summary's kills differ from the kernel's oom_kill in {}: {summary}",
            self.rel
        );
    }
}

impl Sandbox {
    /// Asserts that an unfiltered watch's closing reconcile line for this cgroup agrees with
    /// the kernel: `kills` kills by both counts.
    pub fn assert_reconciled(&self, lines: &[Value], kills: u64) {
        let rec = lines
            .iter()
            .find(|v| v["type"] == "reconcile" && v["memcg_path"] == self.rel)
            .unwrap_or_else(|| panic!("no reconcile line for {}", self.rel));
        assert_eq!(
            (
                &rec["kernel_oom_kills"],
                &rec["oomtrace_kills"],
                &rec["agree"]
            ),
            (&Value::from(kills), &Value::from(kills), &Value::from(true)),
            "{rec}"
        );
    }
}

fn oom_kill_counter(dir: &Path, version: CgroupVersion) -> u64 {
    let (file, key) = match version {
        CgroupVersion::V1 => ("memory.oom_control", "oom_kill"),
        CgroupVersion::V2 => ("memory.events", "oom_kill"),
    };
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            // The key exactly: v1 also has `oom_kill_disable`.
            let mut f = l.split_whitespace();
            (f.next() == Some(key))
                .then(|| f.next()?.parse().ok())
                .flatten()
        })
        .unwrap_or(0)
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Everything in our cgroup is ours.
        let gone = wait_until(Duration::from_secs(5), || {
            let procs = self.procs();
            for pid in &procs {
                // SAFETY: plain syscall on a pid in our own cgroup.
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            }
            procs.is_empty()
        });
        if !gone {
            eprintln!(
                "sandbox {}: processes left: {:?}",
                self.dir.display(),
                self.procs()
            );
        }
        let removed = wait_until(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.dir).is_ok()
        });
        if !removed {
            eprintln!(
                "sandbox {}: could not remove the cgroup",
                self.dir.display()
            );
        }
    }
}
