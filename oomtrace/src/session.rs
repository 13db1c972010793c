//! One watching (or replaying) session: every event is fed to the tracker, and the findings
//! the filter admits are handed back to the driver, which gives them to its sinks (the printer
//! shows them, with /proc forensics for victims flagged while live).

use std::{collections::HashMap, path::PathBuf};

pub use crate::lifecycle::Filter;
use crate::{
    event::Event,
    host::forensics,
    kernel::cgroups::{Memcg, MemcgPaths},
    lifecycle::{Finding, Summary, Tracker},
    render::events::Renderer,
};

/// Where forensics come from: the live system, or nowhere (replays).
pub struct Live {
    pub(crate) proc_root: PathBuf,
    pub(crate) memcg_root: Option<PathBuf>,
    /// Socket inodes each victim (by tgid) held when it was killed: a thread stuck inside
    /// exit has no fd table left to find them through.
    pub(crate) sockets_at_kill: HashMap<u32, Vec<u64>>,
    /// Every memcg's OOM counters when watching began (to reconcile kills at the end).
    pub(crate) oom_baseline: Vec<crate::host::scan::MemcgOom>,
}

/// Victims whose sockets are remembered at most (the oldest are dropped past this).
const MAX_SOCKET_RECORDS: usize = 4096;

impl Live {
    pub fn new(proc_root: PathBuf, memcg_root: Option<PathBuf>) -> Live {
        Live {
            proc_root,
            memcg_root,
            sockets_at_kill: HashMap::new(),
            oom_baseline: Vec::new(),
        }
    }

    /// Records the sockets `tgid` holds now (at its kill), read through /proc.
    pub(crate) fn record_sockets(&mut self, tgid: u32) {
        let inodes = forensics::socket_inodes(&self.proc_root, tgid);
        self.add_sockets(tgid, &inodes);
    }

    /// Records the sockets of `tgid` (its leader started at `start_ns`) from the kernel's
    /// record of its fd table at the SIGKILL; /proc is read instead, or too, when there is no
    /// record of this process or it does not list every socket.
    pub(crate) fn kill_record(
        &mut self,
        tgid: u32,
        start_ns: u64,
        record: Option<&oomtrace_common::KillSockets>,
    ) {
        match record {
            Some(r) if r.start_ns == start_ns => {
                let listed = (r.count as usize).min(oomtrace_common::KILL_SOCKET_INODES);
                self.add_sockets(tgid, &r.inodes[..listed]);
                if !r.complete() {
                    self.record_sockets(tgid);
                }
            }
            _ => self.record_sockets(tgid),
        }
    }

    /// Records socket inodes `tgid` held at its kill (with those recorded before).
    pub(crate) fn add_sockets(&mut self, tgid: u32, inodes: &[u64]) {
        if inodes.is_empty() {
            return;
        }
        if self.sockets_at_kill.len() >= MAX_SOCKET_RECORDS
            && !self.sockets_at_kill.contains_key(&tgid)
        {
            self.sockets_at_kill.clear();
        }
        let held = self.sockets_at_kill.entry(tgid).or_default();
        held.extend_from_slice(inodes);
        held.sort_unstable();
        held.dedup();
    }

    /// What /proc shows of process `tgid` started at `start_ns` (0: unknown) now, with the
    /// sockets recorded at its kill. If the pid names a later process (the victim is gone and
    /// the pid reused), nothing of that process is shown as the victim's.
    pub fn forensics(&self, tgid: u32, start_ns: u64) -> forensics::Forensics {
        if start_ns != 0
            && let Some(now) = crate::host::procfs::start_ns_of(&self.proc_root, tgid)
            && !crate::host::procfs::same_start(start_ns, now)
        {
            return forensics::Forensics {
                tgid,
                notes: vec![format!(
                    "pid {tgid} now names another process (started later): the victim is gone \
                     and its pid reused"
                )],
                ..forensics::Forensics::default()
            };
        }
        let recorded = self
            .sockets_at_kill
            .get(&tgid)
            .map_or(&[][..], Vec::as_slice);
        forensics::collect(&self.proc_root, tgid, self.memcg_root.as_deref(), recorded)
    }
}

/// What a driver (`live`, `report`) keeps of a watch: the tracker, the names it renders with,
/// /proc while live, and which victims the filter admits. It writes nothing: a driver hands
/// each event and the findings the session admits to its sinks (sink.rs), the printer of
/// the chosen format among them.
pub(crate) struct Session {
    renderer: Renderer,
    tracker: Tracker,
    /// Show every event, not only findings.
    events: bool,
    live: Option<Live>,
    /// Victims that matched the filter: their events are shown too.
    of_interest: std::collections::HashSet<u32>,
    lost_reported: u64,
}

/// A memcg's OOM kills while watched: (path, the kernel's count, oomtrace's).
pub(crate) type Reconciled = (String, u64, u64);

impl Session {
    pub(crate) fn new(renderer: Renderer, tracker: Tracker, live: Option<Live>) -> Self {
        Session {
            renderer,
            tracker,
            events: true,
            live,
            of_interest: std::collections::HashSet::new(),
            lost_reported: 0,
        }
    }

    /// Whether every event is shown, not only findings.
    pub(crate) fn show_events(&mut self, on: bool) {
        self.events = on;
    }

    pub(crate) fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    pub(crate) fn tracker_mut(&mut self) -> &mut Tracker {
        &mut self.tracker
    }

    /// The names (memcgs, symbols) and the clock events are rendered with.
    pub(crate) fn renderer(&mut self) -> &mut Renderer {
        &mut self.renderer
    }

    /// The memcgs' names.
    pub(crate) fn memcgs(&mut self) -> &mut MemcgPaths {
        &mut self.renderer.memcgs
    }

    /// /proc and the memcg root (`None` in a replay).
    pub(crate) fn live(&self) -> Option<&Live> {
        self.live.as_ref()
    }

    pub(crate) fn live_mut(&mut self) -> Option<&mut Live> {
        self.live.as_mut()
    }

    /// A memcg's path, for the renderer and the tracker.
    pub(crate) fn name_memcg(&mut self, id: u64, path: &str) {
        self.renderer.memcgs.insert(id, path.to_string());
        self.tracker.memcg_path(id, path);
    }

    /// A kernel address's name, for the renderer and the tracker.
    pub(crate) fn name_symbol(&mut self, addr: u64, name: &str) {
        self.renderer.symbols.insert(addr, name.to_string());
        self.tracker.symbol(addr, name);
    }

    /// The wall time a finding found at `at_ns` is stamped with, and its memcg as it is now (a
    /// finding says whether its memcg still exists as it is handed out).
    pub(crate) fn stamp(&mut self, f: &Finding, at_ns: u64) -> (Memcg, i128) {
        let wall = self.renderer.clock.wall_ns(f.at_ns().unwrap_or(at_ns));
        let memcg = f
            .memcg_id()
            .map_or(Memcg::Unknown, |id| self.renderer.memcgs.current(id));
        (memcg, wall)
    }

    fn shows_event(&mut self, ev: &Event) -> bool {
        let filter = self.tracker.filter();
        if !filter.active() {
            return true;
        }
        let pid = ev.subject().process_or_thread();
        if self.of_interest.contains(&pid) {
            return true;
        }
        let memcg = ev.memcg().and_then(|id| self.renderer.memcgs.path(id));
        let filter = self.tracker.filter();
        let memcg_ok =
            filter.memcg.is_none() || (ev.memcg().is_some() && filter.memcg_ok(memcg.as_deref()));
        memcg_ok && filter.pid_ok(pid)
    }

    fn shows_finding(&mut self, f: &Finding) -> bool {
        if !self.tracker.filter().active() {
            return true;
        }
        let ok = self.tracker.admits(f);
        if ok {
            self.of_interest.insert(f.tgid());
        }
        ok
    }

    /// Tracks an event; `found` (empty) gets the findings it produced that the filter admits.
    /// Returns whether the output shows the event.
    pub(crate) fn event(&mut self, ev: &Event, found: &mut Vec<Finding>) -> bool {
        let shown = self.events && self.shows_event(ev);
        self.tracker.on_event(ev, found);
        self.admit(found);
        shown
    }

    /// Time passes: flags victims past their timeout into `found` (empty).
    pub(crate) fn tick(&mut self, now_ns: u64, found: &mut Vec<Finding>) {
        self.tracker.tick(now_ns, found);
        self.admit(found);
    }

    /// The kernel's count of events lost to a full ring buffer: how many are new, if any.
    pub(crate) fn lost(&mut self, total: u64) -> Option<u64> {
        if total <= self.lost_reported {
            return None;
        }
        let new = total - self.lost_reported;
        self.lost_reported = total;
        self.tracker.on_lost(total);
        Some(new)
    }

    /// Ends the session: judges what is left at `now_ns` into `found` (empty); the summary.
    pub(crate) fn finish(&mut self, now_ns: u64, found: &mut Vec<Finding>) -> Summary {
        self.tracker.finish(now_ns, found);
        self.admit(found);
        self.tracker.summary()
    }

    /// Per memcg, the OOM kills the kernel counted while we watched (`oom_kill`: on v2 kills in
    /// the memcg and below it, on v1 in the memcg itself) against ours; a line each, saying when
    /// they differ. Nothing in a replay.
    pub(crate) fn reconcile(&mut self) -> Vec<Reconciled> {
        let mut out = Vec::new();
        let Some(live) = &self.live else {
            return out;
        };
        let Some(root) = &live.memcg_root else {
            return out;
        };
        let after = crate::host::scan::memcg_oom_states(root);
        let ours: Vec<(String, u64)> = self
            .tracker
            .kills_by_memcg()
            .iter()
            .filter_map(|(id, n)| Some((self.renderer.memcgs.path(*id)?, *n)))
            .collect();
        let under = |p: &str, of: &str| {
            p == of || of == "/" || p.starts_with(&format!("{}/", of.trim_end_matches('/')))
        };
        for a in &after {
            if a.path == "/" || !self.tracker.filter().memcg_ok(Some(&a.path)) {
                continue;
            }
            let before = live.oom_baseline.iter().find(|b| b.path == a.path);
            let kernel = match (a.oom_kill, before.and_then(|b| b.oom_kill)) {
                (Some(now), Some(then)) => now.saturating_sub(then),
                // Created while we watched: everything it counted is ours to match.
                (Some(now), None) if before.is_none() => now,
                _ => continue,
            };
            let mine: u64 = ours
                .iter()
                .filter(|(p, _)| {
                    if a.counts_descendants {
                        under(p, &a.path)
                    } else {
                        *p == a.path
                    }
                })
                .map(|(_, n)| n)
                .sum::<u64>()
                // Kills in memcgs removed and forgotten since, placed at the nearest ancestor
                // not forgotten: v2's counter of that ancestor and of those above it has them.
                + if a.counts_descendants {
                    self.tracker
                        .kills_below()
                        .iter()
                        .filter(|(p, _)| under(p, &a.path))
                        .map(|(_, n)| n)
                        .sum()
                } else {
                    0
                };
            if kernel == 0 && mine == 0 {
                continue;
            }
            out.push((a.path.clone(), kernel, mine));
        }
        out
    }

    /// Keeps in `found` the findings the filter admits, with what /proc shows of a hung
    /// memcg's tasks (live).
    fn admit(&mut self, found: &mut Vec<Finding>) {
        found.retain_mut(|f| {
            self.add_tasks(f);
            self.shows_finding(f)
        });
    }

    /// Live: the tasks of a memcg hung with the OOM killer disabled, as /proc shows them now.
    fn add_tasks(&mut self, f: &mut Finding) {
        let Some((memcg_id, tasks, victims)) = f.memcg_tasks() else {
            return;
        };
        let Some(live) = &self.live else {
            return;
        };
        let (Some(root), Some(path)) = (&live.memcg_root, self.renderer.memcgs.path(memcg_id))
        else {
            return;
        };
        *tasks = crate::host::memcg_watch::memcg_tasks(root, &path, &live.proc_root, 64);
        for t in tasks.iter_mut() {
            if victims.iter().any(|v| v.tgid == t.pid) {
                t.not_eligible =
                    Some("already an OOM victim the kernel skips (MMF_OOM_SKIP on its mm)".into());
            }
        }
    }
}

/// A session as the unit tests drive one: no /proc, a fixed clock, `memcgs` as the only names.
#[cfg(test)]
impl Session {
    pub(crate) fn in_memory(memcgs: MemcgPaths) -> Self {
        let renderer = Renderer {
            symbols: Default::default(),
            gfp: Default::default(),
            clock: crate::clock::Clock {
                realtime_offset_ns: 1_764_180_000_000_000_000,
            },
            memcgs,
            page_kb: 4,
        };
        Session::new(
            renderer,
            Tracker::new(crate::lifecycle::TrackerConfig::default()),
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        event::Payload,
        printer::{Format, print_all},
    };

    /// After a missed exit and pid reuse, /proc/PID is another process: its state and sockets
    /// must not be shown as the victim's.
    #[test]
    fn forensics_of_a_reused_pid_name_nothing_of_the_new_process() {
        let live = Live::new(Path::new("/proc").into(), None);
        let me = std::process::id();
        let mine = crate::host::procfs::start_ns_of(Path::new("/proc"), me).unwrap();
        let f = live.forensics(me, mine);
        assert!(f.exists && !f.threads.is_empty());
        let f = live.forensics(me, mine + 3_600_000_000_000);
        assert!(!f.exists, "{f:?}");
        assert!(f.threads.is_empty() && f.sockets.is_empty());
        assert!(f.to_string().contains("reused"), "{f}");
        // Unknown start time: cannot tell, so /proc is shown.
        assert!(live.forensics(me, 0).exists);
    }

    /// The kernel's record of the fd table at the SIGKILL is used as it is when it lists every
    /// socket; /proc is read only without a record of this very process, or too when the
    /// record was cut (a table larger than the kernel reads).
    #[test]
    fn sockets_at_a_kill_come_from_the_kernels_record_when_it_is_whole() {
        use oomtrace_common::{KILL_SOCKET_INODES, KillSockets, kill_sockets};
        let dir = crate::scratch::ScratchDir::new("kill-sockets");
        let fd = dir.path().join("42/task/42/fd");
        std::fs::create_dir_all(&fd).unwrap();
        std::os::unix::fs::symlink("socket:[900]", fd.join("3")).unwrap();
        let record = |fds_read, count: u32, flags| {
            let mut r = KillSockets {
                start_ns: 7,
                max_fds: 64,
                fds_read,
                count,
                flags,
                inodes: [0; KILL_SOCKET_INODES],
            };
            for i in 0..(count as usize).min(KILL_SOCKET_INODES) {
                r.inodes[i] = 100 + i as u64;
            }
            r
        };
        let held = |rec: Option<&KillSockets>, start| {
            let mut live = Live::new(dir.path().into(), None);
            live.kill_record(42, start, rec);
            live.sockets_at_kill.get(&42).cloned().unwrap_or_default()
        };
        // Whole: the kernel's two sockets, /proc not read (its 900 is not there).
        assert_eq!(held(Some(&record(64, 2, 0)), 7), [100, 101]);
        // No table (already inside exit_files): nothing, and /proc not read either.
        assert!(held(Some(&record(0, 0, kill_sockets::NO_TABLE)), 7).is_empty());
        // Another process with that pid, or no record: /proc.
        assert_eq!(held(Some(&record(64, 2, 0)), 8), [900]);
        assert_eq!(held(None, 7), [900]);
        // Cut: slots left unread, sockets beyond those listed, a failed read: both.
        assert_eq!(held(Some(&record(32, 1, 0)), 7), [100, 900]);
        let many = held(Some(&record(64, KILL_SOCKET_INODES as u32 + 1, 0)), 7);
        assert_eq!(many.len(), KILL_SOCKET_INODES + 1);
        assert!(many.contains(&900));
        assert_eq!(
            held(Some(&record(64, 1, kill_sockets::READ_FAILED)), 7),
            [100, 900]
        );
    }

    /// A kill whose memcg was removed says so: with the last path seen (and the workload it
    /// names), or with only the memcg's id when it was removed before it was ever named.
    #[test]
    fn findings_say_whether_their_memcg_was_removed() {
        use oomtrace_common::{MarkVictim, victim_fields};

        use crate::{event::comm_bytes, kernel::cgroups::MemcgPaths};
        let ctr = "/kubepods/burstable/pod0e5a4c66-1111-4000-8000-00000000cafe/\
                   5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";
        for (format, seen) in [
            (Format::Json, true),
            (Format::Json, false),
            (Format::Text, true),
            (Format::Text, false),
        ] {
            let mut memcgs = MemcgPaths::new(None);
            memcgs.forget(7, seen.then(|| ctr.to_string()));
            let mut session = Session::in_memory(memcgs);
            let mut m: MarkVictim = unsafe { std::mem::zeroed() };
            (m.pid, m.tgid, m.start_ns, m.memcg_id) = (42, 42, 5, 7);
            m.comm = comm_bytes("tail");
            m.fields = victim_fields::TASK | victim_fields::COMM;
            let mark = Event {
                header: oomtrace_common::Header {
                    kind: 0,
                    cpu: 0,
                    ts_ns: 1_000_000,
                    pid: 42,
                    tgid: 42,
                    comm: comm_bytes("tail"),
                },
                payload: Payload::MarkVictim(m),
            };
            let out = print_all(&mut session, format, &[mark], 20_000_000_000);
            // Not a match: a new format is one printer and one variant (printer.rs), and fails
            // here as text until it has assertions of its own.
            if matches!(format, Format::Json) {
                let f: serde_json::Value = out
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .find(|v: &serde_json::Value| v["type"] == "finding")
                    .unwrap_or_else(|| panic!("no finding in {out}"));
                assert_eq!(f["memcg_removed"], true, "{f}");
                assert_eq!(f["victim"]["memcg_id"], 7, "{f}");
                if seen {
                    assert_eq!(f["memcg_path"], ctr, "{f}");
                    assert_eq!(f["workload"]["kind"], "pod", "{f}");
                    assert_eq!(f["workload"]["container_id"], "5eed5eed5eed", "{f}");
                } else {
                    assert_eq!(f["memcg_path"], serde_json::Value::Null, "{f}");
                    assert_eq!(f["workload"], serde_json::Value::Null, "{f}");
                }
            } else if seen {
                assert!(out.contains(&format!("[memcg {ctr}, removed; ")), "{out}")
            } else {
                assert!(
                    out.contains("[memcg id 7, removed before it was named]"),
                    "{out}"
                )
            }
        }
    }

    /// A victim names itself, and someone names a memcg, with a newline and terminal escapes:
    /// the text output shows them escaped; no forged line, no escape reaches the terminal.
    #[test]
    fn names_cannot_forge_lines_or_drive_the_terminal() {
        use oomtrace_common::{Header, MarkVictim, victim_fields};

        use crate::{
            event::{comm_bytes, sample_sigkill},
            kernel::cgroups::MemcgPaths,
        };
        let evil_comm = "x\nDEAD\x1b[2J";
        let mut memcgs = MemcgPaths::new(None);
        memcgs.insert(7, "/evil\n12:00:00 KILLED\x1b]0;pwned\x07".into());
        let mut session = Session::in_memory(memcgs);
        session
            .tracker_mut()
            .memcg_path(7, "/evil\n12:00:00 KILLED\x1b]0;pwned\x07");
        let header = |ts_ns| Header {
            kind: 0,
            cpu: 0,
            ts_ns,
            pid: 42,
            tgid: 42,
            comm: comm_bytes(evil_comm),
        };
        let kill = Event {
            header: header(1_000_000),
            payload: Payload::KernelSigkill(sample_sigkill(42, evil_comm, 5)),
        };
        let mut m: MarkVictim = unsafe { std::mem::zeroed() };
        (m.pid, m.tgid, m.start_ns, m.memcg_id) = (42, 42, 5, 7);
        m.comm = comm_bytes(evil_comm);
        m.fields = victim_fields::TASK | victim_fields::COMM;
        let mark = Event {
            header: header(1_000_100),
            payload: Payload::MarkVictim(m),
        };
        let out = print_all(&mut session, Format::Text, &[kill, mark], 20_000_000_000);
        assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out}");
        assert!(out.contains("x\\nDEAD\\u{1b}[2J"), "{out}");
        for line in out.lines() {
            assert!(
                !line.starts_with("DEAD") && !line.starts_with("12:00:00 KILLED"),
                "forged line {line:?} in:\n{out}"
            );
        }
    }

    /// A user's SIGKILL that does not stick: the sender's and the target's comm, both chosen
    /// by processes, are escaped in the KILL STUCK line; a kill that works prints nothing.
    #[test]
    fn a_kill_stuck_line_escapes_sender_and_target_names_and_a_working_kill_is_quiet() {
        use oomtrace_common::{Header, KernelSigkill, sender_state, si_code};

        use crate::{
            event::{comm_bytes, sample_sigkill},
            kernel::cgroups::MemcgPaths,
        };
        let mut session = Session::in_memory(MemcgPaths::new(None));
        let kill = |ts_ns, target: u32, sender_comm: &str, target_comm: &str| Event {
            header: Header {
                kind: 0,
                cpu: 0,
                ts_ns,
                pid: 300,
                tgid: 300,
                comm: comm_bytes(sender_comm),
            },
            payload: Payload::KernelSigkill(KernelSigkill {
                sender_flags: sender_state::KNOWN | sender_state::CODE,
                si_code: si_code::SI_USER,
                ..sample_sigkill(target, target_comm, 5)
            }),
        };
        let first = kill(1_000_000, 42, "shim\nDEAD\x1b[2J", "t\x1b]0;x\x07");
        let second = kill(2_000_000, 43, "kill", "quiet");
        let gone = Event {
            header: Header {
                kind: 0,
                cpu: oomtrace_common::USERSPACE_CPU,
                ts_ns: 3_000_000,
                pid: 43,
                tgid: 43,
                comm: comm_bytes("quiet"),
            },
            payload: Payload::GroupExited(oomtrace_common::GroupExited {
                pid: 43,
                how: oomtrace_common::exit_seen::PIDFD,
                start_ns: 5,
                tid: 0,
                _pad: 0,
            }),
        };
        let out = print_all(
            &mut session,
            Format::Text,
            &[first, second, gone],
            20_000_000_000,
        );
        assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out}");
        let stuck = out
            .lines()
            .find(|l| l.contains("KILL STUCK pid 42"))
            .unwrap_or_else(|| panic!("no KILL STUCK line:\n{out}"));
        assert!(stuck.contains("(t\\u{1b}]0;x\\u{7})"), "{stuck}");
        assert!(
            stuck.contains("user process pid 300 (shim\\nDEAD\\u{1b}[2J"),
            "{stuck}"
        );
        assert!(
            !out.contains("pid 43 "),
            "a kill that works is quiet:\n{out}"
        );
        for line in out.lines() {
            assert!(!line.starts_with("DEAD"), "forged line {line:?} in:\n{out}");
        }
    }
}
