#!/usr/bin/env bash
# Checks deploy/Dockerfile's runtime stage without Docker: a Debian 12 minbase root (what
# debian:12-slim is built from), the stage's own `RUN` line run in it, then the release binary,
# the ONNX Runtime library and the models copied in as the stage copies them, and, as the
# image's user (uid 10001): --version, validate, the audio and video media pipelines on files
# made here, and `serve` taking an event into a File sink and draining on SIGTERM.
#
#   sudo deploy/check-runtime-stage.sh            # ROOT=/tmp/triggerfish-runtime by default
#
# Needs root (debootstrap, chroot), debootstrap, the release binary (scripts/dev run builds
# it), $TRIGGERFISH_CACHE from scripts/dev setup, and ffmpeg and espeak-ng for the media.
# The build stage is not checked here: it needs the rust image from Docker Hub.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-/tmp/triggerfish-runtime}
CACHE=${TRIGGERFISH_CACHE:-$HOME/.cache/triggerfish}
BIN=${TRIGGERFISH_BIN:-target/release/triggerfish}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
[ -x "$BIN" ] || { echo "no $BIN: build it first (scripts/dev run)" >&2; exit 1; }
command -v debootstrap > /dev/null || apt-get install -y --no-install-recommends debootstrap

if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
  debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR"
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
trap 'umount "$ROOT/proc" 2> /dev/null || true' EXIT
# The runtime stage's RUN line, as written (from the FROM line to the end of the command).
awk '/^FROM debian:12-slim/ {f = 1} f && /^RUN/ {r = 1} r {print} r && !/\\$/ {exit}' \
  deploy/Dockerfile | sed '1s/^RUN //' > "$ROOT/tmp/runtime-stage.sh"
grep -q '^triggerfish:' "$ROOT/etc/passwd" || chroot "$ROOT" sh -e /tmp/runtime-stage.sh
# The stage's COPY lines.
install -m 0755 "$BIN" "$ROOT/usr/local/bin/triggerfish"
mkdir -p "$ROOT/opt/triggerfish"
cp -r "$CACHE/onnxruntime" "$CACHE/models" "$ROOT/opt/triggerfish/"

work="$ROOT/var/lib/triggerfish"
espeak-ng -w "$work/speech.wav" "Triggerfish routes events to media workers"
ffmpeg -loglevel error -y -f lavfi -i "color=c=white:s=320x240:d=2" \
  -vf "drawtext=text='HELLO 42':fontsize=48:fontcolor=black:x=40:y=90" \
  -c:v libx264 -pix_fmt yuv420p "$work/clip.mp4"
cat > "$ROOT/etc/triggerfish/config.yaml" << 'EOF'
apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  listen: {http: "127.0.0.1:18280", admin: "127.0.0.1:18290", quic: "127.0.0.1:18243"}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: keep}
spec:
  broker: default
  subscriber: {ref: {apiVersion: triggerfish.dev/v1alpha1, kind: File, name: kept}}
EOF
rm -rf "$work/data" "$work"/*.triggerfish
chown -R 10001:10001 "$work"

# As the image runs: uid 10001, its ENV and WORKDIR, nothing else in the environment.
as_image() {
  chroot --userspec=10001:10001 "$ROOT" env -i TRIGGERFISH_CACHE=/opt/triggerfish \
    HOME=/var/lib/triggerfish PATH=/usr/local/bin:/usr/bin:/bin \
    sh -c "cd /var/lib/triggerfish && $1"
}
as_image "triggerfish --version && triggerfish validate --config /etc/triggerfish/config.yaml"
as_image "triggerfish media run -p audio speech.wav > /dev/null"
as_image "triggerfish media run -p video clip.mp4 > /dev/null"
grep -q '"HELLO 42"' "$work/clip.mp4.triggerfish/text.json"
echo "media: audio and video pipelines ran; the video's text was read"

as_image "exec triggerfish serve --config /etc/triggerfish/config.yaml" > "$ROOT/tmp/serve.log" 2>&1 &
for _ in $(seq 50); do curl -sf localhost:18290/readyz > /dev/null && break; sleep 0.2; done
code=$(curl -s -o /dev/null -w '%{http_code}' localhost:18280/default/default \
  -H 'ce-specversion: 1.0' -H 'ce-id: image-1' -H 'ce-source: /check' -H 'ce-type: t' \
  -H 'content-type: application/json' -d '{"from": "the image"}')
[ "$code" = 202 ] || { echo "ingress answered $code" >&2; cat "$ROOT/tmp/serve.log" >&2; exit 1; }
for _ in $(seq 50); do grep -qs image-1 "$work/data/sinks/default/kept.jsonl" && break; sleep 0.2; done
grep image-1 "$work/data/sinks/default/kept.jsonl"
pkill -TERM -f "triggerfish serve --config /etc/triggerfish/config.yaml"
for _ in $(seq 50); do grep -q "all accepted events were handled" "$ROOT/tmp/serve.log" && break; sleep 0.2; done
grep -q "all accepted events were handled" "$ROOT/tmp/serve.log"
echo "serve: an event in, to the File sink; drained on SIGTERM"
echo "the runtime stage runs the binary: OK"
