"""`tidegate k8s manifests`: every object it writes validates strictly against the Kubernetes schema
offline; the webhook configuration is what the issue asks; the TLS pairs and the caBundle belong
together; and the example app, admitted through the webhook, validates as a governed pod."""

from __future__ import annotations

import base64
import json
import os
import ssl
import stat
import subprocess
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from tests.support.procs import TIDEGATE
from tidegate.k8s.inject import InjectSettings, review
from tidegate.k8s.manifests import Options, control_url

K8S = kv_utils.latest_version()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    path = tmp_path_factory.mktemp("manifests") / "tidegate.yaml"
    done = subprocess.run(
        [*TIDEGATE, "k8s", "manifests", "--app-namespace", "shop", "-o", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return path, list(yaml.safe_load_all(path.read_text()))


def test_every_object_validates_strictly(written: tuple[Path, list[dict[str, Any]]]) -> None:
    path, objects = written
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, "it holds tokens and keys"
    kinds = sorted({(o["kind"], o["metadata"]["name"]) for o in objects})
    for expected in [
        ("Deployment", "tidegate-control"),
        ("Service", "tidegate-control"),
        ("PersistentVolumeClaim", "tidegate-control"),
        ("Deployment", "tidegate-webhook"),
        ("Service", "tidegate-webhook"),
        ("MutatingWebhookConfiguration", "tidegate"),
        ("Deployment", "tidegate-gateway"),
        ("Service", "tidegate-gateway"),
        ("ServiceAccount", "tidegate-webhook"),
        ("Deployment", "orders"),
    ]:
        assert expected in kinds
    for obj in objects:
        kubernetes_validate.validate(obj, K8S, strict=True)


def test_the_webhook_configuration(written: tuple[Path, list[dict[str, Any]]]) -> None:
    [config] = [o for o in written[1] if o["kind"] == "MutatingWebhookConfiguration"]
    paths = sorted(hook["clientConfig"]["service"]["path"] for hook in config["webhooks"])
    assert paths == ["/mutate", "/mutate-namespace"]
    for hook in config["webhooks"]:
        assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None" and hook["reinvocationPolicy"] == "IfNeeded"
        assert hook["timeoutSeconds"] <= 10 and hook["admissionReviewVersions"] == ["v1"]
        assert hook["rules"][0]["resources"] == ["pods"] and hook["rules"][0]["operations"] == ["CREATE"]


def test_the_certificates_chain_to_the_ca_bundle(written: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    objects = written[1]
    [config] = [o for o in objects if o["kind"] == "MutatingWebhookConfiguration"]
    ca = base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"])
    (tmp_path / "ca.pem").write_bytes(ca)
    for name, dns in (("tidegate-webhook-tls", "tidegate-webhook.tidegate.svc"), ("tidegate-control-tls", "tidegate-control.tidegate.svc")):
        [secret] = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == name]
        (tmp_path / "cert.pem").write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
        (tmp_path / "key.pem").write_bytes(base64.b64decode(secret["data"]["tls.key"]))
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")  # a matching pair
        verified = subprocess.run(
            ["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "cert.pem")], capture_output=True, text=True
        )
        assert verified.returncode == 0, verified.stderr
        text = subprocess.run(
            ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(tmp_path / "cert.pem")], capture_output=True, text=True
        ).stdout
        assert f"DNS:{dns}" in text
    agents = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "tidegate-agent"]
    assert sorted(o["metadata"]["namespace"] for o in agents) == ["shop", "tidegate"]
    [tokens] = [o for o in objects if o["metadata"]["name"] == "tidegate-tokens"]
    assert base64.b64decode(agents[0]["data"]["agent"]) == base64.b64decode(tokens["data"]["agent"])


def test_the_example_app_admitted_through_the_webhook_is_a_valid_governed_pod(written: tuple[Path, list[dict[str, Any]]]) -> None:
    [app] = [o for o in written[1] if o["kind"] == "Deployment" and o["metadata"]["name"] == "orders"]
    template = app["spec"]["template"]
    assert template["metadata"]["annotations"] == {"tidegate.io/inject": "true"}
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "namespace": "shop"}, "spec": template["spec"]}
    document = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u1", "kind": {"kind": "Pod"}, "operation": "CREATE", "object": obj},
    }
    response = review(document, InjectSettings(control=control_url(Options())))["response"]
    patched = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(response["patch"])))
    kubernetes_validate.validate(patched, K8S, strict=True)
    assert any(e["name"] == "TIDEGATE_SERVICE" and e["value"] == "orders" for e in patched["spec"]["containers"][0]["env"])
