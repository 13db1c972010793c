//! Text of what commands say besides events and findings: `watch`'s banner, `check`'s
//! report, `unstick`'s result.

use std::{fmt::Write as _, io::Write};

use super::Text;
use crate::{
    kernel::plan,
    lifecycle::PRE_EXISTING_GRACE_NS,
    printer::{
        Banner, CheckReport, Printer, Unstick, UnstickOomDomain, UnstickOomKillerOff, UnstickVictim,
    },
    text::printable,
};

impl<W: Write> Printer for Text<W> {
    fn banner(&mut self, b: &Banner<'_>) {
        let mut s = String::new();
        banner(&mut s, b).expect("writing to a String");
        self.out.write(&s);
    }

    fn check(&mut self, r: &CheckReport) {
        let mut s = String::new();
        check_host(&mut s, r)
            .and_then(|()| check_trouble(&mut s, r))
            .expect("writing to a String");
        self.out.write(&s);
    }

    fn unstick(&mut self, u: &Unstick<'_>) {
        let mut s = String::new();
        match u {
            Unstick::Victim(v) => unstick_victim(&mut s, v),
            Unstick::OomKillerOff(k) => unstick_oom_killer_off(&mut s, k),
            Unstick::OomDomain(d) => unstick_oom_domain(&mut s, d),
        }
        .expect("writing to a String");
        self.out.write(&s);
    }
}

/// The version, kernel, plan and caveats.
fn banner(out: &mut String, b: &Banner<'_>) -> std::fmt::Result {
    let probes = b.probes;
    writeln!(
        out,
        "oomtrace {} on Linux {}; attached in {:.0} ms; flags victims not dead {} s after \
         the kill; times are UTC",
        env!("CARGO_PKG_VERSION"),
        probes.env.kernel,
        probes.attach_time.as_secs_f64() * 1e3,
        b.timeout_ns as f64 / 1e9
    )?;
    write!(out, "{}", plan::render(&probes.plan))?;
    if let Err(e) = b.death {
        writeln!(out, "WARNING: {e}: victims will be reported unobservable")?;
    }
    match b.invocations_source {
        "hook" if b.watching => writeln!(
            out,
            "OOM invocations: counted by the mem_cgroup_out_of_memory hook; the kernel's \
             notifications of {} memcgs cross-check them and name OOM-killer-disabled hangs",
            b.memcgs
        )?,
        "hook" => {}
        "none" => writeln!(
            out,
            "note: mem_cgroup_out_of_memory is not hooked here and the memcg notifications \
             could not be set up ({}): OOM invocations and the livelock signature cannot be \
             observed",
            b.memcg_error.unwrap_or("no memory controller")
        )?,
        src => writeln!(
            out,
            "OOM invocations: counted from the kernel's memcg notifications ({}) of {} \
             memcgs, set up in {:.0} ms (no invocation hook on this kernel)",
            if src.ends_with("v2") {
                "cgroup v2 memory.events.local"
            } else {
                "cgroup v1 memory.oom_control eventfds"
            },
            b.memcgs,
            b.memcgs_start_ms
        )?,
    }
    for p in b.memcg_problems {
        writeln!(out, "WARNING: memcg notifications: {p}")?;
    }
    if let Some(bound) = b.metrics {
        writeln!(out, "metrics: http://{bound}/metrics")?;
    }
    if let Some(p) = b.record {
        writeln!(out, "recording to {}", p.display())?;
    }
    Ok(())
}

/// What this host offers: kernel, BTF, tracefs, kprobes, pidfd, memory controller, hooks.
fn check_host(out: &mut String, r: &CheckReport) -> std::fmt::Result {
    let CheckReport {
        probes,
        death,
        kill_path,
        ..
    } = r;
    let env = &probes.env;
    let ok = |r: &Result<(), String>| match r {
        Ok(()) => "yes".to_string(),
        Err(e) => format!("no: {e}"),
    };
    writeln!(out, "kernel             {}", env.kernel)?;
    writeln!(out, "root               yes")?;
    writeln!(out, "BTF                {}", ok(&env.btf))?;
    match &env.tracefs {
        Ok(root) if env.tracefs_mounted_by_us => {
            writeln!(
                out,
                "tracefs            {root} (was not mounted: oomtrace mounted it)"
            )?;
        }
        Ok(root) => writeln!(out, "tracefs            {root}")?,
        Err(e) => writeln!(out, "tracefs            no: {e}")?,
    }
    writeln!(out, "kprobes            {}", ok(&env.kprobes))?;
    writeln!(out, "death (pidfd)      {}", ok(death))?;
    match &env.memory_controller {
        Some(c) => writeln!(out, "memory controller  {c}")?,
        None => writeln!(
            out,
            "memory controller  none found (no memory cgroups: memcg OOMs cannot happen)"
        )?,
    }
    for m in &env.missing_offsets {
        writeln!(out, "offset missing     {m}")?;
    }
    writeln!(out, "hooks:")?;
    write!(out, "{}", plan::render(&probes.plan))?;
    if !kill_path {
        writeln!(
            out,
            "the kill path cannot be observed here: mark_victim or process exit did not attach"
        )?;
    }
    Ok(())
}

/// The trouble the host is in now: stuck processes, memcgs under OOM or with it disabled.
fn check_trouble(out: &mut String, r: &CheckReport) -> std::fmt::Result {
    let CheckReport {
        stuck,
        oom_now,
        oom_now_tasks,
        oom_killer_disabled,
        ..
    } = r;
    if stuck.is_empty() {
        writeln!(
            out,
            "killed, not dead   none: no process with SIGKILL pending is stuck exiting"
        )?;
    }
    for (m, tasks) in oom_now.iter().zip(oom_now_tasks) {
        let what = match m.invocations {
            Some(n) => format!(
                "the OOM killer was invoked {n} times in {} ms and killed {}",
                PRE_EXISTING_GRACE_NS / 1_000_000,
                m.kills
            ),
            None => "under OOM (v1 under_oom) in two readings".into(),
        };
        let mut line = format!("OOM NOW            memcg {}: {what}", m.path);
        if m.kills == 0 && m.invocations.is_some() {
            line += ": NOTHING KILLABLE (every task at oom_score_adj -1000, exiting, or a \
                     victim already reaped); tasks:";
            for t in tasks {
                line += &format!(
                    " pid {} ({}) {};",
                    t.pid,
                    t.comm,
                    t.not_eligible.as_deref().unwrap_or("eligible")
                );
            }
        }
        writeln!(out, "{}", printable(&line))?;
    }
    for (path, tasks) in oom_killer_disabled {
        let mut line = format!(
            "OOM KILLER OFF     memcg {path}: at its limit with oom_kill_disable 1 (the kernel \
             says under_oom 1 in two readings): nothing will be killed; tasks that fault there \
             sleep until memory is freed ({} task(s)):",
            tasks.len()
        );
        for t in tasks {
            line += &format!(" pid {} ({}) {}", t.pid, t.comm, t.state);
            if let Some(w) = &t.wchan {
                line += &format!(" in {w}");
            }
            line += ";";
        }
        line += " `oomtrace unstick PID` of one of them offers a way out";
        writeln!(out, "{}", printable(&line))?;
    }
    for (c, fx) in stuck {
        writeln!(
            out,
            "KILLED, NOT DEAD   pid {} ({}): SIGKILL pending since before oomtrace started \
             (sender unknown: /proc does not say who sent it), not finished exiting {} ms later; \
             memcg {}",
            c.pid,
            printable(&c.comm),
            PRE_EXISTING_GRACE_NS / 1_000_000,
            printable(c.memcg_path.as_deref().unwrap_or("unknown"))
        )?;
        write!(out, "{fx}")?;
    }
    Ok(())
}

fn unstick_oom_killer_off(out: &mut String, k: &UnstickOomKillerOff<'_>) -> std::fmt::Result {
    writeln!(
        out,
        "pid {} ({})",
        k.pid,
        k.fx.state.as_deref().unwrap_or("?")
    )?;
    writeln!(
        out,
        "OOM victim:  no: nothing was killed; the OOM killer is disabled"
    )?;
    writeln!(out, "waits on:    {}", printable(k.waits_on))?;
    writeln!(out, "remedy:      {}", printable(k.command))?;
    writeln!(out, "risk:        {}", printable(k.risk))?;
    if let Some(why) = k.refused {
        writeln!(out, "REFUSED:     {}", printable(why))?;
    }
    for d in k.applied.iter().flat_map(|(did, _)| did) {
        writeln!(out, "applied:     {}", printable(d))?;
    }
    Ok(())
}

fn unstick_oom_domain(out: &mut String, d: &UnstickOomDomain<'_>) -> std::fmt::Result {
    writeln!(
        out,
        "pid {} ({})",
        d.pid,
        d.fx.state.as_deref().unwrap_or("?")
    )?;
    writeln!(
        out,
        "OOM victim:  no: its OOM domain keeps invoking the OOM killer, killing nothing"
    )?;
    writeln!(out, "waits on:    {}", printable(d.waits_on))?;
    writeln!(out, "remedy:      {}", printable(&d.remedy.command))?;
    writeln!(out, "risk:        {}", printable(&d.remedy.risk))?;
    if let Some(why) = d.refused {
        writeln!(out, "REFUSED:     {}", printable(why))?;
    }
    for did in d.applied.iter().flat_map(|a| &a.did) {
        writeln!(out, "applied:     {}", printable(did))?;
    }
    if let Some(Ok(t) | Err(t)) = d.after {
        writeln!(out, "result:      {}", printable(t))?;
    }
    if d.applied.is_none() && d.refused.is_none() {
        writeln!(
            out,
            "(not applied: run again with --apply to take this remedy)"
        )?;
    }
    for r in d.restored {
        writeln!(out, "restored:    {}", printable(r))?;
    }
    Ok(())
}

fn unstick_victim(out: &mut String, v: &UnstickVictim<'_>) -> std::fmt::Result {
    let UnstickVictim {
        pid,
        apply,
        fx,
        evidence,
        wait_on,
        remedy,
        refused,
        applied,
        dead,
        wait,
        restored,
    } = *v;
    writeln!(out, "pid {} ({})", pid, fx.state.as_deref().unwrap_or("?"))?;
    match evidence {
        Ok(why) => writeln!(out, "OOM victim:  {}", printable(why))?,
        Err(why) => writeln!(out, "OOM victim:  NO: {}", printable(why))?,
    }
    writeln!(out, "waits on:    {}", printable(&wait_on.to_string()))?;
    if let Some(r) = remedy {
        writeln!(out, "remedy:      {}", printable(&r.command))?;
        writeln!(out, "risk:        {}", printable(&r.risk))?;
    }
    if let Some(why) = refused {
        writeln!(out, "REFUSED:     {}", printable(why))?;
    }
    if let Some(a) = applied {
        for d in &a.did {
            writeln!(out, "applied:     {}", printable(d))?;
        }
        if !a.ok {
            writeln!(out, "result:      FAILED (see above)")?;
        }
    }
    match dead {
        Some(true) => writeln!(out, "result:      DEAD (finished exiting)")?,
        Some(false) => writeln!(
            out,
            "result:      STILL NOT DEAD after {} s",
            wait.as_secs_f64()
        )?,
        None if !apply && refused.is_none() => writeln!(
            out,
            "(not applied: run again with --apply to take this remedy)"
        )?,
        None => {}
    }
    for r in restored {
        writeln!(out, "restored:    {}", printable(r))?;
    }
    write!(out, "{fx}")
}
