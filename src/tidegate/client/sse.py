"""Parse a Server-Sent Events stream, line by line, into (event, id, data) frames."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Frame:
    event: str  # "message" when the frame named none; "ping" for a comment
    id: str | None
    data: str


PING = Frame("ping", None, "")


def frames(lines: Iterable[str]) -> Iterator[Frame]:
    """Frames from the stream's lines (without their line endings). A comment
    line yields `PING`, so a reader can act on keep-alives too."""
    event, event_id = "", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data or event:
                yield Frame(event or "message", event_id, "\n".join(data))
            event, event_id, data = "", None, []
            continue
        if line.startswith(":"):
            yield PING
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
