//! Kernel addresses to symbol names, from `/proc/kallsyms`: the allocation stacks of OOM kills
//! ([`oomtrace_common::AllocStack`]) are raw return addresses.
//!
//! The kernel decides whether `/proc/kallsyms` shows addresses when the file is *opened*
//! (`kallsyms_show_value(file->f_cred)`: `CAP_SYSLOG`, or `kptr_restrict=0` with perf allowed);
//! `watch` drops that capability after attaching, so the file is opened before, and read by a
//! thread of its own (see [`Kallsyms`]).

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufRead, BufReader, Seek as _},
    sync::mpsc,
};

/// Names resolved so far are kept up to this many (then forgotten at once, like the memcg
/// paths): a bound on memory whatever the kernel's stacks.
const MAX_RESOLVED: usize = 1 << 14;
/// An address further than this past the nearest symbol is not that symbol's (the end of a
/// section, a gap): left unresolved rather than named wrongly.
const MAX_OFFSET: u64 = 1 << 20;

/// `/proc/kallsyms`, opened while oomtrace may still read it, read by a thread of its own
/// whenever a stack brings addresses not named yet.
///
/// Reading the file costs the kernel ~50 ms on this project's host (it formats ~120 000
/// lines) and seconds under emulation: done on the event loop, it held every other victim's
/// events that long (a stuck victim was flagged 2.9 s late in the 6.12 guest), so a thread
/// reads it. Kept as a table of its text symbols it would cost 4.9 MB for as long as oomtrace
/// runs, a third of its memory, for the few dozen addresses OOM kills' stacks bring (they
/// repeat): the thread reads the file through once per batch of new addresses instead and keeps
/// only their names. The first kill waits for its batch at most [`LOAD_WAIT`], later ones
/// [`LATER_WAIT`]; an answer that comes later names the frames of the next stack.
pub(crate) struct Kallsyms {
    /// Opened, not yet handed to the reading thread.
    file: Option<File>,
    requests: Option<mpsc::Sender<Vec<u64>>>,
    answers: Option<mpsc::Receiver<Answer>>,
    /// Addresses asked of the thread and not answered yet.
    asked: usize,
    resolved: HashMap<u64, Option<String>>,
    /// Why the file gives no names (not readable, or addresses hidden), said once.
    pub(crate) problem: Option<String>,
    /// Reads of the file made (for tests and the soak).
    pub(crate) reads: u64,
}

/// The names of the addresses of one request, or why there are none.
type Answer = Result<Vec<(u64, Option<String>)>, String>;

/// How long the first kill waits for the names of its stack's addresses (a read takes ~50 ms
/// here, seconds under emulation).
const LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a later kill waits for the names of addresses not seen before: every other
/// victim's events wait meanwhile, so not for a read under emulation (its frames are named
/// from the next stack on).
const LATER_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

impl Kallsyms {
    /// Opens `/proc/kallsyms` (call before privileges are dropped: the kernel decides at open
    /// whether it shows addresses); [`Kallsyms::start`] starts the thread that reads it.
    pub(crate) fn open() -> Kallsyms {
        Self::from_file(File::open("/proc/kallsyms"))
    }

    fn from_file(file: io::Result<File>) -> Kallsyms {
        let mut k = Kallsyms {
            file: None,
            requests: None,
            answers: None,
            asked: 0,
            resolved: HashMap::new(),
            problem: None,
            reads: 0,
        };
        match file {
            Ok(f) => k.file = Some(f),
            Err(e) => k.problem = Some(format!("/proc/kallsyms cannot be opened: {e}")),
        }
        k
    }

    /// Starts the thread that reads the file, at each request (it reads nothing before).
    pub(crate) fn start(&mut self) {
        let Some(mut f) = self.file.take() else {
            return;
        };
        let (tx, requests) = mpsc::channel::<Vec<u64>>();
        let (answer, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("kallsyms".into())
            .spawn(move || {
                // It needs no capability: the file is open (capabilities are per thread).
                let _ = crate::kernel::privs::drop_all_of_this_thread();
                for addrs in requests {
                    let named = f
                        .rewind()
                        .map_err(|e| e.to_string())
                        .and_then(|()| names_of(BufReader::with_capacity(1 << 16, &f), &addrs));
                    if answer.send(named).is_err() {
                        break;
                    }
                }
            });
        match spawned {
            Ok(_) => {
                self.requests = Some(tx);
                self.answers = Some(rx);
            }
            Err(e) => self.problem = Some(format!("cannot start reading /proc/kallsyms: {e}")),
        }
    }

    /// Takes an answer of the thread into the names resolved.
    fn take(&mut self, answer: Answer) {
        match answer {
            Ok(named) => {
                self.asked = self.asked.saturating_sub(named.len());
                if self.resolved.len() + named.len() > MAX_RESOLVED {
                    self.resolved.clear();
                }
                self.resolved.extend(named);
            }
            Err(e) => {
                self.asked = 0;
                self.problem = Some(e);
                self.requests = None;
                self.answers = None;
            }
        }
    }

    /// The name of each address (`symbol+0xoff`, `[module]` appended for a module's), `None`
    /// for an address no symbol covers or when the file shows no addresses.
    pub(crate) fn resolve(&mut self, addrs: &[u64]) -> Vec<Option<String>> {
        self.start();
        // Answers that came after their kill stopped waiting.
        while let Some(a) = self.answers.as_ref().and_then(|rx| rx.try_recv().ok()) {
            self.take(a);
        }
        let mut new: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| *a != 0 && !self.resolved.contains_key(a))
            .collect();
        new.sort_unstable();
        new.dedup();
        if !new.is_empty()
            && self.asked == 0
            && let Some(tx) = &self.requests
            && tx.send(new.clone()).is_ok()
        {
            self.reads += 1;
            self.asked = new.len();
            let wait = if self.reads == 1 {
                LOAD_WAIT
            } else {
                LATER_WAIT
            };
            let deadline = std::time::Instant::now() + wait;
            while self.asked > 0
                && let Some(rx) = &self.answers
            {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(a) => self.take(a),
                    // Still reading: this kill's new frames stay unnamed; the next stack's
                    // lookup takes the answer.
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        self.take(Err("reading /proc/kallsyms stopped".into()));
                    }
                }
            }
        }
        addrs
            .iter()
            .map(|a| self.resolved.get(a).cloned().flatten())
            .collect()
    }
}

/// Reads kallsyms text once and names each of `addrs` (sorted, distinct, non-zero) by the
/// nearest text symbol at or below it, within [`MAX_OFFSET`]: `name+0xoff`, `[module]` after.
/// Keeps nothing but the best candidate of each address. An error if the file shows no
/// addresses (all zero).
fn names_of(mut r: impl BufRead, addrs: &[u64]) -> Answer {
    // The best symbol so far below each address: (start, name with its module).
    let mut best: Vec<Option<(u64, String)>> = vec![None; addrs.len()];
    let mut buf = String::new();
    let mut shown = false;
    loop {
        buf.clear();
        if r.read_line(&mut buf).map_err(|e| e.to_string())? == 0 {
            break;
        }
        let mut f = buf.split_ascii_whitespace();
        let (Some(a), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Ok(start) = u64::from_str_radix(a, 16) else {
            continue;
        };
        shown |= start != 0;
        // Text symbols only (t, T, and weak ones): return addresses point into code.
        if start == 0 || !matches!(kind, "t" | "T" | "w" | "W") {
            continue;
        }
        // The addresses this symbol may name: at or above it, within reach.
        let from = addrs.partition_point(|x| *x < start);
        let to = addrs.partition_point(|x| *x < start.saturating_add(MAX_OFFSET));
        for b in &mut best[from..to] {
            if b.as_ref().is_none_or(|(s, _)| *s < start) {
                let module = f.next().map(|m| format!(" {m}")).unwrap_or_default();
                *b = Some((start, format!("{name}{module}")));
            }
        }
    }
    if !shown {
        return Err(
            "/proc/kallsyms shows no addresses to oomtrace (kernel.kptr_restrict, no \
                    CAP_SYSLOG): stacks keep raw addresses only"
                .into(),
        );
    }
    Ok(addrs
        .iter()
        .zip(best)
        .map(|(a, b)| {
            let name = b.map(|(start, name)| match name.split_once(' ') {
                Some((name, module)) => format!("{name}+{:#x} {module}", a - start),
                None => format!("{name}+{:#x}", a - start),
            });
            (*a, name)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffff81000000 T _stext
ffffffff81234000 T handle_mm_fault
ffffffff81234800 t __handle_mm_fault
ffffffff81300000 D some_data
ffffffff81400000 T out_of_memory
ffffffffc0001000 t xfs_vm_fault\t[xfs]
ffffffff81100000 T out_of_order_line
";

    fn name(a: u64) -> Option<String> {
        let got = names_of(KALLSYMS.as_bytes(), &[a]).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, a);
        got[0].1.clone()
    }

    #[test]
    fn names_each_address_by_the_nearest_text_symbol_below_it() {
        assert_eq!(
            name(0xffff_ffff_8123_4012).as_deref(),
            Some("handle_mm_fault+0x12")
        );
        assert_eq!(
            name(0xffff_ffff_8123_4812).as_deref(),
            Some("__handle_mm_fault+0x12")
        );
        // A data symbol is skipped: still inside __handle_mm_fault.
        assert_eq!(
            name(0xffff_ffff_8130_0010).as_deref(),
            Some("__handle_mm_fault+0xcb810")
        );
        assert_eq!(
            name(0xffff_ffff_c000_1004).as_deref(),
            Some("xfs_vm_fault+0x4 [xfs]")
        );
        // Lines out of address order are taken all the same.
        assert_eq!(
            name(0xffff_ffff_8110_0001).as_deref(),
            Some("out_of_order_line+0x1")
        );
        assert_eq!(name(0xffff_ffff_8000_0000), None, "below every symbol");
        assert_eq!(name(0xffff_ffff_9000_0000), None, "too far past one");
        // Several at once, in one read.
        let many = [
            0xffff_ffff_8100_0001,
            0xffff_ffff_8123_4012,
            0xffff_ffff_8140_0040,
        ];
        let got: Vec<_> = names_of(KALLSYMS.as_bytes(), &many)
            .unwrap()
            .into_iter()
            .map(|(_, n)| n.unwrap())
            .collect();
        assert_eq!(
            got,
            ["_stext+0x1", "handle_mm_fault+0x12", "out_of_memory+0x40"]
        );
    }

    #[test]
    fn a_file_without_addresses_names_nothing_and_says_why() {
        let hidden = "0000000000000000 T _stext\n0000000000000000 T handle_mm_fault\n";
        assert!(names_of(hidden.as_bytes(), &[1]).is_err());
        let path = std::env::temp_dir().join(format!("oomtrace-kallsyms0-{}", std::process::id()));
        std::fs::write(&path, hidden).unwrap();
        let mut k = Kallsyms::from_file(File::open(&path));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(k.resolve(&[0xffff_ffff_8123_4012]), [None]);
        assert!(
            k.problem
                .take()
                .unwrap_or_default()
                .contains("shows no addresses")
        );
        // Said once; not read again.
        assert_eq!(k.resolve(&[0xffff_ffff_8123_4013]), [None]);
        assert!(k.problem.is_none());
        assert_eq!(k.reads, 1);
    }

    /// The thread reads the file once per batch of addresses not named yet, and keeps only
    /// their names: a stack whose addresses were all named reads nothing.
    #[test]
    fn resolves_by_reading_the_file_once_per_batch_of_new_addresses() {
        let path = std::env::temp_dir().join(format!("oomtrace-kallsyms-{}", std::process::id()));
        std::fs::write(&path, KALLSYMS).unwrap();
        let mut k = Kallsyms::from_file(File::open(&path));
        std::fs::remove_file(&path).unwrap();
        let got = k.resolve(&[0xffff_ffff_8140_0040, 0, 0xffff_ffff_c000_1004]);
        assert_eq!(
            got,
            [
                Some("out_of_memory+0x40".to_string()),
                None,
                Some("xfs_vm_fault+0x4 [xfs]".to_string())
            ]
        );
        assert!(k.problem.is_none());
        assert_eq!(k.reads, 1);
        assert_eq!(k.resolve(&[0xffff_ffff_c000_1004, 0]).len(), 2);
        assert_eq!(k.reads, 1, "every address was named already");
        assert_eq!(
            k.resolve(&[0xffff_ffff_8123_4012, 0xffff_ffff_8140_0040]),
            [
                Some("handle_mm_fault+0x12".to_string()),
                Some("out_of_memory+0x40".to_string())
            ]
        );
        assert_eq!(k.reads, 2, "the file is read again from its start");
        assert_eq!(k.resolved.len(), 3);
    }

    /// The running kernel's own file, where it shows addresses (root): a text symbol's
    /// address and one inside it name that symbol. Prints what a read costs.
    #[test]
    fn names_addresses_from_this_kernels_kallsyms() {
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let Some(addr) = text.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let a = u64::from_str_radix(f.next()?, 16)
                .ok()
                .filter(|a| *a != 0)?;
            (f.next()? == "T" && f.next()? == "out_of_memory").then_some(a)
        }) else {
            eprintln!("/proc/kallsyms shows no addresses here (not root): nothing to check");
            return;
        };
        let started = std::time::Instant::now();
        let mut k = Kallsyms::open();
        let got = k.resolve(&[addr, addr + 4]);
        eprintln!(
            "reading /proc/kallsyms for two addresses: {:?}",
            started.elapsed()
        );
        assert_eq!(
            got,
            [
                Some("out_of_memory+0x0".to_string()),
                Some("out_of_memory+0x4".to_string())
            ]
        );
    }
}
