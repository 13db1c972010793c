//! The attach plan: the one place that decides, per hook, which program attaches and how it
//! falls back.
//!
//! Each hook has candidates in order of preference (fentry before kprobe, tp_btf before the
//! classic tracepoint). [`Facts`] about the running kernel rule some out up front, each with the
//! reason; the rest are tried in order by [`resolve`] with a caller-supplied attach function, and
//! the first that loads and attaches wins. The resulting [`HookPlan`]s say what each hook runs as
//! here, or exactly why nothing could attach. Everything here is pure; `probes.rs` does the I/O.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use serde::Serialize;

/// How a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachType {
    Fentry,
    Fexit,
    Kprobe,
    Kretprobe,
    TpBtf,
    RawTp,
    Tracepoint,
}

impl AttachType {
    pub const ALL: [AttachType; 7] = [
        AttachType::Fentry,
        AttachType::Fexit,
        AttachType::Kprobe,
        AttachType::Kretprobe,
        AttachType::TpBtf,
        AttachType::RawTp,
        AttachType::Tracepoint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AttachType::Fentry => "fentry",
            AttachType::Fexit => "fexit",
            AttachType::Kprobe => "kprobe",
            AttachType::Kretprobe => "kretprobe",
            AttachType::TpBtf => "tp_btf",
            AttachType::RawTp => "raw_tp",
            AttachType::Tracepoint => "tracepoint",
        }
    }

    pub fn parse(s: &str) -> Option<AttachType> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }
}

impl fmt::Display for AttachType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a program attaches to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A kernel function (fentry/fexit/kprobe/kretprobe).
    Function(&'static str),
    /// A tracepoint by category and name (classic, tp_btf and raw_tp use the name only).
    Tracepoint(&'static str, &'static str),
}

/// What a candidate needs of the kernel beyond its attach type and target: the variants of
/// one hook for kernels whose tracepoint passes different arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Requires {
    Nothing,
    /// tp_btf `mark_victim` passing the task (Linux ≥ 6.8), which the program reads.
    MarkVictimTask,
    /// tp_btf `sched_process_exit` passing `group_dead` (Linux ≥ 6.16).
    ExitGroupDead,
    /// tp_btf `sched_process_exit` without it (before 6.16; the group_dead variant supersedes
    /// it after).
    NoExitGroupDead,
    /// The `signal_generate` variant that reads the target's fd table for sockets: loaded
    /// where its walk is known to pass the verifier (see [`Facts::fd_walk`]).
    FdWalk,
}

/// One way to observe a hook: a program of the eBPF object and how it attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) attach: AttachType,
    /// Program (function) name in the eBPF object.
    pub(crate) program: &'static str,
    pub(crate) target: Target,
    pub(crate) requires: Requires,
}

impl Candidate {
    const fn requires(self, requires: Requires) -> Candidate {
        Candidate { requires, ..self }
    }
}

const fn func(attach: AttachType, program: &'static str, f: &'static str) -> Candidate {
    Candidate {
        attach,
        program,
        target: Target::Function(f),
        requires: Requires::Nothing,
    }
}

const fn tp(
    attach: AttachType,
    program: &'static str,
    cat: &'static str,
    name: &'static str,
) -> Candidate {
    Candidate {
        attach,
        program,
        target: Target::Tracepoint(cat, name),
        requires: Requires::Nothing,
    }
}

use AttachType::{Fentry, Fexit, Kprobe, Kretprobe, RawTp, TpBtf, Tracepoint};

const OOM_FN: &str = "mem_cgroup_out_of_memory";
const KILL_FN: &str = "oom_kill_process";
const GLOBAL_FN: &str = "out_of_memory";
const BADNESS_FN: &str = "oom_badness";

/// Declares every hook once: its variant, its name in plans and dumps, what it is in the kernel,
/// and its candidates best first. [`Hook`], [`Hook::ALL`], [`Hook::name`],
/// [`Hook::kernel_name`] and [`all_candidates`] are all derived from this one table.
macro_rules! hooks {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident {
            name: $name:literal,
            kernel: $kernel:literal,
            candidates: [$($candidate:expr),+ $(,)?] $(,)?
        }
    ),+ $(,)?) => {
        /// A point on the OOM path that oomtrace observes.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub(crate) enum Hook {
            $($(#[doc = $doc])* $variant,)+
        }

        impl Hook {
            /// Every hook, in the table's order (the plan's order).
            pub(crate) const ALL: [Hook; [$($name),+].len()] = [$(Hook::$variant),+];

            /// The hook's name in the plan line and dumps (`oom_kill`, `task_exit`, …).
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(Hook::$variant => $name,)+
                }
            }

            /// What the hook is in the kernel, for people.
            pub(crate) fn kernel_name(self) -> &'static str {
                match self {
                    $(Hook::$variant => $kernel,)+
                }
            }
        }

        /// Every candidate of a hook, best first, before facts are considered.
        pub(crate) fn all_candidates(hook: Hook) -> &'static [Candidate] {
            match hook {
                $(Hook::$variant => {
                    const CANDIDATES: &[Candidate] = &[$($candidate),+];
                    CANDIDATES
                })+
            }
        }
    };
}

hooks! {
    /// `mem_cgroup_out_of_memory()` entry: a memcg OOM was invoked.
    OomInvoke {
        name: "oom_invoke",
        kernel: "mem_cgroup_out_of_memory",
        candidates: [
            func(Fentry, "oom_invoke_fentry", OOM_FN),
            func(Kprobe, "oom_invoke_kprobe", OOM_FN),
        ],
    },
    /// `mem_cgroup_out_of_memory()` return: whether it killed.
    OomInvokeDone {
        name: "oom_invoke_done",
        kernel: "mem_cgroup_out_of_memory (return)",
        candidates: [
            func(Fexit, "oom_invoke_done_fexit", OOM_FN),
            func(Kretprobe, "oom_invoke_done_kretprobe", OOM_FN),
        ],
    },
    /// `out_of_memory()` with no memcg: a global (or sysrq) OOM.
    OomInvokeGlobal {
        name: "oom_invoke_global",
        kernel: "out_of_memory (global)",
        candidates: [
            func(Fentry, "oom_global_fentry", GLOBAL_FN),
            func(Kprobe, "oom_global_kprobe", GLOBAL_FN),
        ],
    },
    /// `oom_kill_process()`: the kill decision.
    OomKill {
        name: "oom_kill",
        kernel: "oom_kill_process",
        candidates: [
            func(Fentry, "oom_kill_fentry", KILL_FN),
            func(Kprobe, "oom_kill_kprobe", KILL_FN),
        ],
    },
    /// `oom_badness()` return inside an OOM scan: the candidates and their scores. fexit only:
    /// a kretprobe does not see the task scored.
    OomBadness {
        name: "oom_badness",
        kernel: "oom_badness (return, in OOM scans)",
        candidates: [func(Fexit, "oom_badness_fexit", BADNESS_FN)],
    },
    /// `oom:mark_victim`.
    MarkVictim {
        name: "mark_victim",
        kernel: "oom:mark_victim",
        candidates: [
            tp(TpBtf, "mark_victim_btf", "oom", "mark_victim").requires(Requires::MarkVictimTask),
            tp(Tracepoint, "mark_victim_tp", "oom", "mark_victim"),
        ],
    },
    /// `signal_generate`: the kernel's SIGKILLs.
    KernelSigkill {
        name: "kernel_sigkill",
        kernel: "signal:signal_generate",
        candidates: [
            tp(TpBtf, "signal_generate_btf_fds", "signal", "signal_generate")
                .requires(Requires::FdWalk),
            tp(TpBtf, "signal_generate_btf", "signal", "signal_generate"),
            tp(Tracepoint, "signal_generate_tp", "signal", "signal_generate"),
        ],
    },
    /// `oom:wake_reaper`: the victim queued for the oom_reaper.
    WakeReaper {
        name: "wake_reaper",
        kernel: "oom:wake_reaper",
        candidates: [tp(Tracepoint, "wake_reaper_tp", "oom", "wake_reaper")],
    },
    /// `oom:start_task_reaping`.
    StartReaping {
        name: "start_reaping",
        kernel: "oom:start_task_reaping",
        candidates: [tp(Tracepoint, "start_reaping_tp", "oom", "start_task_reaping")],
    },
    /// `oom:finish_task_reaping`.
    FinishReaping {
        name: "finish_reaping",
        kernel: "oom:finish_task_reaping",
        candidates: [tp(Tracepoint, "finish_reaping_tp", "oom", "finish_task_reaping")],
    },
    /// `oom:skip_task_reaping`.
    SkipReaping {
        name: "skip_reaping",
        kernel: "oom:skip_task_reaping",
        candidates: [tp(Tracepoint, "skip_reaping_tp", "oom", "skip_task_reaping")],
    },
    /// `sched_process_exit` (tracked processes only).
    TaskExit {
        name: "task_exit",
        kernel: "sched:sched_process_exit",
        candidates: [
            tp(TpBtf, "exit_btf_group_dead", "sched", "sched_process_exit")
                .requires(Requires::ExitGroupDead),
            tp(TpBtf, "exit_btf", "sched", "sched_process_exit")
                .requires(Requires::NoExitGroupDead),
            tp(Tracepoint, "exit_tp", "sched", "sched_process_exit"),
        ],
    },
    /// `signal_generate` of a tracked process's exit signal to its parent: when it died.
    ParentNotified {
        name: "parent_notified",
        kernel: "signal:signal_generate (a tracked process's exit signal)",
        candidates: [
            tp(TpBtf, "parent_notified_btf", "signal", "signal_generate"),
            tp(Tracepoint, "parent_notified_tp", "signal", "signal_generate"),
        ],
    },
    /// `sched_process_free` (tracked leaders only).
    TaskFree {
        name: "task_free",
        kernel: "sched:sched_process_free",
        candidates: [
            tp(RawTp, "free_raw_tp", "sched", "sched_process_free"),
            tp(Tracepoint, "free_tp", "sched", "sched_process_free"),
        ],
    },
    /// `cgroup:cgroup_mkdir`: every cgroup created, with its id and path.
    CgroupMkdir {
        name: "cgroup_mkdir",
        kernel: "cgroup:cgroup_mkdir",
        candidates: [
            tp(TpBtf, "cgroup_mkdir_btf", "cgroup", "cgroup_mkdir"),
            tp(Tracepoint, "cgroup_mkdir_tp", "cgroup", "cgroup_mkdir"),
        ],
    },
    /// `cgroup:cgroup_rmdir`: every cgroup removed, with its id and path.
    CgroupRmdir {
        name: "cgroup_rmdir",
        kernel: "cgroup:cgroup_rmdir",
        candidates: [
            tp(TpBtf, "cgroup_rmdir_btf", "cgroup", "cgroup_rmdir"),
            tp(Tracepoint, "cgroup_rmdir_tp", "cgroup", "cgroup_rmdir"),
        ],
    },
}

/// What we know about the running kernel before trying anything. Each `Err` holds the reason
/// people will read.
#[derive(Clone, Debug)]
pub(crate) struct Facts {
    /// vmlinux BTF (needed by fentry/fexit/tp_btf).
    pub(crate) btf: Result<(), String>,
    /// Kernel functions present in BTF (fentry/fexit need them there).
    pub(crate) btf_functions: BTreeSet<&'static str>,
    /// Whether kprobes can attach at all (kprobe PMU or tracefs `kprobe_events`).
    pub(crate) kprobes: Result<(), String>,
    /// Tracepoints present in tracefs, as (category, name).
    pub(crate) tracepoints: BTreeSet<(&'static str, &'static str)>,
    /// tracefs itself (classic tracepoints need it).
    pub(crate) tracefs: Result<(), String>,
    /// tp_btf `mark_victim` passes the task (Linux ≥ 6.8); before, only a pid.
    pub(crate) mark_victim_btf_has_task: bool,
    /// tp_btf `sched_process_exit` passes `group_dead` (Linux ≥ 6.16).
    pub(crate) exit_btf_has_group_dead: bool,
    /// Whether the `signal_generate` program that reads the target's fd table is worth
    /// loading: every offset of its walk found, and a kernel whose verifier was measured to
    /// pass it cheaply; else why not.
    pub(crate) fd_walk: Result<(), String>,
    /// Attach types the user forbade (`--forbid`).
    pub(crate) forbidden: BTreeSet<AttachType>,
    /// Attach types this kernel refuses to load at all, and what said so (a minimal program's
    /// load refused with EPERM: lockdown or a BPF LSM policy).
    pub(crate) refused: BTreeMap<AttachType, String>,
}

/// Why a candidate is ruled out before trying it, or `Ok` if it is worth a try.
pub(crate) fn precheck(c: &Candidate, facts: &Facts) -> Result<(), (Rejection, String)> {
    use Rejection as R;
    if facts.forbidden.contains(&c.attach) {
        return Err((R::Forbidden, format!("{} forbidden by --forbid", c.attach)));
    }
    let needs_btf = matches!(c.attach, Fentry | Fexit | TpBtf);
    if needs_btf && let Err(why) = &facts.btf {
        return Err((R::NoBtf, why.clone()));
    }
    if let Some(why) = facts.refused.get(&c.attach) {
        return Err((R::AttachFailed, why.clone()));
    }
    match c.requires {
        Requires::MarkVictimTask if !facts.mark_victim_btf_has_task => {
            return Err((
                R::KernelTooOld,
                "tp_btf mark_victim passes only a pid on this kernel (before Linux 6.8 and its \
                 stable backports) and the program reads the task; the classic tracepoint gives \
                 the same pid"
                    .into(),
            ));
        }
        Requires::ExitGroupDead if !facts.exit_btf_has_group_dead => {
            return Err((
                R::OtherKernelsVariant,
                "sched_process_exit has no group_dead argument before Linux 6.16".into(),
            ));
        }
        Requires::FdWalk if let Err(why) = &facts.fd_walk => {
            return Err((R::KernelTooOld, why.clone()));
        }
        Requires::NoExitGroupDead if facts.exit_btf_has_group_dead => {
            return Err((
                R::OtherKernelsVariant,
                "superseded by the group_dead variant on this kernel".into(),
            ));
        }
        _ => {}
    }
    let missing = |cat, name| {
        (
            R::NoTracepoint,
            format!("tracepoint {cat}:{name} does not exist on this kernel"),
        )
    };
    match (c.attach, c.target) {
        (Fentry | Fexit, Target::Function(f)) if !facts.btf_functions.contains(f) => Err((
            R::NotInBtf,
            format!("{f} is not in the kernel's BTF (inlined or absent)"),
        )),
        (Kprobe | Kretprobe, _) => facts.kprobes.clone().map_err(|e| (R::NoKprobes, e)),
        (Tracepoint, Target::Tracepoint(cat, name)) => {
            facts.tracefs.clone().map_err(|e| (R::NoTracefs, e))?;
            if facts.tracepoints.contains(&(cat, name)) {
                Ok(())
            } else {
                Err(missing(cat, name))
            }
        }
        (TpBtf | RawTp, Target::Tracepoint(cat, name))
            if facts.tracefs.is_ok() && !facts.tracepoints.contains(&(cat, name)) =>
        {
            Err(missing(cat, name))
        }
        _ => Ok(()),
    }
}

/// Why a candidate was not used, as data (the reason says it in words).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Rejection {
    /// `--forbid`.
    Forbidden,
    /// No vmlinux BTF (fentry, fexit, tp_btf need it).
    NoBtf,
    /// The function is not in BTF (inlined or absent).
    NotInBtf,
    /// Kprobes unavailable.
    NoKprobes,
    /// This kernel's tracepoint passes less than the program reads.
    KernelTooOld,
    /// A variant for other kernels; the one for this kernel does the same: nothing is lost.
    OtherKernelsVariant,
    /// tracefs missing (classic tracepoints need it).
    NoTracefs,
    /// The tracepoint does not exist here.
    NoTracepoint,
    /// Loading or attaching failed.
    AttachFailed,
}

/// One candidate that was not used, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Rejected {
    pub(crate) attach: AttachType,
    pub(crate) program: &'static str,
    pub(crate) kind: Rejection,
    pub(crate) reason: String,
}

/// What a hook runs as on this kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HookPlan {
    pub(crate) hook: Hook,
    /// The attach type in use, or `None` if nothing could attach.
    pub(crate) attach: Option<AttachType>,
    pub(crate) program: Option<&'static str>,
    /// Better candidates that failed, and why (in preference order).
    pub(crate) rejected: Vec<Rejected>,
}

impl HookPlan {
    pub(crate) fn attached(&self) -> bool {
        self.attach.is_some()
    }
}

/// Resolves one hook: candidates in order, facts first, then `try_attach`; the first success wins.
/// `try_attach` loads and attaches a program and returns why not on failure.
pub(crate) fn resolve(
    hook: Hook,
    facts: &Facts,
    mut try_attach: impl FnMut(&Candidate) -> Result<(), String>,
) -> HookPlan {
    let mut rejected = Vec::new();
    for c in all_candidates(hook) {
        let tried = precheck(c, facts)
            .and_then(|()| try_attach(c).map_err(|e| (Rejection::AttachFailed, e)));
        match tried {
            Ok(()) => {
                return HookPlan {
                    hook,
                    attach: Some(c.attach),
                    program: Some(c.program),
                    rejected,
                };
            }
            Err((kind, reason)) => rejected.push(Rejected {
                attach: c.attach,
                program: c.program,
                kind,
                reason,
            }),
        }
    }
    HookPlan {
        hook,
        attach: None,
        program: None,
        rejected,
    }
}

/// The variant superseded on this kernel is not a fallback anyone lost: leave it out of what
/// people read.
pub(crate) fn is_noise(r: &Rejected) -> bool {
    r.kind == Rejection::OtherKernelsVariant
}

/// The plan of every hook, in [`Hook::ALL`] order. Hooks on tracepoints are tried before
/// hooks on kernel functions: the BTF that fentry/fexit loads need is parsed meanwhile
/// (see `probes`).
pub(crate) fn resolve_all(
    facts: &Facts,
    mut try_attach: impl FnMut(&Candidate) -> Result<(), String>,
) -> Vec<HookPlan> {
    let on_function = |h: &Hook| {
        all_candidates(*h)
            .iter()
            .any(|c| matches!(c.target, Target::Function(_)))
    };
    let mut order = Hook::ALL;
    order.sort_by_key(on_function); // stable: tracepoint hooks, then function hooks
    let mut plan: Vec<HookPlan> = order
        .into_iter()
        .map(|h| resolve(h, facts, &mut try_attach))
        .collect();
    plan.sort_by_key(|p| Hook::ALL.iter().position(|h| *h == p.hook));
    plan
}

/// Renders the plan as a short block: one line per hook.
pub fn render(plan: &[HookPlan]) -> String {
    let mut out = String::new();
    for p in plan {
        let used = p.attach.map_or("NOT ATTACHED", AttachType::name);
        let why: Vec<String> = p
            .rejected
            .iter()
            .filter(|r| !is_noise(r))
            .map(|r| format!("{}: {}", r.attach, r.reason))
            .collect();
        let why = if why.is_empty() {
            String::new()
        } else {
            format!("  ({})", why.join("; "))
        };
        out.push_str(&format!(
            "  {:<36} {:<12}{why}\n",
            p.hook.kernel_name(),
            used
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_tracepoints() -> BTreeSet<(&'static str, &'static str)> {
        Hook::ALL
            .iter()
            .flat_map(|h| all_candidates(*h))
            .filter_map(|c| match c.target {
                Target::Tracepoint(cat, name) => Some((cat, name)),
                Target::Function(_) => None,
            })
            .collect()
    }

    /// A modern kernel where everything is available.
    fn full() -> Facts {
        Facts {
            btf: Ok(()),
            btf_functions: [OOM_FN, KILL_FN, GLOBAL_FN, BADNESS_FN].into(),
            kprobes: Ok(()),
            tracepoints: all_tracepoints(),
            tracefs: Ok(()),
            mark_victim_btf_has_task: true,
            exit_btf_has_group_dead: true,
            fd_walk: Ok(()),
            forbidden: BTreeSet::new(),
            refused: BTreeMap::new(),
        }
    }

    fn used(plan: &[HookPlan], hook: Hook) -> Option<AttachType> {
        plan.iter().find(|p| p.hook == hook).unwrap().attach
    }

    #[test]
    fn everything_available_prefers_btf_programs() {
        let plan = resolve_all(&full(), |_| Ok(()));
        assert_eq!(used(&plan, Hook::OomInvoke), Some(Fentry));
        assert_eq!(used(&plan, Hook::OomInvokeDone), Some(Fexit));
        assert_eq!(used(&plan, Hook::OomKill), Some(Fentry));
        assert_eq!(used(&plan, Hook::OomBadness), Some(Fexit));
        assert_eq!(used(&plan, Hook::MarkVictim), Some(TpBtf));
        assert_eq!(used(&plan, Hook::KernelSigkill), Some(TpBtf));
        assert_eq!(used(&plan, Hook::WakeReaper), Some(Tracepoint));
        assert_eq!(used(&plan, Hook::TaskExit), Some(TpBtf));
        assert_eq!(used(&plan, Hook::TaskFree), Some(RawTp));
        let exit = plan.iter().find(|p| p.hook == Hook::TaskExit).unwrap();
        assert_eq!(exit.program, Some("exit_btf_group_dead"));
        assert!(exit.rejected.is_empty());
    }

    /// Function hooks are tried after every tracepoint hook; the plan keeps `Hook::ALL` order.
    #[test]
    fn tracepoint_hooks_are_tried_first_and_the_plan_keeps_hook_order() {
        let mut tried = Vec::new();
        let plan = resolve_all(&full(), |c| {
            tried.push(c.target);
            Ok(())
        });
        let first_function = tried
            .iter()
            .position(|t| matches!(t, Target::Function(_)))
            .unwrap();
        assert!(first_function > 0, "{tried:?}");
        assert!(
            tried[first_function..]
                .iter()
                .all(|t| matches!(t, Target::Function(_))),
            "{tried:?}"
        );
        let hooks: Vec<Hook> = plan.iter().map(|p| p.hook).collect();
        assert_eq!(hooks, Hook::ALL);
    }

    /// This project's CI host: fentry refused at load with EPERM, no kprobes, tracepoints fine.
    #[test]
    fn fentry_refused_and_no_kprobes_leaves_the_function_hooks_unattached_with_reasons() {
        let mut facts = full();
        facts.kprobes = Err("kprobe PMU missing".into());
        let plan = resolve_all(&facts, |c| match c.attach {
            Fentry | Fexit => Err("load: EPERM".into()),
            _ => Ok(()),
        });
        for hook in [Hook::OomInvoke, Hook::OomInvokeDone, Hook::OomKill] {
            let p = plan.iter().find(|p| p.hook == hook).unwrap();
            assert_eq!(p.attach, None);
            let reasons: Vec<_> = p.rejected.iter().map(|r| r.reason.as_str()).collect();
            assert_eq!(reasons, ["load: EPERM", "kprobe PMU missing"]);
        }
        assert_eq!(used(&plan, Hook::MarkVictim), Some(TpBtf));
        assert_eq!(used(&plan, Hook::TaskExit), Some(TpBtf));
        // The candidates have no kprobe fallback: the reason is fexit's.
        let p = plan.iter().find(|p| p.hook == Hook::OomBadness).unwrap();
        assert_eq!(p.attach, None);
        let reasons: Vec<_> = p.rejected.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons, ["load: EPERM"]);
    }

    /// An attach type the kernel refused in a probe load is rejected with the probe's reason,
    /// as a failed attach, without a load of its own; the others are tried as ever.
    #[test]
    fn a_refused_attach_type_is_never_tried_and_says_why() {
        let mut facts = full();
        facts.refused = [(Fentry, "probe: EPERM".to_string())].into();
        let mut tried = Vec::new();
        let plan = resolve_all(&facts, |c| {
            tried.push(c.attach);
            Ok(())
        });
        assert!(!tried.contains(&Fentry), "{tried:?}");
        assert!(tried.contains(&Fexit), "{tried:?}");
        assert_eq!(used(&plan, Hook::OomInvoke), Some(Kprobe));
        assert_eq!(used(&plan, Hook::OomInvokeDone), Some(Fexit));
        let p = plan.iter().find(|p| p.hook == Hook::OomKill).unwrap();
        assert_eq!(p.attach, Some(Kprobe));
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].kind, Rejection::AttachFailed);
        assert_eq!(p.rejected[0].reason, "probe: EPERM");
    }

    #[test]
    fn fentry_refused_falls_back_to_kprobe() {
        let plan = resolve_all(&full(), |c| match c.attach {
            Fentry | Fexit => Err("EPERM".into()),
            _ => Ok(()),
        });
        assert_eq!(used(&plan, Hook::OomInvoke), Some(Kprobe));
        assert_eq!(used(&plan, Hook::OomInvokeDone), Some(Kretprobe));
        assert_eq!(used(&plan, Hook::OomKill), Some(Kprobe));
    }

    #[test]
    fn function_missing_from_btf_skips_fentry_without_trying() {
        let mut facts = full();
        facts.btf_functions.remove(KILL_FN);
        let mut tried = Vec::new();
        let p = resolve(Hook::OomKill, &facts, |c| {
            tried.push(c.attach);
            Ok(())
        });
        assert_eq!(tried, [Kprobe]);
        assert_eq!(p.attach, Some(Kprobe));
        assert!(p.rejected[0].reason.contains("not in the kernel's BTF"));
    }

    #[test]
    fn no_btf_means_kprobes_and_classic_tracepoints() {
        let mut facts = full();
        facts.btf = Err("no /sys/kernel/btf/vmlinux".into());
        let plan = resolve_all(&facts, |_| Ok(()));
        assert_eq!(used(&plan, Hook::OomInvoke), Some(Kprobe));
        assert_eq!(used(&plan, Hook::OomKill), Some(Kprobe));
        assert_eq!(used(&plan, Hook::MarkVictim), Some(Tracepoint));
        assert_eq!(used(&plan, Hook::KernelSigkill), Some(Tracepoint));
        assert_eq!(used(&plan, Hook::TaskExit), Some(Tracepoint));
        assert_eq!(used(&plan, Hook::TaskFree), Some(RawTp));
    }

    #[test]
    fn pre_6_8_mark_victim_uses_the_classic_tracepoint() {
        let mut facts = full();
        facts.mark_victim_btf_has_task = false;
        let p = resolve(Hook::MarkVictim, &facts, |_| Ok(()));
        assert_eq!(p.attach, Some(Tracepoint));
        assert!(p.rejected[0].reason.contains("6.8"));
        assert_eq!(p.rejected[0].kind, Rejection::KernelTooOld);
        assert!(!is_noise(&p.rejected[0]), "losing the task is worth saying");
        assert!(p.rejected[0].reason.contains("only a pid on this kernel"));
    }

    #[test]
    fn pre_6_16_exit_uses_the_derived_group_dead_program() {
        let mut facts = full();
        facts.exit_btf_has_group_dead = false;
        let p = resolve(Hook::TaskExit, &facts, |_| Ok(()));
        assert_eq!(p.program, Some("exit_btf"));
        assert!(p.rejected.iter().all(is_noise));
    }

    #[test]
    fn forbidding_attach_types_walks_down_the_chain() {
        let mut facts = full();
        facts.forbidden = [Fentry, Fexit].into();
        let plan = resolve_all(&facts, |_| Ok(()));
        assert_eq!(used(&plan, Hook::OomKill), Some(Kprobe));
        facts.forbidden = [Fentry, Fexit, Kprobe, Kretprobe, TpBtf, RawTp].into();
        let plan = resolve_all(&facts, |_| Ok(()));
        assert_eq!(used(&plan, Hook::OomKill), None);
        assert_eq!(used(&plan, Hook::MarkVictim), Some(Tracepoint));
        assert_eq!(used(&plan, Hook::TaskFree), Some(Tracepoint));
        let p = plan.iter().find(|p| p.hook == Hook::OomKill).unwrap();
        assert!(p.rejected.iter().all(|r| r.reason.contains("--forbid")));
        assert!(p.rejected.iter().all(|r| r.kind == Rejection::Forbidden));
    }

    #[test]
    fn missing_tracepoint_and_missing_tracefs_are_named() {
        let mut facts = full();
        facts.tracepoints.remove(&("oom", "skip_task_reaping"));
        let p = resolve(Hook::SkipReaping, &facts, |_| Ok(()));
        assert_eq!(p.attach, None);
        assert!(p.rejected[0].reason.contains("does not exist"));
        facts.tracefs = Err("tracefs is not mounted".into());
        let p = resolve(Hook::WakeReaper, &facts, |_| Ok(()));
        assert_eq!(p.rejected[0].reason, "tracefs is not mounted");
    }

    #[test]
    fn attach_failure_after_precheck_falls_through() {
        let p = resolve(Hook::TaskFree, &full(), |c| match c.attach {
            RawTp => Err("attach: ENOENT".into()),
            _ => Ok(()),
        });
        assert_eq!(p.attach, Some(Tracepoint));
        assert_eq!(p.rejected[0].reason, "attach: ENOENT");
        assert_eq!(p.rejected[0].kind, Rejection::AttachFailed);
    }

    #[test]
    fn every_candidate_program_is_unique() {
        let mut seen = BTreeSet::new();
        for h in Hook::ALL {
            for c in all_candidates(h) {
                assert!(seen.insert(c.program), "{} listed twice", c.program);
            }
        }
    }

    #[test]
    fn render_names_unattached_hooks_and_reasons() {
        let mut facts = full();
        facts.kprobes = Err("no kprobe PMU".into());
        let plan = resolve_all(&facts, |c| match c.attach {
            Fentry | Fexit => Err("EPERM".into()),
            _ => Ok(()),
        });
        let text = render(&plan);
        assert!(text.contains("oom_kill_process"));
        assert!(
            text.contains("NOT ATTACHED  (fentry: EPERM; kprobe: no kprobe PMU)"),
            "{text}"
        );
        assert!(!text.contains("superseded"));
    }

    #[test]
    fn hook_names_are_their_json_names() {
        for h in Hook::ALL {
            assert_eq!(serde_json::to_value(h).unwrap(), h.name());
        }
    }
}
