//! Finding the offsets the eBPF programs need on the running kernel: struct members from BTF,
//! tracepoint record fields from tracefs format files. Nothing is hard-coded, so one binary runs
//! on 6.1 and 6.18 alike. What cannot be found is left as `NO_OFFSET` and listed in
//! [`Layout::missing`] with what it costs; the programs then leave that field out.

use oomtrace_common::{Config, NO_OFFSET};

use crate::kernel::{
    btf::{Btf, TypeDesc},
    tracefs::{Tracefs, TracepointFormat},
};

/// The configuration for the eBPF programs, and what could not be found.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) config: Config,
    /// One line per offset not found: "what: consequence".
    pub(crate) missing: Vec<String>,
}

/// The structs and enums [`Layout::discover`] looks up in BTF by name: [`Btf::from_blob_for`]
/// indexes only these (and the plan's functions and tracepoints). A name left out is still
/// found, slower; the running kernel's test `btf_names_cover_every_lookup` fails on it.
pub(crate) const BTF_NAMES: &[&str] = &[
    "cgroup",
    "cgroup_root",
    "cgroup_subsys_id",
    "cgroup_subsys_state",
    "css_set",
    "fdtable",
    "file",
    "files_struct",
    "inode",
    "kernfs_node",
    "mem_cgroup",
    "mm_struct",
    "oom_control",
    "percpu_counter",
    "signal_struct",
    "super_block",
    "task_struct",
];

impl Layout {
    /// Reads BTF offsets (if BTF is there) and the format files of the tracepoints in use.
    pub(crate) fn discover(btf: Option<&Btf>, tracefs: Option<&Tracefs>) -> Layout {
        let mut layout = Layout {
            config: Config::UNSET,
            missing: Vec::new(),
        };
        layout.config.page_kb_shift = page_kb_shift();
        match btf {
            Some(btf) => layout.apply_btf(btf),
            None => layout.missing.push(
                "kernel BTF: fentry/kprobe/tp_btf programs cannot read kernel structs".into(),
            ),
        }
        match tracefs {
            Some(t) => {
                let read = |cat: &str, ev: &str| t.format(cat, ev).ok();
                layout.apply_formats(&Formats {
                    mark_victim: read("oom", "mark_victim"),
                    sched_process_exit: read("sched", "sched_process_exit"),
                    sched_process_free: read("sched", "sched_process_free"),
                    signal_generate: read("signal", "signal_generate"),
                    wake_reaper: read("oom", "wake_reaper"),
                    cgroup_mkdir: read("cgroup", "cgroup_mkdir"),
                });
            }
            None => layout
                .missing
                .push("tracefs: classic tracepoints cannot be used".into()),
        }
        layout
    }

    fn apply_btf(&mut self, btf: &Btf) {
        let c = &mut self.config;
        let mut missing = Vec::new();
        let mut off = |s: &str, path: &str, cost: &str| match btf.member_offset(s, path) {
            Ok(o) => o,
            Err(_) => {
                missing.push(format!("{s}.{path}: {cost}"));
                NO_OFFSET
            }
        };
        c.task_pid = off("task_struct", "pid", "thread ids unknown");
        c.task_tgid = off("task_struct", "tgid", "process ids unknown");
        c.task_comm = off("task_struct", "comm", "command names unknown");
        c.task_group_leader = off("task_struct", "group_leader", "start times unknown");
        c.task_cgroups = off("task_struct", "cgroups", "victim memcg unknown");
        c.task_signal = off(
            "task_struct",
            "signal",
            "group-dead and oom_score_adj unknown",
        );
        c.task_mm = off("task_struct", "mm", "victim memory sizes unknown");
        c.task_flags = off(
            "task_struct",
            "flags",
            "whether a SIGKILL's sender was exiting unknown",
        );
        c.css_cgroup = off("cgroup_subsys_state", "cgroup", "memcg ids unknown");
        c.cgroup_kn = off("cgroup", "kn", "memcg ids unknown");
        c.cgroup_level = off("cgroup", "level", "created cgroups' depth unknown");
        c.cgroup_root = off(
            "cgroup",
            "root",
            "created cgroups' hierarchy unknown: none named at creation",
        );
        c.root_hierarchy_id = off(
            "cgroup_root",
            "hierarchy_id",
            "created cgroups' hierarchy unknown: none named at creation",
        );
        c.memcg_css = off("mem_cgroup", "css", "memcg ids unknown");
        c.signal_live = off(
            "signal_struct",
            "live.counter",
            "group-dead unknown on < 6.16",
        );
        c.signal_oom_score_adj = off("signal_struct", "oom_score_adj", "oom_score_adj unknown");
        c.mm_total_vm = off("mm_struct", "total_vm", "victim memory sizes unknown");
        c.mm_pgtables_bytes = off(
            "mm_struct",
            "pgtables_bytes.counter",
            "page-table size unknown",
        );
        fd_walk_offsets(c, &mut off);
        c.oc_memcg = off("oom_control", "memcg", "kill memcg unknown");
        c.oc_gfp_mask = off("oom_control", "gfp_mask", "kill gfp mask unknown");
        c.oc_order = off("oom_control", "order", "kill order unknown");
        c.oc_totalpages = off("oom_control", "totalpages", "kill totalpages unknown");
        c.oc_chosen = off("oom_control", "chosen", "kill victim unknown");
        c.oc_chosen_points = off("oom_control", "chosen_points", "kill points unknown");
        c.oc_constraint = off("oom_control", "constraint", "kill constraint unknown");
        // Since 5.5 start_boottime; before, real_start_time (same clock).
        c.task_start_boottime = btf
            .member_offset("task_struct", "start_boottime")
            .or_else(|_| btf.member_offset("task_struct", "real_start_time"))
            .unwrap_or_else(|_| {
                missing.push("task_struct.start_boottime: pid reuse cannot be told apart".into());
                NO_OFFSET
            });
        // kernfs_node.id is a u64 since 5.5; before, `union kernfs_node_id id` whose `id` is.
        c.kn_id = match btf.member("kernfs_node", "id") {
            Ok(m) if m.size == 8 && matches!(m.ty, TypeDesc::Int { .. }) => m.offset,
            _ => btf
                .member_offset("kernfs_node", "id.id")
                .unwrap_or_else(|_| {
                    missing.push("kernfs_node.id: memcg ids unknown".into());
                    NO_OFFSET
                }),
        };
        // css_set.subsys[memory_cgrp_id]: fold the index into the offset.
        c.css_set_subsys = match (
            btf.member_offset("css_set", "subsys"),
            btf.enum_value("cgroup_subsys_id", "memory_cgrp_id"),
        ) {
            (Ok(o), Ok(id)) => {
                c.memory_cgrp_id = id as u32;
                o + 8 * id as u32
            }
            _ => {
                missing.push("css_set.subsys[memory_cgrp_id]: victim memcg unknown".into());
                NO_OFFSET
            }
        };
        rss_stat(c, btf, &mut missing);
        self.missing.extend(missing);
    }

    /// Fills the classic tracepoint record offsets from their format files.
    pub(crate) fn apply_formats(&mut self, f: &Formats) {
        let c = &mut self.config;
        let field = |fmt: &Option<TracepointFormat>, name: &str| {
            fmt.as_ref()
                .and_then(|f| f.field(name))
                .map_or(NO_OFFSET, |f| f.offset)
        };
        c.tp_victim_pid = field(&f.mark_victim, "pid");
        c.tp_victim_comm = field(&f.mark_victim, "comm");
        c.tp_victim_total_vm = field(&f.mark_victim, "total_vm");
        c.tp_victim_anon_rss = field(&f.mark_victim, "anon_rss");
        c.tp_victim_file_rss = field(&f.mark_victim, "file_rss");
        c.tp_victim_shmem_rss = field(&f.mark_victim, "shmem_rss");
        c.tp_victim_uid = field(&f.mark_victim, "uid");
        c.tp_victim_pgtables = field(&f.mark_victim, "pgtables");
        c.tp_victim_oom_score_adj = field(&f.mark_victim, "oom_score_adj");
        c.tp_exit_group_dead = field(&f.sched_process_exit, "group_dead");
        c.tp_free_pid = field(&f.sched_process_free, "pid");
        c.tp_signal_sig = field(&f.signal_generate, "sig");
        c.tp_signal_code = field(&f.signal_generate, "code");
        c.tp_signal_comm = field(&f.signal_generate, "comm");
        c.tp_signal_pid = field(&f.signal_generate, "pid");
        c.tp_signal_group = field(&f.signal_generate, "group");
        c.tp_signal_result = field(&f.signal_generate, "result");
        c.tp_reaper_pid = field(&f.wake_reaper, "pid");
        c.tp_cgroup_root = field(&f.cgroup_mkdir, "root");
        c.tp_cgroup_level = field(&f.cgroup_mkdir, "level");
        // `id` is a u64 (the kernfs node id) since 5.5; an int before, which names no memcg.
        c.tp_cgroup_id = f
            .cgroup_mkdir
            .as_ref()
            .and_then(|f| f.field("id"))
            .filter(|f| f.size == 8)
            .map_or(NO_OFFSET, |f| f.offset);
        c.tp_cgroup_path = f
            .cgroup_mkdir
            .as_ref()
            .and_then(|f| f.field("path"))
            .filter(|f| f.data_loc)
            .map_or(NO_OFFSET, |f| f.offset);
    }
}

/// The mm's resident-set counters, whose type changed in 6.2.
fn rss_stat(c: &mut Config, btf: &Btf, missing: &mut Vec<String>) {
    // mm->rss_stat: percpu_counter[NR_MM_COUNTERS] since 6.2, struct mm_rss_stat before.
    if let Ok(m) = btf.member("mm_struct", "rss_stat") {
        match &m.ty {
            TypeDesc::Array {
                elem, elem_size, ..
            } if matches!(&**elem, TypeDesc::Struct { name, .. } if name == "percpu_counter") => {
                if let Ok(count) = btf.member_offset("percpu_counter", "count") {
                    c.mm_rss_base = m.offset + count;
                    c.mm_rss_stride = *elem_size;
                }
            }
            TypeDesc::Struct { .. } => {
                if let Ok(count) = btf.member_offset("mm_struct", "rss_stat.count") {
                    c.mm_rss_base = count;
                    c.mm_rss_stride = 8;
                }
            }
            _ => {}
        }
    }
    if c.mm_rss_base == NO_OFFSET {
        missing.push("mm_struct.rss_stat: victim rss unknown (tp_btf)".into());
    }
}

/// The format files the classic tracepoint programs read (`None` where absent).
#[derive(Debug, Default)]
pub(crate) struct Formats {
    pub(crate) mark_victim: Option<TracepointFormat>,
    pub(crate) sched_process_exit: Option<TracepointFormat>,
    pub(crate) sched_process_free: Option<TracepointFormat>,
    pub(crate) signal_generate: Option<TracepointFormat>,
    pub(crate) wake_reaper: Option<TracepointFormat>,
    pub(crate) cgroup_mkdir: Option<TracepointFormat>,
}

fn page_kb_shift() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page)
        .ok()
        .filter(|p| p.is_power_of_two() && *p >= 1024)
        .map_or(2, |p| p.trailing_zeros() - 10)
}

/// What the kernel side needs to read a killed process's sockets from its fd table at the
/// SIGKILL (without them they are read from /proc at the kill).
fn fd_walk_offsets(c: &mut Config, off: &mut impl FnMut(&str, &str, &str) -> u32) {
    let fds = "sockets of a killed process read from /proc at its kill (waiting for the \
               killer's console output)";
    c.task_files = off("task_struct", "files", fds);
    c.files_fdt = off("files_struct", "fdt", fds);
    c.fdt_max_fds = off("fdtable", "max_fds", fds);
    c.fdt_fd = off("fdtable", "fd", fds);
    c.fdt_open_fds = off("fdtable", "open_fds", fds);
    c.file_inode = off("file", "f_inode", fds);
    c.inode_mode = off("inode", "i_mode", fds);
    c.inode_ino = off("inode", "i_ino", fds);
    c.inode_sb = off("inode", "i_sb", fds);
    c.sb_magic = off("super_block", "s_magic", fds);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn fixture(rel: &str) -> Option<TracepointFormat> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(rel);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Some(TracepointFormat::parse(&text).unwrap())
    }

    fn empty() -> Layout {
        Layout {
            config: Config::UNSET,
            missing: Vec::new(),
        }
    }

    #[test]
    fn formats_of_linux_6_18() {
        let mut l = empty();
        l.apply_formats(&Formats {
            mark_victim: fixture("6.18/oom/mark_victim/format"),
            sched_process_exit: fixture("6.18/sched/sched_process_exit/format"),
            sched_process_free: fixture("6.18/sched/sched_process_free/format"),
            signal_generate: fixture("6.18/signal/signal_generate/format"),
            wake_reaper: fixture("6.18/oom/wake_reaper/format"),
            cgroup_mkdir: fixture("6.18/cgroup/cgroup_mkdir/format"),
        });
        let c = l.config;
        assert_eq!(
            [
                c.tp_victim_pid,
                c.tp_victim_comm,
                c.tp_victim_total_vm,
                c.tp_victim_anon_rss
            ],
            [8, 12, 16, 24]
        );
        assert_eq!(
            [
                c.tp_victim_file_rss,
                c.tp_victim_shmem_rss,
                c.tp_victim_uid,
                c.tp_victim_pgtables
            ],
            [32, 40, 48, 56]
        );
        assert_eq!(c.tp_victim_oom_score_adj, 64);
        assert_eq!(c.tp_exit_group_dead, 32);
        assert_eq!(c.tp_free_pid, 12);
        assert_eq!(
            [
                c.tp_signal_sig,
                c.tp_signal_code,
                c.tp_signal_comm,
                c.tp_signal_pid
            ],
            [8, 16, 20, 36]
        );
        assert_eq!([c.tp_signal_group, c.tp_signal_result], [40, 44]);
        assert_eq!(c.tp_reaper_pid, 8);
        assert_eq!(
            [
                c.tp_cgroup_root,
                c.tp_cgroup_level,
                c.tp_cgroup_id,
                c.tp_cgroup_path
            ],
            [8, 12, 16, 24]
        );
    }

    /// Before 5.5 the record's `id` was an `int` (not the kernfs node id events carry): left
    /// out, so the classic program reports nothing rather than a wrong id.
    #[test]
    fn a_cgroup_mkdir_record_with_an_int_id_is_not_read() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/6.18/cgroup/cgroup_mkdir/format"),
        )
        .unwrap()
        .replace(
            "field:u64 id;\toffset:16;\tsize:8;",
            "field:int id;\toffset:16;\tsize:4;",
        );
        let mut l = empty();
        l.apply_formats(&Formats {
            cgroup_mkdir: Some(TracepointFormat::parse(&text).unwrap()),
            ..Formats::default()
        });
        assert_eq!(l.config.tp_cgroup_id, NO_OFFSET);
        assert_eq!(l.config.tp_cgroup_path, 24);
    }

    #[test]
    fn pre_6_8_mark_victim_has_only_a_pid_and_pre_6_16_exit_no_group_dead() {
        let mut l = empty();
        l.apply_formats(&Formats {
            mark_victim: fixture("pre-6.8/oom/mark_victim/format"),
            sched_process_exit: fixture("pre-6.16/sched/sched_process_exit/format"),
            ..Formats::default()
        });
        let c = l.config;
        assert_eq!(c.tp_victim_pid, 8);
        for off in [
            c.tp_victim_comm,
            c.tp_victim_total_vm,
            c.tp_victim_anon_rss,
            c.tp_victim_uid,
            c.tp_victim_oom_score_adj,
            c.tp_exit_group_dead,
            c.tp_free_pid,
        ] {
            assert_eq!(off, NO_OFFSET);
        }
    }

    /// The real kernel BTF of the machine running the tests, when it has one.
    #[test]
    fn btf_of_the_running_kernel() {
        let path = Path::new(Btf::VMLINUX);
        if !path.exists() {
            eprintln!("no {}: BTF layout test not applicable here", path.display());
            return;
        }
        let btf = Btf::from_file(path).unwrap();
        let l = Layout::discover(Some(&btf), None);
        let c = l.config;
        let btf_missing: Vec<_> = l
            .missing
            .iter()
            .filter(|m| !m.starts_with("tracefs"))
            .collect();
        assert!(btf_missing.is_empty(), "missing: {btf_missing:?}");
        assert_eq!(c.task_tgid, c.task_pid + 4);
        assert!(c.memory_cgrp_id < 16);
        assert!(
            c.mm_rss_stride == 8 || c.mm_rss_stride >= 24,
            "{}",
            c.mm_rss_stride
        );
        assert!(c.page_kb_shift >= 2);
        assert!(c.walks_fd_tables(), "{c:?}");
    }
}
