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

# Message text is read in exactly three places, each because the Engine API offers nothing else:
#
# * Stale containerd state after a dockerd restart (dockerd 20.10): a start answers
#   "task <id>: already exists" (500) when containerd kept the task, "id already in use" (409)
#   when it kept the container. Both mean "remove and recreate"; neither is the engine's fault.
_STALE_TASK = re.compile(r"\btask\b.*\balready exists\b|\bid already in use\b", re.IGNORECASE)
# * A 404 names what is missing: "No such container: <id>" for the container acted on, but
#   "network <x> not found" for a missing network, and "No such container: <other>" for a
#   ``container:<other>`` network target. Only the first means the container is gone.
_NO_SUCH_CONTAINER = re.compile(r"no such container:\s*(\S+)", re.IGNORECASE)
# * dockerd answers 500 to a create or start that fails because of what the row asks for. These
#   are the row's failures, not the engine's: counting them against the node let six rows with
#   an unknown user take a healthy node out of service. A 5xx that matches none of these stays
#   an engine fault (containerd down, disk full).
_REQUEST_CAUSED = re.compile(
    "|".join(
        (
            r"unable to find (user|group)",  # "user": "nouser"
            r"no matching entries in (passwd|group) file",
            r"port is already allocated",  # a published port someone else holds
            r"address already in use",
            r"larger than max",  # gRPC message limit: a 20 MiB env ("… vs. 16777216")
            r"too large",
            r"executable file not found",  # a command the image does not have
            r"already in use",  # a name or an id (after the stale-task check above)
        )
    ),
    re.IGNORECASE,
)
# The operations whose outcome depends on a row's content (``doing`` names them).
_ROW_OPERATIONS = ("create container", "start container")
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


def classify(
    exc: BaseException, *, node: str, doing: str, subject: str | None = None
) -> errors.EngineError:
    """The project error for an exception raised while ``doing`` (e.g. "list containers on …").

    ``subject`` is the container id (or name) the request was about, if any: only a 404 that
    names it becomes :class:`errors.ContainerNotFound`.
    """
    if isinstance(exc, errors.EngineError):
        return exc
    if isinstance(exc, docker.errors.APIError):
        return _api_error(exc, node=node, doing=doing, subject=subject)
    found = list(chain(exc))
    if any(_wants_tls(_response_text(c)) for c in found):  # e.g. during version negotiation
        return _plain_to_tls(node=node, doing=doing)
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


def _api_error(
    exc: docker.errors.APIError, *, node: str, doing: str, subject: str | None
) -> errors.EngineError:
    status = exc.status_code
    text = str(exc.explanation or "")
    message = f"{doing}: {text or exc}"
    if _wants_tls(text):
        return _plain_to_tls(node=node, doing=doing)
    if isinstance(exc, docker.errors.ImageNotFound):
        return errors.ImageNotFound(message, node=node, status=status)
    if isinstance(exc, docker.errors.NotFound):
        if _names_subject(text, subject):
            return errors.ContainerNotFound(message, node=node, status=status)
        return errors.NotFound(message, node=node, status=status)
    if status == 409 and doing.startswith("create container"):
        return errors.NameConflict(message, node=node, status=status)
    if _STALE_TASK.search(text):
        return errors.StaleTask(message, node=node, status=status)
    if (
        status is not None
        and status >= 500
        and doing.startswith(_ROW_OPERATIONS)
        and _REQUEST_CAUSED.search(text)
    ):
        return errors.RequestRejected(message, node=node, status=status)
    return errors.EngineAPIError(message, node=node, status=status)


def _names_subject(text: str, subject: str | None) -> bool:
    """Does a 404's text say that ``subject`` itself (an id, a prefix of it, or a name) is gone?"""
    found = _NO_SUCH_CONTAINER.search(text)
    if found is None or subject is None:
        return False
    named = found.group(1).lstrip("/")
    wanted = subject.lstrip("/")
    return named == wanted or (len(named) >= 12 and wanted.startswith(named))


def _response_text(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    try:
        return str(getattr(response, "text", "") or "")
    except Exception:  # a streamed or broken body: nothing to read
        return ""


def _wants_tls(text: str) -> bool:
    # Go's TLS server answers a plain HTTP request with "400 Bad Request" and this body.
    return "http request to an https server" in text.lower()


def _plain_to_tls(*, node: str, doing: str) -> errors.EngineError:
    return errors.TLSError(
        f"{doing}: the engine wants TLS (it answered plain HTTP with 400 Bad Request); set "
        "tls_ca_cert, tls_client_cert and tls_client_key on the node row",
        node=node,
    )
