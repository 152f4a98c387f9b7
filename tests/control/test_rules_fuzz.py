"""Property-based fuzzing of a running control plane's /v1/rules: never 5xx, never dies, refused input
changes nothing in force, memory bounded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.control.running import TOKEN, ControlProcess
from tests.support.rule_fuzz import VALID, documents, raw_texts

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def plane(tmp_path_factory) -> Iterator[tuple[ControlProcess, httpx.Client]]:
    tmp = tmp_path_factory.mktemp("rules-fuzz")
    process = ControlProcess(tmp / "data", tmp / "control.log")
    try:
        with httpx.Client(base_url=process.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http:
            assert http.post("/v1/rules", json=VALID).status_code == 200
            process.rss_before = _rss_kib(process.proc.pid)  # type: ignore[attr-defined]
            yield process, http
    finally:
        process.stop()


def _in_force(http: httpx.Client) -> list[tuple[str, str, str, int]]:
    return sorted((r["namespace"], r["kind"], r["name"], r["revision"]) for r in http.get("/v1/rules").json())


def _yaml(batch: list[Any]) -> str:
    try:
        return yaml.safe_dump_all(batch)
    except yaml.YAMLError:
        return json.dumps(batch, default=str)


bodies = st.one_of(
    st.lists(documents(), min_size=1, max_size=4).map(lambda batch: ("application/json", json.dumps(batch, default=str))),
    st.lists(documents(), min_size=1, max_size=4).map(lambda batch: ("application/yaml", _yaml(batch))),
    raw_texts.map(lambda text: ("application/yaml", text)),
)


@FUZZ
@given(method=st.sampled_from(["POST", "POST", "DELETE"]), body=bodies, cascade=st.booleans())
def test_rule_writes_never_5xx_and_a_refusal_changes_nothing(
    plane: tuple[ControlProcess, httpx.Client], method: str, body: tuple[str, str], cascade: bool
) -> None:
    process, http = plane
    before = _in_force(http)
    content_type, text = body
    response = http.request(
        method,
        "/v1/rules",
        content=text.encode("utf-8", "surrogatepass"),
        headers={"Content-Type": content_type},
        params={"cascade": str(cascade).lower()},
    )
    assert response.status_code < 500, response.text[:300]
    assert "error" in response.json() or response.status_code == 200
    if response.status_code >= 400:
        assert _in_force(http) == before
    if method == "DELETE" and response.status_code == 200 and not cascade:
        http.post("/v1/rules", json=VALID)  # put the set back for the next examples


@FUZZ
@given(kind=st.sampled_from(sorted({d["kind"] for d in VALID}) + ["X", ""]), name=st.text(max_size=20), cascade=st.booleans())
def test_deleting_one_rule_never_5xx(plane: tuple[ControlProcess, httpx.Client], kind: str, name: str, cascade: bool) -> None:
    process, http = plane
    before = _in_force(http)
    path = f"/v1/rules/default/{kind or 'x'}/{quote(name or 'x', safe='')}"
    response = http.delete(path, params={"cascade": str(cascade).lower()})
    assert response.status_code < 500, response.text[:300]
    if response.status_code >= 400:
        assert _in_force(http) == before


def test_the_plane_is_alive_clean_and_its_memory_bounded(plane: tuple[ControlProcess, httpx.Client]) -> None:
    process, http = plane
    assert process.proc.alive() and http.get("/v1/health").status_code == 200
    assert "Traceback" not in process.proc.output()
    grown = _rss_kib(process.proc.pid) - process.rss_before  # type: ignore[attr-defined]
    assert grown < 200 * 1024, f"RSS grew by {grown} KiB while fuzzing"
