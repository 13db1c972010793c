//! tracefs: finding (or mounting) it, and reading tracepoint `format` files so that classic
//! tracepoint programs read record fields at this kernel's offsets.

use std::path::{Path, PathBuf};

/// Where tracefs is usually mounted, preferred first.
pub const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Why tracefs or a format file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// tracefs is not mounted and mounting it failed.
    #[error(
        "tracefs is not mounted and mounting it at {path} failed: {source} (run as root, or \
         `mount -t tracefs nodev {path}`)"
    )]
    Mount {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// tracefs is not mounted and we were asked not to mount it.
    #[error("tracefs is not mounted (mount it with `mount -t tracefs nodev /sys/kernel/tracing`)")]
    NotMounted,
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A format file line is not what the kernel writes.
    #[error("format file line {line}: {what}")]
    Parse { line: usize, what: String },
}

/// A tracefs mount.
#[derive(Debug, Clone)]
pub struct Tracefs {
    pub root: PathBuf,
    /// True if oomtrace mounted it (tracefs is not mounted at boot on some hosts).
    pub mounted_by_us: bool,
}

impl Tracefs {
    /// Finds a mounted tracefs; mounts one at /sys/kernel/tracing if none is and
    /// `mount_if_missing` is set.
    pub fn locate(mount_if_missing: bool) -> Result<Tracefs, TracefsError> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        if let Some(root) = find_in_mounts(&mounts) {
            return Ok(Tracefs {
                root,
                mounted_by_us: false,
            });
        }
        if !mount_if_missing {
            return Err(TracefsError::NotMounted);
        }
        let path = TRACEFS_PATHS[0];
        let c = |s: &str| std::ffi::CString::new(s).expect("no NUL in constant strings");
        let (src, target, fstype) = (c("nodev"), c(path), c("tracefs"));
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(TracefsError::Mount {
                path: path.into(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Tracefs {
            root: PathBuf::from(path),
            mounted_by_us: true,
        })
    }

    fn event_dir(&self, category: &str, event: &str) -> PathBuf {
        self.root.join("events").join(category).join(event)
    }

    pub fn event_exists(&self, category: &str, event: &str) -> bool {
        self.event_dir(category, event).join("format").exists()
    }

    /// Reads and parses `events/<category>/<event>/format`.
    pub fn format(&self, category: &str, event: &str) -> Result<TracepointFormat, TracefsError> {
        let path = self.event_dir(category, event).join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        TracepointFormat::parse(&text)
    }
}

/// The first tracefs mount point in a `/proc/self/mounts` text, preferring the usual places.
pub fn find_in_mounts(mounts: &str) -> Option<PathBuf> {
    let found: Vec<&str> = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_src, target, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "tracefs").then_some(target)
        })
        .collect();
    TRACEFS_PATHS
        .iter()
        .find(|p| found.contains(p))
        .copied()
        .or_else(|| found.first().copied())
        .map(PathBuf::from)
        .filter(|p| Path::new(p).is_absolute())
}

/// A tracepoint's record layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracepointFormat {
    pub name: String,
    pub id: u32,
    pub fields: Vec<Field>,
}

/// One record field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The declaration without the name, e.g. `unsigned long`, `char[16]`, `__data_loc char[]`.
    pub type_decl: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
    /// A `__data_loc` field: a u32 (offset | length << 16) pointing into the record.
    pub data_loc: bool,
}

impl TracepointFormat {
    pub fn parse(text: &str) -> Result<TracepointFormat, TracefsError> {
        let mut fmt = TracepointFormat {
            name: String::new(),
            id: 0,
            fields: Vec::new(),
        };
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            let err = |what: &str| TracefsError::Parse {
                line: i + 1,
                what: what.to_string(),
            };
            if let Some(name) = line.strip_prefix("name:") {
                fmt.name = name.trim().to_string();
            } else if let Some(id) = line.strip_prefix("ID:") {
                fmt.id = id.trim().parse().map_err(|_| err("bad ID"))?;
            } else if line.starts_with("field:") {
                fmt.fields
                    .push(parse_field(line).ok_or_else(|| err("malformed field"))?);
            }
        }
        if fmt.fields.is_empty() {
            return Err(TracefsError::Parse {
                line: 0,
                what: "no fields".into(),
            });
        }
        Ok(fmt)
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// `field:unsigned long total_vm;	offset:16;	size:8;	signed:0;`
fn parse_field(line: &str) -> Option<Field> {
    let mut decl = None;
    let (mut offset, mut size, mut signed) = (None, None, None);
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once(':')?;
        match key.trim() {
            "field" => decl = Some(value.trim()),
            "offset" => offset = value.trim().parse().ok(),
            "size" => size = value.trim().parse().ok(),
            "signed" => signed = value.trim().parse::<u8>().ok().map(|s| s != 0),
            _ => {}
        }
    }
    let decl = decl?;
    // The name is the last word, with any array suffix (`comm[16]`) moved to the type.
    let (ty, last) = decl.rsplit_once(' ')?;
    let (name, array) = match last.find('[') {
        Some(at) => (&last[..at], &last[at..]),
        None => (last, ""),
    };
    if name.is_empty() {
        return None;
    }
    Some(Field {
        name: name.to_string(),
        type_decl: format!("{}{array}", ty.trim()),
        offset: offset?,
        size: size?,
        signed: signed.unwrap_or(false),
        data_loc: ty.contains("__data_loc"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> TracepointFormat {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(rel);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        TracepointFormat::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn mark_victim_of_6_18() {
        let f = fixture("6.18/oom/mark_victim/format");
        assert_eq!(f.name, "mark_victim");
        let comm = f.field("comm").unwrap();
        assert!(comm.data_loc);
        assert_eq!((comm.offset, comm.size), (12, 4));
        let adj = f.field("oom_score_adj").unwrap();
        assert_eq!((adj.offset, adj.size, adj.signed), (64, 2, true));
        assert_eq!(f.field("pgtables").unwrap().type_decl, "unsigned long");
        assert_eq!(f.field("common_pid").unwrap().offset, 4);
    }

    #[test]
    fn exit_and_signal_of_6_18() {
        let exit = fixture("6.18/sched/sched_process_exit/format");
        let comm = exit.field("comm").unwrap();
        assert_eq!(
            (comm.offset, comm.size, comm.type_decl.as_str()),
            (8, 16, "char[16]")
        );
        let gd = exit.field("group_dead").unwrap();
        assert_eq!((gd.offset, gd.size), (32, 1));
        let sig = fixture("6.18/signal/signal_generate/format");
        assert_eq!(sig.field("code").unwrap().offset, 16);
        assert_eq!(sig.field("result").unwrap().offset, 44);
    }

    #[test]
    fn older_layouts() {
        let mv = fixture("pre-6.8/oom/mark_victim/format");
        assert_eq!(mv.field("pid").unwrap().offset, 8);
        assert!(mv.field("comm").is_none());
        let exit = fixture("pre-6.16/sched/sched_process_exit/format");
        assert!(exit.field("group_dead").is_none());
        assert_eq!(exit.field("pid").unwrap().offset, 24);
    }

    #[test]
    fn malformed_input_is_an_error_with_a_line() {
        let bad = "name: x\nID: 1\nformat:\n\tfield:int pid;\toffset:zz;\tsize:4;\tsigned:1;\n";
        match TracepointFormat::parse(bad) {
            Err(TracefsError::Parse { line, .. }) => assert_eq!(line, 4),
            other => panic!("{other:?}"),
        }
        assert!(TracepointFormat::parse("").is_err());
        assert!(TracepointFormat::parse("ID: nope\n").is_err());
        assert!(TracepointFormat::parse("\u{0}\u{ff}field:;;;:\n").is_err());
    }

    #[test]
    fn mounts_prefer_the_usual_place() {
        let m = "sysfs /sys sysfs rw 0 0\nnodev /mnt/t tracefs rw 0 0\nnodev /sys/kernel/tracing tracefs rw 0 0\n";
        assert_eq!(
            find_in_mounts(m),
            Some(PathBuf::from("/sys/kernel/tracing"))
        );
        assert_eq!(
            find_in_mounts("nodev /mnt/t tracefs rw 0 0\n"),
            Some(PathBuf::from("/mnt/t"))
        );
        assert_eq!(find_in_mounts("proc /proc proc rw 0 0\n"), None);
    }
}
