//! Where the memory controller lives (cgroup v1 or v2) and memcg id → path resolution.
//!
//! The kernel side reports a memcg as the id of its cgroup (its kernfs node id), which is the
//! inode number of the cgroup's directory on either version. An id is named at once by opening
//! it as a file handle on the controller's mount (see [`MemcgPaths`]).

use std::{
    collections::{HashMap, VecDeque},
    fmt, io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::event::{Payload, cgroup_mkdir, mkdir_path};

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
pub(crate) fn find_memory_controller(mountinfo: &str) -> Option<MemoryController> {
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

/// What is known of a memcg id now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Memcg {
    /// It exists, at this path (relative to the controller's mount, "/" for the root).
    Live(String),
    /// It was removed; the last path seen, if it was ever seen.
    Removed(Option<String>),
    /// It cannot be told: no controller (a replay), or id 0 (none: a global OOM).
    Unknown,
}

impl Memcg {
    /// The path, live or last seen.
    pub(crate) fn path(&self) -> Option<&str> {
        match self {
            Memcg::Live(p) | Memcg::Removed(Some(p)) => Some(p),
            _ => None,
        }
    }

    pub(crate) fn removed(&self) -> bool {
        matches!(self, Memcg::Removed(_))
    }
}

/// memcg id → path relative to the controller's mount ("/" for the root).
///
/// The id an event carries is the cgroup's kernfs node id, which on 64-bit kernels ≥ 5.5 is
/// the inode number of its directory and, as a kernfs file handle (`FILEID_KERNFS`), opens
/// that directory directly: `open_by_handle_at` on the controller's mount then the fd's path
/// names it at once, on v1 and v2 alike, and fails with `ESTALE` once it is removed (kernfs
/// ids are not reused). Where handles cannot be opened (no `CAP_DAC_READ_SEARCH`, a kernel
/// without export support) the hierarchy is walked instead, once per id not yet known.
/// Entries are checked by [`MemcgPaths::sweep`] and moved to a bounded set of removed ones.
pub(crate) struct MemcgPaths {
    root: Option<PathBuf>,
    /// The mount, to open handles against; None when handles do not work here.
    mount_fd: Option<OwnedFd>,
    live: HashMap<u64, String>,
    removed: HashMap<u64, Option<String>>,
    /// Removed ids in the order they were found removed, with when.
    removed_order: VecDeque<(u64, Instant)>,
    /// Paths of the latest memcgs created (`cgroup_mkdir`), for those removed before they are
    /// named; oldest first in `created_order`, with when each was created. Each is checked
    /// once, [`CREATED_KEPT`] after its creation (see [`MemcgPaths::sweep`]).
    created: HashMap<u64, String>,
    created_order: VecDeque<(u64, Instant)>,
    /// The memory controller's hierarchy id (0 on v2; v1 from `/proc/cgroups`): the cgroups whose
    /// creation ([`MemcgPaths::created`]) names memcgs. None: no creation names one (live
    /// without a controller), or every one does (a replay: what was recorded was filtered).
    hierarchy: Option<u32>,
    /// Whether created cgroups are taken whatever their hierarchy (replays).
    any_hierarchy: bool,
    /// Lookups by handle and walks of the hierarchy made (for tests and the soak).
    pub(crate) lookups: u64,
    pub(crate) walks: u64,
    /// Memcgs found removed since the last sweep, however they were found (the sweep, a
    /// finding's check, a lookup of one removed before it was named), for the sweep to report.
    found_removed: Vec<(u64, Option<String>)>,
    /// The directories of the memcgs the latest findings checked, kept open (`O_PATH`, by
    /// handle): a finding's check is then a lookup of `cgroup.procs` in it, which fails once
    /// the memcg is removed (`rmdir` unlinks and deactivates its kernfs nodes before it
    /// returns), instead of opening a handle and closing it again. At most [`CHECKED_KEPT`],
    /// the least recently checked dropped first; a removed one is dropped at its check.
    checked: HashMap<u64, (OwnedFd, u64)>,
    /// Checks made, the clock of `checked`'s recency.
    checks: u64,
    /// The memcgs a finding's check found there during the live loop's current wake: the
    /// wake's other findings of the same memcg are written within microseconds of that
    /// check and take its answer (one `faccessat` per memcg per wake instead of one per
    /// finding: ~3.6 per kill in an OOM storm). Emptied at every wake
    /// ([`MemcgPaths::next_wake`]); a replay never fills it (no controller).
    live_this_wake: Vec<u64>,
    /// The kernel reports every removal of a cgroup (`cgroup:cgroup_rmdir` attached).
    rmdir_hooked: bool,
    /// Removals are reported and none can have been lost since the last sweep: a memcg not
    /// said removed is there, with no need to ask the filesystem at each finding.
    rmdirs_complete: bool,
}

/// Memcg directories kept open for the check of a finding's memcg (see `MemcgPaths::checked`).
const CHECKED_KEPT: usize = 32;

/// Removed memcgs remembered at most (the oldest are forgotten first).
const MAX_REMOVED: usize = 4096;
/// Created memcgs whose path is kept at most (the oldest are forgotten first): a creation storm
/// of more between a memcg's creation and the reading of its kill leaves it unnamed if it is
/// removed meanwhile (about 1 MB at most, with kubelet's path lengths).
pub(crate) const MAX_CREATED: usize = 4096;
/// How long a removed memcg's last path is kept. A memcg can only be removed once no task is
/// left in it (each past `cgroup_exit`), so what remains to be said of its victims (death,
/// release) comes within moments: a minute is plenty, and keeps the set flat on a node.
const REMOVED_KEPT: Duration = Duration::from_secs(60);
/// How long a creation's path is kept before the sweep checks its memcg: the events that name a
/// memcg are read within milliseconds of it, so one removed before 5 s are over is said removed
/// with this path (for [`REMOVED_KEPT`] more), and one still there joins the named ones.
const CREATED_KEPT: Duration = Duration::from_secs(5);

/// `FILEID_KERNFS` (include/linux/exportfs.h): a kernfs node id as a file handle.
const FILEID_KERNFS: i32 = 0xfe;

#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

/// Whether the cgroup directory `dir` (an `O_PATH` descriptor) is still there: its
/// `cgroup.procs` (in every cgroup, v1 and v2) is found while it is, and not once it was
/// removed. None: the lookup failed otherwise.
fn still_there(dir: &OwnedFd) -> Option<bool> {
    // SAFETY: a valid directory descriptor and a NUL-terminated name; nothing is written.
    let r = unsafe { libc::faccessat(dir.as_raw_fd(), c"cgroup.procs".as_ptr(), libc::F_OK, 0) };
    if r == 0 {
        return Some(true);
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOENT | libc::ENODEV | libc::ESTALE) => Some(false),
        _ => None,
    }
}

/// Why a lookup by handle failed.
enum ByHandle {
    Gone,
    Unsupported(io::Error),
}

impl MemcgPaths {
    pub(crate) fn new(controller: Option<&MemoryController>) -> Self {
        let mut m = MemcgPaths {
            root: controller.map(|c| c.mount.clone()),
            mount_fd: None,
            live: HashMap::new(),
            removed: HashMap::new(),
            removed_order: VecDeque::new(),
            created: HashMap::new(),
            created_order: VecDeque::new(),
            hierarchy: None,
            any_hierarchy: controller.is_none(),
            lookups: 0,
            walks: 0,
            found_removed: Vec::new(),
            checked: HashMap::new(),
            checks: 0,
            live_this_wake: Vec::new(),
            rmdir_hooked: false,
            rmdirs_complete: false,
        };
        let Some(root) = m.root.clone() else {
            return m;
        };
        // v2 has one hierarchy, the default one, whose id is 0. (Newer kernels, 7.2 among
        // them, no longer list v2's controllers in /proc/cgroups: it is only asked on v1.)
        m.hierarchy = match controller.map(|c| c.version) {
            Some(2) => Some(0),
            _ => std::fs::read_to_string("/proc/cgroups")
                .ok()
                .and_then(|t| memory_hierarchy(&t)),
        };
        // Handles work if the mount's own directory is found through its inode.
        m.mount_fd = std::fs::File::open(&root).ok().map(OwnedFd::from);
        let probe = std::fs::metadata(&root).map(|md| md.ino());
        match probe.map(|ino| (ino, m.by_handle(ino))) {
            Ok((ino, Ok(p))) if p == "/" => {
                m.live.insert(ino, p);
            }
            _ => {
                m.mount_fd = None;
                m.walk();
            }
        }
        m
    }

    /// Whether ids are resolved by file handle (else by walking the hierarchy).
    #[cfg(test)]
    pub(crate) fn by_handles(&self) -> bool {
        self.mount_fd.is_some()
    }

    /// How ids are named, for the plan line: `file_handle`, `walk` or `none`.
    pub(crate) fn method(&self) -> &'static str {
        match (&self.mount_fd, &self.root) {
            (Some(_), _) => "file_handle",
            (None, Some(_)) => "walk",
            (None, None) => "none",
        }
    }

    /// The cgroup whose kernfs id is `id`, opened as a file handle (`O_PATH`): that it opens
    /// is all a check of a known memcg needs (no path read back: a finding checks its memcg,
    /// the sweep every live one).
    fn open_handle(&mut self, id: u64) -> Result<OwnedFd, ByHandle> {
        let Some(fd) = &self.mount_fd else {
            return Err(ByHandle::Unsupported(io::ErrorKind::Unsupported.into()));
        };
        self.lookups += 1;
        let mut h = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id,
        };
        // SAFETY: a valid mount fd and a handle whose `handle_bytes` covers its payload.
        let r = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                fd.as_raw_fd(),
                &mut h as *mut KernfsHandle,
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ESTALE | libc::ENOENT) => ByHandle::Gone,
                _ => ByHandle::Unsupported(e),
            });
        }
        // SAFETY: the syscall returned a new fd, owned here.
        let dir = unsafe { OwnedFd::from_raw_fd(r as RawFd) };
        // A handle can still open a cgroup already removed: older kernels (seen on 5.10) find
        // a kernfs node by id while anything holds it, removed or not
        // (`kernfs_find_and_get_node_by_id` asks KERNFS_ACTIVATED, which removal does not
        // clear), and a memcg's node lives on while its css is dying; its path then reads
        // `PATH (deleted)`. Its entries are gone at once, so a lookup in it tells.
        if still_there(&dir) == Some(false) {
            return Err(ByHandle::Gone);
        }
        Ok(dir)
    }

    /// The path of the cgroup whose kernfs id is `id`, opened as a file handle.
    fn by_handle(&mut self, id: u64) -> Result<String, ByHandle> {
        let file = self.open_handle(id)?;
        let Some(root) = &self.root else {
            return Err(ByHandle::Unsupported(io::ErrorKind::Unsupported.into()));
        };
        let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(ByHandle::Unsupported)?;
        // Removed after it was opened: the link reads `PATH (deleted)`, no name to give.
        if still_there(&file) == Some(false) {
            return Err(ByHandle::Gone);
        }
        match link.strip_prefix(root) {
            Ok(rel) => Ok(format!("/{}", rel.display())),
            // Outside the mount's root (a bind mount of a subtree): not nameable from here.
            Err(_) => Err(ByHandle::Unsupported(io::Error::other(format!(
                "{} is outside {}",
                link.display(),
                root.display()
            )))),
        }
    }

    /// Walks the whole hierarchy, learning every memcg's path (the fallback).
    fn walk(&mut self) -> HashMap<u64, String> {
        let mut found = HashMap::new();
        let Some(root) = self.root.clone() else {
            return found;
        };
        self.walks += 1;
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir.strip_prefix(&root).unwrap_or(Path::new(""));
            found.insert(meta.ino(), format!("/{}", rel.display()));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        self.live.extend(found.iter().map(|(k, v)| (*k, v.clone())));
        found
    }

    /// Asks the kernel about `id` (not the cache).
    fn lookup(&mut self, id: u64) -> Memcg {
        if id == 0 {
            return Memcg::Unknown;
        }
        if self.root.is_none() {
            // A replay: the creations recorded name what the recording named.
            return self
                .created
                .get(&id)
                .map_or(Memcg::Unknown, |p| Memcg::Live(p.clone()));
        }
        if self.mount_fd.is_some() {
            match self.by_handle(id) {
                Ok(p) => return Memcg::Live(p),
                Err(ByHandle::Gone) => return Memcg::Removed(None),
                Err(ByHandle::Unsupported(e)) => {
                    eprintln!(
                        "oomtrace: naming memcg id {id} by file handle failed ({e}); walking the \
                         cgroup hierarchy instead from now on"
                    );
                    self.mount_fd = None;
                }
            }
        }
        // Every memcg that exists is in the walk: one not found there was removed.
        match self.walk().remove(&id) {
            Some(p) => Memcg::Live(p),
            None => Memcg::Removed(None),
        }
    }

    /// A cgroup was created (`cgroup:cgroup_mkdir`). If it is in the memory controller's
    /// hierarchy its path is kept, in a bounded set of the [`MAX_CREATED`] latest, for the
    /// one case a file handle cannot answer: a memcg removed before anything names it is then
    /// said removed *with* its path. (One still there is named by its handle, exactly, as
    /// ever.) 5 s on, the sweep checks it once and moves it to the live or the removed
    /// memcgs. False when it is another hierarchy's (v1 ids are only unique within one), has
    /// no usable path (cut, or not from the root), or id 0.
    pub(crate) fn created(
        &mut self,
        hierarchy: Option<u32>,
        id: u64,
        path: &str,
        cut: bool,
    ) -> bool {
        if !self.ours(hierarchy, id) || cut || !path.starts_with('/') {
            return false;
        }
        if self.created.insert(id, path.to_string()).is_none() {
            self.created_order.push_back((id, Instant::now()));
        }
        while self.created_order.len() > MAX_CREATED {
            if let Some((old, _)) = self.created_order.pop_front() {
                self.created.remove(&old);
            }
        }
        // Said removed already without a path (its kill was read first): now it has one.
        if let Some(last @ None) = self.removed.get_mut(&id) {
            *last = Some(path.to_string());
        }
        true
    }

    /// Whether cgroup `id` of `hierarchy` (None: unknown) is a memcg this names: of the memory
    /// controller's hierarchy (any in a replay, whose records were chosen so), id not 0.
    fn ours(&self, hierarchy: Option<u32>, id: u64) -> bool {
        id != 0 && (self.any_hierarchy || (hierarchy.is_some() && hierarchy == self.hierarchy))
    }

    /// A cgroup's creation or removal record (`cgroup_mkdir`, `cgroup_rmdir`) taken as
    /// [`MemcgPaths::created`] or [`MemcgPaths::removed`] take it: None for another event,
    /// else whether it was of a memcg (other hierarchies' are neither recorded nor tracked).
    pub(crate) fn cgroup_record(&mut self, payload: &Payload) -> Option<bool> {
        let (made, p) = match payload {
            Payload::CgroupMkdir(p) => (true, p),
            Payload::CgroupRmdir(p) => (false, p),
            _ => return None,
        };
        let hierarchy = (p.flags & cgroup_mkdir::HIERARCHY_KNOWN != 0).then_some(p.hierarchy);
        let (path, cut) = (mkdir_path(p), p.flags & cgroup_mkdir::TRUNCATED != 0);
        Some(if made {
            self.created(hierarchy, p.id, &path, cut)
        } else {
            self.removed(hierarchy, p.id, &path, cut)
        })
    }

    /// A cgroup was removed (`cgroup:cgroup_rmdir`, its record read in order with the events
    /// before it): a memcg of the memory controller's hierarchy is removed from now on, with
    /// the last path known of it (else the removal's own). False when it is another
    /// hierarchy's or id 0.
    pub(crate) fn removed(
        &mut self,
        hierarchy: Option<u32>,
        id: u64,
        path: &str,
        cut: bool,
    ) -> bool {
        if !self.ours(hierarchy, id) {
            return false;
        }
        let own = (!cut && path.starts_with('/')).then(|| path.to_string());
        let created = self.created.remove(&id);
        match self.removed.get_mut(&id) {
            // Said removed already (a check was first): it keeps what it knew, else this path.
            Some(last @ None) => *last = own.or(created),
            Some(Some(_)) => {}
            None => {
                let last = self.live.get(&id).cloned().or(created).or(own);
                self.forget(id, last);
            }
        }
        true
    }

    /// Every cgroup removal is reported to [`MemcgPaths::removed`] (the removal hook is
    /// attached): a finding's memcg is then not checked with the filesystem
    /// ([`MemcgPaths::current`]), except from when events were lost
    /// ([`MemcgPaths::events_lost`]) until the next sweep has checked every memcg again.
    pub(crate) fn rmdir_hooked(&mut self, hooked: bool) {
        self.rmdir_hooked = hooked;
        self.rmdirs_complete = hooked;
    }

    /// The kernel lost events: a removal may be among them (see [`MemcgPaths::rmdir_hooked`]).
    pub(crate) fn events_lost(&mut self) {
        self.rmdirs_complete = false;
    }

    /// The memory controller's hierarchy id, which [`MemcgPaths::created`] keeps.
    #[cfg(test)]
    pub(crate) fn hierarchy(&self) -> Option<u32> {
        self.hierarchy
    }

    /// Records `id` as removed, with the last path seen (tests, and the checks here).
    pub(crate) fn forget(&mut self, id: u64, last: Option<String>) {
        self.live.remove(&id);
        self.checked.remove(&id);
        self.live_this_wake.retain(|&l| l != id);
        if self.removed.insert(id, last.clone()).is_none() {
            self.removed_order.push_back((id, Instant::now()));
            // Reported by the next sweep (a replay sweeps nothing and finds nothing removed).
            if self.root.is_some() && self.found_removed.len() < MAX_REMOVED {
                self.found_removed.push((id, last));
            }
        }
        while self.removed_order.len() > MAX_REMOVED {
            if let Some((old, _)) = self.removed_order.pop_front() {
                self.removed.remove(&old);
            }
        }
    }

    /// What is known of `id`: from the cache, else from the kernel at once.
    pub(crate) fn memcg(&mut self, id: u64) -> Memcg {
        if id == 0 {
            return Memcg::Unknown;
        }
        if let Some(p) = self.live.get(&id) {
            return Memcg::Live(p.clone());
        }
        if let Some(last) = self.removed.get(&id) {
            return Memcg::Removed(last.clone());
        }
        let mut m = self.lookup(id);
        match &m {
            Memcg::Live(p) => {
                self.live.insert(id, p.clone());
            }
            Memcg::Removed(_) => {
                // Removed before it was ever named: its path from its creation, if seen.
                let last = self.created.remove(&id);
                m = Memcg::Removed(last.clone());
                self.forget(id, last);
            }
            Memcg::Unknown => {}
        }
        m
    }

    /// What is known of `id`, checked with the kernel now if it was live: a finding says
    /// whether its memcg still exists when it is written.
    pub(crate) fn current(&mut self, id: u64) -> Memcg {
        let m = self.memcg(id);
        let Memcg::Live(p) = m else {
            return m;
        };
        if self.root.is_none() || self.rmdirs_complete {
            return Memcg::Live(p);
        }
        if let Memcg::Removed(_) = self.check(id, &p, true) {
            self.forget(id, Some(p.clone()));
            return Memcg::Removed(Some(p));
        }
        Memcg::Live(p)
    }

    /// The live loop woke again: a finding's memcg is checked anew (see `live_this_wake`).
    pub(crate) fn next_wake(&mut self) {
        self.live_this_wake.clear();
    }

    /// Whether the memcg `id` known at `path` still exists; `keep`: its directory is kept
    /// open for the next check (a finding's memcg; the sweep's checks of every memcg do not
    /// displace them), and a memcg found there is taken as there for the rest of the wake.
    fn check(&mut self, id: u64, path: &str, keep: bool) -> Memcg {
        if keep && self.live_this_wake.contains(&id) {
            return Memcg::Live(path.to_string());
        }
        let m = self.check_now(id, path, keep);
        if keep && matches!(m, Memcg::Live(_)) && self.live_this_wake.len() < CHECKED_KEPT {
            self.live_this_wake.push(id);
        }
        m
    }

    /// [`MemcgPaths::check`], asking the kernel.
    fn check_now(&mut self, id: u64, path: &str, keep: bool) -> Memcg {
        if self.mount_fd.is_some() {
            self.checks += 1;
            if let Some((dir, at)) = self.checked.get_mut(&id) {
                *at = self.checks;
                match still_there(dir) {
                    Some(true) => return Memcg::Live(path.to_string()),
                    Some(false) => {
                        self.checked.remove(&id);
                        return Memcg::Removed(Some(path.to_string()));
                    }
                    // Not answered (e.g. EACCES): asked by handle as before.
                    None => {
                        self.checked.remove(&id);
                    }
                }
            }
            return match self.open_handle(id) {
                Err(ByHandle::Gone) => Memcg::Removed(Some(path.to_string())),
                Err(ByHandle::Unsupported(_)) => Memcg::Live(path.to_string()),
                Ok(_) if !keep => Memcg::Live(path.to_string()),
                Ok(dir) => {
                    if self.checked.len() >= CHECKED_KEPT
                        && let Some(oldest) = self
                            .checked
                            .iter()
                            .min_by_key(|(_, (_, at))| *at)
                            .map(|(k, _)| *k)
                    {
                        self.checked.remove(&oldest);
                    }
                    self.checked.insert(id, (dir, self.checks));
                    Memcg::Live(path.to_string())
                }
            };
        }
        let Some(root) = &self.root else {
            return Memcg::Unknown;
        };
        match std::fs::metadata(root.join(path.trim_start_matches('/'))) {
            Ok(md) if md.ino() == id => Memcg::Live(path.to_string()),
            _ => Memcg::Removed(Some(path.to_string())),
        }
    }

    /// The path of a memcg id, live or last seen (None: never seen, or no controller).
    pub(crate) fn path(&mut self, id: u64) -> Option<String> {
        self.memcg(id).path().map(str::to_string)
    }

    /// Checks every live entry with the kernel and moves the removed ones aside, forgetting
    /// those removed more than [`REMOVED_KEPT`] ago; returns the memcgs found removed since the
    /// last sweep (named ones, those created [`CREATED_KEPT`] ago and gone since, and those a
    /// finding or a lookup found removed meanwhile), with their last path where known.
    pub(crate) fn sweep(&mut self) -> Vec<(u64, Option<String>)> {
        if self.root.is_none() {
            return Vec::new();
        }
        while let Some(&(old, at)) = self.removed_order.front()
            && at.elapsed() > REMOVED_KEPT
        {
            self.removed_order.pop_front();
            self.removed.remove(&old);
        }
        // Creations 5 s old: a memcg still there is named now, like one an event named (then
        // checked with those); one gone is said removed with its path for a minute more.
        // Either way the creation is no longer kept: on a node the set stays a few seconds'.
        while let Some(&(id, at)) = self.created_order.front()
            && at.elapsed() > CREATED_KEPT
        {
            self.created_order.pop_front();
            let Some(p) = self.created.remove(&id) else {
                continue;
            };
            if self.live.contains_key(&id) || self.removed.contains_key(&id) {
                continue;
            }
            if self.check(id, &p, false).removed() {
                self.forget(id, Some(p));
            } else {
                self.live.insert(id, p);
            }
        }
        let entries: Vec<(u64, String)> = self.live.iter().map(|(k, v)| (*k, v.clone())).collect();
        for (id, p) in entries {
            if self.check(id, &p, false).removed() {
                self.forget(id, Some(p));
            }
        }
        // Every memcg named so far was checked: those said live are.
        self.rmdirs_complete = self.rmdir_hooked;
        std::mem::take(&mut self.found_removed)
    }

    /// Entries held (live, removed), to show they stay bounded.
    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize) {
        (self.live.len(), self.removed.len())
    }

    /// Every entry held: live, removed and the paths of creations.
    pub(crate) fn entries(&self) -> usize {
        self.live.len() + self.removed.len() + self.created.len()
    }

    /// Remembers a path for an id (tests, replays).
    pub(crate) fn insert(&mut self, id: u64, path: String) {
        self.live.insert(id, path);
    }

    /// The mount point of the controller, if any.
    pub(crate) fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }
}

/// The memory controller's hierarchy id from `/proc/cgroups` (`subsys hierarchy cgroups
/// enabled`): a v1 mount's id (0 when bound to cgroup v2, on kernels that still list it).
pub(crate) fn memory_hierarchy(proc_cgroups: &str) -> Option<u32> {
    proc_cgroups.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next() == Some("memory")).then(|| f.next()?.parse().ok())?
    })
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

    /// A directory kept open tells its removal (the check of a finding's memcg; the same
    /// VFS rule on cgroupfs, where the e2e tests check it: a lookup in a removed directory
    /// finds nothing).
    #[test]
    fn a_kept_directory_tells_its_removal() {
        let dir = std::env::temp_dir().join(format!("oomtrace-still-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; the descriptor is owned at once.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        // SAFETY: just opened, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        assert_eq!(still_there(&fd), Some(true));
        std::fs::remove_file(dir.join("cgroup.procs")).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(still_there(&fd), Some(false));
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
    fn without_handles_each_unknown_id_is_found_by_a_walk_at_once_and_removal_is_said() {
        let scratch = ScratchDir::new("memcg");
        let dir = scratch.path().to_path_buf();
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        let c = MemoryController {
            version: 2,
            mount: dir.clone(),
        };
        // A plain directory is no kernfs: its inodes are no file handles, so this walks.
        let mut m = MemcgPaths::new(Some(&c));
        assert!(!m.by_handles());
        // v2: the one hierarchy, 0, whatever /proc/cgroups lists (7.2 lists no v2 controller).
        assert_eq!(m.hierarchy(), Some(0));
        let ino = std::fs::metadata(dir.join("a/b")).unwrap().ino();
        assert_eq!(m.path(ino).as_deref(), Some("/a/b"));
        // Created just now and named at once: no rate limit between walks.
        std::fs::create_dir_all(dir.join("c")).unwrap();
        let ino_c = std::fs::metadata(dir.join("c")).unwrap().ino();
        assert_eq!(m.memcg(ino_c), Memcg::Live("/c".into()));
        // (d is made while c exists: a plain file system, unlike kernfs, reuses inodes.)
        std::fs::create_dir_all(dir.join("d")).unwrap();
        let ino_d = std::fs::metadata(dir.join("d")).unwrap().ino();
        // Removed after it was seen: said so, with the last path.
        std::fs::remove_dir(dir.join("c")).unwrap();
        assert_eq!(m.current(ino_c), Memcg::Removed(Some("/c".into())));
        assert_eq!(m.path(ino_c).as_deref(), Some("/c"));
        // Removed before it was ever seen: removed, path unknown; asked once, not again.
        std::fs::remove_dir(dir.join("d")).unwrap();
        let walks = m.walks;
        assert_eq!(m.memcg(ino_d), Memcg::Removed(None));
        assert_eq!(m.memcg(ino_d), Memcg::Removed(None));
        assert_eq!(m.walks, walks + 1);
        // The sweep evicts the live entries of removed memcgs.
        std::fs::remove_dir(dir.join("a/b")).unwrap();
        // (c and d were found removed by a finding's check and a lookup: reported too.)
        assert_eq!(
            m.sweep(),
            vec![
                (ino_c, Some("/c".to_string())),
                (ino_d, None),
                (ino, Some("/a/b".to_string()))
            ]
        );
        assert_eq!(m.memcg(ino), Memcg::Removed(Some("/a/b".into())));
        assert!(m.sweep().is_empty());
    }

    /// A finding's check is made once per memcg per wake of the live loop: the wake's later
    /// findings take its answer; the next wake asks the kernel again and sees the removal.
    #[test]
    fn a_memcg_is_checked_once_per_wake() {
        let scratch = ScratchDir::new("memcg-wake");
        let dir = scratch.path().to_path_buf();
        std::fs::create_dir_all(dir.join("pod")).unwrap();
        let c = MemoryController {
            version: 2,
            mount: dir.clone(),
        };
        let mut m = MemcgPaths::new(Some(&c));
        let id = std::fs::metadata(dir.join("pod")).unwrap().ino();
        assert_eq!(m.current(id), Memcg::Live("/pod".into()));
        std::fs::remove_dir(dir.join("pod")).unwrap();
        // Microseconds later in the same wake: the answer of that wake's check.
        assert_eq!(m.current(id), Memcg::Live("/pod".into()));
        m.next_wake();
        assert_eq!(m.current(id), Memcg::Removed(Some("/pod".into())));
        assert_eq!(m.current(id), Memcg::Removed(Some("/pod".into())));
        m.next_wake();
        assert_eq!(m.current(id), Memcg::Removed(Some("/pod".into())));
    }

    /// With the removal hook attached, a finding's memcg is not checked with the filesystem:
    /// it is live until the kernel's removal is read, then removed with its last path; another
    /// hierarchy's removal (v1 ids are per hierarchy) changes nothing. From lost events until
    /// the next sweep it is checked again, as without the hook.
    #[test]
    fn a_removal_the_kernel_reports_is_taken_without_asking_the_filesystem() {
        let scratch = ScratchDir::new("memcg-rmdir");
        let dir = scratch.path().to_path_buf();
        // (All made first: a plain file system, unlike kernfs, reuses inodes.)
        for d in ["pod/ctr", "pod/other", "pod/third"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let c = MemoryController {
            version: 1,
            mount: dir.clone(),
        };
        let mut m = MemcgPaths::new(Some(&c));
        m.hierarchy = Some(4);
        m.rmdir_hooked(true);
        let id = std::fs::metadata(dir.join("pod/ctr")).unwrap().ino();
        let other = std::fs::metadata(dir.join("pod/other")).unwrap().ino();
        assert_eq!(m.current(id), Memcg::Live("/pod/ctr".into()));
        assert_eq!(m.current(other), Memcg::Live("/pod/other".into()));
        // Gone from the filesystem, its removal not read yet: nothing asked, still live.
        std::fs::remove_dir(dir.join("pod/ctr")).unwrap();
        m.next_wake();
        assert_eq!(m.current(id), Memcg::Live("/pod/ctr".into()));
        assert!(
            !m.removed(Some(3), id, "/cpu/ctr", false),
            "another hierarchy"
        );
        assert_eq!(m.current(id), Memcg::Live("/pod/ctr".into()));
        assert!(m.removed(Some(4), id, "/pod/ctr", false));
        assert_eq!(m.current(id), Memcg::Removed(Some("/pod/ctr".into())));
        // Reported by the next sweep like any removal found, once.
        assert_eq!(m.sweep(), vec![(id, Some("/pod/ctr".to_string()))]);
        // Events lost: a removal may be among them, so the filesystem is asked again...
        std::fs::remove_dir(dir.join("pod/other")).unwrap();
        m.events_lost();
        m.next_wake();
        assert_eq!(m.current(other), Memcg::Removed(Some("/pod/other".into())));
        // ...until a sweep has checked every memcg; then the hook's word is taken again.
        let third = std::fs::metadata(dir.join("pod/third")).unwrap().ino();
        assert_eq!(m.current(third), Memcg::Live("/pod/third".into()));
        m.sweep();
        std::fs::remove_dir(dir.join("pod/third")).unwrap();
        m.next_wake();
        assert_eq!(m.current(third), Memcg::Live("/pod/third".into()));
        // A removal read before anything named the memcg keeps its path for a later kill.
        assert!(m.removed(Some(4), 77, "/pod/brief", false));
        assert_eq!(m.memcg(77), Memcg::Removed(Some("/pod/brief".into())));
    }

    #[test]
    fn the_memory_hierarchy_is_read_from_proc_cgroups() {
        let v1 = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t3\t40\t1\nmemory\t4\t36\t1\n";
        assert_eq!(memory_hierarchy(v1), Some(4));
        assert_eq!(memory_hierarchy("memory\t0\t90\t1\n"), Some(0));
        assert_eq!(memory_hierarchy("cpu\t3\t40\t1\n"), None);
    }

    /// A memcg created and removed before anything named it: said removed *with* the path its
    /// creation carried; another hierarchy's creation with the same id (v1) is not taken, nor
    /// a cut path.
    #[test]
    fn a_memcg_removed_before_it_is_named_keeps_the_path_of_its_creation() {
        let scratch = ScratchDir::new("memcg-mkdir");
        let dir = scratch.path().to_path_buf();
        let c = MemoryController {
            version: 1,
            mount: dir.clone(),
        };
        let mut m = MemcgPaths::new(Some(&c));
        m.hierarchy = Some(4);
        std::fs::create_dir_all(dir.join("pod/ctr")).unwrap();
        let id = std::fs::metadata(dir.join("pod/ctr")).unwrap().ino();
        assert!(
            !m.created(Some(3), id, "/cpu-only", false),
            "another hierarchy"
        );
        assert!(!m.created(None, id, "/unknown-hierarchy", false));
        assert!(!m.created(Some(4), id, "/pod/ct", true), "a cut path");
        assert!(m.created(Some(4), id, "/pod/ctr", false));
        // Still there: named by the kernel (here the walk), as ever.
        assert_eq!(m.memcg(id), Memcg::Live("/pod/ctr".into()));
        // Another one, created and removed before anything named it.
        std::fs::create_dir_all(dir.join("pod/gone")).unwrap();
        let gone = std::fs::metadata(dir.join("pod/gone")).unwrap().ino();
        assert!(m.created(Some(4), gone, "/pod/gone", false));
        std::fs::remove_dir(dir.join("pod/gone")).unwrap();
        assert_eq!(m.memcg(gone), Memcg::Removed(Some("/pod/gone".into())));
        assert_eq!(m.current(gone), Memcg::Removed(Some("/pod/gone".into())));
        // Its kill read first, its creation after (reordering): the path is filled in.
        m.forget(999_999_999, None);
        assert!(m.created(Some(4), 999_999_999, "/late", false));
        assert_eq!(m.memcg(999_999_999), Memcg::Removed(Some("/late".into())));
    }

    /// A creation storm keeps at most MAX_CREATED paths (the oldest go first).
    #[test]
    fn a_creation_storm_keeps_a_bounded_number_of_paths() {
        let mut m = MemcgPaths::new(None);
        for id in 1..=(MAX_CREATED as u64 * 3) {
            assert!(m.created(Some(0), id, &format!("/kubepods/pod{id}"), false));
        }
        assert_eq!(m.created.len(), MAX_CREATED);
        assert_eq!(m.created_order.len(), MAX_CREATED);
        assert_eq!(m.held(), (0, 0));
        // A replay names from the recorded creations (the latest ones).
        assert_eq!(m.memcg(1), Memcg::Unknown);
        let last = MAX_CREATED as u64 * 3;
        assert_eq!(
            m.memcg(last).path(),
            Some(format!("/kubepods/pod{last}").as_str())
        );
    }

    /// Creations are kept 5 s: then the sweep checks each once, naming one still there like
    /// one an event named and saying one gone removed, with its path, for a minute more.
    #[test]
    fn creations_are_checked_once_a_minute_on_and_kept_no_longer() {
        let scratch = ScratchDir::new("memcg-created");
        let dir = scratch.path().to_path_buf();
        let c = MemoryController {
            version: 2,
            mount: dir.clone(),
        };
        let mut m = MemcgPaths::new(Some(&c));
        std::fs::create_dir_all(dir.join("pod/stays")).unwrap();
        std::fs::create_dir_all(dir.join("pod/goes")).unwrap();
        let ino = |p: &str| std::fs::metadata(dir.join(p)).unwrap().ino();
        let (stays, goes) = (ino("pod/stays"), ino("pod/goes"));
        assert!(m.created(Some(0), stays, "/pod/stays", false));
        assert!(m.created(Some(0), goes, "/pod/goes", false));
        std::fs::remove_dir(dir.join("pod/goes")).unwrap();
        // Younger than 5 s: kept as they are.
        let before = m.entries();
        assert!(m.sweep().is_empty());
        assert_eq!(m.created.len(), 2);
        let old = Instant::now() - CREATED_KEPT - Duration::from_secs(1);
        for e in m.created_order.iter_mut() {
            e.1 = old;
        }
        assert_eq!(m.sweep(), vec![(goes, Some("/pod/goes".to_string()))]);
        assert!(m.created.is_empty() && m.created_order.is_empty());
        assert_eq!(m.entries(), before);
        assert_eq!(m.memcg(stays), Memcg::Live("/pod/stays".into()));
        assert_eq!(m.memcg(goes), Memcg::Removed(Some("/pod/goes".into())));
    }

    #[test]
    fn removed_memcgs_are_remembered_up_to_a_bound() {
        let mut m = MemcgPaths::new(None);
        for id in 1..=(MAX_REMOVED as u64 + 10) {
            m.forget(id, Some(format!("/x{id}")));
        }
        assert_eq!(m.held(), (0, MAX_REMOVED));
        assert_eq!(m.memcg(1), Memcg::Unknown);
        assert_eq!(m.memcg(11), Memcg::Removed(Some("/x11".into())));
        // Those removed more than a minute ago go at the next sweep.
        m.root = Some(PathBuf::from("/nonexistent"));
        let old = Instant::now() - REMOVED_KEPT - Duration::from_secs(1);
        for e in m.removed_order.iter_mut().take(100) {
            e.1 = old;
        }
        m.sweep();
        m.root = None;
        assert_eq!(m.held(), (0, MAX_REMOVED - 100));
        assert_eq!(m.memcg(11), Memcg::Unknown);
        assert_eq!(m.memcg(111), Memcg::Removed(Some("/x111".into())));
    }
}
