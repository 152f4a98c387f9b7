"""The rule store never holds a set an agent would refuse: strategy references are checked on apply and on delete."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.control.running import TOKEN, ControlProcess
from tests.support.clock import FakeClock
from tests.support.procs import TIDEGATE
from tidegate.control.plane import ControlPlane, RequestError
from tidegate.control.storage import SqliteStorage
from tidegate.rules import load_documents

FT = "fault-tolerance.opensergo.io/v1alpha1"


def strategy(name: str, kind: str = "RateLimitStrategy") -> dict:
    spec = {"threshold": 5} if kind == "RateLimitStrategy" else {"maxConcurrency": 2}
    return {"apiVersion": FT, "kind": kind, "metadata": {"name": name}, "spec": spec}


def rule(name: str, *strategies: dict) -> dict:
    return {
        "apiVersion": FT,
        "kind": "FaultToleranceRule",
        "metadata": {"name": name},
        "spec": {"targets": [{"targetResourceName": "GET /x"}], "strategies": list(strategies)},
    }


@pytest.fixture
def plane(tmp_path: Path, clock: FakeClock):
    storage = SqliteStorage(tmp_path)
    yield ControlPlane(storage, clock=clock, wall_clock=lambda: 1_700_000_000.0)
    storage.close()


def names(plane: ControlPlane) -> list[str]:
    return sorted(f"{rule.kind}/{rule.name}" for rule in plane.rules())


def test_a_rule_naming_a_strategy_not_in_force_is_refused_naming_it(plane: ControlPlane) -> None:
    with pytest.raises(RequestError) as refused:
        plane.apply_rules([rule("limit-x", {"name": "nope"})])
    assert refused.value.status == 409
    assert refused.value.field == "spec.strategies[0].name" and "'nope' not found" in refused.value.message
    assert refused.value.to_dict()["referrers"][0]["name"] == "limit-x"
    assert names(plane) == []
    plane.apply_rules([rule("limit-x", {"name": "five"}), strategy("five")])  # together: fine
    assert names(plane) == ["FaultToleranceRule/limit-x", "RateLimitStrategy/five"]


def test_deleting_a_strategy_in_use_is_refused_unless_cascaded(plane: ControlPlane) -> None:
    plane.apply_rules(
        [
            strategy("five"),
            rule("limit-x", {"name": "five"}),
            rule("other", {"kind": "ConcurrencyLimitStrategy", "spec": {"maxConcurrency": 1}}),
        ]
    )
    key = ("default", "RateLimitStrategy", "five")
    with pytest.raises(RequestError) as refused:
        plane.delete_rule(key)
    assert refused.value.status == 409 and "FaultToleranceRule/limit-x" in refused.value.message
    assert len(names(plane)) == 3
    deleted, missing = plane.delete_rules([key], cascade=True)
    assert [rule.key[1] for rule in deleted] == ["FaultToleranceRule", "RateLimitStrategy"]  # the referrer first
    assert deleted[0].revision < deleted[1].revision and missing == []
    assert names(plane) == ["FaultToleranceRule/other"]


def test_a_new_strategy_that_makes_a_reference_ambiguous_is_refused(plane: ControlPlane) -> None:
    plane.apply_rules([strategy("limit"), rule("r", {"name": "limit"})])
    with pytest.raises(RequestError) as refused:
        plane.apply_rules([strategy("limit", kind="ConcurrencyLimitStrategy")])
    assert refused.value.status == 409 and "several strategies" in refused.value.message
    plane.apply_rules([strategy("limit", kind="ConcurrencyLimitStrategy"), rule("r", {"name": "limit", "kind": "RateLimitStrategy"})])


def test_rolling_back_to_a_rule_naming_a_deleted_strategy_is_refused(plane: ControlPlane) -> None:
    [_, first] = plane.apply_rules([strategy("five"), rule("r", {"name": "five"})])
    plane.apply_rules([rule("r", {"kind": "RateLimitStrategy", "spec": {"threshold": 1}})])
    plane.delete_rule(("default", "RateLimitStrategy", "five"))
    with pytest.raises(RequestError) as refused:
        plane.rollback(("default", "FaultToleranceRule", "r"), {"revision": first["revision"]})
    assert refused.value.status == 409


def test_a_store_that_already_holds_a_dangling_reference_still_takes_unrelated_writes(plane: ControlPlane) -> None:
    # As if written before references were checked: only new problems are refused.
    plane.storage.put_rules([(("default", "FaultToleranceRule", "old"), rule("old", {"name": "gone"}))])
    plane.apply_rules([strategy("five"), rule("new", {"name": "five"})])
    assert "FaultToleranceRule/new" in names(plane)


def test_delete_of_a_file_goes_referrers_first_and_names_what_was_not_in_force(tmp_path: Path) -> None:
    text = "\n---\n".join(
        f"apiVersion: {FT}\nkind: {kind}\nmetadata: {{name: {name}}}\nspec: {spec}"
        for kind, name, spec in [
            ("RateLimitStrategy", "five", "{threshold: 5}"),
            ("FaultToleranceRule", "limit-x", "{targets: [{targetResourceName: GET /x}], strategies: [{name: five}]}"),
            ("ConcurrencyLimitStrategy", "two", "{maxConcurrency: 2}"),
        ]
    )
    control = ControlProcess(tmp_path / "data", tmp_path / "control.log")
    try:
        env = {"TIDEGATE_CONTROL": control.url, "TIDEGATE_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
        path = tmp_path / "rules.yaml"
        path.write_text(text)
        applied = subprocess.run([*TIDEGATE, "rules", "apply", "-f", str(path)], capture_output=True, text=True, env=env, timeout=60)
        assert applied.returncode == 0, applied.stderr
        with httpx.Client(base_url=control.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            one = http.delete("/v1/rules/default/RateLimitStrategy/five")
            assert one.status_code == 409 and one.json()["referrers"][0]["name"] == "limit-x", one.text
            http.delete("/v1/rules/default/ConcurrencyLimitStrategy/two").raise_for_status()
        deleted = subprocess.run([*TIDEGATE, "rules", "delete", "-f", str(path)], capture_output=True, text=True, env=env, timeout=60)
        assert deleted.returncode == 0, deleted.stderr
        lines = deleted.stdout.splitlines()
        assert lines[0].startswith("FaultToleranceRule/limit-x") and lines[1].startswith("RateLimitStrategy/five"), lines
        assert lines[2] == "default/ConcurrencyLimitStrategy/two was not in force"
        with httpx.Client(base_url=control.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            assert http.get("/v1/rules").json() == []
            assert len(load_documents(text)) == 3
    finally:
        control.stop()


def _settings(name: str, service: str, namespace: str = "default") -> dict:
    return {
        "apiVersion": "tidegate.io/v1",
        "kind": "ServiceSettings",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"service": service},
    }


def _canary(name: str, percent: float, sticky: dict | None = None) -> dict:
    spec = {"service": "orders", "tag": "v2", "percent": percent, **({"stickyKey": sticky} if sticky else {})}
    return {"apiVersion": "traffic.opensergo.io/v1alpha1", "kind": "CanaryRule", "metadata": {"name": name}, "spec": spec}


def test_a_second_service_settings_for_one_service_is_refused(plane: ControlPlane) -> None:
    plane.apply_rules([_settings("orders", "orders")])
    with pytest.raises(RequestError) as refused:
        plane.apply_rules([_settings("orders-too", "orders", namespace="shop")])
    assert refused.value.status == 409 and "already set by ServiceSettings/orders" in refused.value.message
    plane.apply_rules([_settings("billing", "billing", namespace="shop")])  # another service's: fine
    plane.apply_rules([_settings("orders", "orders"), _settings("billing", "billing", namespace="shop")])  # unchanged: fine


def test_canaries_of_one_service_past_100_percent_or_with_two_sticky_keys_are_refused(plane: ControlPlane) -> None:
    plane.apply_rules([_canary("a", 60, {"header": "x-user"})])
    for refused_canary in (_canary("b", 50, {"header": "x-user"}), _canary("c", 10, {"cookie": "uid"})):
        with pytest.raises(RequestError) as refused:
            plane.apply_rules([refused_canary])
        assert refused.value.status == 409
    plane.apply_rules([_canary("b", 40, {"header": "x-user"})])
    assert names(plane) == ["CanaryRule/a", "CanaryRule/b"]
