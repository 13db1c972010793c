//! Loading the embedded eBPF object and attaching it as the plan decides.
//!
//! The sequence: find tracefs (mounting it if needed), parse the kernel's BTF once, read the
//! offsets the programs need, gather [`Facts`], then let [`plan::resolve_all`] try the
//! candidates of every hook with [`attach_one`] as the attach function.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, FExit, KProbe, Program, RawTracePoint, TracePoint},
};
use oomtrace_common::names;
use serde::Serialize;

use crate::{
    btf::{Btf, TypeDesc},
    cgroups::{self, MemoryController},
    layout::Layout,
    plan::{self, AttachType, Candidate, Facts, Hook, HookPlan, Target},
    tracefs::Tracefs,
};

/// The eBPF object, embedded at build time: the binary is the only file a host needs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/oomtrace"));

/// What the user asked for when loading.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Attach types not to use (tests of the fallback chain, or to avoid a buggy kernel path).
    pub forbid: BTreeSet<AttachType>,
    /// Report every exit on the host, not only victims' (benchmarks, debugging).
    pub trace_all_exits: bool,
}

/// The environment the tool runs in, as `check` and the plan header show it.
#[derive(Clone, Debug, Serialize)]
pub struct Environment {
    pub kernel: String,
    pub root: bool,
    pub btf: Result<(), String>,
    /// Where tracefs is, and whether oomtrace mounted it.
    pub tracefs: Result<String, String>,
    pub tracefs_mounted_by_us: bool,
    pub kprobes: Result<(), String>,
    pub memory_controller: Option<MemoryController>,
    /// Offsets not found on this kernel, with what that costs.
    pub missing_offsets: Vec<String>,
}

/// Loaded and attached programs, and the maps userspace reads.
pub struct Probes {
    pub env: Environment,
    pub plan: Vec<HookPlan>,
    pub layout: Layout,
    /// Launch-to-attached time of this load (parse, load, attach).
    pub attach_time: Duration,
    ebpf: Ebpf,
}

impl Probes {
    /// Loads and attaches everything that can attach here. Fails only when nothing useful can
    /// run (not root, no BPF at all); individual hooks that cannot attach are in `plan`.
    pub fn load(opts: &LoadOptions) -> anyhow::Result<Probes> {
        let started = Instant::now();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            anyhow::bail!(
                "oomtrace needs root to load eBPF programs (CAP_BPF and CAP_PERFMON at least): \
                 run it with sudo"
            );
        }
        raise_memlock_limit();
        // aya's EbpfLoader::new() parses the kernel BTF itself (and aya 0.14 has no way to hand
        // it one instead): let it do so on the other core while we read and index the BTF for
        // offsets. Its copy is then replaced by the one program loads use, so that at most one
        // of aya's parsed BTFs is alive at a time (they are the peak of our RSS).
        let loader = std::thread::spawn(EbpfLoader::new);
        let bytes = read_vmlinux_btf();
        // Ours takes the blob without copying and gives it back for aya's parse below.
        let (our_btf, bytes) = match bytes {
            Ok(b) => match Btf::from_vec(b) {
                Ok(btf) => (Ok(btf), Ok(None)),
                Err(e) => (Err(e.to_string()), read_vmlinux_btf().map(Some)),
            },
            Err(e) => (Err(e.clone()), Err(e)),
        };
        let tracefs = Tracefs::locate(true);
        // Everything our index answers, taken now so it can go before aya's copy is parsed.
        let layout = Layout::discover(our_btf.as_ref().ok(), tracefs.as_ref().ok());
        let has_function = |f: &&str| our_btf.as_ref().is_ok_and(|b| b.has_function(f));
        let btf_functions = ["mem_cgroup_out_of_memory", "oom_kill_process"]
            .into_iter()
            .filter(has_function)
            .collect();
        let mark_victim_btf_has_task = our_btf.as_ref().is_ok_and(|b| {
            b.tracepoint_args("mark_victim").is_ok_and(|args| {
                matches!(args.first(), Some(TypeDesc::Ptr { to })
                    if matches!(&**to, TypeDesc::Struct { name, .. } if name == "task_struct"))
            })
        });
        let exit_btf_has_group_dead = our_btf.as_ref().is_ok_and(|b| {
            b.tracepoint_args("sched_process_exit")
                .is_ok_and(|args| args.len() >= 2)
        });
        let (our_btf, bytes) = match (our_btf, bytes) {
            (Ok(btf), _) => (Ok(()), Ok(btf.into_bytes())),
            (Err(e), Ok(Some(b))) => (Err(e), Ok(b)),
            (Err(e), Ok(None)) => (Err(e.clone()), Err(e)),
            (Err(e), Err(r)) => (Err(e), Err(r)),
        };
        let mut loader = loader
            .join()
            .map_err(|_| anyhow::anyhow!("aya's loader panicked while reading the kernel BTF"))?;
        loader.btf(None);
        let aya_btf = bytes.and_then(|b| {
            aya::Btf::parse(&b, aya::Endianness::default()).map_err(|e| e.to_string())
        });
        let btf_state = match (&our_btf, &aya_btf) {
            (Ok(()), Ok(_)) => Ok(()),
            (Err(e), _) | (_, Err(e)) => Err(format!("kernel BTF unusable: {e}")),
        };
        let mut config = layout.config;
        config.trace_all_exits = u32::from(opts.trace_all_exits);

        let mut ebpf = loader
            .btf(aya_btf.as_ref().ok())
            .override_global(names::CONFIG, &config, true)
            .load(OBJECT)
            .context("creating the eBPF maps failed (is BPF enabled in this kernel?)")?;

        let kprobes = kprobes_available(tracefs.as_ref().ok());
        let facts = Facts {
            btf: btf_state.clone(),
            btf_functions,
            kprobes: kprobes.clone(),
            tracepoints: tracepoints_present(tracefs.as_ref().ok()),
            tracefs: tracefs.as_ref().map(|_| ()).map_err(|e| e.to_string()),
            mark_victim_btf_has_task,
            exit_btf_has_group_dead,
            forbidden: opts.forbid.clone(),
        };
        let plan = match &aya_btf {
            Ok(btf) => plan::resolve_all(&facts, |c| attach_one(&mut ebpf, Some(btf), c)),
            Err(_) => plan::resolve_all(&facts, |c| attach_one(&mut ebpf, None, c)),
        };
        let env = Environment {
            kernel: kernel_release(),
            root,
            btf: btf_state,
            tracefs_mounted_by_us: tracefs.as_ref().is_ok_and(|t| t.mounted_by_us),
            tracefs: tracefs
                .as_ref()
                .map(|t| t.root.display().to_string())
                .map_err(|e| e.to_string()),
            kprobes,
            memory_controller: cgroups::memory_controller(),
            missing_offsets: layout.missing.clone(),
        };
        drop(aya_btf);
        // The parsed BTFs are gone: give their memory back (glibc keeps freed heap otherwise).
        // SAFETY: no preconditions.
        unsafe { libc::malloc_trim(0) };
        Ok(Probes {
            env,
            plan,
            layout,
            attach_time: started.elapsed(),
            ebpf,
        })
    }

    /// The plan entry of a hook.
    pub fn hook(&self, hook: Hook) -> &HookPlan {
        self.plan
            .iter()
            .find(|p| p.hook == hook)
            .expect("the plan has every hook")
    }

    /// Takes the event ring buffer (once).
    pub fn take_ring(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .context("the eBPF object has no EVENTS map")?;
        RingBuf::try_from(map).context("EVENTS is not a ring buffer")
    }

    /// Events the kernel side could not write because the ring buffer was full, since load.
    pub fn lost_events(&self) -> anyhow::Result<u64> {
        let map = self
            .ebpf
            .map(names::LOST)
            .context("the eBPF object has no LOST map")?;
        let lost: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        Ok(lost.get(&0, 0)?.iter().sum())
    }

    /// Per-program run counts and run time from the kernel's own accounting (only counted while
    /// `aya::sys::enable_stats(Stats::RunTime)` is held): (program, attach, count, total ns).
    pub fn program_stats(&self) -> Vec<(String, String, u64, u64)> {
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

/// Loads and attaches one candidate; on failure unloads it and says why, in one line.
fn attach_one(ebpf: &mut Ebpf, btf: Option<&aya::Btf>, c: &Candidate) -> Result<(), String> {
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
    btf: Option<&aya::Btf>,
    c: &Candidate,
) -> anyhow::Result<()> {
    let need_btf = || btf.context("kernel BTF is not available");
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

/// `/sys/kernel/btf/vmlinux` in one read (sysfs hands it out 4 KiB per read call otherwise).
fn read_vmlinux_btf() -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let path = Path::new(Btf::VMLINUX);
    let mut f = std::fs::File::open(path).map_err(|e| {
        format!(
            "{}: {e} (kernel built without CONFIG_DEBUG_INFO_BTF?)",
            path.display()
        )
    })?;
    let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
    let mut bytes = Vec::with_capacity(len.max(1 << 20));
    f.read_to_end(&mut bytes)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(bytes)
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
