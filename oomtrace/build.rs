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
        return strip_debug(&out);
    }
    let root = manifest.join("../oomtrace-ebpf");
    let root = root.to_str().context("eBPF crate path is not UTF-8")?;
    let built = aya_build::build_ebpf(
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
    );
    built?;
    strip_debug(&PathBuf::from(std::env::var("OUT_DIR")?).join("oomtrace"))
}

/// Removes the DWARF sections (`.debug_*` and their relocations) from the eBPF object the
/// binary embeds. bpf-linker needs the programs' debug info to emit their BTF (`.BTF`,
/// `.BTF.ext`: kept, and all the kernel and aya use); the DWARF itself is 600 of the object's
/// 695 KB, which aya's parse walked at every launch (every relocation of every section, 17k
/// of them in `.rel.debug_*`) and which stayed in the binary's read-only data.
fn strip_debug(path: &std::path::Path) -> anyhow::Result<()> {
    let context = || format!("removing the DWARF of the eBPF object {}", path.display());
    let data = std::fs::read(path).with_context(context)?;
    let mut elf = object::build::elf::Builder::read(&*data).with_context(context)?;
    let mut removed = false;
    for section in elf.sections.iter_mut() {
        let name = section.name.as_slice();
        if name.starts_with(b".debug_") || name.starts_with(b".rel.debug_") {
            section.delete = true;
            removed = true;
        }
    }
    if !removed {
        return Ok(());
    }
    // bpf-linker names sections from the symbols' string table (`.strtab`); the writer wants
    // a section-name table of its own.
    use object::build::elf::SectionData;
    if !elf
        .sections
        .iter()
        .any(|s| matches!(s.data, SectionData::SectionString))
    {
        let names = elf.sections.add();
        names.name = (&b".shstrtab"[..]).into();
        names.sh_type = object::elf::SHT_STRTAB;
        names.sh_addralign = 1;
        names.data = SectionData::SectionString;
    }
    let mut out = Vec::with_capacity(data.len());
    elf.write(&mut out).with_context(context)?;
    std::fs::write(path, out).with_context(context)
}
