//! Synthetic event streams through the tracker. Times are in ms from an arbitrary origin.

use oomtrace_common::{
    Header, KernelSigkill, MarkVictim, OomInvoke, OomKill, Reaper, TaskExit, TaskFree,
    group_dead_source, victim_fields,
};

use super::*;
use crate::event::comm_bytes;

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

fn sigkill(ms: u64, tgid: u32, start: u64) -> Event {
    Event {
        header: header(ms, TRIGGER, TRIGGER, "alloc"),
        payload: Payload::KernelSigkill(KernelSigkill {
            target_pid: tgid,
            target_tgid: tgid,
            target_comm: comm_bytes("hog"),
            target_start_ns: start,
            group: 1,
            result: 0,
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
        }),
    }
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
            exit(2, 42, 42, 7, true),
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
    assert_eq!(*kill_to_dead_ns, 2 * MS);
    assert!(!was_flagged);
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
        free(7020, 42, 7),
    ];
    let f = run(&mut t, &stream, 9000);
    assert_eq!(names(&f), ["killed", "stuck", "dead", "released"]);
    let Finding::Stuck {
        stage,
        since_kill_ns,
        unconfirmed_lost,
        victim,
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
        matches!(&f[2], Finding::Dead { was_flagged: true, kill_to_dead_ns, .. } if *kill_to_dead_ns == 7 * S)
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

#[test]
fn zombie_not_released_is_a_separate_finding() {
    let mut t = tracker();
    let f = run(
        &mut t,
        &[sigkill(0, 42, 7), mark(0, 42, 7), exit(3, 42, 42, 7, true)],
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
    assert_eq!(*kill_to_dead_ns, MS);
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
fn unhooked_exits_are_unobservable_not_stuck() {
    let mut t = Tracker::new(TrackerConfig {
        observability: Observability {
            exit: false,
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
        sigkill(1, 77, 9), // shares 42's mm: SIGKILL only, sent right after the mark
        exit(3, 42, 42, 7, true),
        exit(4, 77, 77, 9, true),
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
        exit(2, 42, 42, 7, true),
        exit(3, 43, 43, 8, true),
    ];
    let f = run(&mut t, &stream, 100);
    assert_eq!(names(&f), ["killed", "killed", "dead", "dead"]);
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
        stream.push(invoke(5100 + i * 100));
    }
    let f = run(&mut t, &stream, 7000);
    assert_eq!(names(&f), ["killed", "stuck", "livelock"]);
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
    let f = run(
        &mut t,
        &[kill, old_mark(0, 42), exit(2, 42, 42, 7, true)],
        100,
    );
    assert_eq!(names(&f), ["killed", "dead"]);
    let Finding::Dead { victim, .. } = &f[1] else {
        panic!()
    };
    assert_eq!(victim.comm, "hog");
    assert_eq!(victim.key.tgid, 42);
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
        exit(2, 42, 42, 7, true),
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

#[test]
fn an_unrelated_kernel_sigkill_is_not_a_victim() {
    let mut t = tracker();
    let f = run(&mut t, &[sigkill(0, 99, 1), exit(1, 99, 99, 1, true)], 7000);
    assert!(f.is_empty(), "{f:?}");
    assert_eq!(t.summary().kills, 0);
}

#[test]
fn memory_stays_bounded() {
    let mut t = tracker();
    let mut out = Vec::new();
    for i in 0..(MAX_VICTIMS as u32 + 500) {
        let ms = u64::from(i);
        t.on_event(&sigkill(ms, 10_000 + i, 1), &mut out);
        t.on_event(&mark(ms, 10_000 + i, 1), &mut out);
        t.on_event(&exit(ms, 10_000 + i, 10_000 + i, 1, true), &mut out);
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
    assert!(line.contains("some threads exited, not the last"), "{line}");
}
