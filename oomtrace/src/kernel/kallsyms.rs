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
/// thread reads it once, once watching has started, into a table of its text symbols (2.0 MB
/// on this project's host; 4.5 MB before padding symbols were folded into their function and
/// addresses took 4 bytes); a kill looks its frames up there, waiting (at most [`LOAD_WAIT`]) only if it comes
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

/// Text symbols by address: `starts` ascending, each `base` + its value (4 bytes: the kernel's
/// text, modules and BPF programs lie within 4 GiB of each other); `names_at[i]` where the
/// name of the symbol at `starts[i]` begins in `names` (`name`, or `name\t[module]`, each
/// ended by a newline): 8 bytes a symbol beside its name (121k symbols on this project's host).
/// A symbol outside those 4 GiB is kept in `far`, with its whole address.
///
/// A function's padding symbol (`__pfx_NAME`, right before `NAME` where the kernel pads
/// functions: 57k of the host's 121k symbols, 1.6 MB of their 3.1 MB of names) keeps no name
/// of its own: its `names_at` is `NAME`'s with [`PFX_OF`] set. Where it lies `pad` bytes below
/// `NAME` with no other symbol at or between, it has no entry either: `NAME`'s is marked
/// [`FOLDED`] (see [`fold_padding`]).
struct Table {
    base: u64,
    /// How far below a [`FOLDED`] symbol its padding symbol lies.
    pad: u32,
    starts: Vec<u32>,
    names_at: Vec<u32>,
    names: String,
    /// (address, `names_at`) of symbols outside `base`'s 4 GiB, by address.
    far: Vec<(u64, u32)>,
}

/// The prefix of a function's padding symbol.
const PFX: &str = "__pfx_";
/// Set in `names_at`: the symbol is named [`PFX`] and the name stored there.
const PFX_OF: u32 = 1 << 31;
/// Set in `names_at`: the symbol's padding symbol lies `pad` bytes below it, without an entry.
const FOLDED: u32 = 1 << 30;

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
                Ok(Ok(t)) if t.starts.is_empty() && t.far.is_empty() => {
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
        let (mut starts, mut names_at, mut far) = (Vec::new(), Vec::new(), Vec::new());
        // Counted from 2 GiB below the first symbol: the kernel's text comes first, modules
        // and BPF programs above it (x86), or below it (arm64's modules).
        let mut base = None;
        let mut names = String::new();
        let mut buf = String::new();
        // The last line's `__pfx_` symbol (its index, and its name without the prefix, with
        // its module), named once the next line is seen.
        let (mut pending, mut pfx_rest): (Option<Slot>, _) = (None, String::new());
        // Padding symbols are folded while the lines come in address order (see
        // [`fold_padding`]): the table never holds the 57k entries it would drop.
        let (mut pad, mut sorted) = (0u32, true);
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
            let module = f.next();
            if names.len() >= FOLDED as usize {
                return Err(format!("more than {FOLDED} bytes of symbol names"));
            }
            let at = names.len();
            let padding = name.strip_prefix(PFX);
            if padding.is_none() {
                push_name(&mut names, name, module);
            }
            let mut fold_into = None;
            if let Some(slot) = pending.take() {
                // `__pfx_NAME` right before `NAME` (of the same module): the name is shared.
                let shared = padding.is_none() && names[at..names.len() - 1] == pfx_rest;
                let name = if shared {
                    PFX_OF | at as u32
                } else {
                    pfx_name(&mut names, &pfx_rest)
                };
                slot.set(&mut names_at, &mut far, name);
                if let (true, Slot::Near(i)) = (shared, slot) {
                    fold_into = Some(i).filter(|&i| i + 1 == starts.len());
                }
            }
            let base = *base.get_or_insert(start.saturating_sub(1 << 31));
            let slot = match u32::try_from(start.wrapping_sub(base)) {
                Ok(rel) if start >= base => {
                    // As `fold_padding` would: the padding symbol is the last entry, below
                    // `rel` by `pad`, above the entry before it.
                    let folds = fold_into.filter(|&i| {
                        sorted
                            && starts[i] < rel
                            && (pad == 0 || rel - starts[i] == pad)
                            && (i == 0 || starts[i - 1] < starts[i])
                    });
                    if let Some(i) = folds {
                        pad = rel - starts[i];
                        starts[i] = rel;
                        names_at[i] = at as u32 | FOLDED;
                        Slot::Near(i)
                    } else {
                        sorted &= starts.last().is_none_or(|&last| last <= rel);
                        starts.push(rel);
                        names_at.push(at as u32);
                        Slot::Near(names_at.len() - 1)
                    }
                }
                _ => {
                    far.push((start, at as u32));
                    Slot::Far(far.len() - 1)
                }
            };
            if let Some(rest) = padding {
                pending = Some(slot);
                pfx_rest.clear();
                push_name(&mut pfx_rest, rest, module);
                pfx_rest.pop();
            }
        }
        if let Some(slot) = pending {
            let name = pfx_name(&mut names, &pfx_rest);
            slot.set(&mut names_at, &mut far, name);
        }
        Ok(Table::sorted(
            base.unwrap_or(0),
            pad,
            (starts, names_at),
            names,
            far,
        ))
    }

    /// The table of the entries read: sorted by address, the padding symbols folded (some
    /// already, `pad` below their function, while the lines came in address order).
    fn sorted(
        base: u64,
        mut pad: u32,
        (mut starts, mut names_at): (Vec<u32>, Vec<u32>),
        mut names: String,
        mut far: Vec<(u64, u32)>,
    ) -> Table {
        far.sort_unstable();
        // Symbols after the lines in address order that fall at or below a folded function
        // (arm64's modules lie below the kernel's text) may change its neighbours: the folds
        // are undone and made again once all are sorted. Above the last one (BPF programs,
        // x86's modules), they change none.
        let n = starts.len();
        let run = starts
            .windows(2)
            .position(|w| w[0] > w[1])
            .map_or(n, |i| i + 1);
        let last_folded = (starts[..run].iter().zip(&names_at[..run]))
            .filter(|(_, at)| **at & FOLDED != 0)
            .map(|(s, _)| *s)
            .next_back();
        if last_folded.is_some_and(|last| starts[run..].iter().any(|s| *s <= last)) {
            unfold(&mut starts, &mut names_at, pad);
            pad = 0;
        }
        sort_by_start(&mut starts, &mut names_at);
        let pad = fold_padding(&mut starts, &mut names_at, pad);
        starts.shrink_to_fit();
        names_at.shrink_to_fit();
        names.shrink_to_fit();
        far.shrink_to_fit();
        Table {
            base,
            pad,
            starts,
            names_at,
            names,
            far,
        }
    }

    /// `name+0xoff` (`[module]` after) of the nearest text symbol at or below `addr`, within
    /// [`MAX_OFFSET`].
    fn name(&self, addr: u64) -> Option<String> {
        // The nearest symbol at or below `addr` among those near `base` (all of them are
        // below an address past their 4 GiB), and among the far ones: the higher.
        let near = addr.checked_sub(self.base).and_then(|rel| {
            let rel = u32::try_from(rel).unwrap_or(u32::MAX);
            let j = self.starts.partition_point(|s| *s <= rel);
            // Inside the padding folded into the next symbol: its padding symbol (nothing
            // else lies between them, nor at its address).
            if let (Some(&next), Some(&at)) = (self.starts.get(j), self.names_at.get(j))
                && at & FOLDED != 0
                && next - self.pad <= rel
            {
                let start = self.base + u64::from(next - self.pad);
                return Some((start, PFX_OF | (at & !FOLDED)));
            }
            let i = j.checked_sub(1)?;
            Some((
                self.base + u64::from(self.starts[i]),
                self.names_at[i] & !FOLDED,
            ))
        });
        let i = self.far.partition_point(|(s, _)| *s <= addr).checked_sub(1);
        let far = i.map(|i| self.far[i]);
        let (start, at) = match (near, far) {
            (Some(n), Some(f)) => n.max(f),
            (n, f) => n.or(f)?,
        };
        let off = addr - start;
        if off >= MAX_OFFSET {
            return None;
        }
        let name = self.names.get((at & !(PFX_OF | FOLDED)) as usize..)?;
        let name = &name[..name.find('\n')?];
        let pfx = if at & PFX_OF != 0 { PFX } else { "" };
        Some(match name.split_once('\t') {
            Some((name, module)) => format!("{pfx}{name}+{off:#x} {module}"),
            None => format!("{pfx}{name}+{off:#x}"),
        })
    }
}

/// Where a symbol's `names_at` is: in `Table::names_at` or in `Table::far`.
#[derive(Clone, Copy)]
enum Slot {
    Near(usize),
    Far(usize),
}

impl Slot {
    fn set(self, names_at: &mut [u32], far: &mut [(u64, u32)], name: u32) {
        match self {
            Slot::Near(i) => names_at[i] = name,
            Slot::Far(i) => far[i].1 = name,
        }
    }
}

/// Appends `name` (`name\t[module]` for a module's) and its newline.
fn push_name(names: &mut String, name: &str, module: Option<&str>) {
    names.push_str(name);
    if let Some(m) = module {
        names.push('\t');
        names.push_str(m);
    }
    names.push('\n');
}

/// Stores a `__pfx_` symbol's whole name (`rest`: without the prefix, with its module);
/// returns where it starts.
fn pfx_name(names: &mut String, rest: &str) -> u32 {
    let at = names.len() as u32;
    names.push_str(PFX);
    names.push_str(rest);
    names.push('\n');
    at
}

/// Removes the entries of padding symbols sharing their function's name (`PFX_OF`) that lie
/// right below it, all at the same distance (`pad`: the one given, as folded while reading,
/// or 0 and then the first such pair's), with no other symbol at their address; marks their
/// function [`FOLDED`]. Returns `pad`. In place, on the sorted table: a lookup then names
/// every address as before.
fn fold_padding(starts: &mut Vec<u32>, names_at: &mut Vec<u32>, pad: u32) -> u32 {
    let (mut pad, mut kept, mut i) = (pad, 0, 0);
    let n = starts.len();
    while i < n {
        let folds = i + 1 < n
            && names_at[i] == PFX_OF | names_at[i + 1]
            && names_at[i + 1] & (PFX_OF | FOLDED) == 0
            && starts[i] < starts[i + 1]
            && (pad == 0 || starts[i + 1] - starts[i] == pad)
            && (kept == 0 || starts[kept - 1] < starts[i]);
        if folds {
            pad = starts[i + 1] - starts[i];
            starts[kept] = starts[i + 1];
            names_at[kept] = names_at[i + 1] | FOLDED;
            i += 2;
        } else {
            starts[kept] = starts[i];
            names_at[kept] = names_at[i];
            i += 1;
        }
        kept += 1;
    }
    starts.truncate(kept);
    names_at.truncate(kept);
    pad
}

/// Puts back the padding symbols folded while reading (each `pad` below its [`FOLDED`]
/// function, sharing its name), as they were read.
fn unfold(starts: &mut Vec<u32>, names_at: &mut Vec<u32>, pad: u32) {
    let (folded_starts, folded_names) = (std::mem::take(starts), std::mem::take(names_at));
    let folded = folded_names.iter().filter(|at| **at & FOLDED != 0).count();
    starts.reserve_exact(folded_starts.len() + folded);
    names_at.reserve_exact(folded_starts.len() + folded);
    for (s, at) in folded_starts.into_iter().zip(folded_names) {
        if at & FOLDED != 0 {
            starts.push(s - pad);
            names_at.push(PFX_OF | (at & !FOLDED));
        }
        starts.push(s);
        names_at.push(at & !FOLDED);
    }
}

/// Sorts both slices by `starts`, in place, ties in the file's order. The core kernel's
/// symbols come in address order, modules' and BPF programs' after, each in its own order (on
/// this project's host the last 23 of 121k lines: BPF programs). The tail after the sorted
/// run is sorted on its own and merged in from the back; a permutation of 4 bytes a symbol
/// (485 KB here, the table's largest transient, at its peak) only where the tail is long.
fn sort_by_start(starts: &mut [u32], names_at: &mut [u32]) {
    let n = starts.len();
    let run = starts
        .windows(2)
        .position(|w| w[0] > w[1])
        .map_or(n, |i| i + 1);
    if run == n {
        return;
    }
    if n - run > n / 4 {
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by_key(|&i| (starts[i as usize], i));
        permute(starts, names_at, &mut order);
        return;
    }
    let mut tail: Vec<(u32, u32)> = (starts[run..].iter().copied())
        .zip(names_at[run..].iter().copied())
        .collect();
    tail.sort_by_key(|t| t.0);
    let (mut i, mut j) = (run, tail.len());
    for k in (0..n).rev() {
        if j == 0 {
            break;
        }
        if i > 0 && starts[i - 1] > tail[j - 1].0 {
            i -= 1;
            (starts[k], names_at[k]) = (starts[i], names_at[i]);
        } else {
            j -= 1;
            (starts[k], names_at[k]) = tail[j];
        }
    }
}

/// Puts the element at `order[i]` of both slices at `i`, in place, following each cycle of the
/// permutation once (`order` is left as the identity).
fn permute(starts: &mut [u32], names_at: &mut [u32], order: &mut [u32]) {
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

    /// A short unsorted tail (BPF programs, modules) is merged into the sorted run, and a long
    /// one sorted through a permutation: both as a stable sort of (address, name) pairs.
    #[test]
    fn a_tail_out_of_order_is_merged_as_a_stable_sort() {
        for (core, tail) in [
            (1000u32, 7u32),
            (1000, 0),
            (10, 1),
            (1, 5),
            (100, 90),
            (0, 3),
        ] {
            let mut starts: Vec<u32> = (0..core).map(|i| 1000 + 10 * (i / 2)).collect();
            starts.extend((0..tail).map(|i| 5000u32.wrapping_sub(i * 37) % 6000 + 995));
            let mut names_at: Vec<u32> = (0..starts.len() as u32).collect();
            let mut want: Vec<(u32, u32)> = starts.iter().copied().zip(names_at.clone()).collect();
            want.sort_by_key(|p| p.0);
            sort_by_start(&mut starts, &mut names_at);
            let got: Vec<(u32, u32)> = starts.into_iter().zip(names_at).collect();
            assert_eq!(got, want, "{core} sorted, {tail} after");
        }
    }

    /// Padding folded while reading names every address as folded after the sort: also where
    /// later lines fall among the sorted ones (arm64's modules lie below the kernel's text),
    /// between a padding symbol and its function or at the padding's address.
    #[test]
    fn padding_folded_while_reading_names_as_after_the_sort() {
        let core = "\
ffffffff81000ff0 T __pfx_a
ffffffff81001000 T a
ffffffff81001ff0 T __pfx_b
ffffffff81002000 T b
ffffffff81002ff0 t __pfx_c
ffffffff81003000 t c
";
        for (tail, folded) in [
            ("", 3),
            (
                "ffffffffc0000ff0 t __pfx_m\t[m]\nffffffffc0001000 t m\t[m]\n",
                4,
            ),
            ("ffffffff81001ff8 t inside_b_padding\t[m]\n", 2),
            ("ffffffff81002ff0 t at_c_padding\t[m]\n", 2),
            (
                "ffffffff80000ff0 t __pfx_low\t[m]\nffffffff80001000 t low\t[m]\n",
                4,
            ),
        ] {
            let text = format!("{core}{tail}");
            let t = table(&text);
            let marked = t.names_at.iter().filter(|a| **a & FOLDED != 0).count();
            assert_eq!(marked, folded, "{tail:?}");
            for line in text.lines() {
                let mut f = line.split_ascii_whitespace();
                let addr = u64::from_str_radix(f.next().unwrap(), 16).unwrap();
                let (name, module) = (f.nth(1).unwrap(), f.next());
                let want = match module {
                    Some(m) => format!("{name}+0x1 {m}"),
                    None => format!("{name}+0x1"),
                };
                // Two symbols at one address: the lookup names one of them.
                if (name == "__pfx_c" || name == "at_c_padding") && tail.contains("at_c") {
                    continue;
                }
                assert_eq!(t.name(addr + 1), Some(want), "{tail:?}: {line}");
            }
        }
    }

    /// A function's padding symbol shares the function's name where it comes right before
    /// it (same module), and keeps its own otherwise: the names are those of the file.
    #[test]
    fn padding_symbols_are_named_as_in_the_file() {
        let text = "\
ffffffff81000ff0 T __pfx_out_of_memory
ffffffff81001000 T out_of_memory
ffffffff81001ff0 t __pfx_lonely
ffffffff81002000 t other
ffffffff81002ff0 t __pfx_a
ffffffff81003ff0 t __pfx_b
ffffffff81004000 t b
ffffffffc0000ff0 t __pfx_xfs_vm_fault\t[xfs]
ffffffffc0001000 t xfs_vm_fault\t[xfs]
ffffffffc0001ff0 t __pfx_ext4_fault\t[xfs]
ffffffffc0002000 t ext4_fault\t[ext4]
ffffffffc0002ff0 t __pfx_last
";
        let t = table(text);
        let name = |a| t.name(a);
        assert_eq!(name(0xffff_ffff_8100_0fef), None, "below the first padding");
        let cases = [
            (0xffff_ffff_8100_0ff0, "__pfx_out_of_memory+0x0"),
            (0xffff_ffff_8100_0ff4, "__pfx_out_of_memory+0x4"),
            (0xffff_ffff_8100_1004, "out_of_memory+0x4"),
            (0xffff_ffff_8100_1ff4, "__pfx_lonely+0x4"),
            (0xffff_ffff_8100_2004, "other+0x4"),
            (0xffff_ffff_8100_2ff4, "__pfx_a+0x4"),
            (0xffff_ffff_8100_3ff4, "__pfx_b+0x4"),
            (0xffff_ffff_8100_4004, "b+0x4"),
            (0xffff_ffff_c000_0ff4, "__pfx_xfs_vm_fault+0x4 [xfs]"),
            (0xffff_ffff_c000_1004, "xfs_vm_fault+0x4 [xfs]"),
            (0xffff_ffff_c000_1ff4, "__pfx_ext4_fault+0x4 [xfs]"),
            (0xffff_ffff_c000_2004, "ext4_fault+0x4 [ext4]"),
            (0xffff_ffff_c000_2ff4, "__pfx_last+0x4"),
        ];
        for (addr, want) in cases {
            assert_eq!(name(addr).as_deref(), Some(want), "{addr:#x}");
        }
        // Folded: out_of_memory's, b's and xfs_vm_fault's padding keep no entry.
        assert_eq!(t.starts.len() + t.far.len(), 12 - 3, "{:?}", t.starts);
        assert_eq!(t.pad, 0x10);
        // Shared: out_of_memory's, b's and xfs_vm_fault's padding add no name.
        assert!(!t.names.contains("__pfx_out_of_memory"), "{}", t.names);
        assert!(!t.names.contains("__pfx_b"), "{}", t.names);
        assert!(!t.names.contains("__pfx_xfs"), "{}", t.names);
    }

    /// Symbols more than 4 GiB apart (none on x86 or arm64 today) keep their whole address,
    /// named as the others.
    #[test]
    fn symbols_far_apart_keep_their_whole_address() {
        let text = "\
ffffffff81000000 T _stext
ffffffff81001000 T near_one
0000100000000000 t low_far
ffff000000001000 t high_far
ffff000000000ff0 t __pfx_high_far
ffffffffc0001000 t in_module\t[m]
";
        let t = table(text);
        assert_eq!(t.far.len(), 3, "{:?}", t.far);
        let cases = [
            (0xffff_ffff_8100_1004, Some("near_one+0x4")),
            (0x0000_1000_0000_0004, Some("low_far+0x4")),
            (0xffff_0000_0000_0ff4, Some("__pfx_high_far+0x4")),
            (0xffff_0000_0000_1004, Some("high_far+0x4")),
            (0xffff_ffff_c000_1004, Some("in_module+0x4 [m]")),
            (0xffff_ffff_8000_0000, None),
            (0x0000_0fff_ffff_ffff, None),
        ];
        for (addr, want) in cases {
            assert_eq!(t.name(addr).as_deref(), want, "{addr:#x}");
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
        // Every text symbol alone at its address (padding symbols included) is named there
        // as the file names it.
        let mut at: HashMap<u64, (usize, String)> = HashMap::new();
        for l in text.lines() {
            let mut f = l.split_whitespace();
            let (Some(a), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let (Ok(a), true) = (
                u64::from_str_radix(a, 16),
                matches!(kind, "t" | "T" | "w" | "W"),
            ) else {
                continue;
            };
            let want = match f.next() {
                Some(m) => format!("{name}+0x0 {m}"),
                None => format!("{name}+0x0"),
            };
            let e = at.entry(a).or_insert((0, want));
            e.0 += 1;
        }
        let whole = Table::read(text.as_bytes()).unwrap();
        let mut addrs: Vec<u64> = at.keys().copied().collect();
        addrs.sort_unstable();
        let alone: Vec<_> = at.into_iter().filter(|(_, (n, _))| *n == 1).collect();
        assert!(alone.len() > 1000, "{} symbols alone", alone.len());
        for (a, (_, want)) in alone {
            assert_eq!(whole.name(a).as_deref(), Some(want.as_str()), "{a:#x}");
            // One byte in, where the next symbol starts further on.
            let next = addrs.partition_point(|x| *x <= a);
            if addrs.get(next).is_some_and(|n| *n > a + 1) {
                let inside = want.replacen("+0x0", "+0x1", 1);
                assert_eq!(
                    whole.name(a + 1).as_deref(),
                    Some(inside.as_str()),
                    "{a:#x}+1"
                );
            }
        }
    }
}
