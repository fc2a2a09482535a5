#!/bin/sh
# Called by the `build` Exec sink of build-on-push.yaml as: build.sh <repository URL> <compare range>.
# The event (structured JSON) is on standard input; its data is GitHub's push payload.
set -eu
repo=$1
range=$2
event=$(cat)
ref=$(printf '%s' "$event" | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["ref"])')
after=$(printf '%s' "$event" | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["after"])')
case "$ref" in
  refs/heads/main|refs/heads/master) ;;
  *) echo "build: $ref is not the main branch; nothing to do" >&2; exit 0 ;;
esac
echo "build: $repo $ref at $after ($range)" >&2
# Replace with the real build, e.g.:
#   git -C /srv/build fetch "$repo" "$after" && git -C /srv/build checkout --detach "$after" && make -C /srv/build
