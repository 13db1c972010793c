//! What a stuck victim looks like in /proc at flag time: its state, parent, threads (state,
//! wchan, kernel stack), pending SIGKILL, memcg usage, and the sockets it still holds.
//!
//! Sockets are found through **every thread's** fd table: a zombie leader's `fd/` is empty
//! (that is why `ss -p` shows no owner for the port), while a thread stuck in the kernel still
//! holds the process's files. Everything is read under a root directory so tests can use a
//! fixture tree; nothing here panics on odd input: what cannot be read is left out with a note.

use std::{
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use serde::Serialize;

/// One thread of the victim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ThreadInfo {
    pub tid: u32,
    /// `R`, `S`, `D`, `Z`, `t`, …
    pub state: String,
    pub wchan: Option<String>,
    /// Kernel stack, innermost first (needs root).
    pub stack: Vec<String>,
}

/// A socket the victim holds, described from /proc/net.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SocketInfo {
    pub inode: u64,
    /// `tcp`, `tcp6`, `udp`, `udp6`, `unix`, or `unknown`.
    pub proto: String,
    /// e.g. `LISTEN 127.0.0.1:47123`.
    pub description: String,
    /// Threads whose fd table holds it.
    pub held_by: Vec<u32>,
}

/// The victim's memory cgroup as /proc and the cgroup fs show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemcgInfo {
    pub path: String,
    pub usage_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
}

/// Everything gathered about one process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Forensics {
    pub tgid: u32,
    pub exists: bool,
    pub state: Option<String>,
    pub ppid: Option<u32>,
    pub parent_comm: Option<String>,
    pub threads_count: Option<u32>,
    pub sigkill_pending: Option<bool>,
    pub threads: Vec<ThreadInfo>,
    pub sockets: Vec<SocketInfo>,
    pub memcg: Option<MemcgInfo>,
    /// What could not be read, and why.
    pub notes: Vec<String>,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

/// SIGKILL (signal 9) is bit 8 of the pending masks.
fn has_sigkill(mask_hex: &str) -> bool {
    u64::from_str_radix(mask_hex.trim(), 16).is_ok_and(|m| m & (1 << 8) != 0)
}

/// Gathers forensics for `tgid` under `proc_root` (normally `/proc`), with the memory cgroup
/// controller mounted at `memcg_root` (v1 memory hierarchy or the v2 root), if any.
pub fn collect(proc_root: &Path, tgid: u32, memcg_root: Option<&Path>) -> Forensics {
    let dir = proc_root.join(tgid.to_string());
    let mut f = Forensics {
        tgid,
        ..Forensics::default()
    };
    let Some(status) = read(&dir.join("status")) else {
        f.notes.push(format!(
            "{} is gone: the process no longer exists",
            dir.display()
        ));
        return f;
    };
    f.exists = true;
    f.state = status_field(&status, "State").map(str::to_string);
    f.ppid = status_field(&status, "PPid").and_then(|p| p.parse().ok());
    f.threads_count = status_field(&status, "Threads").and_then(|p| p.parse().ok());
    f.sigkill_pending = match (
        status_field(&status, "ShdPnd"),
        status_field(&status, "SigPnd"),
    ) {
        (None, None) => None,
        (a, b) => Some(a.is_some_and(has_sigkill) || b.is_some_and(has_sigkill)),
    };
    if let Some(ppid) = f.ppid {
        f.parent_comm =
            read(&proc_root.join(ppid.to_string()).join("comm")).map(|c| c.trim().to_string());
    }

    let mut tids: Vec<u32> = std::fs::read_dir(dir.join("task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    let mut socket_holders: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    let mut net_dir: Option<PathBuf> = None;
    for tid in &tids {
        let tdir = dir.join("task").join(tid.to_string());
        let state = read(&tdir.join("status"))
            .and_then(|s| status_field(&s, "State").map(str::to_string))
            .unwrap_or_else(|| "?".into());
        let wchan = read(&tdir.join("wchan"))
            .map(|w| w.trim().to_string())
            .filter(|w| !w.is_empty() && w != "0");
        let stack = match read(&tdir.join("stack")) {
            Some(s) => s
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .map(|fnname| fnname.split('+').next().unwrap_or(fnname).to_string())
                .collect(),
            None => Vec::new(),
        };
        if let Ok(fds) = std::fs::read_dir(tdir.join("fd")) {
            for fd in fds.flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let target = target.to_string_lossy();
                if let Some(inode) = target
                    .strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|i| i.parse::<u64>().ok())
                {
                    let holders = socket_holders.entry(inode).or_default();
                    if !holders.contains(tid) {
                        holders.push(*tid);
                    }
                }
            }
        }
        // A live thread's net namespace view (a zombie leader has none).
        if net_dir.is_none() && tdir.join("net/tcp").exists() {
            net_dir = Some(tdir.join("net"));
        }
        f.threads.push(ThreadInfo {
            tid: *tid,
            state,
            wchan,
            stack,
        });
    }
    if tids.is_empty() {
        f.notes.push("no threads listed under task/".into());
    }
    if !socket_holders.is_empty() {
        let net = net_dir.unwrap_or_else(|| proc_root.join("net"));
        let table = socket_table(&net);
        for (inode, held_by) in socket_holders {
            let (proto, description) = table.get(&inode).cloned().unwrap_or_else(|| {
                (
                    "unknown".into(),
                    "not in /proc/net (another namespace?)".into(),
                )
            });
            f.sockets.push(SocketInfo {
                inode,
                proto,
                description,
                held_by,
            });
        }
    }
    // An exited (zombie) leader reports the root cgroup: ask a live thread first.
    let live = f
        .threads
        .iter()
        .find(|t| !t.state.starts_with('Z') && !t.state.starts_with('X'))
        .map(|t| dir.join("task").join(t.tid.to_string()));
    f.memcg = live
        .and_then(|t| memcg_of(&t, memcg_root))
        .filter(|m| m.path != "/")
        .or_else(|| memcg_of(&dir, memcg_root));
    f
}

/// The memory cgroup from `<dir>/cgroup` (a process or thread dir), with usage and limit.
fn memcg_of(dir: &Path, memcg_root: Option<&Path>) -> Option<MemcgInfo> {
    let text = read(&dir.join("cgroup"))?;
    let mut v2 = None;
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path.to_string());
        }
    }
    let (path, files) = match (v1, v2) {
        (Some(p), _) => (p, ("memory.usage_in_bytes", "memory.limit_in_bytes")),
        (None, Some(p)) => (p, ("memory.current", "memory.max")),
        _ => return None,
    };
    let num = |file: &str| -> Option<u64> {
        let cg = memcg_root?.join(path.trim_start_matches('/'));
        read(&cg.join(file))?.trim().parse().ok()
    };
    Some(MemcgInfo {
        usage_bytes: num(files.0),
        limit_bytes: num(files.1),
        path,
    })
}

/// inode → (proto, description) for every socket in a net namespace's /proc/net tables.
pub fn socket_table(net: &Path) -> BTreeMap<u64, (String, String)> {
    let mut out = BTreeMap::new();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        let Some(text) = read(&net.join(proto)) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(st), Some(inode)) =
                (cols.get(1), cols.get(2), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let Ok(inode) = inode.parse::<u64>() else {
                continue;
            };
            let state = if proto.starts_with("tcp") {
                tcp_state(st)
            } else {
                "UDP"
            };
            let local = decode_addr(local).unwrap_or_else(|| (*local).to_string());
            let description = if state == "LISTEN" || state == "UDP" {
                format!("{state} {local}")
            } else {
                let remote = decode_addr(remote).unwrap_or_else(|| (*remote).to_string());
                format!("{state} {local} -> {remote}")
            };
            out.insert(inode, (proto.to_string(), description));
        }
    }
    if let Some(text) = read(&net.join("unix")) {
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let Some(Ok(inode)) = cols.get(6).map(|i| i.parse::<u64>()) else {
                continue;
            };
            let path = cols.get(7).copied().unwrap_or("(unnamed)");
            let listening =
                cols.get(5) == Some(&"01") && cols.get(3).is_some_and(|f| f.ends_with("10000"));
            let what = if listening { "LISTEN unix" } else { "unix" };
            out.insert(inode, ("unix".to_string(), format!("{what} {path}")));
        }
    }
    out
}

fn tcp_state(hex: &str) -> &'static str {
    match hex {
        "01" => "ESTABLISHED",
        "02" => "SYN_SENT",
        "03" => "SYN_RECV",
        "04" => "FIN_WAIT1",
        "05" => "FIN_WAIT2",
        "06" => "TIME_WAIT",
        "07" => "CLOSE",
        "08" => "CLOSE_WAIT",
        "09" => "LAST_ACK",
        "0A" => "LISTEN",
        "0B" => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// `0100007F:B7D3` → `127.0.0.1:47059`; IPv6 as 4 host-order 32-bit words → `[::1]:port`.
fn decode_addr(s: &str) -> Option<String> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    match addr.len() {
        8 => {
            let n = u32::from_str_radix(addr, 16).ok()?;
            Some(format!("{}:{port}", Ipv4Addr::from(n.swap_bytes())))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.swap_bytes().to_be_bytes());
            }
            Some(format!("[{}]:{port}", Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

impl fmt::Display for Forensics {
    /// Indented lines to print under a STUCK line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.exists {
            return writeln!(f, "    process {} no longer exists", self.tgid);
        }
        let parent = match (self.ppid, &self.parent_comm) {
            (Some(p), Some(c)) => format!("{p} ({c})"),
            (Some(p), None) => p.to_string(),
            _ => "?".into(),
        };
        writeln!(
            f,
            "    state {}, parent {parent}, {} thread(s){}",
            self.state.as_deref().unwrap_or("?"),
            self.threads_count.map_or("?".into(), |t| t.to_string()),
            match self.sigkill_pending {
                Some(true) => ", SIGKILL pending",
                _ => "",
            }
        )?;
        for t in &self.threads {
            write!(f, "    thread {}: {}", t.tid, t.state)?;
            if let Some(w) = &t.wchan {
                write!(f, ", wchan {w}")?;
            }
            if !t.stack.is_empty() {
                write!(f, ", stack {}", t.stack.join(" <- "))?;
            }
            writeln!(f)?;
        }
        for s in &self.sockets {
            let held: Vec<String> = s.held_by.iter().map(u32::to_string).collect();
            writeln!(
                f,
                "    holds {} (socket {}, via thread {})",
                s.description,
                s.inode,
                held.join(", ")
            )?;
        }
        if let Some(m) = &self.memcg {
            let mib = |b: Option<u64>| b.map_or("?".into(), |b| format!("{} MiB", b >> 20));
            writeln!(
                f,
                "    memcg {}: usage {} of {}",
                m.path,
                mib(m.usage_bytes),
                mib(m.limit_bytes)
            )?;
        }
        for n in &self.notes {
            writeln!(f, "    note: {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/proc")
    }

    /// The incident's shape: a zombie leader reparented to init with an empty fd table, and a
    /// thread stuck in an unanswered FUSE read that still holds the listening socket.
    #[test]
    fn incident_shape_from_a_fixture_tree() {
        let f = collect(&fixture(), 4242, Some(&fixture().join("memcg")));
        assert!(f.exists);
        assert_eq!(f.state.as_deref(), Some("Z (zombie)"));
        assert_eq!(
            (f.ppid, f.parent_comm.as_deref()),
            (Some(1), Some("systemd"))
        );
        assert_eq!(f.threads_count, Some(2));
        assert_eq!(f.sigkill_pending, Some(true));
        assert_eq!(f.threads.len(), 2);
        let stuck = &f.threads[1];
        assert_eq!(stuck.tid, 4243);
        assert!(stuck.state.starts_with('D'));
        assert_eq!(stuck.wchan.as_deref(), Some("request_wait_answer"));
        assert_eq!(stuck.stack[0], "request_wait_answer");
        assert_eq!(f.sockets.len(), 1);
        assert_eq!(f.sockets[0].description, "LISTEN 127.0.0.1:47123");
        assert_eq!(f.sockets[0].held_by, [4243]);
        let m = f.memcg.as_ref().unwrap();
        assert_eq!(m.path, "/oomtrace-test");
        assert_eq!(
            (m.usage_bytes, m.limit_bytes),
            (Some(262_144), Some(67_108_864))
        );
        let text = f.to_string();
        assert!(
            text.contains("state Z (zombie), parent 1 (systemd), 2 thread(s), SIGKILL pending"),
            "{text}"
        );
        assert!(text.contains("holds LISTEN 127.0.0.1:47123"), "{text}");
    }

    #[test]
    fn a_vanished_process_is_a_note_not_a_panic() {
        let f = collect(&fixture(), 999_999, None);
        assert!(!f.exists);
        assert!(f.to_string().contains("no longer exists"));
    }

    #[test]
    fn addresses_decode() {
        assert_eq!(
            decode_addr("0100007F:B7D3").as_deref(),
            Some("127.0.0.1:47059")
        );
        assert_eq!(
            decode_addr("00000000000000000000000001000000:0050").as_deref(),
            Some("[::1]:80")
        );
        assert_eq!(decode_addr("zz:1"), None);
        assert_eq!(decode_addr("nonsense"), None);
    }

    #[test]
    fn this_process_is_readable() {
        // SAFETY: no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        let f = collect(Path::new("/proc"), pid, None);
        assert!(f.exists);
        assert!(!f.threads.is_empty());
        assert!(f.threads.iter().any(|t| t.tid == pid));
    }
}
