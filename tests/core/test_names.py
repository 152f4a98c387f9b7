"""The one grammar of names (service, tag, instance id, host, metadata key) the agent and the control plane share."""

from __future__ import annotations

import pytest

from tidegate.agent.config import AgentConfig, AgentConfigError
from tidegate.core import names


@pytest.mark.parametrize("text", ["orders", "a", "svc-1.v2_x", "0", "a" * 63])
def test_service_names(text: str) -> None:
    assert names.is_service_name(text)


@pytest.mark.parametrize("text", ["", "a/b", "-a", ".a", "a b", "a\n", "orders\n", "a" * 64, "ørders", "[red]x", "a\x1b"])
def test_not_service_names(text: str) -> None:
    assert not names.is_service_name(text)


def test_tags_may_be_empty_and_ids_carry_addresses() -> None:
    assert names.is_tag("") and names.is_tag("gray") and not names.is_tag("a/b") and not names.is_tag("x" * 64)
    for good in ("orders-0123456789ab", "orders@10.0.0.1:8001", "orders@::1:8001", "orders@[fe80::1%eth0]:80", "0"):
        assert names.is_instance_id(good), good
    for bad in ("", "a/b", "a b", "a\r\n", "-a", "x" * 256, "a\x00"):
        assert not names.is_instance_id(bad), bad


@pytest.mark.parametrize("text", ["10.0.0.1", "::1", "fe80::1%eth0", "h", "orders-0.orders.svc.cluster.local", "my_host"])
def test_hosts(text: str) -> None:
    assert names.is_host(text)


@pytest.mark.parametrize("text", ["", "a/b", "a b", "[::1]", "h:80", "-h", "h-", "a..b", "x" * 254, "é.com", "a\n"])
def test_not_hosts(text: str) -> None:
    assert not names.is_host(text)


def test_control_characters_c0_c1_and_del() -> None:
    assert all(names.has_control_characters(c) for c in ("\x00", "\x1b", "\n", "\x7f", "\x9b"))
    assert not names.has_control_characters("plain text, é and 中")


def test_the_agent_refuses_what_the_control_plane_refuses() -> None:
    with pytest.raises(AgentConfigError, match="TIDEGATE_SERVICE"):
        AgentConfig.from_env({"TIDEGATE_SERVICE": "a/b"})
    with pytest.raises(AgentConfigError, match="TIDEGATE_TAG"):
        AgentConfig.from_env({"TIDEGATE_SERVICE": "a", "TIDEGATE_TAG": "x" * 64})
    assert AgentConfig.from_env({"TIDEGATE_SERVICE": "a" * 63, "TIDEGATE_TAG": "v2"}).service == "a" * 63
