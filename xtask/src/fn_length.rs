//! No function over [`MAX_LINES`] lines: a long function is usually several steps that want
//! names. A unit test (so `cargo xtask test`) scans every Rust file of the workspace with a
//! brace counter that knows comments, strings, raw strings and char literals, and fails on a
//! function longer than the limit unless [`ALLOWED`] names it with the reason. An entry that
//! is no longer over the limit fails too, so the list only shrinks.

use std::path::Path;

/// Lines from a function's `fn` line to its closing brace, both included.
pub(crate) const MAX_LINES: usize = 100;

/// Longer functions that stay, each with why (file, fn, reason). One kind only: exhaustive
/// per-kind matches (one arm per event or finding kind: splitting them would scatter what the
/// compiler checks in one place). The DEBT entries (functions not split yet) are all gone: a
/// new long function is split, not listed.
pub(crate) const ALLOWED: &[(&str, &str, &str)] = &[
    // Exhaustive per-kind matches.
    (
        "oomtrace/src/lifecycle/finding.rs",
        "fmt",
        "one arm per finding kind (Display)",
    ),
    (
        "oomtrace/src/render/events.rs",
        "json",
        "one arm per event kind",
    ),
    (
        "oomtrace/src/render/events.rs",
        "text",
        "one arm per event kind",
    ),
    (
        "oomtrace/src/lifecycle.rs",
        "apply_event",
        "one arm per event kind",
    ),
];

/// A function found in a source file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Function {
    pub(crate) name: String,
    /// 1-based line of `fn`.
    pub(crate) line: usize,
    pub(crate) lines: usize,
}

/// `src` with comments, string and char literals blanked to spaces (newlines kept), so that
/// braces in them do not count.
fn code_only(src: &str) -> Vec<u8> {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        let prev_ident = i > 0 && ident(b[i - 1]);
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = src[i..].find('\n').map_or(b.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let (mut depth, mut j) = (0usize, i);
                while j < b.len() {
                    if b[j..].starts_with(b"/*") {
                        depth += 1;
                        j += 2;
                    } else if b[j..].starts_with(b"*/") {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            // Raw strings: r"…", r#"…"#, br#"…"# (the `b` is an ident char before `r`).
            b'r' if !prev_ident || (i > 0 && b[i - 1] == b'b' && (i < 2 || !ident(b[i - 2]))) => {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let start = i + 2 + hashes;
                let end = b[start..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |p| start + p + close.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i, j + 1);
                i = j + 1;
            }
            // A char literal ('x', '\n', '\u{7f}', '{'), not a lifetime ('a).
            b'\'' => {
                let end = if b.get(i + 1) == Some(&b'\\') {
                    b[i + 2..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map(|p| i + 2 + p)
                } else {
                    let ch = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (b.get(i + 1 + ch) == Some(&b'\'')).then_some(i + 1 + ch)
                };
                match end {
                    Some(e) => {
                        blank(&mut out, i, e + 1);
                        i = e + 1;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Every function with a body in `src`, with its length in lines.
pub(crate) fn functions(src: &str) -> Vec<Function> {
    let code = code_only(src);
    let line_of = |pos: usize| code[..pos].iter().filter(|&&c| c == b'\n').count() + 1;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(p) = code[i..].windows(3).position(|w| w == b"fn ") {
        let at = i + p;
        i = at + 3;
        if at > 0 && ident(code[at - 1]) {
            continue;
        }
        let name_len = code[i..].iter().take_while(|&&c| ident(c)).count();
        if name_len == 0 || code[i].is_ascii_digit() {
            continue; // `fn (…)` types, `fn $name` in macros
        }
        let name = String::from_utf8_lossy(&code[i..i + name_len]).into_owned();
        // The body's `{`, or `;` for a declaration without one, outside parentheses and brackets.
        let mut depth = 0i32;
        let mut open = None;
        for (k, &c) in code.iter().enumerate().skip(i + name_len) {
            match c {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b';' if depth == 0 => break,
                b'{' if depth == 0 => {
                    open = Some(k);
                    break;
                }
                _ => {}
            }
        }
        let Some(open) = open else { continue };
        let mut braces = 0i32;
        let close = code[open..].iter().position(|&c| {
            match c {
                b'{' => braces += 1,
                b'}' => braces -= 1,
                _ => {}
            }
            braces == 0
        });
        let Some(close) = close else { continue };
        let line = line_of(at);
        out.push(Function {
            name,
            line,
            lines: line_of(open + close) - line + 1,
        });
    }
    out
}

/// Where the workspace's Rust code lives (relative to the workspace root).
const ROOTS: &[&str] = &[
    "oomtrace/src",
    "oomtrace/benches",
    "oomtrace/build.rs",
    "oomtrace-common/src",
    "oomtrace-ebpf/src",
    "xtask/src",
    "tests/src",
    "tests/tests",
    "fuzz/fuzz_targets",
    "oomtrace/examples",
];

/// `path:line fn name (N lines)` for every function over the limit in the workspace.
pub(crate) fn too_long(workspace: &Path) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    for root in ROOTS {
        let root_path = workspace.join(root);
        let files = match root_path.is_file() {
            true => vec![(
                std::path::PathBuf::new(),
                std::fs::read_to_string(&root_path).unwrap(),
            )],
            false => crate::sources::rust_files(&root_path),
        };
        for (rel, text) in files {
            let path = Path::new(root).join(rel);
            let path = path.to_string_lossy().trim_end_matches('/').to_string();
            for f in functions(&text) {
                if f.lines > MAX_LINES {
                    out.push((format!("{path}:{}", f.line), f.name, f.lines));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_function_is_over_the_limit_unless_allowed() {
        let found = too_long(&crate::sources::workspace());
        let allowed = |place: &str, name: &str| {
            ALLOWED
                .iter()
                .any(|(file, n, _)| *n == name && place.starts_with(&format!("{file}:")))
        };
        let over: Vec<String> = found
            .iter()
            .filter(|(place, name, _)| !allowed(place, name))
            .map(|(place, name, lines)| format!("{place} fn {name}: {lines} lines"))
            .collect();
        let stale: Vec<String> = ALLOWED
            .iter()
            .filter(|(file, name, _)| {
                !found
                    .iter()
                    .any(|(p, n, _)| n == name && p.starts_with(&format!("{file}:")))
            })
            .map(|(file, name, _)| format!("{file} fn {name}"))
            .collect();
        assert!(
            over.is_empty() && stale.is_empty(),
            "functions over {MAX_LINES} lines (split them, or allow an exhaustive per-kind \
             match with its reason in xtask/src/fn_length.rs):\n{}\nallowed but no longer \
             over the limit (remove from ALLOWED):\n{}",
            over.join("\n"),
            stale.join("\n")
        );
    }

    #[test]
    fn the_scanner_counts_bodies_not_braces_in_text() {
        let src = r####"
/// fn doc() { in a comment
fn a() {
    let s = "}}} {";
    let r = r#"fn x() { "# ;
    let c = '{';
    let l: &'static str = "x";
    /* { nested /* } */ { */
}
trait T {
    fn declared(&self) -> u8;
    fn defaulted(&self) -> u8 {
        let f: fn(u8) -> u8 = |x| x;
        f(1)
    }
}
fn b<const N: usize>(x: [u8; N]) -> [u8; N] where [u8; N]: Copy { x }
"####;
        let got: Vec<(String, usize, usize)> = functions(src)
            .into_iter()
            .map(|f| (f.name, f.line, f.lines))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".to_string(), 3, 7),
                ("defaulted".to_string(), 12, 4),
                ("b".to_string(), 17, 1),
            ]
        );
    }
}
