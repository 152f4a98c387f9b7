"""A batch job, not a server: calls the `items` service by name with httpx, requests and aiohttp, prints what came back.

Run as `tidegate run --service reports -- python report_job.py`; prints one JSON
line {"httpx": ..., "httpx_async": ..., "requests": ..., "aiohttp": ...} with each
answer's body, or the error a call raised, and exits 0 when every call succeeded.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp
import httpx
import requests


def _safely(call: Any) -> Any:
    try:
        return call()
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}"}


async def _async_calls() -> dict[str, Any]:
    async def with_httpx() -> Any:
        async with httpx.AsyncClient(trust_env=False) as client:
            return (await client.get("http://items/items/3")).json()

    async def with_aiohttp() -> Any:
        async with aiohttp.ClientSession() as session, session.get("http://items/items/4") as response:
            return await response.json()

    results: dict[str, Any] = {}
    for name, call in (("httpx_async", with_httpx), ("aiohttp", with_aiohttp)):
        try:
            results[name] = await call()
        except Exception as error:
            results[name] = {"error": f"{type(error).__name__}: {error}"}
    return results


def main() -> int:
    results = {
        "httpx": _safely(lambda: httpx.get("http://items/items/1", trust_env=False).json()),
        "requests": _safely(lambda: requests.get("http://items/items/2", timeout=10).json()),
    }
    results.update(asyncio.run(_async_calls()))
    print(json.dumps(results), flush=True)
    return 0 if all("error" not in answer for answer in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
