//! Builds the eBPF programs (`oomtrace-ebpf`) for the BPF target with nightly and bpf-linker,
//! so that `src/probes.rs` can embed the object: the binary is the only file to copy to a host.

use std::path::PathBuf;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
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
