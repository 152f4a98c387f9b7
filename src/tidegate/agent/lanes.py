"""The lane state of one process: coloring and lane routing compiled from the rule book.

`LaneState` compiles the `TrafficLane` and `CanaryRule` documents in force
into the core's `Coloring` and `LaneRouting` whenever the rule book says
those kinds changed, and swaps them in whole. A document that fails to
compile keeps its last valid version in force (and is logged), so a bad push
never drops a lane.

The inbound middlewares call `color_asgi` / `color_wsgi` once per request:
with no lane rule in force that is one global read. Otherwise a request
without a lane is colored by the first matching rule, and the request itself
is kept in the context so a canary's sticky key (a header, cookie or query
parameter) is read from it on every outbound call.

`LaneState` is the lanes capability registered on the runtime (it has no
lifecycle hooks); the outbound router reads its `routing`. This module imports
the capability base, `tidegate.core` and `tidegate.rules`; no other capability.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping
from typing import Any

from tidegate.agent.capability import Capability
from tidegate.core.coloring import Coloring, Draw, RequestView
from tidegate.core.context import RequestContext
from tidegate.core.lanes import LaneRouting
from tidegate.core.rulebook import RuleBook, RuleKey
from tidegate.errors import RuleError
from tidegate.rules.document import validate
from tidegate.rules.lanes import CANARY_KIND, LANE_KIND, compile_coloring, compile_lane_routing

log = logging.getLogger("tidegate.lanes")

KINDS = (LANE_KIND, CANARY_KIND)


class LaneState(Capability):
    """Coloring and lane routing in force in this process, rebuilt on rule changes (the lanes capability).

    `service` scopes coloring rules with a selector; `tag` is this instance's
    own tag (a message consumer tagged L takes lane-L messages)."""

    def __init__(self, rulebook: RuleBook, service: str, tag: str = "", draw: Draw = random.random) -> None:
        self.service = service
        self.tag = tag
        self.draw = draw
        self.coloring = Coloring()
        self.routing = LaneRouting()
        #: True when a coloring rule or a canary is in force: only then does an
        #: inbound request need looking at.
        self.active = False
        self._rulebook = rulebook
        self._valid: dict[RuleKey, Mapping[str, Any]] = {}
        rulebook.add_listener(self._on_change)
        self.rebuild()

    def _on_change(self, kind: str) -> None:
        if kind in KINDS:
            self.rebuild()

    def rebuild(self) -> None:
        """Compile the documents in force; one that fails keeps its last valid version."""
        try:
            documents = self._documents()
            coloring, coloring_problems = compile_coloring(documents[LANE_KIND])
            routing, routing_problems = compile_lane_routing(documents[LANE_KIND], documents[CANARY_KIND])
        except Exception:  # the rules in force stay in force, whatever went wrong
            log.exception("tidegate: lane rules could not be compiled; the previous ones stay in force")
            return
        for problem in [*coloring_problems, *routing_problems]:
            log.warning("tidegate: lane rule problem: %s", problem)
        self.coloring, self.routing = coloring, routing
        self.active = bool(coloring.rules or routing.canaries)

    def _documents(self) -> dict[str, list[Mapping[str, Any]]]:
        kept: dict[RuleKey, Mapping[str, Any]] = {}
        by_kind: dict[str, list[Mapping[str, Any]]] = {kind: [] for kind in KINDS}
        for kind in KINDS:
            for stored in self._rulebook.of_kind(kind):
                document = stored.document
                try:
                    validate(document)
                except RuleError as error:
                    previous = self._valid.get(stored.key)
                    log.warning(
                        "tidegate: %s refused (%s); %s",
                        "/".join(stored.key),
                        error,
                        "its previous version stays in force" if previous else "it is not applied",
                    )
                    if previous is None:
                        continue
                    document = previous
                kept[stored.key] = document
                by_kind[kind].append(document)
        self._valid = kept
        return by_kind

    def color(self, current: RequestContext, view: RequestView) -> RequestContext:
        """`current` with the lane coloring gives `view` and the view kept for canaries."""
        lane = self.coloring.lane_for(view, self.draw, current_lane=current.lane, service=self.service)
        return current.with_request(lane, view)


_state: LaneState | None = None


def install(rulebook: RuleBook, service: str, tag: str = "") -> LaneState:
    """Build the process's lane state and make the inbound hooks use it."""
    global _state
    _state = LaneState(rulebook, service, tag)
    return _state


def uninstall() -> None:
    global _state
    _state = None


def current_state() -> LaneState | None:
    return _state


class _ASGIHeaders(Mapping[str, str]):
    """Read-only view of raw ASGI headers by lower-case name; repeated ones joined by ", "."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def __getitem__(self, name: str) -> str:
        wanted = name.encode("latin-1")
        values = [value.decode("latin-1") for key, value in self._raw if key == wanted]
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(key.decode("latin-1") for key, _ in self._raw))

    def __len__(self) -> int:
        return len({key for key, _ in self._raw})


class _EnvironHeaders(Mapping[str, str]):
    """Read-only view of a WSGI environ's request headers by lower-case name."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    @staticmethod
    def _key(name: str) -> str:
        upper = name.upper().replace("-", "_")
        return upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{upper}"

    def __getitem__(self, name: str) -> str:
        value = self._environ.get(self._key(name))
        if not isinstance(value, str):
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        for key in self._environ:
            if key.startswith("HTTP_"):
                yield key[5:].lower().replace("_", "-")

    def __len__(self) -> int:
        return sum(1 for _ in self)


def client_lanes() -> frozenset[str]:
    """Lanes callers outside the estate may name themselves (a TrafficLane says `fromClients`)."""
    state = _state
    return state.routing.client_lanes if state is not None else frozenset()


def color_asgi(scope: Mapping[str, Any], current: RequestContext) -> RequestContext:
    """The context an ASGI request runs in: `current`, colored when lane rules are in force."""
    state = _state
    if state is None or not state.active:
        return current
    query = scope.get("query_string", b"")
    view = RequestView(
        scope.get("method", ""),
        scope.get("path", "/"),
        _ASGIHeaders(scope.get("headers", ())),
        query.decode("latin-1") if isinstance(query, bytes) else str(query),
    )
    return state.color(current, view)


def color_wsgi(environ: Mapping[str, Any], current: RequestContext) -> RequestContext:
    """The context a WSGI request runs in: `current`, colored when lane rules are in force."""
    state = _state
    if state is None or not state.active:
        return current
    view = RequestView(
        environ.get("REQUEST_METHOD", ""),
        environ.get("PATH_INFO", "/"),
        _EnvironHeaders(environ),
        environ.get("QUERY_STRING", ""),
    )
    return state.color(current, view)
