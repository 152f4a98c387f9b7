"""Console sessions: a login with a role's token makes one, kept in memory, bounded.

The browser holds only a random session id, in an HttpOnly SameSite=Strict cookie
scoped to /console; the session holds the role and a CSRF token that every write must
echo in `X-CSRF-Token` (the pages put it where htmx sends it from). The token the
operator typed is never stored. Time is passed in.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from tidegate.control.tokens import Role

COOKIE = "tidegate_console"
CSRF_HEADER = "x-csrf-token"
#: A session lasts this long from its login.
SESSION_TTL_S = 12 * 3600.0
#: Sessions kept at most: the oldest goes when a login would pass it.
MAX_SESSIONS = 1000


@dataclass(frozen=True, slots=True)
class Session:
    role: Role
    csrf: str
    expires: float

    def csrf_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf.encode(), (given or "").encode())


class Sessions:
    def __init__(self, ttl: float = SESSION_TTL_S, capacity: int = MAX_SESSIONS) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def create(self, role: Role, now: float) -> tuple[str, Session]:
        while len(self._by_id) >= self.capacity:
            self._by_id.popitem(last=False)
        session_id = secrets.token_urlsafe(32)
        session = self._by_id[session_id] = Session(role, secrets.token_urlsafe(32), now + self.ttl)
        return session_id, session

    def get(self, session_id: str | None, now: float) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if session.expires < now:
            del self._by_id[session_id]
            return None
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)
