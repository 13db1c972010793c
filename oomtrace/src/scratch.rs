//! Test-only scratch directories (oomtrace's unit tests, and the end-to-end tests through
//! `#[path]`): one fresh directory per call, removed when dropped. Unit
//! tests run in parallel threads of one process, so a path made of the pid alone is shared by
//! every test that asks for it — one test then removes or overwrites another's file.

// `pub` for the end-to-end tests' crate, which exports it; inside oomtrace the module is private.
#![allow(unreachable_pub)]

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// A directory under the system temp dir, unique to this call, removed with its contents on
/// drop (also when the test panics).
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(label: &str) -> ScratchDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("oomtrace-{label}-{}-{n}", std::process::id()));
        // A leftover from a crashed run with the same pid is not ours to keep.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        ScratchDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path for a file inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_calls_never_share_a_directory_and_drop_removes_it() {
        let a = ScratchDir::new("t");
        let b = ScratchDir::new("t");
        assert_ne!(a.path(), b.path());
        let kept = a.path().to_path_buf();
        std::fs::write(a.join("f"), b"x").unwrap();
        drop(a);
        assert!(!kept.exists());
        assert!(b.path().is_dir());
    }
}
