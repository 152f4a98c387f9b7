"""A FastAPI service that calls the `items` service by name with httpx (routed by the agent)."""

import os

import httpx
from fastapi import FastAPI

app = FastAPI()


@app.get("/via/{item_id}")
async def via(item_id: str) -> dict[str, object]:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://items/items/{item_id}", timeout=5)
    return {"pid": os.getpid(), "status": answer.status_code, "body": answer.json()}
