//! A memcg's memory at a kill, from its own files (cgroup v1 or v2), or the machine's from
//! `/proc/meminfo` for a global OOM: what the kernel's OOM report prints
//! (`mem_cgroup_print_oom_meminfo`), read by userspace when the kill event arrives. By then the
//! oom_reaper (woken at the kill) or the victim's exit has often freed its memory: on this
//! project's host a 64 MiB memcg read 132 KiB in use. The peak usage, the count of charges
//! that hit the limit and of OOM kills only grow, and say what the kill was about (v1's
//! `memory.failcnt` and `memory.memsw.failcnt` stayed 0 through a real OOM kill on the host's
//! 6.18: there the peak is what shows the limit was reached).

use std::path::Path;

use oomtrace_common::{MemcgState, memcg_state as bits};

/// An empty state for `memcg_id`: nothing read.
fn empty(memcg_id: u64) -> MemcgState {
    MemcgState {
        memcg_id,
        fields: 0,
        _pad: 0,
        usage_bytes: 0,
        limit_bytes: 0,
        failcnt: 0,
        swap_bytes: 0,
        swap_limit_bytes: 0,
        oom_kills: 0,
        anon_bytes: 0,
        file_bytes: 0,
        shmem_bytes: 0,
        kernel_bytes: 0,
        peak_bytes: 0,
    }
}

/// A number file: a decimal, or "max" (no limit).
fn number(s: &str) -> Option<u64> {
    match s.trim() {
        "max" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// A `key value` line's value from a flat-keyed file (`memory.stat`, `memory.events`,
/// `memory.oom_control`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The files of one memcg, by name (a function so that tests give fixtures).
pub(crate) fn from_files(
    memcg_id: u64,
    version: u8,
    read: impl Fn(&str) -> Option<String>,
) -> MemcgState {
    let mut s = empty(memcg_id);
    let num = |f: &str| read(f).as_deref().and_then(number);
    let stat = read("memory.stat").unwrap_or_default();
    if version == 2 {
        s.fields |= bits::V2;
        if let (Some(u), Some(l)) = (num("memory.current"), num("memory.max")) {
            (s.usage_bytes, s.limit_bytes) = (u, l);
            s.fields |= bits::USAGE;
        }
        let events = read("memory.events").unwrap_or_default();
        if let Some(max) = keyed(&events, "max") {
            s.failcnt = max;
            s.fields |= bits::FAILCNT;
        }
        if let Some(p) = num("memory.peak") {
            s.peak_bytes = p;
            s.fields |= bits::PEAK;
        }
        if let Some(k) = keyed(&events, "oom_kill") {
            s.oom_kills = k;
            s.fields |= bits::OOM_KILLS;
        }
        if let (Some(u), Some(l)) = (num("memory.swap.current"), num("memory.swap.max")) {
            (s.swap_bytes, s.swap_limit_bytes) = (u, l);
            s.fields |= bits::SWAP;
        }
        if let (Some(a), Some(f)) = (keyed(&stat, "anon"), keyed(&stat, "file")) {
            s.anon_bytes = a;
            s.file_bytes = f;
            s.shmem_bytes = keyed(&stat, "shmem").unwrap_or(0);
            // `kernel` since 5.18; before, its main parts.
            s.kernel_bytes = keyed(&stat, "kernel").unwrap_or_else(|| {
                ["slab", "kernel_stack", "pagetables", "sock"]
                    .iter()
                    .filter_map(|k| keyed(&stat, k))
                    .sum()
            });
            s.fields |= bits::STAT;
        }
    } else {
        s.fields |= bits::V1;
        if let (Some(u), Some(l)) = (num("memory.usage_in_bytes"), num("memory.limit_in_bytes")) {
            (s.usage_bytes, s.limit_bytes) = (u, l);
            s.fields |= bits::USAGE;
        }
        if let Some(f) = num("memory.failcnt") {
            s.failcnt = f + num("memory.memsw.failcnt").unwrap_or(0);
            s.fields |= bits::FAILCNT;
        }
        if let Some(p) = num("memory.max_usage_in_bytes") {
            s.peak_bytes = p;
            s.fields |= bits::PEAK;
        }
        if let Some(k) = keyed(&read("memory.oom_control").unwrap_or_default(), "oom_kill") {
            s.oom_kills = k;
            s.fields |= bits::OOM_KILLS;
        }
        // memsw counts memory and swap together (present with swap accounting).
        if let (Some(u), Some(l)) = (
            num("memory.memsw.usage_in_bytes"),
            num("memory.memsw.limit_in_bytes"),
        ) && s.fields & bits::USAGE != 0
        {
            s.swap_bytes = u.saturating_sub(s.usage_bytes);
            s.swap_limit_bytes = l;
            s.fields |= bits::SWAP;
        }
        // The hierarchical totals (this memcg and those below it).
        if let (Some(a), Some(f)) = (keyed(&stat, "total_rss"), keyed(&stat, "total_cache")) {
            s.anon_bytes = a;
            s.file_bytes = f;
            s.shmem_bytes = keyed(&stat, "total_shmem").unwrap_or(0);
            s.kernel_bytes = num("memory.kmem.usage_in_bytes").unwrap_or(0);
            s.fields |= bits::STAT;
        }
    }
    s
}

/// A memcg's files read at its kills, kept open: each later read is one `pread` at offset 0
/// (a cgroup file is a kernfs seq_file, made anew by a read from offset 0), not an
/// `openat`, a `read` and a `close` per file (ten files per kill on cgroup v1). The
/// descriptors name the memcg itself, not its path: a memcg renamed is still read, one
/// removed fails its reads (`ENODEV`) and is dropped by its owner ([`MemcgFiles::read`]).
pub(crate) struct MemcgFiles {
    dir: Option<std::fs::File>,
    /// Each file asked for: its descriptor, or None where it does not exist (a file the
    /// controller lacks, e.g. `memory.memsw.*` without swap accounting, stays missing: a
    /// cgroup's files are made with it).
    files: Vec<(String, Option<std::fs::File>)>,
    /// A read failed: the memcg is gone (or going), its files are no longer to be kept.
    pub(crate) failed: bool,
}

impl MemcgFiles {
    /// The files of the memcg at `dir`, opened as they are first read.
    pub(crate) fn open(dir: &Path) -> MemcgFiles {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir)
            .ok();
        MemcgFiles {
            failed: dir.is_none(),
            dir,
            files: Vec::new(),
        }
    }

    /// The memcg's state now (`version` of the controller): read from the files (nothing
    /// cached but their descriptors).
    pub(crate) fn read(&mut self, memcg_id: u64, version: u8) -> MemcgState {
        let me = std::cell::RefCell::new(self);
        from_files(memcg_id, version, |f| me.borrow_mut().text(f))
    }

    fn text(&mut self, name: &str) -> Option<String> {
        let at = match self.files.iter().position(|(n, _)| *n == name) {
            Some(at) => at,
            None => {
                let file = self.dir.as_ref().and_then(|d| open_at(d, name));
                self.files.push((name.to_string(), file));
                self.files.len() - 1
            }
        };
        let file = self.files[at].1.as_ref()?;
        let text = read_whole(file);
        if text.is_none() {
            self.failed = true;
        }
        text
    }
}

/// A memcg's state from its directory (`version` of the controller), its files opened for
/// this read only.
#[cfg(test)]
pub(crate) fn of_memcg(dir: &Path, memcg_id: u64, version: u8) -> MemcgState {
    MemcgFiles::open(dir).read(memcg_id, version)
}

/// File `name` in directory `dir`, opened to read.
fn open_at(dir: &std::fs::File, name: &str) -> Option<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid directory descriptor and a NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    // SAFETY: `fd` was just opened and is owned by nothing else.
    (fd >= 0).then(|| unsafe { std::fs::File::from_raw_fd(fd) })
}

/// The whole text of `file`, read from offset 0.
pub(crate) fn read_whole(file: &std::fs::File) -> Option<String> {
    use std::os::unix::fs::FileExt;
    // Not `read_to_string`: it asks for the file's size first, and reads again until a read
    // returns nothing. A cgroup file (kernfs, a seq_file) is made whole at a read from offset
    // 0 and handed out as far as the buffer has room: a read that leaves room is its end (one
    // read per file, not two: ten files at every kill).
    const CHUNK: usize = 4096;
    let mut text = Vec::new();
    loop {
        let at = text.len();
        text.resize(at + CHUNK, 0);
        let n = loop {
            match file.read_at(&mut text[at..], at as u64) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r.ok()?,
            }
        };
        text.truncate(at + n);
        if n < CHUNK || text.len() >= 1 << 20 {
            break;
        }
    }
    String::from_utf8(text).ok()
}

/// The machine's state from `/proc/meminfo` text (values in kB): a global OOM.
pub(crate) fn of_machine(meminfo: &str) -> MemcgState {
    let kb = |k: &str| {
        meminfo.lines().find_map(|l| {
            let (key, v) = l.split_once(':')?;
            (key == k)
                .then(|| v.split_whitespace().next()?.parse::<u64>().ok())
                .flatten()
                .map(|n| n * 1024)
        })
    };
    let mut s = empty(0);
    s.fields |= bits::MACHINE;
    if let (Some(total), Some(avail)) = (kb("MemTotal"), kb("MemAvailable")) {
        s.usage_bytes = total.saturating_sub(avail);
        s.limit_bytes = total;
        s.fields |= bits::USAGE;
    }
    if let (Some(total), Some(free)) = (kb("SwapTotal"), kb("SwapFree")) {
        s.swap_bytes = total.saturating_sub(free);
        s.swap_limit_bytes = total;
        s.fields |= bits::SWAP;
    }
    if let (Some(a), Some(f)) = (kb("AnonPages"), kb("Cached")) {
        s.anon_bytes = a;
        s.file_bytes = f;
        s.shmem_bytes = kb("Shmem").unwrap_or(0);
        s.kernel_bytes = ["Slab", "KernelStack", "PageTables"]
            .iter()
            .filter_map(|k| kb(k))
            .sum();
        s.fields |= bits::STAT;
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn files(f: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = f
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| m.get(name).cloned()
    }

    /// A 6.12 guest's 64 MiB memcg right after its hog was killed.
    #[test]
    fn reads_a_v2_memcg() {
        let s = from_files(
            77,
            2,
            files(&[
                ("memory.current", "67104768\n"),
                ("memory.max", "67108864\n"),
                ("memory.swap.current", "0\n"),
                ("memory.swap.max", "max\n"),
                ("memory.peak", "67108864\n"),
                (
                    "memory.events",
                    "low 0\nhigh 0\nmax 131\noom 1\noom_kill 1\noom_group_kill 0\n",
                ),
                (
                    "memory.stat",
                    "anon 66322432\nfile 12288\nkernel 720896\nkernel_stack 16384\n\
                     pagetables 172032\nshmem 0\n",
                ),
            ]),
        );
        assert_eq!(
            s.fields,
            bits::V2
                | bits::USAGE
                | bits::FAILCNT
                | bits::OOM_KILLS
                | bits::SWAP
                | bits::STAT
                | bits::PEAK
        );
        assert_eq!(s.peak_bytes, 64 << 20);
        assert_eq!((s.usage_bytes, s.limit_bytes), (67_104_768, 67_108_864));
        assert_eq!((s.failcnt, s.oom_kills), (131, 1));
        assert_eq!((s.swap_bytes, s.swap_limit_bytes), (0, u64::MAX));
        assert_eq!(
            (s.anon_bytes, s.file_bytes, s.kernel_bytes),
            (66_322_432, 12_288, 720_896)
        );
    }

    /// The files read from a directory give what the same files give from memory; a memcg
    /// removed meanwhile (no directory) gives nothing read.
    #[test]
    fn reads_a_memcg_directory() {
        let fixture = [
            ("memory.current", "4096\n"),
            ("memory.max", "8192\n"),
            ("memory.events", "max 3\noom 1\noom_kill 1\n"),
            ("memory.stat", "anon 4096\nfile 0\nkernel 0\n"),
        ];
        let dir = std::env::temp_dir().join(format!("oomtrace-memstate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in fixture {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let read = of_memcg(&dir, 9, 2);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read, from_files(9, 2, files(&fixture)));
        assert_eq!((read.usage_bytes, read.limit_bytes), (4096, 8192));
        assert_eq!(of_memcg(&dir, 9, 2), from_files(9, 2, |_| None));
    }

    /// The files kept open are read anew at each read (from offset 0, as a cgroup file is
    /// made anew); a file that is missing stays missing without failing the memcg; a memcg
    /// whose directory cannot be opened is failed (its owner drops it).
    #[test]
    fn kept_files_are_read_anew() {
        let dir =
            std::env::temp_dir().join(format!("oomtrace-memstate-kept-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.current"), "4096\n").unwrap();
        std::fs::write(dir.join("memory.max"), "8192\n").unwrap();
        let mut kept = MemcgFiles::open(&dir);
        let first = kept.read(9, 2);
        // Rewritten in place (the same inode, as a cgroup file stays the same file).
        std::fs::write(dir.join("memory.current"), "6144\n").unwrap();
        let second = kept.read(9, 2);
        let missing = MemcgFiles::open(&dir.join("gone"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((first.usage_bytes, first.limit_bytes), (4096, 8192));
        assert_eq!((second.usage_bytes, second.limit_bytes), (6144, 8192));
        assert_eq!(second.fields & bits::STAT, 0, "memory.stat is missing");
        assert!(!kept.failed, "a missing file does not fail the memcg");
        assert!(
            kept.files
                .iter()
                .any(|(n, f)| n == "memory.stat" && f.is_none())
        );
        assert!(missing.failed);
    }

    /// A file longer than one read's room is read whole, one of exactly that room too.
    #[test]
    fn a_file_longer_than_one_read_is_read_whole() {
        let dir =
            std::env::temp_dir().join(format!("oomtrace-memstate-long-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let handle = std::fs::File::open(&dir).unwrap();
        let cases = [9000, 4096, 8192, 1, 0].map(|n| {
            let text: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            std::fs::write(dir.join("f"), &text).unwrap();
            (open_at(&handle, "f").and_then(|f| read_whole(&f)), text)
        });
        std::fs::remove_dir_all(&dir).unwrap();
        for (read, text) in cases {
            assert_eq!(read.as_deref(), Some(text.as_str()));
        }
    }

    /// 5.10 has no `kernel` key: its parts are summed.
    #[test]
    fn v2_before_5_18_sums_the_kernel_parts() {
        let s = from_files(
            1,
            2,
            files(&[(
                "memory.stat",
                "anon 10\nfile 20\nslab 3\nkernel_stack 4\npagetables 5\nsock 1\n",
            )]),
        );
        assert_eq!(s.kernel_bytes, 13);
        assert_eq!(s.fields & bits::USAGE, 0, "no memory.current: no usage");
    }

    /// The host's v1 memcg (memsw accounting on).
    #[test]
    fn reads_a_v1_memcg() {
        let s = from_files(
            9,
            1,
            files(&[
                ("memory.usage_in_bytes", "67059712\n"),
                ("memory.limit_in_bytes", "67108864\n"),
                ("memory.memsw.usage_in_bytes", "67059712\n"),
                ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
                ("memory.failcnt", "2047\n"),
                ("memory.memsw.failcnt", "3\n"),
                ("memory.max_usage_in_bytes", "67108864\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
                ),
                ("memory.kmem.usage_in_bytes", "532480\n"),
                (
                    "memory.stat",
                    "cache 0\nrss 66000000\ntotal_cache 4096\ntotal_rss 66060288\n\
                     total_shmem 0\n",
                ),
            ]),
        );
        assert_eq!(s.fields & bits::V1, bits::V1);
        assert_eq!((s.usage_bytes, s.limit_bytes), (67_059_712, 67_108_864));
        assert_eq!((s.failcnt, s.oom_kills), (2050, 1));
        assert_eq!(s.peak_bytes, 64 << 20);
        assert_eq!(s.swap_bytes, 0);
        assert_eq!((s.anon_bytes, s.file_bytes), (66_060_288, 4096));
        assert_eq!(s.kernel_bytes, 532_480);
    }

    #[test]
    fn reads_the_machine() {
        let s = of_machine(
            "MemTotal:        1000 kB\nMemFree:  10 kB\nMemAvailable:     100 kB\n\
             Cached:  50 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\nAnonPages: 800 kB\n\
             Shmem: 5 kB\nSlab: 20 kB\nKernelStack: 2 kB\nPageTables: 3 kB\n",
        );
        assert_eq!(s.memcg_id, 0);
        assert_eq!((s.usage_bytes, s.limit_bytes), (900 * 1024, 1000 * 1024));
        assert_eq!(s.kernel_bytes, 25 * 1024);
        assert_ne!(s.fields & bits::MACHINE, 0);
    }
}
