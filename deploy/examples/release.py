"""Called by the `release` Exec sink of release-on-image.yaml as:

    release.py <docker://registry/repository> <tag>

The event (structured JSON) is on standard input; its data holds the repository, tag and digest.
Deploys by digest, so that the release is the image that was pushed even if the tag moves.
"""

import json
import sys

source, tag = sys.argv[1], sys.argv[2]
data = json.load(sys.stdin)["data"]
image = f"{source.removeprefix('docker://')}@{data['digest']}"
print(f"release: {data['repository']}:{tag} -> {image}", file=sys.stderr)
# Replace with the real rollout, e.g.:
#   subprocess.run(["kubectl", "set", "image", "deployment/app", f"app={image}"], check=True)
