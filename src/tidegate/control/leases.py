"""Heartbeat leases: an instance that stops renewing its lease expires after the TTL.

Time comes in as a parameter (a monotonic clock reading), so the expiry rule is
tested exactly; the control plane's reaper task only calls `expired(now)`.
"""

from __future__ import annotations


class Leases:
    """Deadline per instance id; a renewal pushes the deadline `ttl` seconds on."""

    def __init__(self, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("lease ttl must be positive")
        self.ttl = ttl
        self._deadlines: dict[str, float] = {}

    def grant(self, instance_id: str, now: float) -> None:
        """Start or renew the lease of `instance_id`."""
        self._deadlines[instance_id] = now + self.ttl

    def renew(self, instance_id: str, now: float) -> bool:
        """Renew a held lease; False when the id holds none (expired or never granted)."""
        if instance_id not in self._deadlines:
            return False
        self._deadlines[instance_id] = now + self.ttl
        return True

    def revoke(self, instance_id: str) -> None:
        self._deadlines.pop(instance_id, None)

    def expired(self, now: float) -> list[str]:
        """Ids whose deadline has passed (a lease is alive up to and including its deadline)."""
        return [instance_id for instance_id, deadline in self._deadlines.items() if deadline < now]

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._deadlines
