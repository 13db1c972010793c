//! Least privilege after attach. Loading and attaching eBPF programs needs root's power; what
//! `watch` does afterwards needs little of it. Once the programs are attached, the ring buffer
//! mapped, the dump created and the metrics socket bound, every capability is dropped except:
//!
//! - `CAP_SYS_ADMIN`: `/proc/PID/stack` (the kernel stack of a stuck victim) is readable only
//!   with it; on kernels before 5.8 every `bpf()` call (the lost-event counter) needs it too.
//! - `CAP_BPF`: `bpf()` map reads (lost events, tracked processes) where
//!   `unprivileged_bpf_disabled` is set.
//! - `CAP_SYS_PTRACE`: `/proc/PID/fd`, `wchan` and socket attribution of processes of other
//!   users (ptrace read access).
//! - `CAP_DAC_READ_SEARCH`: reading `/proc/PID/fd` directories owned by other users.
//!
//! `watch --unstick` keeps [`UNSTICK`] too, what its remedies need and nothing more:
//! - `CAP_KILL`: ending the victim's tracer, or signalling its parent, when they run as the
//!   victim's (non-root) uid — the only ones signalled without `--allow-foreign-owner`;
//! - `CAP_DAC_OVERRIDE`: aborting a FUSE connection of the victim's uid (fusectl's `abort` is
//!   mode 0200, owned by the mount's `user_id`).
//!
//! Mounting fusectl uses `CAP_SYS_ADMIN` (kept above); raising a memcg limit writes files owned
//! by root (oomtrace's own uid) and the journal lives in root's state directory: no capability.
//!
//! The bounding set is reduced to the same, ambient capabilities are cleared, `no_new_privs` is
//! set (no setuid or file-capability gain by anything oomtrace runs), and the securebits make
//! uid 0 gain nothing at `execve`: an `--on-stuck` hook runs as root's uid but with no
//! capability at all.

use std::io;

pub(crate) const CAP_DAC_READ_SEARCH: u32 = 2;
pub(crate) const CAP_DAC_OVERRIDE: u32 = 1;
/// Kept with `watch --unstick` only: signalling a tracer or parent of the victim's uid.
pub(crate) const CAP_KILL: u32 = 5;
pub(crate) const CAP_SYS_PTRACE: u32 = 19;
pub(crate) const CAP_SYS_ADMIN: u32 = 21;
pub(crate) const CAP_BPF: u32 = 39;

/// What `watch --unstick` keeps besides [`KEPT`], and why: see the module docs.
pub(crate) const UNSTICK: [u32; 2] = [CAP_KILL, CAP_DAC_OVERRIDE];

/// What `watch` keeps, and why: see the module docs.
pub(crate) const KEPT: [u32; 4] = [CAP_SYS_ADMIN, CAP_BPF, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH];

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn prctl(op: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(op, arg, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drops every capability but [`KEPT`] and `extra` (effective, permitted, inheritable,
/// bounding, ambient), locks uid 0 out of regaining them at exec, and sets `no_new_privs`.
pub(crate) fn drop_to_kept(extra: &[u32]) -> io::Result<()> {
    let keep = |c: u32| KEPT.contains(&c) || extra.contains(&c);
    // The securebits and the bounding set need CAP_SETPCAP, so they come first.
    let bits = libc::SECBIT_NOROOT
        | libc::SECBIT_NOROOT_LOCKED
        | libc::SECBIT_NO_SETUID_FIXUP
        | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong)
        .map_err(|e| io::Error::new(e.kind(), format!("setting securebits: {e}")))?;
    for cap in 0..=last_cap() {
        if !keep(cap) {
            prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("dropping capability {cap} from the bounding set: {e}"),
                )
            })?;
        }
    }
    // SAFETY: plain prctl.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    let mut data = [CapData::default(); 2];
    for &cap in KEPT.iter().chain(extra) {
        let (i, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        data[i].effective |= bit;
        data[i].permitted |= bit;
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: a valid header and two data words, as capset(2) wants for version 3.
    let r = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("capset: {e}")));
    }
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
        .map_err(|e| io::Error::new(e.kind(), format!("setting no_new_privs: {e}")))
}

/// Drops every capability of the calling thread only (capabilities are per thread): for a
/// helper thread started while the process still has them, which needs none.
pub(crate) fn drop_all_of_this_thread() -> io::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: a valid header and two data words, as capset(2) wants for version 3.
    let r = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
