#!/usr/bin/env python3
"""Validates the Kubernetes manifests under deploy/kubernetes/ without a cluster.

- Every resource of the base, and every resource the GPU overlay patches (its strategic-merge
  patches applied here the way kustomize applies them), against the Kubernetes OpenAPI
  schemas that `kubernetes-validate` ships, in strict mode (unknown fields are errors).
- The KEDA ScaledObject, a custom resource those schemas lack, against the ScaledObject schema
  below, written from KEDA's documentation of the fields used; and, when KEDA_CRD names KEDA's
  CRD file (config/crd/bases/keda.sh_scaledobjects.yaml of a KEDA release), against the CRD's
  own openAPIV3Schema too.
- Cross-references: the kustomizations' files exist, the ScaledObject targets the worker
  Deployment and the stream and consumer of a broker of the router's config, the router's
  NATS URLs name the StatefulSet's pods, streamReplicas fits the NATS cluster.
- Writes each Triggerfish config found in a ConfigMap to OUT_DIR (argument 1), as
  <configmap>.<key>, for `triggerfish validate`, and the NATS config as nats.conf.

Run with the venv `scripts/dev setup` makes: $TRIGGERFISH_CACHE/venv/k8s/bin/python.
Exits 1 with every problem listed.
"""

import copy
import os
import sys

import jsonschema
import kubernetes_validate
import yaml

ROOT = os.path.dirname(os.path.abspath(__file__))
KUBERNETES_VERSION = "1.31.0"

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


def cross_check(resources, where):
    router_cm = find(resources, "ConfigMap", "triggerfish-config")
    nats = find(resources, "StatefulSet", "nats")
    scaled = find(resources, "ScaledObject", "triggerfish-worker")
    if not (router_cm and nats and scaled):
        problem(where, "expected ConfigMap triggerfish-config, StatefulSet nats and ScaledObject triggerfish-worker")
        return
    docs = list(yaml.safe_load_all(router_cm["data"]["config.yaml"]))
    server = next(d for d in docs if d["kind"] == "Server")["spec"]
    store = server["store"]
    urls = store["url"].split(",")
    pods = [f"nats://{nats['metadata']['name']}-{i}.{nats['spec']['serviceName']}:4222"
            for i in range(nats["spec"]["replicas"])]
    if sorted(urls) != sorted(pods):
        problem(where, f"the router's NATS URLs {urls} are not the StatefulSet's pods {pods}")
    if store.get("streamReplicas", 1) > nats["spec"]["replicas"]:
        problem(where, "streamReplicas is larger than the NATS cluster")
    brokers = {(d["metadata"].get("namespace", "default"), d["metadata"]["name"])
               for d in docs if d["kind"] == "Broker"}
    streams = {f"TF_{ns}_{name}".replace(".", "_") for ns, name in brokers}
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    if trigger["stream"] not in streams:
        problem(where, f"ScaledObject stream {trigger['stream']} is no broker's stream ({sorted(streams)})")
    if trigger["consumer"] != "tf-unordered":
        problem(where, "ScaledObject consumer must be tf-unordered, the unordered triggers' consumer")
    if not trigger["natsServerMonitoringEndpoint"].startswith(nats["spec"]["serviceName"] + "."):
        problem(where, "ScaledObject must ask the headless NATS Service, so that KEDA reaches each node")
    # The schemas leave `image` optional (the API server requires it): a patch naming a
    # container that does not exist adds one without an image.
    for _, r in resources:
        if r["kind"] in ("Deployment", "StatefulSet"):
            for c in r["spec"]["template"]["spec"]["containers"]:
                if not c.get("image"):
                    problem(where, f"{r['kind']}/{r['metadata']['name']} containers: {c['name']} has no image")
    target = scaled["spec"]["scaleTargetRef"]["name"]
    if not find(resources, "Deployment", target):
        problem(where, f"ScaledObject targets Deployment {target}, which does not exist")


def export_configs(resources, out):
    os.makedirs(out, exist_ok=True)
    for _, r in resources:
        if r["kind"] != "ConfigMap":
            continue
        for key, text in r.get("data", {}).items():
            name = f"{r['metadata']['name']}.{key}"
            with open(os.path.join(out, name), "w") as f:
                f.write(text)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else None
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
    checked = len(base) + len([w for w, _ in gpu if "+" in w])
    if problems:
        print("\n".join(problems))
        print(f"{len(problems)} problems in the manifests")
        sys.exit(1)
    print(f"{checked} resources valid (Kubernetes {KUBERNETES_VERSION}, strict; KEDA ScaledObject"
          f"{' and KEDA_CRD' if os.environ.get('KEDA_CRD') else ''})")


if __name__ == "__main__":
    main()
