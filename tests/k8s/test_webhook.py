"""The admission webhook over real TLS (a trustme CA) with AdmissionReview v1 documents: the
returned JSONPatch is applied with `jsonpatch` and the pod validated offline against the
Kubernetes schema (`kubernetes-validate --strict`, which rejects unknown fields)."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import kubernetes_validate
import pytest
from kubernetes_validate import utils as kv_utils

from tests.k8s.pods import app_container, pod, review, sidecar
from tests.support.procs import TIDEGATE, Proc, free_port, wait_until
from tests.support.tls import Certificates, make_certificates
from tidegate.k8s.inject import AGENT_BOOTSTRAP, STATUS, InjectSettings
from tidegate.k8s.webhook import WebhookServer

SETTINGS = InjectSettings(
    control="https://tidegate-control.tidegate.svc:7070", bootstrap_dir="/app/.venv/lib/python3.12/site-packages/tidegate/agent/bootstrap"
)
K8S = kv_utils.latest_version()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def webhook(certs: Certificates) -> Iterator[httpx.Client]:
    server = WebhookServer(SETTINGS, str(certs.cert), str(certs.key), host="127.0.0.1", port=0)
    server.start()
    try:
        with httpx.Client(
            base_url=f"https://127.0.0.1:{server.port}", verify=ssl.create_default_context(cafile=str(certs.ca)), timeout=10
        ) as client:
            yield client
    finally:
        server.stop()


def admit(client: httpx.Client, obj: dict[str, Any], path: str = "/mutate") -> tuple[dict[str, Any], dict[str, Any]]:
    """(the AdmissionReview response, the pod after its patch: validated strictly)."""
    document = review(obj)
    answer = client.post(path, json=document)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    response = body["response"]
    assert response["uid"] == document["request"]["uid"]
    patched = obj
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        patched = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(response["patch"])))
    kubernetes_validate.validate(patched, K8S, strict=True)
    return response, patched


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_an_annotated_pod_without_probes_gets_the_agent(webhook: httpx.Client) -> None:
    response, patched = admit(webhook, pod({"tidegate.io/inject": "true", "tidegate.io/tag": "gray"}))
    assert response["allowed"] is True
    [container] = patched["spec"]["containers"]
    env = env_of(container)
    pod_ip = {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["TIDEGATE_SERVICE"] == "orders" and env["TIDEGATE_TAG"] == "gray" and env["TIDEGATE_AGENT"] == "1"
    assert env["TIDEGATE_HOST"] == pod_ip and env["TIDEGATE_ADMIN_HOST"] == pod_ip and env["TIDEGATE_ADMIN_PORT"] == "9901"
    assert env["TIDEGATE_CONTROL"] == SETTINGS.control and env["TIDEGATE_CA"] == "/var/run/tidegate/secret/ca.crt"
    assert env["TIDEGATE_TOKEN_FILE"] == "/var/run/tidegate/secret/agent" and "TIDEGATE_TOKEN" not in env
    assert env["PYTHONPATH"] == SETTINGS.bootstrap_dir
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 9901}
    assert container["lifecycle"]["preStop"] == {"exec": {"command": ["python", "-m", "tidegate", "offline"]}}
    assert patched["spec"]["terminationGracePeriodSeconds"] == 30  # 20 s drain + 10 s margin: the default already
    secret = next(v for v in patched["spec"]["volumes"] if v["name"] == "tidegate-secret")
    assert secret["secret"]["secretName"] == "tidegate-agent"
    assert patched["metadata"]["annotations"][STATUS] == "orders"
    again, same = admit(webhook, patched)
    assert again["allowed"] is True and "patch" not in again and same == patched, "a second pass changes nothing"


def test_what_a_container_sets_itself_it_keeps(webhook: httpx.Client) -> None:
    mine = app_container(
        env=[{"name": "PYTHONPATH", "value": "/app/src"}, {"name": "TIDEGATE_TAG", "value": "canary"}, {"name": "LOG", "value": "info"}],
        readinessProbe={"httpGet": {"path": "/healthz", "port": 8000}, "periodSeconds": 5},
        lifecycle={"preStop": {"exec": {"command": ["sleep", "5"]}}},
    )
    response, patched = admit(
        webhook, pod({"tidegate.io/inject": "true", "tidegate.io/drain-timeout": "45"}, terminationGracePeriodSeconds=40, containers=[mine])
    )
    [container] = patched["spec"]["containers"]
    env = env_of(container)
    assert env["PYTHONPATH"] == f"{SETTINGS.bootstrap_dir}:/app/src", "the bootstrap first, the app's path after it"
    assert env["TIDEGATE_TAG"] == "canary" and env["LOG"] == "info" and env["TIDEGATE_DRAIN_TIMEOUT"] == "45"
    assert [e["name"] for e in container["env"]].count("PYTHONPATH") == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz", "the app's probe stays"
    assert container["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "5"]}}, "the app's preStop stays (SIGTERM drains)"
    assert patched["spec"]["terminationGracePeriodSeconds"] == 55, "raised to the drain timeout + 10 s"


def test_several_containers_and_init_containers(webhook: httpx.Client) -> None:
    init = [{"name": "migrate", "image": "registry.example.com/orders:1.4.2", "command": ["alembic", "upgrade", "head"]}]
    obj = pod(
        {"tidegate.io/inject": "true", "kubectl.kubernetes.io/default-container": "orders", "tidegate.io/service": "orders-api"},
        containers=[sidecar(), app_container()],
        initContainers=init,
        volumes=[{"name": "envoy-config", "configMap": {"name": "envoy"}}],
    )
    response, patched = admit(webhook, obj)
    envoy, orders = patched["spec"]["containers"]
    assert envoy == sidecar(), "only the governed container changes"
    assert env_of(orders)["TIDEGATE_SERVICE"] == "orders-api"
    assert patched["spec"]["initContainers"] == init
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["envoy-config", "tidegate-secret", "tidegate-state"]
    assert patched["metadata"]["annotations"][STATUS] == "orders"


def test_way_b_copies_the_agent_in_with_an_init_container(webhook: httpx.Client) -> None:
    obj = pod({"tidegate.io/inject": "true", "tidegate.io/mode": "copy"}, initContainers=[{"name": "migrate", "image": "m:1"}])
    response, patched = admit(webhook, obj)
    migrate, copier = patched["spec"]["initContainers"]
    assert copier["command"] == ["tidegate", "k8s", "copy-agent", "/var/run/tidegate/agent"] and copier["image"] == SETTINGS.agent_image
    [container] = patched["spec"]["containers"]
    assert env_of(container)["PYTHONPATH"] == f"{AGENT_BOOTSTRAP}:/var/run/tidegate/agent"
    assert {"name": "tidegate-agent", "mountPath": "/var/run/tidegate/agent", "readOnly": True} in container["volumeMounts"]
    assert {"name": "tidegate-agent", "emptyDir": {}} in patched["spec"]["volumes"]


def test_a_namespace_that_opted_in_governs_every_pod_but_those_that_say_false(webhook: httpx.Client) -> None:
    plain, _ = admit(webhook, pod(None))
    assert plain["allowed"] and "patch" not in plain, "not annotated, not opted in: untouched"
    governed, patched = admit(webhook, pod(None), path="/mutate-namespace")
    assert "patch" in governed and patched["metadata"]["annotations"] == {STATUS: "orders"}
    declined, _ = admit(webhook, pod({"tidegate.io/inject": "false"}), path="/mutate-namespace")
    assert declined["allowed"] and "patch" not in declined


@pytest.mark.parametrize(
    ("annotations", "labels", "says"),
    [
        ({"tidegate.io/inject": "true", "tidegate.io/lane": "gray"}, None, "unknown annotation 'tidegate.io/lane'"),
        ({"tidegate.io/inject": "true", "tidegate.io/tag": "gray lane!"}, None, "tidegate.io/tag: 'gray lane!' is not a tag"),
        ({"tidegate.io/inject": "yes"}, None, "tidegate.io/inject: 'yes' is not"),
        ({"tidegate.io/inject": "true", "tidegate.io/mode": "sidecar"}, None, "tidegate.io/mode: 'sidecar'"),
        ({"tidegate.io/inject": "true", "tidegate.io/drain-timeout": "-3"}, None, "drain-timeout: '-3'"),
        ({"tidegate.io/inject": "true", "tidegate.io/container": "api"}, None, "no container 'api' (orders)"),
        ({"tidegate.io/inject": "true"}, {}, "no service name"),
    ],
)
def test_invalid_annotations_are_refused_whole_with_a_message(
    webhook: httpx.Client, annotations: dict[str, str], labels: Any, says: str
) -> None:
    response, patched = admit(webhook, pod(annotations, labels=labels))
    assert response["allowed"] is False and "patch" not in response
    assert says in response["status"]["message"] and response["status"]["code"] == 400


def test_a_pythonpath_from_valuefrom_is_refused_and_a_taken_volume_name_too(webhook: httpx.Client) -> None:
    from_config = app_container(env=[{"name": "PYTHONPATH", "valueFrom": {"configMapKeyRef": {"name": "paths", "key": "pythonpath"}}}])
    response, _ = admit(webhook, pod({"tidegate.io/inject": "true"}, containers=[from_config]))
    assert response["allowed"] is False and "PYTHONPATH comes from valueFrom" in response["status"]["message"]
    taken, _ = admit(webhook, pod({"tidegate.io/inject": "true"}, volumes=[{"name": "tidegate-state", "emptyDir": {}}]))
    assert taken["allowed"] is False and "'tidegate-state'" in taken["status"]["message"]


def test_what_is_no_pod_creation_passes_and_garbage_is_400(webhook: httpx.Client) -> None:
    update = review(pod({"tidegate.io/inject": "true"}))
    update["request"]["operation"] = "UPDATE"
    answer = webhook.post("/mutate", json=update).json()["response"]
    assert answer == {"uid": update["request"]["uid"], "allowed": True}
    for body in (b"{not json", b'{"kind": "Pod"}', b'{"kind": "AdmissionReview", "request": {}}'):
        bad = webhook.post("/mutate", content=body, headers={"Content-Type": "application/json"})
        assert bad.status_code == 400 and "AdmissionReview" in bad.json()["error"]
    assert webhook.post("/other", json={}).status_code == 404
    assert webhook.get("/healthz").json() == {"ok": True}


def test_tidegate_k8s_webhook_serves_https_from_the_command_line(certs: Certificates, tmp_path: Path) -> None:
    port = free_port()
    proc = Proc(
        [
            *TIDEGATE,
            "k8s",
            "webhook",
            "--cert",
            str(certs.cert),
            "--key",
            str(certs.key),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--control",
            "http://c:7070",
        ],
        tmp_path / "webhook.log",
    )
    try:
        wait_until(lambda: "listening on https://" in proc.output(), what="the webhook to listen")
        context = ssl.create_default_context(cafile=str(certs.ca))
        answer = httpx.post(
            f"https://127.0.0.1:{port}/mutate", json=review(pod({"tidegate.io/inject": "true"})), verify=context, timeout=10
        )
        assert "patch" in answer.json()["response"]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://127.0.0.1:{port}/healthz", verify=ssl.create_default_context(cafile=str(certs.other_ca)), timeout=10)
    finally:
        proc.stop()
    missing = subprocess.run(
        [*TIDEGATE, "k8s", "webhook", "--cert", "/nope.pem", "--key", "/nope.key", "--control", "http://c"], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "/nope.pem" in missing.stderr
