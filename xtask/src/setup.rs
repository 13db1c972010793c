//! Installing what the build needs, idempotently, and saying what is done.
//!
//! - nightly's `rust-src` (the eBPF crate builds `core` for the BPF target);
//! - `bpf-linker`, built from crates.io against the nightly toolchain's own libLLVM (no system
//!   LLVM of the right version exists on Debian bookworm). It lives in a persistent cache
//!   directory keyed by that libLLVM's file name, so a new nightly gets a new linker and clones
//!   of the repository share one.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// bpf-linker version known to work with aya 0.14 and LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// What later steps need: where the tools are and where cargo builds.
pub(crate) struct Env {
    /// PATH with the bpf-linker directory first.
    pub path: OsString,
    pub workspace: PathBuf,
    pub target_dir: PathBuf,
    /// The eBPF object an earlier build of this run made (see [`Env::share_ebpf_object`]):
    /// handed to oomtrace's build script so that no other profile builds it again.
    pub ebpf_object: Option<PathBuf>,
}

impl Env {
    /// A cargo command in the workspace that finds bpf-linker.
    pub(crate) fn cargo(&self) -> Command {
        let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        c.current_dir(&self.workspace).env("PATH", &self.path);
        self.with_ebpf_object(&mut c);
        c
    }

    /// Sets `OOMTRACE_EBPF_OBJECT` on a cargo command when this run has the object already.
    pub(crate) fn with_ebpf_object(&self, c: &mut Command) {
        if let Some(o) = &self.ebpf_object {
            c.env("OOMTRACE_EBPF_OBJECT", o);
        }
    }

    /// Builds the test crate's binaries (bench, soak, hog, …) in release; returns the
    /// directory they are in.
    pub(crate) fn build_test_bins(&self, what: &str) -> anyhow::Result<PathBuf> {
        status(
            self.cargo().args([
                "build",
                "--release",
                "--package",
                "oomtrace-tests",
                "--bins",
            ]),
            what,
        )?;
        Ok(self.target_dir.join("release"))
    }

    /// After a build of oomtrace for `profile` (a dir under the target dir): the eBPF object
    /// its build script made (the newest), for every later cargo command of this run.
    pub(crate) fn share_ebpf_object(&mut self, profile: &str) -> anyhow::Result<()> {
        let build = self.target_dir.join(profile).join("build");
        let newest = std::fs::read_dir(&build)
            .with_context(|| format!("reading {}", build.display()))?
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with("oomtrace-"))
            })
            .map(|e| e.path().join("out").join("oomtrace"))
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
            .max();
        let (_, object) =
            newest.with_context(|| format!("no eBPF object under {}", build.display()))?;
        self.ebpf_object = Some(object);
        Ok(())
    }
}

/// Installs what is missing; returns the environment to build in.
pub(crate) fn ensure() -> anyhow::Result<Env> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf();
    let target_dir =
        env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
    let sysroot = nightly_sysroot()?;
    ensure_rust_src(&sysroot)?;
    let linker_dir = ensure_bpf_linker(&sysroot)?;
    let mut paths = vec![linker_dir];
    paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    Ok(Env {
        path: env::join_paths(paths)?,
        workspace,
        target_dir,
        ebpf_object: None,
    })
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .context("running `rustc +nightly` (is rustup installed?)")?;
    if !out.status.success() {
        bail!(
            "no nightly toolchain: the eBPF programs need one. Install it with \
             `rustup toolchain install nightly --component rust-src` ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn ensure_rust_src(sysroot: &Path) -> anyhow::Result<()> {
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for the nightly toolchain (the eBPF build needs it)");
    status(
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        "installing rust-src",
    )
}

/// The directory holding a working bpf-linker, building it if needed.
fn ensure_bpf_linker(sysroot: &Path) -> anyhow::Result<PathBuf> {
    let libllvm = find_libllvm(&sysroot.join("lib"))?;
    let name = libllvm
        .file_name()
        .and_then(|n| n.to_str())
        .context("libLLVM file name is not UTF-8")?;
    // libLLVM.so.22.1-rust-1.97.0-nightly → llvm-22.1-rust-1.97.0-nightly
    let key = format!("llvm-{}", name.trim_start_matches("libLLVM.so."));
    let prefix = cache_dir()?.join("tools").join(key);
    let bin = prefix.join("bin");
    let linker = bin.join("bpf-linker");
    // bpf-linker finds libLLVM.so through LLVM_PREFIX/lib at build time and keeps an RPATH to
    // that directory, where the loader then looks for the library's soname: link both names.
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    for link_name in ["libLLVM.so", name] {
        let link = lib.join(link_name);
        if std::fs::read_link(&link).ok().as_deref() != Some(libllvm.as_path()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&libllvm, &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    if linker.is_file() && linker_runs(&linker) {
        return Ok(bin);
    }
    let major = name
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .context("cannot read the LLVM version from the libLLVM file name")?
        .to_string();
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {} (about a minute, once) into {}",
        libllvm.display(),
        prefix.display()
    );
    status(
        Command::new("cargo")
            .args(["+stable", "install", "--locked", "--force"])
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{major}"))
            .arg("--root")
            .arg(&prefix)
            .env("LLVM_PREFIX", &prefix)
            .env_remove("CARGO_TARGET_DIR"),
        "building bpf-linker",
    )?;
    if !linker_runs(&linker) {
        bail!(
            "bpf-linker was built but does not run: {}",
            linker.display()
        );
    }
    Ok(bin)
}

fn find_libllvm(lib: &Path) -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir(lib).with_context(|| format!("reading {}", lib.display()))?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| {
            format!(
                "no libLLVM.so.* in {}: this nightly does not ship the LLVM library bpf-linker \
                 needs",
                lib.display()
            )
        })
}

fn linker_runs(linker: &Path) -> bool {
    Command::new(linker)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `$XDG_CACHE_HOME/oomtrace` or `~/.cache/oomtrace`.
pub(crate) fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(x) = env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("oomtrace"));
    }
    let home = env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/oomtrace"))
}

/// Runs a command, failing with what it was doing.
pub(crate) fn status(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let s = cmd
        .status()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    if !s.success() {
        bail!("{what} failed ({s})");
    }
    Ok(())
}

pub(crate) fn is_root() -> bool {
    // Read from /proc to avoid a libc dependency.
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// A command that runs `bin args` as root: directly when we are root, else through `sudo -E`.
pub(crate) fn as_root(bin: &Path, args: &[String]) -> anyhow::Result<Command> {
    if is_root() {
        let mut c = Command::new(bin);
        c.args(args);
        return Ok(c);
    }
    if Command::new("sudo").arg("--version").output().is_err() {
        bail!("oomtrace needs root and sudo is not installed: run this as root");
    }
    eprintln!("xtask: not root: using sudo");
    let mut c = Command::new("sudo");
    c.arg("-E").arg(bin).args(args);
    Ok(c)
}
