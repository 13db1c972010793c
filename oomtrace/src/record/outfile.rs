//! Files oomtrace writes (dumps, Perfetto timelines). It runs as root, often with an output path
//! in a world-writable directory: a file is only ever created new — never opened through a
//! planted symbolic link, never truncating what is there (a crashed run's dump, or a root-owned
//! file a link points at). Mode 0600 from the start: dumps name processes.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

/// Creates `path` new (0600). An existing file or link is an error that says what to do.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(libc::ELOOP) {
                let what = match path.symlink_metadata() {
                    Ok(m) if m.file_type().is_symlink() => "is a symbolic link (not followed)",
                    _ => "exists",
                };
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} {what}: oomtrace never writes over a file (pick another name, give a \
                         directory to get a fresh name in it, or --force to replace it)",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })
}

/// Where `record -o PATH` writes: in a directory, a fresh name (`oomtrace-<UTC>-<pid>.dump`,
/// so that a restarted service never overwrites the dump of the run that crashed); with
/// `replace`, an existing file or link at `path` is removed first (the link itself, never what
/// it points at).
pub fn resolve(path: &Path, replace: bool) -> io::Result<PathBuf> {
    if path.is_dir() {
        let now = crate::clock::rfc3339(i128::from(crate::clock::clock_ns(libc::CLOCK_REALTIME)));
        let stamp: String = now
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == 'T')
            .take(15)
            .collect();
        return Ok(path.join(format!("oomtrace-{stamp}Z-{}.dump", std::process::id())));
    }
    if replace && path.symlink_metadata().is_ok() {
        std::fs::remove_file(path)?;
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::scratch::ScratchDir;

    /// The attack: a link planted where root will write, pointing at a file root owns.
    #[test]
    fn a_planted_symlink_is_not_followed_and_its_target_is_untouched() {
        let dir = ScratchDir::new("outfile");
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let link = dir.path().join("oom.dump");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = create_new(&link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        let mode = std::fs::metadata(&target).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o644
        );
        // --force removes the link, not its target.
        let p = resolve(&link, true).unwrap();
        create_new(&p).unwrap().write_all(b"dump").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "dump");
    }

    #[test]
    fn an_existing_dump_is_never_clobbered_and_a_directory_gets_fresh_names() {
        let dir = ScratchDir::new("outfile");
        let old = dir.path().join("old.dump");
        std::fs::write(&old, "a crashed run's dump").unwrap();
        let e = create_new(&resolve(&old, false).unwrap()).unwrap_err();
        assert!(e.to_string().contains("exists"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&old).unwrap(),
            "a crashed run's dump"
        );
        let a = resolve(dir.path(), false).unwrap();
        assert_eq!(a.parent(), Some(dir.path()));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("oomtrace-") && name.ends_with(".dump"),
            "{name}"
        );
        let f = create_new(&a).unwrap();
        let mode = f.metadata().unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
