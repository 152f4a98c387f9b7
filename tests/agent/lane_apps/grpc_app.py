"""A gRPC server (no protoc: generic handlers, bytes in and out) whose methods call an HTTP service.

Env: PORT, ECHO_URL (answers {"baggage": ...} with the baggage it got), MODE
("sync": grpc.server; "aio": grpc.aio.server). Every method of
`/lanes.Probe/{Unary,ServerStream,ClientStream,BidiStream}` answers, per
response, the baggage the HTTP service saw when this handler called it.
Nothing here knows about tidegate.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx

ECHO_URL = os.environ["ECHO_URL"]
ADDRESS = f"127.0.0.1:{os.environ['PORT']}"


def seen() -> bytes:
    return str(httpx.get(ECHO_URL, timeout=10, trust_env=False).json()["baggage"]).encode()


async def seen_async() -> bytes:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        return str((await client.get(ECHO_URL)).json()["baggage"]).encode()


def unary(request: bytes, ctx: Any) -> bytes:
    return seen()


def server_stream(request: bytes, ctx: Any) -> Iterator[bytes]:
    for _ in range(2):
        yield seen()


def client_stream(requests: Iterator[bytes], ctx: Any) -> bytes:
    for _ in requests:
        pass
    return seen()


def bidi_stream(requests: Iterator[bytes], ctx: Any) -> Iterator[bytes]:
    for _ in requests:
        yield seen()


async def aio_unary(request: bytes, ctx: Any) -> bytes:
    return await seen_async()


async def aio_server_stream(request: bytes, ctx: Any) -> AsyncIterator[bytes]:
    for _ in range(2):
        yield await seen_async()


async def aio_client_stream(requests: AsyncIterator[bytes], ctx: Any) -> bytes:
    async for _ in requests:
        pass
    return await seen_async()


async def aio_bidi_stream(requests: AsyncIterator[bytes], ctx: Any) -> AsyncIterator[bytes]:
    async for _ in requests:
        yield await seen_async()


def handlers(aio: bool) -> grpc.GenericRpcHandler:
    same = {"request_deserializer": None, "response_serializer": None}
    return grpc.method_handlers_generic_handler(
        "lanes.Probe",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(aio_unary if aio else unary, **same),
            "ServerStream": grpc.unary_stream_rpc_method_handler(aio_server_stream if aio else server_stream, **same),
            "ClientStream": grpc.stream_unary_rpc_method_handler(aio_client_stream if aio else client_stream, **same),
            "BidiStream": grpc.stream_stream_rpc_method_handler(aio_bidi_stream if aio else bidi_stream, **same),
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
