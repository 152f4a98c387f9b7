"""One contract, every `Storage`: SQLite (a file in tmp) and etcd (the 3-member cluster
scripts/test.sh starts; `TIDEGATE_TEST_ETCD` lists its client URLs). Each etcd test
works under a prefix of its own, so they share the cluster without meeting."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidegate.control.etcd import MAX_TXN_OPS, EtcdConfig, EtcdStorage
from tidegate.control.storage import SqliteStorage, Storage, StorageError

ETCD = os.environ.get("TIDEGATE_TEST_ETCD", "")
needs_etcd = pytest.mark.skipif(not ETCD, reason="TIDEGATE_TEST_ETCD is not set (bash scripts/test.sh starts a 3-member etcd and sets it)")


def etcd_url(prefix: str) -> str:
    """The `--store` URL of the test cluster, under `prefix`."""
    hosts = ",".join(url.split("://", 1)[1] for url in ETCD.split(","))
    return f"etcd://{hosts}/{prefix}"


def open_storage(backend: str, tmp_path: Path) -> Storage:
    if backend == "sqlite":
        return SqliteStorage(tmp_path / "data")
    return EtcdStorage(EtcdConfig.parse(etcd_url("test-" + secrets.token_hex(6))))


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=needs_etcd)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    store = open_storage(request.param, tmp_path)
    try:
        yield store
    finally:
        store.close()


KEY = ("default", "CircuitBreaker", "cb")
OTHER = ("default", "Retry", "r")


def test_revisions_only_grow(storage: Storage) -> None:
    first = storage.revision()
    bumped = storage.next_revision()
    assert bumped > first
    assert storage.revision() >= bumped
    assert storage.next_revision() > bumped


def test_services_are_remembered_once_in_order(storage: Storage) -> None:
    storage.add_service("orders")
    storage.add_service("billing")
    storage.add_service("orders")
    storage.add_service("a/b c")  # names from before the grammar, kept as they came
    assert storage.services() == sorted(["orders", "billing", "a/b c"])


def test_put_rules_writes_every_document_and_its_history(storage: Storage) -> None:
    before = storage.revision()
    written = storage.put_rules([(KEY, {"spec": {"n": 1}}), (OTHER, {"spec": {"n": 2}})])
    assert [rule.key for rule in written] == [KEY, OTHER]
    assert all(rule.revision > before for rule in written)
    assert storage.rule(KEY) == written[0]
    assert storage.rule(OTHER) == written[1]
    assert [rule.key for rule in storage.rules()] == sorted([KEY, OTHER])
    assert storage.revision() >= max(rule.revision for rule in written)
    again = storage.put_rules([(KEY, {"spec": {"n": 3}})])[0]
    assert again.revision > written[0].revision
    history = storage.history(KEY)
    assert [(entry.op, entry.rule.document) for entry in history] == [("put", {"spec": {"n": 3}}), ("put", {"spec": {"n": 1}})]
    assert [entry.rule.revision for entry in history] == [again.revision, written[0].revision]


def test_delete_keeps_history_and_raises_for_what_is_not_in_force(storage: Storage) -> None:
    put = storage.put_rules([(KEY, {"spec": {"n": 1}})])[0]
    deleted = storage.delete_rule(KEY)
    assert deleted.revision > put.revision
    assert deleted.document == {"spec": {"n": 1}}
    assert storage.rule(KEY) is None
    assert storage.rules() == []
    assert [(entry.op, entry.rule.revision) for entry in storage.history(KEY)] == [("delete", deleted.revision), ("put", put.revision)]
    with pytest.raises(KeyError):
        storage.delete_rule(KEY)
    assert storage.history(OTHER) == []


def test_names_with_separators_stay_apart(storage: Storage) -> None:
    one = ("a/b", "Kind", "c")
    two = ("a", "b/Kind", "c")
    storage.put_rules([(one, {"v": 1}), (two, {"v": 2})])
    assert storage.rule(one).document == {"v": 1}  # type: ignore[union-attr]
    assert storage.rule(two).document == {"v": 2}  # type: ignore[union-attr]
    assert len(storage.history(one)) == 1


def test_the_store_says_what_it_is_and_that_it_serves(storage: Storage) -> None:
    assert storage.describe()
    assert storage.problem() is None


@needs_etcd
def test_etcd_apply_is_one_transaction_at_one_revision(tmp_path: Path) -> None:
    store = open_storage("etcd", tmp_path)
    try:
        written = store.put_rules([(KEY, {"v": 1}), (OTHER, {"v": 2})])
        assert written[0].revision == written[1].revision  # one etcd transaction, one etcd revision
        too_many = [(("default", "Retry", f"r{i}"), {"v": i}) for i in range(MAX_TXN_OPS // 2 + 1)]
        with pytest.raises(StorageError, match="max-txn-ops") as refused:
            store.put_rules(too_many)
        assert refused.value.status == 413
        assert [rule.key for rule in store.rules()] == sorted([KEY, OTHER])  # nothing of it landed
    finally:
        store.close()


@needs_etcd
def test_etcd_replicas_on_one_cluster_share_rules_and_revisions(tmp_path: Path) -> None:
    url = etcd_url("shared-" + secrets.token_hex(6))
    one, two = EtcdStorage(EtcdConfig.parse(url)), EtcdStorage(EtcdConfig.parse(url))
    try:
        written = one.put_rules([(KEY, {"v": 1})])[0]
        assert two.rule(KEY) == written
        assert two.next_revision() > written.revision
    finally:
        one.close()
        two.close()


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://127.0.0.1:2379", "scheme must be etcd://"),
        ("etcd://", "names no etcd member"),
        ("etcd://127.0.0.1", "is not host:port"),
        ("etcd://127.0.0.1:99999", "is not host:port"),
    ],
)
def test_a_misconfigured_store_url_is_named(url: str, named: str) -> None:
    with pytest.raises(StorageError, match=named):
        EtcdConfig.parse(url)


def test_an_unreachable_etcd_is_named_at_start() -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = EtcdConfig.parse(f"etcd://127.0.0.1:{port}")
    with pytest.raises(StorageError, match=f"no etcd member answers .*127.0.0.1:{port}"):
        EtcdStorage(config)


def test_rollouts_are_saved_replaced_and_forgotten(storage: Storage) -> None:
    assert storage.rollouts() == {}
    storage.put_rollout("orders", {"machine": {"step": 1}, "document": {"kind": "Rollout"}})
    storage.put_rollout("a/b", {"machine": {"step": 0}})
    storage.put_rollout("orders", {"machine": {"step": 2}})
    assert storage.rollouts() == {"a/b": {"machine": {"step": 0}}, "orders": {"machine": {"step": 2}}}
    storage.put_rollout("orders", None)
    storage.put_rollout("never-saved", None)
    assert storage.rollouts() == {"a/b": {"machine": {"step": 0}}}
