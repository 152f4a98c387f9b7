"""A small, hand-written OpenAPI description of the control plane's HTTP API."""

from __future__ import annotations

from typing import Any

_RULE = "/v1/rules/{namespace}/{kind}/{name}"


def _op(summary: str, auth: bool = True, role: str = "read", **extra: Any) -> dict[str, Any]:
    """One operation; `role` is the lowest token role that may call it (admin ⊇ agent ⊇ read)."""
    operation: dict[str, Any] = {"summary": summary, **extra}
    if not auth:
        operation["security"] = []
    else:
        operation["x-tidegate-role"] = role
    return operation


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "tidegate control plane",
        "version": "1",
        "description": (
            "Registry (ephemeral instances leased by heartbeat), versioned rule store and watch stream. "
            "Every call but health and this document needs 'Authorization: Bearer TOKEN' of a role "
            "(x-tidegate-role: read, agent or admin; admin ⊇ agent ⊇ read): 401 without a valid token, 403 for a role "
            "below the one needed. Reads need the read token unless the server runs with --open-reads. Heartbeat, state "
            "and deregister of an instance need its lease secret in X-Tidegate-Lease unless the caller holds admin. "
            "Every change increments one global revision. Errors are JSON {error, field?, document?}."
        ),
    },
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/v1/health": {
            "get": _op(
                "Liveness, the current revision, this start's epoch (new at every restart: the registry is in memory), "
                "the number of open watch streams, the instance lease: {status, revision, epoch, watchers, instance_ttl}",
                auth=False,
            )
        },
        "/v1/openapi.json": {"get": _op("This document", auth=False)},
        "/v1/services": {"get": _op("Known services: [{name, instances, tags}]")},
        "/v1/services/{name}/instances": {"get": _op("Instances of one service (notice_key only for agent and admin callers)")},
        "/v1/instances": {
            "post": _op(
                "Register (or replace) an instance. Body: service, host, port required; lease_secret required below "
                "admin; notice_key, tag, state, weight, admin_port, started_at, metadata, id (default service@host:port) "
                "optional; registered_at (an instance registering again: kept unless in the future or over 300 s before "
                "started_at). 409 when a live lease holds the id with another secret; 429/413 past a registry limit. "
                "Returns the stored instance (never the lease secret).",
                role="agent",
            )
        },
        "/v1/instances/{id}/heartbeat": {"put": _op("Renew the lease; 404 when unknown (register again); X-Tidegate-Lease", role="agent")},
        "/v1/instances/{id}/state": {
            "put": _op(
                "Body {state}; 409 when the transition is not allowed; X-Tidegate-Lease. An admin without a lease also asks "
                "the instance's agent (the record's `ask`, heard over its watch): DRAINING to go offline (its lossless drain, "
                "the process stays up), SERVING or WARMING to come back online",
                role="agent",
            )
        },
        "/v1/instances/{id}": {"delete": _op("Deregister; X-Tidegate-Lease", role="agent")},
        "/v1/rules": {
            "get": _op("Rules in force; query: namespace, kind"),
            "post": _op(
                "Apply one or more rule documents (YAML or JSON), all or nothing. 400: unparsable body; "
                "413: body over the size limit; 422: invalid document {error, field, document}; 409: a "
                "FaultToleranceRule naming a strategy that is not in force {error, field, document, referrers}. "
                "An identical document is not rewritten (returned with unchanged=true). Each result may carry "
                "warnings (a target that can never match anything tidegate governs).",
                role="admin",
            ),
            "delete": _op(
                "Delete the rules the body's documents name (the file given to apply), referrers first, each a "
                "new revision: {deleted, not_in_force, revision}. 409 when a rule left in force still names a "
                "strategy deleted; ?cascade=true deletes those rules too.",
                role="admin",
            ),
        },
        _RULE: {
            "get": _op("One rule in force"),
            "delete": _op(
                "Delete a rule (a new revision): the rule with cascaded=[...]. 409 naming the rules that still use "
                "it (a strategy); ?cascade=true deletes them too.",
                role="admin",
            ),
        },
        _RULE + "/history": {"get": _op("Every revision of the rule, newest first, each with op put|delete")},
        _RULE + "/rollback": {"post": _op("Body {revision}: write that revision's document again as a new revision", role="admin")},
        "/v1/events": {"get": _op("Recent agent-reported events, newest first"), "post": _op("Report an event {type, ...}", role="agent")},
        "/v1/watch": {
            "get": _op(
                "Server-Sent Events. Resume with Last-Event-ID or ?since=REV; otherwise or when too far behind, "
                "a 'snapshot' frame {revision, epoch, instance_ttl, services, instances, rules} comes first. Then 'instance' and 'rule' "
                "frames {revision, op: put|delete, instance|rule}; ': ping' comments keep the stream alive. "
                "The answer's X-Tidegate-Head header is the head revision when the stream opened: a watcher that "
                "applied frames up to it is current (the snapshot sent may be older; the changes after it follow).",
                responses={
                    "200": {
                        "description": "text/event-stream",
                        "headers": {
                            "X-Tidegate-Head": {
                                "description": "The head revision when the stream opened (what /v1/health calls revision)",
                                "schema": {"type": "integer", "minimum": 0},
                            }
                        },
                    }
                },
            )
        },
        "/v1/metrics": {
            "post": _op(
                "An instance's push {instance, interval, rows: [[kind in|res|out, resource, passed, {block kind: n}, errors, "
                "rt_count, rt_sum, histogram]]} of what changed since its last accepted push; X-Tidegate-Lease",
                role="agent",
            ),
            "get": _op(
                "Chart columns {t, passed, blocked, errors, qps, blocked_qps, error_rate, rt_avg_ms, p50_ms, p99_ms}; "
                "query: service (required), resource (default: the rollup of inbound routes), tag (absent: every tag; empty: base), "
                "from, to (epoch seconds), step (seconds)"
            ),
        },
        "/v1/rollouts": {
            "get": _op(
                "Every service's latest rollout {name, service, tag, phase, weight, step, plan, window_start, window_end, reason, decisions, now}"
            ),
            "post": _op(
                "Start a rollout: a Rollout document (kind and apiVersion may be left out). 422 naming the field when it is "
                "invalid or the service has no live instance of the tag; 409 naming the service when it has a rollout under way",
                role="admin",
            ),
        },
        "/v1/rollouts/{service}": {"get": _op("One service's latest rollout (404 when it has none)")},
        "/v1/rollouts/{service}/{action}": {
            "post": _op(
                "pause, resume, promote (skip to 100%) or abort (weight 0) the service's rollout; optional body {reason}; "
                "409 when its phase does not allow it",
                role="admin",
            )
        },
        "/metrics": {"get": _op("Prometheus text: the plane's own state and the totals of every series agents pushed")},
    },
}
