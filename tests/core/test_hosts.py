"""The one Host header check against DNS rebinding (`tidegate.core.hosts.HostCheck`), shared
by the control plane and the agent's admin endpoint."""

from __future__ import annotations

import pytest

from tidegate.core.hosts import HostCheck, hostname


@pytest.mark.parametrize(
    "bound, names, header, allowed",
    [
        # bound to loopback: loopback addresses and localhost, nothing else
        ("127.0.0.1", (), "127.0.0.1:7070", True),
        ("127.0.0.1", (), "127.0.0.2", True),
        ("127.0.0.1", (), "[::1]:7070", True),
        ("127.0.0.1", (), "localhost:7070", True),
        ("127.0.0.1", (), "LOCALHOST.", True),
        ("127.0.0.1", (), "app.localhost:7070", True),
        ("127.0.0.1", (), "evil.example:7070", False),
        ("127.0.0.1", (), "localhost.evil.example", False),
        ("127.0.0.1", (), "10.0.0.5:7070", False),
        ("127.0.0.1", ("control.internal",), "control.internal:7070", True),
        ("127.0.0.1", ("*.example.com",), "a.b.example.com", True),
        ("127.0.0.1", ("*.example.com",), "example.com.evil", False),
        ("127.0.0.1", ("*",), "anything.at.all", True),
        # bound to one address: that address and the configured names
        ("10.0.0.5", (), "10.0.0.5:7070", True),
        ("10.0.0.5", (), "10.0.0.6:7070", False),
        ("10.0.0.5", (), "localhost", False),
        ("10.0.0.5", ("tidegate-control",), "tidegate-control:7070", True),
        # bound by name: that name
        ("control.internal", (), "control.internal:7070", True),
        ("control.internal", (), "other.internal", False),
        # bound to every interface: any IP literal (a rebinding page cannot send one), localhost, the names
        ("0.0.0.0", (), "10.1.2.3:7070", True),
        ("0.0.0.0", (), "[2001:db8::1]:7070", True),
        ("0.0.0.0", (), "localhost", True),
        ("0.0.0.0", (), "evil.example", False),
        ("::", ("pod-name",), "pod-name:7070", True),
        # no Host (HTTP/1.0) passes; a malformed or empty one does not (an empty Host names nothing served)
        ("127.0.0.1", (), None, True),
        ("127.0.0.1", (), "", False),
        ("127.0.0.1", (), "a:b:c", False),
        ("127.0.0.1", (), "127.0.0.1:port", False),
        ("127.0.0.1", (), "[::1", False),
        ("127.0.0.1", (), ":7070", False),
    ],
)
def test_which_hosts_are_answered(bound: str, names: tuple[str, ...], header: str | None, allowed: bool) -> None:
    assert HostCheck(bound, names).allows(header) is allowed


def test_hostname_drops_port_brackets_case_and_the_final_dot() -> None:
    assert hostname("Example.COM.:80") == "example.com"
    assert hostname("[::1]:7070") == "::1"
    assert hostname("10.0.0.1") == "10.0.0.1"


def test_served_names_what_is_answered_for_a_refusal_message() -> None:
    assert HostCheck("127.0.0.1", ["control.internal"]).served() == "127.0.0.1, localhost, control.internal"


# An admin endpoint bound to every interface, called by its pod DNS name and another name.
SERVED = HostCheck("0.0.0.0", ["orders-0.orders.shop.svc", "127.0.0.1", "0.0.0.0", "Plane.Example.", ""])


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:7070", "localhost"),
        ("LOCALHOST", "localhost"),
        ("127.0.0.1:8080", "127.0.0.1"),
        ("[::1]:9000", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("plane.example.:443", "plane.example"),
        (" evil.test ", "evil.test"),
    ],
)
def test_hostname(header: str, name: str) -> None:
    assert hostname(header) == name


@pytest.mark.parametrize(
    "header",
    [None, "127.0.0.1:7070", "10.1.2.3", "[::1]:1", "[fe80::1]", "localhost:1", "orders-0.orders.shop.svc:8080", "plane.example"],
)
def test_served_names_ip_literals_localhost_and_no_header_pass(header: str | None) -> None:
    assert SERVED.allows(header)


@pytest.mark.parametrize("header", ["evil.test", "evil.test:7070", "127.0.0.1.evil.test", "localhost.evil.test", "", ":80", "a:b:c"])
def test_other_names_are_refused(header: str) -> None:
    assert not SERVED.allows(header)


def test_ip_literals_are_not_kept_as_names() -> None:
    assert HostCheck("127.0.0.1", ["10.0.0.1", "::1"]).names == HostCheck("127.0.0.1", []).names == ()


def test_an_address_given_among_the_names_is_answered_and_named_in_the_refusal() -> None:
    """A NAT'd or proxied address the server is told it serves; loopback spelled as a mapped IPv6 or localhost.localdomain."""
    check = HostCheck("10.0.0.5", ["203.0.113.4", "tidegate-control"])
    assert check.allows("203.0.113.4:7070") and not check.allows("203.0.113.5")
    assert check.served() == "10.0.0.5, 203.0.113.4, tidegate-control"
    message = check.refusal("evil.test", "this control plane", "start it with --allowed-host NAME")
    assert "'evil.test'" in message and "10.0.0.5, 203.0.113.4, tidegate-control" in message and message.endswith("--allowed-host NAME")
    loopback = HostCheck("127.0.0.1")
    assert loopback.allows("[::ffff:127.0.0.1]:80") and loopback.allows("localhost.localdomain")
