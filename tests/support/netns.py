"""Pods on one machine: Linux network namespaces joined by a bridge, each with its own IP.

`Cluster` makes a "switch" namespace holding a bridge, and one namespace per
pod, joined to it by a veth pair; every address lives inside namespaces it made
(a private 10.x.y.0/24 picked at random), names carry a random prefix so runs do
not collide, and `close()` (call it in a `finally`) stops every process it
started and deletes every namespace, even after a failure. Processes run with
`ip netns exec`, which execs the program: the pid is the program's, so signals
reach it as the kubelet's do. `pod_env` turns the container the webhook's patch
produced into the process's environment (the downward API's `status.podIP`, the
volume mounts mapped to folders), so a pod runs with exactly what was injected.
Needs root and `ip` (iproute2).
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.procs import Proc

PYTHON = sys.executable


def available() -> str:
    """ "" when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    return ""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@dataclass
class Pod:
    name: str
    netns: str
    address: str
    procs: list[Proc] = field(default_factory=list)

    def command(self, args: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *args]


class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.prefix = "tg" + secrets.token_hex(2)
        self.subnet = f"10.{random.randint(64, 250)}.{random.randint(1, 250)}"
        self.switch = f"{self.prefix}-sw"
        self.pods: dict[str, Pod] = {}
        self._next = 2
        self._veths = 0
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        _ip("-n", self.switch, "link", "set", "lo", "up")

    def pod(self, name: str) -> Pod:
        """A new namespace with its own address on the bridge."""
        netns = f"{self.prefix}-{name}"
        address = f"{self.subnet}.{self._next}"
        self._next += 1
        self._veths += 1
        inside, outside = f"{self.prefix}i{self._veths}", f"{self.prefix}o{self._veths}"
        _ip("netns", "add", netns)
        _ip("link", "add", inside, "netns", netns, "type", "veth", "peer", "name", outside, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", outside, "master", "br0", "up")
        _ip("-n", netns, "link", "set", inside, "name", "eth0")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        made = Pod(name, netns, address)
        self.pods[name] = made
        return made

    def start(self, pod: Pod, args: Sequence[str], env: Mapping[str, str], cwd: Path | None = None, log: str = "") -> Proc:
        proc = Proc(pod.command(args), self.workdir / f"{log or pod.name}.log", env=env, cwd=cwd)
        pod.procs.append(proc)
        return proc

    def run(
        self, pod: Pod, args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(pod.command(args), env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)

    def remove(self, pod: Pod) -> None:
        for proc in pod.procs:
            proc.stop()
        _ip("netns", "del", pod.netns, check=False)
        self.pods.pop(pod.name, None)

    def close(self) -> None:
        for pod in list(self.pods.values()):
            self.remove(pod)
        _ip("netns", "del", self.switch, check=False)
        leftover = [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.startswith(self.prefix)]
        for netns in leftover:
            _ip("netns", "del", netns, check=False)


def pod_env(container: Mapping[str, Any], pod: Pod, mounts: Mapping[str, Path]) -> dict[str, str]:
    """The environment a container gets: its `env` with `status.podIP` resolved to the pod's address
    and every path under a volume's mountPath mapped to that volume's folder in `mounts` (by name)."""
    by_path = {m["mountPath"]: mounts[m["name"]] for m in container.get("volumeMounts", []) if m["name"] in mounts}
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "valueFrom" in item:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}, item
            env[item["name"]] = pod.address
            continue
        value = item["value"]
        for mount_path, folder in by_path.items():
            value = value.replace(mount_path, str(folder))
        env[item["name"]] = value
    return env
