"""The console at /console of the control plane (issue 16): server-rendered pages over the plane.

`session` (logins, CSRF), `render` (the HTML, every foreign string escaped), `static/`
(htmx and uPlot vendored, console.js and console.css: no CDN, no build step), and here
the routes. Live by the plane's own watch stream (`/console/watch` is `/v1/watch` for
the session's role). Offline/online buttons ask the instance's agent through the
registry (an admin's state change, heard over the agent's own watch: no secret
leaves the plane). Every response carries a
Content-Security-Policy without inline scripts; every write needs the session's CSRF
token. May import the control plane's modules (plane, auth, tokens, metrics_store),
tidegate.rules, tidegate.core and Starlette.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import yaml
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from tidegate.control.console import render
from tidegate.control.console.session import COOKIE, CSRF_HEADER, Session, Sessions
from tidegate.control.metrics_store import ALL, MetricsError, MetricsStore
from tidegate.control.plane import ControlPlane, RequestError
from tidegate.control.tokens import Role, RoleTokens
from tidegate.core.instance import InstanceState
from tidegate.errors import RuleError
from tidegate.rules import document_key, load_documents, validate

Handler = Callable[[Request], Awaitable[Response]]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC = {
    "htmx.min.js": "text/javascript",
    "uplot.min.js": "text/javascript",
    "uplot.min.css": "text/css",
    "console.js": "text/javascript",
    "console.css": "text/css",
}
MAX_FORM_BYTES = 1024 * 1024


def console_routes(
    plane: ControlPlane,
    store: MetricsStore,
    tokens: RoleTokens,
    watch: Handler,
    clock: Callable[[], float] = time.time,
) -> list[BaseRoute]:
    """The console's routes; `watch` is the API's `/v1/watch` handler (it reads `request.state.role`)."""
    sessions = Sessions()
    static = {name: (resources.files(__package__) / "static" / name).read_bytes() for name in STATIC}

    def secured(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    def html(text: str, status: int = 200) -> Response:
        return secured(HTMLResponse(text, status_code=status))

    def session_of(request: Request) -> Session | None:
        return sessions.get(request.cookies.get(COOKIE), clock())

    def viewing(handler: Callable[[Request, Session], Awaitable[Response]]) -> Handler:
        """A page for any session; no session: to the login page (a fragment: 401)."""

        async def endpoint(request: Request) -> Response:
            session = session_of(request)
            if session is None:
                if request.headers.get("hx-request"):
                    return secured(Response("log in again", status_code=401))
                return secured(RedirectResponse("/console/login", status_code=303))
            request.state.role = session.role
            return await handler(request, session)

        return endpoint

    def writing(handler: Callable[[Request, Session], Awaitable[Response]], needs: Role = Role.ADMIN) -> Handler:
        """A write: a session of `needs`, and its CSRF token in the header."""

        async def endpoint(request: Request) -> Response:
            session = session_of(request)
            if session is None:
                return html(render.result("not logged in (or the session expired): log in again", False), 401)
            if not session.csrf_ok(request.headers.get(CSRF_HEADER)):
                return html(render.result("refused: this write lacks the console's CSRF token", False), 403)
            if session.role < needs:
                return html(render.result(f"the {session.role.label} token's console is read-only", False), 403)
            request.state.role = session.role
            try:
                return await handler(request, session)
            except RequestError as error:
                field = f" (field {error.field})" if error.field else ""
                return html(render.result(f"{error.message}{field}", False), 200)
            except RuleError as error:
                return html(render.result(str(error), False), 200)

        return endpoint

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static:
            return secured(Response("not found", status_code=404))
        return secured(Response(static[name], media_type=STATIC[name], headers={"Cache-Control": "no-cache"}))

    async def login_page(request: Request) -> Response:
        return html(render.login())

    async def login(request: Request) -> Response:
        form = await _form(request)
        role = tokens.role_of(form.get("token", "").strip())
        if role is None:
            return html(render.login("That token is no role's token."), 401)
        session_id, _ = sessions.create(role, clock())
        response = RedirectResponse("/console", status_code=303)
        response.set_cookie(
            COOKIE,
            session_id,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/console",
            max_age=int(sessions.ttl),
        )
        return secured(response)

    async def logout(request: Request) -> Response:
        session = session_of(request)
        form = await _form(request)
        if session is not None and session.csrf_ok(form.get("csrf")):
            sessions.end(request.cookies.get(COOKIE))
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(COOKIE, path="/console")
        return secured(response)

    async def overview(request: Request, session: Session) -> Response:
        table = render.instances_table(plane.instances(), session.role, clock())
        return html(render.page("Services", render.services(plane.services(), table), session.role, session.csrf, live=True))

    async def instances_fragment(request: Request, session: Session) -> Response:
        return html(render.instances_table(plane.instances(), session.role, clock()))

    async def service_page(request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        tags = sorted({i.tag for i in plane.instances(name)} | {tag for (svc, tag, _r) in store.series if svc == name})
        table = store.resources(name)
        governing = _governing(plane, [r["resource"] for r in table])
        return html(render.page(f"Service {name}", render.service(name, tags or [""], table, governing), session.role, session.csrf))

    async def metrics(request: Request, session: Session) -> Response:
        params = request.query_params
        now = clock()
        try:
            end = float(params.get("to") or now)
            start = float(params.get("from") or end - 300)
            step = float(params.get("step") or 5)
            answer = store.query(params.get("service", ""), params.get("resource") or None, params.get("tag"), start, end, step, now)
        except (ValueError, MetricsError) as error:
            return secured(JSONResponse({"error": str(error)}, status_code=400))
        return secured(JSONResponse(answer))

    async def console_watch(request: Request, session: Session) -> Response:
        return await watch(request)

    async def instance_action(request: Request, session: Session) -> Response:
        # Asked through the registry, like `PUT /v1/instances/{id}/state` by an admin: the
        # instance's agent hears it over its own watch and runs its lossless drain (or comes
        # back). No secret leaves the plane and the plane calls no admin endpoint.
        instance_id = request.path_params["id"]
        action = request.path_params["action"]
        state = InstanceState.DRAINING if action == "offline" else InstanceState.SERVING
        try:
            updated = plane.set_state(instance_id, {"state": str(state)}, Role.ADMIN)
        except RequestError as refused:
            return html(render.result(f"{action} {instance_id}: {refused.status} {refused.message}", False))
        return html(render.result(f"{action} {instance_id}: asked of its agent ({updated.state} in the registry)", True))

    async def rules_page(request: Request, session: Session) -> Response:
        return html(render.page("Rules", render.rules([r.to_dict() for r in plane.rules()], session.role), session.role, session.csrf))

    async def edit_page(request: Request, session: Session) -> Response:
        params = request.query_params
        key = (params.get("namespace", ""), params.get("kind", ""), params.get("name", ""))
        text, history = "", []
        if all(key):
            try:
                text = yaml.safe_dump(dict(plane.rule(key).document), sort_keys=False)
            except RequestError:
                text = ""
            history = [entry.to_dict() for entry in plane.history(key)]
        title = "/".join(key) if all(key) else "New rule"
        body = render.editor(text, key if all(key) else None, history, session.role)
        return html(render.page(f"Rule {title}", body, session.role, session.csrf))

    async def validate_text(request: Request, session: Session) -> Response:
        text = (await _form(request)).get("text", "")
        errors, diff = await asyncio.to_thread(_check, plane, text)
        return html(render.problems(errors, diff))

    async def apply(request: Request, session: Session) -> Response:
        text = (await _form(request)).get("text", "")
        errors, _diff = await asyncio.to_thread(_check, plane, text)
        if errors:
            return html(render.problems(errors, "") + render.result("nothing was applied", False))
        documents = await asyncio.to_thread(load_documents, text.encode(), "application/yaml")
        results = plane.apply_rules(documents)
        summary = ", ".join(f"{r['kind']}/{r['name']} r{r['revision']}{' (unchanged)' if r.get('unchanged') else ''}" for r in results)
        return html(render.result(f"applied: {summary}", True))

    async def rollback(request: Request, session: Session) -> Response:
        form = await _form(request)
        key = (form.get("namespace", ""), form.get("kind", ""), form.get("name", ""))
        try:
            revision = int(form.get("revision", ""))
        except ValueError:
            raise RequestError(422, "must be an integer revision", field="revision") from None
        answer = plane.rollback(key, {"revision": revision})
        return html(render.result(f"rolled back {'/'.join(key)} to r{revision}: now r{answer['revision']}", True))

    async def lanes_page(request: Request, session: Session) -> Response:
        rows, tags = _lanes(plane, store, clock())
        return html(render.page("Lanes", render.lanes(rows, tags), session.role, session.csrf))

    async def events_page(request: Request, session: Session) -> Response:
        listing = plane.recent_events()
        types = sorted({str(ev.get("type")) for ev in listing})
        chosen = request.query_params.get("type", "")
        text = request.query_params.get("q", "")
        shown = [
            ev
            for ev in listing
            if (not chosen or ev.get("type") == chosen) and (not text or text.lower() in json.dumps(ev, sort_keys=True).lower())
        ]
        return html(render.page("Events", render.events(shown, types, chosen, text), session.role, session.csrf))

    return [
        Route("/console/static/{name}", static_file, methods=["GET"]),
        Route("/console/login", login_page, methods=["GET"]),
        Route("/console/login", login, methods=["POST"]),
        Route("/console/logout", logout, methods=["POST"]),
        Route("/console", viewing(overview), methods=["GET"]),
        Route("/console/fragments/instances", viewing(instances_fragment), methods=["GET"]),
        Route("/console/services/{name}", viewing(service_page), methods=["GET"]),
        Route("/console/api/metrics", viewing(metrics), methods=["GET"]),
        Route("/console/watch", viewing(console_watch), methods=["GET"]),
        Route("/console/instances/{id}/{action:str}", writing(_action(instance_action)), methods=["POST"]),
        Route("/console/rules", viewing(rules_page), methods=["GET"]),
        Route("/console/rules/edit", viewing(edit_page), methods=["GET"]),
        Route("/console/rules/validate", writing(validate_text, needs=Role.READ), methods=["POST"]),
        Route("/console/rules/apply", writing(apply), methods=["POST"]),
        Route("/console/rules/rollback", writing(rollback), methods=["POST"]),
        Route("/console/lanes", viewing(lanes_page), methods=["GET"]),
        Route("/console/events", viewing(events_page), methods=["GET"]),
    ]


def _action(handler: Callable[[Request, Session], Awaitable[Response]]) -> Callable[[Request, Session], Awaitable[Response]]:
    async def checked(request: Request, session: Session) -> Response:
        if request.path_params["action"] not in ("offline", "online"):
            raise RequestError(404, "an instance's console actions are offline and online")
        return await handler(request, session)

    return checked


async def _form(request: Request) -> dict[str, str]:
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise RequestError(413, f"a console form is at most {MAX_FORM_BYTES} bytes")
    return {name: values[-1] for name, values in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}


def _check(plane: ControlPlane, text: str) -> tuple[list[dict[str, str]], str]:
    """Problems of the YAML `text` (each naming its field), else the diff against what is in force."""
    if not text.strip():
        return [{"field": "", "message": "empty: write one or more rule documents"}], ""
    try:
        documents = load_documents(text.encode(), "application/yaml")
    except RuleError as error:
        return [{"field": error.field, "message": str(error), "document": error.document}], ""
    problems: list[dict[str, str]] = []
    diffs: list[str] = []
    for document in documents:
        try:
            validate(document)
            key = document_key(document)
        except RuleError as error:
            problems.append({"field": error.field, "message": error.reason, "document": error.document})
            continue
        try:
            current = yaml.safe_dump(dict(plane.rule(key).document), sort_keys=True).splitlines()
        except RequestError:
            current = []
        new = yaml.safe_dump(document, sort_keys=True).splitlines()
        label = "/".join(key)
        diffs.append("\n".join(difflib.unified_diff(current, new, f"{label} (in force)", f"{label} (edited)", lineterm="")))
    return problems, "\n".join(d for d in diffs if d)


def _governing(plane: ControlPlane, resource_names: list[str]) -> dict[str, list[str]]:
    """For each resource, the rules whose document names it (its name, or its route without the method)."""
    rules = [(f"{r.kind}/{r.name}", json.dumps(dict(r.document))) for r in plane.rules()]
    out: dict[str, list[str]] = {}
    for resource in resource_names:
        needle = resource.split(" ", 1)[-1].removeprefix("-> ")
        out[resource] = [label for label, text in rules if needle and json.dumps(needle)[1:-1] in text]
    return out


def _lanes(plane: ControlPlane, store: MetricsStore, now: float) -> tuple[list[dict[str, Any]], list[str]]:
    services: dict[str, dict[str, Any]] = {}
    tags: set[str] = set()
    for instance in plane.instances():
        lane = services.setdefault(instance.service, {}).setdefault(instance.tag, {"instances": [], "qps": 0.0, "edges": []})
        lane["instances"].append(instance.id)
        tags.add(instance.tag)
    for service, tag, resource in list(store.series):
        lanes = services.setdefault(service, {})
        lane = lanes.setdefault(tag, {"instances": [], "qps": 0.0, "edges": []})
        tags.add(tag)
        if resource != ALL and not resource.startswith("-> "):
            continue
        chart = store.query(service, resource, tag, now - 60, now, 60, now)
        qps = round(sum(chart["passed"]) / 60, 2)
        if resource == ALL:
            lane["qps"] = qps
        else:
            lane["edges"].append((resource, qps))
    rows = [{"service": name, "lanes": lanes} for name, lanes in sorted(services.items())]
    return rows, sorted(tags, key=lambda t: (t != "", t))
