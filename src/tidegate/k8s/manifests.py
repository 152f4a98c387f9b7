"""The objects `tidegate k8s manifests` writes: control plane, webhook, gateway, an example app.

`objects(options, secrets)` is pure (options and the credentials in, a list of
Kubernetes objects out); `make_secrets` makes the credentials: the three role
tokens, and a CA with the serving certificates of the control plane and the
webhook (by the `openssl` command). Nothing here calls the API server, so no
component needs API rights: their ServiceAccounts mount no API token, and the
MutatingWebhookConfiguration carries the CA as its `caBundle` from the start.
The output holds secrets (tokens, private keys): keep it like one.
"""

from __future__ import annotations

import base64
import secrets as random
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidegate.k8s.inject import InjectSettings

CONTROL_PORT = 7070
WEBHOOK_PORT = 8443
GATEWAY_PORT = 8080


@dataclass(frozen=True, slots=True)
class Options:
    namespace: str = "tidegate"
    image: str = "tidegate:0.1.0"
    app_namespace: str = "default"  # where the example app runs (and the agent Secret is made)
    storage_size: str = "1Gi"


@dataclass(frozen=True, slots=True)
class Credentials:
    admin: str
    agent: str
    read: str
    ca: str  # PEM
    control_cert: str
    control_key: str
    webhook_cert: str
    webhook_key: str


def control_url(options: Options) -> str:
    return f"https://tidegate-control.{options.namespace}.svc:{CONTROL_PORT}"


def objects(options: Options, credentials: Credentials) -> list[dict[str, Any]]:
    ns = options.namespace
    settings = InjectSettings(control=control_url(options))
    labels = {"app.kubernetes.io/part-of": "tidegate"}
    out: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}]
    for part in ("control", "webhook", "gateway"):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": f"tidegate-{part}", "namespace": ns, "labels": labels},
                "automountServiceAccountToken": False,  # nothing here calls the API server
            }
        )
    out.append(_secret("tidegate-tokens", ns, {"admin": credentials.admin, "agent": credentials.agent, "read": credentials.read}))
    out.append(_tls_secret("tidegate-control-tls", ns, credentials.control_cert, credentials.control_key, credentials.ca))
    out.append(_tls_secret("tidegate-webhook-tls", ns, credentials.webhook_cert, credentials.webhook_key, credentials.ca))
    for where in sorted({ns, options.app_namespace}):  # the agent token and the CA, for governed pods and the gateway
        out.append(_secret(settings.secret, where, {"agent": credentials.agent, "ca.crt": credentials.ca}))
    out.append(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "tidegate-control", "namespace": ns, "labels": labels},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": options.storage_size}}},
        }
    )
    control = _container(
        "tidegate-control",
        options.image,
        ["tidegate", "control", "--host", "0.0.0.0", "--port", str(CONTROL_PORT), "--data", "/data"]
        + ["--token-file", "/tokens/admin", "--cert", "/tls/tls.crt", "--key", "/tls/tls.key"]
        + ["--allowed-host", "tidegate-control", "--allowed-host", f"tidegate-control.{ns}.svc"],
        CONTROL_PORT,
        [("data", "/data", False), ("tokens", "/tokens", True), ("tls", "/tls", True)],
        probe_scheme="HTTPS",
        probe_path="/v1/health",
    )
    # The control plane makes DATA/tokens/{agent,read} on first start unless they exist: put the Secret's there first.
    seed = {
        "name": "tidegate-tokens",
        "image": options.image,
        "command": [
            "sh",
            "-c",
            "mkdir -p -m 700 /data/tokens && for r in agent read; do [ -e /data/tokens/$r ] || install -m 600 /tokens/$r /data/tokens/$r; done",
        ],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tokens", "mountPath": "/tokens", "readOnly": True}],
    }
    volumes = [
        {"name": "data", "persistentVolumeClaim": {"claimName": "tidegate-control"}},
        {"name": "tokens", "secret": {"secretName": "tidegate-tokens", "defaultMode": 0o400}},
        {"name": "tls", "secret": {"secretName": "tidegate-control-tls", "defaultMode": 0o400}},
    ]
    out += _deployment("tidegate-control", ns, control, volumes, init=[seed], strategy="Recreate")  # one writer of the SQLite file
    out.append(_service("tidegate-control", ns, CONTROL_PORT))
    webhook = _container(
        "tidegate-webhook",
        options.image,
        [
            "tidegate",
            "k8s",
            "webhook",
            "--cert",
            "/tls/tls.crt",
            "--key",
            "/tls/tls.key",
            "--port",
            str(WEBHOOK_PORT),
            "--control",
            settings.control,
        ],
        WEBHOOK_PORT,
        [("tls", "/tls", True)],
        probe_scheme="HTTPS",
        probe_path="/healthz",
    )
    out += _deployment("tidegate-webhook", ns, webhook, [{"name": "tls", "secret": {"secretName": "tidegate-webhook-tls"}}], replicas=2)
    out.append(_service("tidegate-webhook", ns, 443, target=WEBHOOK_PORT))
    out.append(_webhook_configuration(ns, credentials.ca))
    gateway = _container(
        "tidegate-gateway",
        options.image,
        ["tidegate", "gateway", "--host", "0.0.0.0", "--port", str(GATEWAY_PORT), "--control", settings.control],
        GATEWAY_PORT,
        [("agent", "/var/run/tidegate/secret", True)],
    )
    gateway["env"] = [
        {"name": "TIDEGATE_TOKEN_FILE", "value": "/var/run/tidegate/secret/agent"},
        {"name": "TIDEGATE_CA", "value": "/var/run/tidegate/secret/ca.crt"},
    ]
    del gateway["readinessProbe"]  # the gateway's own readiness path is its helper's to name
    out += _deployment(
        "tidegate-gateway", ns, gateway, [{"name": "agent", "secret": {"secretName": settings.secret, "defaultMode": 0o400}}]
    )
    out.append(_service("tidegate-gateway", ns, 80, target=GATEWAY_PORT))
    out += example_app(options.app_namespace)
    return out


def example_app(namespace: str, image: str = "registry.example.com/orders:1.0") -> list[dict[str, Any]]:
    """An annotated Deployment (orders, base lane; its image has tidegate installed) and its Service:
    the one annotation is all that governs it."""
    container = {
        "name": "orders",
        "image": image,
        "command": ["uvicorn", "app:app", "--host", "0.0.0.0", "--port", "8000"],
        "ports": [{"containerPort": 8000, "name": "http"}],
    }
    deployment = _deployment("orders", namespace, container, [])[0]
    deployment["spec"]["template"]["metadata"]["annotations"] = {"tidegate.io/inject": "true"}
    return [deployment, _service("orders", namespace, 80, target=8000)]


def make_credentials(openssl: str = "openssl", namespace: str = "tidegate") -> Credentials:
    """New role tokens, and a CA with serving certificates for the control plane and the webhook."""
    with tempfile.TemporaryDirectory(prefix="tidegate-k8s-") as folder:
        here = Path(folder)
        _openssl(
            openssl,
            *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650"),
            *("-subj", "/CN=tidegate CA", "-keyout", str(here / "ca.key"), "-out", str(here / "ca.crt")),
        )
        pairs = {}
        for part in ("control", "webhook"):
            dns = [f"tidegate-{part}", f"tidegate-{part}.{namespace}", f"tidegate-{part}.{namespace}.svc"]
            _openssl(
                openssl,
                *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "825"),
                *("-subj", f"/CN={dns[-1]}", "-addext", "subjectAltName=" + ",".join(f"DNS:{d}" for d in dns)),
                *("-CA", str(here / "ca.crt"), "-CAkey", str(here / "ca.key")),
                *("-keyout", str(here / f"{part}.key"), "-out", str(here / f"{part}.crt")),
            )
            pairs[part] = ((here / f"{part}.crt").read_text(), (here / f"{part}.key").read_text())
        ca = (here / "ca.crt").read_text()

    def token() -> str:
        return "tg_" + random.token_urlsafe(32)

    return Credentials(token(), token(), token(), ca, *pairs["control"], *pairs["webhook"])


def _openssl(openssl: str, *args: str) -> None:
    try:
        subprocess.run([openssl, *args], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise RuntimeError(f"cannot make the certificates: no {openssl!r} command (install openssl)") from None
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"openssl failed making the certificates: {error.stderr.strip()}") from None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {key: _b64(value) for key, value in data.items()},
    }


def _tls_secret(name: str, namespace: str, cert: str, key: str, ca: str) -> dict[str, Any]:
    secret = _secret(name, namespace, {"tls.crt": cert, "tls.key": key, "ca.crt": ca})
    secret["type"] = "kubernetes.io/tls"
    return secret


def _container(
    name: str,
    image: str,
    command: list[str],
    port: int,
    mounts: list[tuple[str, str, bool]],
    probe_scheme: str = "HTTP",
    probe_path: str = "/",
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "command": command,
        "ports": [{"containerPort": port, "name": "serve"}],
        "volumeMounts": [{"name": v, "mountPath": path, "readOnly": read_only} for v, path, read_only in mounts],
        "readinessProbe": {"httpGet": {"path": probe_path, "port": port, "scheme": probe_scheme}, "periodSeconds": 5},
    }


def _deployment(
    name: str,
    namespace: str,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    init: list[dict[str, Any]] | None = None,
    replicas: int = 1,
    strategy: str = "RollingUpdate",
) -> list[dict[str, Any]]:
    pod: dict[str, Any] = {"containers": [container]}
    if name.startswith("tidegate-"):
        pod["serviceAccountName"] = name
    if volumes:
        pod["volumes"] = volumes
    if init:
        pod["initContainers"] = init
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": name}},
            "spec": {
                "replicas": replicas,
                "strategy": {"type": strategy},
                "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                "template": {"metadata": {"labels": {"app.kubernetes.io/name": name}}, "spec": pod},
            },
        }
    ]


def _service(name: str, namespace: str, port: int, target: int | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app.kubernetes.io/name": name}, "ports": [{"port": port, "targetPort": target or port, "name": "serve"}]},
    }


def _webhook_configuration(namespace: str, ca: str) -> dict[str, Any]:
    """Two webhooks on one server: pods annotated `tidegate.io/inject: "true"` anywhere but in the
    system namespaces, and every pod (unless annotated "false") of namespaces labelled to opt in."""
    system = {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "kube-node-lease", namespace]}

    def hook(name: str, path: str, selector: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "admissionReviewVersions": ["v1"],
            "clientConfig": {
                "service": {"name": "tidegate-webhook", "namespace": namespace, "path": path, "port": 443},
                "caBundle": _b64(ca),
            },
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": selector,
            "failurePolicy": "Ignore",  # a webhook that is down leaves pods ungoverned, never unscheduled
            "sideEffects": "None",
            "reinvocationPolicy": "IfNeeded",  # reinvoked after other webhooks: the injected annotation makes it a no-op
            "timeoutSeconds": 5,
            "matchPolicy": "Equivalent",
        }

    opted_in = {"key": "tidegate.io/inject", "operator": "In", "values": ["enabled"]}
    not_opted_in = {"key": "tidegate.io/inject", "operator": "NotIn", "values": ["enabled"]}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "tidegate"},
        "webhooks": [
            hook("annotated.inject.tidegate.io", "/mutate", {"matchExpressions": [system, not_opted_in]}),
            hook("namespace.inject.tidegate.io", "/mutate-namespace", {"matchExpressions": [system, opted_in]}),
        ],
    }
