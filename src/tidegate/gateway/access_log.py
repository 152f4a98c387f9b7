"""The access log: one JSON object per answered request, off by default (`--access-log FILE`, `-` for stdout)."""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Protocol


class Peer(Protocol):
    peer: str


class RouteName(Protocol):
    name: str
    service: str


class Answered(Protocol):
    """What is counted and logged of an answered request (`proxy.Exchange`)."""

    @property
    def client(self) -> Peer: ...
    @property
    def route(self) -> RouteName | None: ...

    method: bytes
    url: bytes
    status: int
    lane: str
    started: float
    tries: int


class AccessLog:
    def __init__(self, stream: IO[str], owned: bool) -> None:
        self.stream = stream
        self.owned = owned

    @classmethod
    def open(cls, target: str, worker: int = 0) -> AccessLog:
        if target == "-":
            return cls(sys.stdout, False)
        path = target if worker == 0 else f"{target}.{worker}"
        return cls(open(path, "a", buffering=1, encoding="utf-8"), True)  # noqa: SIM115 - closed by close()

    def write(self, exchange: Answered, seconds: float) -> None:
        route = exchange.route
        record = {
            "ts": round(time.time(), 3),
            "client": exchange.client.peer,
            "method": exchange.method.decode("latin-1"),
            "target": exchange.url.decode("latin-1")[:2048],
            "status": exchange.status,
            "route": route.name if route is not None else "",
            "service": route.service if route is not None else "",
            "lane": exchange.lane,
            "seconds": round(seconds, 6),
            "attempts": exchange.tries,
        }
        self.stream.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self.owned:
            self.stream.close()
