"""uvicorn: wrap the app it loads, and tell the lifecycle who owns the listening socket.

- `Config.load`: the loaded app is wrapped with `InboundASGI` (every process
  that serves requests, gunicorn's UvicornWorker included).
- `Server.startup` without sockets handed in: this process bound them itself
  (`uvicorn app:app`, `uvicorn.run(...)`) and owns registration; with sockets
  handed in it is a worker of a supervisor or of gunicorn.
- `Server.shutdown`: the owner deregisters before connections close; after
  SIGTERM it first drains (lossless offline, `tidegate.agent.offline.drain`), which
  `Server.handle_exit` began the moment the signal arrived.
- `Multiprocess.run`, `BaseReload.run` (`--workers N`, `--reload`): the
  supervisor bound the socket; it registers, and deregisters when it returns.
  On SIGTERM (`Multiprocess.handle_term`) it drains before stopping its workers;
  the reloader likewise (`BaseReload.signal_handler` begins the drain,
  `BaseReload.shutdown` waits for it before it terminates the server process).
  A reload (a file changed) restarts the server process without a drain.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import weakref
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from tidegate.agent import online
from tidegate.agent.instrumentation.asgi import wrap_asgi
from tidegate.agent.instrumentation.base import Instrumentor
from tidegate.agent.lifecycle import Address
from tidegate.agent.offline.drain import drain_before_stop, drain_on_signal
from tidegate.agent.runtime import Lifecycle


def tcp_addresses(sockets: Iterable[Any]) -> list[Address]:
    """(host, port) of every TCP listening socket among `sockets`."""
    found = []
    for sock in sockets:
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
            host, port = sock.getsockname()[:2]
            found.append((str(host), int(port)))
    return found


class UvicornInstrumentor(Instrumentor):
    library = "uvicorn"
    supported = ("uvicorn >= 0.30, < 1",)  # Server, Config and supervisor internals

    def __init__(self) -> None:
        super().__init__()
        self._terminated: weakref.WeakSet[Any] = weakref.WeakSet()  # reloaders told to stop by SIGTERM

    def _lifecycle(self) -> Lifecycle | None:
        return self.runtime.lifecycle if self.runtime is not None else None

    def _patch(self, module: ModuleType) -> None:
        from uvicorn.config import Config
        from uvicorn.server import Server
        from uvicorn.supervisors.basereload import BaseReload
        from uvicorn.supervisors.multiprocess import Multiprocess

        self.wrap(Config, "load", self._load)
        self.wrap(Server, "startup", self._startup)
        self.wrap(Server, "shutdown", self._shutdown)
        self.wrap(Multiprocess, "run", self._supervise)
        self.wrap(Multiprocess, "handle_term", self._term)
        self.wrap(Multiprocess, "__init__", self._supervisor_init)
        self.wrap(Server, "handle_exit", self._handle_exit)
        self.wrap(BaseReload, "run", self._supervise)
        self.wrap(BaseReload, "signal_handler", self._reload_signal)
        self.wrap(BaseReload, "shutdown", self._reload_shutdown)

    def _load(self, wrapped: Any, config: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        runtime = self.runtime
        if runtime is not None and runtime.metrics is not None:
            config.loaded_app = wrap_asgi(config.loaded_app, runtime.metrics, runtime.response_headers)
        return result

    def _startup(self, wrapped: Any, server: Any, args: Any, kwargs: Any) -> Any:
        handed = kwargs.get("sockets", args[0] if args else None)

        async def startup() -> None:
            await wrapped(*args, **kwargs)
            lifecycle = self._lifecycle()
            if lifecycle is None or not server.started or server.should_exit:
                return
            if handed is None:
                self.safely(lambda: lifecycle.listening(tcp_addresses(s for srv in server.servers for s in (srv.sockets or ()))))
            await asyncio.get_running_loop().run_in_executor(None, self.safely, lifecycle.serving_requests)
            bound = tcp_addresses(s for srv in server.servers for s in (srv.sockets or ()))
            self.safely(online.begin, self.runtime, bound, asyncio.get_running_loop())  # lifespan startup is done

        return startup()

    def _shutdown(self, wrapped: Any, server: Any, args: Any, kwargs: Any) -> Any:
        async def shutdown() -> None:
            lifecycle = self._lifecycle()
            if lifecycle is not None and lifecycle.owner:
                if signal.SIGTERM in getattr(server, "_captured_signals", ()):  # lossless offline, listener still open
                    await asyncio.get_running_loop().run_in_executor(None, self.safely, drain_before_stop, self.runtime)
                await asyncio.get_running_loop().run_in_executor(None, self.safely, lifecycle.stopping)
            await wrapped(*args, **kwargs)

        return shutdown()

    def _handle_exit(self, wrapped: Any, server: Any, args: Any, kwargs: Any) -> Any:
        """The signal handler: on SIGTERM the drain begins now (the main loop notices it up to 0.1 s later)."""
        if args and args[0] == signal.SIGTERM:
            drain_on_signal(self.runtime)
        return wrapped(*args, **kwargs)

    def _supervisor_init(self, wrapped: Any, supervisor: Any, args: Any, kwargs: Any) -> Any:
        """The supervisor queues signals and reads the queue every 0.5 s: begin the drain in its handler."""
        result = wrapped(*args, **kwargs)
        queue_signal = signal.getsignal(signal.SIGTERM)
        if callable(queue_signal):
            runtime = self.runtime

            def on_sigterm(sig: int, frame: Any) -> None:
                drain_on_signal(runtime)
                queue_signal(sig, frame)

            signal.signal(signal.SIGTERM, on_sigterm)
        return result

    def _term(self, wrapped: Any, supervisor: Any, args: Any, kwargs: Any) -> Any:
        """SIGTERM to `--workers N`'s supervisor: drain before it stops its workers."""
        self.safely(drain_before_stop, self.runtime)
        return wrapped(*args, **kwargs)

    def _reload_signal(self, wrapped: Any, reloader: Any, args: Any, kwargs: Any) -> Any:
        """The reloader's signal handler: on SIGTERM the drain begins now, the server process still serving."""
        if args and args[0] == signal.SIGTERM:
            self._terminated.add(reloader)
            drain_on_signal(self.runtime)
        return wrapped(*args, **kwargs)

    def _reload_shutdown(self, wrapped: Any, reloader: Any, args: Any, kwargs: Any) -> Any:
        """After SIGTERM the reloader drains before it terminates the server process (the listener is its own, still open)."""
        if reloader in self._terminated:
            self.safely(drain_before_stop, self.runtime)
        return wrapped(*args, **kwargs)

    def _supervise(self, wrapped: Any, supervisor: Any, args: Any, kwargs: Any) -> Any:
        lifecycle = self._lifecycle()
        if lifecycle is not None:
            self.safely(lambda: lifecycle.listening(tcp_addresses(supervisor.sockets)))
        try:
            return wrapped(*args, **kwargs)
        finally:
            if lifecycle is not None:
                self.safely(lifecycle.stopping)


INSTRUMENTOR = UvicornInstrumentor()
