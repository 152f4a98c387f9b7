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
