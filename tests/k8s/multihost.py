"""tidegate across hosts: a control plane and every service instance in its own network namespace
(`tests.support.netns`), each instance started with exactly the env and preStop the webhook's patch
produced for its pod. Shared by tests/k8s/test_multihost.py and bench/multihost_restart.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonpatch

from tests.k8s.pods import app_container, pod
from tests.support.netns import PYTHON, Cluster, Pod, pod_env
from tests.support.procs import Proc, wait_until
from tidegate.agent.command import BOOTSTRAP_DIR
from tidegate.k8s.inject import InjectSettings, decide

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
SUPPORT = HERE.parent / "support"
ADMIN_TOKEN = "tg_multihost-admin-token-0123456789"
APP_PORT = 8000
#: How long a deleted pod's network outlives its containers here (`MultiHost.terminate`).
NETWORK_LINGER_S = 3.0


@dataclass
class Governed:
    name: str
    service: str
    pod: Pod
    proc: Proc
    env: dict[str, str]  # what the patch set (and the app's own), as the process got it
    pre_stop: list[str]  # the patch's preStop command
    container: dict[str, Any]

    @property
    def url(self) -> str:
        return f"http://{self.pod.address}:{APP_PORT}"


class MultiHost:
    def __init__(self, workdir: Path, drain_timeout_s: int = 10) -> None:
        self.workdir = workdir
        self.cluster = Cluster(workdir)
        try:
            self.client = self.cluster.pod("client")
            self.socket = workdir / "relay.sock"
            relay = self.cluster.start(self.client, [PYTHON, str(SUPPORT / "netns_relay.py"), str(self.socket)], {}, log="relay")
            wait_until(lambda: "relaying" in relay.output(), what="the relay")
            self.control_pod = self.cluster.pod("control")
            self.control = self._start_control()
            secret = workdir / "secret"
            secret.mkdir(mode=0o700)
            shutil.copy(workdir / "control-data" / "tokens" / "agent", secret / "agent")
            os.chmod(secret / "agent", 0o600)
            self.secret = secret
            self.settings = InjectSettings(
                control=f"http://{self.control_pod.address}:7070",
                bootstrap_dir=BOOTSTRAP_DIR,
                python=PYTHON,
                drain_timeout_s=drain_timeout_s,
            )
        except BaseException:
            self.close()
            raise

    def _start_control(self) -> Proc:
        args = [PYTHON, "-m", "tidegate", "control", "--host", "0.0.0.0", "--port", "7070", "--data", str(self.workdir / "control-data")]
        proc = self.cluster.start(self.control_pod, [*args, "--token", ADMIN_TOKEN, "--instance-ttl", "2"], {}, log="control")
        wait_until(lambda: "listening on" in proc.output(), what="the control plane")
        return proc

    def close(self) -> None:
        self.cluster.close()

    # -- reaching into the pods ---------------------------------------------------------------

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request from the client namespace (through the relay)."""
        headers = {"Connection": "close", **kwargs.pop("headers", {})}
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), timeout=30, trust_env=False) as http:
            return http.request(method, url, headers=headers, **kwargs)

    def instances(self, service: str) -> list[dict[str, Any]]:
        answer = self.request(
            "GET", f"{self.settings.control}/v1/services/{service}/instances", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        return [] if answer.status_code == 404 else list(answer.json())

    def ready(self, governed: Governed) -> bool:
        try:
            return self.request("GET", f"http://{governed.pod.address}:{self.settings.admin_port}/ready").status_code == 200
        except httpx.HTTPError:
            return False

    # -- pods -----------------------------------------------------------------------------------

    def start(self, name: str, app: str, service: str, tag: str = "", app_env: dict[str, str] | None = None) -> Governed:
        """A pod whose template says `tidegate.io/inject: "true"`, admitted through the webhook's
        logic, and its container started with what the patch gave it."""
        annotations = {"tidegate.io/inject": "true", **({"tidegate.io/tag": tag} if tag else {})}
        own_env = [{"name": "APP_ID", "value": name}] + [{"name": k, "value": v} for k, v in (app_env or {}).items()]
        command = [PYTHON, "-m", "uvicorn", f"multihost_app:{app}", "--host", "0.0.0.0", "--port", str(APP_PORT), "--no-access-log"]
        obj = pod(annotations, labels={"app": service}, containers=[app_container(name=service, command=command, env=own_env)])
        decision = decide(obj, self.settings)
        assert decision.patch and not decision.refusal, decision
        container = jsonpatch.apply_patch(obj, decision.patch)["spec"]["containers"][0]
        made = self.cluster.pod(name)
        state = self.workdir / name / "state"
        state.mkdir(parents=True)
        env = pod_env(container, made, {"tidegate-secret": self.secret, "tidegate-state": state})
        proc = self.cluster.start(made, container["command"], env, cwd=APPS)
        return Governed(name, service, made, proc, env, list(container["lifecycle"]["preStop"]["exec"]["command"]), container)

    def wait_ready(self, governed: Governed, timeout: float = 60) -> bool:
        """Wait until the pod's readiness probe (the agent's /ready) passes; True when the registry
        already listed the instance at that moment (readiness follows registration)."""
        wait_until(lambda: self.ready(governed) or not governed.proc.alive(), timeout=timeout, interval=0.1, what=f"{governed.name} ready")
        assert governed.proc.alive(), governed.proc.output()[-3000:]
        return any(i["host"] == governed.pod.address for i in self.instances(governed.service))

    def pre_stop(self, governed: Governed) -> tuple[int, str]:
        """Run the injected preStop in the pod, as the kubelet does (exit status, output)."""
        done = self.cluster.run(governed.pod, governed.pre_stop, env=governed.env)
        return done.returncode, done.stdout + done.stderr

    def terminate(self, governed: Governed, pre_stop: bool = True, network_linger_s: float = NETWORK_LINGER_S) -> tuple[int, str]:
        """Kubelet's pod deletion: the preStop, then SIGTERM; wait for the exit; the pod's network
        goes `network_linger_s` later (as a sandbox's teardown follows its containers' exit: until
        then its address answers late packets with a reset, after it they go nowhere)."""
        result = self.pre_stop(governed) if pre_stop else (0, "")
        governed.proc.signal(signal.SIGTERM)
        governed.proc.wait(timeout=60)
        if network_linger_s > 0:
            timer = threading.Timer(network_linger_s, self.cluster.remove, (governed.pod,))
            timer.daemon = True
            timer.start()
        else:
            self.cluster.remove(governed.pod)
        return result

    # -- load ---------------------------------------------------------------------------------------

    def load(self, url: str, rate: float, tag: str) -> tuple[Path, Path]:
        out, stop = self.workdir / f"load-{tag}.json", self.workdir / f"load-{tag}.stop"
        self.cluster.start(
            self.client, [PYTHON, str(SUPPORT / "netns_load.py"), url, str(rate), str(out), str(stop)], {}, log=f"load-{tag}"
        )
        return out, stop

    @staticmethod
    def finish(files: tuple[Path, Path]) -> dict[str, Any]:
        out, stop = files
        stop.touch()
        wait_until(out.exists, timeout=90, what="the load's result")
        return dict(json.loads(out.read_text()))
