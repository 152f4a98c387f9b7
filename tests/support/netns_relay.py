"""A way in to the pods for the test process: `python netns_relay.py SOCKET`, run inside a namespace.

Unix sockets are not network-namespaced, so the test (in the machine's own namespace) sends plain
HTTP to SOCKET; each connection's Host header names the pod address to relay it to, inside the
namespace this runs in. One request per connection (send `Connection: close`)."""

from __future__ import annotations

import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        host = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.lower().startswith(b"host:")).decode()
        name, _, port = host.rpartition(":")
        upstream_reader, upstream_writer = await asyncio.open_connection(name.strip("[]"), int(port))
    except Exception as error:
        writer.write(f"HTTP/1.1 502 Bad Gateway\r\nContent-Length: {len(str(error))}\r\nConnection: close\r\n\r\n{error}".encode())
        writer.close()
        return
    upstream_writer.write(head)
    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


async def main(path: str) -> None:
    server = await asyncio.start_unix_server(relay, path)
    print("relaying", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
