//! The kernel's own memcg OOM notifications, for every memcg, without a kernel hook.
//!
//! The kernel publishes each memcg OOM to userspace:
//! - **cgroup v2**: `memory.events.local` (`oom`, `oom_kill`) counts per memcg the OOMs it
//!   was the *domain* of (the memcg whose limit was hit; `memory.events` also counts those of
//!   its descendants). On every change the kernel calls `cgroup_file_notify` → `kernfs_notify`,
//!   which both wakes pollers (`POLLPRI`) and queues an fsnotify `IN_MODIFY`. We take the
//!   inotify side: one descriptor holds a watch per file and per directory (so memcgs created
//!   later are seen through the same descriptor), where `POLLPRI` needs an open file per memcg
//!   (10 000 memcgs: 10 000 descriptors) and something else to learn of new directories. A
//!   watch costs ~1 KiB of kernel memory and counts against `fs.inotify.max_user_watches`
//!   (two per memcg; the failure is said, naming the sysctl). The kernel rate-limits these
//!   notifications to one per 20 ms per file; the counters are read on each, so counts stay
//!   exact.
//! - **cgroup v1**: no counter of invocations; an eventfd registered per memcg through
//!   `cgroup.event_control` with `memory.oom_control` is signalled on each OOM of the memcg
//!   *or an ancestor* (`mem_cgroup_oom_notify` walks the subtree). The domain's count is its
//!   signals net of its parent's. `memory.oom_control` says `under_oom` and `oom_kill_disable`:
//!   with the killer disabled the task that faults at the limit sleeps in
//!   `mem_cgroup_oom_synchronize` and signals once (the first sleeper), so `under_oom` is
//!   re-read on ticks while set (the kernel sends nothing when it ends).
//!
//! New memcgs are learnt from `IN_CREATE` on every memcg directory (a `mkdir` through the VFS
//! notifies its parent; a directory created before its watch was added is found by listing it
//! once the watch is in place); removed ones from `IN_DELETE` / `IN_IGNORED`. Everything is
//! one epoll descriptor for the live loop (inotify plus the v1 eventfds): no thread, no file
//! polled in a loop.

use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
};

use oomtrace_common::{MemcgOom, memcg_oom};

use crate::host::forensics::keyed;

/// Which cgroup version's interface is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Version {
    V1,
    V2,
}

/// The counters and state last read of one memcg.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) oom: u64,
    pub(crate) oom_kill: u64,
    pub(crate) under_oom: bool,
    pub(crate) kill_disable: bool,
}

impl Counters {
    /// From a v2 `memory.events.local` or a v1 `memory.oom_control`.
    pub(crate) fn parse(text: &str) -> Counters {
        Counters {
            oom: keyed(text, "oom").unwrap_or(0),
            oom_kill: keyed(text, "oom_kill").unwrap_or(0),
            under_oom: keyed(text, "under_oom").is_some_and(|v| v != 0),
            kill_disable: keyed(text, "oom_kill_disable").is_some_and(|v| v != 0),
        }
    }
}

struct Memcg {
    path: String,
    dir: PathBuf,
    dir_wd: Option<i32>,
    file_wd: Option<i32>,
    eventfd: Option<OwnedFd>,
    /// v1 `memory.oom_control`, kept open once its eventfd has fired (re-read with a pread
    /// at each later notification: no path walk, open and close each time), for at most
    /// [`CONTROLS_KEPT`] memcgs; closed with the memcg.
    control: Option<std::fs::File>,
    last: Counters,
}

/// What one watched memcg's notification said (the payload of a `memcg_oom` event) with its
/// path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Notice {
    pub(crate) path: String,
    pub(crate) payload: MemcgOom,
}

/// The epoll descriptor of every memcg's OOM notifications; see the module docs.
pub(crate) struct MemcgWatch {
    epoll: OwnedFd,
    inotify: OwnedFd,
    root: PathBuf,
    version: Version,
    /// inotify watch → (memcg id, whether it watches the directory rather than the file).
    wds: HashMap<i32, (u64, bool)>,
    memcgs: HashMap<u64, Memcg>,
    by_path: HashMap<String, u64>,
    /// v1 memcgs read `under_oom 1`: re-read on ticks until it ends.
    under_oom: HashSet<u64>,
    /// Memcgs whose `memory.oom_control` is kept open.
    controls_kept: usize,
    /// What could not be watched, said once each (limits, permissions).
    pub(crate) problems: Vec<String>,
    problem_kinds: HashSet<&'static str>,
}

impl AsRawFd for MemcgWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

/// The epoll token of the inotify descriptor (memcg ids, inode numbers, are never 0).
const INOTIFY_TOKEN: u64 = 0;
/// v1 memcgs whose `memory.oom_control` is kept open after a notification (one descriptor
/// each, beside its eventfd); past this many, the others are read through their path.
const CONTROLS_KEPT: usize = 64;
const DIR_MASK: u32 = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_DELETE | libc::IN_ONLYDIR;

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

impl MemcgWatch {
    /// Watches every memcg under `root` (the memory controller's mount) now and as they come.
    /// Returns the watch and what the first reading says (v1 memcgs already hung with the OOM
    /// killer disabled).
    pub(crate) fn new(root: &Path) -> std::io::Result<(MemcgWatch, Vec<Notice>)> {
        let version = if root.join("cgroup.controllers").exists() {
            Version::V2
        } else {
            Version::V1
        };
        Self::with_version(root, version)
    }

    /// As [`MemcgWatch::new`], the version given (fixture trees).
    pub(crate) fn with_version(
        root: &Path,
        version: Version,
    ) -> std::io::Result<(MemcgWatch, Vec<Notice>)> {
        // SAFETY: plain syscalls; each returned descriptor is owned at once.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(errno());
        }
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        let inotify = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if inotify < 0 {
            return Err(errno());
        }
        let inotify = unsafe { OwnedFd::from_raw_fd(inotify) };
        let mut w = MemcgWatch {
            epoll,
            inotify,
            root: root.to_path_buf(),
            version,
            wds: HashMap::new(),
            memcgs: HashMap::new(),
            by_path: HashMap::new(),
            under_oom: HashSet::new(),
            controls_kept: 0,
            problems: Vec::new(),
            problem_kinds: HashSet::new(),
        };
        w.epoll_add(w.inotify.as_raw_fd(), INOTIFY_TOKEN)?;
        let mut out = Vec::new();
        w.add_tree(root, &mut out);
        sort_by_depth(&mut out);
        Ok((w, out))
    }

    pub(crate) fn version(&self) -> Version {
        self.version
    }

    /// Memcgs watched now.
    pub(crate) fn len(&self) -> usize {
        self.memcgs.len()
    }

    /// The path (relative to the mount, `/` the root) of a watched memcg.
    #[cfg(test)]
    pub(crate) fn path_of(&self, id: u64) -> Option<&str> {
        self.memcgs.get(&id).map(|m| m.path.as_str())
    }

    /// Whether a v1 memcg is under OOM: `under_oom` must be re-read on ticks.
    pub(crate) fn needs_poll(&self) -> bool {
        !self.under_oom.is_empty()
    }

    fn epoll_add(&self, fd: RawFd, token: u64) -> std::io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid descriptors and event.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &raw mut ev) }
            < 0
        {
            return Err(errno());
        }
        Ok(())
    }

    fn problem(&mut self, kind: &'static str, text: String) {
        if self.problem_kinds.insert(kind) {
            self.problems.push(text);
        }
    }

    fn add_watch(&mut self, path: &Path, mask: u32) -> Option<i32> {
        let c = cpath(path).ok()?;
        // SAFETY: valid descriptor and C string.
        let wd = unsafe { libc::inotify_add_watch(self.inotify.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            let e = errno();
            match e.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => {}
                Some(libc::ENOSPC) => self.problem(
                    "watches",
                    format!(
                        "inotify watch limit reached ({e}): memcgs beyond it are not watched; \
                         raise fs.inotify.max_user_watches (2 per memcg)"
                    ),
                ),
                _ => self.problem("inotify", format!("cannot watch {}: {e}", path.display())),
            }
            return None;
        }
        Some(wd)
    }

    /// Adds `dir` and every memcg below it (below a memcg already watched too: after an
    /// inotify overflow the whole tree is walked again).
    fn add_tree(&mut self, dir: &Path, out: &mut Vec<Notice>) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let known = std::fs::metadata(&d)
                .ok()
                .is_some_and(|m| self.memcgs.contains_key(&m.ino()));
            if !known && !self.add(&d, out) {
                continue;
            }
            // Listed after its watch is in place: a child made meanwhile is seen either way.
            if let Ok(entries) = std::fs::read_dir(&d) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
    }

    /// Watches one memcg directory; false if it is gone or already watched.
    fn add(&mut self, dir: &Path, out: &mut Vec<Notice>) -> bool {
        let Ok(meta) = std::fs::metadata(dir) else {
            return false;
        };
        let id = meta.ino();
        if self.memcgs.contains_key(&id) {
            return false;
        }
        let path = match dir.strip_prefix(&self.root) {
            Ok(p) if p.as_os_str().is_empty() => "/".to_string(),
            Ok(p) => format!("/{}", p.display()),
            Err(_) => return false,
        };
        let dir_wd = self.add_watch(dir, DIR_MASK);
        if let Some(wd) = dir_wd {
            self.wds.insert(wd, (id, true));
        }
        let mut m = Memcg {
            path: path.clone(),
            dir: dir.to_path_buf(),
            dir_wd,
            file_wd: None,
            eventfd: None,
            control: None,
            last: Counters::default(),
        };
        match self.version {
            Version::V2 => {
                let file = dir.join("memory.events.local");
                // The root has no memory.events: its OOMs are global ones (the hooks see them).
                if let Some(wd) = self.add_watch(&file, libc::IN_MODIFY) {
                    self.wds.insert(wd, (id, false));
                    m.file_wd = Some(wd);
                }
                if let Ok(t) = std::fs::read_to_string(&file) {
                    m.last = Counters::parse(&t);
                }
            }
            Version::V1 => {
                match self.register_v1(dir, id) {
                    Ok(fd) => m.eventfd = Some(fd),
                    // ENODEV: the memcg went offline (its rmdir began) between the listing
                    // and the registration; the directory may still be there for a moment.
                    Err(e) if e.raw_os_error() == Some(libc::ENODEV) || !dir.exists() => drop(e),
                    Err(e) => self.problem(
                        "eventfd",
                        format!(
                            "cannot register an OOM eventfd for {} through cgroup.event_control \
                             ({e}): its OOMs are not notified",
                            dir.display()
                        ),
                    ),
                }
                if let Ok(t) = std::fs::read_to_string(dir.join("memory.oom_control")) {
                    m.last = Counters::parse(&t);
                }
                if m.last.under_oom {
                    self.under_oom.insert(id);
                    if m.last.kill_disable {
                        out.push(Notice {
                            path: path.clone(),
                            payload: payload(id, 0, 0, state_flags(&m.last) | memcg_oom::V1),
                        });
                    }
                }
            }
        }
        self.by_path.insert(path, id);
        self.memcgs.insert(id, m);
        true
    }

    /// `cgroup.event_control`: "<eventfd> <memory.oom_control fd>". The control file's
    /// descriptor is only needed for the registration.
    fn register_v1(&self, dir: &Path, id: u64) -> std::io::Result<OwnedFd> {
        // SAFETY: plain syscall; the descriptor is owned at once.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(errno());
        }
        let efd = unsafe { OwnedFd::from_raw_fd(efd) };
        let control = std::fs::File::open(dir.join("memory.oom_control"))?;
        let mut ec = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.event_control"))?;
        ec.write_all(format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()).as_bytes())?;
        self.epoll_add(efd.as_raw_fd(), id)?;
        Ok(efd)
    }

    fn remove(&mut self, id: u64, out: &mut Vec<Notice>) {
        let Some(m) = self.memcgs.remove(&id) else {
            return;
        };
        self.controls_kept -= usize::from(m.control.is_some());
        self.by_path.remove(&m.path);
        for wd in [m.dir_wd, m.file_wd].into_iter().flatten() {
            self.wds.remove(&wd);
            // SAFETY: valid descriptor; a watch already gone returns EINVAL, ignored.
            unsafe { libc::inotify_rm_watch(self.inotify.as_raw_fd(), wd) };
        }
        // The eventfd leaves the epoll set when closed (dropped with `m`).
        let was_hung = self.under_oom.remove(&id);
        if was_hung || m.last.under_oom {
            out.push(Notice {
                path: m.path,
                payload: payload(id, 0, 0, memcg_oom::REMOVED | v1_flag(self.version)),
            });
        }
    }

    /// Everything notified since the last call, domains first (shallowest path first).
    pub(crate) fn ready(&mut self) -> Vec<Notice> {
        let mut out = Vec::new();
        let mut fired: HashMap<u64, u64> = HashMap::new();
        let mut modified: HashSet<u64> = HashSet::new();
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            // SAFETY: valid descriptor and buffer.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    0,
                )
            };
            if n <= 0 {
                break;
            }
            for ev in &events[..n as usize] {
                let token = ev.u64;
                if token == INOTIFY_TOKEN {
                    self.read_inotify(&mut modified, &mut out);
                } else if let Some(fd) = self.memcgs.get(&token).and_then(|m| m.eventfd.as_ref()) {
                    let mut buf = [0u8; 8];
                    // SAFETY: valid descriptor and buffer.
                    let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
                    if r == 8 {
                        *fired.entry(token).or_default() += u64::from_ne_bytes(buf);
                    }
                }
            }
            if (n as usize) < events.len() {
                break;
            }
        }
        for id in modified {
            self.read_v2(id, &mut out);
        }
        let net = net_of_parent(&fired, |id| self.parent_of(id));
        for (id, count) in fired {
            self.read_v1(id, net.get(&id).copied().unwrap_or(count), &mut out);
        }
        sort_by_depth(&mut out);
        out
    }

    /// v1 memcgs under OOM, re-read (the kernel notifies its start, not its end).
    pub(crate) fn poll_states(&mut self) -> Vec<Notice> {
        let mut out = Vec::new();
        let ids: Vec<u64> = self.under_oom.iter().copied().collect();
        for id in ids {
            self.read_v1(id, 0, &mut out);
        }
        sort_by_depth(&mut out);
        out
    }

    fn parent_of(&self, id: u64) -> Option<u64> {
        let path = &self.memcgs.get(&id)?.path;
        let parent = match path.rsplit_once('/') {
            Some(("", _)) if path != "/" => "/",
            Some((p, _)) if !p.is_empty() => p,
            _ => return None,
        };
        self.by_path.get(parent).copied()
    }

    fn read_inotify(&mut self, modified: &mut HashSet<u64>, out: &mut Vec<Notice>) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: valid descriptor and buffer.
            let n =
                unsafe { libc::read(self.inotify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                if n < 0 && errno().raw_os_error() != Some(libc::EAGAIN) {
                    let e = errno();
                    self.problem("inotify-read", format!("reading inotify events: {e}"));
                }
                return;
            }
            let mut off = 0usize;
            let n = n as usize;
            let head = std::mem::size_of::<libc::inotify_event>();
            while off + head <= n {
                // SAFETY: the kernel wrote whole records; read unaligned.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                let name_bytes = &buf[off + head..off + head + ev.len as usize];
                let name_end = name_bytes
                    .iter()
                    .position(|b| *b == 0)
                    .unwrap_or(name_bytes.len());
                let name = std::ffi::OsStr::from_bytes(&name_bytes[..name_end]).to_owned();
                off += head + ev.len as usize;
                if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                    self.problem(
                        "overflow",
                        "the inotify queue overflowed: memcgs created meanwhile are found by a \
                         rescan, counters by their next change"
                            .into(),
                    );
                    let root = self.root.clone();
                    self.add_tree(&root, out);
                    continue;
                }
                let Some(&(id, is_dir)) = self.wds.get(&ev.wd) else {
                    continue;
                };
                if ev.mask & libc::IN_IGNORED != 0 {
                    self.wds.remove(&ev.wd);
                    if is_dir {
                        self.remove(id, out);
                    }
                    continue;
                }
                if !is_dir {
                    modified.insert(id);
                    continue;
                }
                let Some(parent) = self.memcgs.get(&id).map(|m| m.dir.clone()) else {
                    continue;
                };
                let child = parent.join(&name);
                if ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0
                    && ev.mask & libc::IN_ISDIR != 0
                {
                    self.add_tree(&child, out);
                } else if ev.mask & libc::IN_DELETE != 0 && ev.mask & libc::IN_ISDIR != 0 {
                    let path = match child.strip_prefix(&self.root) {
                        Ok(p) => format!("/{}", p.display()),
                        Err(_) => continue,
                    };
                    if let Some(cid) = self.by_path.get(&path).copied() {
                        self.remove(cid, out);
                    }
                }
            }
        }
    }

    fn read_v2(&mut self, id: u64, out: &mut Vec<Notice>) {
        let Some(m) = self.memcgs.get_mut(&id) else {
            return;
        };
        let Ok(t) = std::fs::read_to_string(m.dir.join("memory.events.local")) else {
            return;
        };
        let now = Counters::parse(&t);
        let inv = now.oom.saturating_sub(m.last.oom);
        let kills = now.oom_kill.saturating_sub(m.last.oom_kill);
        m.last = now;
        if inv > 0 || kills > 0 {
            out.push(Notice {
                path: m.path.clone(),
                payload: payload(id, inv, kills, 0),
            });
        }
    }

    /// A v1 memcg's eventfd fired `invocations` times (net of its parent's), or its state is
    /// re-read (0).
    fn read_v1(&mut self, id: u64, invocations: u64, out: &mut Vec<Notice>) {
        let Some(m) = self.memcgs.get_mut(&id) else {
            self.under_oom.remove(&id);
            return;
        };
        if m.control.is_none() && self.controls_kept < CONTROLS_KEPT {
            m.control = std::fs::File::open(m.dir.join("memory.oom_control")).ok();
            self.controls_kept += usize::from(m.control.is_some());
        }
        let text = match &m.control {
            Some(f) => crate::host::memstate::read_whole(f),
            None => std::fs::read_to_string(m.dir.join("memory.oom_control")).ok(),
        };
        let Some(t) = text else {
            // Removed: its eventfd is signalled as the kernel unregisters it.
            self.remove(id, out);
            return;
        };
        let now = Counters::parse(&t);
        let kills = now.oom_kill.saturating_sub(m.last.oom_kill);
        let changed = (now.under_oom, now.kill_disable) != (m.last.under_oom, m.last.kill_disable);
        m.last = now;
        if now.under_oom {
            self.under_oom.insert(id);
        } else {
            self.under_oom.remove(&id);
        }
        if invocations > 0 || kills > 0 || changed {
            out.push(Notice {
                path: m.path.clone(),
                payload: payload(id, invocations, kills, state_flags(&now) | memcg_oom::V1),
            });
        }
    }
}

fn v1_flag(v: Version) -> u32 {
    if v == Version::V1 { memcg_oom::V1 } else { 0 }
}

fn state_flags(c: &Counters) -> u32 {
    let mut f = memcg_oom::STATE_KNOWN;
    if c.under_oom {
        f |= memcg_oom::UNDER_OOM;
    }
    if c.kill_disable {
        f |= memcg_oom::KILL_DISABLED;
    }
    f
}

fn payload(id: u64, invocations: u64, kills: u64, flags: u32) -> MemcgOom {
    MemcgOom {
        memcg_id: id,
        invocations: u32::try_from(invocations).unwrap_or(u32::MAX),
        kills: u32::try_from(kills).unwrap_or(u32::MAX),
        flags,
        _pad: 0,
    }
}

fn sort_by_depth(out: &mut [Notice]) {
    out.sort_by_key(|n| (n.path.matches('/').count(), n.path.clone()));
}

/// v1: an OOM notifies its domain and every memcg below it, so a memcg's own invocations are
/// its signals less its parent's (when the parent is watched and fired too).
pub(crate) fn net_of_parent(
    fired: &HashMap<u64, u64>,
    parent_of: impl Fn(u64) -> Option<u64>,
) -> HashMap<u64, u64> {
    fired
        .iter()
        .map(|(id, n)| {
            let inherited = parent_of(*id)
                .and_then(|p| fired.get(&p))
                .copied()
                .unwrap_or(0);
            (*id, n.saturating_sub(inherited))
        })
        .collect()
}

/// The tasks of a memcg and those below it as /proc shows them now: pid, comm, state, wchan,
/// the top of the kernel stack (for an OOM-killer-disabled hang: the sleepers).
pub fn memcg_tasks(
    memcg_root: &Path,
    memcg_path: &str,
    proc_root: &Path,
    max: usize,
) -> Vec<crate::lifecycle::MemcgTask> {
    let base = memcg_root.join(memcg_path.trim_start_matches('/'));
    let mut out = Vec::new();
    for (dir, _) in crate::host::forensics::memcgs_under(&base) {
        let Ok(mut f) = std::fs::File::open(dir.join("cgroup.procs")) else {
            continue;
        };
        let mut procs = String::new();
        if f.read_to_string(&mut procs).is_err() {
            continue;
        }
        let rel = dir
            .strip_prefix(memcg_root)
            .map_or_else(|_| memcg_path.to_string(), |p| format!("/{}", p.display()));
        for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            if out.len() >= max {
                return out;
            }
            let pdir = proc_root.join(pid.to_string());
            let read = |f: &str| std::fs::read_to_string(pdir.join(f)).ok();
            let stat = read("stat").unwrap_or_default();
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, r)| r.split_whitespace().next())
                .unwrap_or("?")
                .to_string();
            let wchan = read("wchan").filter(|w| !w.is_empty() && w != "0");
            let stack = read("stack")
                .map(|s| {
                    s.lines()
                        .take(4)
                        .map(|l| {
                            l.split_whitespace()
                                .nth(1)
                                .unwrap_or(l)
                                .split('+')
                                .next()
                                .unwrap_or_default()
                                .to_string()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let oom_score_adj = read("oom_score_adj").and_then(|a| a.trim().parse::<i32>().ok());
            // Field 9 of stat, the 7th after the comm: the task's PF_* flags.
            let flags = stat
                .rsplit_once(") ")
                .and_then(|(_, r)| r.split_whitespace().nth(6))
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
            const PF_EXITING: u64 = 0x4;
            let not_eligible = if oom_score_adj == Some(-1000) {
                Some("oom_score_adj -1000: never chosen".to_string())
            } else if state == "Z" || state == "X" {
                Some("a zombie: no memory left to free".to_string())
            } else if flags & PF_EXITING != 0 {
                Some("exiting (PF_EXITING): waited on, or skipped once reaped".to_string())
            } else {
                None
            };
            out.push(crate::lifecycle::MemcgTask {
                pid,
                comm: read("comm")
                    .map(|c| c.trim_end().to_string())
                    .unwrap_or_default(),
                state,
                wchan,
                stack,
                memcg_path: Some(rel.clone()),
                oom_score_adj,
                not_eligible,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDir;

    fn v2_tree(root: &Path, rel: &str) {
        let d = root.join(rel);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("memory.events.local"),
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
        )
        .unwrap();
    }

    fn ready_until(w: &mut MemcgWatch, want: impl Fn(&[Notice]) -> bool) -> Vec<Notice> {
        let mut all = Vec::new();
        for _ in 0..100 {
            all.extend(w.ready());
            if want(&all) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        all
    }

    /// v2: a counter change in a memcg created after the watch began is notified with the
    /// invocations since the last reading; a removed memcg is forgotten.
    #[test]
    fn v2_counts_invocations_of_memcgs_created_later() {
        let root = ScratchDir::new("memcg-watch-v2");
        v2_tree(root.path(), "a");
        std::fs::write(root.join("cgroup.controllers"), "memory\n").unwrap();
        let (mut w, first) = MemcgWatch::new(root.path()).unwrap();
        assert_eq!(w.version(), Version::V2);
        assert!(first.is_empty());
        assert_eq!(w.len(), 2);
        // Created while watched, a child below it too.
        v2_tree(root.path(), "a/b");
        v2_tree(root.path(), "a/b/c");
        let _ = ready_until(&mut w, |_| false);
        for _ in 0..50 {
            if w.len() == 4 {
                break;
            }
            let _ = w.ready();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(w.len(), 4, "the new memcgs are watched");
        std::fs::write(
            root.join("a/b/c/memory.events.local"),
            "low 0\nhigh 0\nmax 9\noom 3\noom_kill 1\n",
        )
        .unwrap();
        let got = ready_until(&mut w, |n| !n.is_empty());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].path, "/a/b/c");
        assert_eq!((got[0].payload.invocations, got[0].payload.kills), (3, 1));
        assert_eq!(got[0].payload.flags & memcg_oom::V1, 0);
        let id = got[0].payload.memcg_id;
        assert_eq!(w.path_of(id), Some("/a/b/c"));
        // The next change counts from the last reading.
        std::fs::write(
            root.join("a/b/c/memory.events.local"),
            "low 0\nhigh 0\nmax 9\noom 5\noom_kill 1\n",
        )
        .unwrap();
        let got = ready_until(&mut w, |n| !n.is_empty());
        assert_eq!((got[0].payload.invocations, got[0].payload.kills), (2, 0));
        // Removed while watched (a fixture's rmdir needs its files gone first).
        std::fs::remove_file(root.join("a/b/c/memory.events.local")).unwrap();
        std::fs::remove_dir(root.join("a/b/c")).unwrap();
        for _ in 0..50 {
            let _ = w.ready();
            if w.len() == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.path_of(id), None);
    }

    /// v1 fixture: a memcg found under OOM with the killer disabled is reported at start;
    /// re-reading says when it ends. (The eventfd registration needs a real cgroup v1
    /// hierarchy: the host end-to-end test covers it.)
    #[test]
    fn v1_hang_at_start_and_its_end() {
        let root = ScratchDir::new("memcg-watch-v1");
        for d in ["", "a", "a/b"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::write(
                root.join(d).join("memory.oom_control"),
                "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
            )
            .unwrap();
        }
        for d in ["a", "a/b"] {
            std::fs::write(
                root.join(d).join("memory.oom_control"),
                "oom_kill_disable 1\nunder_oom 1\noom_kill 0\n",
            )
            .unwrap();
        }
        let (mut w, first) = MemcgWatch::with_version(root.path(), Version::V1).unwrap();
        assert!(!w.problems.is_empty(), "a fixture has no event_control");
        let paths: Vec<_> = first.iter().map(|n| n.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/a/b"], "domain first");
        let f = first[0].payload.flags;
        assert!(f & memcg_oom::UNDER_OOM != 0 && f & memcg_oom::KILL_DISABLED != 0);
        assert!(w.needs_poll());
        assert!(w.poll_states().is_empty(), "nothing changed");
        for d in ["a", "a/b"] {
            std::fs::write(
                root.join(d).join("memory.oom_control"),
                "oom_kill_disable 1\nunder_oom 0\noom_kill 0\n",
            )
            .unwrap();
        }
        let ended = w.poll_states();
        assert_eq!(ended.len(), 2);
        // Re-read through the descriptors kept since the first poll (files rewritten in
        // place, as a cgroup file is the same file).
        assert_eq!(w.controls_kept, 2);
        assert_eq!(ended[0].payload.flags & memcg_oom::UNDER_OOM, 0);
        assert!(!w.needs_poll());
    }

    #[test]
    fn v1_invocations_are_net_of_the_parent() {
        // 1 ← 2 ← 3; an OOM of 2 notifies 2 and 3; one of 3 notifies 3 only.
        let parent = |id| match id {
            2 => Some(1),
            3 => Some(2),
            _ => None,
        };
        let fired: HashMap<u64, u64> = [(2, 4), (3, 5)].into();
        let net = net_of_parent(&fired, parent);
        assert_eq!(net[&2], 4);
        assert_eq!(net[&3], 1);
        let fired: HashMap<u64, u64> = [(1, 2), (2, 2), (3, 2)].into();
        let net = net_of_parent(&fired, parent);
        assert_eq!((net[&1], net[&2], net[&3]), (2, 0, 0));
    }

    #[test]
    fn counters_parse_both_versions() {
        let v2 = Counters::parse("low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\noom_group_kill 0\n");
        assert_eq!((v2.oom, v2.oom_kill, v2.under_oom), (4, 5, false));
        let v1 = Counters::parse("oom_kill_disable 1\nunder_oom 1\noom_kill 7\n");
        assert_eq!(
            (v1.oom, v1.oom_kill, v1.under_oom, v1.kill_disable),
            (0, 7, true, true)
        );
    }
}
