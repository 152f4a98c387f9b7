"""Bearer-token checks for the control plane's API (constant-time comparison)."""

from __future__ import annotations

import hmac

from starlette.requests import Request


class TokenCheck:
    """Writes always need the token; reads need it unless `open_reads`."""

    def __init__(self, token: str, open_reads: bool = False) -> None:
        self._token = token.encode()
        self.open_reads = open_reads

    def refusal(self, request: Request, write: bool) -> str | None:
        """Why `request` may not proceed, or None when it may."""
        if not write and self.open_reads:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return "missing bearer token: send 'Authorization: Bearer TOKEN' (see `tidegate control` output or DATA/token)"
        if not hmac.compare_digest(given.strip().encode(), self._token):
            return "wrong bearer token"
        return None
