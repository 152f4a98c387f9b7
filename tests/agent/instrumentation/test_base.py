"""The instrumentor base: version gate, idempotent instrument/uninstrument, wrapt patches, post-import hooks, install_all's logs."""

from __future__ import annotations

import importlib
import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from tidegate.agent.config import AgentConfig
from tidegate.agent.instrumentation import MODULES, install_all
from tidegate.agent.instrumentation.base import Instrumentor, installed_version_meets
from tidegate.agent.runtime import AgentRuntime

PREFIX = "tidegate.agent.instrumentation."


class Target:
    def greet(self, name: str) -> str:
        return f"hello {name}"


class Greeting(Instrumentor):
    """Patches `greet` of the hook module's `Target`, counting every patch."""

    library = "json"  # any importable module: the gate only looks for it

    def __init__(self, hook_module: str = "json", supported: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.hook_module = hook_module
        self.supported = supported
        self.patches = 0
        self.target: type[Any] = Target

    def _patch(self, module: types.ModuleType) -> None:
        self.patches += 1
        self.target = getattr(module, "Target", Target)
        self.wrap(self.target, "greet", lambda wrapped, instance, args, kwargs: wrapped(*args, **kwargs).upper())


class Broken(Greeting):
    def _patch(self, module: types.ModuleType) -> None:
        self.wrap(Target, "greet", lambda wrapped, instance, args, kwargs: "never")
        raise RuntimeError("the library changed under us")


def runtime() -> AgentRuntime:
    return AgentRuntime(config=AgentConfig(service="base-test"))


def test_instrument_patches_once_and_a_second_call_only_swaps_the_runtime() -> None:
    greeting = Greeting()
    first, second = runtime(), runtime()
    original = Target.__dict__["greet"]
    greeting.instrument(first)
    greeting.instrument(second)
    try:
        assert greeting.patches == 1 and greeting.runtime is second
        assert Target().greet("x") == "HELLO X"
    finally:
        greeting.uninstrument()
    assert Target.__dict__["greet"] is original and Target().greet("x") == "hello x"
    greeting.uninstrument()  # a second uninstrument is harmless
    greeting.instrument(first)  # and instrumenting again patches again
    try:
        assert greeting.patches == 2 and Target().greet("y") == "HELLO Y"
    finally:
        greeting.uninstrument()


def test_a_library_imported_later_is_patched_when_it_is_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tidegate_late_library.py").write_text("class Target:\n    def greet(self, name):\n        return 'hi ' + name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    greeting = Greeting(hook_module="tidegate_late_library")
    greeting.instrument(runtime())
    try:
        assert greeting.patches == 0  # not imported yet: nothing patched, nothing imported
        assert "tidegate_late_library" not in sys.modules
        late = importlib.import_module("tidegate_late_library")
        assert greeting.patches == 1 and late.Target().greet("x") == "HI X"
    finally:
        greeting.uninstrument()
        sys.modules.pop("tidegate_late_library", None)


def test_a_failing_patch_is_undone_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    broken = Broken()
    with caplog.at_level(logging.INFO, logger="tidegate"):
        broken.instrument(runtime())
    assert broken.failed and broken.runtime is None
    assert Target().greet("x") == "hello x"  # the wrap made before the failure was undone
    assert "patch failed: json runs unpatched" in caplog.text


@pytest.fixture
def fake_modules(monkeypatch: pytest.MonkeyPatch) -> dict[str, Instrumentor]:
    """Instrumentor modules install_all can load: one applied, one not installed, one too old, one broken."""
    instrumentors: dict[str, Instrumentor] = {
        "fake_ok": Greeting(),
        "fake_missing": Greeting(),
        "fake_old": Greeting(supported=("pytest >= 999",)),
        "fake_broken": Broken(),
    }
    instrumentors["fake_missing"].library = "tidegate_no_such_library"
    for name, instrumentor in instrumentors.items():
        module = types.ModuleType(PREFIX + name)
        module.INSTRUMENTOR = instrumentor  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, PREFIX + name, module)
    return instrumentors


def _install(modules: tuple[str, ...], caplog: pytest.LogCaptureFixture) -> tuple[list[Instrumentor], dict[str, int]]:
    """install_all over fake modules followed by the one that applies: (applied, {message: level})."""
    with caplog.at_level(logging.DEBUG, logger="tidegate"):
        applied = install_all(runtime(), (*modules, "fake_ok"))
    for instrumentor in applied:
        instrumentor.uninstrument()
    return applied, {record.getMessage(): record.levelno for record in caplog.records}


def test_install_all_logs_a_library_not_installed_at_debug(fake_modules: dict[str, Instrumentor], caplog: pytest.LogCaptureFixture) -> None:
    applied, logged = _install(("fake_missing",), caplog)
    assert applied == [fake_modules["fake_ok"]]
    assert logged["tidegate: tidegate_no_such_library is not installed; not patched"] == logging.DEBUG


def test_install_all_logs_an_unsupported_version(fake_modules: dict[str, Instrumentor], caplog: pytest.LogCaptureFixture) -> None:
    applied, logged = _install(("fake_old",), caplog)
    assert applied == [fake_modules["fake_ok"]]
    assert logged["tidegate: json is installed in an unsupported version (needs pytest >= 999); not patched"] == logging.INFO


def test_install_all_logs_a_patch_that_failed(fake_modules: dict[str, Instrumentor], caplog: pytest.LogCaptureFixture) -> None:
    applied, logged = _install(("fake_broken", "fake_no_module"), caplog)
    assert applied == [fake_modules["fake_ok"]]  # each failure skipped, the others applied
    assert logged["tidegate: patch failed: json runs unpatched"] == logging.ERROR
    assert logged["tidegate: instrumentation fake_no_module could not be loaded; not patched"] == logging.ERROR


def test_every_instrumentor_declares_bounded_requirements_where_it_patches_private_api() -> None:
    bounded = {"httpx", "requests", "aiohttp", "uvicorn", "gunicorn", "django", "starlette", "sqlalchemy"}
    for name in MODULES:
        instrumentor: Instrumentor = importlib.import_module(PREFIX + name).INSTRUMENTOR
        if not instrumentor.installed():
            continue  # the oldest-versions venv holds only some of the libraries
        assert instrumentor.available(), name  # every venv the tests run in holds supported versions
        if name in bounded:
            assert all("<" in requirement for requirement in instrumentor.supported), (name, instrumentor.supported)


def test_version_gate_understands_upper_bounds_without_packaging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "packaging.requirements", None)  # as if packaging were not installed
    assert installed_version_meets("requests >= 2.25, < 99")
    assert not installed_version_meets("requests >= 1, < 2")
    assert not installed_version_meets("no-such-distribution-tidegate >= 1, < 2")
