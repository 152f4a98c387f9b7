"""Exceptions users can catch: one hierarchy for everything tidegate raises."""

from __future__ import annotations


class TidegateError(Exception):
    """Base of every error tidegate raises on purpose."""


class RuleError(TidegateError, ValueError):
    """A rule document is invalid; names the document, the field and the reason."""

    def __init__(self, reason: str, *, document: str = "", field: str = "") -> None:
        self.document = document
        self.field = field
        self.reason = reason
        where = " ".join(part for part in (document, f"field {field!r}" if field else "") if part)
        super().__init__(f"{where}: {reason}" if where else reason)


class NoInstanceError(TidegateError, ConnectionError):
    """A call named a known service that has no live instance to take it."""

    def __init__(self, service: str, lane: str = "") -> None:
        self.service = service
        self.lane = lane
        lane_note = f" in lane {lane!r}" if lane else ""
        super().__init__(
            f"no live instance of service {service!r}{lane_note}: check `tidegate status` and that its instances are registered"
        )


class BlockedError(TidegateError):
    """A governed call was refused by a protection rule before it ran."""

    #: HTTP status an inbound adapter answers with.
    http_status: int = 429

    def __init__(self, resource: str, rule: str = "", reason: str = "", retry_after_s: float | None = None) -> None:
        self.resource = resource
        self.rule = rule
        self.reason = reason
        self.retry_after_s = retry_after_s
        detail = f" by rule {rule!r}" if rule else ""
        why = f": {reason}" if reason else ""
        super().__init__(f"{resource!r} blocked{detail}{why}")


class FlowBlockedError(BlockedError):
    """Refused by a flow-control (QPS or concurrency) rule."""


class HotspotBlockedError(BlockedError):
    """Refused by a hot-spot parameter rule for one value of a parameter."""


class BreakerOpenError(BlockedError):
    """Refused because the resource's circuit breaker is open."""

    http_status = 503


class SystemBlockedError(BlockedError):
    """Refused by adaptive protection: the process is saturated."""

    http_status = 503


class ControlPlaneError(TidegateError):
    """The control plane refused a request or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)
