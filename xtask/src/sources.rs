//! The workspace's Rust sources as text, for the checks that read code (imports, public API,
//! function length): one walker, one way to cut off a file's unit-test module.

use std::path::{Path, PathBuf};

/// The workspace root (the parent of xtask's manifest directory).
pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Every `.rs` file below `root`, as (path relative to `root`, text), sorted by path.
pub(crate) fn rust_files(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            out.push((path.strip_prefix(root).unwrap().to_path_buf(), text));
        }
    }
    out.sort();
    out
}

/// `text` up to its `#[cfg(test)] mod tests` (all of it when it has none).
pub(crate) fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}
