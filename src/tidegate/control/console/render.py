"""The console's HTML, server-rendered: one function per page or fragment.

Every string that comes from a service, an instance, a rule or an event goes through
`e` (HTML-escaped, quotes too, so it is safe in text and in quoted attributes); no
page has an inline script or style (the Content-Security-Policy forbids them), and
htmx's eval is off (`htmx-config`). Pure: what to show comes in, text goes out.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tidegate.control.tokens import Role
from tidegate.core.instance import Instance, InstanceState
from tidegate.core.warmup import WarmupSettings

HTMX_CONFIG = json.dumps({"allowEval": False, "allowScriptTags": False, "includeIndicatorStyles": False, "selfRequestsOnly": True})
NAV = (("/console", "Services"), ("/console/rules", "Rules"), ("/console/lanes", "Lanes"), ("/console/events", "Events"))


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, body: str, role: Role | None, csrf: str = "", live: bool = False) -> str:
    headers = e(json.dumps({"X-CSRF-Token": csrf})) if csrf else ""
    nav = ""
    if role is not None:
        links = "".join(f'<a href="{href}">{e(label)}</a>' for href, label in NAV)
        logout = f'<form method="post" action="/console/logout" class="logout"><input type="hidden" name="csrf" value="{e(csrf)}"><button>Log out</button></form>'
        nav = f'<nav>{links}<span class="role" id="role">{e(role.label)}</span>{logout}</nav>'
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{e(title)} · tidegate</title>'
        f'<link rel="icon" href="data:,"><meta name="htmx-config" content="{e(HTMX_CONFIG)}">'
        '<link rel="stylesheet" href="/console/static/uplot.min.css"><link rel="stylesheet" href="/console/static/console.css">'
        '<script src="/console/static/htmx.min.js"></script><script src="/console/static/uplot.min.js"></script>'
        '<script src="/console/static/console.js"></script></head>'
        f'<body hx-headers="{headers}"{" data-live" if live else ""}>{nav}<main><h1>{e(title)}</h1>{body}</main></body></html>'
    )


def login(error: str = "") -> str:
    problem = f'<p class="error" id="login-error">{e(error)}</p>' if error else ""
    form = (
        '<form method="post" action="/console/login" class="login">'
        '<label>Token <input type="password" name="token" autocomplete="current-password" autofocus></label>'
        "<button>Log in</button></form>"
        "<p>An admin token steers; a read token gives a read-only console (DATA/tokens/ on the control plane's host).</p>"
    )
    return page("Log in", problem + form, None)


def services(listing: Sequence[Mapping[str, Any]], instances: str) -> str:
    rows = "".join(
        f'<tr><td><a href="/console/services/{e(_path(s["name"]))}">{e(s["name"])}</a></td><td>{e(s["instances"])}</td>'
        f"<td>{e(', '.join(t or 'base' for t in s['tags']))}</td></tr>"
        for s in listing
    )
    table = f'<table class="services"><thead><tr><th>Service</th><th>Instances</th><th>Tags</th></tr></thead><tbody>{rows}</tbody></table>'
    live = f'<div id="instances" hx-get="/console/fragments/instances" hx-trigger="refresh, every 3s" hx-swap="innerHTML">{instances}</div>'
    return table + "<h2>Instances</h2>" + live + '<div id="action-result"></div>'


def instances_table(instances: Iterable[Instance], role: Role, now: float) -> str:
    warmup = WarmupSettings()
    rows = []
    for instance in sorted(instances, key=lambda i: (i.service, i.tag, i.id)):
        age = max(0.0, now - instance.registered_at) if instance.registered_at else 0.0
        progress = ""
        if instance.state == InstanceState.WARMING:  # the default curve: a service's own settings live in its agents
            percent = round(100 * min(1.0, warmup.factor(age)))
            progress = f' <progress max="100" value="{percent}"></progress> {percent}%'
        admin = f"{instance.host}:{instance.admin_port}" if instance.admin_port else "-"
        buttons = ""
        if role >= Role.ADMIN and instance.admin_port:
            target = e(_path(instance.id))
            buttons = (
                f'<button class="offline" hx-post="/console/instances/{target}/offline" hx-target="#action-result">offline</button> '
                f'<button class="online" hx-post="/console/instances/{target}/online" hx-target="#action-result">online</button>'
            )
        rows.append(
            f'<tr data-instance="{e(instance.id)}" data-address="{e(instance.address)}" data-state="{e(instance.state.value)}"><td>{e(instance.service)}</td>'
            f'<td class="id">{e(instance.id)}</td><td class="state state-{e(instance.state.value.lower())}">{e(instance.state.value)}</td>'
            f"<td>{e(instance.tag or 'base')}</td><td>{e(instance.weight)}{progress}</td><td>{_age(age)}</td>"
            f"<td>{e(admin)}</td><td>{buttons}</td></tr>"
        )
    head = (
        "<tr><th>Service</th><th>Instance</th><th>State</th><th>Tag</th><th>Weight / warm-up</th><th>Age</th><th>Admin</th><th></th></tr>"
    )
    return f'<table class="instances"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def service(name: str, tags: Sequence[str], resources: Sequence[Mapping[str, Any]], governing: Mapping[str, list[str]]) -> str:
    tag_list = e(json.dumps(list(tags)))
    charts = "".join(
        f'<figure class="chart" data-service="{e(name)}" data-metric="{metric}" data-tags="{tag_list}"><figcaption>{e(label)}</figcaption></figure>'
        for metric, label in (
            ("qps", "QPS"),
            ("error_rate", "Error rate"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("blocked_qps", "Blocked / s"),
        )
    )
    rows = "".join(
        f"<tr><td>{e(r['resource'])}</td><td>{e(r['passed'])}</td><td>{e(r['blocked'])}"
        f"{' (' + e(', '.join(f'{k}: {v}' for k, v in r['blocked_by_kind'].items())) + ')' if r['blocked_by_kind'] else ''}</td>"
        f"<td>{e(r['errors'])}</td><td>{e(r['rt_avg_ms'])}</td><td>{e(r['p99_ms'])}</td>"
        f"<td>{e(', '.join(governing.get(r['resource'], [])) or '-')}</td></tr>"
        for r in resources
        if r["resource"] != "*"
    )
    table = (
        '<table class="resources"><thead><tr><th>Resource</th><th>Passed</th><th>Blocked</th><th>Errors</th><th>RT avg ms</th>'
        f"<th>p99 ms</th><th>Rules</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    return f'<p>Gray vs base: one line per tag ({e(", ".join(t or "base" for t in tags))}).</p><div class="charts">{charts}</div><h2>Resources</h2>{table}'


def rules(listing: Sequence[Mapping[str, Any]], role: Role) -> str:
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for rule in listing:
        by_kind.setdefault(rule["kind"], []).append(rule)
    parts = ['<p><a href="/console/rules/edit" class="new-rule">New rule</a></p>'] if role >= Role.ADMIN else []
    for kind, members in sorted(by_kind.items()):
        items = "".join(
            f'<li><a href="/console/rules/edit?{e(_query(rule))}">{e(rule["namespace"])}/{e(rule["name"])}</a> <span class="rev">r{e(rule["revision"])}</span></li>'
            for rule in members
        )
        parts.append(f"<h2>{e(kind)}</h2><ul>{items}</ul>")
    return "".join(parts) or "<p>No rules in force.</p>"


def editor(text: str, key: Sequence[str] | None, history: Sequence[Mapping[str, Any]], role: Role) -> str:
    writable = role >= Role.ADMIN
    apply = (
        '<button id="apply" hx-post="/console/rules/apply" hx-include="#rule-text" hx-target="#result">Apply</button>' if writable else ""
    )
    area = (
        f'<textarea id="rule-text" name="text" rows="24" cols="100" spellcheck="false" hx-post="/console/rules/validate" '
        f'hx-trigger="input changed delay:300ms, load" hx-target="#problems"{"" if writable else " readonly"}>{e(text)}</textarea>'
    )
    rows = []
    for entry in history:
        rollback = ""
        if writable and entry["op"] == "put":
            vals = e(
                json.dumps({"namespace": entry["namespace"], "kind": entry["kind"], "name": entry["name"], "revision": entry["revision"]})
            )
            rollback = f'<button class="rollback" hx-post="/console/rules/rollback" hx-vals="{vals}" hx-target="#result">roll back to r{e(entry["revision"])}</button>'
        rows.append(
            f'<tr data-revision="{e(entry["revision"])}"><td>r{e(entry["revision"])}</td><td>{e(entry["op"])}</td><td>{rollback}</td></tr>'
        )
    history_html = f'<h2>History</h2><table class="history"><tbody>{"".join(reversed(rows))}</tbody></table>' if key else ""
    return f'<div class="editor">{area}<div id="problems" class="problems"></div>{apply}<div id="result"></div></div>{history_html}'


def problems(errors: Sequence[Mapping[str, str]], diff: str) -> str:
    if errors:
        items = "".join(
            f'<li class="error"><span class="field">{e(p.get("field") or "-")}</span>: {e(p["message"])}'
            f"{' (' + e(p['document']) + ')' if p.get('document') else ''}</li>"
            for p in errors
        )
        return f'<ul class="errors" id="errors">{items}</ul>'
    return f'<p class="ok" id="valid">Valid.</p><h3>Diff against what is in force</h3><pre class="diff" id="diff">{e(diff) or "(no change)"}</pre>'


def result(message: str, ok: bool) -> str:
    return f'<p class="{"ok" if ok else "error"}" id="outcome">{e(message)}</p>'


def lanes(rows: Sequence[Mapping[str, Any]], tags: Sequence[str]) -> str:
    head = "<tr><th>Service</th>" + "".join(f"<th>{e(t or 'base')}</th>" for t in tags) + "</tr>"
    body = []
    for row in rows:
        cells = []
        for tag in tags:
            cell = row["lanes"].get(tag)
            if not cell:
                cells.append('<td class="empty">-</td>')
                continue
            edges = "".join(f"<li>{e(edge)}: {e(qps)}/s</li>" for edge, qps in cell["edges"])
            cells.append(
                f'<td class="lane" data-tag="{e(tag)}"><div>{e(len(cell["instances"]))} instance(s): {e(", ".join(cell["instances"]))}</div>'
                f'<div class="qps">{e(cell["qps"])} req/s in</div><ul>{edges}</ul></td>'
            )
        body.append(f'<tr data-service="{e(row["service"])}"><td>{e(row["service"])}</td>{"".join(cells)}</tr>')
    return (
        "<p>Which instances serve which lane, and the traffic of the last minute (into each lane, and out of it to other services).</p>"
        f'<table class="lanes" hx-get="/console/lanes?fragment=1" hx-trigger="every 5s" hx-select="table.lanes" hx-swap="outerHTML"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'
    )


def events(listing: Sequence[Mapping[str, Any]], types: Sequence[str], chosen: str, text: str) -> str:
    options = "".join(f'<option value="{e(t)}"{" selected" if t == chosen else ""}>{e(t or "every type")}</option>' for t in ["", *types])
    form = (
        f'<form method="get" action="/console/events" class="filters"><select name="type">{options}</select>'
        f'<input name="q" value="{e(text)}" placeholder="service, instance, text"><button>Filter</button></form>'
    )
    rows = "".join(
        f"<tr><td>{e(ev.get('type'))}</td><td>r{e(ev.get('revision'))}</td>"
        f"<td><code>{e(json.dumps({k: v for k, v in ev.items() if k not in ('type', 'revision', 'at')}, sort_keys=True))}</code></td></tr>"
        for ev in listing
    )
    return (
        form + f'<table class="events"><thead><tr><th>Type</th><th>Revision</th><th>Details</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _path(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _query(rule: Mapping[str, Any]) -> str:
    from urllib.parse import urlencode

    return urlencode({"namespace": rule["namespace"], "kind": rule["kind"], "name": rule["name"]})
