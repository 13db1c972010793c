//! oomtrace's exported surface, kept deliberate: the library's `pub` items (the binary, the fuzz
//! targets and the benches use them; everything else is `pub(crate)`) are listed in
//! `oomtrace/public-api.txt`, and a unit test fails when the code and the list differ. A change
//! that exports something new shows as a reviewed line there (`OOMTRACE_BLESS=1 cargo test -p
//! xtask public_api` writes the list).

use std::path::Path;

/// `file: kind name` for every `pub` item of the library (not its fields, not test modules).
pub(crate) fn surface(src: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let item = regex_lite(&[
        "fn", "struct", "enum", "const", "static", "type", "trait", "mod", "use",
    ]);
    for (rel, text) in crate::sources::rust_files(src) {
        let rel = rel.to_string_lossy().into_owned();
        // The binary's own files, and the test-only scratch directory.
        let binary = rel == "main.rs" || rel == "cli.rs" || rel.starts_with("cmd/");
        if binary || rel == "scratch.rs" || rel.ends_with("tests.rs") {
            continue;
        }
        for line in crate::sources::without_tests(&text).lines() {
            if let Some(found) = item(line) {
                out.push(format!("{rel}: {found}"));
            }
        }
    }
    out.sort();
    out
}

/// A matcher for `pub KIND NAME` at the start of a line (after indentation, `async`/`unsafe`/
/// `const` qualifiers of a fn), returning `KIND NAME` (for `use`, the whole path).
fn regex_lite(kinds: &'static [&'static str]) -> impl Fn(&str) -> Option<String> {
    move |line: &str| {
        let rest = line.trim_start().strip_prefix("pub ")?;
        let rest = ["async ", "unsafe ", "const fn "]
            .iter()
            .fold(rest, |r, q| {
                if *q == "const fn " {
                    r.strip_prefix("const ")
                        .filter(|x| x.starts_with("fn "))
                        .unwrap_or(r)
                } else {
                    r.strip_prefix(q).unwrap_or(r)
                }
            });
        let (kind, rest) = rest.split_once(' ')?;
        if !kinds.contains(&kind) {
            return None;
        }
        let name: String = if kind == "use" {
            rest.trim_end_matches(['{', ';']).trim().to_string()
        } else {
            rest.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        };
        Some(format!("{kind} {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_api_is_the_committed_list() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../oomtrace");
        let got = surface(&root.join("src")).join("\n") + "\n";
        let file = root.join("public-api.txt");
        if std::env::var_os("OOMTRACE_BLESS").is_some() {
            std::fs::write(&file, &got).unwrap();
        }
        let want = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(got.lines().count() > 20, "no public items found: {got}");
        assert!(
            got == want,
            "oomtrace's public items differ from oomtrace/public-api.txt (if meant: \
             OOMTRACE_BLESS=1 cargo test -p xtask public_api, and review the diff):\n{}",
            diff(&want, &got)
        );
    }

    fn diff(want: &str, got: &str) -> String {
        let w: std::collections::BTreeSet<&str> = want.lines().collect();
        let g: std::collections::BTreeSet<&str> = got.lines().collect();
        let mut out: Vec<String> = w.difference(&g).map(|l| format!("- {l}")).collect();
        out.extend(g.difference(&w).map(|l| format!("+ {l}")));
        out.join("\n")
    }

    #[test]
    fn the_matcher_sees_items_not_fields_nor_crate_items() {
        let m = regex_lite(&["fn", "struct", "use"]);
        assert_eq!(m("    pub fn run(x: u32) {"), Some("fn run".into()));
        assert_eq!(m("pub async fn go() {"), Some("fn go".into()));
        assert_eq!(m("pub const fn f() {"), Some("fn f".into()));
        assert_eq!(m("pub struct Probes {"), Some("struct Probes".into()));
        assert_eq!(m("pub use crate::a::B;"), Some("use crate::a::B".into()));
        assert_eq!(m("    pub plan: Vec<HookPlan>,"), None);
        assert_eq!(m("pub(crate) fn hidden() {"), None);
    }
}
