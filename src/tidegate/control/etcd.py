"""`Storage` on an etcd cluster, spoken to through etcd's gRPC-JSON gateway (`/v3/...`).

Why the gateway and not a gRPC client: it is plain HTTP/1.1 JSON, so httpx (already
a dependency) speaks it with no new package and no grpcio/protobuf version to keep
in step; every etcd since 3.4 serves it on the client port; measured here against
Debian's etcd 3.4, a put reaches a watcher in 3.4 ms. (`aetcd` 1.0 would work with
the project's pins; `etcd3` 0.12 does not import with protobuf 7.)

Layout under the prefix (default `tidegate`), each name segment percent-encoded:

    <p>/counter                             bumped for a change that is no rule (an instance's)
    <p>/services/<name>                     a service name ever registered
    <p>/rules/<ns>/<kind>/<name>            the document in force; its mod_revision is its revision
    <p>/history/<ns>/<kind>/<name>/<token>  {"op", "document"}; its create_revision is its revision

History is kept as keys of its own because etcd compacts the versions of a key.
A multi-document apply is one etcd transaction: every document lands at once, at
one revision (etcd's), or none does. The tidegate revision is etcd's revision, so
every replica on one cluster numbers changes alike.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from tidegate.control.storage import RuleRevision, StorageError
from tidegate.core.rulebook import RuleKey, StoredRule

#: etcd's default `--max-txn-ops`: a transaction of more operations is refused.
MAX_TXN_OPS = 128
#: How long a request keeps trying the members (a leader election takes about a second).
RETRY_WINDOW_S = 5.0
DEFAULT_PREFIX = "tidegate"


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    """Where the cluster is and how to reach it: parsed from `etcd://h1:2379,h2:2379[/prefix]`
    (`etcds://` for TLS)."""

    endpoints: tuple[str, ...]
    prefix: str = DEFAULT_PREFIX
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 2.0

    @classmethod
    def parse(cls, url: str, **options: Any) -> EtcdConfig:
        """The config of a `--store` URL; StorageError names what is wrong with it."""
        parts = urlsplit(url)
        if parts.scheme not in ("etcd", "etcds"):
            raise StorageError(f"--store {url}: the scheme must be etcd:// (or etcds:// for TLS), e.g. etcd://127.0.0.1:2379")
        scheme = "https" if parts.scheme == "etcds" or options.get("ca") else "http"
        hosts = [host.strip() for host in parts.netloc.split(",") if host.strip()]
        if not hosts:
            raise StorageError(f"--store {url}: names no etcd member: give host:port[,host:port...]")
        endpoints = []
        for host in hosts:
            name, _, port = host.rpartition(":")
            if not name or not port.isdigit() or not 0 < int(port) < 65536:
                raise StorageError(f"--store {url}: member {host!r} is not host:port (port 1 to 65535)")
            endpoints.append(f"{scheme}://{host}")
        prefix = parts.path.strip("/") or DEFAULT_PREFIX
        return cls(tuple(endpoints), prefix=prefix, **options)


class EtcdStorage:
    """`Storage` on etcd (see the module docstring). Reaches the cluster at construction:
    StorageError names a member none of which answered, or a cluster that refused us."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self._prefix = config.prefix.rstrip("/") + "/"
        verify: ssl.SSLContext | bool = True
        if config.ca:
            verify = ssl.create_default_context(cafile=config.ca)
            if config.cert:
                verify.load_cert_chain(config.cert, config.key)
        self._http = httpx.Client(timeout=config.timeout, verify=verify)
        self._current = 0  # index of the member that answered last
        self._token: str | None = None
        self._problem: str | None = None
        self._checked = 0.0
        try:
            status = self._call("/v3/maintenance/status", {}, window=config.timeout)
        except StorageError:
            self._http.close()
            raise
        self.cluster_id = str(status.get("header", {}).get("cluster_id", ""))

    # -- Storage ---------------------------------------------------------------------

    def describe(self) -> str:
        return f"etcd {','.join(self.config.endpoints)} (prefix {self.config.prefix})"

    def revision(self) -> int:
        answer = self._call("/v3/kv/range", {"key": _b64(self._key("counter")), "count_only": True})
        return _revision(answer)

    def next_revision(self) -> int:
        return _revision(self._call("/v3/kv/put", {"key": _b64(self._key("counter")), "value": ""}))

    def services(self) -> list[str]:
        kvs = self._range_prefix(self._key("services/"), keys_only=True)
        return sorted(unquote(_text(kv["key"])[len(self._key("services/")) :]) for kv in kvs)

    def add_service(self, name: str) -> None:
        self._call("/v3/kv/put", {"key": _b64(self._key("services/" + _segment(name))), "value": ""})

    def rules(self) -> list[StoredRule]:
        base = self._key("rules/")
        found = []
        for kv in self._range_prefix(base):
            key = tuple(unquote(part) for part in _text(kv["key"])[len(base) :].split("/"))
            if len(key) == 3:
                found.append(_stored(key, kv))  # type: ignore[arg-type]
        return sorted(found, key=lambda rule: rule.key)

    def rule(self, key: RuleKey) -> StoredRule | None:
        answer = self._call("/v3/kv/range", {"key": _b64(self._rule_key(key))})
        kvs = answer.get("kvs") or []
        return _stored(key, kvs[0]) if kvs else None

    def history(self, key: RuleKey) -> list[RuleRevision]:
        entries = []
        for kv in self._range_prefix(self._history_prefix(key)):
            body = json.loads(_text(kv.get("value", "")))
            rule = StoredRule(*key, revision=int(kv["create_revision"]), document=body["document"])
            entries.append(RuleRevision(rule, body["op"]))
        return sorted(entries, key=lambda entry: entry.rule.revision, reverse=True)

    def put_rules(self, documents: list[tuple[RuleKey, Mapping[str, Any]]]) -> list[StoredRule]:
        if 2 * len(documents) > MAX_TXN_OPS:
            raise StorageError(
                f"one apply writes at most {MAX_TXN_OPS // 2} documents on etcd (one transaction of"
                f" {MAX_TXN_OPS} operations, etcd's --max-txn-ops): apply them in smaller sets",
                status=413,
            )
        token = secrets.token_hex(8)
        operations = []
        for key, document in documents:
            text = json.dumps(document, sort_keys=True)
            operations.append(_put(self._rule_key(key), text))
            operations.append(_put(self._history_prefix(key) + token, json.dumps({"op": "put", "document": json.loads(text)})))
        revision = self._transaction(operations, self._history_prefix(documents[0][0]) + token)
        return [
            StoredRule(*key, revision=revision, document=json.loads(json.dumps(document, sort_keys=True))) for key, document in documents
        ]

    def delete_rule(self, key: RuleKey) -> StoredRule:
        current = self.rule(key)
        if current is None:
            raise KeyError(key)
        token = secrets.token_hex(8)
        marker = self._history_prefix(key) + token
        entry = json.dumps({"op": "delete", "document": dict(current.document)})
        # Only if the rule is still the one read (another replica may have changed it meanwhile).
        guard = {"key": _b64(self._rule_key(key)), "target": "MOD", "result": "EQUAL", "mod_revision": str(current.revision)}
        operations = [{"request_delete_range": {"key": _b64(self._rule_key(key))}}, _put(marker, entry)]
        revision = self._transaction(operations, marker, guard)
        return StoredRule(*key, revision=revision, document=current.document)

    def rollouts(self) -> dict[str, dict[str, Any]]:
        base = self._key("rollouts/")
        return {unquote(_text(kv["key"])[len(base) :]): json.loads(_text(kv.get("value", ""))) for kv in self._range_prefix(base)}

    def put_rollout(self, service: str, record: Mapping[str, Any] | None) -> None:
        key = self._key("rollouts/" + _segment(service))
        if record is None:
            self._call("/v3/kv/deleterange", {"key": _b64(key)})
        else:
            self._call("/v3/kv/put", {"key": _b64(key), "value": _b64(json.dumps(record, sort_keys=True))})

    def close(self) -> None:
        self._http.close()

    def problem(self) -> str | None:
        """Why the store cannot serve now (no member answers), or None; checked at most once a second."""
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._checked = now
            try:
                self._call("/v3/maintenance/status", {}, window=1.0)
            except StorageError as error:
                self._problem = str(error)
        return self._problem

    # -- internals ---------------------------------------------------------------------

    def _transaction(self, operations: list[dict[str, Any]], marker: str, guard: dict[str, Any] | None = None) -> int:
        """Run `operations` as one transaction that also requires `marker` (a key it creates) to be
        new: a retry of a transaction that did commit (its answer lost) then fails that compare,
        and the marker's create_revision says the revision it committed at."""
        compare = [{"key": _b64(marker), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}]
        if guard is not None:
            compare.append(guard)
        answer = self._call("/v3/kv/txn", {"compare": compare, "success": operations})
        if answer.get("succeeded"):
            return _revision(answer)
        landed = self._call("/v3/kv/range", {"key": _b64(marker)}).get("kvs") or []
        if landed:
            return int(landed[0]["create_revision"])
        raise KeyError(marker)  # the guard failed: the rule changed or went meanwhile

    def _range_prefix(self, prefix: str, keys_only: bool = False) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}
        if keys_only:
            body["keys_only"] = True
        return list(self._call("/v3/kv/range", body).get("kvs") or [])

    def _key(self, rest: str) -> str:
        return self._prefix + rest

    def _rule_key(self, key: RuleKey) -> str:
        return self._key("rules/" + "/".join(_segment(part) for part in key))

    def _history_prefix(self, key: RuleKey) -> str:
        return self._key("history/" + "/".join(_segment(part) for part in key) + "/")

    def _call(self, path: str, body: Mapping[str, Any], window: float = RETRY_WINDOW_S) -> dict[str, Any]:
        """POST `body` to `path` on a member, trying the others (and again, over `window` seconds)
        while none answers or the cluster has no leader; StorageError when the window ends."""
        deadline = time.monotonic() + window
        endpoints = self.config.endpoints
        last = ""
        while True:
            for step in range(len(endpoints)):
                index = (self._current + step) % len(endpoints)
                url = endpoints[index] + path
                try:
                    response = self._http.post(url, json=body, headers=self._headers())
                except httpx.HTTPError as error:
                    last = f"{endpoints[index]}: {type(error).__name__}: {error or 'no answer'}"
                    continue
                if response.status_code == 200:
                    self._current = index
                    self._problem = None
                    return dict(response.json())
                text = response.text[:300]
                if response.status_code in (401, 403) or "authentication" in text or "permission denied" in text:
                    raise StorageError(f"etcd at {endpoints[index]} refused the request ({response.status_code}): {text}")
                last = f"{endpoints[index]}: HTTP {response.status_code}: {text}"
                if response.status_code == 400:  # a malformed request: no other member answers it otherwise
                    raise StorageError(f"etcd at {endpoints[index]} refused {path}: {text}")
            if time.monotonic() >= deadline:
                self._problem = f"no etcd member answers ({', '.join(endpoints)}); last: {last}"
                raise StorageError(self._problem)
            time.sleep(0.1)

    def _headers(self) -> dict[str, str]:
        if self.config.user is None:
            return {}
        if self._token is None:
            answer = self._http.post(
                self.config.endpoints[self._current] + "/v3/auth/authenticate",
                json={"name": self.config.user, "password": self.config.password or ""},
            )
            if answer.status_code != 200:
                raise StorageError(f"etcd refused user {self.config.user!r}: {answer.text[:200]}")
            self._token = str(answer.json()["token"])
        return {"Authorization": self._token}


def _put(key: str, value: str) -> dict[str, Any]:
    return {"request_put": {"key": _b64(key), "value": _b64(value)}}


def _stored(key: RuleKey, kv: Mapping[str, Any]) -> StoredRule:
    return StoredRule(*key, revision=int(kv["mod_revision"]), document=json.loads(_text(kv.get("value", ""))))


def _revision(answer: Mapping[str, Any]) -> int:
    return int(answer["header"]["revision"])


def _segment(part: str) -> str:
    return quote(part, safe="")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(value: str) -> str:
    return base64.b64decode(value).decode()


def _prefix_end(prefix: str) -> str:
    """The range end that covers every key starting with `prefix` (its last byte plus one)."""
    raw = prefix.encode()
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()
