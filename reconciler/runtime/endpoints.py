"""The daemon's HTTP endpoints: ``/metrics``, ``/healthz`` and ``/readyz`` (``run --http``).

Where this sits: the daemon starts one :class:`Server` before its first pass and stops it last.
The server only reads: the metrics registry (``runtime.metrics``) and two checks the daemon
passes in, each answering ``(ok, reason)``:

* ``/healthz`` (liveness): 200 while passes keep finishing; 503 when none has finished in three
  reconcile intervals (a wedged loop). A supervisor may restart the process on 503.
* ``/readyz`` (readiness): 200 when the database answers and the last pass succeeded; 503
  otherwise, with the reason as the body.

Plain ``http.server`` on its own threads (one per request), bound to the configured address only;
the default, ``127.0.0.1:9465``, is reachable from this machine alone.
"""

from __future__ import annotations

import http.server
import logging
import socket
import threading
from collections.abc import Callable

from reconciler import settings as settings_mod
from reconciler.runtime import metrics as metrics_mod

log = logging.getLogger(__name__)

#: A check: ``(ok, reason)``; the reason is the body of the answer.
Check = Callable[[], tuple[bool, str]]


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


class Server:
    """Serves the endpoints from :meth:`start` to :meth:`stop`."""

    def __init__(
        self, *, address: str, metrics: metrics_mod.Metrics, live: Check, ready: Check
    ) -> None:
        self._host, self._port = settings_mod.parse_address(address)
        self._metrics = metrics
        self._live = live
        self._ready = ready
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """``host:port`` actually bound (port 0 asks for a free one)."""
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self) -> None:
        """Bind and serve on a thread; raises ``OSError`` when the address cannot be bound."""
        server_class = type(
            "_Bound",
            (_HTTPServer,),
            {"address_family": socket.AF_INET6 if ":" in self._host else socket.AF_INET},
        )
        self._server = server_class((self._host, self._port), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="http-endpoints", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            server_version = "reconciler"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, owner._metrics.exposition(), metrics_mod.CONTENT_TYPE)
                elif path in ("/healthz", "/readyz"):
                    check = owner._live if path == "/healthz" else owner._ready
                    try:
                        ok, reason = check()
                    except Exception as e:  # a check must answer, whatever broke
                        log.debug("%s check failed", path, exc_info=True)
                        ok, reason = False, f"check failed: {type(e).__name__}: {e}"
                    body = (reason + "\n").encode()
                    self._answer(200 if ok else 503, body, "text/plain; charset=utf-8")
                else:
                    self._answer(404, b"not found: try /metrics, /healthz or /readyz\n")

            def _answer(
                self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http %s: " + format, self.address_string(), *args)

        return Handler


__all__ = ["Check", "Server"]
