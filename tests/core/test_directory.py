"""ServiceDirectory: revision-ordered application of snapshots and events."""

from tidegate.core.directory import ServiceDirectory
from tidegate.core.instance import Instance, InstanceState


def inst(n: int, service: str = "orders", state: InstanceState = InstanceState.SERVING, tag: str = "") -> Instance:
    return Instance(id=f"{service}-{n}", service=service, host="127.0.0.1", port=8000 + n, state=state, tag=tag)


def test_snapshot_replaces_everything() -> None:
    d = ServiceDirectory()
    d.replace(5, [inst(1), inst(2)], ["orders", "stock"])
    assert d.revision == 5
    assert {i.id for i in d.routable("orders")} == {"orders-1", "orders-2"}
    assert d.knows("stock") and d.routable("stock") == ()
    d.replace(9, [inst(3)], ["orders"])
    assert [i.id for i in d.routable("orders")] == ["orders-3"]
    assert not d.knows("stock")


def test_stale_events_are_ignored_so_replays_never_double_apply() -> None:
    d = ServiceDirectory()
    d.replace(10, [inst(1)])
    assert d.put(11, inst(2))
    assert not d.put(11, inst(3))  # same revision again: a replay
    assert not d.remove(7, "orders", "orders-1")  # older than what we have
    assert {i.id for i in d.routable("orders")} == {"orders-1", "orders-2"}
    assert d.remove(12, "orders", "orders-1")
    assert [i.id for i in d.routable("orders")] == ["orders-2"]
    assert d.revision == 12


def test_only_warming_and_serving_instances_are_routable() -> None:
    d = ServiceDirectory()
    d.replace(
        1, [inst(1), inst(2, state=InstanceState.WARMING), inst(3, state=InstanceState.DRAINING), inst(4, state=InstanceState.STARTING)]
    )
    assert {i.id for i in d.routable("orders")} == {"orders-1", "orders-2"}
    assert len(d.instances("orders")) == 4


def test_local_mark_takes_an_instance_out_until_the_stream_says_otherwise() -> None:
    d = ServiceDirectory()
    d.replace(1, [inst(1), inst(2)])
    assert d.mark_address("127.0.0.1", 8001, InstanceState.DRAINING)
    assert [i.id for i in d.routable("orders")] == ["orders-2"]
    assert not d.mark("nope", InstanceState.DRAINING)
    d.put(2, inst(1))  # the stream's word replaces the local mark
    assert {i.id for i in d.routable("orders")} == {"orders-1", "orders-2"}


def test_listeners_hear_which_service_changed() -> None:
    d = ServiceDirectory()
    heard: list[str] = []
    d.add_listener(heard.append)
    d.put(1, inst(1))
    d.put(2, inst(1, service="stock"))
    assert heard == ["orders", "stock"]


def test_snapshot_round_trips_through_disk_form() -> None:
    d = ServiceDirectory()
    d.replace(3, [inst(1, tag="gray"), inst(2)], ["orders", "idle"])
    copy = ServiceDirectory()
    copy.load_snapshot(d.to_snapshot())
    assert copy.revision == 3
    assert copy.services() == {"orders", "idle"}
    assert {(i.id, i.tag) for i in copy.routable("orders")} == {("orders-1", "gray"), ("orders-2", "")}
