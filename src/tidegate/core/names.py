"""The grammar of the names an instance carries: service, tag, instance id, host, metadata keys.

One definition, used by the agent (its settings) and by the control plane
(every registration), so a name either side accepts is one the other accepts
and one every tool can print, put in a URL path segment or a file name: ASCII
letters and digits with a few separators, never `/`, spaces, control
characters or markup.
"""

from __future__ import annotations

import ipaddress
import re

#: A service name: what consumers call (`http://orders/...`), what rules select.
SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
SERVICE_NAME_RULE = "letters, digits, '.', '_', '-', starting with a letter or digit; at most 63"

#: A tag (lane, version): empty is the base version.
TAG = re.compile(r"[A-Za-z0-9._-]{0,63}")
TAG_RULE = "letters, digits, '.', '_', '-'; at most 63"

#: An instance id: the agent's `<service>-<12 hex>`, the control plane's default
#: `<service>@<host>:<port>` (an IPv6 host in it keeps its colons, a zone its '%').
INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@%+\[\]-]{0,254}")
INSTANCE_ID_RULE = "letters, digits and '.', '_', '-', ':', '@', '%', '+', '[', ']', starting with a letter or digit; at most 255"

#: A metadata key, shaped like a Kubernetes label key (`zone`, `topology.kubernetes.io/zone`).
METADATA_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,252}")
METADATA_KEY_RULE = "letters, digits, '.', '_', '-', '/', starting with a letter or digit; at most 253"

HOST_RULE = "an IPv4 or IPv6 address, or a DNS name (labels of letters, digits, '-', '_'; at most 253)"

_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_service_name(text: str) -> bool:
    return SERVICE_NAME.fullmatch(text) is not None


def is_tag(text: str) -> bool:
    return TAG.fullmatch(text) is not None


def is_instance_id(text: str) -> bool:
    return INSTANCE_ID.fullmatch(text) is not None


def is_metadata_key(text: str) -> bool:
    return METADATA_KEY.fullmatch(text) is not None


def has_control_characters(text: str) -> bool:
    """C0 and C1 control characters and DEL: what a terminal would act on."""
    return _CONTROL.search(text) is not None


def is_ip_address(text: str) -> bool:
    """An IPv4 or IPv6 address literal (without brackets; an IPv6 zone `%eth0` allowed)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_host(text: str) -> bool:
    """An address an instance can advertise: an IP literal or a DNS name (no port, no brackets)."""
    if is_ip_address(text):
        return True
    if not 0 < len(text) <= 253 or not text.isascii():
        return False
    return all(_LABEL.fullmatch(label) for label in text.split("."))
