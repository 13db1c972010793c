//! Builds the eBPF programs (`oomtrace-ebpf`) for the BPF target with nightly and bpf-linker,
//! so that `src/kernel/probes.rs` can embed the object: the binary is the only file to copy to a host.

use std::path::PathBuf;

use anyhow::Context as _;

/// `oomtrace --version` names the revision it was built from: `git describe`-like
/// (`abc1234`, `-dirty` with uncommitted changes), or `unknown` outside a git checkout.
fn git_revision(manifest: &std::path::Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(manifest)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(rev) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    // Where HEAD and the index live: rebuild when either changes (a commit, a checkout).
    for f in ["HEAD", "index"] {
        if let Some(p) = git(&["rev-parse", "--git-path", f]) {
            let p = manifest.join(p);
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{rev}-dirty") } else { rev }
}

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    println!(
        "cargo:rustc-env=OOMTRACE_GIT_REVISION={}",
        git_revision(&manifest)
    );
    // The eBPF object is the same bytes for every profile of this crate (aya-build always
    // builds it in release for bpfel): `cargo xtask test` builds it once, with the first
    // build, and hands it to the others (tests, clippy, the static release, the fuzz targets)
    // here instead of building it again in each.
    println!("cargo:rerun-if-env-changed=OOMTRACE_EBPF_OBJECT");
    if let Some(built) = std::env::var_os("OOMTRACE_EBPF_OBJECT") {
        let built = PathBuf::from(built);
        println!("cargo:rerun-if-changed={}", built.display());
        let out = PathBuf::from(std::env::var("OUT_DIR")?).join("oomtrace");
        std::fs::copy(&built, &out).with_context(|| {
            format!(
                "OOMTRACE_EBPF_OBJECT: copying the eBPF object {} to {}",
                built.display(),
                out.display()
            )
        })?;
        return Ok(());
    }
    let root = manifest.join("../oomtrace-ebpf");
    let root = root.to_str().context("eBPF crate path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "oomtrace-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context(
        "building the eBPF programs failed; `cargo xtask run` / `cargo xtask test` install what \
         they need (nightly rust-src, bpf-linker on PATH)",
    )
}
