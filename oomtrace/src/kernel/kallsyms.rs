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
    io::{self, BufRead, BufReader},
};

/// Symbols resolved so far are kept up to this many (then forgotten at once, like the memcg
/// paths): a bound on memory whatever the kernel's stacks.
const MAX_RESOLVED: usize = 1 << 14;
/// An address further than this past the nearest symbol is not that symbol's (the end of a
/// section, a gap): left unresolved rather than named wrongly.
const MAX_OFFSET: u64 = 1 << 20;

/// `/proc/kallsyms`, opened while oomtrace may still read it, read by a thread of its own.
///
/// Reading the file costs the kernel ~50 ms on this project's host (it formats ~120 000
/// lines) and seconds under emulation: done at a kill, on the event loop, it held every other
/// victim's events that long (a stuck victim was flagged 2.9 s late in the 6.12 guest). The
/// thread reads it once, once watching has started, into a table of its text symbols (about
/// 5 MB); a kill looks its frames up there, waiting (at most [`LOAD_WAIT`]) only if it comes
/// before the table is read.
pub(crate) struct Kallsyms {
    /// Opened, not yet handed to the reading thread.
    file: Option<File>,
    table: Option<std::sync::Arc<Table>>,
    loading: Option<std::sync::mpsc::Receiver<Result<Table, String>>>,
    resolved: HashMap<u64, Option<String>>,
    /// Why the file gives no names (not readable, or addresses hidden), said once.
    pub(crate) problem: Option<String>,
}

/// Text symbols by address: `starts` ascending; `names_at[i]` where the name of the symbol at
/// `starts[i]` begins in `names` (`name`, or `name\t[module]`, each ended by a newline): 12
/// bytes a symbol beside its name (121k symbols on this project's host).
struct Table {
    starts: Vec<u64>,
    names_at: Vec<u32>,
    names: String,
}

/// How long a kill waits for the table still being read.
const LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Kallsyms {
    /// Opens `/proc/kallsyms` (call before privileges are dropped: the kernel decides at open
    /// whether it shows addresses); [`Kallsyms::start`] starts reading it.
    pub(crate) fn open() -> Kallsyms {
        Self::from_file(File::open("/proc/kallsyms"))
    }

    fn from_file(file: io::Result<File>) -> Kallsyms {
        let mut k = Kallsyms {
            file: None,
            table: None,
            loading: None,
            resolved: HashMap::new(),
            problem: None,
        };
        match file {
            Ok(f) => k.file = Some(f),
            Err(e) => k.problem = Some(format!("/proc/kallsyms cannot be opened: {e}")),
        }
        k
    }

    /// Starts the thread that reads the file into the table.
    pub(crate) fn start(&mut self) {
        let Some(f) = self.file.take() else {
            return;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("kallsyms".into())
            .spawn(move || {
                // It needs no capability: the file is open (capabilities are per thread).
                let _ = crate::kernel::privs::drop_all_of_this_thread();
                let _ = tx.send(Table::read(BufReader::with_capacity(1 << 16, f)));
            });
        match spawned {
            Ok(_) => self.loading = Some(rx),
            Err(e) => self.problem = Some(format!("cannot start reading /proc/kallsyms: {e}")),
        }
    }

    /// The name of each address (`symbol+0xoff`, `[module]` appended for a module's), `None`
    /// for an address no symbol covers or when the file shows no addresses.
    pub(crate) fn resolve(&mut self, addrs: &[u64]) -> Vec<Option<String>> {
        self.start();
        if let Some(rx) = self.loading.take() {
            match rx.recv_timeout(LOAD_WAIT) {
                Ok(Ok(t)) if t.starts.is_empty() => {
                    self.problem = Some(
                        "/proc/kallsyms shows no addresses to oomtrace (kernel.kptr_restrict, no \
                         CAP_SYSLOG): stacks keep raw addresses only"
                            .into(),
                    );
                }
                Ok(Ok(t)) => self.table = Some(std::sync::Arc::new(t)),
                Ok(Err(e)) => self.problem = Some(format!("reading /proc/kallsyms failed: {e}")),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    // Still reading: this kill's frames stay unnamed; the next kill waits again.
                    self.loading = Some(rx);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    self.problem = Some("reading /proc/kallsyms stopped".into());
                }
            }
        }
        if self.resolved.len() + addrs.len() > MAX_RESOLVED {
            self.resolved.clear();
        }
        addrs
            .iter()
            .map(|a| {
                if *a == 0 {
                    return None;
                }
                let table = self.table.as_ref()?;
                self.resolved
                    .entry(*a)
                    .or_insert_with(|| table.name(*a))
                    .clone()
            })
            .collect()
    }
}

impl Table {
    fn read(mut r: impl BufRead) -> Result<Table, String> {
        let (mut starts, mut names_at) = (Vec::new(), Vec::new());
        let mut names = String::new();
        let mut buf = String::new();
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
            // Text symbols only (t, T, and weak ones): return addresses point into code.
            if start == 0 || !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            starts.push(start);
            names_at.push(names.len() as u32);
            names.push_str(name);
            if let Some(m) = f.next() {
                names.push('\t');
                names.push_str(m);
            }
            names.push('\n');
        }
        // The core kernel's symbols come in address order, modules' and BPF programs' after,
        // each in its own order: sorted in place, through a permutation of 4 bytes a symbol.
        if !starts.is_sorted() {
            let mut order: Vec<u32> = (0..starts.len() as u32).collect();
            order.sort_unstable_by_key(|&i| starts[i as usize]);
            permute(&mut starts, &mut names_at, &mut order);
        }
        starts.shrink_to_fit();
        names_at.shrink_to_fit();
        names.shrink_to_fit();
        Ok(Table {
            starts,
            names_at,
            names,
        })
    }

    /// `name+0xoff` (`[module]` after) of the nearest text symbol at or below `addr`, within
    /// [`MAX_OFFSET`].
    fn name(&self, addr: u64) -> Option<String> {
        let i = self.starts.partition_point(|s| *s <= addr).checked_sub(1)?;
        let off = addr - self.starts[i];
        if off >= MAX_OFFSET {
            return None;
        }
        let name = self.names.get(self.names_at[i] as usize..)?;
        let name = &name[..name.find('\n')?];
        Some(match name.split_once('\t') {
            Some((name, module)) => format!("{name}+{off:#x} {module}"),
            None => format!("{name}+{off:#x}"),
        })
    }
}

/// Puts the element at `order[i]` of both slices at `i`, in place, following each cycle of the
/// permutation once (`order` is left as the identity).
fn permute(starts: &mut [u64], names_at: &mut [u32], order: &mut [u32]) {
    for i in 0..order.len() {
        if order[i] as usize == i {
            continue;
        }
        let held = (starts[i], names_at[i]);
        let mut j = i;
        loop {
            let k = order[j] as usize;
            order[j] = j as u32;
            if k == i {
                (starts[j], names_at[j]) = held;
                break;
            }
            starts[j] = starts[k];
            names_at[j] = names_at[k];
            j = k;
        }
    }
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

    fn table(text: &str) -> Table {
        Table::read(text.as_bytes()).unwrap()
    }

    #[test]
    fn names_each_address_by_the_nearest_text_symbol_below_it() {
        let t = table(KALLSYMS);
        let name = |a| t.name(a);
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
        // Lines out of address order are sorted.
        assert_eq!(
            name(0xffff_ffff_8110_0001).as_deref(),
            Some("out_of_order_line+0x1")
        );
        assert_eq!(name(0xffff_ffff_8000_0000), None, "below every symbol");
        assert_eq!(name(0xffff_ffff_9000_0000), None, "too far past one");
    }

    /// Symbols in any order (modules' after the core's, each module's own order) are sorted,
    /// each keeping its name: as a sort of (address, name) pairs would.
    #[test]
    fn symbols_out_of_order_are_sorted_with_their_names() {
        let n = 1000u64;
        let text: String = (0..n)
            .map(|i| {
                let a = 0xffff_ffff_8100_0000 + ((i * 7919) % n) * 0x100;
                format!("{a:016x} t f{}\n", (i * 7919) % n)
            })
            .collect();
        let t = table(&text);
        assert_eq!(t.starts.len(), n as usize);
        assert!(t.starts.is_sorted());
        for i in 0..n {
            let a = 0xffff_ffff_8100_0000 + i * 0x100;
            assert_eq!(t.name(a + 1), Some(format!("f{i}+0x1")));
        }
    }

    #[test]
    fn a_file_without_addresses_names_nothing_and_says_why() {
        let hidden = "0000000000000000 T _stext\n0000000000000000 T handle_mm_fault\n";
        assert!(table(hidden).starts.is_empty());
        let path = std::env::temp_dir().join(format!("oomtrace-kallsyms0-{}", std::process::id()));
        std::fs::write(&path, hidden).unwrap();
        let mut k = Kallsyms::from_file(File::open(&path));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(k.resolve(&[0xffff_ffff_8123_4012]), [None]);
        assert!(
            k.problem
                .as_deref()
                .unwrap_or("")
                .contains("shows no addresses")
        );
    }

    #[test]
    fn resolves_from_the_table_read_by_its_thread() {
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
    }

    /// The running kernel's own file, where it shows addresses (root): a text symbol's
    /// address and one inside it name that symbol. Prints what reading it costs.
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
        let t = k.table.as_ref().unwrap();
        eprintln!(
            "reading /proc/kallsyms: {:?}; {} text symbols, {} bytes of names",
            started.elapsed(),
            t.starts.len(),
            t.names.len()
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
