#!/usr/bin/env bash
# Kafka → HTTP subscriber throughput: Triggerfish's KafkaSource against a plain rdkafka →
# reqwest loop (bench/peers/kafka-baseline), in one run, on one Tansu broker.
#
#   bench/kafka.sh                    # builds what is missing (release), 200,000 records
#   N=500000 PARTITIONS=4 ROUNDS=2 bench/kafka.sh
#   ONLY="baseline direct" bench/kafka.sh
#
# Steps: start Tansu (memory storage) on a free loopback port; create topic `bench` with
# PARTITIONS partitions and produce N small JSON records to it (kafka-produce: batched,
# linger 20 ms, no compression, acks=1); start the counting sink (kafka-sink). Then, for each
# consumer in turn, each in a consumer group of its own reading the topic from `earliest`:
#   baseline  kafka-baseline: StreamConsumer → reqwest POST, 16 requests in flight, offsets
#             stored after delivery (in order) and committed every second;
#   direct    triggerfish serve, KafkaSource whose sink is the subscriber's URI (16 in flight,
#             the source's fixed limit toward a direct sink; offsets committed every second);
#   broker    triggerfish serve, KafkaSource → Broker (memory store) → Trigger → subscriber
#             (the trigger's default maxInFlight, 256).
# Each consumer runs until the sink has counted N requests (or TIMEOUT seconds), then is
# stopped. Reported: records/s from the first delivery to the last (the sink's clock), the time
# from the consumer's start to its first delivery (process start, group join, first fetch),
# the consumer's peak RSS (VmHWM), and the cores used from the first delivery to the last by
# the consumer, Tansu, the sink and every other process on the machine (others' builds skew
# the figures; the load average is printed too). ROUNDS>1 repeats the consumers in turn, each
# round with new groups.
# As root, the measured processes (Tansu, the sink, the consumers) run at NICE=-10, their
# session's autogroup too (bench/priority.sh), so that builds running alongside disturb them
# less; NICE=0 turns that off.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/priority.sh
N=${N:-200000}
PARTITIONS=${PARTITIONS:-4}
ROUNDS=${ROUNDS:-1}
TIMEOUT=${TIMEOUT:-300}
ONLY=${ONLY:-baseline direct broker}
BIN=${TRIGGERFISH_BIN:-target/release/triggerfish}
PEER=bench/peers/kafka-baseline/target/release
TANSU=${TANSU:-${TRIGGERFISH_CACHE:-$HOME/.cache/triggerfish}/kafka/0.6.0/tansu}
[ -x "$TANSU" ] || { echo "Tansu is missing: scripts/dev setup_brokers installs it" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release --locked -p triggerfish-router --bin triggerfish
[ -x "$PEER/kafka-baseline" ] ||
  cargo build --release --locked --manifest-path bench/peers/kafka-baseline/Cargo.toml

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  restore_priority
}
trap cleanup EXIT
raise_priority

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # $1 = port
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  return 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
hz=$(getconf CLK_TCK)

kport=$(free_port)
sport=$(free_port)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
# Started from its own directory, without a subshell, so that $! is Tansu itself.
pushd "$work" > /dev/null
"${NICE_CMD[@]}" "$TANSU" broker --listener-url "tcp://127.0.0.1:$kport" \
  --advertised-listener-url "tcp://127.0.0.1:$kport" --storage-engine memory://tansu/ \
  > /dev/null 2> "$work/tansu.log" &
tansu=$!
popd > /dev/null
pids+=("$tansu")
wait_port "$kport"
"$PEER/kafka-produce" --brokers "127.0.0.1:$kport" --topic bench --partitions "$PARTITIONS" \
  --count "$N" 2> "$work/produce.log" || { cat "$work/produce.log" >&2; exit 1; }
produced=$(cat "$work/produce.log")
"${NICE_CMD[@]}" "$PEER/kafka-sink" --listen "127.0.0.1:$sport" &
sink=$!
pids+=("$sink")
wait_port "$sport"

config() { # $1 = direct | broker, $2 = group, $3 = file
  local http admin
  http=$(free_port)
  admin=$(free_port)
  cat > "$3" <<EOF
apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  listen: {http: "127.0.0.1:$http", admin: "127.0.0.1:$admin", quic: "off"}
  dataDir: $work/data-$2
---
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {name: bench}
spec:
  bootstrapServers: ["127.0.0.1:$kport"]
  topics: [bench]
  consumerGroup: $2
  initialOffset: earliest
  clientConfig: {session.timeout.ms: "6000"}
EOF
  if [ "$1" = direct ]; then
    echo "  sink: {uri: \"http://127.0.0.1:$sport/\"}" >> "$3"
  else
    cat >> "$3" <<EOF
  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: all}
spec:
  broker: default
  subscriber: {uri: "http://127.0.0.1:$sport/"}
EOF
  fi
}

stats() { curl -sf "http://127.0.0.1:$sport/stats"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

measure() { # $1 = name, $2 = round
  local name=$1 group="$1-$2-$RANDOM"
  curl -sf -X POST "http://127.0.0.1:$sport/reset" > /dev/null
  local start_ns pid
  start_ns=$(date +%s%N)
  case $name in
    baseline)
      "${NICE_CMD[@]}" "$PEER/kafka-baseline" --brokers "127.0.0.1:$kport" --topic bench --group "$group" \
        --target "http://127.0.0.1:$sport/" --in-flight 16 > "$work/$group.log" 2>&1 &
      ;;
    direct | broker)
      config "$name" "$group" "$work/$group.yaml"
      "${NICE_CMD[@]}" "$BIN" serve --config "$work/$group.yaml" > "$work/$group.log" 2>&1 &
      ;;
  esac
  pid=$!
  pids+=("$pid")
  local s requests=0 first_wall=0 f_cpu=0 f_tansu=0 f_sink=0 f_busy=0
  local deadline=$(( $(date +%s) + TIMEOUT ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    s=$(stats)
    requests=$(field "$s" requests)
    if [ "$first_wall" = 0 ] && [ "$requests" -gt 0 ]; then
      # The delivery phase starts: CPU from here on is the work, not the group join.
      first_wall=$(date +%s%N)
      f_cpu=$(cpu_ticks "$pid")
      f_tansu=$(cpu_ticks "$tansu")
      f_sink=$(cpu_ticks "$sink")
      f_busy=$(busy_ticks)
    fi
    [ "$requests" -ge "$N" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "$name exited:" >&2; tail -20 "$work/$group.log" >&2; break; }
    sleep 0.2
  done
  local end_ns e_cpu e_tansu e_sink e_busy rss
  end_ns=$(date +%s%N)
  e_cpu=$(cpu_ticks "$pid")
  e_tansu=$(cpu_ticks "$tansu")
  e_sink=$(cpu_ticks "$sink")
  e_busy=$(busy_ticks)
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sleep 0.5
  s=$(stats)
  python3 - "$name" "$s" "$N" "$start_ns" "$first_wall" "$end_ns" "$hz" "$rss" \
    "$((e_cpu - f_cpu))" "$((e_tansu - f_tansu))" "$((e_sink - f_sink))" "$((e_busy - f_busy))" <<'PY'
import json, sys
name, s, n, start_ns, first_ns, end_ns, hz, rss, cpu, tansu, sink, busy = sys.argv[1:]
s = json.loads(s)
n, hz = int(n), int(hz)
ready = (int(first_ns) - int(start_ns)) / 1e9 if int(first_ns) else float("nan")
wall = (int(end_ns) - int(first_ns)) / 1e9 if int(first_ns) else float("nan")
reqs, first, last = s["requests"], s["first_ns"], s["last_ns"]
span = (last - first) / 1e9 if reqs else float("nan")
rate = (reqs - 1) / span if reqs > 1 and span > 0 else float("nan")
cores = lambda ticks: int(ticks) / hz / wall
other = (int(busy) - int(cpu) - int(tansu) - int(sink)) / hz / wall
label = {"baseline": "rdkafka → reqwest (baseline)", "direct": "Triggerfish, KafkaSource → sink",
         "broker": "Triggerfish, KafkaSource → Broker → Trigger"}[name]
print(f"| {label} | {reqs:,} | **{rate:,.0f}** | {span:.2f} | {ready:.1f} | {int(rss)/1024:.1f} | "
      f"{cores(cpu):.2f} | {cores(tansu):.2f} | {cores(sink):.2f} | {max(other, 0):.2f} |", flush=True)
PY
}

echo "Kafka → HTTP subscriber: $N records in $PARTITIONS partitions; $(nproc) cores; nice $NICE; load average at start $load_start"
echo "$produced"
echo
echo "| consumer | delivered | records/s (first → last delivery) | span s | start → first delivery s | peak RSS MiB | consumer CPU | Tansu CPU | sink CPU | other load |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for round in $(seq 1 "$ROUNDS"); do
  for name in $ONLY; do
    measure "$name" "$round"
  done
done
echo
echo "load average at end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "(CPU columns: cores used from the first delivery to the last (sampled every 0.2 s); other load: every other process on the machine)"
