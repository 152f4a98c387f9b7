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


# -- a control plane that restarts (a new epoch): the grace window ------------------------------

LEASE = 15.0


def _ids(d: ServiceDirectory, service: str = "orders") -> set[str]:
    return {i.id for i in d.routable(service)}


def test_a_snapshot_from_a_new_epoch_holds_over_the_instances_it_lacks_for_one_window(clock) -> None:
    d = ServiceDirectory()
    d.replace(5, [inst(1), inst(2), inst(3)], ["orders"], epoch="e1", now=clock(), grace_s=LEASE)
    assert d.held_over() == {}
    restart = clock.advance(1)
    d.replace(20, [inst(1)], ["orders"], epoch="e2", now=restart, grace_s=LEASE)  # only orders-1 registered again so far
    assert d.epoch == "e2" and d.revision == 20
    assert _ids(d) == {"orders-1", "orders-2", "orders-3"}  # nobody forgot a live instance
    assert d.held_over() == {"orders-2": restart + LEASE, "orders-3": restart + LEASE}
    assert d.put(21, inst(2))  # orders-2 registers with the new control plane: it is in for good
    assert d.held_over() == {"orders-3": restart + LEASE}
    assert d.expire(clock.advance(LEASE - 0.001)) == restart + LEASE  # the window has not ended
    assert _ids(d) == {"orders-1", "orders-2", "orders-3"}
    assert d.expire(clock.advance(0.001)) is None  # it ends: orders-3 never came back and leaves
    assert _ids(d) == {"orders-1", "orders-2"}
    assert d.held_over() == {}
    assert d.expire(clock.advance(100)) is None


def test_the_first_snapshot_and_snapshots_of_the_same_epoch_replace_everything_at_once(clock) -> None:
    d = ServiceDirectory()
    d.replace(1, [inst(1), inst(2)], ["orders"])  # e.g. from a disk snapshot without an epoch
    d.replace(5, [inst(1)], ["orders"], epoch="e1", now=clock(), grace_s=LEASE)  # no epoch known before: the truth
    assert _ids(d) == {"orders-1"}
    d.replace(9, [inst(1), inst(3)], ["orders"], epoch="e1", now=clock(), grace_s=LEASE)
    d.replace(12, [inst(3)], ["orders"], epoch="e1", now=clock(), grace_s=LEASE)  # same plane, fell behind its log
    assert _ids(d) == {"orders-3"} and d.held_over() == {}


def test_without_a_window_a_new_epoch_replaces_everything(clock) -> None:
    d = ServiceDirectory()
    d.replace(5, [inst(1), inst(2)], epoch="e1", now=clock(), grace_s=LEASE)
    d.replace(9, [inst(2)], epoch="e2", now=clock(), grace_s=0)
    assert _ids(d) == {"orders-2"} and d.held_over() == {}


def test_a_held_over_instance_leaves_at_once_when_it_is_deregistered(clock) -> None:
    d = ServiceDirectory()
    d.replace(5, [inst(1), inst(2)], epoch="e1", now=clock(), grace_s=LEASE)
    d.replace(9, [], epoch="e2", now=clock(), grace_s=LEASE)
    assert d.remove(10, "orders", "orders-2")
    assert _ids(d) == {"orders-1"} and set(d.held_over()) == {"orders-1"}


def test_an_instance_back_under_a_new_id_at_the_same_address_releases_the_held_one(clock) -> None:
    d = ServiceDirectory()
    d.replace(5, [inst(1), inst(2)], epoch="e1", now=clock(), grace_s=LEASE)
    d.replace(9, [], epoch="e2", now=clock(), grace_s=LEASE)
    again = Instance(id="orders-new", service="orders", host="127.0.0.1", port=8001)
    assert d.put(10, again)
    assert _ids(d) == {"orders-new", "orders-2"}  # orders-1 (same address) is not counted twice
    assert set(d.held_over()) == {"orders-2"}


def test_a_second_restart_gives_the_instances_still_held_a_new_window_a_same_epoch_snapshot_keeps_theirs(clock) -> None:
    d = ServiceDirectory()
    d.replace(5, [inst(1), inst(2)], epoch="e1", now=clock(), grace_s=LEASE)
    first = clock.advance(1)
    d.replace(9, [inst(1)], epoch="e2", now=first, grace_s=LEASE)
    d.replace(11, [inst(1)], epoch="e2", now=clock.advance(5), grace_s=LEASE)  # same plane again: the window goes on
    assert d.held_over() == {"orders-2": first + LEASE}
    second = clock.advance(5)
    d.replace(30, [], epoch="e3", now=second, grace_s=LEASE)  # restarted again before orders-2 could register
    assert d.held_over() == {"orders-1": second + LEASE, "orders-2": second + LEASE}
    assert _ids(d) == {"orders-1", "orders-2"}


def test_held_over_instances_keep_their_state_and_local_marks(clock) -> None:
    d = ServiceDirectory()
    d.replace(5, [inst(1), inst(2, state=InstanceState.DRAINING), inst(3)], epoch="e1", now=clock(), grace_s=LEASE)
    assert d.mark("orders-3", InstanceState.DRAINING)  # a drain notice came directly
    d.replace(9, [], epoch="e2", now=clock(), grace_s=LEASE)
    assert _ids(d) == {"orders-1"}
    assert len(d.instances("orders")) == 3


def test_listeners_hear_of_a_held_over_instance_leaving(clock) -> None:
    d = ServiceDirectory()
    d.replace(5, [inst(1), inst(1, service="stock")], epoch="e1", now=clock(), grace_s=LEASE)
    d.replace(9, [inst(1, service="stock")], epoch="e2", now=clock(), grace_s=LEASE)
    heard: list[str] = []
    d.add_listener(heard.append)
    d.expire(clock.advance(LEASE))
    assert heard == ["orders"]


def test_the_epoch_survives_the_disk_snapshot(clock) -> None:
    d = ServiceDirectory()
    d.replace(5, [inst(1)], ["orders"], epoch="e1", now=clock(), grace_s=LEASE)
    loaded = ServiceDirectory()
    loaded.load_snapshot(d.to_snapshot())
    assert loaded.epoch == "e1" and _ids(loaded) == {"orders-1"}
    loaded.replace(9, [], ["orders"], epoch="e2", now=clock(), grace_s=LEASE)  # the plane restarted while this process was down
    assert _ids(loaded) == {"orders-1"}


def test_the_generation_counts_every_change_and_no_stale_event() -> None:
    d = ServiceDirectory()
    seen = [d.generation]

    def changed() -> None:
        assert d.generation > seen[-1]
        seen.append(d.generation)

    d.replace(3, [inst(1)], epoch="e")
    changed()
    d.replace(3, [inst(2)], epoch="e")  # a snapshot at the same revision
    changed()
    assert d.put(4, inst(3))
    changed()
    assert not d.put(4, inst(4))  # stale: nothing changed
    assert d.generation == seen[-1]
    assert d.mark(inst(3).id, InstanceState.DRAINING)  # a drain notice keeps the revision
    changed()
    assert d.remove(5, "orders", inst(3).id)
    changed()
    d.replace(6, [], epoch="f", now=0.0, grace_s=1.0)  # inst(2) held over
    changed()
    assert d.expire(now=0.5) is not None and d.generation == seen[-1]  # nothing expired yet
    assert d.expire(now=2.0) is None and d.revision == 6
    changed()
