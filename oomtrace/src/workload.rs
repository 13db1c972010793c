//! Who a victim is, from its memcg path: a Kubernetes pod and container, a systemd unit, a
//! docker or podman container — what a person would decode from
//! `kubepods/burstable/pod…/cri-containerd-….scope` by hand, for text, JSON and metric labels.
//!
//! Shapes recognised (cgroup v1 and v2 paths are alike below the controller's mount):
//! - Kubernetes, systemd driver: `/kubepods.slice/kubepods-burstable.slice/
//!   kubepods-burstable-pod<UID with _>.slice/<runtime>-<id>.scope` with runtime `cri-containerd`,
//!   `crio`, `docker`; the pod-level memcg itself (no container) too.
//! - Kubernetes, cgroupfs driver: `/kubepods/burstable/pod<UID>/<id>` (and `/kubepods/pod<UID>/…`
//!   for Guaranteed pods).
//! - docker: `/system.slice/docker-<id>.scope` (systemd driver), `/docker/<id>` (cgroupfs).
//! - podman: `/machine.slice/libpod-<id>.scope`, `/user.slice/…/libpod-<id>.scope`,
//!   `/libpod_parent/libpod-<id>`.
//! - systemd: the innermost `*.service` or `*.scope` unit, and its slice.
//! - anything else: the plain path.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Workload {
    /// A Kubernetes pod (UID) and, when the memcg is a container's, its runtime and id.
    Pod {
        pod_uid: String,
        qos: String,
        container_id: Option<String>,
        runtime: Option<String>,
    },
    /// A container outside Kubernetes.
    Container {
        runtime: String,
        container_id: String,
    },
    /// A systemd unit and the slice it is in.
    Systemd { unit: String, slice: Option<String> },
    /// Nothing recognised: the memcg path.
    Cgroup { path: String },
}

/// A container id is 64 hex digits; shown (and labelled) by its first 12, as runtimes do.
fn short_id(id: &str) -> Option<String> {
    (id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id[..12].to_string())
}

/// `<runtime>-<id>.scope` (systemd driver) or a bare id (cgroupfs driver).
fn container_of(component: &str) -> Option<(String, String)> {
    let stem = component.strip_suffix(".scope").unwrap_or(component);
    for (prefix, runtime) in [
        ("cri-containerd-", "containerd"),
        ("crio-conmon-", "cri-o"),
        ("crio-", "cri-o"),
        ("docker-", "docker"),
        ("libpod-conmon-", "podman"),
        ("libpod-", "podman"),
    ] {
        if let Some(id) = stem.strip_prefix(prefix) {
            return Some((runtime.to_string(), short_id(id)?));
        }
    }
    Some((String::new(), short_id(stem)?))
}

pub(crate) fn of_path(path: &str) -> Workload {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // Kubernetes.
    if parts.first().is_some_and(|p| p.starts_with("kubepods")) {
        let pod = parts.iter().enumerate().find_map(|(i, p)| {
            let stem = p.strip_suffix(".slice").unwrap_or(p);
            let uid = stem
                .rsplit_once("-pod")
                .map(|(_, u)| u)
                .or_else(|| stem.strip_prefix("pod"))?;
            (uid.len() >= 32).then(|| (i, uid.replace('_', "-")))
        });
        if let Some((i, pod_uid)) = pod {
            let qos = if parts[..i].iter().any(|p| p.contains("burstable")) {
                "burstable"
            } else if parts[..i].iter().any(|p| p.contains("besteffort")) {
                "besteffort"
            } else {
                "guaranteed"
            };
            let container = parts.get(i + 1).and_then(|c| container_of(c));
            return Workload::Pod {
                pod_uid,
                qos: qos.into(),
                runtime: container
                    .as_ref()
                    .map(|(r, _)| r.clone())
                    .filter(|r| !r.is_empty()),
                container_id: container.map(|(_, id)| id),
            };
        }
    }
    // docker / podman outside Kubernetes: the innermost component that names a container
    // (podman on cgroup v2 nests a `container` memcg inside its scope).
    let by_prefix = parts
        .iter()
        .rev()
        .find_map(|p| container_of(p).filter(|(r, _)| !r.is_empty()));
    let by_parent = parts.windows(2).rev().find_map(|w| match w[0] {
        "docker" => container_of(w[1]).map(|(_, id)| ("docker".to_string(), id)),
        "libpod_parent" => container_of(w[1]).map(|(_, id)| ("podman".to_string(), id)),
        _ => None,
    });
    if let Some((runtime, container_id)) = by_prefix.or(by_parent) {
        return Workload::Container {
            runtime,
            container_id,
        };
    }
    // systemd.
    if let Some(i) = parts
        .iter()
        .rposition(|p| p.ends_with(".service") || p.ends_with(".scope"))
    {
        let slice = parts[..i]
            .iter()
            .rev()
            .find(|p| p.ends_with(".slice"))
            .map(|s| s.to_string());
        return Workload::Systemd {
            unit: parts[i].to_string(),
            slice,
        };
    }
    Workload::Cgroup {
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
    }
}

impl Workload {
    /// Metric labels: `kind`, `workload` (pod UID, unit, container id or path) and
    /// `container` (short id, or empty). Bounded by the caller (a cap on distinct sets).
    pub(crate) fn labels(&self) -> [(&'static str, String); 3] {
        let (kind, workload, container) = match self {
            Workload::Pod {
                pod_uid,
                container_id,
                ..
            } => (
                "pod",
                pod_uid.clone(),
                container_id.clone().unwrap_or_default(),
            ),
            Workload::Container {
                runtime,
                container_id,
            } => (runtime.as_str(), container_id.clone(), container_id.clone()),
            Workload::Systemd { unit, .. } => ("systemd", unit.clone(), String::new()),
            Workload::Cgroup { path } => ("cgroup", path.clone(), String::new()),
        };
        [
            ("kind", kind.to_string()),
            ("workload", workload),
            ("container", container),
        ]
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Workload::Pod {
                pod_uid,
                qos,
                container_id,
                runtime,
            } => {
                write!(f, "pod {pod_uid} ({qos})")?;
                if let Some(c) = container_id {
                    write!(f, ", container {c}")?;
                    if let Some(r) = runtime {
                        write!(f, " ({r})")?;
                    }
                }
                Ok(())
            }
            Workload::Container {
                runtime,
                container_id,
            } => write!(f, "{runtime} container {container_id}"),
            Workload::Systemd { unit, slice } => {
                write!(f, "systemd {unit}")?;
                if let Some(s) = slice {
                    write!(f, " in {s}")?;
                }
                Ok(())
            }
            Workload::Cgroup { path } => write!(f, "cgroup {path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b";
    const UID: &str = "0b5d2a7e-8f61-4c1e-9a3b-2d4e6f8a0c1e";

    fn pod(qos: &str, runtime: Option<&str>, container: bool) -> Workload {
        Workload::Pod {
            pod_uid: UID.into(),
            qos: qos.into(),
            container_id: container.then(|| ID[..12].to_string()),
            runtime: runtime.map(str::to_string),
        }
    }

    /// Real path shapes from each runtime and cgroup driver.
    #[test]
    fn path_shapes_of_each_runtime() {
        let u = UID.replace('-', "_");
        let container = |runtime: &str| Workload::Container {
            runtime: runtime.into(),
            container_id: ID[..12].into(),
        };
        let cases: Vec<(String, Workload)> = vec![
            // containerd, systemd driver, Burstable.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"
                ),
                pod("burstable", Some("containerd"), true),
            ),
            // CRI-O, systemd driver, BestEffort.
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{ID}.scope"
                ),
                pod("besteffort", Some("cri-o"), true),
            ),
            // Guaranteed pod, systemd driver, the pod-level memcg (an OOM in the pod's limit).
            (
                format!("/kubepods.slice/kubepods-pod{u}.slice"),
                pod("guaranteed", None, false),
            ),
            // containerd, cgroupfs driver.
            (
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                pod("burstable", None, true),
            ),
            // dockershim-era docker in Kubernetes, systemd driver.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/docker-{ID}.scope"
                ),
                pod("burstable", Some("docker"), true),
            ),
            // docker alone: systemd and cgroupfs drivers.
            (
                format!("/system.slice/docker-{ID}.scope"),
                container("docker"),
            ),
            (format!("/docker/{ID}"), container("docker")),
            // podman: root (machine.slice), rootless (user slice), cgroupfs.
            (
                format!("/machine.slice/libpod-{ID}.scope"),
                container("podman"),
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
                ),
                container("podman"),
            ),
            (format!("/libpod_parent/libpod-{ID}"), container("podman")),
            // systemd units.
            (
                "/system.slice/nginx.service".into(),
                Workload::Systemd {
                    unit: "nginx.service".into(),
                    slice: Some("system.slice".into()),
                },
            ),
            (
                "/user.slice/user-1000.slice/session-3.scope".into(),
                Workload::Systemd {
                    unit: "session-3.scope".into(),
                    slice: Some("user-1000.slice".into()),
                },
            ),
            // Plain paths.
            (
                "/oomtrace-test-1-0-hog".into(),
                Workload::Cgroup {
                    path: "/oomtrace-test-1-0-hog".into(),
                },
            ),
            ("/".into(), Workload::Cgroup { path: "/".into() }),
        ];
        for (path, want) in cases {
            assert_eq!(of_path(&path), want, "{path}");
        }
    }

    #[test]
    fn labels_and_words() {
        let w = pod("burstable", Some("containerd"), true);
        assert_eq!(w.labels()[0], ("kind", "pod".into()));
        assert_eq!(w.labels()[2], ("container", ID[..12].into()));
        assert_eq!(
            w.to_string(),
            format!(
                "pod {UID} (burstable), container {} (containerd)",
                &ID[..12]
            )
        );
    }
}
