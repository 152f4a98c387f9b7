"""Instance model: JSON round trip, field errors, state transitions."""

import pytest

from tidegate.core.instance import Instance, InstanceState, can_transition


def test_round_trip() -> None:
    i = Instance(id="a", service="orders", host="127.0.0.1", port=9, tag="gray", admin_port=7, metadata={"k": "v"})
    assert Instance.from_dict(i.to_dict()) == i
    assert i.address == "127.0.0.1:9"


@pytest.mark.parametrize(
    "data, field",
    [
        ({"service": "s", "host": "h", "port": 1}, "'id'"),
        ({"id": "a", "service": "s", "host": "h"}, "'port'"),
        ({"id": "a", "service": "s", "host": "h", "port": "x"}, "invalid literal"),
        ({"id": "a", "service": "s", "host": "h", "port": 1, "state": "NAPPING"}, "NAPPING"),
    ],
)
def test_bad_fields_are_named(data: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Instance.from_dict(data)


def test_transitions() -> None:
    assert can_transition(InstanceState.SERVING, InstanceState.DRAINING)
    assert can_transition(InstanceState.DRAINING, InstanceState.SERVING)  # /online undoes a drain
    assert not can_transition(InstanceState.STOPPED, InstanceState.SERVING)
    assert not can_transition(InstanceState.SERVING, InstanceState.STARTING)
    assert can_transition(InstanceState.WARMING, InstanceState.WARMING)


def test_an_ask_round_trips_and_a_record_without_one_keeps_its_wire_format() -> None:
    from tidegate.core.instance import ASK_OFFLINE, Ask, lease_fingerprint

    plain = Instance(id="a", service="orders", host="127.0.0.1", port=9)
    assert "ask" not in plain.to_dict()  # what every record looked like before asks
    asked = Instance.from_dict({**plain.to_dict(), "ask": {"want": ASK_OFFLINE, "id": "x1", "lease": lease_fingerprint("s")}})
    assert asked.ask == Ask(ASK_OFFLINE, "x1", lease_fingerprint("s")) and Instance.from_dict(asked.to_dict()) == asked
    assert Instance.from_dict({**plain.to_dict(), "ask": {"want": "later", "id": "x2"}}).ask == Ask("later", "x2", "")
    assert lease_fingerprint("") == "" and lease_fingerprint("s") != "s" and len(lease_fingerprint("s")) == 16
    with pytest.raises(ValueError, match="ask"):
        Instance.from_dict({**plain.to_dict(), "ask": "offline"})
