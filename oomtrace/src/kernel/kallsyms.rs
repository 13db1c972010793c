//! Kernel addresses to symbol names, from `/proc/kallsyms`: the allocation stacks of OOM kills
//! ([`oomtrace_common::AllocStack`]) are raw return addresses.
//!
//! The kernel decides whether `/proc/kallsyms` shows addresses when the file is *opened*
//! (`kallsyms_show_value(file->f_cred)`: `CAP_SYSLOG`, or `kptr_restrict=0` with perf allowed);
//! `watch` drops that capability after attaching, so the file is opened before and re-read
//! through the same descriptor. Nothing is read until a stack names an address not resolved
//! before: one pass over the file per kill with new addresses (stacks of an OOM storm repeat),
//! without keeping the file's ~100 000 symbols in memory.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufRead, BufReader, Seek, SeekFrom},
};

/// Symbols resolved so far are kept up to this many (then forgotten at once, like the memcg
/// paths): a bound on memory whatever the kernel's stacks.
const MAX_RESOLVED: usize = 1 << 14;
/// An address further than this past the nearest symbol is not that symbol's (the end of a
/// section, a gap): left unresolved rather than named wrongly.
const MAX_OFFSET: u64 = 1 << 20;

/// `/proc/kallsyms`, opened while oomtrace may still read it.
pub struct Kallsyms {
    file: Option<File>,
    resolved: HashMap<u64, Option<String>>,
    /// Why the file gives no names (not readable, or addresses hidden), said once.
    pub problem: Option<String>,
}

impl Kallsyms {
    /// Opens `/proc/kallsyms` (call before privileges are dropped).
    pub fn open() -> Kallsyms {
        Self::from_file(File::open("/proc/kallsyms"))
    }

    fn from_file(file: io::Result<File>) -> Kallsyms {
        match file {
            Ok(f) => Kallsyms {
                file: Some(f),
                resolved: HashMap::new(),
                problem: None,
            },
            Err(e) => Kallsyms {
                file: None,
                resolved: HashMap::new(),
                problem: Some(format!("/proc/kallsyms cannot be opened: {e}")),
            },
        }
    }

    /// The name of each address (`symbol+0xoff`, `[module]` appended for a module's), `None`
    /// for an address no symbol covers or when the file shows no addresses.
    pub fn resolve(&mut self, addrs: &[u64]) -> Vec<Option<String>> {
        let missing: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| *a != 0 && !self.resolved.contains_key(a))
            .collect();
        if !missing.is_empty() {
            self.read(&missing);
        }
        addrs
            .iter()
            .map(|a| self.resolved.get(a).cloned().flatten())
            .collect()
    }

    fn read(&mut self, missing: &[u64]) {
        let Some(file) = &mut self.file else {
            return;
        };
        let found = match file
            .seek(SeekFrom::Start(0))
            .and_then(|_| nearest(BufReader::with_capacity(1 << 16, &mut *file), missing))
        {
            Ok(found) => found,
            Err(e) => {
                self.problem = Some(format!("reading /proc/kallsyms failed: {e}"));
                return;
            }
        };
        if found.hidden {
            self.problem = Some(
                "/proc/kallsyms shows no addresses to oomtrace (kernel.kptr_restrict, no \
                 CAP_SYSLOG): stacks keep raw addresses only"
                    .into(),
            );
        }
        if self.resolved.len() + missing.len() > MAX_RESOLVED {
            self.resolved.clear();
        }
        for (addr, best) in missing.iter().zip(found.best) {
            let name = best.map(|(start, name)| {
                let off = addr - start;
                match name.split_once('\t') {
                    Some((name, module)) => format!("{name}+{off:#x} {module}"),
                    None => format!("{name}+{off:#x}"),
                }
            });
            self.resolved.insert(*addr, name);
        }
    }
}

struct Nearest {
    /// Per address: the start and name of the nearest symbol at or below it.
    best: Vec<Option<(u64, String)>>,
    /// Every address in the file read as 0.
    hidden: bool,
}

/// One pass over kallsyms text: for each address, the text symbol with the greatest start not
/// above it (within [`MAX_OFFSET`]).
fn nearest(r: impl BufRead, addrs: &[u64]) -> io::Result<Nearest> {
    let mut best: Vec<Option<(u64, String)>> = vec![None; addrs.len()];
    let mut any_nonzero = false;
    let mut lines = 0u64;
    let mut r = r;
    let mut buf = String::new();
    loop {
        buf.clear();
        if r.read_line(&mut buf)? == 0 {
            break;
        }
        let line = buf.as_str();
        lines += 1;
        let mut f = line.split_ascii_whitespace();
        let (Some(a), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Ok(start) = u64::from_str_radix(a, 16) else {
            continue;
        };
        if start == 0 {
            continue;
        }
        any_nonzero = true;
        // Text symbols only (t, T, and weak ones): return addresses point into code.
        if !matches!(kind, "t" | "T" | "w" | "W") {
            continue;
        }
        let module = f.next();
        for (i, addr) in addrs.iter().enumerate() {
            if start <= *addr
                && addr - start < MAX_OFFSET
                && best[i].as_ref().is_none_or(|(s, _)| start > *s)
            {
                // "name\t[module]" is kept as "name [module]": the offset goes after the name.
                let name = match module {
                    Some(m) => format!("{name}\t{m}"),
                    None => name.to_string(),
                };
                best[i] = Some((start, name));
            }
        }
    }
    Ok(Nearest {
        best,
        hidden: lines > 0 && !any_nonzero,
    })
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
";

    #[test]
    fn names_each_address_by_the_nearest_text_symbol_below_it() {
        let addrs = [
            0xffff_ffff_8123_4012,
            0xffff_ffff_8123_4812,
            0xffff_ffff_8130_0010, // data symbol skipped: still inside __handle_mm_fault
            0xffff_ffff_c000_1004,
            0xffff_ffff_8000_0000, // below every symbol
        ];
        let n = nearest(KALLSYMS.as_bytes(), &addrs).unwrap();
        let names: Vec<_> = n.best.into_iter().map(|b| b.map(|(_, n)| n)).collect();
        assert_eq!(
            names,
            [
                Some("handle_mm_fault".to_string()),
                Some("__handle_mm_fault".to_string()),
                Some("__handle_mm_fault".to_string()),
                Some("xfs_vm_fault\t[xfs]".to_string()),
                None,
            ]
        );
        assert!(!n.hidden);
    }

    #[test]
    fn far_addresses_and_hidden_files_give_no_name() {
        let n = nearest(KALLSYMS.as_bytes(), &[0xffff_ffff_9000_0000]).unwrap();
        assert_eq!(n.best, [None]);
        let hidden = "0000000000000000 T _stext\n0000000000000000 T handle_mm_fault\n";
        let n = nearest(hidden.as_bytes(), &[0xffff_ffff_8123_4012]).unwrap();
        assert!(n.hidden);
        assert_eq!(n.best, [None]);
    }

    #[test]
    fn resolves_through_the_descriptor_and_remembers() {
        let dir = std::env::temp_dir().join(format!("oomtrace-kallsyms-{}", std::process::id()));
        std::fs::write(&dir, KALLSYMS).unwrap();
        let mut k = Kallsyms::from_file(File::open(&dir));
        std::fs::remove_file(&dir).unwrap();
        let got = k.resolve(&[0xffff_ffff_8140_0040, 0, 0xffff_ffff_c000_1004]);
        assert_eq!(
            got,
            [
                Some("out_of_memory+0x40".to_string()),
                None,
                Some("xfs_vm_fault+0x4 [xfs]".to_string())
            ]
        );
        // Read again from the start through the same (now unlinked) file.
        let got = k.resolve(&[0xffff_ffff_8123_4001]);
        assert_eq!(got, [Some("handle_mm_fault+0x1".to_string())]);
        assert!(k.problem.is_none());
    }

    /// The running kernel's own file, where it shows addresses (root): a text symbol's
    /// address and one inside it name that symbol. Prints what one pass costs.
    #[test]
    fn names_addresses_from_this_kernels_kallsyms() {
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let Some((addr, name)) = text.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let a = u64::from_str_radix(f.next()?, 16)
                .ok()
                .filter(|a| *a != 0)?;
            (f.next()? == "T").then_some(())?;
            let name = f.next()?;
            (name == "out_of_memory").then(|| (a, name.to_string()))
        }) else {
            eprintln!("/proc/kallsyms shows no addresses here (not root): nothing to check");
            return;
        };
        let mut k = Kallsyms::open();
        let started = std::time::Instant::now();
        let got = k.resolve(&[addr, addr + 4]);
        eprintln!("one pass over /proc/kallsyms: {:?}", started.elapsed());
        assert_eq!(
            got,
            [Some(format!("{name}+0x0")), Some(format!("{name}+0x4"))]
        );
    }
}
