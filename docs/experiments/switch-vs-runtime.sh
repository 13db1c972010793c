#!/bin/bash
# The OOM storm of `oomtrace-bench` (OOMTRACE_BENCH_ONLY=storm) with oomtrace = BIN and the
# environment given, and for 3 s of it: the loop thread's time on a CPU as the scheduler's
# `sched_switch` events bound it, against the runtime the kernel charges it
# (/proc/PID/task/PID/schedstat). See docs/performance.md, "What a wake-up costs".
#
# Usage (root, tracefs mounted, nothing else running):
#   BENCH=target/release/oomtrace-bench docs/experiments/switch-vs-runtime.sh BIN [VAR=VALUE...]
set -euo pipefail
BIN=$1
shift
BENCH=${BENCH:-target/release/oomtrace-bench}
T=/sys/kernel/tracing
out=$(mktemp -d)
trap 'echo 0 > $T/tracing_on; echo 0 > $T/events/sched/sched_switch/enable; echo 0 > $T/events/sched/sched_switch/filter; rm -rf "$out"' EXIT
echo 0 > $T/tracing_on
echo > $T/trace
echo 32768 > $T/buffer_size_kb
env "$@" OOMTRACE_BIN="$BIN" OOMTRACE_BENCH_ONLY=storm "$BENCH" "$out/bench.json" > "$out/bench.log" 2>&1 &
bench=$!
p=
for _ in $(seq 80); do
    p=$(pgrep -P $bench -x oomtrace || true)
    [ -n "$p" ] && break
    sleep 0.2
done
[ -n "$p" ] || { echo "no oomtrace under the bench" >&2; exit 1; }
# The bench measures 1 s + 5 s of background before its storm.
sleep 5
echo "prev_pid == $p || next_pid == $p" > $T/events/sched/sched_switch/filter
echo 1 > $T/events/sched/sched_switch/enable
s0=$(cat /proc/$p/task/$p/schedstat)
echo 1 > $T/tracing_on
sleep 3
echo 0 > $T/tracing_on
s1=$(cat /proc/$p/task/$p/schedstat)
cat $T/trace > "$out/trace"
echo > $T/trace
wait $bench
python3 - "$p" "$s0" "$s1" "$out/trace" <<'P'
import re, sys
pid, s0, s1, path = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4]
on, total, n, unmatched = None, 0.0, 0, 0
for line in open(path):
    m = re.search(r'([\d.]+): sched_switch: (.*)', line)
    if not m:
        continue
    t, rest = float(m.group(1)), m.group(2)
    if f'next_pid={pid} ' in rest:
        on = t
    elif f'prev_pid={pid} ' in rest:
        if on is None:
            unmatched += 1
        else:
            total += t - on
            n += 1
        on = None
print(f'on a CPU by sched_switch: {total * 1e3:.1f} ms in {n} intervals '
      f'({unmatched} switch-outs without their switch-in); '
      f'runtime the kernel charged: {(int(s1[0]) - int(s0[0])) / 1e6:.1f} ms '
      f'in {int(s1[2]) - int(s0[2])} timeslices')
P
grep 'CPU per kill (start' "$out/bench.log" | cut -d'|' -f2,3
