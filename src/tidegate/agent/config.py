"""The agent's settings, read once from the environment `tidegate run` sets up.

A container only sets env: TIDEGATE_SERVICE, TIDEGATE_TAG, TIDEGATE_CONTROL,
TIDEGATE_TOKEN, TIDEGATE_ADMIN_PORT, TIDEGATE_HOST, TIDEGATE_HEARTBEAT_INTERVAL,
TIDEGATE_LANE_KEY.
A bad value raises `AgentConfigError` naming the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from tidegate.core import names
from tidegate.errors import TidegateError

N = TypeVar("N", int, float)

DEFAULT_CONTROL = "http://127.0.0.1:7070"

_LANE_KEY = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")


class AgentConfigError(TidegateError, ValueError):
    """An agent setting is missing or malformed; the message names the variable."""

    def __init__(self, variable: str, reason: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {reason}")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    service: str
    tag: str = ""
    control: str = DEFAULT_CONTROL
    token: str = ""
    admin_port: int = 0  # 0: an ephemeral port, published in the registry as admin_port
    advertise_host: str = ""  # empty: the address the server bound (or this host's IP for a wildcard bind)
    heartbeat_interval: float | None = None  # None: a third of the lease the control plane grants
    lane_key: str = "tidegate.lane"  # the W3C baggage member that carries the lane

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AgentConfig:
        env = os.environ if environ is None else environ
        service = env.get("TIDEGATE_SERVICE", "").strip()
        if not service:
            raise AgentConfigError("TIDEGATE_SERVICE", "is required (the service name this process registers as)")
        if not names.is_service_name(service):
            raise AgentConfigError("TIDEGATE_SERVICE", f"{service!r} is not a service name ({names.SERVICE_NAME_RULE})")
        tag = env.get("TIDEGATE_TAG", "").strip()
        if not names.is_tag(tag):
            raise AgentConfigError("TIDEGATE_TAG", f"{tag!r} is not a tag ({names.TAG_RULE})")
        control = env.get("TIDEGATE_CONTROL", "").strip() or DEFAULT_CONTROL
        parts = urlsplit(control)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AgentConfigError("TIDEGATE_CONTROL", f"{control!r} is not an http(s) URL like {DEFAULT_CONTROL}")
        admin_port = _port(env.get("TIDEGATE_ADMIN_PORT", "").strip() or "0")
        interval_text = env.get("TIDEGATE_HEARTBEAT_INTERVAL", "").strip()
        interval = _seconds(interval_text) if interval_text else None
        lane_key = env.get("TIDEGATE_LANE_KEY", "").strip() or "tidegate.lane"
        if not _LANE_KEY.match(lane_key):
            raise AgentConfigError(
                "TIDEGATE_LANE_KEY", f"{lane_key!r} is not a baggage key (letters, digits and !#$%&'*+.^_`|~-; at most 64)"
            )
        return cls(
            lane_key=lane_key,
            service=service,
            tag=tag,
            control=control.rstrip("/"),
            token=env.get("TIDEGATE_TOKEN", ""),
            admin_port=admin_port,
            advertise_host=env.get("TIDEGATE_HOST", "").strip(),
            heartbeat_interval=interval,
        )


def _port(text: str) -> int:
    return _number(text, "TIDEGATE_ADMIN_PORT", int, "a port number", (0, 65535), "is out of range 0..65535 (0 = ephemeral)")


def _seconds(text: str) -> float:
    return _number(text, "TIDEGATE_HEARTBEAT_INTERVAL", float, "a number of seconds", (0.05, 3600), "is outside 0.05..3600 seconds")


def _number(text: str, variable: str, convert: Callable[[str], N], what: str, bounds: tuple[float, float], outside: str) -> N:
    """`convert(text)`, or AgentConfigError naming `variable`: "'x' is not <what>" or "<value> <outside>"."""
    try:
        value = convert(text)
    except ValueError:
        raise AgentConfigError(variable, f"{text!r} is not {what}") from None
    if not bounds[0] <= value <= bounds[1]:
        raise AgentConfigError(variable, f"{value} {outside}")
    return value
