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
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::setup;

/// A kernel to test in: a name for people and the Debian package that pulls in the newest
/// build of it. The list is data: `xtask/matrix.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSpec {
    pub name: String,
    pub package: String,
}

/// Parses `[[kernel]]` tables with `name` and `package` string keys (a TOML subset).
pub fn parse_kernels(text: &str) -> anyhow::Result<Vec<KernelSpec>> {
    let mut out = Vec::new();
    let mut cur: Option<(Option<String>, Option<String>)> = None;
    let mut finish = |cur: Option<(Option<String>, Option<String>)>,
                      line: usize|
     -> anyhow::Result<()> {
        if let Some((name, package)) = cur {
            match (name, package) {
                (Some(name), Some(package)) => out.push(KernelSpec { name, package }),
                _ => bail!("matrix.toml: the [[kernel]] before line {line} needs name and package"),
            }
        }
        Ok(())
    };
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line == "[[kernel]]" {
            finish(cur.take(), i + 1)?;
            cur = Some((None, None));
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .with_context(|| format!("matrix.toml line {}: expected key = \"value\"", i + 1))?;
        let value = value.trim().trim_matches('"').to_string();
        let entry = cur
            .as_mut()
            .with_context(|| format!("matrix.toml line {}: key outside [[kernel]]", i + 1))?;
        match key.trim() {
            "name" => entry.0 = Some(value),
            "package" => entry.1 = Some(value),
            other => bail!("matrix.toml line {}: unknown key `{other}`", i + 1),
        }
    }
    finish(cur, text.lines().count() + 1)?;
    Ok(out)
}

pub fn load_kernels() -> anyhow::Result<Vec<KernelSpec>> {
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

/// Set once `apt-get update` has run in this process (it is never run twice).
static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Makes sure apt's package lists exist and are recent: updates them when a package this
/// runner needs is unknown or the newest list is older than [`APT_LISTS_MAX_AGE`].
fn apt_lists() -> anyhow::Result<()> {
    let known = Command::new("apt-cache")
        .args(["show", "busybox-static"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let age = apt_lists_age();
    let why = if !known {
        "package lists are missing".to_string()
    } else if let Some(age) = age.filter(|a| *a > APT_LISTS_MAX_AGE) {
        format!("package lists are {} days old", age.as_secs() / 86_400)
    } else {
        return Ok(());
    };
    apt_update(&why)
}

/// Written after each successful `apt-get update`: an update that finds nothing new leaves the
/// lists' own times alone, and they would look stale forever.
fn apt_stamp() -> anyhow::Result<PathBuf> {
    Ok(vm_cache()?.join("apt-updated"))
}

/// Time since the lists were last refreshed: the newest list, or our own stamp.
fn apt_lists_age() -> Option<Duration> {
    let lists = std::fs::read_dir("/var/lib/apt/lists")
        .ok()?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.ends_with("Release") || n.ends_with("Packages"))
        })
        .filter_map(|e| e.metadata().ok()?.modified().ok());
    let stamp = apt_stamp()
        .ok()
        .and_then(|s| std::fs::metadata(s).ok()?.modified().ok());
    lists
        .chain(stamp)
        .max()
        .and_then(|newest| newest.elapsed().ok())
}

/// Runs `apt-get update` (at most once per run of xtask).
fn apt_update(why: &str) -> anyhow::Result<()> {
    if APT_UPDATED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    eprintln!("xtask: apt-get update ({why})");
    setup::status(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    )?;
    let stamp = apt_stamp()?;
    if let Some(dir) = stamp.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&stamp, "").with_context(|| format!("writing {}", stamp.display()))
}

/// Runs an apt step; if it fails and the lists were not refreshed yet in this run, refreshes
/// them and tries once more (a package that left the archive, a list that predates a build).
fn with_fresh_lists<T>(
    what: &str,
    mut step: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    match step() {
        Ok(v) => Ok(v),
        Err(e) if !APT_UPDATED.load(Ordering::SeqCst) => {
            apt_update(&format!("{what} failed: {e:#}"))?;
            step().with_context(|| format!("{what}, after apt-get update"))
        }
        Err(e) => Err(e),
    }
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Downloads (once) and unpacks packages into `into`.
fn fetch_unpack(pkgs: &[String], into: &Path) -> anyhow::Result<()> {
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
        eprintln!("xtask: downloading {}", names.join(" "));
        with_fresh_lists("apt-get download", || {
            setup::status(
                Command::new("apt-get")
                    // Into our own cache dir, which apt's sandbox user cannot write: say so
                    // instead of a warning per file.
                    .args(["-o", "APT::Sandbox::User=root"])
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
pub struct Tools {
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
pub fn tools() -> anyhow::Result<Tools> {
    let root = vm_cache()?.join("tools");
    let tools = Tools { root };
    let ready = tools.root.join(".ready");
    if !ready.exists() {
        apt_lists()?;
        // Every library QEMU needs that the host lacks (transitively), plus its firmware.
        // Alternatives apt lists that QEMU does not need are skipped; the `--version` check
        // below proves the result runs.
        let deps = with_fresh_lists("apt-cache depends qemu-system-x86", || {
            output(
                Command::new("apt-cache").args([
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
        fetch_unpack(&pkgs, &tools.root)?;
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
pub struct Prepared {
    pub release: String,
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
}

/// Resolves the meta-package to the newest concrete image package.
fn resolve_package(spec: &KernelSpec) -> anyhow::Result<String> {
    let deps = with_fresh_lists(&format!("resolving {}", spec.package), || {
        output(
            Command::new("apt-cache").args(["depends", &spec.package]),
            "apt-cache depends",
        )
    })?;
    if let Some(concrete) = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
    {
        return Ok(concrete.to_string());
    }
    // Already a concrete image package.
    Ok(spec.package.clone())
}

pub fn prepare(tools: &Tools, spec: &KernelSpec) -> anyhow::Result<Prepared> {
    apt_lists()?;
    let pkg = resolve_package(spec)?;
    let dir = vm_cache()?.join("kernels").join(&pkg);
    let ready = dir.join(".ready");
    if !ready.exists() {
        fetch_unpack(std::slice::from_ref(&pkg), &dir)?;
    }
    let release = std::fs::read_dir(dir.join("lib/modules"))
        .with_context(|| format!("{pkg} has no lib/modules"))?
        .flatten()
        .find_map(|e| e.file_name().to_str().map(str::to_string))
        .context("no module directory in the kernel package")?;
    let vmlinuz = dir.join(format!("boot/vmlinuz-{release}"));
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

/// What one guest run gave back.
pub struct GuestRun {
    pub exit_code: i32,
    pub output: String,
    /// The guest's serial console, for diagnostics.
    pub console: PathBuf,
    pub wall: Duration,
}

/// Boots the kernel and runs `script` (a shell script) as root in the guest. `share` (the cargo
/// target dir) is shared read-write at its own path on top of everything else; `results`, inside
/// it, receives the script, its output and its exit code. The rest of the host is read-only.
pub fn run_in_guest(
    tools: &Tools,
    kernel: &Prepared,
    script: &str,
    share: &Path,
    results: &Path,
    timeout: Duration,
) -> anyhow::Result<GuestRun> {
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
    let r = results.display();
    let sh = share.display();
    let started = Instant::now();
    let mut child = tools
        .qemu()
        .args([
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
        .arg(format!("file:{}", console.display()))
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
        .stderr(Stdio::piped())
        .spawn()
        .context("starting QEMU")?;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let wall = started.elapsed();
    let output = std::fs::read_to_string(results.join("output.log")).unwrap_or_default();
    let code = std::fs::read_to_string(results.join("exit-code"))
        .ok()
        .and_then(|c| c.trim().parse().ok());
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
        (Some(s), None) => {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            bail!(
                "the guest wrote no exit code (QEMU {s}{}); console: {}",
                if err.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", err.trim())
                },
                console.display()
            )
        }
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
        assert!(parse_kernels("[[kernel]]\nname = \"x\"\n").is_err());
        assert!(parse_kernels("name = \"x\"\n").is_err());
        assert!(parse_kernels("[[kernel]]\nflavour = \"x\"\n").is_err());
        assert_eq!(load_kernels().unwrap().len(), 2, "xtask/matrix.toml");
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
