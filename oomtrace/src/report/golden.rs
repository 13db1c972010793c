//! Outputs pinned byte for byte: every dump under `testdata/dumps/` and the replay corpus in
//! `fuzz/corpus/dump_replay/` is replayed as text, JSON and both with `--events`, and its
//! findings rendered as metrics; each output must equal its file under `testdata/golden/`.
//!
//! A change that alters what users read shows here as a diff of these files. When the change is
//! meant, regenerate them with `OOMTRACE_BLESS=1 cargo test -p oomtrace --lib golden` and review
//! the diff in the commit.

use std::path::{Path, PathBuf};

use super::{ReplayOptions, replay};
use crate::{printer::Format, record::dump::Reader, render::metrics::Metrics, scratch::ScratchDir};

fn inputs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    for dir in [
        root.join("testdata/dumps"),
        root.join("../fuzz/corpus/dump_replay"),
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        all.extend(files);
    }
    assert!(all.len() >= 8, "the golden inputs are missing: {all:?}");
    all
}

/// The report tests' synthetic dump with a stuck victim (written afresh: a dump's bytes carry
/// no clock of the machine that writes it).
fn synthetic_stuck(scratch: &ScratchDir) -> PathBuf {
    let path = scratch.join("synthetic-stuck.dump");
    super::tests::stuck_dump(&path);
    path
}

/// A dump of format 3 as `watch` writes it beside a SIGKILL storm: drained marks after each
/// read of the ring, deaths found at a kill's read recorded before the kill's mark.
fn synthetic_drained(scratch: &ScratchDir) -> PathBuf {
    let path = scratch.join("synthetic-drained.dump");
    super::tests::storm_dump(&path, 0x9e37_79b9, 12, true);
    path
}

/// The outputs of one dump, by the suffix of their golden file.
fn outputs(path: &Path) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (suffix, format, events) in [
        ("txt", Format::Text, false),
        ("json", Format::Json, false),
        ("events.txt", Format::Text, true),
        ("events.json", Format::Json, true),
    ] {
        let opts = ReplayOptions {
            format,
            events,
            timeline: true,
            ..ReplayOptions::default()
        };
        let mut text = Vec::new();
        let r = replay(&mut Reader::open(path).unwrap(), &opts, &mut text).unwrap();
        out.push((suffix, String::from_utf8(text).unwrap()));
        if suffix == "txt" {
            let mut m = Metrics::new(&[]);
            for f in &r.findings {
                let memcg = f.memcg_id().and_then(|id| r.memcg_paths.get(&id).cloned());
                m.finding(f, memcg.as_deref());
            }
            out.push(("prom", m.render(&r.summary)));
        }
    }
    out
}

#[test]
fn golden_outputs_of_the_recorded_dumps_are_unchanged() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden");
    let bless = std::env::var_os("OOMTRACE_BLESS").is_some();
    let mut differ = Vec::new();
    let scratch = ScratchDir::new("golden");
    let written = [synthetic_stuck(&scratch), synthetic_drained(&scratch)];
    for input in inputs().into_iter().chain(written) {
        let name = input.file_name().unwrap().to_string_lossy().into_owned();
        for (suffix, got) in outputs(&input) {
            let file = golden.join(format!("{name}.{suffix}"));
            if bless {
                std::fs::create_dir_all(&golden).unwrap();
                std::fs::write(&file, &got).unwrap();
                continue;
            }
            match std::fs::read_to_string(&file) {
                Ok(want) if want == got => {}
                Ok(_) => differ.push(format!("{} differs", file.display())),
                Err(e) => differ.push(format!("{}: {e}", file.display())),
            }
        }
    }
    assert!(
        differ.is_empty(),
        "outputs changed (regenerate with OOMTRACE_BLESS=1 if meant, and review the diff):\n{}",
        differ.join("\n")
    );
}
