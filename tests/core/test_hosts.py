"""The Host header check against DNS rebinding, shared by the control plane and the admin endpoint."""

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
        # no Host (HTTP/1.0) passes; a malformed one does not
        ("127.0.0.1", (), None, True),
        ("127.0.0.1", (), "", True),
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
