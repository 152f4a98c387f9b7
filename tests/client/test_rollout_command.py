"""`tidegate rollout` against a real control plane: start (and its refusals), status, --watch, list, the actions."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.control.running import TOKEN, ControlProcess, tidegate_cli
from tests.support.procs import TIDEGATE


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlProcess]:
    process = ControlProcess(tmp_path / "data", tmp_path / "control.log", ttl=30)
    try:
        yield process
    finally:
        process.stop()


def register(url: str, port: int, tag: str = "") -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        answer = http.post("/v1/instances", json={"service": "orders", "host": "127.0.0.1", "port": port, "tag": tag})
        assert answer.status_code == 201, answer.text


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return tidegate_cli(url, "rollout", *args, columns="200")


def test_start_refusals_name_the_field(plane: ControlProcess, tmp_path: Path) -> None:
    register(plane.url, 9001)
    refused = cli(plane.url, "start", "orders", "--tag", "v2")
    assert refused.returncode == 1
    assert "'spec.tag'" in refused.stderr and "no live instance of tag 'v2'" in refused.stderr
    register(plane.url, 9002, "v2")
    steps = cli(plane.url, "start", "orders", "--tag", "v2", "--steps", "5,50,25,100")
    assert steps.returncode == 1 and "'spec.steps[2]'" in steps.stderr
    interval = cli(plane.url, "start", "orders", "--tag", "v2", "--interval", "0s")
    assert interval.returncode == 1 and "'spec.interval'" in interval.stderr
    analysis = tmp_path / "analysis.yaml"
    analysis.write_text("metrics:\n  - {name: cpuLoad, max: 1}\n")
    unknown = cli(plane.url, "start", "orders", "--tag", "v2", "--analysis", str(analysis))
    assert unknown.returncode == 1 and "'spec.analysis.metrics[0].name'" in unknown.stderr
    assert cli(plane.url, "list").stdout.strip() == "no rollout"


def test_start_status_list_and_the_actions(plane: ControlProcess, tmp_path: Path) -> None:
    register(plane.url, 9001)
    register(plane.url, 9002, "v2")
    analysis = tmp_path / "analysis.yaml"
    analysis.write_text("minRequests: 10\nmetrics:\n  - {name: p99Latency, max: 300ms, maxRatioToBase: 1.5}\n")
    started = cli(plane.url, "start", "orders", "--tag", "v2", "--steps", "10,50,100", "--interval", "1h", "--analysis", str(analysis))
    assert started.returncode == 0, started.stderr
    assert "orders -> v2: progressing, weight 10%" in started.stdout
    assert "[####------------------------------------] 10%" in started.stdout
    assert "steps: 10% <  50%  100%" in started.stdout
    again = cli(plane.url, "start", "orders", "--tag", "v2")
    assert again.returncode == 1 and "'orders' already has a rollout progressing" in again.stderr
    status = json.loads(cli(plane.url, "status", "orders", "--output", "json").stdout)
    assert status["plan"]["analysis"]["gates"] == [{"metric": "p99Latency", "resource": "*", "maximum": 300.0, "relative": 1.5}]
    assert "paused by an operator" in cli(plane.url, "pause", "orders").stdout
    assert "progressing" in cli(plane.url, "resume", "orders").stdout
    listed = json.loads(cli(plane.url, "list", "--output", "json").stdout)
    assert [(r["service"], r["phase"], r["weight"]) for r in listed] == [("orders", "progressing", 10)]
    assert "│ orders  │ v2  │ progressing │ 10%    │ 1/3  │" in cli(plane.url, "list").stdout
    aborted = cli(plane.url, "abort", "orders", "--reason", "seen enough")
    assert aborted.returncode == 0
    assert "orders -> v2: aborted, weight 0% (seen enough)" in aborted.stdout
    assert "10% ABORTED" in aborted.stdout
    late = cli(plane.url, "resume", "orders")
    assert late.returncode == 1 and "cannot resume a rollout that is aborted" in late.stderr


def test_a_rollout_document_from_a_file_starts_and_is_no_rule(plane: ControlProcess, tmp_path: Path) -> None:
    register(plane.url, 9001)
    register(plane.url, 9002, "v2")
    document = tmp_path / "rollout.yaml"
    document.write_text(
        "apiVersion: tidegate.io/v1alpha1\nkind: Rollout\nmetadata: {name: orders-v2}\n"
        "spec: {service: orders, tag: v2, steps: [20, 100], interval: 1h}\n"
    )
    as_rule = tidegate_cli(plane.url, "rules", "apply", "-f", str(document))
    assert as_rule.returncode == 1 and "POST /v1/rollouts" in as_rule.stderr and "'kind'" in as_rule.stderr
    started = cli(plane.url, "start", "-f", str(document))
    assert started.returncode == 0, started.stderr
    assert "orders -> v2: progressing, weight 20%" in started.stdout
    both = cli(plane.url, "start", "orders", "-f", str(document))
    assert both.returncode == 1 and "not both" in both.stderr
    assert "SERVICE --tag TAG" in cli(plane.url, "start", "orders").stderr


def test_status_watch_follows_until_the_rollout_is_over(plane: ControlProcess) -> None:
    register(plane.url, 9001)
    register(plane.url, 9002, "v2")
    assert cli(plane.url, "start", "orders", "--tag", "v2", "--interval", "1h").returncode == 0
    env = {"TIDEGATE_CONTROL": plane.url, "TIDEGATE_TOKEN": TOKEN, "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    watcher = subprocess.Popen([*TIDEGATE, "rollout", "status", "orders", "--watch"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        assert "progressing" in watcher.stdout.readline()  # the first view, before the abort
        assert cli(plane.url, "promote", "orders").returncode == 0
        out, _ = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
    assert watcher.returncode == 0
    assert "orders -> v2: completed, weight 100%" in out
    assert "steps: 5% ok  10% ok  25% ok  50% ok  100% ok" in out
    assert "promoted by an operator" in out
