//! tracefs: finding (or mounting) it, and reading tracepoint `format` files so that classic
//! tracepoint programs read record fields at the running kernel's offsets.

use std::{
    ffi::CStr,
    io,
    path::{Path, PathBuf},
};

/// Where tracefs is usually mounted, preferred first.
pub(crate) const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// `TRACEFS_PATHS[0]`, for mount(2).
const MOUNT_POINT: &CStr = c"/sys/kernel/tracing";

/// Why tracefs or a format file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// tracefs is not mounted, and we were told not to mount it.
    #[error("tracefs is not mounted (run as root, or `mount -t tracefs nodev {}`)", TRACEFS_PATHS[0])]
    NotMounted,
    /// tracefs is not mounted, and mounting it failed.
    #[error(
        "tracefs is not mounted and mounting it at {} failed: {} ({hint})",
        path.display(),
        errno_name(source)
    )]
    Mount {
        path: PathBuf,
        /// What to do about it.
        hint: &'static str,
        #[source]
        source: io::Error,
    },
    /// A tracefs file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A category or event name that is not a plain directory name.
    #[error("invalid tracepoint name `{category}/{event}`")]
    BadName { category: String, event: String },
    /// A format file (`file`, if it came from one) is not what the kernel writes.
    #[error("malformed tracepoint format{} at line {line}: {reason}", in_file(file.as_deref()))]
    Malformed {
        file: Option<PathBuf>,
        line: usize,
        reason: String,
    },
}

fn in_file(file: Option<&Path>) -> String {
    file.map(|f| format!(" in {}", f.display()))
        .unwrap_or_default()
}

/// `EPERM` rather than "Operation not permitted (os error 1)", for the errors mount(2) gives.
fn errno_name(e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::ENODEV) => "ENODEV",
        Some(libc::EBUSY) => "EBUSY",
        Some(libc::EROFS) => "EROFS",
        _ => return e.to_string(),
    };
    name.to_string()
}

/// A tracefs mount: where it is, and whether we mounted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tracefs {
    /// The mount point, e.g. `/sys/kernel/tracing`.
    pub(crate) root: PathBuf,
    /// True if [`Tracefs::locate`] mounted it (some hosts do not mount tracefs at boot).
    pub(crate) mounted_by_us: bool,
}

impl Tracefs {
    /// Finds a mounted tracefs (a `tracefs` line of `/proc/self/mounts`, preferring
    /// [`TRACEFS_PATHS`]). If there is none and `mount_if_missing` is set, mounts one at
    /// `/sys/kernel/tracing` and reports `mounted_by_us`.
    pub(crate) fn locate(mount_if_missing: bool) -> Result<Tracefs, TracefsError> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let found = find_in_mounts(&mounts).or_else(|| {
            // No /proc, or a tracefs that only appears once touched (the debugfs automount).
            let mut probe = TRACEFS_PATHS.iter().map(PathBuf::from);
            probe.find(|p| p.join("events").is_dir())
        });
        if let Some(root) = found {
            return Ok(Tracefs {
                root,
                mounted_by_us: false,
            });
        }
        if !mount_if_missing {
            return Err(TracefsError::NotMounted);
        }
        // SAFETY: NUL-terminated string constants; tracefs takes no data argument.
        let rc = unsafe {
            libc::mount(
                c"nodev".as_ptr(),
                MOUNT_POINT.as_ptr(),
                c"tracefs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let source = io::Error::last_os_error();
            let hint = match source.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => {
                    "run as root, or `mount -t tracefs nodev /sys/kernel/tracing`"
                }
                Some(libc::ENODEV) => "this kernel was built without tracefs (CONFIG_TRACING)",
                Some(libc::ENOENT) => "the mount point is missing: is sysfs mounted at /sys?",
                _ => "try `mount -t tracefs nodev /sys/kernel/tracing`",
            };
            return Err(TracefsError::Mount {
                path: PathBuf::from(TRACEFS_PATHS[0]),
                hint,
                source,
            });
        }
        Ok(Tracefs {
            root: PathBuf::from(TRACEFS_PATHS[0]),
            mounted_by_us: true,
        })
    }

    /// `events/<category>/<event>/format` under the root, if the names are plain names.
    fn format_path(&self, category: &str, event: &str) -> Option<PathBuf> {
        let plain = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains('/');
        (plain(category) && plain(event)).then(|| {
            self.root
                .join("events")
                .join(category)
                .join(event)
                .join("format")
        })
    }

    /// Reads and parses `events/<category>/<event>/format`.
    pub(crate) fn format(
        &self,
        category: &str,
        event: &str,
    ) -> Result<TracepointFormat, TracefsError> {
        let path = self
            .format_path(category, event)
            .ok_or_else(|| TracefsError::BadName {
                category: category.to_string(),
                event: event.to_string(),
            })?;
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read {
            path: path.clone(),
            source,
        })?;
        TracepointFormat::parse(&text).map_err(|e| match e {
            TracefsError::Malformed { line, reason, .. } => TracefsError::Malformed {
                file: Some(path),
                line,
                reason,
            },
            other => other,
        })
    }

    /// True if this kernel has the tracepoint `<category>:<event>`.
    pub(crate) fn event_exists(&self, category: &str, event: &str) -> bool {
        self.format_path(category, event)
            .is_some_and(|p| p.is_file())
    }
}

/// The tracefs mount point in a `/proc/self/mounts` text: one of [`TRACEFS_PATHS`] if mounted
/// there, else the first.
fn find_in_mounts(mounts: &str) -> Option<PathBuf> {
    let found: Vec<String> = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_source, target, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "tracefs").then(|| unescape_mount_path(target))
        })
        .filter(|p| p.starts_with('/'))
        .collect();
    let preferred = TRACEFS_PATHS.iter().find(|p| found.iter().any(|f| f == *p));
    preferred
        .map(|p| p.to_string())
        .or_else(|| found.into_iter().next())
        .map(PathBuf::from)
}

/// Undoes the octal escapes (`\040` for a space) of paths in `/proc/self/mounts`.
fn unescape_mount_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out + rest
}

/// A tracepoint's record layout, from its `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracepointFormat {
    /// The event name (`name:` line).
    pub name: String,
    /// The event id (`ID:` line), the value of `common_type` in its records.
    pub(crate) id: u32,
    /// The fields in file order, `common_*` ones included.
    pub fields: Vec<Field>,
}

/// One record field of a tracepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field name, e.g. `comm` for `char comm[16]`.
    pub(crate) name: String,
    /// The declaration without the name: `unsigned long`, `char[16]`, `__data_loc char[]`.
    pub(crate) type_decl: String,
    /// Byte offset in the record.
    pub(crate) offset: u32,
    /// Size in bytes (4 for a `__data_loc` field).
    pub(crate) size: u32,
    /// Whether the kernel considers the type signed (`signed:1`).
    pub(crate) signed: bool,
    /// A `__data_loc` field: a u32 holding `offset | length << 16` of data later in the record.
    pub(crate) data_loc: bool,
}

impl TracepointFormat {
    /// Parses the text of a `format` file. Lines after `print fmt:` and unknown keys are
    /// ignored; anything else unexpected is an error naming the line.
    pub fn parse(text: &str) -> Result<TracepointFormat, TracefsError> {
        let malformed = |line: usize, reason: String| TracefsError::Malformed {
            file: None,
            line,
            reason,
        };
        let (mut name, mut id, mut fields) = (None, None, Vec::new());
        let mut last = 0;
        for (i, line) in text.lines().enumerate() {
            last = i + 1;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                return Err(malformed(
                    last,
                    format!("expected `key: value`, got `{line}`"),
                ));
            };
            let value = value.trim();
            match key.trim() {
                "name" if !value.is_empty() => name = Some(value.to_string()),
                "ID" => match value.parse() {
                    Ok(v) => id = Some(v),
                    Err(_) => return Err(malformed(last, format!("bad ID `{value}`"))),
                },
                "field" => fields.push(parse_field(line).map_err(|r| malformed(last, r))?),
                "print fmt" => break,
                "name" => return Err(malformed(last, "empty name".into())),
                _ => {}
            }
        }
        let missing = |what: &str| malformed(last, format!("no {what} before the end"));
        if fields.is_empty() {
            return Err(missing("`field:` line"));
        }
        Ok(TracepointFormat {
            name: name.ok_or_else(|| missing("`name:` line"))?,
            id: id.ok_or_else(|| missing("`ID:` line"))?,
            fields,
        })
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Parses `field:unsigned long total_vm;<TAB>offset:16;<TAB>size:8;<TAB>signed:0;`.
fn parse_field(line: &str) -> Result<Field, String> {
    let (mut decl, mut offset, mut size, mut signed) = (None, None, None, false);
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once(':')
            .ok_or_else(|| format!("`{part}` is not `key:value`"))?;
        let (key, value) = (key.trim(), value.trim());
        let number = || {
            value
                .parse::<u32>()
                .map_err(|_| format!("{key} `{value}` is not a number"))
        };
        match key {
            "field" => decl = Some(value),
            "offset" => offset = Some(number()?),
            "size" => size = Some(number()?),
            "signed" => signed = number()? != 0,
            _ => {}
        }
    }
    let decl = decl.ok_or("no `field:` declaration")?;
    let (name, type_decl) = split_decl(decl).ok_or_else(|| format!("no field name in `{decl}`"))?;
    Ok(Field {
        name: name.to_string(),
        data_loc: type_decl.starts_with("__data_loc"),
        type_decl,
        offset: offset.ok_or_else(|| format!("no offset for `{name}`"))?,
        size: size.ok_or_else(|| format!("no size for `{name}`"))?,
        signed,
    })
}

/// Splits `char comm[16]` into (`comm`, `char[16]`), `__data_loc char[] comm` into
/// (`comm`, `__data_loc char[]`), `const char * name` into (`name`, `const char *`). Array
/// lengths may be expressions (`__u8 saddr[sizeof(struct sockaddr_in6)]`).
fn split_decl(decl: &str) -> Option<(&str, String)> {
    // Trailing array dimensions, matched backwards.
    let mut end = decl.len();
    while decl[..end].ends_with(']') {
        let mut depth = 0;
        let open = decl[..end].rfind(|c| {
            depth += match c {
                ']' => 1,
                '[' => -1,
                _ => 0,
            };
            depth == 0
        })?;
        end = open;
    }
    let base = &decl[..end];
    let ty = base.trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_');
    let name = base.get(ty.len()..)?;
    let ty = ty.trim();
    if name.is_empty() || ty.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some((name, format!("{ty}{}", &decl[end..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> TracepointFormat {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata")).join(rel);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        TracepointFormat::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// (offset, size, signed, data_loc) of a field.
    fn at(f: &TracepointFormat, name: &str) -> (u32, u32, bool, bool) {
        let f = f.field(name).unwrap_or_else(|| panic!("no field {name}"));
        (f.offset, f.size, f.signed, f.data_loc)
    }

    const FIXTURES_6_18: [&str; 8] = [
        "oom/mark_victim",
        "oom/wake_reaper",
        "oom/start_task_reaping",
        "oom/finish_task_reaping",
        "oom/skip_task_reaping",
        "sched/sched_process_exit",
        "sched/sched_process_free",
        "signal/signal_generate",
    ];

    #[test]
    fn every_fixture_parses_with_the_common_fields() {
        let old = [
            "pre-6.8/oom/mark_victim",
            "pre-6.16/sched/sched_process_exit",
        ];
        let all = FIXTURES_6_18
            .iter()
            .map(|f| format!("6.18/{f}"))
            .chain(old.map(String::from));
        for rel in all {
            let f = fixture(&format!("{rel}/format"));
            assert!(rel.ends_with(&format!("/{}", f.name)), "{rel}: {}", f.name);
            assert_eq!(at(&f, "common_type"), (0, 2, false, false));
            assert_eq!(at(&f, "common_flags"), (2, 1, false, false));
            assert_eq!(at(&f, "common_preempt_count"), (3, 1, false, false));
            assert_eq!(at(&f, "common_pid"), (4, 4, true, false));
        }
    }

    #[test]
    fn mark_victim_6_18() {
        let f = fixture("6.18/oom/mark_victim/format");
        assert_eq!((f.name.as_str(), f.fields.len()), ("mark_victim", 13));
        assert_eq!(at(&f, "pid"), (8, 4, true, false));
        assert_eq!(at(&f, "comm"), (12, 4, false, true));
        assert_eq!(f.field("comm").unwrap().type_decl, "__data_loc char[]");
        for (name, offset) in [
            ("total_vm", 16),
            ("anon_rss", 24),
            ("file_rss", 32),
            ("shmem_rss", 40),
            ("pgtables", 56),
        ] {
            assert_eq!(at(&f, name), (offset, 8, false, false), "{name}");
            assert_eq!(f.field(name).unwrap().type_decl, "unsigned long");
        }
        assert_eq!(at(&f, "uid"), (48, 4, false, false));
        assert_eq!(at(&f, "oom_score_adj"), (64, 2, true, false));
    }

    #[test]
    fn exit_free_and_signal_6_18() {
        let exit = fixture("6.18/sched/sched_process_exit/format");
        assert_eq!(at(&exit, "comm"), (8, 16, false, false));
        assert_eq!(exit.field("comm").unwrap().type_decl, "char[16]");
        assert_eq!(at(&exit, "pid"), (24, 4, true, false));
        assert_eq!(at(&exit, "group_dead"), (32, 1, false, false));
        // sched_process_free (the shared sched_process_template) has a __data_loc comm.
        let free = fixture("6.18/sched/sched_process_free/format");
        assert_eq!(at(&free, "comm"), (8, 4, false, true));
        assert_eq!(at(&free, "pid"), (12, 4, true, false));
        assert_eq!(at(&free, "prio"), (16, 4, true, false));
        let sig = fixture("6.18/signal/signal_generate/format");
        let offsets = [
            ("sig", 8),
            ("errno", 12),
            ("code", 16),
            ("comm", 20),
            ("pid", 36),
            ("group", 40),
            ("result", 44),
        ];
        for (name, offset) in offsets {
            assert_eq!(sig.field(name).unwrap().offset, offset, "{name}");
        }
        for ev in [
            "wake_reaper",
            "start_task_reaping",
            "finish_task_reaping",
            "skip_task_reaping",
        ] {
            assert_eq!(
                at(&fixture(&format!("6.18/oom/{ev}/format")), "pid"),
                (8, 4, true, false)
            );
        }
    }

    #[test]
    fn older_layouts() {
        let mv = fixture("pre-6.8/oom/mark_victim/format");
        assert_eq!(mv.fields.len(), 5);
        assert_eq!(at(&mv, "pid"), (8, 4, true, false));
        assert!(mv.field("comm").is_none());
        let exit = fixture("pre-6.16/sched/sched_process_exit/format");
        assert_eq!(at(&exit, "comm"), (8, 16, false, false));
        assert_eq!(at(&exit, "pid"), (24, 4, true, false));
        assert_eq!(at(&exit, "prio"), (28, 4, true, false));
        assert!(exit.field("group_dead").is_none());
    }

    #[test]
    fn declarations() {
        let split = |d| split_decl(d).map(|(n, t)| (n.to_string(), t));
        let ok = |n: &str, t: &str| Some((n.to_string(), t.to_string()));
        assert_eq!(
            split("unsigned long total_vm"),
            ok("total_vm", "unsigned long")
        );
        assert_eq!(split("char comm[16]"), ok("comm", "char[16]"));
        assert_eq!(
            split("__data_loc char[] comm"),
            ok("comm", "__data_loc char[]")
        );
        assert_eq!(split("const char * name"), ok("name", "const char *"));
        assert_eq!(split("void *ptr"), ok("ptr", "void *"));
        assert_eq!(split("u8 m[2][3]"), ok("m", "u8[2][3]"));
        let sizeof = "__u8 saddr[sizeof(struct sockaddr_in6)]";
        assert_eq!(
            split(sizeof),
            ok("saddr", "__u8[sizeof(struct sockaddr_in6)]")
        );
        for bad in [
            "", "pid", "int", "int 9", "int x]", "int [4]", "int é", "é[1]",
        ] {
            assert_eq!(split(bad), None, "{bad}");
        }
    }

    #[test]
    fn malformed_input_is_a_typed_error_naming_the_line() {
        let line_of = |text: &str| match TracepointFormat::parse(text) {
            Err(TracefsError::Malformed {
                line, file: None, ..
            }) => line,
            other => panic!("{text:?}: {other:?}"),
        };
        let good = "name: x\nID: 7\nformat:\n\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n";
        let f = TracepointFormat::parse(good).unwrap();
        assert_eq!(
            (f.name.as_str(), f.id, at(&f, "pid")),
            ("x", 7, (8, 4, true, false))
        );
        assert_eq!(line_of(&good.replace("offset:8", "offset:zz")), 4);
        assert_eq!(line_of(&good.replace("size:4;", "")), 4);
        assert_eq!(line_of(&good.replace("field:int pid", "field:pid")), 4);
        assert_eq!(line_of(&good.replace("\tsigned", " bogus;\tsigned")), 4);
        assert_eq!(line_of(&good.replace("ID: 7", "ID: -1")), 2);
        assert_eq!(line_of(&good.replace("format:", "format")), 3);
        assert_eq!(line_of(&good.replace("name: x", "name:")), 1);
        assert_eq!(line_of(&good.replace("ID: 7\n", "")), 3);
        assert_eq!(line_of("name: x\nID: 1\n"), 2);
        assert_eq!(line_of(""), 0);
        let err = TracepointFormat::parse(&good.replace("offset:8", "offset:zz")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed tracepoint format at line 4: offset `zz` is not a number"
        );
        // Unknown keys, and whatever follows `print fmt:`, are not errors.
        let extra =
            good.replace("signed:1;", "signed:1;\tflags:3;") + "\nprint fmt: \"x\"\ngarbage\n";
        assert_eq!(TracepointFormat::parse(&extra).unwrap(), f);
    }

    #[test]
    fn no_input_panics() {
        let real = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/6.18/oom/mark_victim/format"
        ))
        .unwrap();
        for cut in (0..real.len()).filter(|&c| real.is_char_boundary(c)) {
            let _ = TracepointFormat::parse(&real[..cut]);
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = b"field:offset;size signed[]\n\t0123456789_a\xc3\xa9*";
        for _ in 0..20_000 {
            let mut bytes = real.clone().into_bytes();
            for _ in 0..6 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed >> 16) as usize % bytes.len();
                bytes[at] = alphabet[(seed as usize) % alphabet.len()];
            }
            let _ = TracepointFormat::parse(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn mounts() {
        let m = "sysfs /sys sysfs rw 0 0\nnodev /mnt/t tracefs rw 0 0\nnodev /sys/kernel/tracing tracefs rw 0 0\n";
        assert_eq!(
            find_in_mounts(m),
            Some(PathBuf::from("/sys/kernel/tracing"))
        );
        assert_eq!(
            find_in_mounts("nodev /mnt/my\\040t tracefs rw 0 0\n"),
            Some(PathBuf::from("/mnt/my t"))
        );
        assert_eq!(find_in_mounts("proc /proc proc rw 0 0\nbroken\n\n"), None);
        assert_eq!(unescape_mount_path("a\\134b\\9\\"), "a\\b\\9\\");
        assert_eq!(MOUNT_POINT.to_str(), Ok(TRACEFS_PATHS[0]));
    }

    #[test]
    fn bad_names_are_refused() {
        let t = Tracefs {
            root: PathBuf::from("/nonexistent"),
            mounted_by_us: false,
        };
        for (c, e) in [("..", "x"), ("oom", "../../x"), ("", "x"), ("oom", "a/b")] {
            assert!(!t.event_exists(c, e));
            assert!(
                matches!(t.format(c, e), Err(TracefsError::BadName { .. })),
                "{c}/{e}"
            );
        }
        let err = t.format("oom", "mark_victim").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read /nonexistent/events/oom/mark_victim/format"
        );
    }

    /// The running kernel's own format files, where tracefs is mounted and readable. Does not
    /// mount anything.
    #[test]
    fn the_running_kernel() {
        let t = match Tracefs::locate(false) {
            Ok(t) => t,
            Err(e) => return eprintln!("skipped: {e}"),
        };
        assert!(!t.mounted_by_us);
        let mv = match t.format("oom", "mark_victim") {
            Ok(f) => f,
            Err(e) => return eprintln!("skipped: {e}"),
        };
        assert!(t.event_exists("oom", "mark_victim"));
        assert!(!t.event_exists("oom", "no_such_event"));
        assert!(mv.field("pid").is_some());
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        if release.starts_with("6.18.") {
            for rel in FIXTURES_6_18 {
                let (cat, ev) = rel.split_once('/').unwrap();
                let live = t.format(cat, ev).unwrap();
                assert_eq!(
                    live.fields,
                    fixture(&format!("6.18/{rel}/format")).fields,
                    "{rel}"
                );
            }
        }
    }
}
