"""An instance of a service as the registry knows it, and its lifecycle states."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any


class InstanceState(StrEnum):
    """Lifecycle of an instance (shared/DESIGN.md, "Instance states")."""

    STARTING = "STARTING"  # booting, prewarm running, not registered, /ready 503
    WARMING = "WARMING"  # registered; consumers ramp its weight up
    SERVING = "SERVING"
    DRAINING = "DRAINING"  # deregistered, in-flight requests finishing
    STOPPED = "STOPPED"

    @property
    def routable(self) -> bool:
        """Whether consumers may send new requests to an instance in this state."""
        return self in (InstanceState.WARMING, InstanceState.SERVING)


#: Which state may follow which; anything else is a bug or a stale message.
TRANSITIONS: Mapping[InstanceState, frozenset[InstanceState]] = {
    InstanceState.STARTING: frozenset({InstanceState.WARMING, InstanceState.SERVING, InstanceState.STOPPED}),
    InstanceState.WARMING: frozenset({InstanceState.SERVING, InstanceState.DRAINING, InstanceState.STOPPED}),
    InstanceState.SERVING: frozenset({InstanceState.DRAINING, InstanceState.STOPPED}),
    InstanceState.DRAINING: frozenset({InstanceState.SERVING, InstanceState.WARMING, InstanceState.STOPPED}),
    InstanceState.STOPPED: frozenset(),
}


def can_transition(current: InstanceState, new: InstanceState) -> bool:
    """True when `new` may follow `current` (a same-state write is a no-op, allowed)."""
    return new == current or new in TRANSITIONS[current]


#: What an ask may want of an instance's agent.
ASK_OFFLINE = "offline"
ASK_ONLINE = "online"


def lease_fingerprint(secret: str) -> str:
    """What an ask names the lease by: a hash of its secret (the secret itself never leaves the
    control plane; 16 hex digits of a 256-bit random secret's hash tell nothing of it)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else ""


@dataclass(frozen=True, slots=True)
class Ask:
    """An admin asked, through the control plane, that this instance go offline (drain, stay
    alive) or online again. It travels in the instance record, so the agent hears it over its
    own watch; `id` is new at every ask (the agent acts once on each), `lease` the fingerprint
    of the lease it was asked of (an agent holding another lease of the id ignores it)."""

    want: str
    id: str
    lease: str

    def to_dict(self) -> dict[str, str]:
        return {"want": self.want, "id": self.id, "lease": self.lease}

    @classmethod
    def from_dict(cls, data: Any) -> Ask | None:
        if data is None:
            return None
        if not isinstance(data, Mapping) or not isinstance(data.get("want"), str):
            raise ValueError("ask must be an object with a 'want'")
        # A `want` this version does not know is kept, not refused: the record itself is still
        # good, and the agent ignores that ask with a log line (a newer control plane's ask).
        return cls(want=str(data["want"]), id=str(data.get("id") or ""), lease=str(data.get("lease") or ""))


@dataclass(frozen=True, slots=True)
class Instance:
    """One listening address of one service, as registered.

    `started_at` and `registered_at` are seconds since the epoch; consumers use
    `registered_at` to ramp a warming instance's weight. `notice_key` is the key
    the instance signs its drain notices with (made by its agent, shown only to
    agent- and admin-role readers of the registry; "" when unknown).
    """

    id: str
    service: str
    host: str
    port: int
    tag: str = ""
    state: InstanceState = InstanceState.SERVING
    weight: int = 100
    admin_port: int | None = None
    started_at: float = 0.0
    registered_at: float = 0.0
    metadata: Mapping[str, str] = field(default_factory=dict)
    notice_key: str = field(default="", repr=False)
    #: The control plane's last ask of this instance's agent (None: none in this registration).
    ask: Ask | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        # Field by field rather than dataclasses.asdict, which deep-copies every value:
        # a snapshot of the registry encodes every instance (asdict was ~20x slower).
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        data["state"] = str(self.state)
        data["metadata"] = dict(self.metadata)
        if self.ask is None:
            del data["ask"]  # most records: the wire format stays as it was before asks
        else:
            data["ask"] = self.ask.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Instance:
        """Build from the registry's JSON; raises ValueError naming a bad field."""
        try:
            return cls(
                id=str(data["id"]),
                service=str(data["service"]),
                host=str(data["host"]),
                port=int(data["port"]),
                tag=str(data.get("tag") or ""),
                state=InstanceState(data.get("state", InstanceState.SERVING)),
                weight=int(data.get("weight", 100)),
                admin_port=int(data["admin_port"]) if data.get("admin_port") is not None else None,
                started_at=float(data.get("started_at", 0.0)),
                registered_at=float(data.get("registered_at", 0.0)),
                metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
                notice_key=str(data.get("notice_key") or ""),
                ask=Ask.from_dict(data.get("ask")),
            )
        except KeyError as missing:
            raise ValueError(f"instance: field {missing.args[0]!r} is required") from None
        except (TypeError, ValueError) as bad:
            raise ValueError(f"instance: {bad}") from None


_FIELD_NAMES = tuple(f.name for f in fields(Instance))
