#!/usr/bin/env bash
# Broker data-plane benchmark: Triggerfish against the naive baseline (bench/peers/naive-router),
# end to end (tf-loadgen → router → tf-loadgen's sink), on loopback.
#
# For each router × {1, 1000 triggers} × {single binary events, batches of 100}:
#   1. write the Knative config (tf-benchconfig): broker default/default, N triggers, trigger i
#      passes type com.example.bench.t<i>; every event is of type t0, so exactly one matches;
#   2. start the router on it (a fresh process per case, so peak RSS is per case);
#   3. max throughput: tf-loadgen --rate max for $DURATION (delivered events/s, first send to
#      last arrival at the sink);
#   4. latency: tf-loadgen at half that rate, open loop, for $DURATION: p50/p99/p99.9 from
#      each request's due time to the event's arrival at the sink;
#   5. peak RSS of the router (VmHWM), then stop it.
# Prints a Markdown table, and Triggerfish/naive ratios when both ran. Raw JSON lines, configs
# and router logs are kept under target/bench-broker/<time>/.
#
# Usage:
#   bench/compare-broker.sh                      # both routers
#   bench/compare-broker.sh --only naive         # one of them (naive | triggerfish)
#   PIPELINING=16 bench/compare-broker.sh        # also `triggerfish-pipelined`: Triggerfish on
#                                                # the same config plus the broker's
#                                                # delivery.pipelining: 16
#   BATCHING='{maxEvents: 100}' bench/compare-broker.sh
#                                                # also `triggerfish-batched`: each trigger's
#                                                # spec.batch set to this (batched content
#                                                # mode to the sink; not Knative's contract)
#   bench/compare-broker.sh --router 'name=CMD'  # any other router; CMD may use {config}
#                                                # and {listen}; repeatable
#   bench/compare-broker.sh --only none          # no router: tf-loadgen sends straight to its
#                                                # own sink, the ceiling of the tooling itself
#   bench/compare-broker.sh --report DIR         # the tables of an earlier run, from DIR
#   bench/compare-broker.sh --write-readme       # also put the tables into bench/README.md,
#                                                # between its compare-broker markers (its
#                                                # compare-transports ones when TRANSPORTS is
#                                                # not http), with the command, date, commit
#                                                # and cores (also with --report DIR)
#   TRANSPORTS="http quic" TRIGGERS=1 bench/compare-broker.sh --only triggerfish
#                                                # HTTP ingress against QUIC ingress, same run
# Environment (defaults in brackets):
#   TRIGGERFISH_BIN [target/release/triggerfish]   run as `$TRIGGERFISH_BIN serve --config F`
#   NAIVE_BIN [bench/peers/naive-router/target/release/naive-router]
#   DURATION [10s]  DRAIN [5s]  SETTLE [2]  CONNECTIONS [8]  BATCH [100]
#   TRIGGERS ["1 1000"]  MODES ["binary batch"]  FILTERS [attributes]
#                   TRIGGERS=0: ingress alone, a broker with no trigger: the figures are events
#                   accepted per second and the producer's ack latency (nothing is delivered)
#   PIPELINING [unset]  adds the router triggerfish-pipelined (and --only triggerfish-pipelined
#                   runs it alone): delivery.pipelining set to this depth
#   BATCHING [unset]  adds the router triggerfish-batched (--only triggerfish-batched runs it
#                   alone): every trigger's spec.batch, a YAML flow mapping such as
#                   '{maxEvents: 100, linger: PT0.002S}'
#   BATCH_IN_FLIGHT [unset]  triggerfish-batched's spec.maxInFlight (events in flight; the
#                   requests in flight are ceil(maxInFlight / maxEvents); unset, the default
#                   is eight full batches: 800 for batches of 100)
#   TRANSPORTS [http]  "http quic" adds Triggerfish's QUIC ingress, for each Triggerfish variant
#                   run (frames on QUIC_CONNECTIONS connections, CONNECTIONS frames in flight;
#                   single events are frames of one)
#   QUIC_CONNECTIONS [1]  QUIC connections tf-loadgen spreads its frames over
#   QUIC_SPEC [unset]  the Server document's `quic`, e.g. '{threads: 1}' (QUIC on its own thread)
#   QUIC_PORT [18443]  QUIC_CA [data/quic/dev-cert.pem, the router's development certificate]
#   ROUTER_PORT [18080]  ADMIN_PORT [19090]  SINK_PORT [18090]
#   ROUTER_CPUS / LOADGEN_CPUS (taskset lists, e.g. 1 and 0; unset: share every core)
#   LATENCY_RATE [half of each case's max]  events/s of the latency runs: one rate for every
#                   case compares latency at equal load (e.g. QUIC against HTTP)
#   NICE [-10 as root, else 0]  niceness of the router and tf-loadgen, so that other work on
#                   the machine (builds) disturbs the runs less; the table shows what remains
#   CALIBRATE=1     add the `none` runs before the routers
#   SKIP_BUILD=1    use the binaries as they are
#   CARGO_FLAGS_TRIGGERFISH [] extra flags for building triggerfish (e.g. --no-default-features)
set -euo pipefail
cd "$(dirname "$0")/.."

# The command as given (the variables set for it, then the arguments), for --write-readme.
COMMAND="bench/compare-broker.sh $*"
for v in PIPELINING BATCHING BATCH_IN_FLIGHT LATENCY_RATE LOADGEN_CPUS ROUTER_CPUS QUIC_SPEC QUIC_CONNECTIONS TRANSPORTS FILTERS \
         MODES TRIGGERS BATCH CONNECTIONS DURATION SKIP_BUILD CALIBRATE; do
    if [[ -n ${!v:-} ]]; then COMMAND="$v=${!v@Q} $COMMAND"; fi
done
COMMAND=${COMMAND% }

TRIGGERFISH_BIN=${TRIGGERFISH_BIN:-target/release/triggerfish}
NAIVE_BIN=${NAIVE_BIN:-bench/peers/naive-router/target/release/naive-router}
LOADGEN=target/release/tf-loadgen
BENCHCONFIG=target/release/tf-benchconfig
DURATION=${DURATION:-10s}
DRAIN=${DRAIN:-5s}
SETTLE=${SETTLE:-2}
CONNECTIONS=${CONNECTIONS:-8}
BATCH=${BATCH:-100}
TRIGGERS=${TRIGGERS:-"1 1000"}
MODES=${MODES:-"binary batch"}
FILTERS=${FILTERS:-attributes}
ROUTER_PORT=${ROUTER_PORT:-18080}
ADMIN_PORT=${ADMIN_PORT:-19090}
SINK_PORT=${SINK_PORT:-18090}
TRANSPORTS=${TRANSPORTS:-http}
QUIC_PORT=${QUIC_PORT:-18443}
QUIC_CA=${QUIC_CA:-data/quic/dev-cert.pem}
# On a machine shared with builds, run the benchmark ahead of them (root only).
source bench/priority.sh

render() { # results.jsonl → the Markdown tables on stdout
    python3 - "$1" <<'PY'
import json, os, sys
path = sys.argv[1]
run = json.load(open(os.path.join(os.path.dirname(path), "run.json")))
cores, duration, connections, batch = run["cores"], run["duration"], run["connections"], run["batch"]
rows = [json.loads(l) for l in open(path) if l.strip()]
mib = lambda kb: f"{kb / 1024:,.1f}" if kb else "n/a"
used = lambda s, run: f"{s / run['wall_s']:.2f}" if run["wall_s"] else "n/a"
# With no trigger (ingress alone) nothing is delivered: throughput is what ingress accepted, and
# latency the producer's ack.
thru = lambda r, run: run["accepted_per_s"] if r["triggers"] == 0 else run["delivered_per_s"]
lat = lambda r, run: run["ack"] if r["triggers"] == 0 else run["e2e"]
def case(r):
    t = f'{r["triggers"]} trigger{"s" if r["triggers"] != 1 else ""}, '
    if r["triggers"] == 0:
        t = "ingress only (no trigger; accepted/s, ack latency), "
    if r["router"] == "none":
        t = ""
    quic = r.get("transport") == "quic"
    return t + (("single events (QUIC frames of 1)" if quic else "single binary events") if r["mode"] == "binary" else
                       f"batches of {batch}" if r["mode"] == "batch" else r["mode"])
def variant(r):
    """How a Triggerfish variant delivers: '' for the plain router."""
    if r["router"] == "triggerfish-pipelined":
        return f'pipelining {run.get("pipelining", "?")}'
    if r["router"] == "triggerfish-batched":
        in_flight = f', maxInFlight {run["batch_in_flight"]}' if run.get("batch_in_flight") else ""
        return f'batched delivery `{run.get("batching", "?")}`{in_flight}'
    return ""
def name(r):
    if not r["router"].startswith("triggerfish"):
        return r["router"]
    ingress = "QUIC" if r.get("transport") == "quic" else "HTTP"
    return f"triggerfish {ingress}" + (f", {variant(r)}" if variant(r) else "")
print(f"Loadgen, sink and router share {cores} cores; {duration} per run, {connections} connections.")
at = f"{run['latency_rate']:,} events/s for every case" if run.get("latency_rate") else "half of max"
print("Max: `--rate max`, delivered events/s (first send to last arrival). Latency: open loop at")
print(f"{at}, from each request's due time to the event's arrival at the sink. Send lag:")
print("how late tf-loadgen sent requests in the latency run (high values: the tooling, not the")
print("router, limited the run; raise CONNECTIONS). Router CPU: cores the router used during the")
print("max run. Other load: cores used by processes other than the router and tf-loadgen during")
print("either run (a busy machine skews the figures). Router `none`: tf-loadgen to its own sink.\n")
print("| router | case | max events/s | p50 µs | p99 µs | p99.9 µs | peak RSS MiB | router CPU | lost (max / half) | send lag p99 µs | other load |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    if "error" in r:
        print(f'| {name(r)} | {case(r)} | {r["error"]} | | | | | | | | |')
        continue
    m, h, c = r["max"], r["half"], r["cpu"]
    lost = f'{m["lost"]} / {h["lost"]}' if r["triggers"] else "n/a"
    print(f'| {name(r)} | {case(r)} | {thru(r, m):,.0f} | {lat(r, h)["p50_us"]:,.0f} | '
          f'{lat(r, h)["p99_us"]:,.0f} | {lat(r, h)["p999_us"]:,.0f} | {mib(r["rss_kb"])} | '
          f'{used(c["max"]["router_s"], c["max"]) if r["router"] != "none" else "n/a"} | {lost} | '
          f'{h["send_lag"]["p99_us"]:,.0f} | '
          f'{max(used(c[k]["other_s"], c[k]) for k in ("max", "half"))} |')
quic = {(r["router"], r["triggers"], r["mode"]): r for r in rows
        if "error" not in r and r.get("transport") == "quic"}
http = {(r["router"], r["triggers"], r["mode"]): r for r in rows
        if "error" not in r and r["router"].startswith("triggerfish") and r.get("transport", "http") == "http"}
both = [(quic[k], http[k]) for k in quic if k in http]
if both:
    print("\nTriggerfish QUIC ingress / HTTP ingress (max events/s and ack rate: higher is better;")
    print("latency: lower is better). Ack: the producer's view, from each request's due time to its")
    print("answer, in the latency run. Ingress only: the e2e columns are the ack's too.\n")
    print("| case | max events/s | e2e p50 | e2e p99 | ack p50 | ack p99 | router CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ratio = lambda a, b: f"{a / b:.2f}×" if b else "n/a"
    for q, h in both:
        qh, hh = q["half"], h["half"]
        label = case(h) + (f", {variant(h)}" if variant(h) else "")
        print(f'| {label} | {ratio(thru(q, q["max"]), thru(h, h["max"]))} | '
              f'{ratio(lat(q, qh)["p50_us"], lat(h, hh)["p50_us"])} | {ratio(lat(q, qh)["p99_us"], lat(h, hh)["p99_us"])} | '
              f'{ratio(qh["ack"]["p50_us"], hh["ack"]["p50_us"])} | {ratio(qh["ack"]["p99_us"], hh["ack"]["p99_us"])} | '
              f'{ratio(q["cpu"]["max"]["router_s"], h["cpu"]["max"]["router_s"])} |')
rows = [r for r in rows if r.get("transport", "http") == "http"]
by = {(r["router"], r["triggers"], r["mode"]): r for r in rows if "error" not in r}
pairs = [(k, by.get(("naive",) + k[1:])) for k in by if k[0].startswith("triggerfish")]
pairs = [(by[k], n) for k, n in pairs if n]
if pairs:
    print("\nTriggerfish / naive (throughput: higher is better; latency and memory: lower is better)\n")
    print("| router | case | max events/s | p50 | p99 | p99.9 | peak RSS |")
    print("|---|---|---:|---:|---:|---:|---:|")
    ratio = lambda a, b: f"{a / b:.2f}×" if b else "n/a"
    for t, n in pairs:
        th, nh = lat(t, t["half"]), lat(n, n["half"])
        print(f'| {name(t)} | {case(t)} | {ratio(thru(t, t["max"]), thru(n, n["max"]))} | '
              f'{ratio(th["p50_us"], nh["p50_us"])} | {ratio(th["p99_us"], nh["p99_us"])} | '
              f'{ratio(th["p999_us"], nh["p999_us"])} | {ratio(t["rss_kb"], n["rss_kb"])} |')
PY
}

write_readme() { # results.jsonl → its tables and how they were made, into bench/README.md
    render "$1" > "$(dirname "$1")/tables.md"
    python3 - bench/README.md "$1" <<'PY'
import json, os, sys
path, results = sys.argv[1:]
run = json.load(open(os.path.join(os.path.dirname(results), "run.json")))
tables = open(os.path.join(os.path.dirname(results), "tables.md")).read()
# Runs from before these fields existed say so rather than guess.
get = lambda k: run.get(k, "not recorded")
built = (" (`SKIP_BUILD`: the binaries were not rebuilt for it)"
         if "SKIP_BUILD" in get("command") else "")
head = (f"Written by `bench/compare-broker.sh --write-readme` from the run of `{get('command')}` "
        f"started on {get('started')} (`{os.path.dirname(results)}`), with the checkout at "
        f"commit `{get('commit')}`{built}, on {run['cores']} cores ({get('machine')}); load "
        f"average before the run: {run['loadavg_before'].split()[0]}.")
# Runs that compare transports have a section of their own.
name = "compare-transports" if run.get("transports", "http") != "http" else "compare-broker"
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
text = open(path).read()
if begin not in text or end not in text or text.index(begin) > text.index(end):
    sys.exit(f"{path} has no {begin} ... {end} section to write the tables into")
before, rest = text.split(begin, 1)
after = rest.split(end, 1)[1]
open(path, "w").write(f"{before}{begin}\n{head}\n\n{tables}{end}{after}")
PY
    echo "# tables written into bench/README.md" >&2
}

declare -a ROUTERS=() CUSTOM=()
REPORT=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --only) ROUTERS+=("$2"); shift 2 ;;
        --router) CUSTOM+=("$2"); ROUTERS+=("${2%%=*}"); shift 2 ;;
        --write-readme) WRITE_README=1; shift ;;
        --report) REPORT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -n $REPORT ]]; then
    render "$REPORT/results.jsonl"
    if [[ -n ${WRITE_README:-} ]]; then write_readme "$REPORT/results.jsonl"; fi
    exit 0
fi
if [[ ${#ROUTERS[@]} -eq 0 ]]; then
    ROUTERS=(triggerfish)
    if [[ -n ${PIPELINING:-} ]]; then ROUTERS+=(triggerfish-pipelined); fi
    if [[ -n ${BATCHING:-} ]]; then ROUTERS+=(triggerfish-batched); fi
    ROUTERS+=(naive)
fi
if [[ " ${ROUTERS[*]} " == *" triggerfish-pipelined "* && -z ${PIPELINING:-} ]]; then
    PIPELINING=16
fi
if [[ " ${ROUTERS[*]} " == *" triggerfish-batched "* && -z ${BATCHING:-} ]]; then
    BATCHING='{maxEvents: 100, linger: PT0.002S}'
fi
if [[ -n ${CALIBRATE:-} ]]; then ROUTERS=(none "${ROUTERS[@]}"); fi

router_cmd() { # name config → the command line, with {config} and {listen} filled in
    local name=$1 config=$2 listen=127.0.0.1:$ROUTER_PORT cmd=""
    for c in "${CUSTOM[@]}"; do if [[ ${c%%=*} == "$name" ]]; then cmd=${c#*=}; fi; done
    if [[ -z $cmd ]]; then
        case $name in
            triggerfish|triggerfish-pipelined|triggerfish-batched) cmd="$TRIGGERFISH_BIN serve --config {config} --quic 127.0.0.1:$QUIC_PORT" ;;
            naive) cmd="$NAIVE_BIN --config {config} --listen {listen}" ;;
        esac
    fi
    [[ -n $cmd ]] || { echo "unknown router $name (use --only naive|triggerfish or --router)" >&2; exit 2; }
    cmd=${cmd//\{config\}/$config}
    echo "${cmd//\{listen\}/$listen}"
}

pin() { # cpus → the prefix that runs a benchmark process: its niceness and CPU list
    if [[ $NICE != 0 ]]; then printf 'nice -n %s ' "$NICE"; fi
    if [[ -n ${1:-} ]]; then printf 'taskset -c %s' "$1"; fi
}

if [[ -z ${SKIP_BUILD:-} ]]; then
    cargo build --release -p triggerfish-bench --bins
    for r in "${ROUTERS[@]}"; do
        case $r in
            naive) cargo build --release --manifest-path bench/peers/naive-router/Cargo.toml ;;
            triggerfish|triggerfish-pipelined|triggerfish-batched)
                if [[ $TRIGGERFISH_BIN == target/release/triggerfish ]]; then
                    # shellcheck disable=SC2086
                    cargo build --release -p triggerfish-router --bin triggerfish ${CARGO_FLAGS_TRIGGERFISH:-}
                fi ;;
        esac
    done
fi
for r in "${ROUTERS[@]}"; do
    [[ $r == none ]] && continue
    bin=$(router_cmd "$r" x); bin=${bin%% *}
    [[ -x $bin ]] || { echo "$r: $bin not found (build it, or choose routers with --only)" >&2; exit 1; }
done

OUT=target/bench-broker/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
ROUTER_PID=""
cleanup() {
    if [[ -n $ROUTER_PID ]]; then kill "$ROUTER_PID" 2>/dev/null || true; fi
    restore_priority
}
trap cleanup EXIT
raise_priority

wait_listening() { # pid port → 0 once the port accepts, 1 if the process died or 30 s passed
    local pid=$1 port=$2
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

start_router() { # name config log → starts it in ROUTER_PID; 1 if it does not listen
    local name=$1 config=$2 log=$3
    # shellcheck disable=SC2046
    $(pin "${ROUTER_CPUS:-}") $(router_cmd "$name" "$config") > "$log" 2>&1 &
    ROUTER_PID=$!
    if wait_listening "$ROUTER_PID" "$ROUTER_PORT"; then return 0; fi
    echo "   $name did not start listening on $ROUTER_PORT; log:" >&2
    tail -5 "$log" >&2 || true
    kill "$ROUTER_PID" 2>/dev/null || true
    wait "$ROUTER_PID" 2>/dev/null || true
    ROUTER_PID=""
    return 1
}

json() { # file expr → a field of the JSON line in file (python3: expr over `r`)
    python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print(eval(sys.argv[2]))' "$1" "$2"
}

busy_ticks() { # CPU time the machine spent in processes (user, nice, system) or stolen by the
               # hypervisor, in ticks (1/100 s); interrupts are left out: loopback traffic
               # is processed there and charged to no process
    awk '/^cpu / {print $2 + $3 + $4 + $9}' /proc/stat
}

proc_ticks() { # pid → CPU time of that process so far, in ticks
    if [[ -n ${1:-} && -r /proc/$1/stat ]]; then
        awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
    else
        echo 0
    fi
}

loadgen() { # name mode rate target [args] → runs tf-loadgen: JSON line in $OUT/name.json, and CPU
            # use in $OUT/name.cpu ("wall loadgen_user loadgen_sys machine_ticks router_ticks")
    local name=$1 mode=$2 rate=$3 target=$4 b0 r0 TIMEFORMAT='%R %U %S'
    local args=("${@:5}" --target "$target" --sink "127.0.0.1:$SINK_PORT"
        --mode "$mode" --rate "$rate" --duration "$DURATION" --drain "${CASE_DRAIN:-$DRAIN}"
        --connections "$CONNECTIONS")
    [[ $mode == batch ]] && args+=(--batch "$BATCH")
    b0=$(busy_ticks); r0=$(proc_ticks "$ROUTER_PID")
    # shellcheck disable=SC2046
    { time $(pin "${LOADGEN_CPUS:-}") "$LOADGEN" "${args[@]}" > "$OUT/$name.json" 2> "$OUT/$name.log"; } 2> "$OUT/$name.time"
    echo "$(tail -1 "$OUT/$name.time") $(( $(busy_ticks) - b0 )) $(( $(proc_ticks "$ROUTER_PID") - r0 ))" > "$OUT/$name.cpu"
}

echo "# results in $OUT; loadgen, sink and router share $(nproc) cores" >&2
read -r load1 _ < /proc/loadavg
if awk -v l="$load1" -v c="$(nproc)" 'BEGIN { exit !(l > c / 4) }'; then
    echo "# warning: load average $load1 before the run: other processes use the CPU, and" \
        "the numbers will show it" >&2
fi
# The checkout's commit, and whether the code the binaries are built from differs from it.
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain --untracked-files=no -- '*.rs' '*Cargo.toml' '*Cargo.lock' 2>/dev/null) ]]; then
    commit+=" with uncommitted changes"
fi
python3 - "$(nproc)" "$DURATION" "$DRAIN" "$CONNECTIONS" "$BATCH" "$NICE" "${LATENCY_RATE:-0}" \
    "$(cat /proc/loadavg)" "$COMMAND" "$commit" "$(date -u '+%Y-%m-%d at %H:%M UTC')" \
    "$(uname -m)" "$TRANSPORTS" "${PIPELINING:-0}" "${BATCHING:-}" "${BATCH_IN_FLIGHT:-0}" \
    > "$OUT/run.json" <<'PY'
import json, sys
a = sys.argv[1:]
print(json.dumps({"cores": int(a[0]), "duration": a[1], "drain": a[2], "connections": int(a[3]),
                  "batch": int(a[4]), "nice": int(a[5]), "latency_rate": int(a[6]),
                  "loadavg_before": a[7], "command": a[8], "commit": a[9], "started": a[10],
                  "machine": a[11], "transports": a[12], "pipelining": int(a[13]),
                  "batching": a[14], "batch_in_flight": int(a[15])}))
PY
for triggers in $TRIGGERS; do
    # With no trigger nothing reaches the sink: measure what ingress accepted, without a drain.
    CASE_DRAIN=""; figure=delivered_per_s
    if [[ $triggers == 0 ]]; then CASE_DRAIN=0s; figure=accepted_per_s; fi
    config=$OUT/config-$triggers.yaml
    # The plain config, then one per variant: -pipelined and -batched.
    for variant in "" ${PIPELINING:+pipelined} ${BATCHING:+batched}; do
        flags=()
        case $variant in
            pipelined) flags=(--pipelining "$PIPELINING") ;;
            batched) flags=(--batch "$BATCHING" ${BATCH_IN_FLIGHT:+--max-in-flight "$BATCH_IN_FLIGHT"}) ;;
        esac
        "$BENCHCONFIG" --triggers "$triggers" --filters "$FILTERS" \
            ${QUIC_SPEC:+--quic "$QUIC_SPEC"} "${flags[@]}" \
            --subscriber "http://127.0.0.1:$SINK_PORT/" \
            --listen "127.0.0.1:$ROUTER_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
            -o "${config%.yaml}${variant:+-$variant}.yaml"
    done
    for mode in $MODES; do
      for transport in $TRANSPORTS; do
        for router in "${ROUTERS[@]}"; do
            extra=()
            if [[ $transport == quic ]]; then
                # Only Triggerfish has a QUIC ingress (each of its variants).
                [[ $router == triggerfish* ]] || continue
                case_name=$router-quic-$triggers-$mode
                target=quic://127.0.0.1:$QUIC_PORT/default/default
                extra=(--quic-ca-file "$QUIC_CA" --quic-connections "${QUIC_CONNECTIONS:-1}")
            else
                case_name=$router-$triggers-$mode
                target=http://127.0.0.1:$ROUTER_PORT/default/default
            fi
            if [[ $router == none ]]; then
                # The tooling alone: the sink accepts what is sent to it; once per mode.
                [[ $triggers == "${TRIGGERS%% *}" ]] || continue
                echo "## no router (tf-loadgen → its own sink), $mode" >&2
                target=http://127.0.0.1:$SINK_PORT/
            else
                echo "## $router ($transport), $triggers trigger(s), $mode" >&2
                router_config=$config
                case $router in
                    triggerfish-pipelined) router_config=${config%.yaml}-pipelined.yaml ;;
                    triggerfish-batched) router_config=${config%.yaml}-batched.yaml ;;
                esac
                if ! start_router "$router" "$router_config" "$OUT/$case_name.router.log"; then
                    printf '{"router":"%s","triggers":%s,"mode":"%s","error":"did not start"}\n' \
                        "$router" "$triggers" "$mode" >> "$RESULTS"
                    continue
                fi
            fi
            loadgen "$case_name-max" "$mode" max "$target" "${extra[@]}"
            max=$(json "$OUT/$case_name-max.json" "int(r[\"$figure\"])")
            echo "   max: $max events/s ${figure%_per_s} ($(json "$OUT/$case_name-max.json" 'r["lost"]') lost)" >&2
            sleep "$SETTLE"
            half=${LATENCY_RATE:-$(( max / 2 > 0 ? max / 2 : 1 ))}
            loadgen "$case_name-half" "$mode" "$half" "$target" "${extra[@]}"
            echo "   at $half events/s: $(json "$OUT/$case_name-half.json" '"p50 %.0f µs, p99 %.0f µs, p99.9 %.0f µs" % (lambda l: (l["p50_us"], l["p99_us"], l["p999_us"]))(r["e2e"] if r["received"] else r["ack"])')" >&2
            rss_kb=0
            if [[ -n $ROUTER_PID ]]; then
                rss_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$ROUTER_PID/status" 2>/dev/null || echo 0)
                kill -TERM "$ROUTER_PID" 2>/dev/null || true
                wait "$ROUTER_PID" 2>/dev/null || true
                ROUTER_PID=""
            fi
            python3 - "$router" "$triggers" "$mode" "$rss_kb" "$OUT/$case_name" "$transport" >> "$RESULTS" <<'PY'
import json, sys
router, triggers, mode, rss, base, transport = sys.argv[1:]
last = lambda f: json.loads(open(f).read().strip().splitlines()[-1])
def cpu(f):
    # Seconds of CPU: tf-loadgen's, the router's, and everyone else's, over the run's wall time.
    wall, user, sys_, machine, router = (float(x) for x in open(f).read().split())
    loadgen = user + sys_
    return {"wall_s": wall, "loadgen_s": loadgen, "router_s": router / 100,
            "other_s": max(0.0, machine / 100 - loadgen - router / 100)}
print(json.dumps({"router": router, "transport": transport, "triggers": int(triggers), "mode": mode,
                  "rss_kb": int(rss or 0), "max": last(base + "-max.json"),
                  "half": last(base + "-half.json"),
                  "cpu": {"max": cpu(base + "-max.cpu"), "half": cpu(base + "-half.cpu")}}))
PY
            sleep "$SETTLE"
        done
      done
    done
done

render "$RESULTS"
if [[ -n ${WRITE_README:-} ]]; then write_readme "$RESULTS"; fi
