//! No file imports one that imports it back: the module graph of each crate (from `use crate::…`,
//! `crate::…` paths and `super::…`, outside `#[cfg(test)] mod tests`) must have no cycle, neither
//! between files nor between rooms (the top-level modules). Checked by a unit test, so by
//! `cargo xtask test`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// Module path (`host::deathwatch`; `` for the crate root) → the source without its test module.
fn modules(src_root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (rel, src) in crate::sources::rust_files(src_root) {
        let mut module = rel.with_extension("").to_string_lossy().replace('/', "::");
        if let Some(m) = module.strip_suffix("::mod") {
            module = m.to_string();
        }
        if module == "lib" || module == "main" {
            module.clear();
        }
        out.insert(module, crate::sources::without_tests(&src).to_string());
    }
    out
}

/// Every path a `crate::` or `super::` prefix starts in `src`, brace groups expanded.
fn paths(src: &str, module: &str) -> Vec<Vec<String>> {
    let parent: Vec<String> = module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let parent = &parent[..parent.len().saturating_sub(1)];
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent.to_vec())] {
        let mut rest = src;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().next_back();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let end = tree_end(rest);
            expand(&rest[..end], &base, &mut out);
        }
    }
    out
}

/// Length of the path tree at the start of `s`: identifiers, `::` and balanced braces.
fn tree_end(s: &str) -> usize {
    let mut depth = 0i32;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            c if c.is_alphanumeric() || c == '_' || c == ':' || c.is_whitespace() => {}
            ',' if depth > 0 => {}
            _ if depth > 0 => {}
            _ => return i,
        }
    }
    s.len()
}

fn expand(tree: &str, base: &[String], out: &mut Vec<Vec<String>>) {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        let mut p = base.to_vec();
        p.extend(
            tree.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        out.push(p);
        return;
    };
    let mut p = base.to_vec();
    p.extend(
        tree[..open]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    );
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&inner[start..i], &p, out);
                start = i + 1;
            }
            _ => {}
        }
    }
    expand(&inner[start..], &p, out);
}

/// The file-level import graph of the crate under `src_root`.
pub(crate) fn graph(src_root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src_root);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, src) in &modules {
        let edges = g.entry(module.clone()).or_default();
        for path in paths(src, module) {
            // The longest prefix of the path that is a file.
            let target = (1..=path.len())
                .rev()
                .map(|k| path[..k].join("::"))
                .find(|m| modules.contains_key(m));
            if let Some(t) = target
                && t != *module
            {
                edges.insert(t);
            }
        }
    }
    g
}

/// The strongly connected components of more than one node (each a cycle), sorted.
pub(crate) fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Reachability by DFS is enough at this size (tens of files).
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(n) = stack.pop() {
            for m in g.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> = g.keys().map(|k| (k, reach(k))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut placed = BTreeSet::new();
    for a in g.keys() {
        if placed.contains(a) || !reach[a].contains(a) {
            continue;
        }
        let comp: Vec<String> = g
            .keys()
            .filter(|b| reach[a].contains(*b) && reach[*b].contains(a))
            .cloned()
            .collect();
        placed.extend(comp.iter().cloned());
        out.push(comp);
    }
    out
}

/// The graph between rooms: a file's room is its top-level module (`lib` for the root).
pub(crate) fn rooms(g: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let room = |m: &str| {
        m.split("::")
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or("lib")
            .to_string()
    };
    let mut r: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, bs) in g {
        let ra = room(a);
        let edges = r.entry(ra.clone()).or_default();
        for b in bs {
            let rb = room(b);
            if rb != ra && ra != "lib" && rb != "lib" {
                edges.insert(rb);
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crates() -> Vec<std::path::PathBuf> {
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        ["oomtrace/src", "xtask/src", "tests/src"]
            .iter()
            .map(|c| ws.join(c))
            .collect()
    }

    #[test]
    fn no_file_or_room_imports_one_that_imports_it_back() {
        let mut problems = Vec::new();
        for root in crates() {
            let g = graph(&root);
            assert!(g.len() > 3, "{}: no modules read", root.display());
            for c in cycles(&g) {
                problems.push(format!("{}: files {c:?}", root.display()));
            }
            for c in cycles(&rooms(&g)) {
                problems.push(format!("{}: rooms {c:?}", root.display()));
            }
        }
        assert!(
            problems.is_empty(),
            "import cycles:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn the_checker_sees_a_cycle_through_a_brace_group_and_super() {
        let dir = std::env::temp_dir().join(format!("xtask-imports-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(dir.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
        std::fs::write(dir.join("a/mod.rs"), "pub mod x;\n").unwrap();
        std::fs::write(dir.join("a/x.rs"), "use crate::{b::{self, f}};\n").unwrap();
        std::fs::write(dir.join("b.rs"), "fn g() { crate::a::x::h() }\n").unwrap();
        let g = graph(&dir);
        let files = cycles(&g);
        let rooms = cycles(&rooms(&g));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(files, vec![vec!["a::x".to_string(), "b".to_string()]]);
        assert_eq!(rooms, vec![vec!["a".to_string(), "b".to_string()]]);
    }
}
