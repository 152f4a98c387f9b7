"""What a refused inbound HTTP request is answered: status, JSON body, `Retry-After`.

429 for limits (flow, hot-spot), 503 for breakers and adaptive protection
(`BlockedError.http_status`). The body is `DEFAULT_BODY`, or the JSON object in
TIDEGATE_BLOCKED_BODY; `{resource}`, `{rule}`, `{reason}` and `{status}` in its
string values are filled in. A refusal that says when to come back adds
`Retry-After` in whole seconds.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from tidegate.errors import BlockedError

log = logging.getLogger("tidegate")

#: A JSON object answered to a blocked inbound request; `{resource}`, `{rule}`,
#: `{reason}` and `{status}` in its string values are filled in.
BODY_ENV = "TIDEGATE_BLOCKED_BODY"
DEFAULT_BODY: Mapping[str, Any] = {"error": "blocked", "resource": "{resource}", "rule": "{rule}", "reason": "{reason}"}


def blocked_response(error: BlockedError, template: Mapping[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) answered to a blocked inbound HTTP request, the body from `template`."""
    status = error.http_status
    fill = {"resource": error.resource, "rule": error.rule, "reason": error.reason, "status": str(status)}
    body = json.dumps(_fill(template, fill), separators=(",", ":")).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    retry = retry_after_header(error)
    if retry is not None:
        headers.append(("retry-after", retry))
    return status, headers, body


def retry_after_header(error: BlockedError) -> str | None:
    """`Retry-After` in whole seconds (at least 1), when the refusal says when to come back."""
    if error.retry_after_s is None:
        return None
    seconds = int(error.retry_after_s) + (error.retry_after_s % 1 > 0)
    return str(max(1, seconds))


def _fill(template: Any, values: Mapping[str, str]) -> Any:
    if isinstance(template, str):
        for key, value in values.items():
            template = template.replace("{" + key + "}", value)
        return template
    if isinstance(template, Mapping):
        return {k: _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    return template


def body_from_env() -> Mapping[str, Any]:
    """The body template from TIDEGATE_BLOCKED_BODY; DEFAULT_BODY when unset or malformed (logged)."""
    text = os.environ.get(BODY_ENV, "").strip()
    if not text:
        return DEFAULT_BODY
    try:
        body = json.loads(text)
    except ValueError as error:
        log.error("tidegate: %s is not JSON (%s); blocked requests get the default body", BODY_ENV, error)
        return DEFAULT_BODY
    if not isinstance(body, dict):
        log.error("tidegate: %s must be a JSON object; blocked requests get the default body", BODY_ENV)
        return DEFAULT_BODY
    return body
