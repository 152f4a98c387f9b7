"""A Flask app for gunicorn's sync workers (one request at a time per worker): `/stats` answers, and every
request whose user agent is tidegate-prewarm appends its method and path to the file PREWARM_LOG."""

from __future__ import annotations

import os

from flask import Flask, request

app = Flask(__name__)


@app.before_request
def note_prewarm() -> None:
    if request.headers.get("User-Agent") == "tidegate-prewarm":
        with open(os.environ["PREWARM_LOG"], "a") as log:
            log.write(f"{request.method} {request.path}\n")


@app.route("/", methods=["GET", "HEAD"])
def root() -> str:
    return "catalog"


@app.get("/stats")
def stats() -> dict[str, int]:
    return {"pid": os.getpid()}
