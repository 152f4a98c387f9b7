"""What a registration may carry (issue 11, findings 7 and 8): names in the agent's
grammar, bounded metadata, and a registry that stops growing at its limits."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.control.running import TOKEN, ControlProcess
from tidegate.control.limits import Limits
from tidegate.control.plane import ControlPlane, RequestError
from tidegate.control.storage import SqliteStorage

VALID = {"service": "orders", "host": "10.0.0.1", "port": 8001}

BAD_NAMES = [
    ("service", "a/b"),
    ("service", "../../etc/passwd"),
    ("service", "orders\r\nX-Injected: 1"),
    ("service", "\x1b[31mred\x1b[0m"),
    ("service", "[red]x[/red]"),
    ("service", "x" * 100_000),
    ("service", "-leading-dash"),
    ("service", "with space"),
    ("service", "ørders"),
    ("host", "a/b"),
    ("host", "host name"),
    ("host", "h\nx"),
    ("host", "[::1]"),
    ("host", "10.0.0.1:80"),
    ("host", "x" * 300),
    ("tag", "gray/x"),
    ("tag", "\x1b]0;title\x07"),
    ("tag", "x" * 64),
    ("id", "a/b"),
    ("id", "../../etc/passwd"),
    ("id", "id\r\n"),
    ("id", "[red]x"),
    ("id", "x" * 256),
]


@pytest.fixture
def plane(tmp_path: Path):
    storage = SqliteStorage(tmp_path)
    yield ControlPlane(storage, limits=Limits(max_instances=3, max_services=2, max_metadata_bytes=100))
    storage.close()


@pytest.mark.parametrize("field, value", BAD_NAMES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_NAMES)])
def test_a_name_outside_the_grammar_is_refused_naming_the_field(plane: ControlPlane, field: str, value: str) -> None:
    with pytest.raises(RequestError) as refused:
        plane.register({**VALID, field: value})
    assert refused.value.status == 422 and refused.value.field == field
    assert len(refused.value.message) < 400  # a 100 KB name is not echoed back whole
    assert plane.instances() == [] and plane.services() == []


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"host": "::1"},
        {"host": "fe80::1%eth0"},
        {"host": "orders-0.orders.shop.svc.cluster.local"},
        {"host": "h"},
        {"tag": "v2.1_rc-1"},
        {"id": "orders-0123456789ab"},
        {"id": "orders@[::1]:8001"},
        {"service": "a" * 63},
    ],
)
def test_names_in_the_grammar_register(plane: ControlPlane, fields: dict) -> None:
    instance = plane.register({**VALID, **fields})
    assert [i.id for i in plane.instances()] == [instance.id]


def test_the_default_id_of_an_ipv6_host_is_in_the_grammar(plane: ControlPlane) -> None:
    assert plane.register({**VALID, "host": "::1"}).id == "orders@::1:8001"


def test_metadata_is_bounded_and_its_keys_and_values_printable(plane: ControlPlane) -> None:
    with pytest.raises(RequestError) as too_big:
        plane.register({**VALID, "metadata": {"blob": "x" * 200}})
    assert too_big.value.status == 413 and too_big.value.limit == "max_metadata_bytes"
    assert "--max-metadata-bytes" in too_big.value.message and too_big.value.field == "metadata"
    for metadata in ({"a b": "x"}, {"zone": "eu\x1b[2J"}, {"": "x"}):
        with pytest.raises(RequestError) as refused:
            plane.register({**VALID, "metadata": metadata})
        assert refused.value.status == 422 and refused.value.field.startswith("metadata")
    assert plane.register({**VALID, "metadata": {"topology.kubernetes.io/zone": "eu-west-1a"}}).metadata


def test_the_registry_stops_at_its_instance_and_service_limits(plane: ControlPlane) -> None:
    for port in (1, 2, 3):
        plane.register({**VALID, "port": port})
    with pytest.raises(RequestError) as full:
        plane.register({**VALID, "port": 4})
    assert full.value.status == 429 and full.value.limit == "max_instances" and "--max-instances" in full.value.message
    plane.register({**VALID, "port": 3, "weight": 5})  # a held id registers again: not one more
    plane.deregister("orders@10.0.0.1:1")
    plane.register({**VALID, "service": "payments", "port": 5})
    plane.deregister("payments@10.0.0.1:5")
    with pytest.raises(RequestError) as names_full:
        plane.register({**VALID, "service": "stock", "port": 6})
    assert names_full.value.status == 429 and names_full.value.limit == "max_services"
    assert len(plane.instances()) == 2 and [s["name"] for s in plane.services()] == ["orders", "payments"]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_instances"):
        Limits(max_instances=0)


def test_the_api_answers_422_413_and_429_naming_the_field_or_limit(tmp_path: Path) -> None:
    plane = ControlProcess(tmp_path / "data", tmp_path / "log", extra=["--max-instances", "1", "--max-metadata-bytes", "64"])
    try:
        with httpx.Client(base_url=plane.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as http:
            bad = http.post("/v1/instances", json={**VALID, "service": "a/b"})
            assert bad.status_code == 422 and bad.json()["field"] == "service"
            big = http.post("/v1/instances", json={**VALID, "metadata": {"k": "v" * 100}})
            assert big.status_code == 413 and big.json()["limit"] == "max_metadata_bytes"
            assert http.post("/v1/instances", json=VALID).status_code == 201
            full = http.post("/v1/instances", json={**VALID, "port": 2})
            assert full.status_code == 429 and full.json()["limit"] == "max_instances"
            assert [s["name"] for s in http.get("/v1/services").json()] == ["orders"]
        assert "Traceback" not in plane.proc.output()
    finally:
        plane.stop()
