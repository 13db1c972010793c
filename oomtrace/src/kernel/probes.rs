//! Loading the embedded eBPF object and attaching it as the plan decides.
//!
//! The sequence: find tracefs (mounting it if needed), parse the kernel's BTF once, read the
//! offsets the programs need, gather [`Facts`], then let [`plan::resolve_all`] try the
//! candidates of every hook with [`attach_one`] as the attach function.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    thread::ScopedJoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, FExit, KProbe, Program, RawTracePoint, TracePoint},
};
use oomtrace_common::{Config, names};
use serde::Serialize;

use crate::kernel::{
    btf::{Blob, Btf, TypeDesc},
    cgroups::{self, MemoryController},
    offsets::{self, Layout},
    plan::{self, AttachType, Candidate, Facts, Hook, HookPlan, Target},
    tracefs::{Tracefs, TracefsError},
};

/// The eBPF object, embedded at build time: the binary is the only file a host needs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/oomtrace"));

/// The kernel side's socket records of killed processes, by tgid.
pub(crate) type KillSocketsMap = aya::maps::HashMap<MapData, u32, oomtrace_common::KillSockets>;

/// What the user asked for when loading.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Attach types not to use (tests of the fallback chain, or to avoid a buggy kernel path).
    pub forbid: BTreeSet<AttachType>,
    /// Report every exit on the host, not only victims' (benchmarks, debugging).
    pub trace_all_exits: bool,
    /// The ring buffer's size in bytes instead of `RING_BYTES` (tests that overflow it).
    pub ring_bytes: Option<u32>,
}

/// The environment the tool runs in, as `check` and the plan header show it.
#[derive(Clone, Debug)]
pub struct Environment {
    pub kernel: String,
    pub(crate) root: bool,
    pub btf: Result<(), String>,
    /// Where tracefs is, and whether oomtrace mounted it.
    pub tracefs: Result<String, String>,
    pub tracefs_mounted_by_us: bool,
    pub kprobes: Result<(), String>,
    pub memory_controller: Option<MemoryController>,
    /// Offsets not found on this kernel, with what that costs.
    pub missing_offsets: Vec<String>,
}

/// JSON schema 3: each fact is a plain value and, when it failed, the reason beside it
/// (`btf: false, btf_error: "…"`), not serde's `{"Ok": …}` / `{"Err": …}` of schema 2.
impl Serialize for Environment {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            kernel: &'a str,
            root: bool,
            btf: bool,
            btf_error: Option<&'a str>,
            tracefs: Option<&'a str>,
            tracefs_error: Option<&'a str>,
            tracefs_mounted_by_us: bool,
            kprobes: bool,
            kprobes_error: Option<&'a str>,
            memory_controller: &'a Option<MemoryController>,
            missing_offsets: &'a [String],
        }
        Wire {
            kernel: &self.kernel,
            root: self.root,
            btf: self.btf.is_ok(),
            btf_error: self.btf.as_ref().err().map(String::as_str),
            tracefs: self.tracefs.as_ref().ok().map(String::as_str),
            tracefs_error: self.tracefs.as_ref().err().map(String::as_str),
            tracefs_mounted_by_us: self.tracefs_mounted_by_us,
            kprobes: self.kprobes.is_ok(),
            kprobes_error: self.kprobes.as_ref().err().map(String::as_str),
            memory_controller: &self.memory_controller,
            missing_offsets: &self.missing_offsets,
        }
        .serialize(s)
    }
}

/// Loaded and attached programs, and the maps userspace reads.
pub struct Probes {
    pub env: Environment,
    pub plan: Vec<HookPlan>,
    pub(crate) layout: Layout,
    /// Launch-to-attached time of this load (parse, load, attach).
    pub attach_time: Duration,
    /// The kernel's gfp flag names, from tracefs (none, and why, without it).
    pub(crate) gfp_names: crate::kernel::gfp::GfpNames,
    ebpf: Ebpf,
}

impl Probes {
    /// Loads and attaches everything that can attach here. Fails only when nothing useful can
    /// run (not root, no BPF at all); individual hooks that cannot attach are in `plan`.
    pub fn load(opts: &LoadOptions) -> anyhow::Result<Probes> {
        let started = Instant::now();
        let root = require_root()?;
        raise_memlock_limit();
        keep_large_blocks_mapped();
        let loader = loader_without_btf();
        let btf = read_vmlinux_btf().and_then(|b| parse_vmlinux_btf(b).map_err(|e| e.to_string()));
        let tracefs = Tracefs::locate(true);
        let layout = Layout::discover(btf.as_ref().ok(), tracefs.as_ref().ok());
        let mut facts = kernel_facts(btf.as_ref(), tracefs.as_ref(), &opts.forbid);
        facts.fd_walk = fd_walk_fact(&layout, &kernel_release());
        facts.refused = refused_tracing(btf.as_ref().ok(), &opts.forbid);
        let functions = [AttachType::Fentry, AttachType::Fexit]
            .iter()
            .any(|a| !facts.refused.contains_key(a) && !opts.forbid.contains(a));
        let skeletons = attach_skeletons(btf, functions);
        let config = program_config(&layout, opts);
        let (plan, ebpf) = attach_plan(loader, &config, opts.ring_bytes, skeletons, &facts)?;
        let env = environment(root, &facts, tracefs.as_ref(), &layout);
        let gfp_names = match &tracefs {
            Ok(t) => crate::kernel::gfp::GfpNames::of_tracefs(&t.root),
            Err(e) => crate::kernel::gfp::GfpNames::none(&e.to_string()),
        };
        // The parsed BTFs are gone: give their memory back (glibc keeps freed heap otherwise).
        trim_heap();
        Ok(Probes {
            env,
            plan,
            layout,
            attach_time: started.elapsed(),
            gfp_names,
            ebpf,
        })
    }

    /// Takes the event ring buffer (once), with its size in bytes (when the kernel says).
    pub(crate) fn take_ring(&mut self) -> anyhow::Result<(RingBuf<MapData>, Option<u32>)> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .context("the eBPF object has no EVENTS map")?;
        let size = match &map {
            aya::maps::Map::RingBuf(m) => m.info().ok().map(|i| i.max_entries()),
            _ => None,
        };
        Ok((
            RingBuf::try_from(map).context("EVENTS is not a ring buffer")?,
            size,
        ))
    }

    /// The sockets the kernel side reads from a process's fd table when a SIGKILL is generated
    /// for it (`KILL_SOCKETS`), taken once; `None` when it does not read them here (the
    /// classic `signal_generate` record names no task, or an offset of the walk is unknown):
    /// oomtrace then reads the victim's fd table through /proc at its kill.
    pub(crate) fn take_kill_sockets(&mut self) -> Option<KillSocketsMap> {
        let walks = self
            .plan
            .iter()
            .any(|p| p.program == Some("signal_generate_btf_fds"));
        if !walks {
            return None;
        }
        let map = self.ebpf.take_map(names::KILL_SOCKETS)?;
        aya::maps::HashMap::try_from(map).ok()
    }

    /// Events the kernel side could not write because the ring buffer was full, since load.
    pub(crate) fn lost_events(&self) -> anyhow::Result<u64> {
        let map = self
            .ebpf
            .map(names::LOST)
            .context("the eBPF object has no LOST map")?;
        let lost: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        Ok(lost.get(&0, 0)?.iter().sum())
    }

    /// How many processes the in-kernel filter tracks now (`TRACKED_COUNT`).
    pub(crate) fn tracked_count(&self) -> anyhow::Result<u64> {
        let read = |name: &str| -> anyhow::Result<u64> {
            let map = self
                .ebpf
                .map(name)
                .with_context(|| format!("the eBPF object has no {name} map"))?;
            let a: aya::maps::Array<_, u64> = aya::maps::Array::try_from(map)?;
            Ok(a.get(&0, 0)?)
        };
        Ok(read(names::TRACKED_COUNT)?.saturating_sub(read(names::USER_UNTRACKED)?))
    }

    /// Removes from the in-kernel filter the processes `gone` says no longer exist: their
    /// release was seen by the kernel but its delete refused (a bucket lock held by the context
    /// the release's softirq interrupted) or its program skipped. Returns the ids removed.
    pub(crate) fn sweep_tracked(
        &mut self,
        mut gone: impl FnMut(u32) -> bool,
    ) -> anyhow::Result<Vec<u32>> {
        let stale: Vec<u32> = {
            let map = self
                .ebpf
                .map(names::TRACKED)
                .context("the eBPF object has no TRACKED map")?;
            let tracked: aya::maps::HashMap<_, u32, u32> = aya::maps::HashMap::try_from(map)?;
            tracked.keys().flatten().filter(|&k| gone(k)).collect()
        };
        if stale.is_empty() {
            return Ok(stale);
        }
        let mut removed = Vec::new();
        {
            let map = self
                .ebpf
                .map_mut(names::TRACKED)
                .context("the eBPF object has no TRACKED map")?;
            let mut tracked: aya::maps::HashMap<_, u32, u32> = aya::maps::HashMap::try_from(map)?;
            for k in stale {
                if tracked.remove(&k).is_ok() {
                    removed.push(k);
                }
            }
        }
        // Counted only after the deletes: in between, the programs see one more tracked
        // process than there is (a hash lookup more), never one fewer.
        let map = self
            .ebpf
            .map_mut(names::USER_UNTRACKED)
            .context("the eBPF object has no USER_UNTRACKED map")?;
        let mut count: aya::maps::Array<_, u64> = aya::maps::Array::try_from(map)?;
        let n = count.get(&0, 0)?;
        count.set(0, n + removed.len() as u64, 0)?;
        Ok(removed)
    }

    /// Per-program run counts and run time from the kernel's own accounting (only counted while
    /// `aya::sys::enable_stats(Stats::RunTime)` is held): (program, attach, count, total ns).
    pub(crate) fn program_stats(&self) -> Vec<(String, String, u64, u64)> {
        self.plan
            .iter()
            .filter_map(|p| {
                let name = p.program?;
                let info = self.ebpf.program(name)?.info().ok()?;
                Some((
                    name.to_string(),
                    p.attach.map_or("none", AttachType::name).to_string(),
                    info.run_count(),
                    u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                ))
            })
            .collect()
    }
}

/// `true`, the process being root; otherwise an error saying to run oomtrace with sudo.
fn require_root() -> anyhow::Result<bool> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        anyhow::bail!(
            "oomtrace needs root to load eBPF programs (CAP_BPF and CAP_PERFMON at least): \
             run it with sudo"
        );
    }
    Ok(root)
}

/// Nothing: fixes glibc's mmap threshold (called before [`Probes::load`]'s BTF work).
fn keep_large_blocks_mapped() {
    // The BTF work after this allocates ~15 MB in large blocks and frees it. glibc's dynamic
    // threshold would start serving such blocks from the heap after the first is freed,
    // where they stay resident (malloc_trim does not shrink a thread's arena); a fixed
    // threshold keeps them in their own mappings, unmapped when freed.
    // SAFETY: mallopt has no preconditions.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10)
    };
}

/// The facts the plan decides by: what the kernel's BTF and tracefs offer, and `--forbid`.
fn kernel_facts(
    btf: Result<&Btf, &String>,
    tracefs: Result<&Tracefs, &TracefsError>,
    forbid: &BTreeSet<AttachType>,
) -> Facts {
    let has_function = |f: &&str| btf.is_ok_and(|b| b.has_function(f));
    Facts {
        btf: btf
            .map(|_| ())
            .map_err(|e| format!("kernel BTF unusable: {e}")),
        btf_functions: btf_attach_targets()
            .0
            .into_iter()
            .filter(has_function)
            .collect(),
        kprobes: kprobes_available(tracefs.ok()),
        tracepoints: tracepoints_present(tracefs.ok()),
        tracefs: tracefs.map(|_| ()).map_err(|e| e.to_string()),
        mark_victim_btf_has_task: btf.is_ok_and(mark_victim_passes_task),
        exit_btf_has_group_dead: btf.is_ok_and(exit_passes_group_dead),
        fd_walk: Err("not decided".into()),
        forbidden: forbid.clone(),
        refused: BTreeMap::new(),
    }
}

/// fentry and fexit, if this kernel refuses to load them at all, each with what said so: a
/// minimal program ([`load_minimal_tracing`]) loaded against a function the plan may hook.
/// Refused means EPERM (lockdown or a BPF LSM policy: the load is refused by attach type,
/// before the verifier, as this project's host does); any other outcome leaves the type to
/// the plan's own loads, which report their own errors. Where both are refused, no function
/// skeleton is made or parsed (aya's parse of it is start-up's largest allocation, ~9.4 MB).
fn refused_tracing(
    btf: Option<&Btf>,
    forbid: &BTreeSet<AttachType>,
) -> BTreeMap<AttachType, String> {
    let mut refused = BTreeMap::new();
    let Some(btf) = btf else {
        return refused;
    };
    for (attach, expected) in [
        (AttachType::Fentry, BPF_TRACE_FENTRY),
        (AttachType::Fexit, BPF_TRACE_FEXIT),
    ] {
        if forbid.contains(&attach) {
            continue;
        }
        let target = Hook::ALL
            .iter()
            .flat_map(|h| plan::all_candidates(*h))
            .find_map(|c| match c.target {
                Target::Function(f) if c.attach == attach => btf.function_id(f).map(|id| (f, id)),
                _ => None,
            });
        let Some((function, id)) = target else {
            continue;
        };
        if let Err(e) = load_minimal_tracing(expected, id)
            && e.raw_os_error() == Some(libc::EPERM)
        {
            refused.insert(
                attach,
                format!(
                    "load: the BPF_PROG_LOAD syscall of a minimal {attach} program on \
                     {function} returned {e}; this kernel refuses {attach} programs (lockdown \
                     or a BPF LSM policy)"
                ),
            );
        }
    }
    refused
}

/// `BPF_TRACE_FENTRY` and `BPF_TRACE_FEXIT` (enum bpf_attach_type, include/uapi/linux/bpf.h).
const BPF_TRACE_FENTRY: u32 = 24;
const BPF_TRACE_FEXIT: u32 = 25;

/// Loads `r0 = 0; exit` as a tracing program of `expected_attach_type` on the kernel function
/// of BTF id `attach_btf_id`, and closes it: whether this kernel loads that attach type at all.
fn load_minimal_tracing(expected_attach_type: u32, attach_btf_id: u32) -> std::io::Result<()> {
    /// The head of `union bpf_attr` for `BPF_PROG_LOAD`, up to `attach_btf_id` (the kernel
    /// zeroes what a caller does not pass).
    #[repr(C)]
    #[derive(Default)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
        prog_btf_fd: u32,
        func_info_rec_size: u32,
        func_info: u64,
        func_info_cnt: u32,
        line_info_rec_size: u32,
        line_info: u64,
        line_info_cnt: u32,
        attach_btf_id: u32,
    }
    const _: () = assert!(std::mem::size_of::<ProgLoad>() == 112);
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    // struct bpf_insn, little-endian (code, regs, off, imm): `r0 = 0` (BPF_ALU64 | BPF_MOV |
    // BPF_K), then `exit` (BPF_JMP | BPF_EXIT).
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = c"GPL";
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_TRACING,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type,
        attach_btf_id,
        ..ProgLoad::default()
    };
    // SAFETY: a valid attr of the size passed; the pointers in it outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &raw const attr,
            std::mem::size_of::<ProgLoad>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the program's fd, ours alone.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// The kernel release from which the fd-table walk is loaded: 6.18 is where it was measured
/// to pass the verifier cheaply. 5.10's verifier gave up on it (a million instructions, after
/// minutes under emulation); 6.1 and 6.12 were not measured.
const FD_WALK_FROM: (u32, u32) = (6, 18);

/// Whether the `signal_generate` variant that reads the target's fd table is worth loading
/// here (see [`plan::Facts::fd_walk`]).
fn fd_walk_fact(layout: &Layout, release: &str) -> Result<(), String> {
    if !layout.config.walks_fd_tables() {
        return Err("an offset of the fd-table walk is missing (see missing offsets)".into());
    }
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let mut num = || parts.next().and_then(|p| p.parse::<u32>().ok());
    match (num(), num()) {
        (Some(major), Some(minor)) if (major, minor) >= FD_WALK_FROM => Ok(()),
        _ => Err(format!(
            "the fd-table walk is loaded from Linux {}.{} on, where its verification was \
             measured (5.10's verifier gives up on it); the sockets of a killed process are \
             read through /proc at its kill",
            FD_WALK_FROM.0, FD_WALK_FROM.1
        )),
    }
}

/// Whether tp_btf `mark_victim` passes a `task_struct *` first (Linux ≥ 6.8).
fn mark_victim_passes_task(btf: &Btf) -> bool {
    btf.tracepoint_args("mark_victim").is_ok_and(|args| {
        matches!(args.first(), Some(TypeDesc::Ptr { to })
            if matches!(&**to, TypeDesc::Struct { name, .. } if name == "task_struct"))
    })
}

/// Whether tp_btf `sched_process_exit` passes `group_dead` after the task (Linux ≥ 6.16).
fn exit_passes_group_dead(btf: &Btf) -> bool {
    btf.tracepoint_args("sched_process_exit")
        .is_ok_and(|args| args.len() >= 2)
}

/// The (tracepoints, functions) BTF skeletons the BTF-attached loads use, or why there are none;
/// the functions' is empty unless fentry or fexit may load (`functions`).
fn attach_skeletons(
    btf: Result<Btf, String>,
    functions: bool,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    // What aya's tp_btf and fentry/fexit loaders look names up in: skeletons with the
    // kernel's ids of those names and nothing else. Functions come late in the kernel's
    // BTF (ids ~95k of 126k, against ~15k for tracepoints), so their skeleton is parsed on
    // the other core while the maps are created and the tracepoints attach; the plan tries
    // function hooks last. The index and its 5.5 MB blob are freed before.
    btf.map(|b| {
        let (mut names, tracepoints) = btf_attach_targets();
        if !functions {
            names.clear();
        }
        (
            b.attach_skeleton(&[], &tracepoints),
            b.attach_skeleton(&names, &[]),
        )
    })
}

/// The CONFIG global the programs read: the layout's offsets and the user's options.
fn program_config(layout: &Layout, opts: &LoadOptions) -> Config {
    let mut config = layout.config;
    config.trace_all_exits = u32::from(opts.trace_all_exits);
    config
}

/// The plan as resolved and the object it attached; the function skeleton is parsed on
/// another thread meanwhile (see [`attach_skeletons`]).
fn attach_plan<'a>(
    loader: EbpfLoader<'a>,
    config: &'a Config,
    ring_bytes: Option<u32>,
    skeletons: Result<(Vec<u8>, Vec<u8>), String>,
    facts: &Facts,
) -> anyhow::Result<(Vec<HookPlan>, Ebpf)> {
    std::thread::scope(|s| {
        let (tracepoints, functions) = match skeletons {
            Ok((t, f)) => (Ok(t), Ok(f)),
            Err(e) => (Err(e.clone()), Err(e)),
        };
        let functions = s.spawn(move || functions.and_then(|f| parse_btf(&f)));
        let tracepoints = tracepoints.and_then(|t| parse_btf(&t));
        let mut ebpf = create_maps(loader, config, ring_bytes)?;
        let tracepoints = tracepoints.as_ref().map_err(String::as_str);
        let plan = resolve_plan(&mut ebpf, facts, tracepoints, functions);
        anyhow::Ok((plan, ebpf))
    })
}

/// The eBPF object loaded with its maps created and `config` in its CONFIG global.
fn create_maps<'a>(
    mut loader: EbpfLoader<'a>,
    config: &'a Config,
    ring_bytes: Option<u32>,
) -> anyhow::Result<Ebpf> {
    if let Some(bytes) = ring_bytes {
        loader.map_max_entries(names::EVENTS, bytes);
    }
    loader
        .override_global(names::CONFIG, config, true)
        .load(OBJECT)
        .context("creating the eBPF maps failed (is BPF enabled in this kernel?)")
}

/// Every hook's plan, its candidates tried with [`attach_one`]; the first fentry/fexit one
/// joins the thread parsing the function skeleton.
fn resolve_plan(
    ebpf: &mut Ebpf,
    facts: &Facts,
    tracepoints: Result<&aya::Btf, &str>,
    functions: ScopedJoinHandle<'_, Result<aya::Btf, String>>,
) -> Vec<HookPlan> {
    let (mut functions, mut parsed) = (Some(functions), None);
    plan::resolve_all(facts, |c| {
        let btf = match c.attach {
            AttachType::TpBtf => tracepoints,
            AttachType::Fentry | AttachType::Fexit => parsed
                .get_or_insert_with(|| match functions.take().map(|f| f.join()) {
                    Some(Ok(parsed)) => parsed,
                    _ => Err("aya panicked parsing the function BTF".into()),
                })
                .as_ref()
                .map_err(String::as_str),
            _ => Err("not used by this attach type"),
        };
        attach_one(ebpf, btf, c)
    })
}

/// The environment as `check` shows it, from the facts found and what else load looked at.
fn environment(
    root: bool,
    facts: &Facts,
    tracefs: Result<&Tracefs, &TracefsError>,
    layout: &Layout,
) -> Environment {
    Environment {
        kernel: kernel_release(),
        root,
        btf: facts.btf.clone(),
        tracefs_mounted_by_us: tracefs.is_ok_and(|t| t.mounted_by_us),
        tracefs: tracefs
            .map(|t| t.root.display().to_string())
            .map_err(|e| e.to_string()),
        kprobes: facts.kprobes.clone(),
        memory_controller: cgroups::memory_controller(),
        missing_offsets: layout.missing.clone(),
    }
}

/// Nothing: hands the heap's free memory back to the kernel.
fn trim_heap() {
    // SAFETY: no preconditions.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0)
    };
}

/// Loads and attaches one candidate; on failure unloads it and says why, in one line. `btf` is
/// what fentry/fexit/tp_btf loads look names up in, or why there is none.
fn attach_one(ebpf: &mut Ebpf, btf: Result<&aya::Btf, &str>, c: &Candidate) -> Result<(), String> {
    let prog = ebpf
        .program_mut(c.program)
        .ok_or_else(|| format!("program {} missing from the eBPF object", c.program))?;
    let result = load_and_attach(prog, btf, c);
    if result.is_err() {
        let _ = unload(prog);
    }
    result.map_err(|e| {
        let line = error_line(&e);
        let refused = matches!(c.attach, AttachType::Fentry | AttachType::Fexit)
            && line.contains("Operation not permitted");
        if refused {
            // Seen on hardened hosts: the load is refused by attach type, before the verifier.
            format!(
                "{line}; this kernel refuses {} programs (lockdown or a BPF LSM policy)",
                c.attach
            )
        } else {
            line
        }
    })
}

fn load_and_attach(
    prog: &mut Program,
    btf: Result<&aya::Btf, &str>,
    c: &Candidate,
) -> anyhow::Result<()> {
    let need_btf = || btf.map_err(|e| anyhow::anyhow!("kernel BTF unusable: {e}"));
    match (c.attach, c.target) {
        (AttachType::Fentry, Target::Function(f)) => {
            let p: &mut FEntry = prog.try_into()?;
            p.load(f, need_btf()?).context("load")?;
            p.attach().context("attach")?;
        }
        (AttachType::Fexit, Target::Function(f)) => {
            let p: &mut FExit = prog.try_into()?;
            p.load(f, need_btf()?).context("load")?;
            p.attach().context("attach")?;
        }
        (AttachType::Kprobe | AttachType::Kretprobe, Target::Function(f)) => {
            let p: &mut KProbe = prog.try_into()?;
            p.load().context("load")?;
            p.attach(f, 0).context("attach")?;
        }
        (AttachType::TpBtf, Target::Tracepoint(_, name)) => {
            let p: &mut BtfTracePoint = prog.try_into()?;
            p.load(name, need_btf()?).context("load")?;
            p.attach().context("attach")?;
        }
        (AttachType::RawTp, Target::Tracepoint(_, name)) => {
            let p: &mut RawTracePoint = prog.try_into()?;
            p.load().context("load")?;
            p.attach(name).context("attach")?;
        }
        (AttachType::Tracepoint, Target::Tracepoint(cat, name)) => {
            let p: &mut TracePoint = prog.try_into()?;
            p.load().context("load")?;
            p.attach(cat, name).context("attach")?;
        }
        (a, t) => anyhow::bail!("internal: {a} cannot attach to {t:?}"),
    }
    Ok(())
}

fn unload(prog: &mut Program) -> Result<(), aya::programs::ProgramError> {
    match prog {
        Program::FEntry(p) => p.unload(),
        Program::FExit(p) => p.unload(),
        Program::KProbe(p) => p.unload(),
        Program::BtfTracePoint(p) => p.unload(),
        Program::RawTracePoint(p) => p.unload(),
        Program::TracePoint(p) => p.unload(),
        _ => Ok(()),
    }
}

/// An error chain in one line: "load: the BPF_PROG_LOAD syscall returned Operation not
/// permitted (os error 1). Verifier output: (empty)".
fn error_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.trim_end_matches(". Verifier output: ").trim_end();
        let text = if text.ends_with("Verifier output:") {
            format!("{text} (empty)")
        } else {
            // Keep verifier logs to their last line: the verdict.
            match text.split_once("Verifier output:") {
                Some((head, log)) => format!(
                    "{head}Verifier output: …{}",
                    log.trim().lines().last().unwrap_or("")
                ),
                None => text.to_string(),
            }
        };
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// An `EbpfLoader` that holds no kernel BTF, made without reading it.
///
/// aya 0.14's `EbpfLoader::new()` reads and parses `/sys/kernel/btf/vmlinux` whatever the
/// caller wants (aya-rs/aya#1172; made lazy upstream in aya-rs/aya#1639, in releases that need
/// a newer Rust than this project's). That is ~20 ms of CPU and ~20 MB at start-up, the largest
/// part of both, for nothing: oomtrace's object has no CO-RE relocations (offsets come in
/// CONFIG), and program loads get skeletons ([`Btf::attach_skeleton`]). So while this process has a single
/// thread, the loader is created with RLIMIT_NOFILE at 0: aya's open fails at once, nothing
/// else can be affected, and the limit is restored before anything else runs. With other
/// threads alive it is created as usual and its BTF dropped.
fn loader_without_btf() -> EbpfLoader<'static> {
    let single_threaded = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.split_whitespace().eq(["Threads:", "1"]))
    });
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to write into.
    let saved = single_threaded && unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) } == 0;
    let closed = libc::rlimit {
        rlim_cur: 0,
        rlim_max: old.rlim_max,
    };
    // SAFETY: valid rlimit structs; lowering the soft limit needs no privilege, and the old one
    // (at most the hard limit, which is unchanged) is put back right after.
    let lowered = saved && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &closed) } == 0;
    let mut loader = EbpfLoader::new();
    if lowered {
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
    }
    loader.btf(None);
    loader
}

/// The functions (fentry/fexit) and tracepoints (tp_btf) the plan's BTF-attached candidates
/// may load against.
fn btf_attach_targets() -> (Vec<&'static str>, Vec<&'static str>) {
    let (mut functions, mut tracepoints) = (Vec::new(), Vec::new());
    for c in Hook::ALL.iter().flat_map(|h| plan::all_candidates(*h)) {
        match (c.attach, c.target) {
            (AttachType::Fentry | AttachType::Fexit, Target::Function(f)) => functions.push(f),
            (AttachType::TpBtf, Target::Tracepoint(_, tp)) => tracepoints.push(tp),
            _ => {}
        }
    }
    (functions, tracepoints)
}

/// The kernel's BTF with the names start-up looks up indexed: the layout's structs and enums
/// ([`offsets::BTF_NAMES`]), the plan's functions and tracepoints.
fn parse_vmlinux_btf(blob: Blob) -> Result<Btf, crate::kernel::btf::BtfError> {
    let (functions, tracepoints) = btf_attach_targets();
    let names: Vec<&str> = offsets::BTF_NAMES
        .iter()
        .copied()
        .chain(functions)
        .collect();
    Btf::from_blob_for(blob, &names, &tracepoints)
}

/// aya's parse of a BTF skeleton (its error is what the BTF-attached loads then report).
fn parse_btf(bytes: &[u8]) -> Result<aya::Btf, String> {
    aya::Btf::parse(bytes, aya::Endianness::default())
        .map_err(|e| format!("aya cannot parse the BTF skeleton: {e}"))
}

/// `/sys/kernel/btf/vmlinux`, mapped (Linux >= 6.16: the kernel's own pages, no copy in
/// oomtrace's memory) or read into a buffer sized once (sysfs hands it out 4 KiB per read).
fn read_vmlinux_btf() -> Result<Blob, String> {
    let path = Path::new(Btf::VMLINUX);
    Blob::map_or_read(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (kernel built without CONFIG_DEBUG_INFO_BTF?)"
        } else {
            ""
        };
        format!("reading {}: {e}{hint}", path.display())
    })
}

fn kprobes_available(tracefs: Option<&Tracefs>) -> Result<(), String> {
    const PMU: &str = "/sys/bus/event_source/devices/kprobe/type";
    if Path::new(PMU).exists() {
        return Ok(());
    }
    if let Some(t) = tracefs
        && t.root.join("kprobe_events").exists()
    {
        return Ok(());
    }
    Err(format!(
        "kprobes unavailable: no {PMU} and no kprobe_events in tracefs (kernel built without \
         CONFIG_KPROBES)"
    ))
}

fn tracepoints_present(tracefs: Option<&Tracefs>) -> BTreeSet<(&'static str, &'static str)> {
    let Some(t) = tracefs else {
        return BTreeSet::new();
    };
    Hook::ALL
        .iter()
        .flat_map(|h| plan::all_candidates(*h))
        .filter_map(|c| match c.target {
            Target::Tracepoint(cat, name) if t.event_exists(cat, name) => Some((cat, name)),
            _ => None,
        })
        .collect()
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK. Raising it needs CAP_SYS_RESOURCE,
/// which some hosts withhold; newer kernels do not need it, so failure is not fatal.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fd-table walk is loaded only with every offset of it and from the release where it
    /// was measured; anything else says why (the plan shows it as the rejected candidate).
    #[test]
    fn the_fd_walk_is_loaded_only_where_it_was_measured() {
        let mut layout = Layout {
            config: Config::UNSET,
            missing: Vec::new(),
        };
        let c = &mut layout.config;
        for (i, off) in [
            &mut c.task_files,
            &mut c.files_fdt,
            &mut c.fdt_max_fds,
            &mut c.fdt_fd,
            &mut c.fdt_open_fds,
            &mut c.file_inode,
            &mut c.inode_mode,
            &mut c.inode_ino,
            &mut c.inode_sb,
            &mut c.sb_magic,
        ]
        .into_iter()
        .enumerate()
        {
            *off = 8 * i as u32;
        }
        for ok in ["6.18.44-fc-v1272", "6.19.0", "7.0.1-amd64"] {
            assert_eq!(fd_walk_fact(&layout, ok), Ok(()), "{ok}");
        }
        for old in [
            "5.10.0-32-amd64",
            "6.1.0-40-amd64",
            "6.12.57+deb13-amd64",
            "",
            "x",
        ] {
            let why = fd_walk_fact(&layout, old).unwrap_err();
            assert!(why.contains("6.18"), "{old}: {why}");
        }
        layout.config.sb_magic = oomtrace_common::NO_OFFSET;
        let why = fd_walk_fact(&layout, "6.18.0").unwrap_err();
        assert!(why.contains("offset"), "{why}");
    }

    /// The names start-up indexes ([`parse_vmlinux_btf`]) cover every BTF lookup it makes on
    /// the running kernel (the layout, the facts, the refused-type probes' targets, the
    /// skeletons), with the answers of the index of every name.
    #[test]
    fn btf_names_cover_every_lookup() {
        let path = Path::new(Btf::VMLINUX);
        let blob = || {
            Blob::map_or_read(path).expect("the kernel's BTF (every kernel of the matrix has it)")
        };
        let listed = parse_vmlinux_btf(blob()).unwrap();
        let all = Btf::from_blob(blob()).unwrap();
        let lookups = |btf: &Btf| {
            let (functions, tracepoints) = btf_attach_targets();
            let ids: Vec<_> = functions.iter().map(|f| btf.function_id(f)).collect();
            let layout = Layout::discover(Some(btf), None);
            (
                layout.config,
                layout.missing,
                ids,
                mark_victim_passes_task(btf),
                exit_passes_group_dead(btf),
                btf.attach_skeleton(&functions, &tracepoints),
            )
        };
        let (a, b) = (lookups(&listed), lookups(&all));
        assert_eq!(
            listed.unlisted_lookups(),
            0,
            "a name start-up looks up is not listed"
        );
        assert_eq!(a.0, b.0);
        assert_eq!((&a.1, &a.2, a.3, a.4), (&b.1, &b.2, b.3, b.4));
        assert!(
            a.2.iter().any(Option::is_some),
            "no function of the plan in BTF: {:?}",
            a.2
        );
        assert_eq!(a.5, b.5, "the skeletons differ");
        // A name not listed is still found, through the index of every name.
        assert_eq!(
            listed.struct_size("sk_buff").unwrap(),
            all.struct_size("sk_buff").unwrap()
        );
        assert_eq!(listed.unlisted_lookups(), 1);
    }

    /// Schema 3: facts are plain values with their reason beside them, never serde's
    /// `{"Ok": …}` / `{"Err": …}`.
    #[test]
    fn the_environment_has_plain_fields_and_reasons() {
        let env = Environment {
            kernel: "6.18".into(),
            root: true,
            btf: Ok(()),
            tracefs: Ok("/sys/kernel/tracing".into()),
            tracefs_mounted_by_us: true,
            kprobes: Err("no kprobe PMU".into()),
            memory_controller: None,
            missing_offsets: vec![],
        };
        let j = serde_json::to_value(&env).unwrap();
        assert_eq!(j["btf"], true);
        assert!(j["btf_error"].is_null());
        assert_eq!(j["tracefs"], "/sys/kernel/tracing");
        assert!(j["tracefs_error"].is_null());
        assert_eq!(j["kprobes"], false);
        assert_eq!(j["kprobes_error"], "no kprobe PMU");
        let text = j.to_string();
        assert!(
            !text.contains("\"Ok\"") && !text.contains("\"Err\""),
            "{text}"
        );
    }
}
