"""SQL governance on a real PostgreSQL (TIDEGATE_TEST_POSTGRES): sync and async engines, and end to end."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import tidegate
from tests.agent.conftest import ControlPlane
from tests.agent.stability.stability_apps.support import control, fault_tolerance, rate_limit, start_app, windows
from tidegate.agent.config import AgentConfig
from tidegate.agent.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from tidegate.agent.metrics import AgentMetrics
from tidegate.agent.runtime import AgentRuntime
from tidegate.agent.stability import Stability
from tidegate.agent.stability.events import StabilityEvents
from tidegate.core.rulebook import StoredRule

POSTGRES = os.environ.get("TIDEGATE_TEST_POSTGRES", "")
pytestmark = pytest.mark.skipif(not POSTGRES, reason="TIDEGATE_TEST_POSTGRES is not set")

sqlalchemy = pytest.importorskip("sqlalchemy")


def _url(driver: str) -> str:
    if driver == "psycopg" and sqlalchemy.__version__.startswith("1."):
        driver = "psycopg2"  # SQLAlchemy 1.4 (the oldest-versions run) has no psycopg 3 dialect
    return POSTGRES.replace("postgresql://", f"postgresql+{driver}://", 1)


@pytest.fixture
def table() -> Iterator[str]:
    name = f"tg_sql_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(_url("psycopg"), future=True)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE TABLE {name} (n integer)"))
    try:
        yield name
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()


@pytest.fixture
def runtime() -> Iterator[AgentRuntime]:
    """An agent runtime of this process with its stability part and the SQLAlchemy instrumentor applied."""
    runtime = AgentRuntime(config=AgentConfig(service="sqltest"), metrics=AgentMetrics())
    posted: list[dict[str, Any]] = []
    stability = Stability(runtime, events=StabilityEvents(posted.append, "sqltest"))
    runtime.add(stability)
    runtime.rulebook.add_listener(stability.on_rules_changed)
    instrumentor = SQLAlchemyInstrumentor()
    instrumentor.instrument(runtime)
    try:
        yield runtime
    finally:
        instrumentor.uninstrument()


def _put(runtime: AgentRuntime, document: dict[str, Any], revision: int = 1) -> None:
    runtime.rulebook.put(StoredRule("default", document["kind"], document["metadata"]["name"], revision, document))


def _rows(table: str) -> int:
    engine = sqlalchemy.create_engine(_url("psycopg"), future=True)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def test_sync_engine_blocks_a_template_before_it_reaches_the_database(runtime: AgentRuntime, table: str) -> None:
    _put(runtime, rate_limit("sql-insert", f"sql:insert into {table} (n) values (?)", 3, app="sqltest"))
    engine = sqlalchemy.create_engine(_url("psycopg"), future=True)
    passed = blocked = 0
    started = time.monotonic()
    try:
        with engine.connect() as conn:
            for n in range(30):
                try:
                    conn.execute(sqlalchemy.text(f"INSERT INTO {table} (n) VALUES (:n)"), {"n": n})
                    conn.commit()
                    passed += 1
                except tidegate.FlowBlockedError as error:
                    assert error.resource == f"sql:insert into {table} (n) values (?)"
                    conn.rollback()
                    blocked += 1
            # Another template on the same connection is not limited, and the connection still works.
            assert conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {table} WHERE n >= :m"), {"m": 0}).scalar_one() == passed
    finally:
        engine.dispose()
    duration = time.monotonic() - started
    assert blocked > 0
    assert 3 <= passed <= 3 * windows(duration)
    assert _rows(table) == passed  # a refused statement never reached the database
    snapshot = runtime.metrics.snapshot()  # type: ignore[union-attr]
    row = next(r for r in snapshot["resources"] if r[0].startswith("sql:insert"))
    assert (row[1], row[2]) == (passed, blocked)


def test_async_engine_blocks_a_template(runtime: AgentRuntime, table: str) -> None:
    pytest.importorskip("asyncpg")
    pytest.importorskip("greenlet", reason="SQLAlchemy's asyncio engines need greenlet (sqlalchemy[asyncio])")
    from sqlalchemy.ext.asyncio import create_async_engine

    _put(runtime, rate_limit("sql-insert", f"sql:insert into {table} (n) values (?)", 2, app="sqltest"))

    async def run() -> tuple[int, int]:
        engine = create_async_engine(_url("asyncpg"))
        passed = blocked = 0
        try:
            for n in range(20):
                try:
                    async with engine.begin() as conn:
                        await conn.execute(sqlalchemy.text(f"INSERT INTO {table} (n) VALUES (:n)"), {"n": n})
                    passed += 1
                except tidegate.BlockedError:
                    blocked += 1
        finally:
            await engine.dispose()
        return passed, blocked

    started = time.monotonic()
    passed, blocked = asyncio.run(run())
    duration = time.monotonic() - started
    assert blocked > 0
    assert 2 <= passed <= 2 * windows(duration)
    assert _rows(table) == passed


def test_slow_sql_opens_its_breaker(runtime: AgentRuntime) -> None:
    _put(
        runtime,
        fault_tolerance(
            "slow-sql",
            "sql:select pg_sleep (?)",
            "CircuitBreakerStrategy",
            {
                "strategy": "SlowRequestRatio",
                "triggerRatio": "50%",
                "statDuration": "10s",
                "recoveryTimeout": "10s",
                "minRequestAmount": 2,
                "slowConditions": {"maxAllowedRt": "20ms"},
            },
            app="sqltest",
        ),
    )
    engine = sqlalchemy.create_engine(_url("psycopg"), future=True)
    outcomes = []
    try:
        with engine.connect() as conn:
            for _ in range(6):
                try:
                    conn.execute(sqlalchemy.text("SELECT pg_sleep(0.05)"))
                    outcomes.append("ran")
                except tidegate.BreakerOpenError:
                    outcomes.append("open")
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar_one() == 1  # other statements still run
    finally:
        engine.dispose()
    assert outcomes[:2] == ["ran", "ran"]
    assert "open" in outcomes
    assert runtime.capability(Stability).governor.breaker_states() == {"slow-sql/CircuitBreakerStrategy[0]": "OPEN"}  # type: ignore[union-attr]


def test_sql_rule_pushed_to_a_service_under_tidegate_run(control_plane: ControlPlane, start: Callable[..., Any], table: str) -> None:
    _, base = start_app(start, control_plane, "shop", "shop", "shop", env={"SHOP_DATABASE": POSTGRES, "SHOP_TABLE": table})
    answers: list[httpx.Response] = []
    with control(control_plane) as plane, httpx.Client(timeout=10) as client:
        assert client.get(f"{base}/sql/insert/0").status_code == 200
        plane.apply_rules(rate_limit("sql-insert", f"sql:insert into {table} (n) values (?)", 2))
        deadline = time.monotonic() + 30
        while not any(r.status_code == 429 for r in answers):
            assert time.monotonic() < deadline, "the SQL rule did not take effect"
            answers.append(client.get(f"{base}/sql/insert/1"))
        answers += [client.get(f"{base}/sql/insert/{n}") for n in range(30)]
        inserted = 1 + sum(r.status_code == 200 for r in answers)
        assert client.get(f"{base}/sql/count").json()["count"] == inserted  # another template runs
    assert {r.status_code for r in answers} == {200, 429}
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.json() == {"sql_blocked": f"sql:insert into {table} (n) values (?)"}
    # every 200 inserted one row; no refused statement reached the database
    assert _rows(table) == inserted
