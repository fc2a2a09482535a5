#!/usr/bin/env bash
# The cost of durability: Triggerfish with the memory store, with JetStream on one nats-server
# (R1), and with JetStream R3 on a local three-node NATS cluster, end to end
# (tf-loadgen → triggerfish → tf-loadgen's sink), on loopback, in one run.
#
# For each store × mode (batches of 100, single binary events):
#   1. start fresh NATS servers (none for memory; one for R1; three joined by routes for R3),
#      each with JetStream and an empty store directory;
#   2. write the config (tf-benchconfig --store ...): broker default/default, one trigger;
#   3. start the router on it, and warm it up: $WARMUP of events at 1,000/s, delivered before
#      the measurement starts (a fresh R3 stream stalls for up to a second in its first
#      seconds while its consumers settle, which would otherwise show as the p99);
#   4. max throughput: tf-loadgen --rate max for $DURATION (delivered events/s, first send to
#      last arrival at the sink); at max, ingress accepts faster than delivery, so what is
#      still queued after the drain shows as `lost` (not delivered within the drain);
#   5. stop everything, start it all again empty, and measure latency: tf-loadgen at half the
#      max rate, open loop: p50/p99 from each request's due time to the arrival at the sink;
#   6. CPU seconds of the router and of the NATS servers during the max run.
# Prints a Markdown table and the ratios to the memory store. Raw JSON lines, configs and logs
# are kept under target/bench-stores/<time>/.
#
# Usage:
#   bench/compare-stores.sh                     # memory, jetstream-r1, jetstream-r3
#   bench/compare-stores.sh --only jetstream-r1 # some of them (repeatable)
#   bench/compare-stores.sh --report DIR        # the table of an earlier run
# Environment (defaults in brackets):
#   TRIGGERFISH_BIN [target/release/triggerfish]  NATS_SERVER [nats-server]
#   DURATION [10s]  DRAIN [10s]  WARMUP [2s]  SETTLE [2]  CONNECTIONS [8]  BATCH [100]
#   MODES ["batch binary"]  STORE_EXTRA [""]  extra fields of Server.spec.store, e.g.
#                   "maxAckPending: 8192" (YAML flow-mapping entries, comma-separated)
#   ROUTERS [1]    router replicas on the JetStream stores (the capacity check in
#                  bench/README.md); replica i listens on ROUTER_PORT+i and ADMIN_PORT+i; the
#                  load goes to replica 0's ingress, and every replica pulls from the shared
#                  consumers
#   ROUTER_PORT [18080]  ADMIN_PORT [19090]  QUIC_PORT [18443, UDP, unused by the load]
#   SINK_PORT [18090]  NATS_PORT [14222]
#   NICE [-10 as root, else 0]   SKIP_BUILD=1 (use the binaries as they are)
set -euo pipefail
cd "$(dirname "$0")/.."

TRIGGERFISH_BIN=${TRIGGERFISH_BIN:-target/release/triggerfish}
NATS_SERVER=${NATS_SERVER:-nats-server}
LOADGEN=target/release/tf-loadgen
BENCHCONFIG=target/release/tf-benchconfig
DURATION=${DURATION:-10s}
DRAIN=${DRAIN:-10s}
WARMUP=${WARMUP:-2s}
SETTLE=${SETTLE:-2}
CONNECTIONS=${CONNECTIONS:-8}
BATCH=${BATCH:-100}
MODES=${MODES:-"batch binary"}
STORE_EXTRA=${STORE_EXTRA:-}
ROUTER_PORT=${ROUTER_PORT:-18080}
ADMIN_PORT=${ADMIN_PORT:-19090}
QUIC_PORT=${QUIC_PORT:-18443}
ROUTERS=${ROUTERS:-1}
SINK_PORT=${SINK_PORT:-18090}
NATS_PORT=${NATS_PORT:-14222}
NICE=${NICE:-$([[ $EUID == 0 ]] && echo -10 || echo 0)}

render() { # results.jsonl → the Markdown table on stdout
    python3 - "$1" <<'PY'
import json, os, sys
path = sys.argv[1]
run = json.load(open(os.path.join(os.path.dirname(path), "run.json")))
rows = [json.loads(l) for l in open(path) if l.strip()]
print(f"Loadgen, sink, router and NATS share {run['cores']} cores; {run['duration']} per run, "
      f"{run['connections']} connections, batches of {run['batch']}; load average before the "
      f"run: {' '.join(run['loadavg_before'].split()[:3])}"
      + (f", after: {' '.join(run['loadavg_after'].split()[:3])}" if "loadavg_after" in run else "")
      + ".\n")
if run.get("routers", 1) > 1:
    print(f"{run['routers']} router replicas (router CPU is their sum); the load enters through "
          f"replica 0.\n")
print("| store | mode | max events/s | left after drain | p50 µs | p99 µs | p99.9 µs | router CPU | NATS CPU | router µs CPU/event |")
print("|---|---|---|---|---|---|---|---|---|---|")
def mode(m):
    return f"batches of {run['batch']}" if m == "batch" else "single binary events"
for r in rows:
    if "error" in r:
        print(f"| {r['store']} | {mode(r['mode'])} | {r['error']} | | | | | | | |")
        continue
    mx, half, cpu = r["max"], r["half"]["e2e"], r["cpu"]
    per_event = cpu["router_s"] / max(1, mx["received"]) * 1e6
    print(f"| {r['store']} | {mode(r['mode'])} | {mx['delivered_per_s']:,.0f} | {mx['lost']} | "
          f"{half['p50_us']:,.0f} | {half['p99_us']:,.0f} | {half['p999_us']:,.0f} | "
          f"{cpu['router_s'] / cpu['wall_s']:.2f} | {cpu['nats_s'] / cpu['wall_s']:.2f} | {per_event:.1f} |")
base = {r["mode"]: r for r in rows if r["store"] == "memory" and "error" not in r}
others = [r for r in rows if r["store"] != "memory" and "error" not in r and r["mode"] in base]
if others:
    print("\nRatios to the memory store (the cost of durability):\n")
    print("| store | mode | throughput | p50 latency | p99 latency |")
    print("|---|---|---|---|---|")
    for r in others:
        b = base[r["mode"]]
        t = r["max"]["delivered_per_s"] / b["max"]["delivered_per_s"]
        p50 = r["half"]["e2e"]["p50_us"] / b["half"]["e2e"]["p50_us"]
        p99 = r["half"]["e2e"]["p99_us"] / b["half"]["e2e"]["p99_us"]
        print(f"| {r['store']} | {mode(r['mode'])} | **{t:.0%}** | {p50:.1f}× | {p99:.1f}× |")
PY
}

declare -a STORES=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --only) STORES+=("$2"); shift 2 ;;
        --report) render "$2/results.jsonl"; exit 0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ ${#STORES[@]} -gt 0 ]] || STORES=(memory jetstream-r1 jetstream-r3)
if (( ROUTERS > 1 )) && [[ " ${STORES[*]} " == *" memory "* ]]; then
    echo "ROUTERS=$ROUTERS: replicas share work only through JetStream; add --only jetstream-r1 (or r3)" >&2
    exit 2
fi

if [[ -z ${SKIP_BUILD:-} ]]; then
    cargo build --release -p triggerfish-bench --bins
    if [[ $TRIGGERFISH_BIN == target/release/triggerfish ]]; then
        cargo build --release -p triggerfish-router --bin triggerfish
    fi
fi
for bin in "$TRIGGERFISH_BIN" "$LOADGEN" "$BENCHCONFIG"; do
    [[ -x $bin ]] || { echo "$bin not found (build it)" >&2; exit 1; }
done
TRIGGERFISH_ABS=$(realpath "$TRIGGERFISH_BIN")  # the routers run in directories of their own
command -v "$NATS_SERVER" >/dev/null || { echo "$NATS_SERVER not found (scripts/dev setup installs it)" >&2; exit 1; }

OUT=target/bench-stores/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
ROUTER_PIDS=()
NATS_PIDS=()
stop_all() {
    for p in "${ROUTER_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${ROUTER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    ROUTER_PIDS=()
    for p in "${NATS_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${NATS_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    NATS_PIDS=()
}
trap 'stop_all; restore_autogroup' EXIT

pin() { if [[ $NICE != 0 ]]; then printf 'nice -n %s' "$NICE"; fi; }
# With autogroup scheduling, niceness only counts inside a session's group: raise this
# session's group too (as compare-broker.sh does), and put it back at exit.
AUTOGROUP_NICE=""
if [[ $NICE != 0 && -w /proc/$$/autogroup ]]; then
    previous=$(awk '{print $NF}' "/proc/$$/autogroup")
    if echo "$NICE" > "/proc/$$/autogroup" 2>/dev/null; then AUTOGROUP_NICE=$previous; fi
fi
restore_autogroup() {
    if [[ -n $AUTOGROUP_NICE ]]; then echo "$AUTOGROUP_NICE" > "/proc/$$/autogroup" 2>/dev/null || true; fi
}

wait_http() { # url → 0 once it answers 200 (30 s at most)
    for _ in $(seq 300); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

start_nats() { # n dir → starts n servers (a cluster when n > 1) in NATS_PIDS; URLs in NATS_URLS
    local n=$1 dir=$2 routes=""
    NATS_URLS=""
    for i in $(seq 0 $((n - 1))); do routes+="${routes:+,}nats://127.0.0.1:$((NATS_PORT + 100 + i))"; done
    for i in $(seq 0 $((n - 1))); do
        local args=(-js -a 127.0.0.1 -p $((NATS_PORT + i)) -m $((NATS_PORT + 200 + i)) -sd "$dir/n$i" -n "n$i")
        if (( n > 1 )); then
            args+=(--cluster_name bench --cluster "nats://127.0.0.1:$((NATS_PORT + 100 + i))" --routes "$routes")
        fi
        # shellcheck disable=SC2046
        $(pin) "$NATS_SERVER" "${args[@]}" > "$dir/n$i.log" 2>&1 &
        NATS_PIDS+=($!)
        NATS_URLS+="${NATS_URLS:+,}nats://127.0.0.1:$((NATS_PORT + i))"
    done
    for i in $(seq 0 $((n - 1))); do
        wait_http "http://127.0.0.1:$((NATS_PORT + 200 + i))/healthz" \
            || { echo "nats-server n$i did not become healthy; log:" >&2; tail -5 "$dir/n$i.log" >&2; return 1; }
    done
    # A cluster places R3 streams once its meta leader knows every peer. Only the leader's
    # /jsz lists the peers (`replicas`), so ask every server until one of them is that leader.
    if (( n > 1 )); then
        for _ in $(seq 300); do
            for i in $(seq 0 $((n - 1))); do
                if curl -fsS "http://127.0.0.1:$((NATS_PORT + 200 + i))/jsz" 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin).get("meta_cluster", {})
peers = m.get("replicas") or []
sys.exit(0 if m.get("leader") and len(peers) == int(sys.argv[1]) - 1 and all(p.get("current") for p in peers) else 1)' "$n"; then
                    return 0
                fi
            done
            sleep 0.1
        done
        echo "the NATS cluster did not form" >&2; return 1
    fi
}

ticks() { # pids... → CPU ticks (1/100 s) they used so far
    local sum=0 p
    for p in "$@"; do
        if [[ -r /proc/$p/stat ]]; then sum=$(( sum + $(awk '{print $14 + $15}' "/proc/$p/stat") )); fi
    done
    echo "$sum"
}

loadgen() { # name mode rate → JSON line in $OUT/name.json; "wall router_ticks nats_ticks" in name.cpu
    local name=$1 mode=$2 rate=$3 start r0 n0
    local args=(--target "http://127.0.0.1:$ROUTER_PORT/default/default" --sink "127.0.0.1:$SINK_PORT"
        --mode "$mode" --rate "$rate" --duration "$DURATION" --drain "$DRAIN" --connections "$CONNECTIONS")
    [[ $mode == batch ]] && args+=(--batch "$BATCH")
    start=$(date +%s.%N); r0=$(ticks "${ROUTER_PIDS[@]}"); n0=$(ticks "${NATS_PIDS[@]}")
    # shellcheck disable=SC2046
    $(pin) "$LOADGEN" "${args[@]}" > "$OUT/$name.json" 2> "$OUT/$name.log"
    echo "$(echo "$(date +%s.%N) - $start" | bc) $(( $(ticks "${ROUTER_PIDS[@]}") - r0 )) $(( $(ticks "${NATS_PIDS[@]}") - n0 ))" > "$OUT/$name.cpu"
}

warm_up() { # mode → a short run at a low rate, not measured
    local args=(--target "http://127.0.0.1:$ROUTER_PORT/default/default" --sink "127.0.0.1:$SINK_PORT"
        --mode "$1" --rate 1000 --duration "$WARMUP" --drain 5s --connections 2)
    [[ $1 == batch ]] && args+=(--batch 10)
    "$LOADGEN" "${args[@]}" > /dev/null 2>&1
}

json() { python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print(eval(sys.argv[2]))' "$1" "$2"; }

start_case() { # store dir → NATS (if any) and the router, fresh; 1 if either did not start
    local store=$1 dir=$2 store_yaml="" n=1
    rm -rf "$dir"; mkdir -p "$dir"
    case $store in
        memory) ;;
        jetstream-r1|jetstream-r3)
            [[ $store == jetstream-r3 ]] && n=3
            start_nats "$n" "$dir" || return 1
            store_yaml="{kind: jetstream, url: \"$NATS_URLS\", streamReplicas: $n${STORE_EXTRA:+, $STORE_EXTRA}}" ;;
        *) echo "unknown store $store (memory | jetstream-r1 | jetstream-r3)" >&2; exit 2 ;;
    esac
    local i
    for i in $(seq 0 $((ROUTERS - 1))); do
        "$BENCHCONFIG" --triggers 1 --subscriber "http://127.0.0.1:$SINK_PORT/" \
            --listen "127.0.0.1:$((ROUTER_PORT + i))" --admin "127.0.0.1:$((ADMIN_PORT + i))" \
            ${store_yaml:+--store "$store_yaml"} -o "$dir/config-$i.yaml"
        # Each replica in a directory of its own: its dataDir (the QUIC development certificate,
        # the scheduler's state) is relative to it.
        mkdir -p "$dir/router-$i"
        # shellcheck disable=SC2046
        (cd "$dir/router-$i" && exec $(pin) "$TRIGGERFISH_ABS" serve --config ../config-$i.yaml \
            --quic "127.0.0.1:$((QUIC_PORT + i))") > "$dir/router-$i.log" 2>&1 &
        ROUTER_PIDS+=($!)
    done
    for i in $(seq 0 $((ROUTERS - 1))); do
        if ! wait_http "http://127.0.0.1:$((ADMIN_PORT + i))/readyz"; then
            echo "   router $i did not become ready; log:" >&2; tail -5 "$dir/router-$i.log" >&2
            return 1
        fi
    done
}

echo "# results in $OUT; loadgen, sink, router and NATS share $(nproc) cores" >&2
read -r load1 _ < /proc/loadavg
if awk -v l="$load1" -v c="$(nproc)" 'BEGIN { exit !(l > c / 4) }'; then
    echo "# warning: load average $load1 before the run: other processes use the CPU, and" \
        "the numbers will show it" >&2
fi
printf '{"cores": %s, "duration": "%s", "connections": %s, "batch": %s, "routers": %s, "loadavg_before": "%s"}\n' \
    "$(nproc)" "$DURATION" "$CONNECTIONS" "$BATCH" "$ROUTERS" "$(cat /proc/loadavg)" > "$OUT/run.json"
for mode in $MODES; do
    for store in "${STORES[@]}"; do
        case_name=$store-$mode
        echo "## $store, $mode" >&2
        # Max and half each start from empty queues and an empty stream: a backlog left by the
        # max run would otherwise be delivered during the latency run.
        if ! start_case "$store" "$OUT/$case_name-max"; then
            printf '{"store":"%s","mode":"%s","error":"did not start"}\n' "$store" "$mode" >> "$RESULTS"
            stop_all; continue
        fi
        warm_up "$mode"
        loadgen "$case_name-max" "$mode" max
        stop_all
        max=$(json "$OUT/$case_name-max.json" 'int(r["delivered_per_s"])')
        echo "   max: $max events/s delivered ($(json "$OUT/$case_name-max.json" 'r["lost"]') not delivered within the drain)" >&2
        sleep "$SETTLE"
        if ! start_case "$store" "$OUT/$case_name-half"; then
            printf '{"store":"%s","mode":"%s","error":"did not start"}\n' "$store" "$mode" >> "$RESULTS"
            stop_all; continue
        fi
        warm_up "$mode"
        loadgen "$case_name-half" "$mode" $(( max / 2 > 0 ? max / 2 : 1 ))
        stop_all
        echo "   at half: $(json "$OUT/$case_name-half.json" '"p50 %.0f µs, p99 %.0f µs" % (r["e2e"]["p50_us"], r["e2e"]["p99_us"])')" >&2
        python3 - "$store" "$mode" "$OUT/$case_name" >> "$RESULTS" <<'PY'
import json, sys
store, mode, base = sys.argv[1:]
last = lambda f: json.loads(open(f).read().strip().splitlines()[-1])
wall, router, nats = (float(x) for x in open(base + "-max.cpu").read().split())
print(json.dumps({"store": store, "mode": mode, "max": last(base + "-max.json"),
                  "half": last(base + "-half.json"),
                  "cpu": {"wall_s": wall, "router_s": router / 100, "nats_s": nats / 100}}))
PY
        sleep "$SETTLE"
    done
done

python3 - "$OUT/run.json" "$(cat /proc/loadavg)" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
run["loadavg_after"] = sys.argv[2]
json.dump(run, open(sys.argv[1], "w"))
PY
render "$RESULTS"
