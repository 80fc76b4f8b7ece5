"""SDK and transport exceptions → ``reconciler.errors``, by exception class and HTTP status.

``classify`` walks everything an exception wraps (``__cause__``, ``__context__``, urllib3's
``reason``, exception ``args``): the SDK hides a refused connection inside a ``DockerException``
inside a requests ``ConnectionError`` inside a urllib3 ``MaxRetryError``. Messages name what was
being done and, where possible, what a person can do about it.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator

import docker.errors
import requests
import urllib3

from reconciler import errors

# dockerd 20.10 keeps a stale containerd task after a restart; its only trace is this text in
# the 500 answer to a start ("... task <id>: already exists"). No status or field says it.
_STALE_TASK = re.compile(r"\btask\b.*\balready exists\b", re.IGNORECASE)
_READ_TIMEOUTS = (
    urllib3.exceptions.ReadTimeoutError,
    requests.exceptions.ReadTimeout,
    TimeoutError,
)


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps, breadth first, each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        todo += [e for e in linked if isinstance(e, BaseException)]


def is_read_timeout(exc: BaseException) -> bool:
    """True when ``exc`` is (or wraps) a socket read timeout."""
    return any(isinstance(c, _READ_TIMEOUTS) for c in chain(exc))


def classify(exc: BaseException, *, node: str, doing: str) -> errors.EngineError:
    """The project error for an exception raised while ``doing`` (e.g. "list containers on …")."""
    if isinstance(exc, errors.EngineError):
        return exc
    if isinstance(exc, docker.errors.APIError):
        return _api_error(exc, node=node, doing=doing)
    found = list(chain(exc))
    return _tls_error(found, node=node, doing=doing) or _transport_error(
        found, node=node, doing=doing
    )


def _first(found: list[BaseException], *classes: type[BaseException]) -> BaseException | None:
    return next((c for c in found if isinstance(c, classes)), None)


def _tls_error(found: list[BaseException], *, node: str, doing: str) -> errors.EngineError | None:
    if cause := _first(found, ssl.SSLCertVerificationError):
        reason = getattr(cause, "verify_message", None) or cause
        return errors.TLSVerificationFailed(
            f"{doing}: certificate verification failed ({reason}); check that the node's "
            "tls_ca_cert is the CA that signed the engine's certificate",
            node=node,
        )
    if cause := _first(found, ssl.SSLError):
        return errors.TLSError(
            f"{doing}: TLS handshake failed ({cause}); check the node's client certificate and key",
            node=node,
        )
    return None


def _transport_error(found: list[BaseException], *, node: str, doing: str) -> errors.EngineError:
    if cause := _paramiko(found, auth=True):
        return errors.SSHAuthenticationFailed(f"{doing}: SSH login refused ({cause})", node=node)
    if _first(found, ConnectionRefusedError):
        return errors.EngineUnreachable(
            f"{doing}: connection refused; is dockerd running and listening on that address?",
            node=node,
        )
    if cause := _first(found, FileNotFoundError):
        return errors.EngineUnreachable(
            f"{doing}: socket not found ({cause}); is dockerd running?", node=node
        )
    if cause := _first(found, socket.gaierror):
        return errors.EngineUnreachable(f"{doing}: cannot resolve the host ({cause})", node=node)
    if cause := _first(found, PermissionError):
        return errors.EngineUnreachable(f"{doing}: permission denied ({cause})", node=node)
    # After the specific OS errors: urllib3's NewConnectionError subclasses ConnectTimeoutError.
    if _first(found, requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError):
        return errors.EngineTimeout(
            f"{doing}: no answer in time; the engine is hung, overloaded or unreachable",
            node=node,
        )
    transport = (requests.exceptions.ConnectionError, urllib3.exceptions.HTTPError, OSError)
    if _first(found, *transport) or _paramiko(found, auth=False):
        last = found[-1]
        return errors.EngineUnreachable(
            f"{doing}: connection failed ({type(last).__name__}: {last})", node=node
        )
    exc = found[0]
    if isinstance(exc, docker.errors.DockerException):
        return errors.EngineError(f"{doing}: {exc}", node=node)
    return errors.EngineError(f"{doing}: unexpected {type(exc).__name__}: {exc}", node=node)


def _paramiko(found: list[BaseException], *, auth: bool) -> BaseException | None:
    try:
        import paramiko
    except ImportError:  # pragma: no cover - paramiko is a dependency
        return None
    return _first(found, paramiko.AuthenticationException if auth else paramiko.SSHException)


def _api_error(exc: docker.errors.APIError, *, node: str, doing: str) -> errors.EngineError:
    status = exc.status_code
    message = f"{doing}: {exc.explanation or exc}"
    if isinstance(exc, docker.errors.ImageNotFound):
        return errors.ImageNotFound(message, node=node, status=status)
    if isinstance(exc, docker.errors.NotFound):
        return errors.NotFound(message, node=node, status=status)
    if status == 409 and doing.startswith("create container"):
        return errors.NameConflict(message, node=node, status=status)
    if _STALE_TASK.search(str(exc.explanation or "")):
        return errors.StaleTask(message, node=node, status=status)
    return errors.EngineAPIError(message, node=node, status=status)
