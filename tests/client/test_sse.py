"""The Server-Sent Events line parser."""

from __future__ import annotations

from tidegate.client.sse import PING, Frame, frames


def test_frames_pings_and_multi_line_data() -> None:
    lines = ["retry: 1000", "", "event: rule", "id: 7", 'data: {"a":', "data: 1}", "", ": ping", "", "data:plain", ""]
    assert list(frames(lines)) == [
        Frame("rule", "7", '{"a":\n1}'),
        PING,
        Frame("message", None, "plain"),
    ]


def test_an_unterminated_frame_is_not_delivered() -> None:
    assert list(frames(["event: rule", "id: 1", "data: {}"])) == []
