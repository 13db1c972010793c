//! `oomtrace unstick PID`: diagnose why a killed process is not dead and, with `--apply`,
//! take the remedy (vetted: only what the victim owns).

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use oomtrace::{
    host::forensics,
    printer::{self, Answer, Unstick, UnstickOomDomain, UnstickOomKillerOff, UnstickVictim},
};

use crate::{cli::UnstickArgs, seconds_ns};

/// `unstick PID` of a task asleep in a cgroup v1 memcg hung with the OOM killer disabled (not
/// an OOM victim: nothing was killed): re-enable the killer of the hang's domain, then put it
/// back (see `host::memcg_hang`). None when the process is in no such hang.
fn unstick_oom_killer_off(
    args: &UnstickArgs,
    fx: &forensics::Forensics,
    memcg_root: Option<&std::path::Path>,
    wait: Duration,
) -> Option<anyhow::Result<ExitCode>> {
    use oomtrace::host::memcg_hang;
    let hang = memcg_hang::hang_of(memcg_root?, &fx.memcg.as_ref()?.path)?;
    let (command, risk) = memcg_hang::remedy_text(&hang);
    let refused = match (hang.owner, fx.uid) {
        (Some(0), _) => None,
        (Some(o), Some(u)) if o == u => None,
        _ if args.allow_foreign_owner => None,
        (o, u) => Some(format!(
            "memcg {} is owned by uid {} and pid {} runs as uid {}: refused \
             (--allow-foreign-owner to act on it anyway)",
            hang.domain,
            o.map_or("?".into(), |o| o.to_string()),
            args.pid,
            u.map_or("?".into(), |u| u.to_string())
        )),
    };
    let applied = (args.apply && refused.is_none()).then(|| memcg_hang::apply(&hang, wait));
    let waits_on = format!(
        "the OOM killer of memcg {}, which is disabled (oom_kill_disable 1) while the memcg is \
         at its limit (under_oom 1): pid {} ({}) sleeps until memory is freed",
        hang.domain,
        args.pid,
        fx.state.as_deref().unwrap_or("?")
    );
    if let Err(e) = print(
        args,
        &Unstick::OomKillerOff(UnstickOomKillerOff {
            pid: args.pid,
            fx,
            hang: &hang,
            waits_on: &waits_on,
            command: &command,
            risk: &risk,
            refused: refused.as_deref(),
            applied: applied.as_ref(),
        }),
    ) {
        return Some(Err(e));
    }
    Some(Ok(match (&refused, &applied) {
        (Some(_), _) => ExitCode::from(EXIT_UNSTICK_REFUSED),
        (None, Some((_, false))) => ExitCode::from(EXIT_UNSTICK_NOT_DEAD),
        _ => ExitCode::SUCCESS,
    }))
}

/// `unstick PID` of a task (not an OOM victim) in an OOM domain that keeps invoking the OOM
/// killer and kills nothing — nothing killable, or a livelock on a stuck victim: raise the
/// limit of the domain (the memcg whose limit was hit, maybe an ancestor of the task's own;
/// v1 memsw by as much), journaled and put back once the task is dead (see
/// `host::oom_domain`). None when the kernel does not say the task's domain is in OOM now.
fn unstick_oom_domain(
    args: &UnstickArgs,
    fx: &forensics::Forensics,
    memcg_root: Option<&std::path::Path>,
    v2: bool,
    journal: Option<&mut oomtrace::host::journal::Journal>,
    restored: &[String],
    wait: Duration,
) -> Option<anyhow::Result<ExitCode>> {
    use oomtrace::host::{oom_domain, unstick};
    let root = memcg_root?;
    let domain = oom_domain::domain_of(root, &fx.memcg.as_ref()?.path, v2)?;
    let said = oom_domain::in_oom_now(&domain, v2, Duration::from_millis(500)).ok()?;
    let mut remedy = unstick::raise_remedy(&domain.path, domain.limit_bytes, root, v2)?;
    let action = remedy.action.clone()?;
    let extra = unstick::margin(domain.limit_bytes) >> 20;
    remedy.risk = domain_risk(&domain, extra, v2, args.pid);
    let proc_root = std::path::Path::new("/proc");
    let fusectl = std::path::Path::new(unstick::FUSECTL);
    let policy = unstick::Policy {
        allow_foreign_owner: args.allow_foreign_owner,
        allow_parent_tracer: args.allow_parent_tracer,
    };
    let plan = unstick::vet(&action, fx, proc_root, fusectl, policy);
    let refused = plan.as_ref().err().cloned();
    let mut after = None;
    let applied = match (&plan, args.apply) {
        (Ok(plan), true) => {
            let a = unstick::act(plan, proc_root, fusectl, journal, &mut || {});
            if a.ok {
                // The kernel's word again, after the raise.
                after = Some(
                    match oomtrace::host::oom_domain::in_oom_now(
                        &domain,
                        v2,
                        wait.min(Duration::from_secs(1)),
                    ) {
                        Ok(still) => Err(format!("still in OOM after the raise: {still}")),
                        Err(out) => Ok(format!("out of OOM after the raise: {out}")),
                    },
                );
            }
            Some(a)
        }
        _ => None,
    };
    let waits_on = format!(
        "memcg {}, at its limit ({} of {} bytes): {said}",
        domain.path, domain.usage_bytes, domain.limit_bytes
    );
    let failed = applied.as_ref().is_some_and(|a| !a.ok);
    if let Err(e) = print(
        args,
        &Unstick::OomDomain(UnstickOomDomain {
            pid: args.pid,
            fx,
            domain: &domain,
            waits_on: &waits_on,
            remedy: &remedy,
            refused: refused.as_deref(),
            applied: applied.as_ref(),
            after: after.as_ref(),
            restored,
        }),
    ) {
        return Some(Err(e));
    }
    Some(Ok(match (&refused, &after) {
        (Some(_), _) => ExitCode::from(EXIT_UNSTICK_REFUSED),
        _ if failed => ExitCode::from(EXIT_UNSTICK_FAILED),
        (None, Some(Err(_))) => ExitCode::from(EXIT_UNSTICK_NOT_DEAD),
        _ => ExitCode::SUCCESS,
    }))
}

/// The risk of raising the OOM domain's limit by `extra` MiB, said to whoever runs `unstick`.
fn domain_risk(
    domain: &oomtrace::host::oom_domain::OomDomain,
    extra: u64,
    v2: bool,
    pid: u32,
) -> String {
    format!(
        "memcg {} (the OOM domain{}) may use {extra} MiB more{}; whatever keeps charging there \
         gets it, and an insatiable one (a leak) fills it and is back in OOM. The old limit \
         ({} bytes) is journaled on disk and put back once pid {} is dead (by the next \
         `oomtrace unstick` or `watch --unstick`)",
        domain.path,
        if domain.memsw_hit {
            ", its memory+swap limit hit"
        } else {
            ""
        },
        if domain.memsw_hit || !v2 {
            " (memory.memsw.limit_in_bytes raised by as much where it would be hit)"
        } else {
            ""
        },
        domain.limit_bytes,
        pid
    )
}

/// Exit codes of `unstick`: 0 dead (or, without --apply, a remedy is known); 5 refused (not
/// an OOM victim, no known remedy, or the remedy would touch what the victim does not own);
/// 6 applied but still not dead after --wait; 7 applying failed.
const EXIT_UNSTICK_REFUSED: u8 = 5;
const EXIT_UNSTICK_NOT_DEAD: u8 = 6;
const EXIT_UNSTICK_FAILED: u8 = 7;

/// The journal of raised memcg limits, with what it put back first: limits an earlier run
/// raised for victims that died meanwhile.
fn open_journal(
    proc_root: &std::path::Path,
) -> (Option<oomtrace::host::journal::Journal>, Vec<String>) {
    use oomtrace::host::journal;
    let mut restored: Vec<String> = Vec::new();
    let journal = match journal::Journal::open(&journal::state_dir()) {
        Ok((mut j, said)) => {
            restored.extend(said);
            restored.extend(j.check_dead(proc_root).into_iter().map(|(_, r)| r));
            Some(j)
        }
        Err(e) => {
            restored.push(format!("no journal ({e}): no memcg limit will be raised"));
            None
        }
    };
    (journal, restored)
}

pub(crate) fn unstick(args: &UnstickArgs) -> anyhow::Result<ExitCode> {
    use oomtrace::host::unstick;
    let wait = Duration::from_nanos(seconds_ns(args.wait, "--wait")?);
    let proc_root = std::path::Path::new("/proc");
    let controller = oomtrace::kernel::cgroups::memory_controller();
    let memcg_root = controller.as_ref().map(|c| c.mount.clone());
    let (mut journal, mut restored) = open_journal(proc_root);
    let fx = forensics::collect(proc_root, args.pid, memcg_root.as_deref(), &[]);
    if let Some(code) = unstick_oom_killer_off(args, &fx, memcg_root.as_deref(), wait) {
        return code;
    }
    let evidence = unstick::oom_victim_evidence(
        proc_root,
        args.pid,
        &unstick::read_kmsg(),
        args.assume_oom_victim,
    );
    let v2 = controller.as_ref().is_some_and(|c| c.version == 2);
    if evidence.is_err()
        && let Some(code) = unstick_oom_domain(
            args,
            &fx,
            memcg_root.as_deref(),
            v2,
            journal.as_mut(),
            &restored,
            wait,
        )
    {
        return code;
    }
    let unstick::Prepared {
        wait_on,
        remedy,
        plan,
        mounted_fusectl,
    } = prepare_for_victim(args, memcg_root.as_deref(), &fx, &evidence);
    let refused = plan.as_ref().err().cloned();
    let fusectl = std::path::Path::new(unstick::FUSECTL);
    let applied = match &plan {
        Ok(plan) if args.apply => Some((
            plan,
            unstick::act(plan, proc_root, fusectl, journal.as_mut(), &mut || {}),
        )),
        _ => None,
    };
    // fusectl serves only to find and abort a connection: unmounted before the wait, so that
    // a wait cut short (Ctrl-C, a SIGKILL) leaves no mount behind.
    if mounted_fusectl || applied.as_ref().is_some_and(|(_, a)| a.unmount_fusectl) {
        unstick::unmount_fusectl();
    }
    let dead = match &applied {
        Some((plan, a)) if a.ok => Some(wait_for_victim(
            args.pid,
            plan,
            a.raised,
            journal.as_mut(),
            &mut restored,
            wait,
        )),
        _ => None,
    };
    let applied = applied.map(|(_, a)| a);
    let failed = applied.as_ref().is_some_and(|a| !a.ok);
    print(
        args,
        &Unstick::Victim(UnstickVictim {
            pid: args.pid,
            apply: args.apply,
            fx: &fx,
            evidence: &evidence,
            wait_on: &wait_on,
            remedy: remedy.as_ref(),
            refused: refused.as_deref(),
            applied: applied.as_ref(),
            dead,
            wait,
            restored: &restored,
        }),
    )?;
    Ok(match (refused, dead) {
        (Some(_), _) => ExitCode::from(EXIT_UNSTICK_REFUSED),
        _ if failed => ExitCode::from(EXIT_UNSTICK_FAILED),
        (None, Some(false)) => ExitCode::from(EXIT_UNSTICK_NOT_DEAD),
        _ => ExitCode::SUCCESS,
    })
}

/// The remedy for an OOM victim, vetted (`unstick PID` of one the kernel log names).
fn prepare_for_victim(
    args: &UnstickArgs,
    memcg_root: Option<&std::path::Path>,
    fx: &forensics::Forensics,
    evidence: &Result<String, String>,
) -> oomtrace::host::unstick::Prepared {
    use oomtrace::host::unstick;
    let proc_root = std::path::Path::new("/proc");
    unstick::prepare(&unstick::Request {
        proc_root,
        memcg_root,
        fx,
        evidence,
        recorded_fuse: &[],
        named_fuse: args.fuse_connection,
        raise_limit: args.raise_memcg_limit,
        // The kernel log's "Killed process" (or --assume-oom-victim) says it is one.
        oom_victim: true,
        policy: unstick::Policy {
            allow_foreign_owner: args.allow_foreign_owner,
            allow_parent_tracer: args.allow_parent_tracer,
        },
    })
}

/// `unstick --apply` of an OOM victim, the remedy taken: waits for the victim's death and
/// puts back (or leaves journaled) a memcg limit it `raised`; whether it died.
fn wait_for_victim(
    pid: u32,
    plan: &oomtrace::host::unstick::Plan,
    raised: bool,
    journal: Option<&mut oomtrace::host::journal::Journal>,
    restored: &mut Vec<String>,
    wait: Duration,
) -> bool {
    let gone = oomtrace::host::unstick::wait_gone(pid, wait);
    if raised {
        match (journal, gone) {
            (Some(j), true) => restored.extend(
                j.victim_dead(pid, plan.victim.1)
                    .into_iter()
                    .map(|(_, r)| r),
            ),
            (Some(j), false) => restored.push(format!(
                "left raised: pid {} is not dead; journaled in {}, put back by the next \
                 `oomtrace unstick` or `watch --unstick` once it is",
                pid,
                j.path().display()
            )),
            (None, _) => {}
        }
    }
    gone
}

/// Writes what `unstick` found and did to stdout, in the format asked for.
fn print(args: &UnstickArgs, u: &Unstick<'_>) -> anyhow::Result<()> {
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    printer::answer(args.output.format(), out, &Answer::Unstick(u))
        .context("writing the result to stdout")
}
