//! runc for `cargo xtask test`: Debian's `runc` package, downloaded with `apt-get download` and
//! unpacked with `dpkg -x` into the cache like QEMU ([`guest::fetch_unpack`]), never installed.
//! It needs only libc and libseccomp (a dependency of systemd: on every Debian host).
//!
//! Its path goes to the end-to-end tests in `OOMTRACE_RUNC`: tests/tests/runtime.rs lets it
//! create a container's memcg under kubelet's cgroup parent and OOM-kills the container.

use std::{ffi::OsString, path::PathBuf};

use crate::{guest, setup};

/// The environment variable the runtime test finds runc by.
pub(crate) const RUNC_VAR: &str = "OOMTRACE_RUNC";

/// Downloads and unpacks Debian's runc once (into `<cache>/runc`) and checks that it runs;
/// returns its path.
pub(crate) fn ensure() -> anyhow::Result<PathBuf> {
    let root = setup::cache_dir()?.join("runc");
    let bin = root.join("usr/sbin/runc");
    guest::unpack_debian_once("runc", &root)?;
    guest::runs_version(&bin)?;
    Ok(bin)
}

/// `OOMTRACE_RUNC` for the end-to-end tests, or nothing (said why): the runtime test then
/// fails, naming the variable.
pub(crate) fn test_env() -> Vec<(&'static str, OsString)> {
    match ensure() {
        Ok(bin) => vec![(RUNC_VAR, bin.into_os_string())],
        Err(e) => {
            eprintln!("xtask: Debian's runc package could not be had: {e:#}");
            Vec::new()
        }
    }
}
