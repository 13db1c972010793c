//! `cargo xtask vm`: run the end-to-end suite inside other kernels under QEMU.
//!
//! This host forbids fentry and has no kprobes, so the `oom_kill_process` and
//! `mem_cgroup_out_of_memory` hooks can only be exercised in a guest. Debian's generic kernels
//! have both, and cgroup v2. Everything comes from the Debian archive with `apt-get download` +
//! `dpkg -x` into a cache (nothing is installed on the host: installing qemu-system-x86 would
//! remove the host's newer qemu-utils). QEMU runs with TCG: this machine's /dev/kvm cannot run
//! stock kernels. The guest's root is the host's `/`, shared read-only over virtio-9p, so the
//! very same test binaries run inside; the cargo target dir is shared read-write on top (test
//! binaries and results, wherever the clone lives).
//! The guest's exit code comes back through a file in it, never from the console.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;

use crate::setup;

/// A kernel to test in: a name for people, the Debian package that pulls in the newest build
/// of it, and the suite it comes from when that is not the host's own release. The list is
/// data: `xtask/matrix.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KernelSpec {
    pub(crate) name: String,
    pub(crate) package: String,
    /// A Debian suite (`bullseye`, `sid`) resolved in xtask's own apt state; `None`: the
    /// host's sources.
    pub(crate) suite: Option<String>,
}

/// `xtask/matrix.toml`: `[[kernel]]` tables and nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Matrix {
    #[serde(default)]
    kernel: Vec<KernelSpec>,
}

/// Parses the `[[kernel]]` tables of `matrix.toml`: `name` and `package`, and an optional
/// `suite`, all strings; any other key is an error.
pub(crate) fn parse_kernels(text: &str) -> anyhow::Result<Vec<KernelSpec>> {
    let matrix: Matrix = toml::from_str(text).map_err(|e| anyhow!("matrix.toml: {e}"))?;
    for k in &matrix.kernel {
        // It goes into a path and a sources.list line.
        if let Some(suite) = &k.suite
            && (suite.is_empty() || !suite.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            bail!(
                "matrix.toml: kernel `{}`: suite `{suite}` is not a suite name",
                k.name
            );
        }
    }
    Ok(matrix.kernel)
}

pub(crate) fn load_kernels() -> anyhow::Result<Vec<KernelSpec>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("matrix.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_kernels(&text)
}

fn vm_cache() -> anyhow::Result<PathBuf> {
    Ok(setup::cache_dir()?.join("vm"))
}

fn output(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Package lists older than this are refreshed before they are used: a fresh machine's lists
/// can be months old, and then the newest kernel builds (and `linux-image-6.12-amd64`) are not
/// found, or their files have already left the archive.
const APT_LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The Debian archive the extra suites come from: the host's own sources use it too.
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// Debian's archive keys as the host has them (package debian-archive-keyring).
const HOST_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Where apt looks packages up and downloads them from.
///
/// - `System`: the host's own sources and lists (its release: QEMU and the libraries it needs,
///   and bookworm's kernels). Refreshing them is the one thing done to the host's apt.
/// - `Suite`: one more Debian suite (bullseye, sid) in an apt state of our own under the cache
///   dir: its own sources.list, lists and caches, passed to apt with `-o Dir::…`; the host's
///   sources are never touched. The suite's InRelease is verified by apt with gpgv against
///   Debian's archive keyring (`signed-by`), and an unsigned or badly signed suite is an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AptState {
    System,
    Suite(String),
}

/// Held around whatever runs apt in this process (the guests' preparation runs beside the
/// host's steps, which fetch Prometheus): apt's own locks would fail the second user.
pub(crate) static APT: Mutex<()> = Mutex::new(());

/// The apt states `apt-get update` has already run for in this process (never twice).
static APT_UPDATED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

impl AptState {
    fn of(spec: &KernelSpec) -> Self {
        spec.suite.clone().map_or(AptState::System, AptState::Suite)
    }

    fn key(&self) -> &str {
        match self {
            AptState::System => "system",
            AptState::Suite(s) => s,
        }
    }

    /// The private state's directory (none for the system's).
    fn dir(&self) -> anyhow::Result<Option<PathBuf>> {
        Ok(match self {
            AptState::System => None,
            AptState::Suite(s) => Some(vm_cache()?.join("apt").join(s)),
        })
    }

    fn lists_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(self
            .dir()?
            .map_or_else(|| PathBuf::from("/var/lib/apt/lists"), |d| d.join("lists")))
    }

    /// Written after each successful `apt-get update`: an update that finds nothing new leaves
    /// the lists' own times alone, and they would look stale forever.
    fn stamp(&self) -> anyhow::Result<PathBuf> {
        Ok(match self.dir()? {
            None => vm_cache()?.join("apt-updated"),
            Some(d) => d.join("updated"),
        })
    }

    /// `apt-get` or `apt-cache` working on this state. For a suite, everything apt reads or
    /// writes about sources, lists, caches and pins is ours; signature checks are on whatever
    /// the host's apt.conf says (a repository apt cannot verify is an error).
    fn command(&self, program: &str) -> anyhow::Result<Command> {
        let mut c = Command::new(program);
        // Our cache dir (under /root) is not writable by apt's sandbox user: say so instead of
        // a warning per file.
        c.args(["-o", "APT::Sandbox::User=root"]);
        if let Some(dir) = self.dir()? {
            let opt = |c: &mut Command, key: &str, value: &Path| {
                c.arg("-o").arg(format!("{key}={}", value.display()));
            };
            opt(&mut c, "Dir::Etc::sourcelist", &dir.join("sources.list"));
            opt(&mut c, "Dir::Etc::sourceparts", &dir.join("empty.d"));
            opt(&mut c, "Dir::Etc::preferences", &dir.join("preferences"));
            opt(&mut c, "Dir::Etc::preferencesparts", &dir.join("empty.d"));
            opt(&mut c, "Dir::State::Lists", &dir.join("lists"));
            opt(&mut c, "Dir::Cache", &dir.join("cache"));
            c.args([
                "-o",
                "Acquire::AllowInsecureRepositories=false",
                "-o",
                "Acquire::AllowDowngradeToInsecureRepositories=false",
            ]);
        }
        Ok(c)
    }

    /// Creates the private state's directories and sources.list (rewritten every time: it is
    /// derived from the suite and the keyring in use).
    fn init(&self, keyring: &Path) -> anyhow::Result<()> {
        let (Some(dir), AptState::Suite(suite)) = (self.dir()?, self) else {
            return Ok(());
        };
        for sub in ["lists/partial", "cache/archives/partial", "empty.d"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // Packages only: no translations, no AppStream metadata (the host's apt.conf may ask
        // for them); amd64 only, whatever foreign architectures the host has.
        let line = format!(
            "deb [arch=amd64 target=Packages signed-by={}] {DEBIAN_MIRROR} {suite} main\n",
            keyring.display()
        );
        let list = dir.join("sources.list");
        std::fs::write(&list, line).with_context(|| format!("writing {}", list.display()))
    }

    /// Time since the lists were last refreshed: the newest list, or our own stamp.
    fn lists_age(&self) -> Option<Duration> {
        let lists = std::fs::read_dir(self.lists_dir().ok()?)
            .ok()?
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.ends_with("Release") || n.contains("Packages"))
            })
            .filter_map(|e| e.metadata().ok()?.modified().ok());
        let stamp = self
            .stamp()
            .ok()
            .and_then(|s| std::fs::metadata(s).ok()?.modified().ok());
        lists
            .chain(stamp)
            .max()
            .and_then(|newest| newest.elapsed().ok())
    }

    /// Makes sure the package lists exist and are recent: updates them when `probe` (a package
    /// this state must know) is unknown or the newest list is older than [`APT_LISTS_MAX_AGE`].
    pub(crate) fn ensure_lists(&self, probe: &str) -> anyhow::Result<()> {
        if let AptState::Suite(_) = self {
            self.init(&keyring()?)?;
        }
        let known = self
            .command("apt-cache")?
            .args(["show", probe])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let why = if !known {
            format!("{probe} is unknown: the package lists are missing or old")
        } else if let Some(age) = self.lists_age().filter(|a| *a > APT_LISTS_MAX_AGE) {
            format!("package lists are {} days old", age.as_secs() / 86_400)
        } else {
            return Ok(());
        };
        self.update(&why)
    }

    /// Runs `apt-get update` on this state (at most once per run of xtask). For a suite: with
    /// gpgv present (installed if not), and, if the host's archive keyring cannot verify the
    /// suite (a key newer than the host's keyring package), once more with the newest
    /// debian-archive-keyring the host's own, verified, sources offer.
    fn update(&self, why: &str) -> anyhow::Result<()> {
        if !APT_UPDATED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.key().to_string())
        {
            return Ok(());
        }
        eprintln!("xtask: apt-get update, {} ({why})", self.describe());
        match self {
            AptState::System => setup::status(
                Command::new("apt-get").args(["update", "-qq"]),
                "apt-get update",
            )?,
            AptState::Suite(_) => {
                ensure_gpgv()?;
                self.init(&keyring()?)?;
                if let Err(why) = self.update_verified()? {
                    eprintln!(
                        "xtask: {}: the signature did not verify with {} ({why}): trying the \
                         newest debian-archive-keyring",
                        self.describe(),
                        keyring()?.display()
                    );
                    self.init(&newest_keyring()?)?;
                    if let Err(why) = self.update_verified()? {
                        bail!(
                            "apt-get update, {}: the suite's signature does not verify: {why}",
                            self.describe()
                        );
                    }
                }
            }
        }
        let stamp = self.stamp()?;
        if let Some(dir) = stamp.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&stamp, "").with_context(|| format!("writing {}", stamp.display()))
    }

    /// `apt-get update` of a private suite: `Ok(Err(apt's words))` when apt could not verify
    /// the suite's InRelease with the keyring (it then refuses the suite), `Err` on any other
    /// failure.
    fn update_verified(&self) -> anyhow::Result<Result<(), String>> {
        let out = self
            .command("apt-get")?
            .args(["update", "-qq"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("apt-get update: cannot start apt-get")?;
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let unverified = [
            "NO_PUBKEY",
            "EXPKEYSIG",
            "BADSIG",
            "not signed",
            "GPG error",
        ]
        .iter()
        .any(|m| err.contains(m));
        if unverified {
            return Ok(Err(err));
        }
        if !out.status.success() {
            bail!("apt-get update, {}, failed: {err}", self.describe());
        }
        // apt keeps an InRelease only once gpgv has verified it against the keyring.
        let lists = self.lists_dir()?;
        let verified = std::fs::read_dir(&lists)?.flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.ends_with("_InRelease"))
        });
        anyhow::ensure!(
            verified,
            "apt-get update, {}: no verified InRelease in {}",
            self.describe(),
            lists.display()
        );
        Ok(Ok(()))
    }

    fn describe(&self) -> String {
        match self {
            AptState::System => "the host's sources".into(),
            AptState::Suite(s) => format!("Debian {s} (xtask's own apt state)"),
        }
    }

    /// Runs an apt step; if it fails and the lists were not refreshed yet in this run, refreshes
    /// them and tries once more (a package that left the archive, a list that predates a build).
    fn with_fresh_lists<T>(
        &self,
        what: &str,
        mut step: impl FnMut() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match step() {
            Ok(v) => Ok(v),
            Err(e)
                if !APT_UPDATED
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(self.key()) =>
            {
                self.update(&format!("{what} failed: {e:#}"))?;
                step().with_context(|| format!("{what}, after apt-get update"))
            }
            Err(e) => Err(e),
        }
    }
}

/// The keyring the private suites are verified against: the newest debian-archive-keyring
/// unpacked by [`newest_keyring`] if an earlier run needed one, else the host's.
fn keyring() -> anyhow::Result<PathBuf> {
    let fetched = vm_cache()?
        .join("keyring")
        .join(HOST_KEYRING.trim_start_matches('/'));
    if fetched.is_file() {
        return Ok(fetched);
    }
    if Path::new(HOST_KEYRING).is_file() {
        return Ok(HOST_KEYRING.into());
    }
    newest_keyring()
}

/// Downloads the newest debian-archive-keyring from the host's own sources (verified by the
/// host's apt) and unpacks it into the cache: for a suite signed by a key newer than the host's
/// keyring package.
fn newest_keyring() -> anyhow::Result<PathBuf> {
    let into = vm_cache()?.join("keyring");
    let _ = std::fs::remove_dir_all(&into);
    // Not the cached .deb: the point is a newer one.
    let debs = vm_cache()?.join("debs");
    if let Ok(entries) = std::fs::read_dir(&debs) {
        for e in entries.flatten() {
            if e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("debian-archive-keyring_"))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    AptState::System.update("a newer debian-archive-keyring")?;
    fetch_unpack(&AptState::System, &["debian-archive-keyring".into()], &into)?;
    let path = into.join(HOST_KEYRING.trim_start_matches('/'));
    anyhow::ensure!(
        path.is_file(),
        "debian-archive-keyring has no {HOST_KEYRING}"
    );
    Ok(path)
}

/// apt verifies InRelease files with gpgv: install it if the host lacks it.
fn ensure_gpgv() -> anyhow::Result<()> {
    let present = Command::new("gpgv")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: installing gpgv (apt verifies the extra suites' signatures with it)");
    AptState::System.ensure_lists("gpgv")?;
    AptState::System.with_fresh_lists("apt-get install gpgv", || {
        setup::status(
            Command::new("apt-get").args(["install", "-y", "-qq", "gpgv"]),
            "apt-get install gpgv",
        )
    })
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Debian's package `pkg` unpacked into `root` once (a `.ready` marker says it was; a
/// half-unpacked tree from an interrupted run is unpacked anew), never installed: the tools the
/// suite borrows (prometheus, runc).
pub(crate) fn unpack_debian_once(pkg: &str, root: &Path) -> anyhow::Result<()> {
    let ready = root.join(".ready");
    if !ready.exists() {
        let _apt = APT.lock().unwrap_or_else(|e| e.into_inner());
        let apt = AptState::System;
        apt.ensure_lists(pkg)?;
        let _ = std::fs::remove_dir_all(root);
        fetch_unpack(&apt, &[pkg.into()], root)?;
        std::fs::write(&ready, "")?;
    }
    Ok(())
}

/// Fails unless `bin --version` runs and succeeds (saying its stderr).
pub(crate) fn runs_version(bin: &Path) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} --version failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Downloads (once, into the shared .deb cache) and unpacks packages into `into`.
pub(crate) fn fetch_unpack(apt: &AptState, pkgs: &[String], into: &Path) -> anyhow::Result<()> {
    let debs = vm_cache()?.join("debs");
    std::fs::create_dir_all(&debs)?;
    let have = |pkg: &str| -> Option<PathBuf> {
        std::fs::read_dir(&debs)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
            })
    };
    let missing: Vec<&String> = pkgs.iter().filter(|p| have(p).is_none()).collect();
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        eprintln!(
            "xtask: downloading {} ({})",
            names.join(" "),
            apt.describe()
        );
        apt.with_fresh_lists("apt-get download", || {
            setup::status(
                apt.command("apt-get")?
                    .arg("download")
                    .args(&names)
                    .current_dir(&debs),
                "apt-get download",
            )
        })?;
    }
    std::fs::create_dir_all(into)?;
    for p in pkgs {
        let deb = have(p).with_context(|| format!("{p}.deb missing after download"))?;
        setup::status(
            Command::new("dpkg").arg("-x").arg(&deb).arg(into),
            &format!("unpacking {p}"),
        )?;
    }
    Ok(())
}

/// QEMU, busybox and kmod unpacked from Debian packages, runnable without installing.
pub(crate) struct Tools {
    root: PathBuf,
}

impl Tools {
    fn qemu(&self) -> Command {
        let mut c = Command::new(self.root.join("usr/bin/qemu-system-x86_64"));
        c.env("LD_LIBRARY_PATH", self.ld_path());
        c
    }

    fn ld_path(&self) -> String {
        format!(
            "{0}/usr/lib/x86_64-linux-gnu:{0}/lib/x86_64-linux-gnu",
            self.root.display()
        )
    }

    /// kmod acts by the name it is called as: `depmod`, `modprobe`.
    fn kmod(&self, as_name: &str) -> anyhow::Result<Command> {
        let link = self.root.join("bin").join(as_name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("kmod", &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
        Ok(Command::new(link))
    }

    fn busybox(&self) -> PathBuf {
        self.root.join("bin/busybox")
    }
}

/// Prepares the tools (idempotent). Fails with what is missing: a machine that cannot boot
/// guests must fail the matrix, never pass it silently.
pub(crate) fn tools() -> anyhow::Result<Tools> {
    let root = vm_cache()?.join("tools");
    let tools = Tools { root };
    let ready = tools.root.join(".ready");
    if !ready.exists() {
        let apt = AptState::System;
        apt.ensure_lists("busybox-static")?;
        // Every library QEMU needs that the host lacks (transitively), plus its firmware.
        // Alternatives apt lists that QEMU does not need are skipped; the `--version` check
        // below proves the result runs.
        let deps = apt.with_fresh_lists("apt-cache depends qemu-system-x86", || {
            output(
                apt.command("apt-cache")?.args([
                    "depends",
                    "--recurse",
                    "--no-recommends",
                    "--no-suggests",
                    "--no-conflicts",
                    "--no-breaks",
                    "--no-replaces",
                    "--no-enhances",
                    "--no-pre-depends",
                    "qemu-system-x86",
                ]),
                "apt-cache depends",
            )
        })?;
        const SKIP: [&str; 4] = [
            "libelogind0",
            "libdebian-installer4",
            "libnewt0.52",
            "libtextwrap1",
        ];
        let mut pkgs: Vec<String> = deps
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.starts_with('<'))
            .map(str::trim)
            .filter(|p| {
                p.starts_with("lib")
                    || p.starts_with("qemu-")
                    || *p == "seabios"
                    || *p == "ipxe-qemu"
            })
            .filter(|p| !SKIP.contains(p) && !installed(p))
            .map(str::to_string)
            .collect();
        pkgs.extend(["qemu-system-x86", "busybox-static", "kmod"].map(String::from));
        pkgs.sort();
        pkgs.dedup();
        fetch_unpack(&apt, &pkgs, &tools.root)?;
        std::fs::write(&ready, "")?;
    }
    let v = tools
        .qemu()
        .arg("--version")
        .output()
        .context("running the unpacked QEMU")?;
    if !v.status.success() {
        bail!(
            "the unpacked QEMU does not run (missing libraries?): {}",
            String::from_utf8_lossy(&v.stderr).trim()
        );
    }
    Ok(tools)
}

/// A kernel unpacked, with its depmod run and an initramfs built.
pub(crate) struct Prepared {
    pub(crate) release: String,
    pub(crate) vmlinuz: PathBuf,
    pub(crate) initramfs: PathBuf,
}

/// `apt-cache depends PKG`: the plain (not alternative) dependencies.
fn depends(apt: &AptState, pkg: &str) -> anyhow::Result<Vec<String>> {
    let out = apt.with_fresh_lists(&format!("resolving {pkg}"), || {
        output(
            apt.command("apt-cache")?.args(["depends", pkg]),
            "apt-cache depends",
        )
    })?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::to_string)
        .collect())
}

/// Resolves the meta-package to the newest concrete image package, plus the packages of the same
/// build it is split into: sid's `linux-image-R` is an empty package that depends on
/// `linux-binary-R` (the vmlinuz), `linux-modules-R` and `linux-base-R`, all of one version.
/// Older images hold everything themselves and depend on no `linux-*-R`.
fn resolve_package(apt: &AptState, spec: &KernelSpec) -> anyhow::Result<(String, Vec<String>)> {
    let image = depends(apt, &spec.package)?
        .into_iter()
        .find(|p| p.starts_with("linux-image-"))
        // Already a concrete image package.
        .unwrap_or_else(|| spec.package.clone());
    let build = image.trim_start_matches("linux-image-").to_string();
    let mut parts = vec![image.clone()];
    parts.extend(
        depends(apt, &image)?
            .into_iter()
            .filter(|p| p.starts_with("linux-") && p.ends_with(&format!("-{build}"))),
    );
    Ok((image, parts))
}

/// The module tree of an unpacked kernel: `lib/modules/R` (Debian up to trixie) or
/// `usr/lib/modules/R` (sid's split packages, which also put the vmlinuz there, without /boot).
/// depmod and modprobe (bookworm's kmod) look under `lib/modules` only: a symlink makes the
/// second layout look like the first.
fn kernel_layout(dir: &Path, pkg: &str) -> anyhow::Result<(String, PathBuf)> {
    let find = |modules: &Path| -> Option<String> {
        std::fs::read_dir(modules)
            .ok()?
            .flatten()
            .filter(|e| e.path().is_dir())
            .find_map(|e| e.file_name().to_str().map(str::to_string))
    };
    if let Some(release) = find(&dir.join("lib/modules")) {
        let vmlinuz = [
            dir.join(format!("boot/vmlinuz-{release}")),
            dir.join(format!("lib/modules/{release}/vmlinuz")),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("{pkg}: no vmlinuz for {release}"))?;
        return Ok((release, vmlinuz));
    }
    let release = find(&dir.join("usr/lib/modules"))
        .with_context(|| format!("{pkg} has neither lib/modules nor usr/lib/modules"))?;
    std::fs::create_dir_all(dir.join("lib/modules"))?;
    let link = dir.join("lib/modules").join(&release);
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(format!("../../usr/lib/modules/{release}"), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    kernel_layout(dir, pkg)
}

pub(crate) fn prepare(tools: &Tools, spec: &KernelSpec) -> anyhow::Result<Prepared> {
    let apt = AptState::of(spec);
    AptState::System.ensure_lists("busybox-static")?;
    apt.ensure_lists(&spec.package)?;
    let (pkg, parts) = resolve_package(&apt, spec)?;
    let dir = vm_cache()?.join("kernels").join(&pkg);
    let ready = dir.join(".ready");
    if !ready.exists() {
        fetch_unpack(&apt, &parts, &dir)?;
    }
    let (release, vmlinuz) = kernel_layout(&dir, &pkg)?;
    let initramfs = dir.join("initramfs.cpio");
    if !ready.exists() {
        eprintln!("xtask: depmod for {release}");
        setup::status(
            tools.kmod("depmod")?.arg("-b").arg(&dir).arg(&release),
            "depmod",
        )?;
        std::fs::write(&ready, &pkg)?;
    }
    // Cheap (about a second), so always rebuilt: it then always matches this INIT.
    build_initramfs(tools, &dir, &release, &initramfs)?;
    Ok(Prepared {
        release,
        vmlinuz,
        initramfs,
    })
}

const INIT: &str = r#"#!/bin/busybox sh
# oomtrace guest init: mount the host root read-only and the shared directory read-write, run
# the command, report its exit code through the results directory in the share, power off.
B=/bin/busybox
$B mkdir -p /proc /sys /dev /newroot
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
$B ip link set lo up
for m in /modules/*.ko; do $B insmod "$m" || echo "init: insmod $m failed"; done
for try in 1 2 3 4 5 6 7 8 9 10; do
  $B mount -t 9p -o trans=virtio,version=9p2000.L hostroot /newroot && break
  $B sleep 0.3
done
for d in tmp run var/tmp root; do $B mount -t tmpfs tmpfs "/newroot/$d"; done
# The shared directory (the cargo target dir: test binaries and results) goes on top, so that
# it is reachable even when it lives under one of the tmpfs mounts (a clone in /tmp or /root).
$B mkdir -p "/newroot$share" 2>/dev/null
$B mount -t 9p -o trans=virtio,version=9p2000.L share "/newroot$share" || echo "init: no shared dir"
$B mount -t proc proc /newroot/proc
$B mount -t sysfs sysfs /newroot/sys
$B mount -t devtmpfs devtmpfs /newroot/dev
$B mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
$B mount -t tracefs tracefs /newroot/sys/kernel/tracing
$B mount -t debugfs debugfs /newroot/sys/kernel/debug
$B mount -t bpf bpf /newroot/sys/fs/bpf
$B chroot /newroot /bin/sh "$results/cmd.sh" > "/newroot$results/output.log" 2>&1
echo $? > "/newroot$results/exit-code"
$B sync
$B poweroff -f
"#;

/// Writes a newc cpio archive: the init script, busybox, and the modules the guest needs (9p for
/// the shared root, fuse for the stuck-victim tests) in load order.
fn build_initramfs(tools: &Tools, kdir: &Path, release: &str, out: &Path) -> anyhow::Result<()> {
    // One module per call: further names would be taken as module parameters.
    let mut deps = String::new();
    for module in ["virtio_pci", "9pnet_virtio", "9p", "fuse"] {
        deps += &output(
            tools
                .kmod("modprobe")?
                .args(["--show-depends", "-d"])
                .arg(kdir)
                .args(["-S", release, module]),
            "modprobe --show-depends",
        )?;
    }
    let mut files: Vec<(String, u32, Vec<u8>)> = vec![
        ("init".into(), 0o100_755, INIT.as_bytes().to_vec()),
        (
            "bin/busybox".into(),
            0o100_755,
            std::fs::read(tools.busybox())?,
        ),
    ];
    let mut n = 0;
    let mut seen = std::collections::HashSet::new();
    for line in deps.lines() {
        let Some(path) = line.trim().strip_prefix("insmod ") else {
            continue;
        };
        let path = path.split_whitespace().next().unwrap_or(path);
        if !seen.insert(path.to_string()) {
            continue;
        }
        // modprobe -d prints paths under the base directory already.
        let host = if Path::new(path).starts_with(kdir) {
            PathBuf::from(path)
        } else {
            kdir.join(path.trim_start_matches('/'))
        };
        let data = std::fs::read(&host).with_context(|| format!("reading {}", host.display()))?;
        let data = if path.ends_with(".xz") {
            decompress("xz", &host)?
        } else if path.ends_with(".zst") {
            decompress("zstd", &host)?
        } else {
            data
        };
        let base = Path::new(path)
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("m");
        let base = base.trim_end_matches(".xz").trim_end_matches(".zst");
        files.push((format!("modules/{n:02}-{base}"), 0o100_644, data));
        n += 1;
    }
    let mut cpio = Vec::new();
    let dirs = ["bin", "modules", "proc", "sys", "dev", "newroot"];
    for (ino, d) in dirs.iter().enumerate() {
        cpio_entry(&mut cpio, ino as u32 + 1, d, 0o040_755, &[]);
    }
    for (i, (name, mode, data)) in files.iter().enumerate() {
        cpio_entry(&mut cpio, 100 + i as u32, name, *mode, data);
    }
    cpio_entry(&mut cpio, 0, "TRAILER!!!", 0, &[]);
    std::fs::write(out, cpio).with_context(|| format!("writing {}", out.display()))
}

fn decompress(tool: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool}"))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed", path.display());
    }
    Ok(out.stdout)
}

fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let mut h = String::from("070701");
    let namesize = name.len() + 1;
    for v in [
        ino,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        namesize as u32,
        0,
    ] {
        let _ = write!(h, "{v:08x}");
    }
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// What in a guest's serial console says its kernel went wrong (an oops, a BUG, a panic, a
/// lockup), one line each: the tests' verdicts alone would not show a kernel that oopsed in a
/// thread they did not watch. The OOM killer's own report is not among them.
pub(crate) fn console_troubles(console: &str) -> Vec<String> {
    const MARKS: [&str; 6] = [
        "Oops:",
        "BUG:",
        "Kernel panic",
        "general protection fault",
        "invalid opcode:",
        "int3:",
    ];
    console
        .lines()
        .filter(|l| MARKS.iter().any(|m| l.contains(m)))
        .map(|l| l.trim().to_string())
        .collect()
}

/// What one guest run gave back.
pub(crate) struct GuestRun {
    pub(crate) exit_code: i32,
    pub(crate) output: String,
    /// The guest's serial console, for diagnostics.
    pub(crate) console: PathBuf,
    pub(crate) wall: Duration,
}

/// Boots the kernel and runs `script` (a shell script) as root in the guest. `share` (the cargo
/// target dir) is shared read-write at its own path on top of everything else; `results`, inside
/// it, receives the script, its output and its exit code. The rest of the host is read-only.
pub(crate) fn run_in_guest(
    tools: &Tools,
    kernel: &Prepared,
    script: &str,
    share: &Path,
    results: &Path,
    timeout: Duration,
) -> anyhow::Result<GuestRun> {
    let dirs = GuestDirs::create(share, results, script)?;
    let started = Instant::now();
    let mut qemu = qemu_command(tools, kernel, &dirs)
        .spawn()
        .context("starting QEMU")?;
    let status = wait_within(&mut qemu, started, timeout)?;
    let wall = started.elapsed();
    collect_run(&mut qemu, status, dirs, wall, timeout)
}

/// The host directories one guest run uses, canonical (QEMU and the guest get them as paths).
struct GuestDirs {
    /// Shared read-write with the guest, at the same path.
    share: PathBuf,
    /// Inside `share`: the script, its output and exit code, the console log.
    results: PathBuf,
    console: PathBuf,
}

impl GuestDirs {
    /// Empties `results` and writes the script there as `cmd.sh`.
    fn create(share: &Path, results: &Path, script: &str) -> anyhow::Result<Self> {
        let share = share.canonicalize()?;
        let _ = std::fs::remove_dir_all(results);
        std::fs::create_dir_all(results)?;
        let results = results.canonicalize()?;
        std::fs::write(results.join("cmd.sh"), script)?;
        let console = results.join("console.log");
        anyhow::ensure!(
            results.starts_with(&share),
            "the results dir {} must be inside the shared dir {}",
            results.display(),
            share.display()
        );
        Ok(Self {
            share,
            results,
            console,
        })
    }
}

/// QEMU/TCG booting `kernel` with the host's `/` read-only and `dirs.share` read-write over
/// virtio-9p (the init script mounts them), and the serial console to `dirs.console`.
fn qemu_command(tools: &Tools, kernel: &Prepared, dirs: &GuestDirs) -> Command {
    let r = dirs.results.display();
    let sh = dirs.share.display();
    let mut qemu = tools.qemu();
    qemu.args([
        "-accel",
        // One host thread for all vCPUs: with multi-threaded TCG, kernels now and then
        // oopsed on int3 while patching static keys (cross-modifying code across vCPUs),
        // at boot and when the first memcg came up. Slower, but reliable.
        "tcg,thread=single",
        "-cpu",
        "max",
        "-m",
        "1G",
        "-smp",
        "2",
    ])
    .args([
        "-display",
        "none",
        "-vga",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
    ])
    .arg("-L")
    .arg(tools.root.join("usr/share/qemu"))
    .arg("-L")
    .arg(tools.root.join("usr/share/seabios"))
    .arg("-serial")
    .arg(format!("file:{}", dirs.console.display()))
    .arg("-kernel")
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(&kernel.initramfs)
    .arg("-append")
    .arg(format!(
        "console=ttyS0 panic=-1 loglevel=4 results={r} share={sh}"
    ))
    .args([
        "-fsdev",
        "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device",
        "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
    ])
    .arg("-fsdev")
    .arg(format!(
        "local,id=share,path={sh},security_model=none,multidevs=remap"
    ))
    .args(["-device", "virtio-9p-pci,fsdev=share,mount_tag=share"])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    qemu
}

/// Waits for `child` to end; once `timeout` has passed since `started`, kills it and returns
/// `None`.
fn wait_within(
    child: &mut Child,
    started: Instant,
    timeout: Duration,
) -> anyhow::Result<Option<ExitStatus>> {
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The run as the guest reported it in `dirs.results`; an error if it wrote no exit code (the
/// guest timed out, or QEMU ended first: `status`).
fn collect_run(
    qemu: &mut Child,
    status: Option<ExitStatus>,
    dirs: GuestDirs,
    wall: Duration,
    timeout: Duration,
) -> anyhow::Result<GuestRun> {
    let output = std::fs::read_to_string(dirs.results.join("output.log")).unwrap_or_default();
    let code = std::fs::read_to_string(dirs.results.join("exit-code"))
        .ok()
        .and_then(|c| c.trim().parse().ok());
    let console = dirs.console;
    match (status, code) {
        (_, Some(exit_code)) => Ok(GuestRun {
            exit_code,
            output,
            console,
            wall,
        }),
        (None, None) => bail!(
            "the guest did not finish within {timeout:?} (console: {})",
            console.display()
        ),
        (Some(s), None) => bail!(
            "the guest wrote no exit code (QEMU {s}{}); console: {}",
            qemu_stderr(qemu),
            console.display()
        ),
    }
}

/// QEMU's standard error as `: text`, or nothing when it said nothing.
fn qemu_stderr(qemu: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = qemu.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    if err.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", err.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_list_is_data() {
        let k = parse_kernels(
            "# comment\n[[kernel]]\nname = \"6.1\"\npackage = \"linux-image-amd64\" # newest 6.1\n\n[[kernel]]\nname = \"6.12\"\npackage = \"linux-image-6.12-amd64\"\n",
        )
        .unwrap();
        assert_eq!(k.len(), 2);
        assert_eq!(k[1].package, "linux-image-6.12-amd64");
        assert_eq!(k[0].suite, None);
        let err = |text: &str| parse_kernels(text).unwrap_err().to_string();
        let e = err("[[kernel]]\nname = \"x\"\n");
        assert!(
            e.starts_with("matrix.toml: ") && e.contains("missing field `package`"),
            "{e}"
        );
        let e = err("name = \"x\"\n");
        assert!(e.contains("unknown field `name`"), "{e}");
        let e = err("[[kernel]]\nflavour = \"x\"\n");
        assert!(
            e.contains("line 2") && e.contains("unknown field `flavour`"),
            "{e}"
        );
        let k = parse_kernels(
            "[[kernel]]\nname = \"5.10\"\nsuite = \"bullseye\"\npackage = \"linux-image-amd64\"\n",
        )
        .unwrap();
        assert_eq!(k[0].suite.as_deref(), Some("bullseye"));
        let e = err("[[kernel]]\nname = \"x\"\npackage = \"p\"\nsuite = \"a b\"\n");
        assert_eq!(
            e,
            "matrix.toml: kernel `x`: suite `a b` is not a suite name"
        );
        assert!(
            parse_kernels("[[kernel]]\nname = \"x\"\npackage = \"p\"\nsuite = \"\"\n").is_err()
        );
        assert!(parse_kernels("").unwrap().is_empty());
        let m = load_kernels().unwrap();
        let names: Vec<&str> = m.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["5.10", "6.1", "6.12", "sid"], "xtask/matrix.toml");
    }

    /// A suite's apt state is all under the cache dir; the system's is apt's own.
    #[test]
    fn a_suites_apt_state_is_private() {
        let args = |apt: &AptState| -> Vec<String> {
            apt.command("apt-get")
                .unwrap()
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let sid = args(&AptState::Suite("sid".into()));
        let root = vm_cache().unwrap().join("apt/sid");
        for key in [
            "Dir::Etc::sourcelist",
            "Dir::Etc::sourceparts",
            "Dir::State::Lists",
            "Dir::Cache",
        ] {
            let opt = sid
                .iter()
                .find(|a| a.starts_with(&format!("{key}=")))
                .unwrap_or_else(|| panic!("no {key}: {sid:?}"));
            assert!(opt.contains(&*root.to_string_lossy()), "{opt}");
        }
        assert!(sid.contains(&"Acquire::AllowInsecureRepositories=false".to_string()));
        assert!(
            !args(&AptState::System)
                .iter()
                .any(|a| a.starts_with("Dir::"))
        );
    }

    /// bookworm's packages put the kernel in /boot and modules in /lib/modules; sid's split
    /// packages put both under /usr/lib/modules/R, which gets a /lib/modules link for kmod.
    #[test]
    fn both_kernel_package_layouts_are_found() {
        let root = std::env::temp_dir().join(format!("xtask-layout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let old = root.join("old");
        std::fs::create_dir_all(old.join("lib/modules/6.1.0-1-amd64/kernel")).unwrap();
        std::fs::create_dir_all(old.join("boot")).unwrap();
        std::fs::write(old.join("boot/vmlinuz-6.1.0-1-amd64"), "").unwrap();
        let (release, vmlinuz) = kernel_layout(&old, "old").unwrap();
        assert_eq!(release, "6.1.0-1-amd64");
        assert_eq!(vmlinuz, old.join("boot/vmlinuz-6.1.0-1-amd64"));
        let new = root.join("new");
        let r = "7.2.13+deb14-amd64";
        std::fs::create_dir_all(new.join(format!("usr/lib/modules/{r}/kernel"))).unwrap();
        std::fs::write(new.join(format!("usr/lib/modules/{r}/vmlinuz")), "").unwrap();
        let (release, vmlinuz) = kernel_layout(&new, "new").unwrap();
        assert_eq!(release, r);
        assert!(vmlinuz.is_file(), "{}", vmlinuz.display());
        assert!(new.join(format!("lib/modules/{r}/kernel")).is_dir());
        // Idempotent: the link is there the second time.
        assert_eq!(kernel_layout(&new, "new").unwrap().0, r);
        assert!(kernel_layout(&root.join("none"), "none").is_err());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_console_that_oopsed_is_told_from_one_that_killed() {
        let fine = "[    5.1] oomtrace-hog invoked oom-killer: gfp_mask=0xcc0\n[    5.2] Memory cgroup out of memory: Killed process 123 (oomtrace-hog)\n";
        assert!(console_troubles(fine).is_empty());
        let bad = "[ 1.0] ok\n[ 2.0] int3: 0000 [#1] PREEMPT SMP NOPTI\n[ 2.1] BUG: kernel NULL pointer dereference\n";
        assert_eq!(
            console_troubles(bad),
            [
                "[ 2.0] int3: 0000 [#1] PREEMPT SMP NOPTI",
                "[ 2.1] BUG: kernel NULL pointer dereference"
            ]
        );
    }

    #[test]
    fn cpio_entries_are_aligned_newc() {
        let mut out = Vec::new();
        cpio_entry(&mut out, 1, "init", 0o100_755, b"abc");
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        assert_eq!(&out[110..115], b"init\0");
    }
}
