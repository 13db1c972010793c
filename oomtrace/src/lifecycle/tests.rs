//! Synthetic event streams through the tracker. Times are in ms from an arbitrary origin.

use oomtrace_common::{
    GroupExited, Header, KernelSigkill, MarkVictim, OomInvoke, OomKill, PreExisting, Reaper,
    TaskExit, TaskFree, USERSPACE_CPU, exit_seen, group_dead_source, pre_existing, sender_state,
    victim_fields,
};

use super::*;
use crate::event::{comm_bytes, sample_sigkill};

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
const MEMCG: u64 = 4127;

fn header(ts_ms: u64, pid: u32, tgid: u32, comm: &str) -> Header {
    Header {
        kind: 0,
        cpu: 0,
        ts_ns: 1000 * S + ts_ms * MS,
        pid,
        tgid,
        comm: comm_bytes(comm),
    }
}

fn at(ms: u64) -> u64 {
    1000 * S + ms * MS
}

/// The allocating task that triggers the OOMs.
const TRIGGER: u32 = 500;

/// A made-up mm address per process: processes have their own unless a test says otherwise.
fn mm_of(tgid: u32) -> u64 {
    0xffff_8880_0000_0000 + u64::from(tgid) * 4096
}

fn sigkill(ms: u64, tgid: u32, start: u64) -> Event {
    Event {
        header: header(ms, TRIGGER, TRIGGER, "alloc"),
        payload: Payload::KernelSigkill(KernelSigkill {
            target_mm: mm_of(tgid),
            // Sent from the allocating task's OOM path: not exiting.
            sender_flags: sender_state::KNOWN,
            ..sample_sigkill(tgid, "hog", start)
        }),
    }
}

fn mark(ms: u64, tgid: u32, start: u64) -> Event {
    let mut v: MarkVictim = unsafe { std::mem::zeroed() };
    v.pid = tgid;
    v.tgid = tgid;
    v.comm = comm_bytes("hog");
    v.start_ns = start;
    v.memcg_id = MEMCG;
    v.mm = mm_of(tgid);
    v.anon_rss_kb = 65536;
    v.fields = victim_fields::TASK | victim_fields::COMM | victim_fields::MEMORY;
    Event {
        header: header(ms, TRIGGER, TRIGGER, "alloc"),
        payload: Payload::MarkVictim(v),
    }
}

/// mark_victim as kernels before 6.8 report it: a thread id only.
fn old_mark(ms: u64, tid: u32) -> Event {
    let mut v: MarkVictim = unsafe { std::mem::zeroed() };
    v.pid = tid;
    Event {
        header: header(ms, TRIGGER, TRIGGER, "alloc"),
        payload: Payload::MarkVictim(v),
    }
}

fn exit(ms: u64, tid: u32, tgid: u32, start: u64, group_dead: bool) -> Event {
    Event {
        header: header(ms, tid, tgid, "hog"),
        payload: Payload::TaskExit(TaskExit {
            group_dead: u32::from(group_dead),
            group_dead_source: group_dead_source::TRACEPOINT,
            start_ns: start,
        }),
    }
}

fn free(ms: u64, pid: u32, start: u64) -> Event {
    Event {
        header: header(ms, 0, 0, "ksoftirqd/0"),
        payload: Payload::TaskFree(TaskFree {
            pid,
            _pad: 0,
            start_ns: start,
        }),
    }
}

/// The process finished exiting: its pidfd polled readable (observed by userspace).
fn gone(ms: u64, pid: u32, start: u64) -> Event {
    let mut h = header(ms, pid, pid, "hog");
    h.cpu = USERSPACE_CPU;
    Event {
        header: h,
        payload: Payload::GroupExited(GroupExited {
            pid,
            how: exit_seen::PIDFD,
            start_ns: start,
            tid: 0,
            _pad: 0,
        }),
    }
}

/// Found at start by the /proc scan: killed before oomtrace came, not finished exiting.
fn found(ms: u64, pid: u32, start: u64, memcg: u64) -> Event {
    let mut h = header(ms, pid, pid, "hog");
    h.cpu = USERSPACE_CPU;
    Event {
        header: h,
        payload: Payload::PreExisting(PreExisting {
            pid,
            ppid: 1,
            comm: comm_bytes("hog"),
            start_ns: start,
            memcg_id: memcg,
            threads: 2,
            flags: pre_existing::ZOMBIE_LEADER | pre_existing::THREAD_IN_D,
        }),
    }
}

fn invoke_in(ms: u64, memcg: u64) -> Event {
    let mut ev = invoke(ms);
    if let Payload::OomInvoke(p) = &mut ev.payload {
        p.memcg_id = memcg;
    }
    ev
}

/// `mem_cgroup_out_of_memory` returning in the allocating task: `killed` is its verdict.
fn invoke_done(ms: u64, killed: bool) -> Event {
    Event {
        header: header(ms, TRIGGER, TRIGGER, "alloc"),
        payload: Payload::OomInvokeDone(oomtrace_common::OomInvokeDone {
            killed: u32::from(killed),
            _pad: 0,
        }),
    }
}

/// An invocation of `memcg` whose selection was aborted: a victim is pending (returned true
/// without a kill).
fn aborted_in(ms: u64, memcg: u64) -> [Event; 2] {
    [invoke_in(ms, memcg), invoke_done(ms + 1, true)]
}

/// An invocation of `memcg` that found nothing it may kill (returned false).
fn nothing_in(ms: u64, memcg: u64) -> [Event; 2] {
    [invoke_in(ms, memcg), invoke_done(ms + 1, false)]
}

fn reaper(ms: u64, pid: u32, kind: fn(Reaper) -> Payload) -> Event {
    Event {
        header: header(ms, 40, 40, "oom_reaper"),
        payload: kind(Reaper { pid, _pad: 0 }),
    }
}

fn invoke(ms: u64) -> Event {
    Event {
        header: header(ms, TRIGGER, TRIGGER, "alloc"),
        payload: Payload::OomInvoke(OomInvoke {
            memcg_id: MEMCG,
            gfp_mask: 0xcc0,
            order: 0,
        }),
    }
}

fn kill_decision(ms: u64, tgid: u32, start: u64) -> Event {
    Event {
        header: header(ms, TRIGGER, TRIGGER, "alloc"),
        payload: Payload::OomKill(OomKill {
            chosen_pid: tgid,
            chosen_tgid: tgid,
            chosen_comm: comm_bytes("hog"),
            chosen_start_ns: start,
            chosen_points: 16000,
            totalpages: 16384,
            memcg_id: MEMCG,
            constraint: 3,
            order: 0,
            gfp_mask: 0xcc0,
            _pad: 0,
            message: comm_bytes("Memory cgroup out of memory"),
            chosen_memcg_id: 0,
            chosen_mm: mm_of(tgid),
        }),
    }
}

/// The kernel's longest message survives whole, and a sysrq-f kill (order -1) says so.
#[test]
fn a_sysrq_kill_is_told_apart_and_long_messages_are_whole() {
    let mut t = tracker();
    let mut kd = kill_decision(0, 42, 7);
    if let Payload::OomKill(p) = &mut kd.payload {
        p.order = -1;
        p.message = comm_bytes("Out of memory (oom_kill_allocating_task)");
    }
    let f = run(
        &mut t,
        &[kd, sigkill(0, 42, 7), mark(0, 42, 7), gone(2, 42, 7)],
        50,
    );
    let v = f[0].victim().unwrap();
    let d = v.decision.as_ref().unwrap();
    assert_eq!(d.message, "Out of memory (oom_kill_allocating_task)");
    assert!(d.is_sysrq());
    assert!(f[0].to_string().contains("sysrq-f"), "{}", f[0]);
}

/// `out_of_memory()` marks a task that is already exiting, and `oom_kill_process()` returns
/// early for a victim that will free its memory anyway: a mark, no SIGKILL. Not a kill (the
/// kernel's `oom_kill` counter does not count it), but followed to its death.
#[test]
fn a_mark_without_a_sigkill_is_not_a_kill() {
    let mut t = tracker();
    let f = run(
        &mut t,
        &[kill_decision(0, 42, 7), mark(0, 42, 7), gone(3, 42, 7)],
        100,
    );
    assert_eq!(names(&f), ["marked", "dead"], "{f:?}");
    assert!(f[0].victim().unwrap().already_exiting);
    assert!(f[0].to_string().contains("killed nothing"), "{}", f[0]);
    let s = t.summary();
    assert_eq!((s.kills, s.marked_exiting, s.dead), (0, 1, 1));
    // Chosen, then its SIGKILL, then the mark: one kill, announced once.
    let mut t = tracker();
    let f = run(
        &mut t,
        &[kill_decision(0, 42, 7), sigkill(0, 42, 7), mark(0, 42, 7)],
        100,
    );
    assert_eq!(names(&f), ["killed"], "{f:?}");
    assert_eq!(t.summary().kills, 1);
}

/// The same SIGKILL, to a process whose mm is `owner`'s (it shares it, CLONE_VM).
fn sharing(mut ev: Event, owner: u32) -> Event {
    if let Payload::KernelSigkill(p) = &mut ev.payload {
        p.target_mm = mm_of(owner);
    }
    ev
}

/// The same event, sent by `tgid` (its main thread) instead of the allocating task.
fn from(mut ev: Event, tgid: u32) -> Event {
    ev.header.pid = tgid;
    ev.header.tgid = tgid;
    ev
}

/// A container's init is the OOM victim (it was also the allocating task): as it exits, the
/// kernel SIGKILLs every process in its PID namespace, from the same thread, within
/// microseconds of the mark. One OOM kill, two collateral kills — not three OOM kills.
#[test]
fn a_pid_namespace_teardown_is_collateral_not_a_kill() {
    let mut t = tracker();
    let stream = [
        from(sigkill(0, 42, 7), 42),
        from(mark(0, 42, 7), 42),
        from(sigkill(1, 43, 8), 42),
        from(sigkill(1, 44, 9), 42),
        gone(3, 42, 7),
        // Reaped (and forgotten) before the pairing window ends.
        free(6, 42, 7),
    ];
    let f = run(&mut t, &stream, 100);
    // Collateral once no mark claimed them within the pairing window, and followed as kills
    // by another kernel path (announced as such, not counted as OOM kills).
    assert_eq!(
        names(&f),
        [
            "killed",
            "dead",
            "released",
            "sigkill",
            "collateral",
            "sigkill",
            "collateral"
        ],
        "{f:?}"
    );
    let Finding::Collateral { target, by, .. } = &f[4] else {
        panic!()
    };
    assert_eq!((target.tgid, by.tgid), (43, 42));
    assert!(f[4].to_string().contains("PID namespace"), "{}", f[4]);
    assert_eq!(f[3].victim().unwrap().sender_kind(), SenderKind::Kernel);
    let s = t.summary();
    assert_eq!((s.kills, s.collateral, s.other_kills), (1, 2, 2));
}

/// The same SIGKILL, its sender inside its own exit (`PF_EXITING`).
fn sender_exiting(mut ev: Event) -> Event {
    if let Payload::KernelSigkill(p) = &mut ev.payload {
        p.sender_flags = sender_state::KNOWN | sender_state::EXITING;
    }
    ev
}

/// The same SIGKILL as recorded before the sender's state was (dumps of older layouts).
fn sender_unknown(mut ev: Event) -> Event {
    if let Payload::KernelSigkill(p) = &mut ev.payload {
        p.sender_flags = 0;
    }
    ev
}

/// The issue-22 failure in the 5.10 guest: there `mark_victim` is the classic tracepoint (a
/// thread id, no task, so no mm) and no kill decision gave the victim's mm. A container's init
/// is the victim and its own trigger; 30 ms after its mark, inside its own `do_exit`
/// (`exit_notify` → `zap_pid_ns_processes`), it SIGKILLs the two other processes of its
/// namespace. They have their own mm, but the victim's is unknown: the sender's state decides.
/// A sender inside its own exit is not killing co-victims (the OOM killer sends those from the
/// allocation path): one OOM kill, two collateral kills.
#[test]
fn a_dying_namespace_init_is_one_kill_where_its_mark_names_no_mm() {
    let mut t = tracker();
    let init = |ev| from(ev, 42);
    let stream = [
        init(sigkill(0, 42, 7)),
        init(old_mark(0, 42)),
        init(sender_exiting(sigkill(30, 43, 8))),
        init(sender_exiting(sigkill(30, 44, 9))),
        gone(35, 42, 7),
    ];
    let f = run(&mut t, &stream, 200);
    assert_eq!(
        names(&f),
        [
            "killed",
            "dead",
            "sigkill",
            "collateral",
            "sigkill",
            "collateral"
        ],
        "{f:?}"
    );
    assert_eq!(f[0].victim().unwrap().key.tgid, 42);
    for c in f[2..].iter().filter(|c| c.name() == "collateral") {
        let Finding::Collateral { target, by, .. } = c else {
            panic!("{c:?}")
        };
        assert!([43, 44].contains(&target.tgid), "{c:?}");
        assert_eq!(by.tgid, 42);
    }
    let s = t.summary();
    assert_eq!((s.kills, s.collateral), (1, 2), "{s}");
}

/// Where the victim's mm is unknown, a SIGKILL its trigger sends right after the mark from its
/// allocation path (not exiting) is still a kill of a process sharing that mm — as is one from a
/// sender whose state was not recorded (dumps of older layouts judge as they always did).
#[test]
fn sigkills_after_a_mark_without_mm_are_co_victims_unless_the_sender_is_exiting() {
    for (label, covictim) in [
        ("sender not exiting", sigkill(1, 77, 9)),
        ("sender state unknown", sender_unknown(sigkill(1, 77, 9))),
    ] {
        let mut t = tracker();
        // The victim's mm unknown: neither its SIGKILL (an older layout) nor its mark names it.
        let mut first = sigkill(0, 42, 7);
        if let Payload::KernelSigkill(p) = &mut first.payload {
            p.target_mm = 0;
        }
        let stream = [first, old_mark(0, 42), covictim, gone(3, 77, 9)];
        let f = run(&mut t, &stream, 200);
        assert_eq!(names(&f), ["killed", "killed", "dead"], "{label}: {f:?}");
        let v = f[2].victim().unwrap();
        assert_eq!(v.key.tgid, 77, "{label}");
        assert_eq!(
            v.killed_with,
            Some(VictimKey {
                tgid: 42,
                start_ns: 7
            }),
            "{label}"
        );
        assert_eq!(t.summary().kills, 2, "{label}");
    }
}

/// The kill decision (`oom_kill_process`) names the victim's mm where the classic mark cannot:
/// a SIGKILL sent right after the mark is a co-victim's exactly when it shares that mm, whatever
/// the sender's state.
#[test]
fn the_kill_decisions_mm_tells_co_victims_apart_where_the_mark_names_none() {
    let mut t = tracker();
    let stream = [
        kill_decision(0, 42, 7),
        sigkill(0, 42, 7),
        old_mark(0, 42),
        sharing(sender_unknown(sigkill(1, 77, 9)), 42),
        sender_unknown(sigkill(1, 78, 10)),
    ];
    let f = run(&mut t, &stream, 200);
    // 78 does not share the victim's mm: another kernel path's kill, followed apart.
    assert_eq!(names(&f), ["killed", "killed", "sigkill"], "{f:?}");
    assert_eq!(f[1].victim().unwrap().key.tgid, 77);
    assert_eq!(f[2].victim().unwrap().key.tgid, 78);
    assert_eq!((t.summary().kills, t.summary().other_kills), (2, 1));
}

/// Runs a stream; ticks every 10 ms up to `until_ms`; returns the findings.
fn run(t: &mut Tracker, events: &[Event], until_ms: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut events: Vec<&Event> = events.iter().collect();
    let mut now = 0;
    while now <= until_ms {
        while let Some(ev) = events.first() {
            if ev.header.ts_ns > at(now) {
                break;
            }
            t.on_event(ev, &mut out);
            events.remove(0);
        }
        t.tick(at(now), &mut out);
        now += 10;
    }
    for ev in events {
        t.on_event(ev, &mut out);
    }
    out
}

fn names(f: &[Finding]) -> Vec<&'static str> {
    f.iter().map(Finding::name).collect()
}

fn tracker() -> Tracker {
    Tracker::new(TrackerConfig::default())
}

#[test]
fn normal_kill_dies_and_is_released_without_a_flag() {
    let mut t = tracker();
    let f = run(
        &mut t,
        &[
            sigkill(0, 42, 7),
            mark(0, 42, 7),
            exit(1, 42, 42, 7, true),
            gone(2, 42, 7),
            free(25, 42, 7),
        ],
        8000,
    );
    assert_eq!(names(&f), ["killed", "dead", "released"]);
    let Finding::Dead {
        kill_to_dead_ns,
        was_flagged,
        victim,
    } = &f[1]
    else {
        panic!("{f:?}")
    };
    assert_eq!(*kill_to_dead_ns, Some(2 * MS));
    assert!(!was_flagged);
    assert_eq!(victim.death_seen, Some("pidfd"));
    assert_eq!(victim.memcg_id, Some(MEMCG));
    assert_eq!(victim.trigger.as_ref().unwrap().tgid, TRIGGER);
    let s = t.summary();
    assert_eq!((s.kills, s.dead, s.released, s.flagged_total), (1, 1, 1, 0));
    assert_eq!(s.kill_to_dead.count, 1);
    assert!(s.kill_to_dead.p50_ns >= 2 * MS - 10_000 && s.kill_to_dead.p50_ns <= 2 * MS + 10_000);
    assert!(t.is_empty(), "released victims leave the tracker");
}

#[test]
fn stuck_then_dead_late_is_flagged_once_and_reported_late() {
    let mut t = tracker();
    let stream = [
        sigkill(0, 42, 7),
        mark(0, 42, 7),
        exit(4, 42, 42, 7, false),
        reaper(2020, 42, Payload::WakeReaper),
        reaper(2021, 42, Payload::StartReaping),
        reaper(2028, 42, Payload::FinishReaping),
        exit(7000, 43, 42, 7, true),
        gone(7000, 42, 7),
        free(7020, 42, 7),
    ];
    let f = run(&mut t, &stream, 9000);
    assert_eq!(names(&f), ["killed", "stuck", "dead", "released"]);
    let Finding::Stuck {
        stage,
        since_kill_ns,
        unconfirmed_lost,
        victim,
        ..
    } = &f[1]
    else {
        panic!()
    };
    assert_eq!(*stage, Stage::Exiting);
    assert!(*since_kill_ns >= DEFAULT_TIMEOUT_NS && *since_kill_ns < DEFAULT_TIMEOUT_NS + 20 * MS);
    assert_eq!(*unconfirmed_lost, 0);
    assert_eq!(victim.threads_exited, 1);
    assert_eq!(victim.timeline.reaping_finished, Some(at(2028)));
    assert!(
        matches!(&f[2], Finding::Dead { was_flagged: true, kill_to_dead_ns, .. } if *kill_to_dead_ns == Some(7 * S))
    );
    assert!(f[2].to_string().contains("(flagged)"), "{}", f[2]);
    let s = t.summary();
    assert_eq!((s.flagged_total, s.stuck_now), (1, 0));
    assert_eq!(s.reaping.count, 1);
}

#[test]
fn stuck_and_never_dead_stays_stuck() {
    let mut t = tracker();
    let f = run(&mut t, &[sigkill(0, 42, 7), mark(0, 42, 7)], 30_000);
    assert_eq!(names(&f), ["killed", "stuck"]);
    assert!(matches!(
        &f[1],
        Finding::Stuck {
            stage: Stage::Marked,
            ..
        }
    ));
    assert_eq!(t.summary().stuck_now, 1);
    assert_eq!(t.unresolved().count(), 1);
}

#[test]
fn reaper_giving_up_is_the_stage_reported() {
    let mut t = tracker();
    let mut stream = vec![
        sigkill(0, 42, 7),
        mark(0, 42, 7),
        reaper(2020, 42, Payload::WakeReaper),
    ];
    for i in 0..10 {
        stream.push(reaper(2021 + i * 100, 42, Payload::SkipReaping));
    }
    let f = run(&mut t, &stream, 6000);
    let Finding::Stuck { stage, victim, .. } = &f[1] else {
        panic!("{f:?}")
    };
    assert_eq!(*stage, Stage::ReaperGaveUp);
    assert_eq!(victim.reaper_skips, 10);
}

/// finish_task_reaping fires even when the unmapping failed; the reaper then retries without a
/// skip. Ten attempts are its last: not "reaped (memory freed)".
#[test]
fn failed_reap_attempts_are_not_a_reap() {
    let mut t = tracker();
    let mut stream = vec![
        sigkill(0, 42, 7),
        mark(0, 42, 7),
        reaper(2020, 42, Payload::WakeReaper),
    ];
    for i in 0..10 {
        stream.push(reaper(2021 + i * 100, 42, Payload::StartReaping));
        stream.push(reaper(2022 + i * 100, 42, Payload::FinishReaping));
    }
    let f = run(&mut t, &stream, 6000);
    let Finding::Stuck { stage, victim, .. } = &f[1] else {
        panic!("{f:?}")
    };
    assert_eq!(*stage, Stage::ReaperGaveUp);
    assert_eq!(victim.reaper_attempts, 10);
    // One attempt that finished, nothing after: reaped.
    let mut t = tracker();
    let stream = [
        sigkill(0, 42, 7),
        mark(0, 42, 7),
        reaper(2020, 42, Payload::WakeReaper),
        reaper(2021, 42, Payload::StartReaping),
        reaper(2028, 42, Payload::FinishReaping),
    ];
    let f = run(&mut t, &stream, 6000);
    assert!(
        matches!(
            &f[1],
            Finding::Stuck {
                stage: Stage::Reaped,
                ..
            }
        ),
        "{f:?}"
    );
}

#[test]
fn zombie_not_released_is_a_separate_finding() {
    let mut t = tracker();
    let f = run(
        &mut t,
        &[
            sigkill(0, 42, 7),
            mark(0, 42, 7),
            exit(2, 42, 42, 7, true),
            gone(3, 42, 7),
        ],
        12_000,
    );
    assert_eq!(names(&f), ["killed", "dead", "not_released"]);
    let Finding::NotReleased { since_dead_ns, .. } = &f[2] else {
        panic!()
    };
    assert!(*since_dead_ns >= DEFAULT_RELEASE_TIMEOUT_NS);
    assert_eq!(t.summary().not_released_now, 1);
    assert_eq!(t.summary().flagged_total, 0, "not a stuck victim");
}

/// The live loop wakes for a release the kernel submitted without a wake-up: from the death
/// until the release is seen, or flagged as missing.
#[test]
fn a_release_is_awaited_from_the_death_until_seen_or_flagged() {
    let mut t = tracker();
    let kill = [sigkill(0, 42, 7), mark(0, 42, 7), exit(2, 42, 42, 7, true)];
    run(&mut t, &kill, 100);
    assert_eq!(t.release_awaited_since(), None, "alive: nothing to await");
    run(&mut t, &[gone(130, 42, 7)], 200);
    assert_eq!(t.release_awaited_since(), Some(at(130)));
    run(&mut t, &[free(230, 42, 7)], 300);
    assert_eq!(t.release_awaited_since(), None, "released");

    let mut t = tracker();
    let f = run(&mut t, &[kill[0], kill[1], kill[2], gone(3, 42, 7)], 12_000);
    assert_eq!(names(&f), ["killed", "dead", "not_released"]);
    assert_eq!(
        t.release_awaited_since(),
        None,
        "flagged: no longer polled for"
    );
}

#[test]
fn pid_reuse_does_not_kill_the_victim() {
    let mut t = tracker();
    // Same tgid, different start time: another process.
    let f = run(
        &mut t,
        &[
            sigkill(0, 42, 7),
            mark(0, 42, 7),
            exit(100, 42, 42, 999, true),
            gone(101, 42, 999),
            free(120, 42, 999),
        ],
        6000,
    );
    assert_eq!(names(&f), ["killed", "stuck"]);
}

#[test]
fn events_slightly_out_of_order_across_cpus() {
    let mut t = tracker();
    let mut out = Vec::new();
    // The exit (another CPU) arrives before the mark that precedes it in time.
    for ev in [
        sigkill(0, 42, 7),
        gone(1, 42, 7),
        exit(1, 42, 42, 7, true),
        mark(0, 42, 7),
        free(20, 42, 7),
    ] {
        t.on_event(&ev, &mut out);
    }
    t.tick(at(100), &mut out);
    assert_eq!(names(&out), ["killed", "dead", "released"]);
    let Finding::Dead {
        kill_to_dead_ns, ..
    } = &out[1]
    else {
        panic!()
    };
    assert_eq!(*kill_to_dead_ns, Some(MS));
}

#[test]
fn lost_events_make_a_silence_unconfirmed() {
    let mut t = tracker();
    let mut out = Vec::new();
    for ev in [sigkill(0, 42, 7), mark(0, 42, 7)] {
        t.on_event(&ev, &mut out);
    }
    t.tick(at(50), &mut out);
    t.on_lost(3);
    t.tick(at(6000), &mut out);
    let Finding::Stuck {
        unconfirmed_lost, ..
    } = &out[1]
    else {
        panic!("{out:?}")
    };
    assert_eq!(*unconfirmed_lost, 3);
    assert!(out[1].to_string().contains("UNCONFIRMED"));
}

#[test]
fn unwatchable_deaths_are_unobservable_not_stuck() {
    let mut t = Tracker::new(TrackerConfig {
        observability: Observability {
            death: false,
            free: false,
            ..Observability::ALL
        },
        ..TrackerConfig::default()
    });
    let f = run(&mut t, &[sigkill(0, 42, 7), mark(0, 42, 7)], 7000);
    assert_eq!(names(&f), ["killed", "unobservable"]);
    let s = t.summary();
    assert_eq!((s.flagged_total, s.unobservable), (0, 1));
}

#[test]
fn processes_sharing_the_mm_are_tracked_as_victims_too() {
    let mut t = tracker();
    let stream = [
        sigkill(0, 42, 7),
        mark(0, 42, 7),
        sharing(sigkill(1, 77, 9), 42), // SIGKILL only, sent right after the mark
        gone(3, 42, 7),
        gone(4, 77, 9),
    ];
    let f = run(&mut t, &stream, 100);
    assert_eq!(names(&f), ["killed", "killed", "dead", "dead"]);
    let Finding::Dead { victim, .. } = &f[3] else {
        panic!()
    };
    assert_eq!(victim.key.tgid, 77);
    assert_eq!(
        victim.killed_with,
        Some(VictimKey {
            tgid: 42,
            start_ns: 7
        })
    );
    assert_eq!(victim.memcg_id, Some(MEMCG));
}

#[test]
fn oom_group_kills_are_separate_victims_of_one_invocation() {
    let mut t = tracker();
    let stream = [
        invoke(0),
        kill_decision(0, 42, 7),
        sigkill(0, 42, 7),
        mark(0, 42, 7),
        sigkill(1, 43, 8),
        mark(1, 43, 8),
        gone(2, 42, 7),
        gone(3, 43, 8),
    ];
    let f = run(&mut t, &stream, 100);
    // One incident of two victims, reported once both are dead (and, the invocation's return
    // unseen, no later kill of it can still come).
    assert_eq!(
        names(&f),
        ["killed", "killed", "dead", "dead", "group_kill"]
    );
    let Finding::Dead { victim, .. } = &f[3] else {
        panic!()
    };
    assert_eq!(victim.killed_with, None, "a marked victim is a primary");
    let Finding::Dead { victim, .. } = &f[2] else {
        panic!()
    };
    assert_eq!(victim.decision.as_ref().unwrap().totalpages, 16384);
}

#[test]
fn livelock_is_reported_when_the_memcg_keeps_hitting_oom() {
    let mut t = tracker();
    let mut stream = vec![invoke(0), sigkill(0, 42, 7), mark(0, 42, 7)];
    for i in 0..12 {
        stream.extend(aborted_in(5100 + i * 100, MEMCG));
    }
    let f = run(&mut t, &stream, 7000);
    assert_eq!(names(&f), ["killed", "stuck", "livelock"]);
    assert!(matches!(
        f[2],
        Finding::Livelock {
            verdict: "aborted",
            ..
        }
    ));
    let Finding::Livelock {
        invocations,
        memcg_id,
        ..
    } = &f[2]
    else {
        panic!()
    };
    assert_eq!(
        (*invocations, *memcg_id),
        (DEFAULT_LIVELOCK_THRESHOLD, MEMCG)
    );
    assert!(t.summary().livelock_observable);
}

#[test]
fn livelock_is_not_observable_without_the_invocation_hook() {
    let t = Tracker::new(TrackerConfig {
        observability: Observability {
            oom_invoke: false,
            ..Observability::ALL
        },
        ..TrackerConfig::default()
    });
    assert!(!t.summary().livelock_observable);
    assert!(t.summary().to_string().contains("not observable"));
}

#[test]
fn old_kernels_mark_with_a_thread_id_and_the_sigkill_names_the_process() {
    let mut t = tracker();
    // The classic signal tracepoint gives no tgid either: the tid stands for it.
    let mut kill = sigkill(0, 42, 0);
    if let Payload::KernelSigkill(p) = &mut kill.payload {
        p.target_tgid = 0;
    }
    let f = run(&mut t, &[kill, old_mark(0, 42), gone(2, 42, 0)], 100);
    assert_eq!(names(&f), ["killed", "dead"]);
    let Finding::Dead { victim, .. } = &f[1] else {
        panic!()
    };
    assert_eq!(victim.comm, "hog");
    assert_eq!(victim.key.tgid, 42);
}

/// The classic tracepoints name the thread the kernel marked: when the main thread had
/// exited, a tid that is not the pid. Userspace watches the process (tgid from /proc) and its
/// death names the thread too: the victim dies, it is not left stuck.
#[test]
fn classic_tracepoints_naming_a_thread_still_see_the_process_die() {
    let mut t = tracker();
    let mut kill = sigkill(0, 43, 0);
    if let Payload::KernelSigkill(p) = &mut kill.payload {
        p.target_tgid = 0;
        p.target_mm = 0;
    }
    let mut death = gone(50, 42, 0);
    if let Payload::GroupExited(g) = &mut death.payload {
        g.tid = 43;
    }
    let f = run(&mut t, &[kill, old_mark(0, 43), death], 7000);
    assert_eq!(names(&f), ["killed", "dead"], "{f:?}");
}

/// The same, when userspace filled in the process from /proc (what `watch` records): keyed by
/// the process, a free of the marked *thread* is not the process's release.
#[test]
fn a_thread_free_on_the_classic_path_is_not_the_release() {
    let mut t = tracker();
    let mut kill = sigkill(0, 43, 0);
    if let Payload::KernelSigkill(p) = &mut kill.payload {
        p.target_pid = 43;
        p.target_tgid = 42;
        p.target_mm = 0;
    }
    let mut m = old_mark(0, 43);
    if let Payload::MarkVictim(v) = &mut m.payload {
        v.tgid = 42;
        v.fields |= victim_fields::TGID_FROM_PROC;
    }
    let f = run(&mut t, &[kill, m, free(20, 43, 0)], 3000);
    assert_eq!(names(&f), ["killed"], "a thread's free is not death: {f:?}");
    assert_eq!(f[0].victim().unwrap().key.tgid, 42);
    // The marked thread's exit made the kernel track the process: its release is seen.
    let f = run(
        &mut t,
        &[
            exit(3000, 43, 42, 0, true),
            gone(3100, 42, 0),
            free(3200, 42, 0),
        ],
        5000,
    );
    assert_eq!(names(&f), ["dead", "released"], "{f:?}");
}

/// Under emulation the marked thread can be gone from /proc before userspace looks: the
/// victim stays keyed by the thread id until that thread's exit (which names its process)
/// re-keys it; a free of the thread is then not the release.
#[test]
fn a_thread_exit_names_the_process_of_a_victim_keyed_by_its_thread() {
    let mut t = tracker();
    let mut kill = sigkill(0, 43, 0);
    if let Payload::KernelSigkill(p) = &mut kill.payload {
        p.target_tgid = 0;
        p.target_mm = 0;
    }
    let f = run(
        &mut t,
        &[
            kill,
            old_mark(0, 43),
            exit(1, 43, 42, 0, true),
            free(20, 43, 0),
            free(40, 42, 0),
        ],
        100,
    );
    assert_eq!(names(&f), ["killed", "dead", "released"], "{f:?}");
    assert_eq!(f[1].victim().unwrap().key.tgid, 42);
    assert_eq!(f[1].victim().unwrap().death_seen, Some("released"));
}

/// oom_kill_process (fentry) names the process it chose; on the classic signal and mark
/// tracepoints the SIGKILL and the mark name only the thread holding its mm (its leader had
/// exited), and under emulation they can be milliseconds apart. One victim, one kill.
#[test]
fn a_chosen_process_and_its_thread_named_by_classic_tracepoints_are_one_victim() {
    let mut t = tracker();
    let mut kill = sigkill(3, 43, 0);
    if let Payload::KernelSigkill(p) = &mut kill.payload {
        p.target_tgid = 0;
        p.target_mm = 0;
    }
    let mut m = old_mark(10, 43);
    m.header.ts_ns = at(10);
    let f = run(
        &mut t,
        &[
            kill_decision(0, 42, 7),
            kill,
            m,
            exit(60, 43, 42, 7, true),
            gone(80, 42, 7),
        ],
        200,
    );
    assert_eq!(names(&f), ["killed", "dead"], "{f:?}");
    let v = f[1].victim().unwrap();
    assert_eq!((v.key.tgid, v.marked_tid), (42, Some(43)));
    assert!(v.timeline.sigkill.is_some() && v.timeline.marked.is_some());
    assert_eq!(t.summary().kills, 1);
}

/// The same, when userspace could name the SIGKILL's process from /proc but the thread was
/// gone before the mark came: the mark (by thread id) still finds the chosen process.
#[test]
fn a_classic_mark_by_thread_finds_the_process_its_sigkill_named() {
    let mut t = tracker();
    let mut kill = sigkill(3, 43, 0);
    if let Payload::KernelSigkill(p) = &mut kill.payload {
        p.target_tgid = 42;
        p.target_mm = 0;
    }
    let f = run(
        &mut t,
        &[
            kill_decision(0, 42, 7),
            kill,
            old_mark(10, 43),
            free(40, 43, 0),
            gone(80, 42, 7),
        ],
        200,
    );
    assert_eq!(names(&f), ["killed", "dead"], "{f:?}");
    assert_eq!(f[1].victim().unwrap().death_seen, Some("pidfd"));
    assert_eq!(t.summary().marked_exiting, 0);
}

/// A victim marked again through another thread keeps one index entry per id, and none once
/// it is released.
#[test]
fn a_victim_marked_twice_leaves_no_index_entries_behind() {
    let mut t = tracker();
    let by_thread = |ms, tid| {
        let mut ev = mark(ms, 42, 7);
        if let Payload::MarkVictim(v) = &mut ev.payload {
            v.pid = tid;
        }
        ev
    };
    let stream = [
        sigkill(0, 42, 7),
        by_thread(0, 43),
        by_thread(1, 44),
        gone(2, 42, 7),
    ];
    run(&mut t, &stream, 100);
    assert_eq!(
        t.by_id.get(&43),
        None,
        "the first marked thread is still indexed"
    );
    assert!(t.by_id.contains_key(&44) && t.by_id.contains_key(&42));
    run(&mut t, &[free(200, 42, 7)], 300);
    assert!(t.is_empty());
    assert!(t.by_id.is_empty(), "{:?}", t.by_id);
}

/// A kernel SIGKILL no mark claims is not an OOM kill: followed as another kernel path's,
/// its death (seen while it waited to be decided) reported after its announcement.
#[test]
fn an_unrelated_kernel_sigkill_is_not_an_oom_kill() {
    let mut t = tracker();
    let f = run(&mut t, &[sigkill(0, 99, 1), gone(1, 99, 1)], 7000);
    assert_eq!(names(&f), ["sigkill", "dead"], "{f:?}");
    assert!(f.iter().all(Finding::quiet_in_text), "{f:?}");
    let s = t.summary();
    assert_eq!((s.kills, s.other_kills, s.user_kills, s.dead), (0, 1, 0, 0));
}

#[test]
fn memory_stays_bounded() {
    let mut t = tracker();
    let mut out = Vec::new();
    for i in 0..(MAX_VICTIMS as u32 + 500) {
        let ms = u64::from(i);
        t.on_event(&sigkill(ms, 10_000 + i, 1), &mut out);
        t.on_event(&mark(ms, 10_000 + i, 1), &mut out);
        t.on_event(&gone(ms, 10_000 + i, 1), &mut out);
    }
    t.finish(at(u64::from(MAX_VICTIMS as u32 + 600)), &mut out);
    assert!(t.len() <= MAX_VICTIMS, "{}", t.len());
    assert_eq!(t.summary().kills, u64::from(MAX_VICTIMS as u32 + 500));
}

#[test]
fn display_lines_say_what_and_where() {
    let mut t = tracker();
    let f = run(
        &mut t,
        &[sigkill(0, 42, 7), mark(0, 42, 7), exit(4, 42, 42, 7, false)],
        5100,
    );
    let line = f[1].to_string();
    assert!(
        line.starts_with("STUCK pid 42 (hog): not dead 5.01 s after the kill"),
        "{line}"
    );
    assert!(
        line.contains("stage: exiting: at or past the exit tracepoint, not finished"),
        "{line}"
    );
    assert!(
        line.contains(
            "thread(s) 42 reached the exit tracepoint (the first 4.00 ms after the kill)"
        ),
        "{line}"
    );
}

/// The incident inside exit: the only thread passes sched_process_exit (group_dead) 3 ms
/// after the kill and then blocks in exit_files on a FUSE flush. That is not death.
#[test]
fn the_last_thread_entering_exit_is_not_death() {
    let mut t = tracker();
    let stream = [
        sigkill(0, 42, 7),
        mark(0, 42, 7),
        exit(3, 42, 42, 7, true),
        gone(8000, 42, 7),
        free(8030, 42, 7),
    ];
    let f = run(&mut t, &stream, 9000);
    assert_eq!(names(&f), ["killed", "stuck", "dead", "released"]);
    let Finding::Stuck {
        stage,
        where_stuck,
        victim,
        ..
    } = &f[1]
    else {
        panic!("{f:?}")
    };
    assert_eq!(*stage, Stage::Exiting);
    assert_eq!(victim.timeline.all_entered_exit, Some(at(3)));
    assert!(
        where_stuck.starts_with(
            "every thread has reached the exit tracepoint (the last 3.00 ms after the kill; thread(s) 42)"
        ),
        "{where_stuck}"
    );
    assert!(
        matches!(&f[2], Finding::Dead { was_flagged: true, kill_to_dead_ns: Some(d), .. } if *d == 8 * S)
    );
}

/// The threaded variant: the leader exits first (a zombie), the thread holding the file
/// enters exit after, and both have "exited" long before the process is dead.
#[test]
fn a_zombie_leader_with_a_thread_stuck_in_exit_is_stuck_not_dead() {
    let mut t = tracker();
    let stream = [
        sigkill(0, 42, 7),
        mark(0, 42, 7),
        exit(2, 42, 42, 7, false),
        exit(3, 43, 42, 7, true),
    ];
    let f = run(&mut t, &stream, 6000);
    assert_eq!(names(&f), ["killed", "stuck"]);
    let Finding::Stuck { victim, .. } = &f[1] else {
        panic!("{f:?}")
    };
    assert_eq!(victim.exiting_tids, [42, 43]);
    assert_eq!(victim.threads_exited, 2);
    assert_eq!(t.summary().dead, 0);
}

/// Dumps of format 1 have no GroupExited records: replayed the old way, and only then.
#[test]
fn dumps_without_death_records_take_the_last_exit_as_death() {
    let mut t = Tracker::new(TrackerConfig {
        death_at_last_exit: true,
        ..TrackerConfig::default()
    });
    let f = run(
        &mut t,
        &[sigkill(0, 42, 7), mark(0, 42, 7), exit(3, 42, 42, 7, true)],
        100,
    );
    assert_eq!(names(&f), ["killed", "dead"]);
    assert_eq!(f[1].victim().unwrap().death_seen, Some("last_thread_exit"));
}

/// A host already in trouble: the scan finds a process killed before oomtrace started; it is
/// flagged after the grace (not the timeout), is no kill of ours, and dies later.
#[test]
fn a_pre_existing_victim_is_flagged_after_the_grace_and_followed_to_death() {
    let mut t = tracker();
    let f = run(
        &mut t,
        &[found(0, 42, 7, MEMCG)],
        PRE_EXISTING_GRACE_NS / MS - 20,
    );
    assert!(f.is_empty(), "flagged before the grace: {f:?}");
    let f = run(&mut t, &[gone(3000, 42, 7)], 30_000);
    assert_eq!(names(&f), ["stuck", "dead"], "{f:?}");
    let Finding::Stuck {
        stage,
        since_kill_ns,
        victim,
        ..
    } = &f[0]
    else {
        panic!()
    };
    assert_eq!(*stage, Stage::PreExisting);
    assert!(victim.pre_existing);
    assert!(
        *since_kill_ns >= PRE_EXISTING_GRACE_NS && *since_kill_ns < PRE_EXISTING_GRACE_NS + 30 * MS
    );
    assert!(f[0].to_string().contains("(PRE-EXISTING)"), "{}", f[0]);
    assert!(matches!(
        &f[1],
        Finding::Dead {
            kill_to_dead_ns: None,
            was_flagged: true,
            ..
        }
    ));
    let s = t.summary();
    assert_eq!((s.kills, s.pre_existing, s.dead, s.stuck_now), (0, 1, 1, 0));
    assert_eq!(s.kill_to_dead.count, 0, "no kill time, no kill→dead sample");
    assert!(
        t.is_empty(),
        "its release cannot be seen: it is done with once dead"
    );
}

#[test]
fn a_pre_existing_process_that_dies_within_the_grace_is_not_flagged() {
    let mut t = tracker();
    let f = run(&mut t, &[found(0, 42, 7, MEMCG), gone(200, 42, 7)], 5000);
    assert_eq!(names(&f), ["dead"]);
}

/// The OOM domain is the memcg whose limit was hit (a pod, a slice); the victim lives in a
/// child. Invocations in the parent count, a sibling's do not.
#[test]
fn livelock_matches_the_oom_domain_not_the_victims_own_memcg() {
    const POD: u64 = 100;
    const OTHER: u64 = 200;
    let mut t = tracker();
    t.memcg_path(POD, "/kubepods/pod1");
    t.memcg_path(MEMCG, "/kubepods/pod1/ctr");
    t.memcg_path(OTHER, "/kubepods/pod10");
    let mut stream = vec![sigkill(0, 42, 7), mark(0, 42, 7)];
    for i in 0..12 {
        stream.push(invoke_in(5100 + i * 10, OTHER));
    }
    let f = run(&mut t, &stream, 6000);
    assert_eq!(
        names(&f),
        ["killed", "stuck"],
        "a sibling's OOM is not ours"
    );
    let stream: Vec<Event> = (0..12)
        .flat_map(|i| aborted_in(6100 + i * 10, POD))
        .collect();
    let f = run(&mut t, &stream, 7000);
    assert_eq!(names(&f), ["livelock"]);
    assert!(matches!(f[0], Finding::Livelock { memcg_id: POD, .. }));
}

/// A victim found stuck at start counts toward a livelock too: the kernel keeps invoking the
/// OOM killer and kills nothing while it is pending.
#[test]
fn a_pre_existing_victim_counts_toward_a_livelock() {
    let mut t = tracker();
    let mut stream = vec![found(0, 42, 7, MEMCG)];
    for i in 0..12 {
        stream.extend(aborted_in(600 + i * 10, MEMCG));
    }
    let f = run(&mut t, &stream, 1000);
    assert_eq!(names(&f), ["stuck", "livelock"]);
}

/// `--memcg` / `--pid` filter what the summary counts, not only what is shown: another
/// workload's kills on the same host (or another test's) must not inflate `kills`, which is
/// compared with the memcg's own `oom_kill` counter.
#[test]
fn the_summary_counts_only_what_the_filter_admits() {
    const OTHER: u64 = 200;
    let mut t = tracker();
    t.memcg_path(MEMCG, "/oomtrace-test/a");
    t.memcg_path(OTHER, "/elsewhere");
    t.set_filter(Filter {
        memcg: Some("/oomtrace-test".into()),
        pid: None,
    });
    let mut other = mark(10, 43, 8);
    if let Payload::MarkVictim(m) = &mut other.payload {
        m.memcg_id = OTHER;
    }
    let stream = [
        sigkill(0, 42, 7),
        mark(0, 42, 7),
        sigkill(10, 43, 8),
        other,
        gone(40, 42, 7),
    ];
    let f = run(&mut t, &stream, 6000);
    assert_eq!(names(&f), ["killed", "killed", "dead", "stuck"]);
    let shown: Vec<&str> = f.iter().filter(|f| t.admits(f)).map(|f| f.name()).collect();
    assert_eq!(shown, ["killed", "dead"]);
    let s = t.summary();
    assert_eq!(
        (s.kills, s.dead, s.stuck_now, s.flagged_total),
        (1, 1, 0, 0)
    );
    assert_eq!(s.kill_to_dead.count, 1);
    // Unfiltered, both count.
    let mut t = tracker();
    run(&mut t, &stream, 6000);
    assert_eq!((t.summary().kills, t.summary().stuck_now), (2, 1));
}

/// Hostile numbers (a crafted dump, `--timeout 1e300`): timestamps near 2^64 and timeouts of
/// u64::MAX ns neither panic nor make the tick schedule go backwards.
#[test]
fn extreme_timestamps_and_timeouts_neither_panic_nor_spin() {
    for timeout_ns in [u64::MAX, u64::MAX / 2, DEFAULT_TIMEOUT_NS] {
        let mut t = Tracker::new(TrackerConfig {
            timeout_ns,
            release_timeout_ns: timeout_ns,
            ..TrackerConfig::default()
        });
        let mut out = Vec::new();
        for ts in [u64::MAX - 5, u64::MAX, 0, u64::MAX - REORDER_NS] {
            let mut k = sigkill(0, 42, 7);
            k.header.ts_ns = ts;
            let mut m = mark(0, 42, 7);
            m.header.ts_ns = ts;
            t.on_event(&k, &mut out);
            t.on_event(&m, &mut out);
            // The replay's loop: tick at every due time up to the event's, which must end.
            let mut last = None;
            let mut steps = 0;
            while let Some(due) = t.next_tick_due().filter(|&d| d <= ts) {
                if last == Some(due) {
                    break;
                }
                last = Some(due);
                t.tick(due, &mut out);
                steps += 1;
                assert!(steps < 100, "the tick schedule does not advance");
            }
        }
        t.finish(u64::MAX, &mut out);
        let _ = t.summary();
    }
}

/// Seen in a 6.12 guest: the classic SIGKILL came 56 ms after the choice (the OOM report printed
/// in between), and the freed thread's release came before its process's. One victim, the
/// chosen process; the thread's free is not its release.
#[test]
fn a_classic_sigkill_long_after_the_choice_is_still_the_chosen_victims() {
    let mut t = tracker();
    let mut kill = sigkill(56, 43, 0);
    if let Payload::KernelSigkill(p) = &mut kill.payload {
        p.target_tgid = 0;
        p.target_mm = 0;
    }
    let f = run(
        &mut t,
        &[
            kill_decision(0, 42, 7),
            kill,
            old_mark(57, 43),
            exit(250, 43, 42, 7, true),
            free(330, 43, 0),
            gone(400, 42, 7),
        ],
        600,
    );
    assert_eq!(names(&f), ["killed", "dead"], "{f:?}");
    let v = f[1].victim().unwrap();
    assert_eq!((v.key.tgid, v.marked_tid), (42, Some(43)));
    assert_eq!(v.death_seen, Some("pidfd"));
    assert_eq!(t.summary().kills, 1);
}

/// A victim that takes longer than the histograms' range to die still counts in the latency
/// (at the range's top), instead of silently missing from `count`.
#[test]
fn latencies_beyond_a_day_count_at_the_top_of_the_range() {
    let mut t = tracker();
    let mut out = Vec::new();
    let two_days_ms = 2 * 86_400_000;
    for ev in [sigkill(0, 42, 7), mark(0, 42, 7)] {
        t.on_event(&ev, &mut out);
    }
    t.tick(at(1), &mut out);
    for ev in [exit(two_days_ms, 42, 42, 7, true), gone(two_days_ms, 42, 7)] {
        t.on_event(&ev, &mut out);
    }
    t.tick(at(two_days_ms + 1000), &mut out);
    assert!(names(&out).contains(&"dead"), "{:?}", names(&out));
    let s = t.summary();
    assert_eq!(s.kill_to_dead.count, 1);
    let day_ns = 86_400_000_000_000;
    assert!(
        s.kill_to_dead.max_ns >= day_ns * 999 / 1000
            && s.kill_to_dead.max_ns <= day_ns * 1001 / 1000,
        "{:?}",
        s.kill_to_dead
    );
}

fn notice(ms: u64, memcg: u64, invocations: u32, flags: u32) -> Event {
    Event {
        header: Header {
            cpu: USERSPACE_CPU,
            ..header(ms, 0, 0, "")
        },
        payload: Payload::MemcgOom(oomtrace_common::MemcgOom {
            memcg_id: memcg,
            invocations,
            kills: 0,
            flags,
            _pad: 0,
        }),
    }
}

fn without_invocation_hook() -> Tracker {
    Tracker::new(TrackerConfig {
        observability: Observability {
            oom_invoke: false,
            ..Observability::ALL
        },
        timeout_ns: 5 * S,
        ..TrackerConfig::default()
    })
}

/// No invocation hook (this project's CI host): the kernel's memcg notifications count the
/// invocations, and the livelock signature is observable from them.
#[test]
fn memcg_notifications_count_invocations_without_the_hook() {
    let mut t = without_invocation_hook();
    let stream = vec![
        sigkill(0, 42, 7),
        mark(0, 42, 7),
        notice(5100, MEMCG, 4, 0),
        notice(5200, MEMCG, 7, 0),
    ];
    let f = run(&mut t, &stream, 7000);
    assert_eq!(names(&f), ["killed", "stuck", "livelock"]);
    let Finding::Livelock {
        invocations,
        verdict,
        ..
    } = &f[2]
    else {
        panic!()
    };
    assert_eq!(*invocations, DEFAULT_LIVELOCK_THRESHOLD);
    assert_eq!(*verdict, "unknown", "no invocation return on this plan");
    assert!(t.summary().livelock_observable);
    assert_eq!(t.notified_invocations()[&MEMCG], 11);
}

/// With the hook, notifications are a cross-check only: the invocations are not counted twice.
#[test]
fn memcg_notifications_do_not_double_count_with_the_hook() {
    let mut t = tracker();
    let mut stream = vec![sigkill(0, 42, 7), mark(0, 42, 7)];
    for i in 0..5 {
        stream.push(invoke(5100 + i * 10));
    }
    stream.push(notice(5200, MEMCG, 5, 0));
    let f = run(&mut t, &stream, 7000);
    assert_eq!(names(&f), ["killed", "stuck"], "5 invocations, not 10");
    assert_eq!(t.notified_invocations()[&MEMCG], 5);
}

/// v1 `oom_kill_disable 1` at the limit: named once at the domain (its children inherit the
/// setting and are marked under OOM too), cleared when under_oom drops, the killer is
/// re-enabled, or the memcg is removed.
#[test]
fn oom_killer_disabled_is_named_once_and_clears() {
    use oomtrace_common::memcg_oom::{KILL_DISABLED, REMOVED, STATE_KNOWN, UNDER_OOM, V1};
    let hung = STATE_KNOWN | UNDER_OOM | KILL_DISABLED | V1;
    let mut t = without_invocation_hook();
    t.memcg_path(10, "/pod");
    t.memcg_path(11, "/pod/ctr");
    t.memcg_path(20, "/other");
    let stream = vec![
        notice(100, 10, 1, hung),
        notice(100, 11, 0, hung),
        notice(300, 10, 0, hung),
        notice(900, 10, 0, STATE_KNOWN | KILL_DISABLED | V1),
        notice(1000, 20, 1, hung),
        notice(1500, 20, 0, STATE_KNOWN | UNDER_OOM | V1),
        notice(2000, 10, 1, hung),
        notice(2500, 10, 0, REMOVED | V1),
    ];
    let f = run(&mut t, &stream, 3000);
    assert_eq!(
        names(&f),
        [
            "oom_killer_disabled",
            "oom_killer_disabled_ended",
            "oom_killer_disabled",
            "oom_killer_disabled_ended",
            "oom_killer_disabled",
            "oom_killer_disabled_ended",
        ]
    );
    let Finding::OomKillerDisabled { memcg_id, .. } = &f[0] else {
        panic!()
    };
    assert_eq!(*memcg_id, 10, "the domain, not its child");
    let Finding::OomKillerDisabledEnded { lasted_ns, how, .. } = &f[1] else {
        panic!()
    };
    assert_eq!(*lasted_ns, 800 * MS);
    assert!(how.contains("no longer under OOM"), "{how}");
    let Finding::OomKillerDisabledEnded { how, .. } = &f[3] else {
        panic!()
    };
    assert!(how.contains("re-enabled"), "{how}");
    let Finding::OomKillerDisabledEnded { how, .. } = &f[5] else {
        panic!()
    };
    assert!(how.contains("removed"), "{how}");
    assert_eq!(t.oom_disabled_now(), 0);
}

/// A true return without a kill now and then (a margin freed meanwhile: a limit raised; the
/// allocating task itself dying) in a nothing-killable domain is not the kernel waiting on the
/// reaped victim; a run of them is.
#[test]
fn a_lone_true_return_in_a_nothing_killable_domain_is_not_a_livelock() {
    let mut t = tracker();
    let mut stream = vec![invoke(0), sigkill(0, 42, 7), mark(0, 42, 7)];
    for i in 0..12 {
        stream.extend(nothing_in(5100 + i * 100, MEMCG));
    }
    stream.extend(aborted_in(6500, MEMCG));
    stream.extend(nothing_in(6600, MEMCG));
    stream.extend(aborted_in(6700, MEMCG));
    let f = run(&mut t, &stream, 7000);
    assert_eq!(names(&f), ["killed", "stuck", "nothing_killable"]);
    assert_eq!(t.summary().livelocks, 0);
    let f = run(&mut t, &aborted_in(7100, MEMCG), 7200);
    assert_eq!(names(&f), ["livelock"]);
    assert!(matches!(
        f[0],
        Finding::Livelock {
            verdict: "aborted",
            victim: VictimKey { tgid: 42, .. },
            ..
        }
    ));
}

/// The project's livelock test's shape: the victim is stuck in exit after exit_mm (its mm has
/// MMF_OOM_SKIP), a -1000 task keeps the memcg at its limit. The kernel's verdict is "nothing
/// killable", not "waiting on the victim": no livelock blames it; nothing-killable names it as
/// already reaped, and ends with the next kill.
#[test]
fn nothing_killable_with_a_reaped_victim_is_not_a_livelock() {
    let mut t = tracker();
    let mut stream = vec![invoke(0), sigkill(0, 42, 7), mark(0, 42, 7)];
    for i in 0..12 {
        stream.extend(nothing_in(5100 + i * 100, MEMCG));
    }
    let f = run(&mut t, &stream, 7000);
    assert_eq!(names(&f), ["killed", "stuck", "nothing_killable"]);
    let Finding::NothingKillable {
        memcg_id,
        invocations,
        already_reaped,
        ..
    } = &f[2]
    else {
        panic!()
    };
    assert_eq!(
        (*memcg_id, *invocations),
        (MEMCG, DEFAULT_LIVELOCK_THRESHOLD)
    );
    assert_eq!(already_reaped.len(), 1);
    assert_eq!(already_reaped[0].tgid, 42);
    assert!(
        f[2].to_string().contains("pid 42 (hog) already reaped"),
        "{}",
        f[2]
    );
    assert_eq!(t.summary().livelocks, 0);
    // A kill in the domain ends it.
    let f = run(
        &mut t,
        &[invoke(7100), sigkill(7100, 43, 8), mark(7100, 43, 8)],
        7200,
    );
    assert_eq!(names(&f), ["nothing_killable_ended", "killed"]);
}

/// Nothing killable with no victim at all (every task at -1000), ending when the invocations
/// stop; a few sporadic ones never add up.
#[test]
fn nothing_killable_ends_when_the_invocations_stop() {
    let mut t = tracker();
    let mut stream = Vec::new();
    for i in 0..5 {
        stream.extend(nothing_in(i * 20_000, MEMCG));
    }
    let f = run(&mut t, &stream, 100_000);
    assert!(f.is_empty(), "sporadic: {:?}", names(&f));
    let stream: Vec<Event> = (0..10)
        .flat_map(|i| nothing_in(200_000 + i * 100, MEMCG))
        .collect();
    let f = run(&mut t, &stream, 212_000);
    assert_eq!(names(&f), ["nothing_killable", "nothing_killable_ended"]);
    let Finding::NothingKillable { already_reaped, .. } = &f[0] else {
        panic!()
    };
    assert!(already_reaped.is_empty());
}

/// Without the verdict hook (notifications only): invocations that kill nothing with no
/// victim of the domain pending are "nothing killable" by the kernel's counters; with a victim
/// pending that is not told (the livelock's verdict is unknown instead).
#[test]
fn notifications_name_nothing_killable_only_with_no_victim_pending() {
    let mut t = without_invocation_hook();
    let f = run(
        &mut t,
        &[notice(100, MEMCG, 4, 0), notice(200, MEMCG, 8, 0)],
        300,
    );
    assert_eq!(names(&f), ["nothing_killable"]);
    let f = run(
        &mut t,
        &[
            sigkill(400, 42, 7),
            mark(400, 42, 7),
            notice(500, MEMCG, 20, 0),
        ],
        600,
    );
    assert_eq!(names(&f), ["nothing_killable_ended", "killed"]);
    assert_eq!(t.summary().livelocks, 0);
}

/// A SIGKILL a user process sent (`kill(2)`: `SI_USER`), as the kernel side records it now.
fn user_kill(ms: u64, sender: u32, sender_comm: &str, tgid: u32, start: u64) -> Event {
    Event {
        header: header(ms, sender, sender, sender_comm),
        payload: Payload::KernelSigkill(KernelSigkill {
            target_mm: mm_of(tgid),
            sender_flags: sender_state::KNOWN | sender_state::CODE,
            si_code: oomtrace_common::si_code::SI_USER,
            sender_uid: 1000,
            sender_memcg_id: 900,
            target_memcg_id: MEMCG,
            ..sample_sigkill(tgid, "listener", start)
        }),
    }
}

/// The same SIGKILL sent by another kernel path (`SEND_SIG_PRIV`) as recorded now.
fn kernel_kill_with_code(mut ev: Event) -> Event {
    if let Payload::KernelSigkill(p) = &mut ev.payload {
        p.sender_flags |= sender_state::CODE;
        p.si_code = oomtrace_common::si_code::SI_KERNEL;
    }
    ev
}

/// A user's kill -9 of a process that dies at once: followed, announced (JSON), quiet in text,
/// counted apart from OOM kills.
#[test]
fn a_user_kill_that_works_is_counted_apart_and_quiet_in_text() {
    let mut t = tracker();
    t.memcg_path(900, "/system.slice/containerd.service");
    let stream = [
        user_kill(0, 300, "containerd-shim", 42, 7),
        exit(1, 42, 42, 7, true),
        gone(2, 42, 7),
        free(20, 42, 7),
    ];
    let f = run(&mut t, &stream, 7000);
    assert_eq!(names(&f), ["sigkill", "dead", "released"], "{f:?}");
    assert!(f.iter().all(Finding::quiet_in_text), "{f:?}");
    let v = f[0].victim().unwrap();
    let s = v.sender.as_ref().unwrap();
    assert_eq!(
        (s.kind, s.tgid, s.comm.as_str(), s.uid, s.memcg_id),
        (
            SenderKind::User,
            300,
            "containerd-shim",
            Some(1000),
            Some(900)
        )
    );
    assert_eq!(
        s.memcg_path.as_deref(),
        Some("/system.slice/containerd.service")
    );
    assert_eq!(v.memcg_id, Some(MEMCG));
    let s = t.summary();
    assert_eq!(
        (s.kills, s.other_kills, s.user_kills, s.dead, s.released),
        (0, 1, 1, 0, 0),
        "{s}"
    );
    assert_eq!((s.kill_stuck_now, s.kill_flagged_total), (0, 0));
    assert!(t.is_empty());
}

/// The issue's case: a listener blocked in the kernel, SIGKILLed by a runtime shim, not dead
/// within the timeout: `kill_stuck` naming the sender, not `stuck`; the gauge drops at death.
#[test]
fn a_user_kill_that_does_not_stick_is_kill_stuck_naming_its_sender() {
    let mut t = tracker();
    let stream = [user_kill(0, 300, "containerd-shim", 42, 7)];
    let f = run(&mut t, &stream, 5200);
    assert_eq!(names(&f), ["sigkill", "kill_stuck"], "{f:?}");
    assert!(!f[1].quiet_in_text());
    let line = f[1].to_string();
    assert!(line.starts_with("KILL STUCK pid 42 (listener)"), "{line}");
    assert!(
        line.contains("SIGKILLed by user process pid 300 (containerd-shim, uid 1000)"),
        "{line}"
    );
    let (v, stage, _) = f[1].stuck().unwrap();
    assert_eq!(
        (v.sender_kind(), stage),
        (SenderKind::User, Stage::Signalled)
    );
    let s = t.summary();
    assert_eq!(
        (s.stuck_now, s.flagged_total),
        (0, 0),
        "OOM stuck untouched"
    );
    assert_eq!((s.kill_stuck_now, s.kill_flagged_total), (1, 1));
    let f = run(&mut t, &[gone(9000, 42, 7)], 9100);
    assert_eq!(names(&f), ["dead"], "{f:?}");
    assert!(!f[0].quiet_in_text(), "a flagged one's death is shown");
    assert_eq!(t.summary().kill_stuck_now, 0);
}

/// Another kernel path's SIGKILL (no mark claims it) whose target does not die: `kill_stuck`
/// with sender kind `kernel`, judged only once the pairing window has decided it.
#[test]
fn a_kernel_kill_that_is_not_an_oom_kill_and_does_not_stick_is_kill_stuck() {
    let mut t = tracker();
    let f = run(
        &mut t,
        &[sender_exiting(kernel_kill_with_code(sigkill(0, 43, 8)))],
        5200,
    );
    assert_eq!(names(&f), ["sigkill", "kill_stuck"], "{f:?}");
    let v = f[1].victim().unwrap();
    assert_eq!(v.sender_kind(), SenderKind::Kernel);
    assert!(
        f[1].to_string()
            .contains("by the kernel, from pid 500 (alloc"),
        "{}",
        f[1]
    );
    assert_eq!((t.summary().kills, t.summary().other_kills), (0, 1));
}

/// The OOM killer's SIGKILL recorded with its code is still an OOM kill (its mark claims the
/// target followed meanwhile): `killed`, counted in `kills`, stuck as `stuck`.
#[test]
fn an_oom_kill_recorded_with_its_code_is_still_an_oom_kill() {
    let mut t = tracker();
    let stream = [kernel_kill_with_code(sigkill(0, 42, 7)), mark(0, 42, 7)];
    let f = run(&mut t, &stream, 5200);
    assert_eq!(names(&f), ["killed", "stuck"], "{f:?}");
    assert_eq!(f[0].victim().unwrap().sender, None);
    let s = t.summary();
    assert_eq!((s.kills, s.other_kills, s.stuck_now), (1, 0, 1));
}

/// A user's kill of a process the OOM killer already killed keeps it the OOM killer's.
#[test]
fn a_user_kill_of_an_oom_victim_changes_nothing() {
    let mut t = tracker();
    let stream = [
        sigkill(0, 42, 7),
        mark(0, 42, 7),
        user_kill(5, 300, "kubelet", 42, 7),
    ];
    let f = run(&mut t, &stream, 5200);
    assert_eq!(names(&f), ["killed", "stuck"], "{f:?}");
    assert_eq!(t.summary().other_kills, 0);
}

/// A storm: thousands of user kills of short-lived processes (some never released, others
/// never seen to die) while one killed earlier stays stuck. The tracker stays bounded, the
/// stuck one is still flagged, and what it dropped is counted.
#[test]
fn a_kill_storm_stays_bounded_and_keeps_the_stuck_one() {
    let mut t = tracker();
    let mut out = Vec::new();
    t.on_event(&user_kill(0, 300, "containerd-shim", 7, 1), &mut out);
    let n = MAX_VICTIMS as u32 + 2000;
    for i in 0..n {
        let pid = 10_000 + i;
        let ms = 1 + u64::from(i) / 10;
        t.on_event(&user_kill(ms, 301, "kill", pid, 2), &mut out);
        // One in four dies (its zombie never reaped); the rest are never seen to die.
        if i % 4 == 0 {
            t.on_event(&gone(ms, pid, 2), &mut out);
        }
        assert!(t.len() <= MAX_VICTIMS, "{} held", t.len());
    }
    t.tick(at(6000), &mut out);
    let stuck: Vec<_> = out.iter().filter(|f| f.name() == "kill_stuck").collect();
    assert!(
        stuck.iter().any(|f| f.tgid() == 7),
        "the stuck target killed before the storm is flagged"
    );
    let s = t.summary();
    assert_eq!(s.other_kills, u64::from(n) + 1);
    assert!(s.dropped_live > 0, "{s}");
    assert!(s.to_string().contains("dropped before their death"), "{s}");
    assert!(t.pending_kills.is_empty());
}

/// A kill the reorder window delivers after its target died and was released (a dump whose
/// events arrived in reverse, or a SIGKILL to a process already past exit) is not followed as
/// a new kill: it would never die and be flagged stuck although it is dead.
#[test]
fn a_sigkill_after_its_targets_release_is_not_followed_as_a_new_kill() {
    for late in [
        kernel_kill_with_code(sigkill(60, 42, 7)),
        user_kill(60, 300, "containerd-shim", 42, 7),
    ] {
        let mut t = tracker();
        let stream = [
            user_kill(0, 300, "containerd-shim", 42, 7),
            exit(1, 42, 42, 7, true),
            gone(2, 42, 7),
            free(20, 42, 7),
            late,
        ];
        let f = run(&mut t, &stream, 20_000);
        assert_eq!(names(&f), ["sigkill", "dead", "released"], "{f:?}");
        let s = t.summary();
        assert_eq!((s.other_kills, s.kill_stuck_now), (1, 0), "{s}");
    }
}

/// The allocating task's kernel stack, as `oom:mark_victim`'s program writes it just before
/// the mark: a page fault charging a memcg (frames innermost first).
fn alloc_stack(ms: u64, ips: &[u64]) -> Event {
    let mut s: oomtrace_common::AllocStack = unsafe { std::mem::zeroed() };
    s.frames = ips.len() as u32;
    s.ips[..ips.len()].copy_from_slice(ips);
    Event {
        header: header(ms, TRIGGER, TRIGGER, "alloc"),
        payload: Payload::AllocStack(s),
    }
}

const FAULT_STACK: [(u64, &str); 4] = [
    (0xffff_ffff_8140_0040, "out_of_memory+0x40"),
    (0xffff_ffff_8150_0100, "mem_cgroup_out_of_memory+0xe0"),
    (0xffff_ffff_8123_4012, "handle_mm_fault+0x12"),
    (0xffff_ffff_8200_0026, "asm_exc_page_fault+0x26"),
];

fn named_tracker() -> Tracker {
    let mut t = tracker();
    for (addr, name) in FAULT_STACK {
        t.symbol(addr, name);
    }
    t
}

/// The `killed` finding carries the stack written with the mark, named, on a tracepoint-only
/// plan (the victim is first known at its mark) and on a full one (chosen and signalled
/// before the mark: the announcement waits for the mark that brings the stack).
#[test]
fn the_killed_finding_carries_the_allocation_stack() {
    let ips: Vec<u64> = FAULT_STACK.iter().map(|(a, _)| *a).collect();
    for full_plan in [false, true] {
        let mut t = named_tracker();
        let mut evs = Vec::new();
        if full_plan {
            evs.push(kill_decision(0, 42, 7));
        }
        evs.extend([
            sigkill(0, 42, 7),
            alloc_stack(1, &ips),
            mark(1, 42, 7),
            gone(3, 42, 7),
        ]);
        let f = run(&mut t, &evs, 50);
        assert_eq!(names(&f), ["killed", "dead"], "full plan: {full_plan}");
        let stack = f[0].victim().unwrap().alloc_stack.clone().expect("a stack");
        assert_eq!(
            stack.frames,
            FAULT_STACK
                .iter()
                .map(|(_, n)| n.to_string())
                .collect::<Vec<_>>()
        );
        assert_eq!(stack.cause(), Some("a page fault"));
        let why = f[0].victim().unwrap().why_lines();
        let (order, unknown, candidates) = if full_plan {
            (
                ", order 0, gfp GFP_KERNEL",
                "",
                "no oom_badness return came before the decision: the scan's call may be \
                 inlined on this kernel (Debian's 5.10), or oom_kill_allocating_task chose, or \
                 events were lost",
            )
        } else {
            (
                "",
                "; gfp and order unknown: the kill decision was not seen",
                "the kill decision was not seen",
            )
        };
        assert_eq!(
            why,
            [
                format!("why: a page fault by pid {TRIGGER} (alloc){order} hit the limit{unknown}"),
                format!("candidates: unavailable ({candidates})"),
                "allocation stack: handle_mm_fault+0x12 < asm_exc_page_fault+0x26".to_string(),
            ]
        );
    }
}

/// Another task's stack is not the victim's, an unnamed frame shows as its address, and a
/// mark that never comes (lost) does not keep the kill from being announced.
#[test]
fn stacks_pair_with_their_own_mark_and_a_lost_mark_does_not_hold_the_kill() {
    let mut t = tracker();
    let mut other = alloc_stack(0, &[0xffff_ffff_8100_0001]);
    other.header.pid = TRIGGER + 1;
    let f = run(
        &mut t,
        &[
            other,
            alloc_stack(0, &[0xffff_ffff_8100_0002]),
            mark(0, 42, 7),
        ],
        20,
    );
    let stack = f[0].victim().unwrap().alloc_stack.clone().unwrap();
    assert_eq!(stack.frames, ["0xffffffff81000002"]);
    assert_eq!(stack.cause(), None);

    // Lost: announced once a later event shows the ring has moved past it (an unrelated
    // process's exit here), or when the victim's own death comes first; never after it.
    let mut t = tracker();
    let f = run(
        &mut t,
        &[
            kill_decision(0, 43, 8),
            sigkill(0, 43, 8),
            exit(100, 999, 999, 1, true),
        ],
        300,
    );
    assert_eq!(names(&f), ["killed"]);
    assert!(f[0].victim().unwrap().alloc_stack.is_none());
    let mut t = tracker();
    let f = run(
        &mut t,
        &[kill_decision(0, 43, 8), sigkill(0, 43, 8), gone(2, 43, 8)],
        300,
    );
    assert_eq!(names(&f), ["killed", "dead"]);
    // Silence: announced after MARK_GIVE_UP_NS all the same.
    let mut t = tracker();
    let f = run(&mut t, &[kill_decision(0, 43, 8), sigkill(0, 43, 8)], 200);
    assert!(f.is_empty(), "{f:?}");
    t.tick(at(0) + MARK_GIVE_UP_NS + REORDER_NS + 1, &mut Vec::new());
    let mut out = Vec::new();
    t.finish(at(0) + MARK_GIVE_UP_NS + REORDER_NS + 2, &mut out);
    assert_eq!(t.summary().kills, 1);
}

fn memcg_state(ms_before_ns: u64, id: u64, usage: u64, failcnt: u64) -> Event {
    let mut s: oomtrace_common::MemcgState = unsafe { std::mem::zeroed() };
    s.memcg_id = id;
    s.fields = oomtrace_common::memcg_state::V2
        | oomtrace_common::memcg_state::USAGE
        | oomtrace_common::memcg_state::FAILCNT;
    s.usage_bytes = usage;
    s.limit_bytes = 64 << 20;
    s.failcnt = failcnt;
    let mut h = header(0, 0, 0, "");
    h.ts_ns -= ms_before_ns;
    h.cpu = USERSPACE_CPU;
    Event {
        header: h,
        payload: Payload::MemcgState(s),
    }
}

/// The killed finding carries the OOM domain (from the kill decision) and the state of both
/// memcgs as read at the kill; a state read at an earlier kill (seconds before) is not this
/// kill's.
#[test]
fn the_killed_finding_carries_the_domain_and_the_memcgs_at_the_kill() {
    const OWN: u64 = 5000;
    let mut t = tracker();
    let mut kd = kill_decision(0, 42, 7);
    if let Payload::OomKill(p) = &mut kd.payload {
        p.chosen_memcg_id = OWN;
    }
    let mut mk = mark(0, 42, 7);
    if let Payload::MarkVictim(p) = &mut mk.payload {
        p.memcg_id = OWN;
    }
    let f = run(
        &mut t,
        &[
            memcg_state(1, MEMCG, 64 << 20, 12),
            memcg_state(1, OWN, 60 << 20, 0),
            kd,
            sigkill(0, 42, 7),
            mk,
        ],
        20,
    );
    let v = f[0].victim().unwrap();
    assert_eq!(v.domain_id, Some(MEMCG));
    let d = v.domain_at_kill.as_ref().expect("domain state");
    assert_eq!(
        (d.memcg_id, d.usage_bytes, d.failcnt),
        (MEMCG, Some(64 << 20), Some(12))
    );
    let o = v.memcg_at_kill.as_ref().expect("own state");
    assert_eq!((o.memcg_id, o.limit_bytes), (OWN, Some(64 << 20)));
    let why = v.why_lines();
    assert!(
        why == [
            "OOM domain at the kill: limit 64.0 MiB, limit hit 12 times; just after: 64.0 MiB \
             in use",
            "its own memcg at the kill: limit 64.0 MiB, limit hit 0 times; just after: 60.0 MiB \
             in use",
            "candidates: unavailable (no oom_badness return came before the decision: the \
             scan's call may be inlined on this kernel (Debian's 5.10), or \
             oom_kill_allocating_task chose, or events were lost)",
        ],
        "{why:?}"
    );

    let mut t = tracker();
    let f = run(
        &mut t,
        &[
            memcg_state(2 * S, MEMCG, 1, 1),
            sigkill(0, 42, 7),
            mark(0, 42, 7),
        ],
        20,
    );
    assert!(f[0].victim().unwrap().memcg_at_kill.is_none());
}

/// The stage words per kernel: `sched_process_exit` comes after `exit_mm` before 6.16 and
/// before it since; on every kernel after the coredump wait, the ptrace exit stop, the
/// io_uring cancel and `exit_signals`. Fixtures: the kernels of the matrix and the host.
#[test]
fn where_stuck_says_what_the_exit_tracepoint_means_on_each_kernel() {
    let mut v = Victim::new(
        VictimKey {
            tgid: 42,
            start_ns: 7,
        },
        "hog".into(),
    );
    v.timeline.sigkill = Some(at(0));
    for (release, exit_mm_before) in [
        ("5.10.0-35-amd64", Some(true)),
        ("6.1.0-40-amd64", Some(true)),
        ("6.12.118+deb12-amd64", Some(true)),
        ("6.16.1", Some(false)),
        ("6.18.0-firecracker", Some(false)),
        ("7.3.0-1-amd64", Some(false)),
        ("garbage", None),
    ] {
        let kernel = kernel_version(release);
        let none = v.where_stuck(kernel);
        assert!(
            none.starts_with("no thread has reached the exit tracepoint (sched_process_exit)"),
            "{release}: {none}"
        );
        for step in ["coredump", "ptrace exit stop", "io_uring", "exit_signals"] {
            assert!(none.contains(step), "{release}: {none}");
        }
        let mut all = v.clone();
        all.timeline.first_exit = Some(at(1));
        all.timeline.all_entered_exit = Some(at(1));
        let all = all.where_stuck(kernel);
        match exit_mm_before {
            // Before 6.16 the mm is dropped before the tracepoint.
            Some(true) => {
                assert!(none.contains("or in exit_mm"), "{release}: {none}");
                assert!(all.contains("its mm already dropped"), "{release}: {all}");
            }
            Some(false) => {
                assert!(!none.contains("exit_mm"), "{release}: {none}");
                assert!(all.contains("dropping its mm, closing"), "{release}: {all}");
            }
            None => {
                assert!(none.contains("before Linux 6.16, in exit_mm"), "{none}");
                assert!(all.contains("since Linux 6.16, dropping its mm"), "{all}");
            }
        }
    }
    assert_eq!(kernel_version("6.12.118+deb12-amd64"), Some((6, 12)));
    assert!(!Stage::Marked.to_string().contains("not exiting"));
}

/// A 5.10 guest's kill of a hog that allocated itself (trigger = victim): the invocation,
/// the decision, the SIGKILL, then the stack and a classic mark (a thread id; userspace fills
/// the process in from /proc). The killed finding waits for the mark and carries the stack.
#[test]
fn a_self_triggered_kill_on_a_classic_mark_carries_its_stack() {
    let mut t = named_tracker();
    let ips: Vec<u64> = FAULT_STACK.iter().map(|(a, _)| *a).collect();
    let hog = |mut e: Event| {
        e.header.pid = 42;
        e.header.tgid = 42;
        e
    };
    let mut m = old_mark(2, 42);
    if let Payload::MarkVictim(p) = &mut m.payload {
        p.tgid = 42;
        p.fields = victim_fields::TGID_FROM_PROC;
    }
    let f = run(
        &mut t,
        &[
            hog(invoke(0)),
            hog(kill_decision(0, 42, 7)),
            hog(sigkill(1, 42, 7)),
            hog(alloc_stack(2, &ips)),
            hog(m),
            exit(3, 42, 42, 7, true),
            gone(4, 42, 7),
        ],
        50,
    );
    assert_eq!(names(&f), ["killed", "dead"]);
    assert!(f[0].victim().unwrap().alloc_stack.is_some(), "{f:?}");
}

/// Under emulation userspace reads the ring tens of ms late: the victim's death, seen through
/// its pidfd (stamped when seen), can reach the tracker before the mark still in the ring. The
/// kill waits for the mark all the same, and is announced before the death.
#[test]
fn a_death_seen_before_the_ring_is_read_does_not_rob_the_kill_of_its_mark() {
    let mut t = named_tracker();
    let ips: Vec<u64> = FAULT_STACK.iter().map(|(a, _)| *a).collect();
    let mut out = Vec::new();
    t.on_event(&kill_decision(0, 42, 7), &mut out);
    t.on_event(&sigkill(1, 42, 7), &mut out);
    t.on_event(&gone(100, 42, 7), &mut out);
    t.tick(at(100), &mut out);
    assert!(out.is_empty(), "{out:?}");
    t.on_event(&alloc_stack(2, &ips), &mut out);
    t.on_event(&mark(2, 42, 7), &mut out);
    t.tick(at(200), &mut out);
    assert_eq!(names(&out), ["killed", "dead"]);
    assert!(out[0].victim().unwrap().alloc_stack.is_some());
}

/// The 5.10 guest's order of arrival: the victim's pidfd fired twice (two observations,
/// stamped when seen) before the ring's SIGKILL and mark were read. No observation releases
/// another ahead of the ring: the mark is applied before the death.
#[test]
fn observations_ahead_of_the_ring_wait_for_it() {
    let mut t = named_tracker();
    let ips: Vec<u64> = FAULT_STACK.iter().map(|(a, _)| *a).collect();
    let mut out = Vec::new();
    t.on_event(&kill_decision(0, 42, 7), &mut out);
    t.on_event(&gone(100, 42, 7), &mut out);
    t.on_event(&sigkill(1, 42, 7), &mut out);
    t.on_event(&gone(112, 42, 7), &mut out);
    assert!(out.is_empty(), "{out:?}");
    t.on_event(&alloc_stack(2, &ips), &mut out);
    t.on_event(&mark(2, 42, 7), &mut out);
    t.tick(at(200), &mut out);
    assert_eq!(names(&out), ["killed", "dead"]);
    assert!(out[0].victim().unwrap().alloc_stack.is_some());
}

fn candidate(ms: u64, by: u32, tgid: u32, comm: &str, points: i64, adj: i32) -> Event {
    let mut c: oomtrace_common::OomCandidate = unsafe { std::mem::zeroed() };
    c.pid = tgid;
    c.tgid = tgid;
    c.comm = comm_bytes(comm);
    c.points = points;
    c.totalpages = 16384;
    c.oom_score_adj = adj;
    c.anon_rss_kb = u64::try_from(points.max(0)).unwrap() * 4;
    c.swap_kb = 512;
    c.fields = oomtrace_common::candidate_fields::MEMORY
        | oomtrace_common::candidate_fields::OOM_SCORE_ADJ;
    Event {
        header: header(ms, by, by, "alloc"),
        payload: Payload::OomCandidate(c),
    }
}

/// The kill carries the scan its allocating thread made before deciding: the top eligible
/// tasks, the runner-up and the gap, the victim's swap and the trigger's oom_score_adj. An
/// ineligible task (adj -1000) counts as scored, not eligible; another thread's concurrent
/// scan is not mixed in; a plan without the hook says so.
#[test]
fn the_killed_finding_carries_the_candidates_and_the_runner_up() {
    let mut t = tracker();
    let other = TRIGGER + 1;
    let evs = [
        invoke_in(0, MEMCG),
        candidate(0, TRIGGER, TRIGGER, "alloc", 300, 0),
        candidate(0, TRIGGER, 42, "hog", 16000, 0),
        candidate(0, other, 77, "elsewhere", 99999, 0),
        candidate(0, TRIGGER, 43, "small", 4000, 500),
        candidate(
            0,
            TRIGGER,
            44,
            "shielded",
            oomtrace_common::BADNESS_INELIGIBLE,
            -1000,
        ),
        kill_decision(0, 42, 7),
        sigkill(0, 42, 7),
        mark(1, 42, 7),
    ];
    let f = run(&mut t, &evs, 20);
    assert_eq!(names(&f), ["killed"]);
    let v = f[0].victim().unwrap();
    let c = v.candidates.as_ref().expect("candidates");
    assert_eq!((c.scored, c.eligible, c.cut), (4, 3, false));
    let top: Vec<u32> = c.top.iter().map(|c| c.tgid).collect();
    assert_eq!(top, [42, 43, TRIGGER]);
    let r = c.runner_up.as_ref().unwrap();
    assert_eq!(
        (r.tgid, r.points, r.oom_score_adj),
        (43, Some(4000), Some(500))
    );
    assert_eq!(c.runner_up_gap, Some(12000));
    assert_eq!(v.swap_kb, Some(512));
    assert_eq!(v.trigger_oom_score_adj, Some(0));
    assert_eq!(v.candidates_unavailable, None);
    let why = v.why_lines();
    assert!(
        why.contains(
            &"candidates: 4 scored, 3 eligible; chose 42 (hog) 16000 points; runner-up 43 \
              (small) 4000 points (adj 500), 12000 behind (25% of its score)"
                .to_string()
        ),
        "{why:?}"
    );
    assert!(why.iter().any(|l| l.contains("its swap 512 kB")), "{why:?}");

    let mut t = Tracker::new(TrackerConfig {
        observability: Observability {
            oom_candidates: false,
            ..Observability::ALL
        },
        ..TrackerConfig::default()
    });
    let f = run(&mut t, &evs, 20);
    let v = f[0].victim().unwrap();
    assert_eq!(v.candidates, None);
    assert_eq!(
        v.candidates_unavailable,
        Some("oom_badness is not hooked on this plan: it needs fexit")
    );
}

/// The "why" line says what the stack shows and nothing it does not: a limit write is not an
/// allocation hitting the limit, sysrq-f allocates nothing, and a stack no frame explains is
/// of unknown kind; without the kill decision gfp and order are unknown, not left out.
#[test]
fn the_why_line_names_only_what_the_stack_and_the_decision_say() {
    let stack = |frames: &[&str]| AllocStackInfo {
        frames: frames.iter().map(|f| f.to_string()).collect(),
        error: None,
    };
    let mut v = Victim::new(
        VictimKey {
            tgid: 42,
            start_ns: 7,
        },
        "hog".into(),
    );
    v.trigger = Some(Task {
        pid: 9,
        tgid: 9,
        comm: "sh".into(),
    });
    v.alloc_stack = Some(stack(&[
        "out_of_memory+0x1",
        "mem_cgroup_out_of_memory+0x2",
        "memory_max_write+0x3",
        "kernfs_fop_write_iter+0x4",
    ]));
    assert_eq!(
        v.why_lines()[0],
        "why: a write lowering the memcg's limit by pid 9 (sh): its usage was above the new \
         limit; gfp and order unknown: the kill decision was not seen"
    );
    v.decision = Some(KillDecision {
        chosen_points: 1,
        totalpages: 1,
        constraint: 3,
        order: 0,
        gfp_mask: 0xcc0,
        gfp: "GFP_KERNEL".into(),
        message: String::new(),
    });
    assert_eq!(
        v.why_lines()[0],
        "why: a write lowering the memcg's limit by pid 9 (sh), order 0, gfp GFP_KERNEL: its \
         usage was above the new limit"
    );
    v.alloc_stack = Some(stack(&["out_of_memory+0x1", "kmalloc_node+0x9"]));
    assert_eq!(
        v.why_lines()[0],
        "why: an allocation by pid 9 (sh), order 0, gfp GFP_KERNEL hit the limit; of what kind \
         is unknown: no frame of its stack tells"
    );
    v.alloc_stack = Some(stack(&["out_of_memory+0x1", "moom_callback+0x2"]));
    v.decision.as_mut().unwrap().order = -1;
    assert_eq!(
        v.why_lines()[0],
        "why: sysrq-f (a manual OOM kill) by pid 9 (sh)"
    );
}

/// The kills of one `memory.oom.group` invocation: the chosen victim, then every other task
/// of the group memcg, each SIGKILLed and marked by the allocating task.
fn group_kill(ms: u64, victims: &[u32]) -> Vec<Event> {
    let mut evs = vec![invoke(ms), kill_decision(ms, victims[0], 7)];
    for &v in victims {
        evs.push(sigkill(ms, v, 7));
        evs.push(mark(ms, v, 7));
    }
    evs.push(invoke_done(ms + 1, true));
    evs
}

fn group_kills(f: &[Finding]) -> Vec<&Incident> {
    f.iter()
        .filter_map(|f| match f {
            Finding::GroupKill { incident } => Some(incident.as_ref()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_group_kill_is_one_incident_with_its_victims_and_group_memcg() {
    let mut t = tracker();
    t.memcg_path(MEMCG, "/pod/ctr");
    let mut evs = group_kill(0, &[42, 43, 44]);
    evs.extend([gone(3, 42, 7), gone(4, 44, 7), gone(9, 43, 7)]);
    evs.extend([free(20, 42, 7), free(20, 43, 7), free(20, 44, 7)]);
    let f = run(&mut t, &evs, 8000);
    let n = |k| names(&f).iter().filter(|n| **n == k).count();
    assert_eq!(
        (n("killed"), n("dead"), n("group_kill")),
        (3, 3, 1),
        "{f:?}"
    );
    // The incident is reported once the last victim is dead, not at the timeout.
    let pos = names(&f).iter().position(|n| *n == "group_kill").unwrap();
    assert_eq!(names(&f)[pos - 1], "dead");
    let g = group_kills(&f)[0];
    assert_eq!(g.id, 1);
    assert_eq!(g.grouped_by, "invocation");
    assert_eq!(g.group_memcg.as_deref(), Some("/pod/ctr"));
    assert_eq!(g.domain_id, Some(MEMCG));
    assert_eq!(g.trigger.tgid, TRIGGER);
    let tgids: Vec<u32> = g.victims.iter().map(|m| m.tgid).collect();
    assert_eq!(tgids, [42, 43, 44]);
    assert!(g.all_dead());
    assert_eq!(g.victims[1].dead_after_ns, Some(9 * MS));
    // The victims' findings name the incident from its second victim on.
    let killed: Vec<Option<u64>> = f
        .iter()
        .filter(|f| f.name() == "killed")
        .map(|f| f.victim().unwrap().incident)
        .collect();
    assert_eq!(killed, [None, Some(1), Some(1)]);
    let dead_42 = f
        .iter()
        .find(|f| f.name() == "dead" && f.tgid() == 42)
        .unwrap();
    assert_eq!(dead_42.victim().unwrap().incident, Some(1));
    let text = f[pos].to_string();
    assert!(
        text.starts_with("GROUP KILL #1: one OOM invocation (allocation by pid 500 (alloc)) killed 3 processes in /pod/ctr (memory.oom.group); all dead, the last 9.00 ms"),
        "{text}"
    );
    // The kernel's counters: oom_kill counts each victim, oom_group_kill the invocation.
    let s = t.summary();
    assert_eq!((s.kills, s.group_kills, s.dead), (3, 1, 3));
    // The chosen victim (42) is not the allocating task (500): its second kill by the group
    // scan is not certain, and not counted for reconcile.
    assert_eq!(t.kills_by_memcg().get(&MEMCG), Some(&3));
    let json = serde_json::to_value(&f[pos]).unwrap();
    assert_eq!(json["finding"], "group_kill");
    assert_eq!(json["incident"]["victims"][2]["tgid"], 44);
    assert_eq!(json["incident"]["group_memcg"], "/pod/ctr");
}

#[test]
fn a_group_kill_with_a_stuck_victim_says_which_at_the_timeout() {
    let mut t = tracker();
    let mut evs = group_kill(0, &[42, 43]);
    evs.push(gone(3, 42, 7));
    let f = run(&mut t, &evs, 7000);
    let g = group_kills(&f);
    assert_eq!(g.len(), 1, "{f:?}");
    let not_dead: Vec<u32> = g[0].not_dead().map(|m| m.tgid).collect();
    assert_eq!(not_dead, [43]);
    // Its memcg's path was never told: no group memcg is guessed.
    assert_eq!(g[0].group_memcg, None);
    let text = f
        .iter()
        .find(|f| f.name() == "group_kill")
        .unwrap()
        .to_string();
    assert!(text.ends_with("; 1 dead, not dead: pid 43 (hog)"), "{text}");
    assert!(names(&f).contains(&"stuck"));
    assert_eq!(t.summary().group_kills, 1);
}

#[test]
fn consecutive_invocations_are_not_a_group_kill() {
    let mut t = tracker();
    let mut evs = group_kill(0, &[42]);
    evs.push(gone(2, 42, 7));
    // The allocating task retries at once and the next invocation kills another process.
    evs.extend(group_kill(3, &[43]));
    evs.push(gone(5, 43, 7));
    // A task marked while already exiting (no decision, no SIGKILL) joins nothing.
    evs.extend([invoke(6), mark(6, 44, 7)]);
    let f = run(&mut t, &evs, 8000);
    assert!(group_kills(&f).is_empty(), "{f:?}");
    assert_eq!((t.summary().kills, t.summary().group_kills), (2, 0));
}

#[test]
fn without_the_decision_hook_a_group_kill_is_grouped_by_timing() {
    let no_decision = || {
        Tracker::new(TrackerConfig {
            observability: Observability {
                oom_kill: false,
                oom_invoke: false,
                oom_invoke_done: false,
                ..Observability::ALL
            },
            ..TrackerConfig::default()
        })
    };
    let mut t = no_decision();
    t.memcg_path(MEMCG, "/job");
    let evs = [
        sigkill(0, 42, 7),
        mark(0, 42, 7),
        sigkill(1, 43, 7),
        mark(1, 43, 7),
        gone(3, 42, 7),
        gone(4, 43, 7),
    ];
    let f = run(&mut t, &evs, 8000);
    let g = group_kills(&f);
    assert_eq!(g.len(), 1, "{f:?}");
    assert_eq!(g[0].grouped_by, "timing");
    assert!(
        f.iter()
            .any(|f| f.to_string().contains("grouped by timing"))
    );
    // Two kills by the same task, the first victim dead before the second: two invocations.
    let mut t = no_decision();
    let evs = [
        sigkill(0, 42, 7),
        mark(0, 42, 7),
        gone(2, 42, 7),
        sigkill(3, 43, 7),
        mark(3, 43, 7),
        gone(4, 43, 7),
    ];
    let f = run(&mut t, &evs, 8000);
    assert!(group_kills(&f).is_empty(), "{f:?}");
    // Or 100 ms apart.
    let mut t = no_decision();
    let evs = [
        sigkill(0, 42, 7),
        mark(0, 42, 7),
        sigkill(100, 43, 7),
        mark(100, 43, 7),
    ];
    assert!(group_kills(&run(&mut t, &evs, 8000)).is_empty());
}

#[test]
fn the_group_memcg_is_the_victims_deepest_common_memcg() {
    use super::incident::common_ancestor;
    assert_eq!(
        common_ancestor(["/a/b/c", "/a/b/d", "/a/b"]).as_deref(),
        Some("/a/b")
    );
    assert_eq!(common_ancestor(["/a/bc", "/a/b"]).as_deref(), Some("/a"));
    assert_eq!(common_ancestor(["/x", "/y"]).as_deref(), Some("/"));
    assert_eq!(common_ancestor(Vec::<&str>::new()), None);
}

/// Before 6.8 the mark names a thread id only, no mm: a group kill's next SIGKILL is told
/// from a co-victim's by the mm the signal hook read for the previous member.
#[test]
fn a_group_kill_with_classic_marks_is_not_taken_for_co_victims() {
    let mut t = tracker();
    let evs = [
        invoke(0),
        kill_decision(0, 42, 7),
        sigkill(0, 42, 7),
        old_mark(0, 42),
        sigkill(1, 43, 8),
        old_mark(1, 43),
        sigkill(2, 44, 9),
        old_mark(2, 44),
        invoke_done(3, true),
        gone(4, 42, 7),
        gone(5, 43, 8),
        gone(6, 44, 9),
    ];
    let f = run(&mut t, &evs, 8000);
    let killed: Vec<(u32, Option<u64>, Option<VictimKey>)> = f
        .iter()
        .filter(|f| f.name() == "killed")
        .map(|f| {
            let v = f.victim().unwrap();
            (v.key.tgid, v.incident, v.killed_with)
        })
        .collect();
    assert_eq!(
        killed,
        [(42, None, None), (43, Some(1), None), (44, Some(1), None)],
        "{f:?}"
    );
    assert_eq!(group_kills(&f).len(), 1);
    // A real co-victim (sharing the mm) after a classic mark is still one.
    let mut t = tracker();
    let evs = [
        invoke(0),
        kill_decision(0, 42, 7),
        sigkill(0, 42, 7),
        old_mark(0, 42),
        sharing(sigkill(1, 77, 9), 42),
        invoke_done(3, true),
    ];
    let f = run(&mut t, &evs, 100);
    let co = f.iter().find(|f| f.tgid() == 77).unwrap();
    assert_eq!(co.victim().unwrap().killed_with.map(|k| k.tgid), Some(42));
    assert!(group_kills(&f).is_empty());
}

/// What the reaper's silence says in `where_stuck`: a last skip not retried (the memory
/// already torn down), or no wake-up at all (torn down before its timer, or an mm shared with
/// init that the kernel never queues); a lock kept busy through ten skips says neither.
#[test]
fn the_reapers_silence_is_told_in_where_stuck() {
    let stuck_text = |evs: &[Event]| -> String {
        let mut t = tracker();
        let f = run(&mut t, evs, 6000);
        let Some(Finding::Stuck { where_stuck, .. }) = f.iter().find(|f| f.name() == "stuck")
        else {
            panic!("{f:?}")
        };
        where_stuck.clone()
    };
    let base = [sigkill(0, 42, 7), mark(0, 42, 7)];
    let one_skip: Vec<Event> = base
        .iter()
        .copied()
        .chain([
            reaper(2000, 42, Payload::WakeReaper),
            reaper(2001, 42, Payload::SkipReaping),
        ])
        .collect();
    let w = stuck_text(&one_skip);
    assert!(w.contains("already torn down (MMF_OOM_SKIP"), "{w}");
    let never = stuck_text(&base);
    assert!(never.contains("never woken"), "{never}");
    assert!(never.contains("has mm pinned by"), "{never}");
    let busy: Vec<Event> = base
        .iter()
        .copied()
        .chain([reaper(2000, 42, Payload::WakeReaper)])
        .chain((0..10).map(|i| reaper(2001 + i * 100, 42, Payload::SkipReaping)))
        .collect();
    let w = stuck_text(&busy);
    assert!(
        !w.contains("torn down") && !w.contains("never woken"),
        "{w}"
    );
    // Retried skips with a start after them: no note either.
    let retried: Vec<Event> = base
        .iter()
        .copied()
        .chain([
            reaper(2000, 42, Payload::WakeReaper),
            reaper(2001, 42, Payload::SkipReaping),
            reaper(2101, 42, Payload::StartReaping),
            reaper(2102, 42, Payload::FinishReaping),
        ])
        .collect();
    let w = stuck_text(&retried);
    assert!(
        !w.contains("torn down") && !w.contains("never woken"),
        "{w}"
    );
}

/// When the chosen victim is the allocating task itself, the group scan kills it again (it
/// still has its mm) and the kernel's oom_kill counts it twice: the count kept for reconcile
/// says so, while `kills` stays one per victim.
#[test]
fn a_group_kill_of_the_allocating_task_counts_as_the_kernel_does() {
    let mut t = tracker();
    let from_trigger = |mut ev: Event| {
        ev.header.pid = 42;
        ev.header.tgid = 42;
        ev
    };
    let mut evs: Vec<Event> = group_kill(0, &[42, 43, 44])
        .into_iter()
        .map(from_trigger)
        .collect();
    evs.extend([gone(3, 42, 7), gone(4, 43, 7), gone(5, 44, 7)]);
    let f = run(&mut t, &evs, 8000);
    assert_eq!(group_kills(&f).len(), 1, "{f:?}");
    assert_eq!(t.summary().kills, 3);
    assert_eq!(t.kills_by_memcg().get(&MEMCG), Some(&4));
}

/// A node's churn for ten minutes: a pod memcg and its container's made, OOM-killed and removed
/// ten times a second. What the tracker keeps per memcg (paths, states read at kills, kill
/// counts) stays a minute's worth: a memcg is forgotten a minute after its removal, not before
/// (a late finding still names its path), and not while a victim it holds is followed. Kills in
/// forgotten memcgs stay counted at the nearest ancestor not forgotten (v2 counts them there).
#[test]
fn removed_memcgs_are_forgotten_a_minute_after_their_removal() {
    let mut t = tracker();
    let mut out = Vec::new();
    let pods = 6000u64;
    let ids = |i: u64| (1_000_000 + 2 * i, 1_000_001 + 2 * i);
    let mut peak = 0;
    // A victim that never dies, in a container removed (its task gone from it, say, while the
    // victim is a zombie): its memcg stays known while it is followed.
    t.memcg_path(77, "/kubepods/stuck/ctr");
    let mut stuck_mark = mark(0, 9, 1);
    if let Payload::MarkVictim(p) = &mut stuck_mark.payload {
        p.memcg_id = 77;
    }
    t.on_event(&sigkill(0, 9, 1), &mut out);
    t.on_event(&stuck_mark, &mut out);
    t.memcg_removed(77, Some("/kubepods/stuck/ctr"), at(1));
    for i in 0..pods {
        let ms = 100 + i * 100;
        let (pod, ctr) = ids(i);
        let tgid = 100_000 + i as u32;
        t.memcg_path(ctr, &format!("/kubepods/pod{i}/ctr"));
        let mut state = memcg_state(0, ctr, 1 << 20, 1);
        state.header.ts_ns = at(ms) - 1;
        let mut mk = mark(ms, tgid, 1);
        if let Payload::MarkVictim(p) = &mut mk.payload {
            p.memcg_id = ctr;
        }
        for ev in [state, sigkill(ms, tgid, 1), mk, gone(ms + 1, tgid, 1)] {
            t.on_event(&ev, &mut out);
        }
        t.tick(at(ms + 20), &mut out);
        t.on_event(&free(ms + 30, tgid, 1), &mut out);
        t.tick(at(ms + 50), &mut out);
        // The sweep finds the container removed and the pod (never named by an event), in
        // either order.
        let (ctr_path, pod_path) = (format!("/kubepods/pod{i}/ctr"), format!("/kubepods/pod{i}"));
        if i % 2 == 0 {
            t.memcg_removed(ctr, Some(&ctr_path), at(ms + 60));
            t.memcg_removed(pod, Some(&pod_path), at(ms + 60));
        } else {
            t.memcg_removed(pod, Some(&pod_path), at(ms + 60));
            t.memcg_removed(ctr, Some(&ctr_path), at(ms + 60));
        }
        peak = peak.max(t.memcg_entries());
        // Removed 59 s ago: still named.
        if i >= 590 {
            let (_, recent) = ids(i - 590);
            assert!(t.memcg_paths.contains_key(&recent), "pod {i}");
        }
        // Removed 61 s ago: forgotten.
        if i >= 610 {
            let (_, old) = ids(i - 610);
            assert!(!t.memcg_paths.contains_key(&old), "pod {i}");
            assert!(!t.memcg_states.contains_key(&old));
            assert!(!t.kills_by_memcg.contains_key(&old));
        }
    }
    out.retain(|f| f.name() == "killed");
    assert_eq!(out.len() as u64, pods + 1);
    // A minute of removals: per pod a path, a state and a kill count and two removals
    // queued, and the kills of containers of pods that wait for them (a pod found removed
    // before its container is forgotten after it, a minute later).
    assert!(peak <= 6 * 620, "{peak} entries held per memcg");
    assert!(
        t.memcg_paths.contains_key(&77),
        "its victim is still followed"
    );
    // Two minutes on, every pod's are gone; each kill is counted once, at the nearest
    // ancestor not forgotten.
    t.tick(at(100 + pods * 100 + 130_000), &mut out);
    t.tick(at(100 + pods * 100 + 260_000), &mut out);
    let below = t.kills_below();
    let counted: u64 = t.kills_by_memcg.values().sum();
    assert_eq!(below.len(), 1, "{below:?}");
    assert_eq!(below["/kubepods"] + counted, pods + 1);
    assert!(t.memcg_entries() <= 8, "{}", t.memcg_entries());
}

/// A memcg is in an OOM domain when it is the domain or below it by path: the same answers as
/// the prefix `format!("{domain}/")` gave, for the root, trailing slashes, unknown paths and
/// names that only share a prefix.
#[test]
fn in_domain_is_the_memcg_or_one_below_it_by_path() {
    let paths = [
        (1, "/"),
        (2, "/kubepods"),
        (3, "/kubepods/pod1"),
        (4, "/kubepods/pod10"),
        (5, "/kubepods/pod1/ctr"),
        (6, "/kubepods/"),
        (7, "/kubepods-x"),
    ];
    let mut t = tracker();
    for (id, p) in paths {
        t.memcg_path(id, p);
    }
    let old = |domain: u64, memcg: Option<u64>| {
        let path = |id| paths.iter().find(|(i, _)| *i == id).map(|(_, p)| *p);
        domain == 0
            || memcg.is_some_and(|m| {
                m == domain
                    || match (path(domain), path(m)) {
                        (Some(d), Some(m)) => {
                            d == "/" || m.starts_with(&format!("{}/", d.trim_end_matches('/')))
                        }
                        _ => false,
                    }
            })
    };
    for domain in 0..=8 {
        for memcg in (0..=8).map(Some).chain([None]) {
            assert_eq!(
                t.in_domain(domain, memcg),
                old(domain, memcg),
                "domain {domain}, memcg {memcg:?}"
            );
        }
    }
    assert!(t.in_domain(3, Some(5)) && !t.in_domain(3, Some(4)) && t.in_domain(6, Some(5)));
}

/// Whether every object below the top level of `json` has its keys in sorted order: what
/// lets `render/json_sorted.rs` write a finding in place (the top level is a finding's
/// fields and those the printer adds, always sorted there).
fn nested_keys_sorted(json: &str) -> Result<(), String> {
    // Per open container: is it an object, its last key, whether a key comes next.
    let mut stack: Vec<(bool, String, bool)> = Vec::new();
    let b = json.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' => stack.push((true, String::new(), true)),
            b'[' => stack.push((false, String::new(), false)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => {
                if let Some(top) = stack.last_mut() {
                    top.2 = top.0;
                }
            }
            b'"' => {
                let start = i + 1;
                i += 1;
                while b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                let depth = stack.len();
                if let Some(top) = stack.last_mut()
                    && top.2
                {
                    let key = &json[start..i];
                    if depth > 1 && top.1.as_str() >= key {
                        return Err(format!("{key:?} after {:?} at depth {depth}", top.1));
                    }
                    top.1 = key.to_string();
                    top.2 = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The structs a finding serializes declare their fields in key order (see `Victim`): a
/// killed finding with everything a kill can carry, its death and its release.
#[test]
fn finding_keys_in_order() {
    const OWN: u64 = 5000;
    let mut t = named_tracker();
    let mut kd = kill_decision(0, 42, 7);
    if let Payload::OomKill(p) = &mut kd.payload {
        p.chosen_memcg_id = OWN;
    }
    let mut mk = mark(1, 42, 7);
    if let Payload::MarkVictim(p) = &mut mk.payload {
        p.memcg_id = OWN;
    }
    let ips: Vec<u64> = FAULT_STACK.iter().map(|(a, _)| *a).collect();
    let evs = [
        invoke_in(0, MEMCG),
        candidate(0, TRIGGER, 42, "hog", 16000, 0),
        candidate(0, TRIGGER, 43, "small", 4000, 500),
        memcg_state(1, MEMCG, 64 << 20, 12),
        memcg_state(1, OWN, 60 << 20, 0),
        kd,
        sigkill(0, 42, 7),
        alloc_stack(1, &ips),
        mk,
        exit(2, 42, 42, 7, true),
        gone(3, 42, 7),
        free(25, 42, 7),
    ];
    let f = run(&mut t, &evs, 200);
    assert_eq!(names(&f), ["killed", "dead", "released"], "{f:?}");
    let v = f[0].victim().unwrap();
    assert!(v.candidates.is_some() && v.alloc_stack.is_some() && v.memcg_at_kill.is_some());
    assert!(v.decision.is_some() && v.domain_at_kill.is_some());
    for finding in &f {
        let json = serde_json::to_string(finding).unwrap();
        nested_keys_sorted(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    }
    // The checker itself finds a struct out of order.
    assert!(nested_keys_sorted(r#"{"b":{"a":1,"c":[{"y":1,"x":2}]}}"#).is_err());
    assert!(nested_keys_sorted(r#"{"b":{"a":1,"c":[{"x":1,"y":"}"}]},"a":0}"#).is_ok());
}
