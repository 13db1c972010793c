//! A FUSE filesystem served by hand that can hold a read unanswered: the reader thread then
//! sits in `request_wait_answer` in state D, and stays there even after SIGKILL (the request
//! was already read by the daemon). This reproduces the incident's stuck OOM victim.
//!
//! One file, `/hold`. The daemon answers INIT, LOOKUP, GETATTR, OPEN (with FOPEN_DIRECT_IO so a
//! read() is a synchronous FUSE_READ), FLUSH and RELEASE; it reads FUSE_READ and does not
//! answer until [`FuseHold::release`]; it ignores FUSE_INTERRUPT. Dropping it releases the read,
//! detaches the mount and removes the directory.

use std::{
    ffi::CString,
    fs::File,
    io::{Read as _, Write as _},
    os::fd::FromRawFd as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use crate::wait_until;

const FUSE_LOOKUP: u32 = 1;
const FUSE_FORGET: u32 = 2;
const FUSE_GETATTR: u32 = 3;
const FUSE_OPEN: u32 = 14;
const FUSE_READ: u32 = 15;
const FUSE_RELEASE: u32 = 18;
const FUSE_FLUSH: u32 = 25;
const FUSE_INIT: u32 = 26;
const FUSE_INTERRUPT: u32 = 36;
const FUSE_DESTROY: u32 = 38;
const FUSE_BATCH_FORGET: u32 = 42;
const FOPEN_DIRECT_IO: u32 = 1;
const ROOT_ID: u64 = 1;
const FILE_ID: u64 = 2;
const IN_HEADER: usize = 40;

#[derive(Default)]
struct Shared {
    /// `unique` of each FUSE_READ read and not answered.
    held: Vec<u64>,
}

/// A mounted FUSE filesystem whose reads block until released.
pub struct FuseHold {
    dir: PathBuf,
    dev: Arc<File>,
    shared: Arc<Mutex<Shared>>,
    daemon: Option<JoinHandle<()>>,
    mounted: bool,
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

impl FuseHold {
    /// Mounts a new filesystem on a fresh directory under /tmp.
    pub fn mount(label: &str) -> FuseHold {
        let dir =
            std::env::temp_dir().join(format!("oomtrace-fuse-{}-{label}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        // SAFETY: a valid path; the fd is owned by the File below.
        let fd = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        assert!(
            fd >= 0,
            "opening /dev/fuse: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a fresh descriptor we own.
        let dev = Arc::new(unsafe { File::from_raw_fd(fd) });
        let opts = cstr(&format!(
            "fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other"
        ));
        let target = cstr(dir.to_str().expect("utf-8 path"));
        // SAFETY: valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c"oomtrace-test".as_ptr(),
                target.as_ptr(),
                c"fuse".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting fuse on {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
        let shared = Arc::new(Mutex::new(Shared::default()));
        let daemon = {
            let (dev, shared) = (Arc::clone(&dev), Arc::clone(&shared));
            std::thread::spawn(move || serve(&dev, &shared))
        };
        FuseHold {
            dir,
            dev,
            shared,
            daemon: Some(daemon),
            mounted: true,
        }
    }

    /// The file whose reads block.
    pub fn file(&self) -> PathBuf {
        self.dir.join("hold")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits until the daemon holds at least one read (the reader is then in D).
    pub fn wait_held(&self, timeout: Duration) -> bool {
        wait_until(timeout, || {
            !self.shared.lock().expect("fuse state").held.is_empty()
        })
    }

    /// Answers every held read with end-of-file: the readers return (and die if killed).
    pub fn release(&self) {
        let held: Vec<u64> = std::mem::take(&mut self.shared.lock().expect("fuse state").held);
        for unique in held {
            reply(&self.dev, unique, 0, &[]);
        }
    }
}

impl Drop for FuseHold {
    fn drop(&mut self) {
        self.release();
        if self.mounted {
            let target = cstr(self.dir.to_str().unwrap_or("/nonexistent"));
            // SAFETY: valid path; MNT_DETACH never blocks on busy files.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            self.mounted = false;
        }
        // With the mount gone the kernel ends the connection and the daemon's read fails.
        if let Some(d) = self.daemon.take() {
            let _ = d.join();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn reply(dev: &File, unique: u64, error: i32, body: &[u8]) {
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&error.to_ne_bytes());
    out.extend_from_slice(&unique.to_ne_bytes());
    out.extend_from_slice(body);
    // Replies to requests the kernel already dropped fail with ENOENT: harmless.
    let _ = (&*dev).write(&out);
}

/// `struct fuse_attr` (88 bytes).
fn attr(ino: u64, mode: u32, size: u64) -> Vec<u8> {
    let mut a = Vec::with_capacity(88);
    for v in [ino, size, size.div_ceil(512), 0, 0, 0] {
        a.extend_from_slice(&v.to_ne_bytes());
    }
    for v in [0u32, 0, 0, mode, 1, 0, 0, 0, 4096, 0] {
        a.extend_from_slice(&v.to_ne_bytes());
    }
    a
}

fn attr_of(node: u64) -> Option<Vec<u8>> {
    match node {
        ROOT_ID => Some(attr(ROOT_ID, libc::S_IFDIR | 0o755, 0)),
        FILE_ID => Some(attr(FILE_ID, libc::S_IFREG | 0o444, 1 << 20)),
        _ => None,
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_ne_bytes(s.try_into().expect("4 bytes")))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map_or(0, |s| u64::from_ne_bytes(s.try_into().expect("8 bytes")))
}

fn serve(dev: &File, shared: &Mutex<Shared>) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match (&*dev).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            // ENODEV: unmounted; anything else: give up.
            Err(_) => return,
        };
        let req = &buf[..n];
        if req.len() < IN_HEADER {
            continue;
        }
        let (opcode, unique, node) = (u32_at(req, 4), u64_at(req, 8), u64_at(req, 16));
        let body = &req[IN_HEADER..];
        match opcode {
            FUSE_INIT => {
                let mut out = Vec::with_capacity(64);
                for v in [7u32, 31, u32_at(body, 8), 0] {
                    out.extend_from_slice(&v.to_ne_bytes());
                }
                out.extend_from_slice(&16u16.to_ne_bytes()); // max_background
                out.extend_from_slice(&12u16.to_ne_bytes()); // congestion_threshold
                out.extend_from_slice(&4096u32.to_ne_bytes()); // max_write
                out.extend_from_slice(&1u32.to_ne_bytes()); // time_gran
                out.resize(64, 0);
                reply(dev, unique, 0, &out);
            }
            FUSE_LOOKUP => {
                let name = body.split(|&b| b == 0).next().unwrap_or(&[]);
                if node == ROOT_ID && name == b"hold" {
                    let mut out = Vec::with_capacity(128);
                    for v in [FILE_ID, 0, 1, 1] {
                        out.extend_from_slice(&v.to_ne_bytes());
                    }
                    out.extend_from_slice(&[0u8; 8]);
                    out.extend_from_slice(&attr_of(FILE_ID).expect("file attr"));
                    reply(dev, unique, 0, &out);
                } else {
                    reply(dev, unique, -libc::ENOENT, &[]);
                }
            }
            FUSE_GETATTR => match attr_of(node) {
                Some(a) => {
                    let mut out = Vec::with_capacity(104);
                    out.extend_from_slice(&1u64.to_ne_bytes());
                    out.extend_from_slice(&[0u8; 8]);
                    out.extend_from_slice(&a);
                    reply(dev, unique, 0, &out);
                }
                None => reply(dev, unique, -libc::ENOENT, &[]),
            },
            FUSE_OPEN => {
                let mut out = Vec::with_capacity(16);
                out.extend_from_slice(&0u64.to_ne_bytes());
                out.extend_from_slice(&FOPEN_DIRECT_IO.to_ne_bytes());
                out.extend_from_slice(&0u32.to_ne_bytes());
                reply(dev, unique, 0, &out);
            }
            FUSE_READ => shared.lock().expect("fuse state").held.push(unique),
            FUSE_FLUSH | FUSE_RELEASE => reply(dev, unique, 0, &[]),
            // No reply is expected to these; INTERRUPT is ignored on purpose.
            FUSE_FORGET | FUSE_BATCH_FORGET | FUSE_INTERRUPT => {}
            FUSE_DESTROY => {
                reply(dev, unique, 0, &[]);
                return;
            }
            _ => reply(dev, unique, -libc::ENOSYS, &[]),
        }
    }
}
