"""Open-loop load from inside a network namespace: `python netns_load.py URL RATE OUT STOP`.

Requests leave on schedule (RATE per second, whatever the answers' pace) until the file
STOP exists; then, once every request has its answer, OUT gets one JSON object:
{"sent", "failed", "ids": {instance id: count}, "errors": [the first few]}. A request
fails unless it is answered 200."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter

import httpx


async def main(url: str, rate: float, out: str, stop: str) -> None:
    ids: Counter[str] = Counter()
    errors: list[str] = []
    sent = failed = 0
    async with httpx.AsyncClient(
        timeout=30.0, trust_env=False, limits=httpx.Limits(max_connections=200, keepalive_expiry=2.0)
    ) as client:  # below uvicorn's 5 s keep-alive: no reuse racing its close

        async def one() -> None:
            nonlocal failed
            try:
                response = await client.get(url)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code} {response.text[:200]}")
                ids[response.json().get("id", "?")] += 1
            except Exception as error:
                failed += 1
                if len(errors) < 5:  # when (s into the load): a failure's time tells its cause
                    errors.append(f"{time.monotonic() - start:.1f}s {type(error).__name__}: {error}")

        tasks = set()
        start = time.monotonic()
        while not os.path.exists(stop):
            task = asyncio.ensure_future(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
            delay = start + sent / rate - time.monotonic()
            await asyncio.sleep(max(0.0, delay))
        if tasks:
            await asyncio.gather(*tasks)
    with open(out + ".tmp", "w") as f:
        json.dump({"sent": sent, "failed": failed, "ids": dict(ids), "errors": errors}, f)
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]))
