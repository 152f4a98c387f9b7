"""A gRPC server (generic bytes handlers) for the stability tests, run under `tidegate run`.

Env: PORT, MODE ("sync": grpc.server; "aio": grpc.aio.server). `/stab.Probe/Ok`
answers b"ok"; `/stab.Probe/Fail` always fails (INTERNAL). Nothing here knows
tidegate: the agent starts the rule watch when the server is made.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

ADDRESS = f"127.0.0.1:{os.environ['PORT']}"


def ok(request: bytes, ctx: Any) -> bytes:
    return b"ok"


def fail(request: bytes, ctx: Any) -> bytes:
    raise RuntimeError("this method always fails")


async def aio_ok(request: bytes, ctx: Any) -> bytes:
    return b"ok"


async def aio_fail(request: bytes, ctx: Any) -> bytes:
    raise RuntimeError("this method always fails")


def handlers(aio: bool) -> grpc.GenericRpcHandler:
    same = {"request_deserializer": None, "response_serializer": None}
    return grpc.method_handlers_generic_handler(
        "stab.Probe",
        {
            "Ok": grpc.unary_unary_rpc_method_handler(aio_ok if aio else ok, **same),
            "Fail": grpc.unary_unary_rpc_method_handler(aio_fail if aio else fail, **same),
        },
    )


async def serve_aio() -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handlers(aio=True),))
    server.add_insecure_port(ADDRESS)
    await server.start()
    print(f"grpc serving on {ADDRESS}", flush=True)
    await server.wait_for_termination()


def serve_sync() -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=4), handlers=(handlers(aio=False),))
    server.add_insecure_port(ADDRESS)
    server.start()
    print(f"grpc serving on {ADDRESS}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    if os.environ.get("MODE") == "aio":
        asyncio.run(serve_aio())
    else:
        serve_sync()
