"""A small FastAPI service for the agent's tests."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/orders/{order_id}")
def order(order_id: int) -> dict[str, int]:
    return {"id": order_id}
