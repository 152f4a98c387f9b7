"""gunicorn: the arbiter owns the listening sockets and the registration; workers wrap the app.

- `Arbiter.start`: the sockets are bound; the arbiter registers them.
- `Arbiter.stop` (SIGTERM, SIGINT, halt): the arbiter deregisters first; a
  graceful stop (SIGTERM) drains before that, listeners still open
  (lossless offline, `tidegate.agent.offline.drain`).
- `Worker.load_wsgi`: in each forked worker, a WSGI app is wrapped with
  `InboundWSGI` and the worker starts its own directory watch. uvicorn's
  worker is left to the uvicorn instrumentor, which wraps the ASGI app.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from tidegate.agent import online
from tidegate.agent.instrumentation.base import Instrumentor
from tidegate.agent.instrumentation.uvicorn import tcp_addresses
from tidegate.agent.instrumentation.wsgi import wrap_wsgi
from tidegate.agent.offline.drain import drain_before_stop
from tidegate.agent.runtime import Lifecycle


class GunicornInstrumentor(Instrumentor):
    library = "gunicorn"
    supported = ("gunicorn >= 21, < 28",)  # Arbiter and Worker internals

    def _lifecycle(self) -> Lifecycle | None:
        return self.runtime.lifecycle if self.runtime is not None else None

    def _patch(self, module: ModuleType) -> None:
        from gunicorn.arbiter import Arbiter
        from gunicorn.workers.base import Worker

        self.wrap(Arbiter, "start", self._start)
        self.wrap(Arbiter, "stop", self._stop)
        self.wrap(Worker, "load_wsgi", self._load_wsgi)

    def _start(self, wrapped: Any, arbiter: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        lifecycle = self._lifecycle()
        if lifecycle is not None:
            self.safely(lambda: lifecycle.listening(tcp_addresses(listener.sock for listener in arbiter.LISTENERS)))
        return result

    def _stop(self, wrapped: Any, arbiter: Any, args: Any, kwargs: Any) -> Any:
        lifecycle = self._lifecycle()
        if lifecycle is not None:
            if kwargs.get("graceful", args[0] if args else True):  # SIGTERM: drain while the listeners are open
                self.safely(drain_before_stop, self.runtime)
            self.safely(lifecycle.stopping)
        return wrapped(*args, **kwargs)

    def _load_wsgi(self, wrapped: Any, worker: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        runtime = self.runtime
        if runtime is None:
            return result
        if not type(worker).__module__.startswith("uvicorn") and runtime.metrics is not None:
            worker.wsgi = wrap_wsgi(worker.wsgi, runtime.metrics, runtime.response_headers)
        if runtime.lifecycle is not None:
            self.safely(runtime.lifecycle.serving_requests)
        if not type(worker).__module__.startswith("uvicorn"):  # booted; uvicorn's worker begins at its lifespan's end
            self.safely(online.begin, runtime, tcp_addresses(worker.sockets))
        return result


INSTRUMENTOR = GunicornInstrumentor()
