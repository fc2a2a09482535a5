#!/usr/bin/env bash
# Ingress ack latency of HTTP and QUIC in interleaved pairs, at one fixed offered load: a
# broker with no trigger, batches of 100, the router on CPU 1 and tf-loadgen on CPU 0. Pairs,
# not one run per transport, because on a small VM the tail moves more between runs than
# between transports; each line is one run, and the summary gives the median of each column.
#
#   bench/ack-pairs.sh                  # 5 pairs at 300,000 events/s, 8 s per run
#   PAIRS=10 RATE=200000 bench/ack-pairs.sh
#   QUIC_CONNECTIONS=2 bench/ack-pairs.sh   # QUIC frames spread over 2 connections
#
# Needs release builds of triggerfish, tf-loadgen and tf-benchconfig (bench/compare-broker.sh
# builds them; SKIP_BUILD=1 there skips it). Ports: 18080 (HTTP), 18443 (QUIC), 19090 (admin).
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${PAIRS:-5}
RATE=${RATE:-300000}
DURATION=${DURATION:-8s}
TRIGGERFISH_BIN=${TRIGGERFISH_BIN:-target/release/triggerfish}
OUT=target/bench-ack-pairs/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"

target/release/tf-benchconfig --triggers 0 --subscriber http://127.0.0.1:18090/ \
    --listen 127.0.0.1:18080 --admin 127.0.0.1:19090 -o "$OUT/config.yaml" > /dev/null

ROUTER_PID=""
trap '[[ -n $ROUTER_PID ]] && kill "$ROUTER_PID" 2>/dev/null || true' EXIT

run() { # transport n → one line of figures, and $OUT/transport-n.json
    local transport=$1 n=$2 target
    taskset -c 1 "$TRIGGERFISH_BIN" serve --config "$OUT/config.yaml" --quic 127.0.0.1:18443 \
        > "$OUT/router-$transport-$n.log" 2>&1 &
    ROUTER_PID=$!
    for _ in $(seq 100); do curl -sf 127.0.0.1:19090/readyz > /dev/null && break; sleep 0.1; done
    if ! kill -0 "$ROUTER_PID" 2>/dev/null; then
        echo "triggerfish did not start (another process on its ports?):" >&2
        tail -3 "$OUT/router-$transport-$n.log" >&2
        ROUTER_PID=""; exit 1
    fi
    if [[ $transport == quic ]]; then
        target=(--target quic://127.0.0.1:18443/default/default --quic-ca-file data/quic/dev-cert.pem
            --quic-connections "${QUIC_CONNECTIONS:-1}")
    else
        target=(--target http://127.0.0.1:18080/default/default)
    fi
    taskset -c 0 target/release/tf-loadgen "${target[@]}" --sink 127.0.0.1:18090 --mode batch \
        --batch 100 --rate "$RATE" --duration "$DURATION" --drain 0s --connections 8 \
        > "$OUT/$transport-$n.json" 2> "$OUT/$transport-$n.log"
    kill "$ROUTER_PID"; wait "$ROUTER_PID" 2>/dev/null || true; ROUTER_PID=""
    python3 - "$OUT/$transport-$n.json" "$transport" "$n" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
a, lag = r["ack"], r["send_lag"]
print(f"{sys.argv[2]:5} {sys.argv[3]:>3} {r['accepted_per_s']:>11,.0f} {a['p50_us']:>8,.0f} "
      f"{a['p99_us']:>9,.0f} {a['p999_us']:>9,.0f} {lag['p99_us']:>9,.0f}")
PY
}

echo "# $PAIRS pairs at $RATE events/s, $DURATION each; results in $OUT" >&2
echo "transport run  accepted/s  ack p50  ack p99 ack p99.9 lag p99   (µs)" | tee "$OUT/table.txt"
for n in $(seq "$PAIRS"); do
    for transport in http quic; do run "$transport" "$n" | tee -a "$OUT/table.txt"; done
done
python3 - "$OUT/table.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
num = lambda s: float(s.replace(",", ""))
med = {t: [statistics.median(num(r[i]) for r in rows if r[0] == t) for i in (2, 3, 4, 5)]
       for t in ("http", "quic")}
for t, (rate, p50, p99, p999) in med.items():
    print(f"median {t:5} accepted/s {rate:,.0f}  ack p50 {p50:,.0f}  p99 {p99:,.0f}  p99.9 {p999:,.0f} µs")
pairs = [(h, q) for h, q in zip([r for r in rows if r[0] == "http"], [r for r in rows if r[0] == "quic"])]
lower = sum(num(q[4]) < num(h[4]) for h, q in pairs)
print(f"QUIC's ack p99 lower than HTTP's in {lower} of {len(pairs)} pairs")
PY
