#!/usr/bin/env bash
# Scheduler benchmark: N PingSources (default 10,000) on one triggerfish.
#
#   bench/scheduler.sh            # builds the release binary if needed
#   N=10000 DURATION=30 bench/scheduler.sh
#
# Two runs:
#   idle    every source fires once a year (`0 0 1 1 *`): CPU of a process that only waits;
#   firing  every source fires every second (`* * * * * *`): tick lateness and CPU.
# Each source sends to broker default/default, which has one trigger to the file sink, so
# every tick is also delivered (to a directory of its own: the config watcher watches the
# config's directory). Lateness is measured by the scheduler from the scheduled tick
# to the moment its event is handed to the delivery queue; percentiles come from the
# `triggerfish_scheduler_tick_lateness_seconds` histogram (buckets 25% apart, so a figure is the
# upper bound of its bucket), the maximum from `triggerfish_scheduler_tick_lateness_max_seconds`.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
DURATION=${DURATION:-30}
BIN=${TRIGGERFISH_BIN:-target/release/triggerfish}
[ -x "$BIN" ] || cargo build --release --locked -p triggerfish-router --bin triggerfish
work=$(mktemp -d)
# On a machine shared with builds, run ahead of them (root only; NICE=0 to not).
source bench/priority.sh
trap 'pkill -f "$work" 2>/dev/null || true; rm -rf "$work"; restore_priority' EXIT
raise_priority

config() { # $1 = schedule, $2 = file
  python3 - "$1" "$N" "$work" > "$2" <<'PY'
import sys
schedule, n, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print(f"""apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  listen: {{http: 127.0.0.1:18480, admin: 127.0.0.1:19490}}
  dataDir: {work}/data
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: keep}}
spec:
  broker: default
  subscriber: {{uri: "file://{work}/out/events.jsonl"}}""")
for i in range(n):
    print(f"""---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {{name: p{i}}}
spec:
  schedule: "{schedule}"
  data: "tick {i}"
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}""")
PY
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() { # $1 = name, $2 = schedule
  local cfg="$work/$1.yaml"
  config "$2" "$cfg"
  rm -rf "$work/data" "$work/out"
  "${NICE_CMD[@]}" "$BIN" serve --config "$cfg" > "$work/$1.out" 2> "$work/$1.err" &
  local pid=$!
  for _ in $(seq 1 300); do curl -sf localhost:19490/readyz > /dev/null && break; sleep 0.1; done
  sleep 5
  local hz; hz=$(getconf CLK_TCK)
  local t0; t0=$(cpu_ticks "$pid")
  sleep "$DURATION"
  local t1; t1=$(cpu_ticks "$pid")
  curl -s localhost:19490/metrics > "$work/$1.metrics"
  local rss; rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid" || true
  python3 - "$1" "$work/$1.metrics" "$t0" "$t1" "$hz" "$DURATION" "$rss" "$N" <<'PY'
import sys, re
name, path, t0, t1, hz, duration, rss, n = sys.argv[1:]
cpu = (int(t1) - int(t0)) / int(hz) / float(duration) * 100
buckets, count, maxv, ticks = [], 0, 0.0, 0
for line in open(path):
    m = re.match(r'triggerfish_scheduler_tick_lateness_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
    if m:
        buckets.append((float("inf") if m[1] == "+Inf" else float(m[1]), int(m[2])))
    elif line.startswith("triggerfish_scheduler_tick_lateness_seconds_count"):
        count = int(line.split()[1])
    elif line.startswith("triggerfish_scheduler_tick_lateness_max_seconds"):
        maxv = float(line.split()[1])
    elif line.startswith("triggerfish_scheduler_ticks_total"):
        ticks = int(float(line.split()[1]))
def q(p):
    for le, c in buckets:
        if count and c >= p * count:
            return le
    return float("nan")
ms = lambda s: f"{s*1000:.2f} ms"
if name == "firing":
    print(f"| firing ({n} sources, every second) | {ticks} ticks | p50 ≤ {ms(q(0.5))} | p99 ≤ {ms(q(0.99))} | max {ms(maxv)} | CPU {cpu:.1f}% of a core | peak RSS {int(rss)//1024} MiB |")
else:
    print(f"| idle ({n} sources, yearly) | — | — | — | — | CPU {cpu:.2f}% of a core | peak RSS {int(rss)//1024} MiB |")
PY
}

loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
echo "| run | ticks | lateness p50 | p99 | max | CPU | memory |"
echo "|---|---|---|---|---|---|---|"
run idle "0 0 1 1 *"
run firing "* * * * * *"
echo
echo "(${DURATION}s per run after 5s of warm-up; $(nproc) cores; scheduler, delivery and file sink in one process;"
echo " load average $loadavg before, $(cut -d' ' -f1-3 /proc/loadavg) after; niceness $NICE)"
