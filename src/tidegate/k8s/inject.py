"""What the admission webhook does to a pod: pod in, JSONPatch (or a refusal) out. No I/O.

A pod is governed when its template says `tidegate.io/inject: "true"` (or its
namespace opted in, which the webhook configuration's namespaceSelector tells
the server by the path it calls). The patch sets the agent's environment on
one container (the annotation `tidegate.io/container`, else
`kubectl.kubernetes.io/default-container`, else the first), mounts the agent
Secret (token, CA) and a state directory, adds a readiness probe on the
agent's `/ready` when the container has none, a `preStop` that drains through
the agent when it has none, raises `terminationGracePeriodSeconds` to the
drain timeout plus a margin, and marks the pod `tidegate.io/injected`, so a
second pass (reinvocation) changes nothing. Way (b), `tidegate.io/mode: copy`,
also adds an init container that copies a self-contained agent into an
emptyDir, which `PYTHONPATH` then points at.

Every check runs before any operation is made: a pod is patched whole or
refused whole, with a message naming the annotation and what is wrong.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tidegate.core import names

PREFIX = "tidegate.io/"
INJECT = PREFIX + "inject"
STATUS = PREFIX + "injected"
#: The annotations a pod may carry (besides STATUS, which the webhook writes) and what each means.
ANNOTATIONS: Mapping[str, str] = {
    INJECT: '"true" to govern this pod, "false" to keep it out even in an opted-in namespace',
    PREFIX + "service": "the service name (default: the label app.kubernetes.io/name, then app)",
    PREFIX + "tag": "the instance's tag, i.e. its lane (default: the label tidegate.io/tag; none: base)",
    PREFIX + "container": "the container to govern (default: kubectl.kubernetes.io/default-container, else the first)",
    PREFIX + "mode": '"installed" (the image has tidegate: env only) or "copy" (an init container copies the agent in)',
    PREFIX + "drain-timeout": "seconds a drain waits for in-flight requests (1..600; default the webhook's)",
}
MODES = ("installed", "copy")

SECRET_VOLUME = "tidegate-secret"
STATE_VOLUME = "tidegate-state"
AGENT_VOLUME = "tidegate-agent"
SECRET_DIR = "/var/run/tidegate/secret"
STATE_DIR = "/var/run/tidegate/state"
AGENT_DIR = "/var/run/tidegate/agent"  # way (b): the copied agent (tidegate's package) lives here
AGENT_BOOTSTRAP = AGENT_DIR + "/tidegate/agent/bootstrap"
COPY_CONTAINER = "tidegate-agent-copy"


@dataclass(frozen=True, slots=True)
class InjectSettings:
    """What the webhook injects, from its flags (the same for every pod)."""

    control: str  # TIDEGATE_CONTROL, e.g. https://tidegate-control.tidegate.svc:7070
    secret: str = "tidegate-agent"  # the Secret holding the agent token (key `agent`) and the CA (key `ca.crt`)
    admin_port: int = 9901
    drain_timeout_s: int = 20
    grace_margin_s: int = 10  # terminationGracePeriodSeconds >= drain timeout + this (the server's own stop)
    mode: str = "installed"
    #: Way (a): where the image's tidegate keeps its bootstrap sitecustomize (`tidegate k8s bootstrap-dir` in the image prints it).
    bootstrap_dir: str = "/usr/local/lib/python3.11/site-packages/tidegate/agent/bootstrap"
    agent_image: str = "tidegate:0.1.0"  # way (b): the image the init container copies the agent from
    python: str = "python"  # the app image's Python, for the preStop's `python -m tidegate offline`
    probe_period_s: int = 2


class Refusal(ValueError):
    """The pod's annotations cannot be honoured; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The webhook's answer for one pod: a patch (possibly empty: nothing to do) or a refusal."""

    patch: list[dict[str, Any]] = field(default_factory=list)
    refusal: str = ""
    reason: str = ""  # why nothing was done, for the log ("not annotated", "already injected")


def decide(pod: Mapping[str, Any], settings: InjectSettings, namespace_opted_in: bool = False) -> Decision:
    """The patch that governs `pod`, an empty one when it is not to be governed, or a refusal."""
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        return Decision(refusal="metadata.annotations is not a map")
    if STATUS in annotations:
        return Decision(reason="already injected")
    wanted = annotations.get(INJECT)
    if wanted is not None and wanted not in ("true", "false"):
        return Decision(refusal=f'annotation {INJECT}: {wanted!r} is not "true" or "false"')
    if wanted == "false" or (wanted is None and not namespace_opted_in):
        return Decision(reason="not asked for")
    try:
        return Decision(patch=_patch(pod, annotations, settings))
    except Refusal as refusal:
        return Decision(refusal=str(refusal))


def review(document: Any, settings: InjectSettings, namespace_opted_in: bool = False) -> dict[str, Any]:
    """The AdmissionReview v1 response to an AdmissionReview v1 request (a ValueError for a document
    that is not one: the server answers 400). Anything but a pod's CREATE is allowed untouched."""
    if not isinstance(document, dict) or document.get("kind") != "AdmissionReview" or not isinstance(document.get("request"), dict):
        raise ValueError("body is not an AdmissionReview (kind AdmissionReview with a request)")
    request = document["request"]
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ValueError("request.uid is missing")
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    kind = request.get("kind") or {}
    pod = request.get("object")
    if isinstance(kind, dict) and kind.get("kind") == "Pod" and request.get("operation", "CREATE") == "CREATE" and isinstance(pod, dict):
        decision = decide(pod, settings, namespace_opted_in)
        if decision.refusal:
            response["allowed"] = False
            response["status"] = {"code": 400, "reason": "BadRequest", "message": f"tidegate: {decision.refusal}"}
        elif decision.patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(decision.patch).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


# -- the patch --------------------------------------------------------------------------------


def _patch(pod: Mapping[str, Any], annotations: Mapping[str, Any], settings: InjectSettings) -> list[dict[str, Any]]:
    unknown = sorted(key for key in annotations if isinstance(key, str) and key.startswith(PREFIX) and key not in ANNOTATIONS)
    if unknown:
        raise Refusal(f"unknown annotation {unknown[0]!r}; tidegate's are {', '.join(sorted(ANNOTATIONS))}")
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    spec = pod.get("spec")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("containers"), list) or not spec["containers"]:
        raise Refusal("the pod has no containers")
    service = _text(annotations, "service") or str(labels.get("app.kubernetes.io/name") or labels.get("app") or "")
    if not service:
        raise Refusal(f"no service name: set the annotation {PREFIX}service (or the label app.kubernetes.io/name or app)")
    if not names.is_service_name(service):
        raise Refusal(f"service {service!r} is not a service name ({names.SERVICE_NAME_RULE})")
    tag = _text(annotations, "tag") or str(labels.get(PREFIX + "tag") or "")
    if not names.is_tag(tag):
        raise Refusal(f"annotation {PREFIX}tag: {tag!r} is not a tag ({names.TAG_RULE})")
    mode = _text(annotations, "mode") or settings.mode
    if mode not in MODES:
        raise Refusal(f"annotation {PREFIX}mode: {mode!r} is not one of {', '.join(MODES)}")
    drain = _drain_timeout(annotations, settings)
    index, container = _container(spec["containers"], annotations)
    volumes = [SECRET_VOLUME, STATE_VOLUME] + ([AGENT_VOLUME] if mode == "copy" else [])
    taken = {v.get("name") for v in spec.get("volumes") or [] if isinstance(v, Mapping)}
    clash = [v for v in volumes if v in taken]
    if clash:
        raise Refusal(f"the pod already has a volume named {clash[0]!r}, which tidegate mounts; rename it")
    env = _env(container, service, tag, mode, drain, settings)

    ops: list[dict[str, Any]] = []
    path = f"/spec/containers/{index}"
    ops += _add_items(f"{path}/env", container.get("env"), env)
    mounts: list[dict[str, Any]] = [
        {"name": SECRET_VOLUME, "mountPath": SECRET_DIR, "readOnly": True},
        {"name": STATE_VOLUME, "mountPath": STATE_DIR},
    ]
    if mode == "copy":
        mounts.append({"name": AGENT_VOLUME, "mountPath": AGENT_DIR, "readOnly": True})
    ops += _add_items(f"{path}/volumeMounts", container.get("volumeMounts"), mounts)
    pythonpath = _pythonpath_index(container)
    if pythonpath is not None:
        position, value = pythonpath
        ops.append({"op": "replace", "path": f"{path}/env/{position}/value", "value": f"{_bootstrap(mode, settings)}:{value}"})
    if "readinessProbe" not in container:
        probe = {
            "httpGet": {"path": "/ready", "port": settings.admin_port},
            "periodSeconds": settings.probe_period_s,
            "failureThreshold": 1,
        }
        ops.append({"op": "add", "path": f"{path}/readinessProbe", "value": probe})
    pre_stop = {"exec": {"command": [settings.python, "-m", "tidegate", "offline"]}}
    lifecycle = container.get("lifecycle")
    if not isinstance(lifecycle, Mapping):
        ops.append({"op": "add", "path": f"{path}/lifecycle", "value": {"preStop": pre_stop}})
    elif "preStop" not in lifecycle:
        ops.append({"op": "add", "path": f"{path}/lifecycle/preStop", "value": pre_stop})
    # An app's own preStop stays as it is (it may wait for endpoints to update): SIGTERM drains then.
    secret_volume = {"name": SECRET_VOLUME, "secret": {"secretName": settings.secret, "defaultMode": 0o400}}
    new_volumes = [secret_volume, {"name": STATE_VOLUME, "emptyDir": {}}]
    if mode == "copy":
        new_volumes.append({"name": AGENT_VOLUME, "emptyDir": {}})
        copier = {
            "name": COPY_CONTAINER,
            "image": settings.agent_image,
            "command": ["tidegate", "k8s", "copy-agent", AGENT_DIR],
            "volumeMounts": [{"name": AGENT_VOLUME, "mountPath": AGENT_DIR}],
        }
        ops += _add_items("/spec/initContainers", spec.get("initContainers"), [copier])
    ops += _add_items("/spec/volumes", spec.get("volumes"), new_volumes)
    grace = drain + settings.grace_margin_s
    current = spec.get("terminationGracePeriodSeconds")
    if not isinstance(current, int) or current < grace:
        ops.append({"op": "add", "path": "/spec/terminationGracePeriodSeconds", "value": grace})
    status = container["name"]
    if metadata.get("annotations") is None:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {STATUS: status}})
    else:
        ops.append({"op": "add", "path": "/metadata/annotations/" + STATUS.replace("~", "~0").replace("/", "~1"), "value": status})
    return ops


def _text(annotations: Mapping[str, Any], key: str) -> str:
    value = annotations.get(PREFIX + key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Refusal(f"annotation {PREFIX}{key} must be a string")
    return value.strip()


def _drain_timeout(annotations: Mapping[str, Any], settings: InjectSettings) -> int:
    text = _text(annotations, "drain-timeout")
    if not text:
        return settings.drain_timeout_s
    if not text.isdigit() or not 1 <= int(text) <= 600:
        raise Refusal(f"annotation {PREFIX}drain-timeout: {text!r} is not a whole number of seconds in 1..600")
    return int(text)


def _container(containers: list[Any], annotations: Mapping[str, Any]) -> tuple[int, Mapping[str, Any]]:
    named = _text(annotations, "container") or str(annotations.get("kubectl.kubernetes.io/default-container") or "")
    for index, container in enumerate(containers):
        if not isinstance(container, Mapping) or not isinstance(container.get("name"), str):
            raise Refusal(f"spec.containers[{index}] has no name")
        if not named or container["name"] == named:
            return index, container
    raise Refusal(f"annotation {PREFIX}container: the pod has no container {named!r} ({', '.join(c['name'] for c in containers)})")


def _env(container: Mapping[str, Any], service: str, tag: str, mode: str, drain: int, settings: InjectSettings) -> list[dict[str, Any]]:
    """The agent's variables the container does not set itself (what it sets, it keeps)."""
    existing = container.get("env") or []
    if not isinstance(existing, list):
        raise Refusal(f"container {container['name']!r}: env is not a list")
    have = {e.get("name") for e in existing if isinstance(e, Mapping)}
    pythonpath = _pythonpath_index(container)
    if "PYTHONPATH" in have and pythonpath is None:
        raise Refusal(
            f"container {container['name']!r}: PYTHONPATH comes from valueFrom, which the agent's directory cannot be put in front of"
        )
    values: list[dict[str, Any]] = [
        {"name": "TIDEGATE_AGENT", "value": "1"},
        {"name": "TIDEGATE_SERVICE", "value": service},
        {"name": "TIDEGATE_CONTROL", "value": settings.control},
        {"name": "TIDEGATE_TOKEN_FILE", "value": f"{SECRET_DIR}/agent"},
        {"name": "TIDEGATE_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "TIDEGATE_ADMIN_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "TIDEGATE_ADMIN_PORT", "value": str(settings.admin_port)},
        {"name": "TIDEGATE_DRAIN_TIMEOUT", "value": str(drain)},
        {"name": "TIDEGATE_STATE_DIR", "value": STATE_DIR},
    ]
    if tag:
        values.insert(2, {"name": "TIDEGATE_TAG", "value": tag})
    if settings.control.startswith("https:"):
        values.append({"name": "TIDEGATE_CA", "value": f"{SECRET_DIR}/ca.crt"})
    if pythonpath is None:
        values.append({"name": "PYTHONPATH", "value": _bootstrap(mode, settings)})
    return [v for v in values if v["name"] not in have]


def _pythonpath_index(container: Mapping[str, Any]) -> tuple[int, str] | None:
    for position, item in enumerate(container.get("env") or []):
        if isinstance(item, Mapping) and item.get("name") == "PYTHONPATH" and isinstance(item.get("value"), str):
            return position, item["value"]
    return None


def _bootstrap(mode: str, settings: InjectSettings) -> str:
    """PYTHONPATH's head: the bootstrap sitecustomize's folder (way (b): and the copied agent's)."""
    return f"{AGENT_BOOTSTRAP}:{AGENT_DIR}" if mode == "copy" else settings.bootstrap_dir


def _add_items(path: str, existing: Any, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Operations appending `items` to the list at `path`, made when it is absent."""
    if not items:
        return []
    if not existing:
        return [{"op": "add", "path": path, "value": items}]
    return [{"op": "add", "path": f"{path}/-", "value": item} for item in items]
