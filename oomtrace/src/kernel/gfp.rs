//! gfp masks in the kernel's own words ("GFP_KERNEL|__GFP_ACCOUNT"), as its OOM report and
//! tracepoints print them.
//!
//! The names and values come from the running kernel: the print fmt of `kmem:mm_page_alloc`
//! carries the kernel's `__def_gfpflag_names` table (`__print_flags(REC->gfp_flags, "|",
//! {value, "NAME"}, …)`, the values as preprocessed C expressions), which this module
//! evaluates. The bit values move between kernels (`___GFP_*` became an enum of bits in 6.10;
//! flags were added and removed), so a table is only right for the kernel it was read from: a
//! dump records it in its header, and only a dump without one is decoded with the built-in
//! table (6.18's), which says so.
//!
//! Decoding follows the kernel's `trace_print_flags_seq`: entries in table order, each taken
//! when all its bits are still set, its bits cleared; what is left printed in hex.

use serde::{Deserialize, Serialize};

/// Where a table came from.
pub(crate) const SOURCE_TRACEFS: &str = "tracefs kmem:mm_page_alloc";
pub(crate) const SOURCE_BUILTIN: &str = "built-in (Linux 6.18)";

/// The kernel's gfp flag names, in its print order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GfpNames {
    /// Where the table came from ([`SOURCE_TRACEFS`], [`SOURCE_BUILTIN`]).
    pub(crate) source: String,
    /// (mask, name), in the kernel's order (composite names such as GFP_KERNEL first).
    pub(crate) flags: Vec<(u64, String)>,
}

impl Default for GfpNames {
    fn default() -> Self {
        GfpNames::builtin()
    }
}

/// Linux 6.18's table (`include/trace/events/mmflags.h`, bits of `include/linux/gfp_types.h`),
/// as its `kmem:mm_page_alloc` print fmt gives it.
const BUILTIN: &[(u64, &str)] = &[
    (0x1c_24ca, "GFP_TRANSHUGE"),
    (0x1c_20ca, "GFP_TRANSHUGE_LIGHT"),
    (0x10_0cca, "GFP_HIGHUSER_MOVABLE"),
    (0x10_0cc2, "GFP_HIGHUSER"),
    (0x10_0cc0, "GFP_USER"),
    (0x40_0cc0, "GFP_KERNEL_ACCOUNT"),
    (0xcc0, "GFP_KERNEL"),
    (0xc40, "GFP_NOFS"),
    (0x820, "GFP_ATOMIC"),
    (0xc00, "GFP_NOIO"),
    (0x2800, "GFP_NOWAIT"),
    (0x1, "GFP_DMA"),
    (0x4, "GFP_DMA32"),
    (0xc00, "__GFP_RECLAIM"),
    (0x1, "__GFP_DMA"),
    (0x2, "__GFP_HIGHMEM"),
    (0x4, "__GFP_DMA32"),
    (0x8, "__GFP_MOVABLE"),
    (0x10, "__GFP_RECLAIMABLE"),
    (0x20, "__GFP_HIGH"),
    (0x40, "__GFP_IO"),
    (0x80, "__GFP_FS"),
    (0x100, "__GFP_ZERO"),
    (0x400, "__GFP_DIRECT_RECLAIM"),
    (0x800, "__GFP_KSWAPD_RECLAIM"),
    (0x1000, "__GFP_WRITE"),
    (0x2000, "__GFP_NOWARN"),
    (0x4000, "__GFP_RETRY_MAYFAIL"),
    (0x8000, "__GFP_NOFAIL"),
    (0x1_0000, "__GFP_NORETRY"),
    (0x2_0000, "__GFP_MEMALLOC"),
    (0x4_0000, "__GFP_COMP"),
    (0x8_0000, "__GFP_NOMEMALLOC"),
    (0x10_0000, "__GFP_HARDWALL"),
    (0x20_0000, "__GFP_THISNODE"),
    (0x40_0000, "__GFP_ACCOUNT"),
    (0x80_0000, "__GFP_ZEROTAGS"),
    (0x100_0000, "__GFP_NO_OBJ_EXT"),
];

impl GfpNames {
    /// The built-in table: only for a dump recorded without one.
    pub(crate) fn builtin() -> GfpNames {
        GfpNames {
            source: SOURCE_BUILTIN.into(),
            flags: BUILTIN.iter().map(|&(m, n)| (m, n.to_string())).collect(),
        }
    }

    /// No table (tracefs unreadable on a live host): masks are shown in hex rather than
    /// decoded with names that may not be this kernel's.
    pub(crate) fn none(why: &str) -> GfpNames {
        GfpNames {
            source: format!("none ({why}): gfp masks in hex"),
            flags: Vec::new(),
        }
    }

    /// The running kernel's table, from its tracefs (`root`), or none and why.
    pub(crate) fn of_tracefs(root: &std::path::Path) -> GfpNames {
        let path = root.join("events/kmem/mm_page_alloc/format");
        match std::fs::read_to_string(&path) {
            Ok(text) => GfpNames::from_format(&text)
                .unwrap_or_else(|e| GfpNames::none(&format!("{}: {e}", path.display()))),
            Err(e) => GfpNames::none(&format!("{}: {e}", path.display())),
        }
    }

    /// The table of a tracepoint format's print fmt (`kmem:mm_page_alloc`'s), or why not.
    pub(crate) fn from_format(text: &str) -> Result<GfpNames, String> {
        let fmt = text
            .lines()
            .find_map(|l| l.strip_prefix("print fmt:"))
            .ok_or("no print fmt line")?;
        let start = fmt
            .find("__print_flags(REC->gfp_flags")
            .ok_or("the print fmt has no __print_flags(REC->gfp_flags, …)")?;
        let mut rest = &fmt[start..];
        let mut flags = Vec::new();
        // Each `{ value, "NAME" }` up to the table's end (`{ 0, NULL }`, or its closing paren).
        while let Some(open) = rest.find('{') {
            let body_start = open + 1;
            let close =
                matching_brace(&rest[body_start..]).ok_or("an entry of the table is not closed")?;
            let body = &rest[body_start..body_start + close];
            rest = &rest[body_start + close + 1..];
            let Some(comma) = body.rfind(',') else {
                return Err(format!("entry {{{body}}} has no comma"));
            };
            let (value, name) = (&body[..comma], body[comma + 1..].trim());
            let Some(name) = name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) else {
                break; // the terminator
            };
            let mask = eval(value).map_err(|e| format!("{name}: {e} in `{}`", value.trim()))?;
            flags.push((mask, name.to_string()));
            // The table ends at the call's closing paren (a terminator-less one).
            if rest.trim_start().starts_with(')') {
                break;
            }
        }
        if flags.is_empty() {
            return Err("the gfp table of the print fmt is empty".into());
        }
        Ok(GfpNames {
            source: SOURCE_TRACEFS.into(),
            flags,
        })
    }

    /// `mask` in the kernel's words: "GFP_KERNEL|__GFP_ACCOUNT", "none" for 0, bits no name
    /// covers in hex ("GFP_KERNEL|0x4000000"; all of it without a table).
    pub(crate) fn decode(&self, mask: u64) -> String {
        if mask == 0 {
            return "none".into();
        }
        let mut left = mask;
        let mut parts: Vec<String> = Vec::new();
        for (m, name) in &self.flags {
            if left == 0 {
                break;
            }
            if *m != 0 && left & m == *m {
                parts.push(name.clone());
                left &= !m;
            }
        }
        if left != 0 {
            parts.push(format!("{left:#x}"));
        }
        parts.join("|")
    }
}

/// The byte index of the `}` closing a brace already opened (nested ones skipped, string
/// literals passed over).
fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_str = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '{' if !in_str => depth += 1,
            '}' if !in_str => {
                if depth == 0 {
                    return Some(i);
                }
                depth -= 1;
            }
            _ => {}
        }
    }
    None
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(u64),
    Ident,
    Open,
    Close,
    Or,
    And,
    Not,
    Shl,
    Shr,
    Plus,
}

fn tokens(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' => i += 1,
            b'(' => (out.push(Tok::Open), i += 1).1,
            b')' => (out.push(Tok::Close), i += 1).1,
            b'|' => (out.push(Tok::Or), i += 1).1,
            b'&' => (out.push(Tok::And), i += 1).1,
            b'~' => (out.push(Tok::Not), i += 1).1,
            b'+' => (out.push(Tok::Plus), i += 1).1,
            b'<' if b.get(i + 1) == Some(&b'<') => (out.push(Tok::Shl), i += 2).1,
            b'>' if b.get(i + 1) == Some(&b'>') => (out.push(Tok::Shr), i += 2).1,
            b'0'..=b'9' => {
                let start = i;
                while i < b.len() && b[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                let lit = s[start..i].trim_end_matches(['u', 'U', 'l', 'L']);
                let v = match lit.strip_prefix("0x").or_else(|| lit.strip_prefix("0X")) {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => lit.parse(),
                }
                .map_err(|_| format!("bad number {}", &s[start..i]))?;
                out.push(Tok::Num(v));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Ident);
            }
            _ => return Err(format!("unexpected {:?}", c as char)),
        }
    }
    Ok(out)
}

/// Evaluates a preprocessed constant of a print fmt: numbers, casts (skipped), `|`, `&`, `~`,
/// `<<`, `>>`, `+` and parentheses.
fn eval(s: &str) -> Result<u64, String> {
    let toks = tokens(s)?;
    let mut p = Parser { toks: &toks, at: 0 };
    let v = p.or()?;
    if p.at != toks.len() {
        return Err("trailing tokens".into());
    }
    Ok(v)
}

struct Parser<'a> {
    toks: &'a [Tok],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn or(&mut self) -> Result<u64, String> {
        let mut v = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.at += 1;
            v |= self.and()?;
        }
        Ok(v)
    }

    fn and(&mut self) -> Result<u64, String> {
        let mut v = self.shift()?;
        while self.peek() == Some(&Tok::And) {
            self.at += 1;
            v &= self.shift()?;
        }
        Ok(v)
    }

    fn shift(&mut self) -> Result<u64, String> {
        let mut v = self.sum()?;
        loop {
            match self.peek() {
                Some(Tok::Shl) => {
                    self.at += 1;
                    let n = self.sum()?;
                    v = v
                        .checked_shl(u32::try_from(n).map_err(|_| "shift")?)
                        .ok_or("shift")?;
                }
                Some(Tok::Shr) => {
                    self.at += 1;
                    let n = self.sum()?;
                    v = v
                        .checked_shr(u32::try_from(n).map_err(|_| "shift")?)
                        .ok_or("shift")?;
                }
                _ => return Ok(v),
            }
        }
    }

    fn sum(&mut self) -> Result<u64, String> {
        let mut v = self.unary()?;
        while self.peek() == Some(&Tok::Plus) {
            self.at += 1;
            v = v.wrapping_add(self.unary()?);
        }
        Ok(v)
    }

    fn unary(&mut self) -> Result<u64, String> {
        match self.peek() {
            Some(Tok::Not) => {
                self.at += 1;
                Ok(!self.unary()?)
            }
            Some(Tok::Num(n)) => {
                let n = *n;
                self.at += 1;
                Ok(n)
            }
            Some(Tok::Open) => {
                // A cast: identifiers only between the parentheses.
                let idents = self.toks[self.at + 1..]
                    .iter()
                    .take_while(|t| **t == Tok::Ident)
                    .count();
                if idents > 0 && self.toks.get(self.at + 1 + idents) == Some(&Tok::Close) {
                    self.at += idents + 2;
                    return self.unary();
                }
                self.at += 1;
                let v = self.or()?;
                if self.peek() != Some(&Tok::Close) {
                    return Err("unbalanced parentheses".into());
                }
                self.at += 1;
                Ok(v)
            }
            Some(Tok::Ident) => Err("a name that is not a cast".into()),
            _ => Err("expression ends early".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> String {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata")).join(rel);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// 6.18's format (shifts of 1UL, the enum-of-bits layout since 6.10) gives exactly the
    /// built-in table.
    #[test]
    fn the_6_18_format_is_the_builtin_table() {
        let t = GfpNames::from_format(&fixture("6.18/kmem/mm_page_alloc/format")).unwrap();
        assert_eq!(t.source, SOURCE_TRACEFS);
        assert_eq!(t.flags, GfpNames::builtin().flags);
        assert_eq!(t.decode(0xcc0), "GFP_KERNEL");
        assert_eq!(t.decode(0x40_0cc0), "GFP_KERNEL_ACCOUNT");
        assert_eq!(t.decode(0x10_0cca), "GFP_HIGHUSER_MOVABLE");
        assert_eq!(t.decode(0x14_0cca), "GFP_HIGHUSER_MOVABLE|__GFP_COMP");
        assert_eq!(t.decode(0), "none");
        assert_eq!(t.decode(0xcc0 | 0x400_0000), "GFP_KERNEL|0x4000000");
    }

    /// 5.10's format: hex constants with u suffixes, and `__GFP_ATOMIC` (0x200, gone since
    /// 6.3): GFP_ATOMIC is 0xa20 there, 0x820 in 6.18's table.
    #[test]
    fn the_5_10_format_has_its_own_values() {
        let t = GfpNames::from_format(&fixture("pre-6.8/kmem/mm_page_alloc/format")).unwrap();
        let value = |name: &str| t.flags.iter().find(|(_, n)| n == name).unwrap().0;
        assert_eq!(value("GFP_KERNEL"), 0xcc0);
        assert_eq!(value("GFP_USER"), 0x10_0cc0);
        assert_eq!(value("GFP_KERNEL_ACCOUNT"), 0x40_0cc0);
        assert_eq!(t.decode(0xa20), "GFP_ATOMIC");
        assert_eq!(t.decode(0x40_0cc0), "GFP_KERNEL_ACCOUNT");
        assert_eq!(GfpNames::builtin().decode(0xa20), "GFP_ATOMIC|0x200");
    }

    #[test]
    fn without_a_table_masks_stay_hex() {
        let t = GfpNames::none("tracefs: ENOENT");
        assert_eq!(t.decode(0xcc0), "0xcc0");
        assert!(t.source.contains("ENOENT"));
        let dir = std::env::temp_dir().join(format!("oomtrace-gfp-{}", std::process::id()));
        let t = GfpNames::of_tracefs(&dir);
        assert!(
            t.flags.is_empty() && t.source.contains("mm_page_alloc"),
            "{t:?}"
        );
    }

    #[test]
    fn expressions() {
        assert_eq!(eval("(( gfp_t)((((1UL))) << (22)))").unwrap(), 0x40_0000);
        assert_eq!(
            eval("(unsigned long)(((gfp_t)(0x400u|0x800u)) | ((gfp_t)0x40u))"),
            Ok(0xc40)
        );
        assert_eq!(eval("((( gfp_t)0x3u) & ~(( gfp_t)0x1u))"), Ok(2));
        assert!(eval("(foo + )").is_err());
        assert!(eval("(1").is_err());
        assert!(eval("bar").is_err());
    }

    #[test]
    fn damaged_formats_say_why() {
        assert!(
            GfpNames::from_format("name: x\n")
                .unwrap_err()
                .contains("print fmt")
        );
        let no_table = "print fmt: \"order=%d\", REC->order\n";
        assert!(
            GfpNames::from_format(no_table)
                .unwrap_err()
                .contains("__print_flags")
        );
        let bad = "print fmt: \"%s\", __print_flags(REC->gfp_flags, \"|\", {(x y z, \"A\"}\n";
        assert!(GfpNames::from_format(bad).is_err());
        let open = "print fmt: \"%s\", __print_flags(REC->gfp_flags, \"|\", {1, \"A\"\n";
        assert!(GfpNames::from_format(open).is_err());
    }
}
