//! End-to-end with a real container runtime (root only): Debian's runc (`OOMTRACE_RUNC`, which
//! `cargo xtask test` unpacks) creates a container's memcg under kubelet's cgroup parent, the
//! container is OOM-killed, and oomtrace's finding names the workload as runc sees it.
//!
//! Host only: the host's cgroup v1 is where runc was shown to run on this machine kind; the
//! kernel-facing part (memcgs made while watching, named at once) is the e2e test
//! `memcgs_made_after_start_are_named_at_their_first_kill_and_removed_ones_said_so`.

use std::{
    fs::File,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use oomtrace_tests::{Sandbox, ScratchDir, Watch, require_root, scaled, wait_until};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

fn runc_bin() -> PathBuf {
    let bin = std::env::var_os("OOMTRACE_RUNC").map(PathBuf::from).expect(
        "OOMTRACE_RUNC is not set: `cargo xtask test` unpacks Debian's runc and sets it (see \
         its output for why it could not)",
    );
    assert!(
        bin.is_file(),
        "OOMTRACE_RUNC={} does not exist",
        bin.display()
    );
    bin
}

/// A runc container of this test; deleted (killed first) on drop, with its memcg.
struct Container {
    runc: PathBuf,
    /// runc's state directory, private to this test (`runc --root`).
    state: PathBuf,
    bundle: PathBuf,
    id: String,
    memcg: PathBuf,
}

impl Container {
    fn runc(&self) -> Command {
        let mut c = Command::new(&self.runc);
        c.arg("--root").arg(&self.state);
        c
    }

    /// Runs runc with `args`, its output to a log file (a detached container inherits runc's
    /// stdio: a pipe would stay open while it runs); panics with the log on failure.
    fn run(&self, args: &[&str]) {
        let log = self.bundle.join("runc.log");
        let out = File::create(&log).expect("runc log");
        let status = self
            .runc()
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .status()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.runc.display()));
        assert!(
            status.success(),
            "runc {args:?} failed ({status}): {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `runc state ID`: runc's own view of the container.
    fn state(&self) -> Value {
        let out = self
            .runc()
            .args(["state", &self.id])
            .output()
            .expect("runc state");
        assert!(
            out.status.success(),
            "runc state: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("runc state is JSON")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self
            .runc()
            .args(["delete", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // runc removes the memcg it made; if it could not, so do we (nothing is left in it).
        if self.memcg.exists() && std::fs::remove_dir(&self.memcg).is_err() {
            eprintln!("could not remove {}", self.memcg.display());
        }
    }
}

/// A bundle for `tail /dev/zero` (which allocates without end): `runc spec`, a rootfs with the
/// host's /usr bind-mounted read-only and Debian's usual links, no terminal, RLIMIT_NOFILE
/// within the host's hard limit, and the memcg at `cgroups_path` limited to `limit` bytes.
fn bundle(runc: &Path, dir: &Path, cgroups_path: &str, limit: u64) {
    let rootfs = dir.join("rootfs");
    for d in ["usr", "proc", "dev", "tmp", "sys"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("rootfs");
    }
    for (link, to) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/sbin"),
    ] {
        symlink(to, rootfs.join(link)).expect("rootfs link");
    }
    let status = Command::new(runc)
        .arg("spec")
        .arg("--bundle")
        .arg(dir)
        .status()
        .expect("runc spec");
    assert!(status.success(), "runc spec failed");
    let path = dir.join("config.json");
    let mut c: Value = serde_json::from_slice(&std::fs::read(&path).expect("config.json"))
        .expect("config.json is JSON");
    c["process"]["terminal"] = json!(false);
    c["process"]["args"] = json!(["tail", "/dev/zero"]);
    c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]);
    c["mounts"].as_array_mut().expect("mounts").push(
        json!({"destination": "/usr", "type": "bind", "source": "/usr",
                     "options": ["rbind", "ro"]}),
    );
    c["linux"]["cgroupsPath"] = json!(cgroups_path);
    c["linux"]["resources"] = json!({"memory": {"limit": limit, "swap": limit}});
    std::fs::write(&path, serde_json::to_vec_pretty(&c).expect("json")).expect("config.json");
}

/// kubelet made the pod's memcg; runc makes the container's under it (kubelet's cgroup parent,
/// cgroupfs driver) after oomtrace started. The container is OOM-killed: the finding's victim
/// is the pid `runc state` gave, its memcg the one runc made, and its workload the pod and
/// container id runc was given. The path of the cgroupfs driver does not say which runtime
/// made it, so `runtime` is null (and must not be guessed).
#[test]
fn a_runc_container_oom_killed_is_named_as_runc_sees_it() {
    require_root();
    let runc = runc_bin();
    let kubepods = Sandbox::at_root("kubepods", 64 * MIB);
    let burstable = kubepods.child("burstable");
    let watch = Watch::start(&[]);
    let pod_uid = format!("{:08x}-1111-4000-8000-00000000cafe", std::process::id());
    let pod = burstable.child(&format!("pod{pod_uid}"));
    let tmp = ScratchDir::new("runc");
    let id = format!("{:08x}{}", std::process::id(), "5eed".repeat(14));
    let cgroups_path = format!("{}/{id}", pod.rel_path());
    bundle(&runc, tmp.path(), &cgroups_path, 32 * MIB);
    let container = Container {
        runc: runc.clone(),
        state: tmp.path().join("state"),
        bundle: tmp.path().to_path_buf(),
        id: id.clone(),
        memcg: pod.dir().join(&id),
    };
    container.run(&["create", "--bundle", &tmp.path().to_string_lossy(), &id]);
    let created = container.state();
    assert_eq!(created["status"], "created", "{created}");
    let pid = created["pid"]
        .as_u64()
        .expect("runc state has the init's pid");
    assert!(
        container.memcg.is_dir(),
        "runc made no memcg at {}",
        container.memcg.display()
    );
    container.run(&["start", &id]);

    let killed = watch.wait_finding("killed", pid as u32);
    eprintln!(
        "runc state at create: {created}\nfinding: memcg_path {} workload {} victim tgid {}",
        killed["memcg_path"], killed["workload"], killed["victim"]["key"]["tgid"]
    );
    assert_eq!(killed["memcg_path"], cgroups_path, "{killed}");
    assert_eq!(killed["victim"]["comm"], "tail", "{killed}");
    assert_eq!(
        killed["workload"],
        json!({"kind": "pod", "pod_uid": pod_uid, "qos": "burstable",
               "container_id": &id[..12], "runtime": null}),
        "{killed}"
    );
    // runc's view: the container's init is gone, and the kernel counted the kill in its memcg.
    assert!(
        wait_until(scaled(Duration::from_secs(10)), || {
            container.state()["status"] == "stopped"
        }),
        "runc does not see the container stopped: {}",
        container.state()
    );
    let oom_control =
        std::fs::read_to_string(container.memcg.join("memory.oom_control")).unwrap_or_default();
    assert!(
        oom_control.lines().any(|l| l == "oom_kill 1"),
        "the kernel counted no kill in runc's memcg: {oom_control}"
    );
    let memcg = container.memcg.clone();
    drop(container);
    assert!(!memcg.exists(), "runc delete left {}", memcg.display());
    drop(pod);
    drop(burstable);
    let lines = watch.stop_and_collect();
    let kills = lines
        .iter()
        .filter(|v| {
            v["type"] == "finding" && v["finding"] == "killed" && v["memcg_path"] == cgroups_path
        })
        .count();
    assert_eq!(kills, 1, "one kill in runc's memcg, found {kills}");
    drop(kubepods);
}
