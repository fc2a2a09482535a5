#!/usr/bin/env bash
# Soak test: a long run at half of the router's maximum throughput against a subscriber that
# misbehaves, with hot reloads, then an exact count of every accepted event.
#
#   bench/soak.sh                     # 10 minutes (builds the release binaries if needed)
#   SOAK=120 bench/soak.sh            # a shorter run, e.g. to try the script
#   RATE=4000 bench/soak.sh           # skip the max-throughput probe and use this rate
#   PIPELINING=16 bench/soak.sh       # deliver with delivery.pipelining: 16
#
# What it does:
#   1. probes the maximum throughput (tf-loadgen --rate max for $PROBE s, healthy sink) unless
#      RATE is set, and soaks at half of it;
#   2. runs `triggerfish serve` with one broker whose trigger delivers to tf-loadgen's own
#      sink, which answers 503 to $FAIL of the requests and holds $SLOW of them for $SLOW_FOR
#      (retry 3, exponential backoff from 20 ms; what still fails goes to a dead-letter File
#      sink);
#   3. rewrites the config every $RELOAD s (alternating: an extra trigger, a changed filter
#      dialect, a changed retry count that restarts the trigger's dispatcher), while
#      tf-loadgen sends binary events open-loop for $SOAK s;
#   4. samples the router's RSS every 10 s.
# Then it checks, and exits non-zero if any check fails:
#   - lost = 0: events accepted (202) = events the sink received (unique) + events in the
#     dead-letter file (unique ids, each an event tf-loadgen sent);
#   - RSS growth from minute 2 to the end under 10% (mean of the samples of minute 2 against
#     the mean of the last minute's);
#   - no panic in the router's log; every reload applied (none rejected).
# Everything is kept under target/soak/<time>/; the summary is printed as Markdown for
# bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK=${SOAK:-600}
PROBE=${PROBE:-15}
RELOAD=${RELOAD:-30}
FAIL=${FAIL:-0.05}
SLOW=${SLOW:-0.01}
SLOW_FOR=${SLOW_FOR:-200ms}
CONNECTIONS=${CONNECTIONS:-8}
ROUTER_PORT=${ROUTER_PORT:-18180}
ADMIN_PORT=${ADMIN_PORT:-19190}
SINK_PORT=${SINK_PORT:-18190}
BIN=${TRIGGERFISH_BIN:-target/release/triggerfish}
LOADGEN=target/release/tf-loadgen

if [[ -z ${SKIP_BUILD:-} ]]; then
    cargo build --release --locked -p triggerfish-bench --bins
    [[ $BIN != target/release/triggerfish ]] || cargo build --release --locked -p triggerfish-router --bin triggerfish
fi

OUT=$PWD/target/soak/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
ROUTER_PID=""
cleanup() { [[ -z $ROUTER_PID ]] || kill "$ROUTER_PID" 2>/dev/null || true; }
trap cleanup EXIT

config() { # variant → the config on stdout
    local variant=$1 retry=3 filter="filter: {attributes: {type: com.example.bench.t0}}" extra=""
    case $variant in
        1) extra=$'---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: extra}\nspec:\n  broker: default\n  filter: {attributes: {type: never.sent}}\n  subscriber: {uri: "http://127.0.0.1:9/"}' ;;
        2) filter="filters: [{prefix: {type: com.example.bench.t}}]" ;;
        3) retry=4 ;;
    esac
    cat <<EOF
apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  listen: {http: "127.0.0.1:$ROUTER_PORT", admin: "127.0.0.1:$ADMIN_PORT"}
  dataDir: $OUT/data
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
spec:
  delivery:
    retry: $retry
    backoffPolicy: exponential
    backoffDelay: PT0.02S${PIPELINING:+
    pipelining: $PIPELINING}
    deadLetterSink: {uri: "file://$OUT/dead-letter.jsonl"}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: soak}
spec:
  broker: default
  $filter
  subscriber: {uri: "http://127.0.0.1:$SINK_PORT/"}
$extra
EOF
}

wait_ready() {
    for _ in $(seq 300); do
        kill -0 "$ROUTER_PID" 2>/dev/null || { echo "the router exited; see $OUT/router.log" >&2; exit 1; }
        curl -fs "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "the router did not become ready" >&2; exit 1
}

start_router() {
    "$BIN" serve --config "$OUT/config.yaml" > "$OUT/router.log" 2>&1 &
    ROUTER_PID=$!
    wait_ready
}

json() { python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print(eval(sys.argv[2]))' "$1" "$2"; }

config 0 > "$OUT/config.yaml"
if [[ -z ${RATE:-} ]]; then
    echo "## probing the maximum throughput for ${PROBE}s (healthy sink)" >&2
    start_router
    "$LOADGEN" --target "http://127.0.0.1:$ROUTER_PORT/default/default" --sink "127.0.0.1:$SINK_PORT" \
        --rate max --duration "${PROBE}s" --connections "$CONNECTIONS" > "$OUT/probe.json" 2> "$OUT/probe.log"
    kill -TERM "$ROUTER_PID"; wait "$ROUTER_PID" || true; ROUTER_PID=""
    MAX=$(json "$OUT/probe.json" 'int(r["delivered_per_s"])')
    RATE=$(( MAX / 2 ))
    echo "## max ${MAX} events/s; soaking at ${RATE} events/s" >&2
fi
rm -f "$OUT/dead-letter.jsonl"

echo "## soak: ${SOAK}s at ${RATE}/s, sink fails ${FAIL}, slow ${SLOW}:${SLOW_FOR}, reload every ${RELOAD}s" >&2
start_router
: > "$OUT/rss.csv"
(
    start=$(date +%s)
    while kill -0 "$ROUTER_PID" 2>/dev/null; do
        rss=$(awk '/^VmRSS/ {print $2}' "/proc/$ROUTER_PID/status" 2>/dev/null || echo "")
        [[ -z $rss ]] || echo "$(( $(date +%s) - start )),$rss" >> "$OUT/rss.csv"
        sleep 10
    done
) &
SAMPLER=$!
(
    variant=0
    end=$(( $(date +%s) + SOAK ))
    while sleep "$RELOAD"; [[ $(date +%s) -lt $end ]]; do
        variant=$(( (variant + 1) % 4 ))
        config "$variant" > "$OUT/config.yaml.tmp" && mv "$OUT/config.yaml.tmp" "$OUT/config.yaml"
        echo "$(date +%s) variant $variant" >> "$OUT/reloads.log"
    done
) &
RELOADER=$!
"$LOADGEN" --target "http://127.0.0.1:$ROUTER_PORT/default/default" --sink "127.0.0.1:$SINK_PORT" \
    --rate "$RATE" --duration "${SOAK}s" --drain 60s --connections "$CONNECTIONS" \
    --sink-fail "$FAIL" --sink-slow "$SLOW:$SLOW_FOR" > "$OUT/soak.json" 2> "$OUT/soak.log"
wait "$RELOADER" 2>/dev/null || true
curl -fs "http://127.0.0.1:$ADMIN_PORT/metrics" > "$OUT/metrics.txt" || true
kill -TERM "$ROUTER_PID"; wait "$ROUTER_PID" || true; ROUTER_PID=""
wait "$SAMPLER" 2>/dev/null || true

python3 - "$OUT" "$SOAK" "$RATE" <<'PY'
import json, sys, os
out, soak, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = json.loads(open(f"{out}/soak.json").read().strip().splitlines()[-1])
accepted, received = r["accepted"], r["received"]
dead = set()
path = f"{out}/dead-letter.jsonl"
dead_lines = 0
if os.path.exists(path):
    for line in open(path):
        if line.strip():
            dead_lines += 1
            dead.add(json.loads(line)["id"])
lost = accepted - received - len(dead)
rss = [tuple(map(int, l.split(","))) for l in open(f"{out}/rss.csv") if l.strip()]
minute2 = [kb for t, kb in rss if 60 <= t < 120] or [rss[0][1]]
last = [kb for t, kb in rss if t >= max(0, soak - 60) and t <= soak] or [rss[-1][1]]
m2, ml = sum(minute2) / len(minute2), sum(last) / len(last)
growth = (ml - m2) / m2 * 100
log = open(f"{out}/router.log", errors="replace").read()
panics = log.lower().count("panic")
def metric(name, label):
    for l in open(f"{out}/metrics.txt"):
        if l.startswith(name) and label in l:
            return int(float(l.split()[-1]))
    return 0
reloads = metric("triggerfish_config_reloads_total", 'outcome="applied"')
rejected = metric("triggerfish_config_reloads_total", 'outcome="rejected"')
ok = lost == 0 and growth < 10 and panics == 0 and rejected == 0 and reloads > 0 and dead_lines == len(dead)
print(f"| soak | {soak // 60} min at {rate:,} events/s |")
print("|---|---|")
print(f"| accepted (202) | {accepted:,} |")
print(f"| received by the subscriber (unique; duplicates) | {received:,}; {r['duplicates']:,} |")
print(f"| dead-lettered (unique ids; lines) | {len(dead):,}; {dead_lines:,} |")
print(f"| lost = accepted − received − dead-lettered | **{lost:,}** |")
print(f"| requests answered 503 / held on purpose | {r['sink_failed']:,} / {r['sink_slowed']:,} |")
print(f"| RSS minute 2 → last minute (MiB) | {m2/1024:.1f} → {ml/1024:.1f} ({growth:+.1f}%) |")
print(f"| reloads applied / rejected | {reloads} / {rejected} |")
print(f"| panics in the log | {panics} |")
print(f"| e2e latency p50 / p99 / max (ms) | {r['e2e']['p50_us']/1000:.1f} / {r['e2e']['p99_us']/1000:.1f} / {r['e2e']['max_us']/1000:.1f} |")
print(f"| verdict | {'PASS' if ok else 'FAIL'} |")
sys.exit(0 if ok else 1)
PY
