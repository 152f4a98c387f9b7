"""Signed drain notices: what a draining instance sends its consumers, and how a consumer checks it.

A notice is the JSON body `{"service", "instance", "address", "ts"}` with the
header `X-Tidegate-Signature: v1=<hex HMAC-SHA256 of the exact body bytes>`,
keyed with the sending instance's `notice_key` (made by its agent, carried in
the registry's instance records to agent- and admin-role readers). No bearer
token travels with it, so a notice sent to a wrong address gives away nothing
reusable.

A consumer acts on a notice only when `NoticeCheck.verify` says so: the named
instance is in its directory under the named service and address, the
signature verifies with that entry's key, `ts` is within `WINDOW_S` of its
clock and the signature was not seen before (a replay of a notice seen once
changes nothing). Time is passed in.

`targets` decides where a provider sends: only admin addresses that its
directory holds for an instance of the service a consumer named (host +
admin_port; a loopback address matches an instance advertised on loopback,
the one-host case). Anything a caller says that the directory does not back
is dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tidegate.core.instance import Instance

SIGNATURE_HEADER = "X-Tidegate-Signature"
#: A notice more than this far from the consumer's clock (either way) is refused.
WINDOW_S = 30.0
#: Signatures remembered against replays (each at most 2 x WINDOW_S: an older one is refused by its ts).
SEEN_CAPACITY = 4096
_LOOPBACK_NAMES = ("localhost", "::1")


def notice_body(service: str, instance: str, address: str, ts: float) -> bytes:
    return json.dumps({"service": service, "instance": instance, "address": address, "ts": round(ts, 3)}).encode()


def sign(key: str, body: bytes) -> str:
    """The signature header's value for `body` under `key`."""
    return "v1=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `NoticeCheck.verify` decided: `status` 200 (act on `instance`), 400, 401 or 409, and why."""

    status: int
    reason: str = ""
    instance: Instance | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


class NoticeCheck:
    """A consumer's check of drain notices against its directory (`find(instance_id)`)."""

    def __init__(self, capacity: int = SEEN_CAPACITY, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self.capacity = capacity
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, float] = OrderedDict()  # signature -> its notice's ts

    def verify(self, raw: bytes, signature: str, find: Callable[[str], Instance | None], now: float) -> Verdict:
        """Check notice `raw` (signed `signature`) against the directory (`find` an instance by id;
        None: not there); `now` is seconds since the epoch."""
        try:
            body = json.loads(raw)
        except ValueError as error:
            return Verdict(400, f"body is not JSON: {error}")
        if not isinstance(body, dict):
            return Verdict(400, "body must be a JSON object with 'service', 'instance', 'address' (host:port) and 'ts'")
        service, instance_id, address, ts = body.get("service"), body.get("instance"), body.get("address"), body.get("ts")
        if not isinstance(instance_id, str) or not isinstance(address, str) or ":" not in address:
            return Verdict(400, "fields 'instance' (an id) and 'address' (host:port) are required strings")
        if not isinstance(service, str) or not isinstance(ts, int | float) or isinstance(ts, bool):
            return Verdict(400, "fields 'service' (a name) and 'ts' (seconds since the epoch) are required")
        known = find(instance_id)
        if known is None or known.service != service or known.address != address:
            return Verdict(401, f"no instance {instance_id!r} of {service!r} at {address!r} in this process's directory")
        if not known.notice_key:
            return Verdict(401, f"the directory holds no notice key for {instance_id!r} (a read-role token sees none)")
        if not signature or not hmac.compare_digest(signature.encode(), sign(known.notice_key, raw).encode()):
            return Verdict(401, f"the {SIGNATURE_HEADER} does not verify with {instance_id!r}'s notice key")
        if not abs(now - float(ts)) <= self.window_s:
            return Verdict(409, f"the notice's ts is more than {self.window_s:g}s from this clock")
        with self._lock:
            if signature in self._seen:
                return Verdict(409, "this notice was seen already")
            self._seen[signature] = float(ts)
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
        return Verdict(200, instance=known)


def targets(consumers: Iterable[tuple[str, str]], instances_of: Callable[[str], Iterable[Instance]]) -> list[str]:
    """The admin addresses (host:port) among `consumers` ((service, admin)) that the directory backs."""
    chosen: set[str] = set()
    for service, admin in consumers:
        host, _, port = admin.rpartition(":")
        host = host.strip("[]")
        if not port.isdigit():
            continue
        for instance in instances_of(service):
            if instance.admin_port == int(port) and _same_host(instance.host, host):
                chosen.add(admin)
                break
    return sorted(chosen)


def _same_host(advertised: str, named: str) -> bool:
    if advertised == named:
        return True
    return _loopback(advertised) and _loopback(named)


def _loopback(host: str) -> bool:
    return host.startswith("127.") or host in _LOOPBACK_NAMES
