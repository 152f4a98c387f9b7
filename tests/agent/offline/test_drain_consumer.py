"""The consumer's side of lossless offline, with real processes: notices without a control plane,
and passive ejection of an instance that was killed outright."""

from __future__ import annotations

import signal
from typing import Any

from tests.agent.offline.test_drain import _call, _up


def test_drain_is_heard_directly_when_the_control_plane_is_down(control_plane: Any, start: Any) -> None:
    a, _, c_port, consumer = _up(control_plane, start, "uvicorn")
    control_plane.proc.signal(signal.SIGKILL)
    control_plane.proc.wait(timeout=10)
    a.proc.signal(signal.SIGTERM)
    a.proc.wait(timeout=30)
    assert "drain notice sent to 1 consumer(s)" in a.proc.output(), a.fail_report()
    assert "told by direct notice" in consumer.proc.output(), consumer.fail_report()
    answers = [_call(c_port) for _ in range(20)]
    assert all(r["status_code"] == 200 and r["id"] == "orders-b" for r in answers), answers


def test_a_killed_instance_is_ejected_and_calls_go_elsewhere(control_plane: Any, start: Any) -> None:
    a, _, c_port, consumer = _up(control_plane, start, "uvicorn")
    a.proc.signal(signal.SIGKILL)
    a.proc.wait(timeout=10)
    answers = [_call(c_port) for _ in range(20)]  # well within its lease: the registry still lists it
    assert all(r["status_code"] == 200 and r["id"] == "orders-b" for r in answers), answers
    assert "refused a connection; out of balancing" in consumer.proc.output(), consumer.fail_report()
