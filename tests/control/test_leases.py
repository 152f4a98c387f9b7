"""Lease expiry, pinned with explicit clock readings."""

from __future__ import annotations

import pytest

from tidegate.control.leases import Leases


def test_a_lease_lives_until_its_deadline_inclusive_and_expires_after() -> None:
    leases = Leases(ttl=15.0)
    leases.grant("a", now=100.0)
    assert leases.expired(115.0) == []
    assert leases.expired(115.001) == ["a"]


def test_renewal_pushes_the_deadline_from_the_renewal_time() -> None:
    leases = Leases(ttl=10.0)
    leases.grant("a", now=0.0)
    assert leases.renew("a", now=9.0)
    assert leases.expired(18.9) == []
    assert leases.expired(19.1) == ["a"]


def test_renewing_an_unknown_or_revoked_lease_fails() -> None:
    leases = Leases(ttl=5.0)
    assert not leases.renew("ghost", now=1.0)
    leases.grant("a", now=0.0)
    leases.revoke("a")
    assert not leases.renew("a", now=1.0)
    assert "a" not in leases
    assert leases.expired(100.0) == []


def test_only_silent_instances_expire() -> None:
    leases = Leases(ttl=2.0)
    leases.grant("quiet", now=0.0)
    leases.grant("chatty", now=0.0)
    for t in (1.0, 2.0, 3.0):
        leases.renew("chatty", now=t)
    assert leases.expired(3.5) == ["quiet"]


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Leases(ttl=0)
