"""`ControlClient`: the synchronous client of the control plane's HTTP API.

Used by the agent, the gateway, the CLI and the demo. Thread-safe (one httpx
client, which pools connections across threads). Every refusal, and an
unreachable control plane, raises `ControlPlaneError` with `.status` (None
when there was no answer).

An agent registers each instance with its `lease_secret` and sends it back in
`X-Tidegate-Lease` to heartbeat, change or deregister that instance (an admin
token needs none). An `https://` control plane's certificate is verified with
the CA file `ca` (default `$TIDEGATE_CA`), else with httpx's default bundle (certifi's).
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from tidegate.core.instance import Instance, InstanceState
from tidegate.core.rulebook import StoredRule
from tidegate.errors import ControlPlaneError

CA_ENV = "TIDEGATE_CA"
LEASE_HEADER = "X-Tidegate-Lease"


def tls_verify(ca: str | None) -> ssl.SSLContext | bool:
    """What httpx verifies an https:// server with: the CA file `ca` (default `$TIDEGATE_CA`), else
    httpx's default bundle (certifi's public CAs). Raises ControlPlaneError naming the file when it cannot be loaded."""
    path = ca if ca is not None else os.environ.get(CA_ENV, "").strip()
    if not path:
        return True
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as error:
        raise ControlPlaneError(
            f"cannot load the CA certificate(s) {path!r} ({CA_ENV} / --ca): {getattr(error, 'strerror', None) or error}"
        ) from None


class ControlClient:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 5.0, ca: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, verify=tls_verify(ca))

    # -- registry ----------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/v1/health")

    def register(self, instance: Instance, lease_secret: str = "") -> Instance:
        """Register (or replace) `instance`, leased to `lease_secret`; returns what the server stored.

        Registering again the instance the server returned keeps its original
        `registered_at` (so a re-registration after a control-plane restart does
        not restart consumers' warm-up ramp); an instance with `registered_at`
        0 is stamped now. Under an agent token `lease_secret` is required, and
        an id a live lease holds with another secret is refused (409)."""
        body = instance.to_dict()
        if not instance.registered_at:
            body.pop("registered_at")
        if not instance.id:  # the server names it service@host:port
            body.pop("id")
        if not instance.notice_key:
            body.pop("notice_key")
        body.pop("ask", None)  # the control plane's to make, never a registration's
        if lease_secret:
            body["lease_secret"] = lease_secret
        return Instance.from_dict(self._call("POST", "/v1/instances", json=body))

    def heartbeat(self, instance_id: str, lease: str = "") -> bool:
        """Renew the lease; False when the server does not know the instance (register it again)."""
        try:
            self._call("PUT", f"/v1/instances/{_segment(instance_id)}/heartbeat", headers=_lease(lease))
        except ControlPlaneError as error:
            if error.status == 404:
                return False
            raise
        return True

    def set_state(self, instance_id: str, state: InstanceState, lease: str = "") -> None:
        self._call("PUT", f"/v1/instances/{_segment(instance_id)}/state", json={"state": str(state)}, headers=_lease(lease))

    def deregister(self, instance_id: str, lease: str = "") -> None:
        """Remove the instance; one already gone (lease expired) is not an error."""
        try:
            self._call("DELETE", f"/v1/instances/{_segment(instance_id)}", headers=_lease(lease))
        except ControlPlaneError as error:
            if error.status != 404:
                raise

    def services(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/services")

    def instances(self, service: str) -> list[Instance]:
        return [Instance.from_dict(item) for item in self._call("GET", f"/v1/services/{_segment(service)}/instances")]

    # -- rules -------------------------------------------------------------------

    def apply_rules(self, text_or_documents: str | bytes | Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> list[StoredRule]:
        """Apply YAML/JSON text, one document or a list of documents, all or nothing.

        A document identical to the one in force keeps its revision."""
        return [StoredRule.from_dict(item) for item in self.apply_rules_answer(text_or_documents)]

    def apply_rules_answer(self, text_or_documents: str | bytes | Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """`apply_rules`, answered as the control plane says it: each rule's dict, with `unchanged` and
        `warnings` (why a target can never match) when it has them."""
        if isinstance(text_or_documents, (str, bytes)):
            content = text_or_documents.encode() if isinstance(text_or_documents, str) else text_or_documents
            content_type = "application/yaml"
        else:
            documents = [text_or_documents] if isinstance(text_or_documents, Mapping) else list(text_or_documents)
            content = json.dumps(documents).encode()
            content_type = "application/json"
        written: list[dict[str, Any]] = self._call("POST", "/v1/rules", content=content, headers={"Content-Type": content_type})
        return written

    def rules(self, namespace: str | None = None, kind: str | None = None) -> list[StoredRule]:
        params = {k: v for k, v in (("namespace", namespace), ("kind", kind)) if v}
        return [StoredRule.from_dict(item) for item in self._call("GET", "/v1/rules", params=params)]

    def history(self, namespace: str, kind: str, name: str) -> list[StoredRule]:
        """Every revision, newest first; a deletion comes as a rule with an empty document."""
        entries = self._call("GET", f"{_rule_path(namespace, kind, name)}/history")
        return [StoredRule.from_dict({**e, "document": e["document"] if e.get("op") == "put" else {}}) for e in entries]

    def rollback(self, namespace: str, kind: str, name: str, revision: int) -> StoredRule:
        """Write revision `revision`'s document again, as a new revision."""
        return StoredRule.from_dict(self._call("POST", f"{_rule_path(namespace, kind, name)}/rollback", json={"revision": revision}))

    def delete_rule(self, namespace: str, kind: str, name: str, cascade: bool = False) -> list[StoredRule]:
        """Delete one rule; with `cascade`, also the rules that still use it (a strategy's referrers).
        Returns the rules deleted, the named one first."""
        answer = self._call("DELETE", _rule_path(namespace, kind, name), params={"cascade": "true"} if cascade else None)
        if not isinstance(answer, Mapping):
            return []
        return [StoredRule.from_dict(answer), *(StoredRule.from_dict(item) for item in answer.get("cascaded", []))]

    def delete_rules(self, text: str | bytes, cascade: bool = False) -> dict[str, Any]:
        """Delete the rules the documents in `text` name (what `apply_rules(text)` wrote), referrers first:
        {"deleted": [StoredRule, ...], "not_in_force": ["namespace/kind/name", ...]}."""
        content = text.encode() if isinstance(text, str) else text
        answer = self._call(
            "DELETE",
            "/v1/rules",
            content=content,
            headers={"Content-Type": "application/yaml"},
            params={"cascade": "true"} if cascade else None,
        )
        return {"deleted": [StoredRule.from_dict(item) for item in answer["deleted"]], "not_in_force": list(answer["not_in_force"])}

    # -- events --------------------------------------------------------------------

    def post_event(self, event: dict[str, Any]) -> None:
        """Report an event (needs a `type`, e.g. "breaker") for the console."""
        self._call("POST", "/v1/events", json=event)

    # -- rollouts (issue 17) ----------------------------------------------------------

    def start_rollout(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """Start a rollout from a `Rollout` document; its state as the control plane keeps it."""
        return dict(self._call("POST", "/v1/rollouts", json=dict(document)))

    def rollouts(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/rollouts"))

    def rollout(self, service: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/rollouts/{_segment(service)}"))

    def rollout_action(self, service: str, action: str, reason: str = "") -> dict[str, Any]:
        """pause, resume, promote or abort the service's rollout."""
        body = {"reason": reason} if reason else {}
        return dict(self._call("POST", f"/v1/rollouts/{_segment(service)}/{_segment(action)}", json=body))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ControlPlaneError(f"control plane at {self.base_url} unreachable: {error}") from error
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            raise ControlPlaneError(_refusal(method, path, response.status_code, body), status=response.status_code)
        return body


def _refusal(method: str, path: str, status: int, body: Any) -> str:
    if isinstance(body, Mapping) and "error" in body:
        detail = str(body["error"])
        field = body.get("field")
        if field and repr(field) not in detail:
            detail = f"field {field!r}: {detail}"
    else:
        detail = "no error detail"
    return f"control plane refused {method} {path} ({status}): {detail}"


def _lease(lease: str) -> dict[str, str]:
    return {LEASE_HEADER: lease} if lease else {}


def _segment(value: str) -> str:
    return quote(value, safe="")


def _rule_path(namespace: str, kind: str, name: str) -> str:
    return f"/v1/rules/{_segment(namespace)}/{_segment(kind)}/{_segment(name)}"
