"""Heartbeat leases: an instance that stops renewing its lease expires after the TTL.

Each lease has the secret its holder registered with (the agent's per-instance
`lease_secret`; empty for one an admin registered without): only the holder may
renew, change or end it, and a live lease cannot be taken by another secret.
Time comes in as a parameter (a monotonic clock reading), so the expiry rule is
tested exactly; the control plane's reaper task only calls `expired(now)`.
"""

from __future__ import annotations

import hmac


class Leases:
    """Deadline per instance id; a renewal pushes the deadline `ttl` seconds on."""

    def __init__(self, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("lease ttl must be positive")
        self.ttl = ttl
        self._deadlines: dict[str, float] = {}
        self._secrets: dict[str, str] = {}

    def grant(self, instance_id: str, now: float, secret: str = "") -> None:
        """Start or renew the lease of `instance_id`, held by `secret` from now on."""
        self._deadlines[instance_id] = now + self.ttl
        self._secrets[instance_id] = secret

    def live_holder(self, instance_id: str, now: float) -> str | None:
        """The secret holding a live (unexpired) lease on `instance_id`, or None when none does."""
        deadline = self._deadlines.get(instance_id)
        if deadline is None or deadline < now:
            return None
        return self._secrets.get(instance_id, "")

    def held_by(self, instance_id: str, secret: str) -> bool:
        """Whether `secret` (non-empty) holds the lease on `instance_id` (compared in constant time)."""
        held = self._secrets.get(instance_id, "")
        return bool(held and secret) and hmac.compare_digest(held.encode(), secret.encode())

    def secret(self, instance_id: str) -> str | None:
        """The secret of the lease on `instance_id` (an ask names the lease by its hash: `lease_fingerprint`)."""
        return self._secrets.get(instance_id)

    def renew(self, instance_id: str, now: float) -> bool:
        """Renew a held lease; False when the id holds none (expired or never granted)."""
        if instance_id not in self._deadlines:
            return False
        self._deadlines[instance_id] = now + self.ttl
        return True

    def revoke(self, instance_id: str) -> None:
        self._deadlines.pop(instance_id, None)
        self._secrets.pop(instance_id, None)

    def expired(self, now: float) -> list[str]:
        """Ids whose deadline has passed (a lease is alive up to and including its deadline)."""
        return [instance_id for instance_id, deadline in self._deadlines.items() if deadline < now]

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._deadlines
