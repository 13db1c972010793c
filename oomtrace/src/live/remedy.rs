//! `watch --unstick` as a sink of the live loop: the remedy `oomtrace unstick --apply` would
//! take, taken as soon as a victim is flagged; FUSE connections noted at the kill; raised memcg
//! limits put back (journaled on disk) once the victim is dead.

use std::{collections::HashMap, path::Path};

use crate::{
    host::{
        forensics::Forensics,
        journal::Journal,
        unstick::{self, Policy},
    },
    lifecycle::{Finding, Victim},
    session::Live,
    sink::{FindingCx, Said, Sink},
};

/// `--unstick`'s state.
pub(crate) struct Remedies {
    /// What it may act on, and on which victims.
    pub(crate) policy: Policy,
    /// `--unstick-pre-existing`.
    pub(crate) pre_existing: bool,
    /// The FUSE connections of the files a victim had open at its kill (a thread inside exit
    /// has detached its table by the time it is flagged).
    fuse_at_kill: HashMap<u32, Vec<u32>>,
    /// The memcg limits raised, on disk until put back.
    journal: Option<Journal>,
}

impl Remedies {
    pub(crate) fn new(policy: Policy, pre_existing: bool, journal: Option<Journal>) -> Remedies {
        Remedies {
            policy,
            pre_existing,
            fuse_at_kill: HashMap::new(),
            journal,
        }
    }

    /// The remedy for a flagged victim — one whose OOM kill oomtrace saw (the kernel's SIGKILL
    /// and the OOM killer's mark or choice), or one found by the start-up scan only with
    /// `--unstick-pre-existing`. Vetted like the CLI's (the victim's own things only), said
    /// loudly, counted in the metrics; a memcg limit is journaled and put back once it is dead.
    fn remedy(&mut self, victim: &Victim, shown: Option<Forensics>, live: &Live) -> Said {
        let tgid = victim.key.tgid;
        let fx = shown.unwrap_or_else(|| live.forensics(tgid, victim.key.start_ns));
        let proc_root = live.proc_root.clone();
        let evidence = unstick_evidence(victim, self.pre_existing);
        let recorded = self.fuse_at_kill.get(&tgid).cloned().unwrap_or_default();
        let unstick::Prepared {
            wait_on: wait,
            plan,
            mounted_fusectl: mounted,
            ..
        } = unstick::prepare(&unstick::Request {
            proc_root: &proc_root,
            memcg_root: live.memcg_root.as_deref(),
            fx: &fx,
            evidence: &evidence,
            recorded_fuse: &recorded,
            named_fuse: None,
            raise_limit: false,
            oom_victim: !victim.is_other_kill(),
            policy: self.policy,
        });
        let fusectl = Path::new(unstick::FUSECTL);
        let kind = serde_json::to_value(&wait)
            .ok()
            .and_then(|v| v["kind"].as_str().map(str::to_string))
            .unwrap_or_default();
        let (result, text, unmount) = match plan {
            Err(why) => ("refused", format!("waits on {wait}: refused: {why}"), false),
            Ok(plan) => {
                let a = unstick::act(
                    &plan,
                    &proc_root,
                    fusectl,
                    self.journal.as_mut(),
                    &mut || {},
                );
                let text = format!(
                    "waits on {wait} ({}): {}",
                    evidence.as_deref().unwrap_or_default(),
                    a.did.join("; ")
                );
                let result = if a.ok { "applied" } else { "failed" };
                (result, text, a.unmount_fusectl)
            }
        };
        // Mounted only to find and abort a connection: unmounted now, so that an exit before
        // the victim's death leaves no mount behind.
        if mounted || unmount {
            unstick::unmount_fusectl();
        }
        Said {
            tgid,
            result,
            text,
            wait_kind: Some(kind),
        }
    }

    /// A victim is dead: the limits raised for it put back.
    fn dead(&mut self, tgid: u32) -> Vec<Said> {
        self.fuse_at_kill.remove(&tgid);
        let said = self
            .journal
            .as_mut()
            .map(|j| j.victim_dead(tgid, None))
            .unwrap_or_default();
        said.into_iter().map(|(v, r)| restored(v, r)).collect()
    }
}

fn restored(tgid: u32, text: String) -> Said {
    Said {
        tgid,
        result: "restored",
        text,
        wait_kind: None,
    }
}

impl Sink for Remedies {
    /// The FUSE connections of the files `tgid` has open now (at its kill).
    fn followed(&mut self, tgid: u32) {
        let conns = unstick::fuse_connections_open(Path::new("/proc"), tgid);
        if self.fuse_at_kill.len() >= 4096 {
            self.fuse_at_kill.clear();
        }
        if !conns.is_empty() {
            self.fuse_at_kill.insert(tgid, conns);
        }
    }

    fn finding(&mut self, f: &Finding, cx: &mut FindingCx<'_>) {
        if let Some((victim, _, _)) = f.stuck()
            && let Some(live) = cx.live
        {
            let said = self.remedy(victim, cx.shown.take(), live);
            cx.said.push(said);
        }
        if let Finding::Dead { victim, .. } = f {
            let said = self.dead(victim.key.tgid);
            cx.said.extend(said);
        }
    }

    /// Puts back the journaled limits of victims that are gone (a start after a crash, and
    /// every sweep).
    fn sweep(&mut self) -> Vec<Said> {
        let said = match &mut self.journal {
            Some(j) if !j.entries().is_empty() => j.check_dead(Path::new("/proc")),
            _ => Vec::new(),
        };
        said.into_iter().map(|(v, r)| restored(v, r)).collect()
    }
}

/// The evidence `watch --unstick` has that `victim` is an OOM victim, or why it will not act.
fn unstick_evidence(
    victim: &crate::lifecycle::Victim,
    pre_existing_ok: bool,
) -> Result<String, String> {
    if victim.pre_existing && victim.killed_at().is_none() {
        return if pre_existing_ok {
            Ok(
                "found SIGKILLed by the start-up scan; its kill was not seen, acted on because \
                of --unstick-pre-existing"
                    .into(),
            )
        } else {
            Err(
                "found SIGKILLed by the start-up scan: its kill was not seen, so who sent it \
                 (the OOM killer, or a user's kill -9) is unknown; not acted on without \
                 --unstick-pre-existing"
                    .into(),
            )
        };
    }
    // Killed by a user process or another kernel path: seen, and named. Such a victim can be
    // a user's own process killed on purpose to make oomtrace act: the ownership rules of
    // `vet` (only what the victim itself holds) apply as for any victim, and no remedy that
    // raises a memcg limit is taken for it (see `unstick::remedy_for_sender`).
    if let Some(s) = &victim.sender {
        return Ok(format!("its SIGKILL by {s} was seen"));
    }
    let t = &victim.timeline;
    let by = victim
        .trigger
        .as_ref()
        .map(|t| format!(", while pid {} ({}) allocated", t.tgid, t.comm))
        .unwrap_or_default();
    match (t.sigkill, t.marked.or(t.chosen)) {
        (Some(_), Some(_)) => Ok(format!("the kernel's OOM kill was seen{by}")),
        (None, Some(_)) => Ok(format!(
            "the OOM killer's choice was seen, its SIGKILL was not (lost){by}"
        )),
        _ => Err("no OOM kill of it was seen: not acted on".into()),
    }
}

/// `--unstick`: the journal of raised memcg limits, with what it put back at opening.
pub(super) fn open_journal(unstick: bool) -> (Option<crate::host::journal::Journal>, Vec<String>) {
    if unstick {
        let dir = crate::host::journal::state_dir();
        match crate::host::journal::Journal::open(&dir) {
            Ok((j, said)) => (Some(j), said),
            Err(e) => {
                eprintln!(
                    "oomtrace: warning: --unstick without its journal ({e}): no memcg limit \
                 will be raised"
                );
                (None, Vec::new())
            }
        }
    } else {
        (None, Vec::new())
    }
}
