"""The shared `Host` check (DNS-rebinding guard) of the control plane and the admin endpoint."""

from __future__ import annotations

import pytest

from tidegate.core.hosts import host_allowed, host_name, served_names

SERVED = served_names(["orders-0.orders.shop.svc", "127.0.0.1", "0.0.0.0", "Plane.Example.", ""])


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
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(
    "header",
    [None, "127.0.0.1:7070", "10.1.2.3", "[::1]:1", "[fe80::1]", "localhost:1", "orders-0.orders.shop.svc:8080", "plane.example"],
)
def test_served_names_ip_literals_localhost_and_no_header_pass(header: str | None) -> None:
    assert host_allowed(header, SERVED)


@pytest.mark.parametrize("header", ["evil.test", "evil.test:7070", "127.0.0.1.evil.test", "localhost.evil.test", "", ":80", "a:b:c"])
def test_other_names_are_refused(header: str) -> None:
    assert not host_allowed(header, SERVED)


def test_ip_literals_are_not_kept_as_names() -> None:
    assert served_names(["10.0.0.1", "::1"]) == served_names([])
