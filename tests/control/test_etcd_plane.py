"""The control plane's HTTP API on etcd: two real `tidegate control` replicas on the
3-member cluster scripts/test.sh starts, sharing one prefix; a start on a store that
is not there; a replica whose etcd goes answers /v1/health 503."""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.control.running import TOKEN, ControlProcess
from tests.control.test_storage_contract import ETCD, etcd_url, needs_etcd
from tests.support.procs import TIDEGATE, free_port, wait_until
from tidegate.client.control import ControlClient

SETTINGS = """\
apiVersion: tidegate.io/v1
kind: ServiceSettings
metadata:
  name: {name}
spec:
  service: {name}
  warmupWindowSeconds: {window}
"""

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[ControlProcess, ControlProcess]]:
    if not ETCD:
        pytest.skip("TIDEGATE_TEST_ETCD is not set (bash scripts/test.sh starts a 3-member etcd and sets it)")
    store = ["--store", etcd_url("plane-" + secrets.token_hex(6))]
    one = ControlProcess(tmp_path / "a", tmp_path / "a.log", extra=store)
    try:
        two = ControlProcess(tmp_path / "b", tmp_path / "b.log", extra=store)
    except BaseException:
        one.stop()
        raise
    try:
        yield one, two
    finally:
        one.stop()
        two.stop()


def watch_frames(url: str, count: int, since: int | None = None) -> list[tuple[str, dict[str, object]]]:
    """The first `count` frames (event, data) of a watch stream."""
    headers = dict(AUTH, **({"Last-Event-ID": str(since)} if since is not None else {}))
    frames: list[tuple[str, dict[str, object]]] = []
    with httpx.stream("GET", url + "/v1/watch", headers=headers, timeout=30) as response:
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                frames.append((event, json.loads(line[6:])))
                if len(frames) == count:
                    return frames
    raise AssertionError(f"the stream ended after {frames}")


def test_two_replicas_share_rules_revisions_history_and_rollback(replicas: tuple[ControlProcess, ControlProcess]) -> None:
    one, two = replicas
    with ControlClient(one.url, TOKEN) as a, ControlClient(two.url, TOKEN) as b:
        both = a.apply_rules(SETTINGS.format(name="orders", window=60) + "---\n" + SETTINGS.format(name="pay", window=5))
        assert both[0].revision == both[1].revision  # one etcd transaction: one revision, etcd's
        assert b.rules() == sorted(both, key=lambda rule: rule.key)  # the other replica reads the same
        [v2] = b.apply_rules(SETTINGS.format(name="orders", window=30))
        assert v2.revision > both[0].revision
        rolled = a.rollback("default", "ServiceSettings", "orders", both[0].revision)
        assert rolled.document == both[0].document and rolled.revision > v2.revision
        assert [rule.revision for rule in b.history("default", "ServiceSettings", "orders")] == [
            rolled.revision,
            v2.revision,
            both[0].revision,
        ]
        assert b.delete_rule("default", "ServiceSettings", "orders")[0].revision > rolled.revision
        assert [rule.key for rule in a.rules()] == [("default", "ServiceSettings", "pay")]
        health = httpx.get(two.url + "/v1/health").json()
        assert health["status"] == "ok" and health["store"]["name"].startswith("etcd ")


def test_a_watcher_cut_inside_one_transaction_resumes_before_it(replicas: tuple[ControlProcess, ControlProcess]) -> None:
    one, _two = replicas
    with ControlClient(one.url, TOKEN) as a:
        [snapshot] = watch_frames(one.url, 1)
        start = int(snapshot[1]["revision"])  # type: ignore[call-overload]
        written = a.apply_rules(SETTINGS.format(name="orders", window=60) + "---\n" + SETTINGS.format(name="pay", window=5))
    revision = written[0].revision
    frames = watch_frames(one.url, 2, since=start)
    assert [(event, data["revision"], data.get("more")) for event, data in frames] == [("rule", revision, True), ("rule", revision, None)]
    # A watcher that applied the first frame only resumes from revision - 1 (what "more" tells it) and gets both again.
    again = watch_frames(one.url, 2, since=revision - 1)
    assert [data["rule"] for _, data in again] == [data["rule"] for _, data in frames]


def test_a_store_that_is_not_there_fails_the_start_naming_it(tmp_path: Path) -> None:
    port = free_port()
    for store, named in (
        (f"etcd://127.0.0.1:{port}", f"no etcd member answers (http://127.0.0.1:{port})"),
        ("etcd:/x", "names no etcd member"),
    ):
        done = subprocess.run(
            [*TIDEGATE, "control", "--port", "0", "--data", str(tmp_path / "d"), "--token", TOKEN, "--store", store],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done
        assert f"--store {store}" in done.stderr and named in done.stderr, done.stderr
        assert "listening on" not in done.stdout


@needs_etcd
def test_a_replica_that_loses_etcd_answers_health_503_and_serves_again_after(tmp_path: Path) -> None:
    etcd = shutil.which("etcd")
    assert etcd, "TIDEGATE_TEST_ETCD is set, so scripts/test.sh installed etcd"
    client_port, peer_port = free_port(), free_port()

    def start() -> subprocess.Popen[bytes]:
        member = subprocess.Popen(
            [
                etcd,
                "--name=solo",
                f"--data-dir={tmp_path / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{client_port}",
                f"--advertise-client-urls=http://127.0.0.1:{client_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=solo=http://127.0.0.1:{peer_port}",
            ],
            stdout=(tmp_path / "etcd.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: _answers(client_port), timeout=30, what="etcd start")
        return member

    member = start()
    plane = ControlProcess(tmp_path / "data", tmp_path / "control.log", extra=["--store", f"etcd://127.0.0.1:{client_port}"])
    try:
        assert httpx.get(plane.url + "/v1/health").status_code == 200
        member.send_signal(signal.SIGKILL)
        member.wait()
        lost = wait_until(lambda: _health(plane.url, 503), timeout=30, what="health 503")
        assert f"127.0.0.1:{client_port}" in lost["store"]["state"]  # type: ignore[index]
        refused = httpx.get(plane.url + "/v1/rules", headers=AUTH, timeout=30)
        assert refused.status_code == 503 and "no etcd member answers" in refused.json()["error"]
        member = start()
        wait_until(lambda: _health(plane.url, 200), timeout=30, what="health 200 again")
    finally:
        plane.stop()
        member.kill()
        member.wait()


def _answers(port: int) -> bool:
    try:
        return httpx.post(f"http://127.0.0.1:{port}/v3/maintenance/status", json={}, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _health(url: str, status: int) -> dict[str, object] | None:
    answer = httpx.get(url + "/v1/health", timeout=10)
    return answer.json() if answer.status_code == status else None  # type: ignore[no-any-return]
