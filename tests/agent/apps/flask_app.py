"""A small Flask service for the agent's tests."""

from flask import Flask

app = Flask(__name__)


@app.get("/users/<int:user_id>")
def user(user_id: int) -> dict[str, int]:
    return {"id": user_id}
