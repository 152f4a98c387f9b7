"""The agent's settings, read once from the environment `tidegate run` sets up.

A container only sets env: TIDEGATE_SERVICE, TIDEGATE_TAG, TIDEGATE_CONTROL,
TIDEGATE_TOKEN_FILE (or TIDEGATE_TOKEN), TIDEGATE_CA, TIDEGATE_ADMIN_HOST,
TIDEGATE_ADMIN_PORT, TIDEGATE_ADMIN_CERT and TIDEGATE_ADMIN_KEY, TIDEGATE_HOST,
TIDEGATE_HEARTBEAT_INTERVAL, TIDEGATE_LANE_KEY, TIDEGATE_STATE_DIR.
A bad value raises `AgentConfigError` naming the variable.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from tidegate.control.tokens import TokenError, given_token
from tidegate.core import names
from tidegate.errors import TidegateError

log = logging.getLogger("tidegate")

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
    token: str = ""  # the agent's bearer token (the agent role's, or admin's)
    admin_port: int = 0  # 0: an ephemeral port, published in the registry as admin_port
    admin_host: str = "127.0.0.1"  # where the admin endpoint binds (0.0.0.0: every interface, for a control plane to call)
    admin_cert: str = ""  # PEM files: the admin endpoint serves HTTPS when both are set
    admin_key: str = ""
    ca: str = ""  # CA file an https:// control plane is verified with ("": httpx's default bundle, certifi's)
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
        try:
            token = given_token(None, None, env, log.warning) or ""
        except TokenError as error:  # its message starts with the variable (and the file) it came from
            variable = "TIDEGATE_TOKEN_FILE" if error.source.startswith("TIDEGATE_TOKEN_FILE") else "TIDEGATE_TOKEN"
            raise AgentConfigError(variable, str(error)[len(variable) :].lstrip(": ")) from None
        ca = env.get("TIDEGATE_CA", "").strip()
        if ca and not os.path.isfile(ca):
            raise AgentConfigError("TIDEGATE_CA", f"{ca!r} is not a file (the CA certificate(s) to verify the control plane with)")
        admin_cert, admin_key = env.get("TIDEGATE_ADMIN_CERT", "").strip(), env.get("TIDEGATE_ADMIN_KEY", "").strip()
        _check_admin_tls(admin_cert, admin_key)
        admin_host = env.get("TIDEGATE_ADMIN_HOST", "").strip() or "127.0.0.1"
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
            token=token,
            admin_port=admin_port,
            admin_host=admin_host,
            admin_cert=admin_cert,
            admin_key=admin_key,
            ca=ca,
            advertise_host=env.get("TIDEGATE_HOST", "").strip(),
            heartbeat_interval=interval,
        )

    def admin_tls(self) -> ssl.SSLContext | None:
        """The admin endpoint's server-side TLS context, or None when it serves plain HTTP."""
        if not self.admin_cert:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.admin_cert, self.admin_key)
        return context


#: Set by `tidegate run` ("<pid>:<path>") for a token file it made from a token given in clear.
TEMPORARY_TOKEN_ENV = "TIDEGATE_TEMPORARY_TOKEN_FILE"


def remove_temporary_token_at_exit(environ: Mapping[str, str] | None = None) -> None:
    """In the program `tidegate run` exec'd (the pid it recorded), remove its temporary token file at exit."""
    env = os.environ if environ is None else environ
    pid, _, path = env.get(TEMPORARY_TOKEN_ENV, "").partition(":")
    if path and pid == str(os.getpid()):
        import atexit

        atexit.register(remove_temporary_token, env[TEMPORARY_TOKEN_ENV])


def remove_temporary_token(value: str) -> None:
    """Remove the temporary token file named by a `TIDEGATE_TEMPORARY_TOKEN_FILE` value, and its folder,
    when this process made it (a value inherited from another `tidegate run` names another pid)."""
    pid, _, name = value.partition(":")
    path = Path(name)
    if pid != str(os.getpid()) or path.name != "token" or not path.parent.name.startswith("tidegate-token-"):
        return
    for gone in (path, path.parent):
        try:
            gone.unlink() if gone == path else gone.rmdir()
        except OSError:
            pass


def state_dir() -> Path:
    """Where the agent keeps files across restarts (`TIDEGATE_STATE_DIR`, default the user state directory)."""
    configured = os.environ.get("TIDEGATE_STATE_DIR", "").strip()
    if configured:
        return Path(configured)
    import platformdirs

    return Path(platformdirs.user_state_dir("tidegate"))


def _check_admin_tls(cert: str, key: str) -> None:
    if not cert and not key:
        return
    if not cert or not key:
        missing = "TIDEGATE_ADMIN_CERT" if not cert else "TIDEGATE_ADMIN_KEY"
        raise AgentConfigError(missing, "TIDEGATE_ADMIN_CERT and TIDEGATE_ADMIN_KEY go together: set both (PEM files) to serve HTTPS")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise AgentConfigError(
            "TIDEGATE_ADMIN_CERT", f"cannot serve TLS with {cert!r} and key {key!r}: {getattr(error, 'strerror', None) or error}"
        ) from None


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
