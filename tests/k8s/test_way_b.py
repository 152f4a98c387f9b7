"""Injection way (b) for real: an app venv with other versions of tidegate's own dependencies (and
no tidegate), the agent copied in by the init container's `tidegate k8s copy-agent`, and each
process started with exactly the env and preStop of the webhook's `tidegate.io/mode: copy` patch,
against a real control plane. The copied agent registers, a consumer (in the same venv: its httpx
is the app's older one) reaches the provider by name, a drain (the preStop, then SIGTERM) loses no
request, and the app sees its own versions of every library the agent has a copy of."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest

from tests.agent.conftest import ControlPlane
from tests.k8s.pods import app_container, pod
from tests.support.netns import Pod, pod_env
from tests.support.procs import BIN, PYTHON, Proc, free_port, wait_until
from tidegate.k8s.inject import AGENT_DIR, InjectSettings, decide

APPS = Path(__file__).resolve().parent / "apps"
#: Other versions than tidegate's pins (httpx 0.28.1, PyYAML 6.0.4, prometheus_client 0.26.0,
#: wrapt 2.5.2, platformdirs 4.14.8) and a uvicorn within the agent's supported range.
OTHER_VERSIONS = ("httpx==0.27.2", "PyYAML==6.0.3", "prometheus_client==0.21.1", "wrapt==1.17.3", "platformdirs==4.12.2", "uvicorn==0.30.6")


@pytest.fixture(scope="module")
def app_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A venv with OTHER_VERSIONS and no tidegate: the app image of way (b)."""
    venv = tmp_path_factory.mktemp("app-venv")
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = [PYTHON, "-m", "pip", "--python", python, "install", "-q", "--disable-pip-version-check", *OTHER_VERSIONS]
    done = subprocess.run(install, capture_output=True, text=True, timeout=280)
    if done.returncode != 0:
        pytest.skip(f"cannot install the app's other versions ({' '.join(OTHER_VERSIONS)}): {done.stderr.strip()[-500:]}")
    return python


@dataclasses.dataclass
class Started:
    name: str
    proc: Proc
    port: int
    admin_port: int
    env: dict[str, str]
    pre_stop: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class CopyPods:
    """Pods of way (b) on loopback: each admitted through the webhook's logic, its init container's
    command run for real (into one shared folder standing for the emptyDir), its app started with
    what the patch gave its container (the pod IP is 127.0.0.1; admin ports differ, as pods' IPs do)."""

    def __init__(self, tmp: Path, plane: ControlPlane, python: str) -> None:
        self.tmp, self.python = tmp, python
        self.agent = tmp / "agent"
        self.secret = tmp / f"control-{plane.port}" / "tokens"  # holds the key `agent`, as the Secret does
        self.settings = InjectSettings(control=plane.url, mode="installed", python=python, drain_timeout_s=5)
        self.started: list[Started] = []
        self.copied = ""

    def start(self, name: str, app: str, service: str) -> Started:
        port, admin_port = free_port(), free_port()
        command = [self.python, "-m", "uvicorn", f"multihost_app:{app}", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
        own_env = [{"name": "APP_ID", "value": name}, {"name": "AGENT_COPY", "value": AGENT_DIR}]
        obj = pod(
            {"tidegate.io/inject": "true", "tidegate.io/mode": "copy"},
            labels={"app": service},
            containers=[app_container(name=service, command=command, env=own_env)],
        )
        decision = decide(obj, dataclasses.replace(self.settings, admin_port=admin_port))
        assert decision.patch and not decision.refusal, decision
        patched = jsonpatch.apply_patch(obj, decision.patch)
        [copier] = patched["spec"]["initContainers"]
        if not self.copied:  # the init container, in the agent image (here: tidegate's venv)
            args = [str(BIN / copier["command"][0]), *(a.replace(AGENT_DIR, str(self.agent)) for a in copier["command"][1:])]
            done = subprocess.run(args, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            self.copied = done.stdout
        container = patched["spec"]["containers"][0]
        state = self.tmp / name / "state"
        state.mkdir(parents=True)
        mounts = {"tidegate-secret": self.secret, "tidegate-state": state, "tidegate-agent": self.agent}
        env = pod_env(container, Pod(name, "", "127.0.0.1"), mounts)
        proc = Proc(container["command"], self.tmp / f"{name}.log", env={**env, "TIDEGATE_HEARTBEAT_INTERVAL": "0.3"}, cwd=APPS)
        started = Started(name, proc, port, admin_port, env, list(container["lifecycle"]["preStop"]["exec"]["command"]))
        self.started.append(started)
        return started

    def ready(self, started: Started) -> None:
        def answers() -> bool:
            assert started.proc.alive(), started.proc.output()[-3000:]
            return httpx.get(f"http://127.0.0.1:{started.admin_port}/ready", timeout=5).status_code == 200

        wait_until(answers, timeout=60, interval=0.1, what=f"{started.name}'s /ready")

    def close(self) -> None:
        for started in self.started:
            started.proc.stop()


@pytest.fixture
def pods(tmp_path: Path, control_plane: ControlPlane, app_python: str, request: pytest.FixtureRequest) -> Iterator[CopyPods]:
    made = CopyPods(tmp_path, control_plane, app_python)
    try:
        yield made
    finally:
        for started in made.started:
            print(f"--- {started.name}\n{started.proc.output()[-3000:]}")
        made.close()


def test_an_app_venv_with_other_versions_of_tidegates_dependencies_is_governed_by_the_copied_agent(
    pods: CopyPods, control_plane: ControlPlane
) -> None:
    orders_a, orders_b = pods.start("orders-a", "orders", "orders"), pods.start("orders-b", "orders", "orders")
    checkout = pods.start("checkout", "checkout", "checkout")
    for started in (orders_a, orders_b, checkout):
        pods.ready(started)
    assert "tidegate._vendor" in pods.copied and "httpx 0.28.1" in pods.copied, pods.copied
    assert {i["port"] for i in control_plane.instances("orders")} == {orders_a.port, orders_b.port}, "both registered"

    # The app's own versions, from its own venv; the agent's copies only under tidegate._vendor.
    seen: dict[str, Any] = httpx.get(orders_a.url + "/versions", timeout=10).json()
    wanted = dict(v.split("==") for v in OTHER_VERSIONS if not v.startswith("uvicorn"))
    assert {name: version for name, (version, _) in seen["mine"].items()} == wanted
    assert all(file.startswith(str(Path(pods.python).parents[1])) for _, file in seen["mine"].values()), seen["mine"]
    assert seen["from_the_copy"] == [], "nothing of the copy is loaded under a name the app owns"
    version, file = seen["agent_httpx"]
    assert version == "0.28.1" and file.startswith(str(pods.agent / "tidegate" / "_vendor")), seen["agent_httpx"]

    # Routed by name (the app's httpx 0.27, patched by the copied agent), then a drain under load.
    ids = {httpx.get(checkout.url + "/", timeout=10).json()["id"] for _ in range(12)}
    assert ids == {"orders-a", "orders-b"}
    answers: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    response = client.get(checkout.url + "/")
                    if response.status_code == 200:
                        answers.append(response.json().get("id", "?"))
                    else:
                        failures.append(response.text)
                except httpx.HTTPError as error:
                    failures.append(repr(error))

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        wait_until(lambda: len(answers) >= 20, what="load to flow")
        done = subprocess.run(orders_a.pre_stop, env=orders_a.env, capture_output=True, text=True, timeout=60)  # the kubelet's preStop
        assert done.returncode == 0 and "drained" in done.stdout, done.stdout + done.stderr
        orders_a.proc.signal(signal.SIGTERM)
        orders_a.proc.wait(timeout=60)  # (uvicorn re-raises the SIGTERM it handled once it has stopped: -15)
        after = len(answers)
        wait_until(lambda: len(answers) >= after + 20, what="load after the drain")
    finally:
        stop.set()
        loader.join(timeout=60)
    assert failures == [], failures[:5]
    assert set(answers[after:]) == {"orders-b"}


def test_the_copy_rewrites_every_form_of_import_of_a_vendored_name_and_nothing_else() -> None:
    from tidegate.k8s.vendor import rewrite

    source = '''"""import httpx: a docstring stays as it is."""
import httpx
import httpx as h, json
import yaml.nodes
import yaml.nodes as n
from httpx._models import (
    Request,
)
from . import httpx
import starlette
if True: import yaml
where = files("certifi")
backend = import_module(f"httpx._backends._{name}")
'''
    assert (
        rewrite(source, frozenset({"httpx", "yaml", "certifi"}))
        == '''"""import httpx: a docstring stays as it is."""
from tidegate._vendor import httpx
from tidegate._vendor import httpx as h; import json
import tidegate._vendor.yaml.nodes; from tidegate._vendor import yaml
import tidegate._vendor.yaml.nodes as n
from tidegate._vendor.httpx._models import (
    Request,
)
from . import httpx
import starlette
if True: from tidegate._vendor import yaml
where = files("tidegate._vendor.certifi")
backend = import_module(f"tidegate._vendor.httpx._backends._{name}")
'''
    )
