"""Who a request to the control plane comes from: its bearer token's role, and its lease.

Each endpoint needs a role (`tidegate.control.tokens.Role`; admin ⊇ agent ⊇ read).
No token, or one that is no role's, is 401; a role below the one needed is 403
naming the token to use. With `open_reads`, a read endpoint lets a request
without a valid token through as read. Heartbeat, state and deregister of an
instance also need its lease secret in `X-Tidegate-Lease` unless the caller holds
admin (checked by the plane, `ControlPlane.heartbeat` and friends).

What a role sees: an instance record's `notice_key` (the key its drain notices
are signed with) only agent and admin callers; read callers get the records
without it (`visible`, and `strip_notice_keys` on the watch stream). No one
is ever shown a lease secret: the plane keeps those apart from the records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from tidegate.control.tokens import Role, RoleTokens

LEASE_HEADER = "x-tidegate-lease"

#: Where an operator finds each role's token, for refusals.
_WHERE = {role: f"DATA/tokens/{role.label} on the control plane's host" for role in Role}


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    message: str


class Credentials:
    """The role tokens, checked against each request's `Authorization: Bearer ...`."""

    def __init__(self, tokens: RoleTokens, open_reads: bool = False) -> None:
        self.tokens = tokens
        self.open_reads = open_reads

    def role(self, request: Request, needs: Role) -> Role | Refusal:
        """The caller's role when it may call an endpoint that `needs` that role, else why not."""
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        role = self.tokens.role_of(given.strip()) if scheme.lower() == "bearer" and given.strip() else None
        if role is None:
            if needs == Role.READ and self.open_reads:
                return Role.READ
            if not given.strip() or scheme.lower() != "bearer":
                return Refusal(401, f"missing bearer token: send 'Authorization: Bearer TOKEN' with the {_needed(needs)}")
            return Refusal(401, f"wrong bearer token: this needs the {_needed(needs)}")
        if role < needs:
            return Refusal(403, f"the {role.label} token may not do this: it needs the {_needed(needs)}")
        return role


def lease_of(request: Request) -> str:
    """The lease secret the request carries ("" when none)."""
    return request.headers.get(LEASE_HEADER, "").strip()


def visible(record: dict[str, Any], role: Role) -> dict[str, Any]:
    """An instance record as `role` may see it."""
    if role < Role.AGENT:
        record.pop(NOTICE_KEY, None)
    return record


NOTICE_KEY = "notice_key"
_NEEDLE = b'"notice_key"'


def strip_notice_keys(chunk: bytes) -> bytes:
    """A chunk of the watch stream (whole SSE frames: a snapshot, changes) with every instance
    record's `notice_key` removed; the chunk itself when it holds none."""
    if _NEEDLE not in chunk:
        return chunk
    lines = chunk.split(b"\n")
    for index, line in enumerate(lines):
        if line.startswith(b"data: ") and _NEEDLE in line:
            data = json.loads(line[6:])
            if isinstance(data, Mapping):
                records = [data.get("instance"), *(data.get("instances") or ())]
                for record in records:
                    if isinstance(record, dict):
                        record.pop(NOTICE_KEY, None)
            lines[index] = b"data: " + json.dumps(data, separators=(",", ":")).encode()
    return b"\n".join(lines)


def _needed(needs: Role) -> str:
    if needs == Role.ADMIN:
        return f"admin token ({_WHERE[Role.ADMIN]})"
    higher = " or ".join(f"{role.label} token" for role in sorted(Role, reverse=True) if role >= needs)
    return f"{higher} (e.g. {_WHERE[needs]})"
