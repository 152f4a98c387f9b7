"""The one place that builds library-compatible errors for outbound calls.

An app that calls `http://orders/...` with httpx already catches
`httpx.HTTPError` (requests: `requests.RequestException`, aiohttp:
`aiohttp.ClientError`). So the two errors tidegate raises on such a call are
also the library's own:

  - `NoInstanceError` (the service has no live instance) is also the library's
    connect error (`httpx.ConnectError`, `requests.ConnectionError`,
    `aiohttp.ClientConnectionError`): nothing could be sent;
  - a refused call's `BlockedError` subclass (flow, breaker, hot-spot,
    adaptive) is also the library's error base (`httpx.TransportError`,
    `requests.ConnectionError`, `aiohttp.ClientConnectionError`).

A library module only names its classes, in a `LibraryErrors`, and says how
its errors carry the request, so `except httpx.HTTPError as e: e.request`
works on a refused call too::

    ERRORS = LibraryErrors("httpx.ConnectError", "httpx.TransportError", set_request)            # httpx
    ERRORS = LibraryErrors("requests.ConnectionError", "requests.ConnectionError", set_request_no_response)
    ERRORS = LibraryErrors("aiohttp.ClientConnectionError", "aiohttp.ClientConnectionError")      # no request

Classes are named as strings and imported on the first error only (the agent
never imports a library the app does not use); each combined class is built
once. `PLAIN` leaves tidegate's own errors as they are (the gateway's proxy
answers them itself).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tidegate.errors import BlockedError, NoInstanceError

#: How a library's error carries the library's request object: `attach(error, request)`.
Attach = Callable[[Exception, Any], None]


def set_request(error: Exception, request: Any) -> None:
    """`attach` for errors that carry the request as `.request` (httpx: through its property's setter)."""
    error.request = request  # type: ignore[attr-defined]


def set_request_no_response(error: Exception, request: Any) -> None:
    """`attach` for requests' `RequestException`: `.request`, and `.response` None (none came back)."""
    error.request = request  # type: ignore[attr-defined]
    error.response = None  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class LibraryErrors:
    """One HTTP client library's error classes, named "module.Class" ("" keeps tidegate's own)."""

    #: What a NoInstanceError also is: the library's "could not connect".
    connect_error: str = ""
    #: What a refused call's BlockedError also is: the library's error base.
    error_base: str = ""
    #: Puts the library's request on an error (None: its errors carry none).
    attach: Attach | None = None

    def no_instance(self, error: NoInstanceError, request: Any = None) -> NoInstanceError:
        """`error` as the library's connect error too, carrying `request` when the library's errors do."""
        if not self.connect_error:
            return error
        combined = _no_instance_type(_resolve(self.connect_error))(error.service, error.lane)
        if self.attach is not None:
            self.attach(combined, request)
        return combined

    def blocked(self, error: BlockedError, request: Any = None) -> BlockedError:
        """`error` as an instance of its own class and of the library's error base, carrying `request`."""
        if not self.error_base:
            return error
        combined = _blocked_type(type(error), _resolve(self.error_base))(error.resource, error.rule, error.reason, error.retry_after_s)
        if self.attach is not None:
            self.attach(combined, request)
        return combined


#: tidegate's own errors, unchanged.
PLAIN = LibraryErrors()


@functools.cache
def _resolve(dotted: str) -> type[Exception]:
    module_name, _, class_name = dotted.rpartition(".")
    found = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(found, type) and issubclass(found, Exception)):
        raise TypeError(f"{dotted} is not an exception class")
    return found


# Each combined class is built once (a race builds two equivalent ones; either is fine).
_no_instance_types: dict[type[Exception], type[NoInstanceError]] = {}
_blocked_types: dict[tuple[type[BlockedError], type[Exception]], type[BlockedError]] = {}


def _no_instance_type(base: type[Exception]) -> type[NoInstanceError]:
    combined = _no_instance_types.get(base)
    if combined is None:
        # HttpxNoInstanceError, RequestsNoInstanceError, AiohttpNoInstanceError: named after the library.
        name = base.__module__.partition(".")[0].capitalize() + "NoInstanceError"
        namespace = {"__module__": __name__, "__qualname__": name, "__doc__": f"NoInstanceError that is also a {base.__qualname__}."}
        combined = _no_instance_types[base] = type(name, (NoInstanceError, base), namespace)
    return combined


def _blocked_type(kind: type[BlockedError], base: type[Exception]) -> type[BlockedError]:
    combined = _blocked_types.get((kind, base))
    if combined is None:
        # Same name, module and doc as `kind`: a refused call reads as tidegate's error in a traceback.
        namespace = {"__module__": kind.__module__, "__doc__": kind.__doc__}
        combined = _blocked_types[kind, base] = type(kind.__name__, (kind, base), namespace)
    return combined
