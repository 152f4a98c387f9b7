"""A Flask service that calls the `items` service by name with requests (routed by the agent)."""

import os

import requests
from flask import Flask

app = Flask(__name__)


@app.get("/via/<item_id>")
def via(item_id: str) -> dict[str, object]:
    answer = requests.get(f"http://items/items/{item_id}", timeout=5)
    return {"pid": os.getpid(), "status": answer.status_code, "body": answer.json()}
