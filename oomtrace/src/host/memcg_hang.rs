//! The way out of a cgroup v1 memcg hung with the OOM killer disabled (`oom_kill_disable 1`
//! at its limit, the kernel saying `under_oom 1`): its tasks sleep in
//! `mem_cgroup_oom_synchronize` until memory is freed. `oomtrace unstick PID` of a sleeper
//! re-enables the killer of the hang's domain (the shallowest memcg of the hang: the one whose
//! limit was hit; those below inherit the setting and are marked under OOM with it), waits for
//! the kernel to end the hang, and puts `oom_kill_disable 1` back.
//! Kept apart from [`crate::host::unstick`], which frees victims the OOM killer did kill.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Serialize;

use crate::host::forensics::keyed;

/// A hang found for a process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hang {
    /// The hang's domain, relative to the controller's mount.
    pub domain: String,
    /// Its `memory.oom_control`.
    pub(crate) control: PathBuf,
    /// The uid owning the domain's directory.
    pub owner: Option<u32>,
}

fn state(dir: &Path) -> Option<(bool, bool)> {
    let t = std::fs::read_to_string(dir.join("memory.oom_control")).ok()?;
    Some((
        keyed(&t, "under_oom")? != 0,
        keyed(&t, "oom_kill_disable")? != 0,
    ))
}

/// The hang `memcg_path` (a process's memcg) is in: the shallowest of its memcg and the
/// ancestors above it that are all under OOM with the killer disabled.
pub fn hang_of(memcg_root: &Path, memcg_path: &str) -> Option<Hang> {
    let mut domain = None;
    let mut path = memcg_path.trim_end_matches('/').to_string();
    loop {
        if path.is_empty() {
            break;
        }
        let dir = memcg_root.join(path.trim_start_matches('/'));
        match state(&dir) {
            Some((true, true)) => domain = Some((path.clone(), dir)),
            _ => break,
        }
        match path.rsplit_once('/') {
            Some((parent, _)) => path = parent.to_string(),
            None => break,
        }
    }
    let (domain, dir) = domain?;
    Some(Hang {
        owner: std::fs::metadata(&dir).ok().map(|m| m.uid()),
        control: dir.join("memory.oom_control"),
        domain,
    })
}

/// Whether the memcg's usage is below its limit (v1 files; true where unreadable).
fn has_room(dir: &Path) -> bool {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    match (read("memory.usage_in_bytes"), read("memory.limit_in_bytes")) {
        (Some(usage), Some(limit)) => usage < limit,
        _ => true,
    }
}

/// Whether the domain is still under OOM (None: gone).
pub(crate) fn still_hung(h: &Hang) -> Option<bool> {
    state(h.control.parent()?).map(|(under, _)| under)
}

/// Writes `oom_kill_disable` of the hang's domain.
pub(crate) fn set_kill_disable(h: &Hang, disable: bool) -> std::io::Result<()> {
    std::fs::write(&h.control, if disable { "1" } else { "0" })
}

/// Re-enables the OOM killer, waits up to `wait` for the hang to end, puts the setting back.
/// Returns what was done, line by line, and whether the hang ended.
pub fn apply(h: &Hang, wait: Duration) -> (Vec<String>, bool) {
    let mut did = Vec::new();
    if let Err(e) = set_kill_disable(h, false) {
        did.push(format!("writing 0 to {} failed: {e}", h.control.display()));
        return (did, false);
    }
    did.push(format!(
        "re-enabled the OOM killer of memcg {} (0 written to {})",
        h.domain,
        h.control.display()
    ));
    let deadline = std::time::Instant::now() + wait;
    let mut ended = false;
    while std::time::Instant::now() < deadline {
        let Some(dir) = h.control.parent().filter(|d| d.exists()) else {
            ended = true;
            break;
        };
        // Over only once there is room again: under_oom drops as soon as the sleepers are
        // woken, before the kill their retried fault leads to; re-disabling then would put
        // them back to sleep.
        if still_hung(h) == Some(false) && has_room(dir) {
            ended = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    did.push(if ended {
        "the kernel ended the hang (under_oom 0, usage below the limit)".to_string()
    } else {
        format!(
            "still under OOM after {:.1} s: the OOM killer found nothing it may kill",
            wait.as_secs_f64()
        )
    });
    // Put back what the owner chose, once it no longer traps anyone (or left off while the
    // memcg still is at its limit: re-disabling then would hang it again).
    if ended {
        match set_kill_disable(h, true) {
            Ok(()) => did.push(format!(
                "put back: oom_kill_disable 1 in {}",
                h.control.display()
            )),
            Err(e) if still_hung(h).is_none() => {
                did.push(format!("not put back: the memcg is gone ({e})"));
            }
            Err(e) => did.push(format!(
                "putting back oom_kill_disable 1 failed ({e}): write 1 to {} yourself",
                h.control.display()
            )),
        }
    } else {
        did.push(format!(
            "left at oom_kill_disable 0 (putting 1 back now would hang it again): write 1 to {} \
             once it is below its limit",
            h.control.display()
        ));
    }
    (did, ended)
}

/// What `unstick` says of the remedy: the command and its risk.
pub fn remedy_text(h: &Hang) -> (String, String) {
    (
        format!(
            "re-enable the OOM killer of memcg {}: echo 0 > {} (oomtrace puts 1 back once the \
             hang ended); or raise its limit (memory.limit_in_bytes, and memory.memsw.\
             limit_in_bytes where set)",
            h.domain,
            h.control.display()
        ),
        "the kernel then kills a task of that memcg at once (the one it scores largest, not \
         necessarily this one): whoever disabled the killer wanted no task there killed"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDir;

    #[test]
    fn the_domain_is_the_shallowest_hung_ancestor_and_is_put_back() {
        let root = ScratchDir::new("memcg-hang");
        for (d, text) in [
            ("pod", "oom_kill_disable 1\nunder_oom 1\noom_kill 0\n"),
            ("pod/ctr", "oom_kill_disable 1\nunder_oom 1\noom_kill 0\n"),
            ("other", "oom_kill_disable 1\nunder_oom 0\noom_kill 0\n"),
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::write(root.join(d).join("memory.oom_control"), text).unwrap();
        }
        let h = hang_of(root.path(), "/pod/ctr").unwrap();
        assert_eq!(h.domain, "/pod");
        assert!(hang_of(root.path(), "/other").is_none());
        assert!(hang_of(root.path(), "/nope").is_none());
        // A fixture file is not the kernel's: writing 0 does not end the hang.
        let (did, ended) = apply(&h, Duration::from_millis(100));
        assert!(!ended, "{did:?}");
        assert!(
            did.last().unwrap().contains("left at oom_kill_disable 0"),
            "{did:?}"
        );
        assert_eq!(std::fs::read_to_string(&h.control).unwrap(), "0");
    }
}
