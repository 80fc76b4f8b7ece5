"""Talk to one engine: :func:`connect`, :class:`EngineClient`, :class:`EventStream`.

See the package docstring for the guarantees (timeouts, negotiation, call counting, errors).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import http.client
import json
import logging
import re
import shutil
import socket
import tempfile
import threading
import time
import types as pytypes
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.auth
import docker.errors
import docker.tls
import docker.transport
import docker.types
import requests
import requests.adapters
import urllib3.exceptions
from requests.sessions import merge_setting

from reconciler import domain, errors
from reconciler.docker_api import convert, registry, streams, urls
from reconciler.docker_api.classify import classify, is_read_timeout

log = logging.getLogger(__name__)

#: Operation keys of :attr:`EngineClient.calls` that tests and benchmarks assert on.
LIST_CONTAINERS = "GET /containers/json"
INSPECT_CONTAINER = "GET /containers/{id}/json"
LIST_IMAGES = "GET /images/json"
CREATE_CONTAINER = "POST /containers/create"
START_CONTAINER = "POST /containers/{id}/start"
REMOVE_CONTAINER = "DELETE /containers/{id}"
PING = "GET /_ping"
EVENTS = "GET /events"
LOGS = "GET /containers/{id}/logs"

#: Event types the monitor subscribes to; the rest (network, volume, daemon…) change nothing
#: that reconciler observes.
EVENT_TYPES = ("container", "image")

_COLLECTIONS = {"containers", "images", "networks", "volumes", "exec", "plugins"}
_VERBS = {"json", "create", "prune", "load", "search", "get"}
_VERSION_PREFIX = re.compile(r"^/v\d+\.\d+")


class CallCounter:
    """Thread-safe count of HTTP requests by operation key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def add(self, method: str, path: str) -> None:
        key = f"{method} {operation_path(path)}"
        with self._lock:
            self._counts[key] += 1

    def snapshot(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self._counts)


def operation_path(path: str) -> str:
    """``/v1.41/containers/3f2a…/json?all=1`` → ``/containers/{id}/json``."""
    path = _VERSION_PREFIX.sub("", path.split("?", 1)[0])
    parts = path.split("/")
    for i in range(2, len(parts)):
        if parts[i - 1] in _COLLECTIONS and parts[i] not in _VERBS:
            parts[i] = "{id}"
    return "/".join(parts)


class FenceClosed(BaseException):
    """A request was not sent: the calling thread's fence (:func:`fenced`) said no right before
    it would have left the process. A ``BaseException``, so that no ``except Exception`` on the
    way (the error translation, the SDK) mistakes it for a failure of the engine."""


_fence = threading.local()
_http_send = http.client.HTTPConnection.send


def _send_if_open(self: http.client.HTTPConnection, data: Any) -> None:
    # The last check, right before the bytes reach the socket (the connection is up by then):
    # a thread stopped anywhere earlier in the call finds the fence closed when it resumes.
    may_send = getattr(_fence, "may_send", None)
    if may_send is not None:
        if not may_send():
            raise FenceClosed("request not sent: the fence is closed")
        line = bytes(data[:120]).split(b"\r\n", 1)[0].decode("latin-1")
        log.debug("docker request sent: %s", line)  # its time says when it left
    _http_send(self, data)


# Every engine request (unix socket, TCP, TLS) is written through http.client's send; outside a
# ``fenced`` block this costs one thread-local lookup.
http.client.HTTPConnection.send = _send_if_open  # type: ignore[method-assign]


@contextlib.contextmanager
def fenced(may_send: Callable[[], bool]) -> Iterator[None]:
    """Requests this thread sends inside the block are sent only while ``may_send()`` is true,
    asked right before each one leaves (the lease's fence: a leader paused in the middle of a
    call does not send it when it resumes after its lease ran out); otherwise
    :class:`FenceClosed` is raised and nothing is sent."""
    previous = getattr(_fence, "may_send", None)
    _fence.may_send = may_send
    try:
        yield
    finally:
        _fence.may_send = previous


class _CountingAPIClient(docker.APIClient):
    """The SDK's low-level client, counting every request it sends (negotiation included)."""

    def __init__(self, *args: Any, counter: CallCounter, **kwargs: Any) -> None:
        self._counter = counter  # set first: the constructor already sends /version
        super().__init__(*args, **kwargs)
        # Nothing in the environment applies to an engine connection (no ~/.netrc lookup on
        # every request either: it showed in profiles of a busy daemon).
        self.trust_env = False

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        may_send = getattr(_fence, "may_send", None)
        if may_send is not None and not may_send():
            raise FenceClosed(f"{request.method} {request.path_url} not sent: the fence is closed")
        self._counter.add(request.method or "?", request.path_url)
        return super().send(request, **kwargs)

    def mount(self, prefix: str | bytes, adapter: requests.adapters.BaseAdapter) -> None:
        # Called by the SDK's constructor before its first request (version negotiation).
        if isinstance(adapter, _SOCKET_ADAPTERS):
            _pool_per_socket(adapter)
        super().mount(prefix, adapter)

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        # The node row alone decides TLS and proxies. requests would let REQUESTS_CA_BUNDLE
        # override the session's CA (psf/requests#3829): a right CA would fail to verify.
        return {
            "proxies": merge_setting(proxies, self.proxies),
            "stream": merge_setting(stream, self.stream),
            "verify": merge_setting(verify, self.verify),
            "cert": merge_setting(cert, self.cert),
        }


_SOCKET_ADAPTERS: tuple[type, ...] = tuple(
    adapter
    for adapter in (
        getattr(docker.transport, "UnixHTTPAdapter", None),
        getattr(docker.transport, "SSHHTTPAdapter", None),
    )
    if adapter is not None
)


def _pool_per_socket(adapter: Any) -> None:
    """Reuse connections to one socket across request paths.

    docker-py's unix-socket and SSH adapters key their connection pools by the whole request
    URL (``self.pools.get(url)`` in ``docker/transport/unixconn.py``), so every request that
    names a new container id opens a new connection and evicts an older pool. Keying the pool by
    the adapter's origin alone reuses connections as requests does over TCP; in a profile of a
    100-container convergence the connection set-up and tear-down was a sixth of the daemon's
    CPU.
    """

    def get_connection_with_tls_context(
        self: Any, request: Any, verify: Any, proxies: Any = None, cert: Any = None
    ) -> Any:
        parts = urlsplit(request.url)
        return self.get_connection(f"{parts.scheme}://{parts.netloc}", proxies)

    adapter.get_connection_with_tls_context = pytypes.MethodType(
        get_connection_with_tls_context, adapter
    )


def connect(
    row: domain.NodeRow, *, timeout: float, connect_timeout: float | None = None
) -> EngineClient:
    """A client for the engine of ``row``, API version negotiated.

    ``timeout`` bounds every later call; ``connect_timeout`` (default ``timeout``) bounds the
    negotiation. Raises an :class:`errors.EngineError` subclass, e.g.
    :class:`errors.InsecureTransportRefused` for plain ``tcp://`` off loopback.
    """
    base_url, tls_dir, tls = _transport(row, timeout=connect_timeout or timeout)
    counter = CallCounter()
    try:
        api = _CountingAPIClient(
            counter=counter,
            base_url=base_url,
            version="auto",
            timeout=connect_timeout or timeout,
            tls=tls,
            use_ssh_client=False,
        )
    except Exception as e:
        if tls_dir:
            shutil.rmtree(tls_dir, ignore_errors=True)
        error = classify(e, node=row.name, doing=f"connect to {row.url}")
        if isinstance(error, errors.TLSError | errors.TLSVerificationFailed):
            error = _with_expiry(error, tls, node=row.name)
        raise error from e
    api.timeout = timeout  # type: ignore[assignment]  # stubs say int; requests takes float
    return EngineClient(api=api, node=row.name, url=row.url, counter=counter, tls_dir=tls_dir)


def _transport(
    row: domain.NodeRow, *, timeout: float
) -> tuple[str, str | None, docker.tls.TLSConfig | bool]:
    """Check the URL and build the TLS configuration: (base URL, temp folder, tls)."""
    has_tls = bool(row.tls_ca_cert or row.tls_client_cert or row.tls_client_key)
    try:
        checked = urls.check_url(row.url, tls=has_tls, allow_insecure=row.allow_insecure_tcp)
    except errors.InsecureEngineURL:
        raise errors.InsecureTransportRefused(
            f"node {row.name}: refusing plain tcp:// to {urlsplit(row.url).hostname}: without "
            "TLS anyone who reaches that port controls the engine. Set tls_ca_cert, "
            "tls_client_cert and tls_client_key on the row, or set allow_insecure_tcp = true if "
            "the network is trusted",
            node=row.name,
        ) from None
    except errors.BadEngineURL as e:
        raise errors.NodeConfigurationError(
            f"node {row.name}: unusable URL: {e}", node=row.name
        ) from None
    if checked.scheme == "unix":
        return row.url, None, False
    if checked.scheme == "ssh":
        _check_ssh_port(row, timeout=timeout)
        return row.url, None, False
    if not has_tls:
        return row.url, None, False
    values = _tls_values(row)
    if bool(values[1]) != bool(values[2]):
        # The SDK would silently connect without any client certificate.
        have, missing = (
            ("tls_client_cert", "tls_client_key")
            if values[1]
            else ("tls_client_key", "tls_client_cert")
        )
        raise errors.NodeConfigurationError(
            f"node {row.name}: {have} is set but {missing} is not; a client certificate needs "
            "its key: set both or neither",
            node=row.name,
        )
    tls_dir = tempfile.mkdtemp(prefix=f"reconciler-tls-{row.name}-")
    try:
        ca, cert, key = (
            _pem_file(value, Path(tls_dir, stem))
            for value, stem in zip(values, ("ca.pem", "cert.pem", "key.pem"), strict=True)
        )
        config = docker.tls.TLSConfig(
            client_cert=(cert, key) if cert and key else None, ca_cert=ca, verify=ca or True
        )
    except (OSError, docker.errors.DockerException) as e:
        shutil.rmtree(tls_dir, ignore_errors=True)
        raise errors.NodeConfigurationError(
            f"node {row.name}: unusable TLS settings: {e}", node=row.name
        ) from e
    return "tcp://" + urlsplit(row.url).netloc, tls_dir, config


def _with_expiry(
    error: errors.EngineError, tls: docker.tls.TLSConfig | bool, *, node: str
) -> errors.EngineError:
    """``error``, saying so when the local client certificate has expired.

    The engine only answers "bad certificate" to an expired one; the local file says why.
    """
    cert = getattr(tls, "cert", None)
    path = cert[0] if isinstance(cert, tuple) else None
    expired = _expired_at(path) if path else None
    if expired is None:
        return error
    return type(error)(
        f"{error}; the client certificate expired on {expired:%Y-%m-%d %H:%M} UTC: renew "
        "tls_client_cert (and its key)",
        node=node,
    )


def _expired_at(path: str) -> datetime.datetime | None:
    """When the PEM certificate at ``path`` expired, or None (still valid, or unreadable)."""
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - a dependency of paramiko, so always there
        return None
    try:
        certificate = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    not_after = certificate.not_valid_after_utc
    return not_after if not_after < datetime.datetime.now(datetime.UTC) else None


def _tls_values(row: domain.NodeRow) -> tuple[str | None, str | None, str | None]:
    """(CA, client cert, client key); a ``tls_ca_cert`` naming a folder means the folder's
    ``ca.pem``, ``cert.pem`` and ``key.pem`` (the ``DOCKER_CERT_PATH`` layout)."""
    ca, cert, key = row.tls_ca_cert, row.tls_client_cert, row.tls_client_key
    if ca and not ca.lstrip().startswith("-----BEGIN") and Path(ca).expanduser().is_dir():
        folder = Path(ca).expanduser()
        return (
            str(folder / "ca.pem"),
            cert or str(folder / "cert.pem"),
            key or str(folder / "key.pem"),
        )
    return ca, cert, key


def _pem_file(value: str | None, path: Path) -> str | None:
    """A TLS column holds PEM text (written to ``path``, mode 0600) or the path of a file."""
    if not value:
        return None
    if value.lstrip().startswith("-----BEGIN"):
        path.touch(mode=0o600)
        path.write_text(value)
        return str(path)
    found = Path(value).expanduser()
    if not found.is_file():
        raise FileNotFoundError(f"{found} does not exist")
    return str(found)


def _check_ssh_port(row: domain.NodeRow, *, timeout: float) -> None:
    """Fail fast on an SSH host that refuses or drops TCP: paramiko's connect has no timeout."""
    parts = urlsplit(row.url)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 22), timeout=timeout):
            pass
    except OSError as e:
        raise classify(e, node=row.name, doing=f"connect to {row.url}") from e


class EngineClient:
    """One connection to one engine; thread-safe. Methods raise :class:`errors.EngineError`."""

    def __init__(
        self,
        *,
        api: docker.APIClient,
        node: str,
        url: str,
        counter: CallCounter,
        tls_dir: str | None,
    ) -> None:
        # Typed Any: a few SDK helpers used here (_get, _url, _stream_helper) are not in the stubs.
        self._api: Any = api
        self.node = domain.NodeName(node)
        self.url = url
        self._counter = counter
        self._tls_dir = tls_dir
        self._flight_lock = threading.Lock()
        #: Calls in flight: a token → (monotonic start, seconds the call may legitimately take
        #: beyond an answer's usual time, e.g. a stop's grace period).
        self._in_flight: dict[object, tuple[float, float]] = {}
        self._last_answer = time.monotonic()

    @property
    def api_version(self) -> str:
        return str(self._api.api_version)

    @property
    def timeout(self) -> float:
        return float(self._api.timeout)

    @property
    def calls(self) -> collections.Counter[str]:
        """A copy of the count of HTTP requests sent so far, by operation key."""
        return self._counter.snapshot()

    def stalled(self, *, after: float) -> bool:
        """True when a call has waited more than ``after`` s for an answer (beyond any time it
        may legitimately take, such as a stop's grace period) and no other call was answered
        meanwhile either: the engine may have hung. A slow call to an engine that still answers
        others (a large create) is not a stall."""
        now = time.monotonic()
        with self._flight_lock:
            if now - self._last_answer <= after:
                return False
            return any(now - start > after + extra for start, extra in self._in_flight.values())

    @contextlib.contextmanager
    def _translate(
        self, doing: str, *, subject: str | None = None, allowance: float = 0.0
    ) -> Iterator[None]:
        token = object()
        with self._flight_lock:
            self._in_flight[token] = (time.monotonic(), allowance)
        answered = False
        try:
            yield
            answered = True
        except Exception as e:
            error = classify(e, node=self.node, doing=f"{doing} on {self.url}", subject=subject)
            answered = isinstance(error, errors.EngineAPIError)  # an HTTP answer, if an error
            raise error from e
        finally:
            with self._flight_lock:
                del self._in_flight[token]
                if answered:
                    self._last_answer = time.monotonic()

    def ping(self, *, timeout: float | None = None) -> None:
        """Return when the engine answers ``/_ping`` within ``timeout`` (default: the client's)."""
        with self._translate("ping"):
            response = self._api._get(self._api._url("/_ping"), timeout=timeout or self.timeout)
            self._api._raise_for_status(response)

    def info(self) -> domain.EngineInfo:
        """The engine's facts, in one ``/info`` call."""
        with self._translate("read engine info"):
            raw = self._api.info()
        labels = dict(str(item).partition("=")[::2] for item in raw.get("Labels") or [])
        return domain.EngineInfo(
            engine_id=str(raw.get("ID") or ""),
            name=str(raw.get("Name") or ""),
            version=str(raw.get("ServerVersion") or ""),
            api_version=self.api_version,
            os=str(raw.get("OperatingSystem") or raw.get("OSType") or ""),
            cpus=int(raw.get("NCPU") or 0),
            memory_bytes=int(raw.get("MemTotal") or 0),
            labels=labels,
        )

    def list_containers(self) -> list[convert.ContainerSummary]:
        """Every container, running or not, in exactly one request."""
        with self._translate("list containers"):
            raw = self._api.containers(all=True)
        return [convert.summary(c) for c in raw]

    def inspect_container(self, container_id: str) -> domain.ObservedContainer:
        """The full picture of one container; :class:`errors.NotFound` when it is gone."""
        with self._translate(f"inspect container {container_id[:12]}", subject=container_id):
            raw = self._api.inspect_container(container_id)
        return convert.observed(raw, node=self.node)

    def list_images(self) -> list[domain.ObservedImage]:
        """Every tagged or untagged top-level image, in one request."""
        with self._translate("list images"):
            raw = self._api.images()
        return [convert.image(i, node=self.node) for i in raw]

    def create_container(
        self, spec: domain.ContainerSpec, *, labels: Mapping[str, str]
    ) -> domain.ContainerId:
        """Create (not start) ``spec``, labelled with ``spec.labels`` plus ``labels``.

        Raises :class:`errors.NameConflict` when the name is taken and
        :class:`errors.ImageNotFound` when the image is not on the engine.
        """
        with self._translate(f"create container {spec.name}"):
            created = self._api.create_container(**convert.create_args(self._api, spec, labels))
        return domain.ContainerId(created["Id"])

    def start(self, container_id: str) -> None:
        """Start a container; :class:`errors.StaleTask` means remove and recreate it,
        :class:`errors.ContainerNotFound` that it is gone (another 404, e.g. a missing network,
        is a :class:`errors.NotFound` of the row)."""
        with self._translate(f"start container {container_id[:12]}", subject=container_id):
            self._api.start(container_id)

    def stop(self, container_id: str, *, timeout: int = 10) -> None:
        """Stop gracefully, killing after ``timeout`` s (the request may take that much more)."""
        with self._translate(
            f"stop container {container_id[:12]}", subject=container_id, allowance=timeout
        ):
            self._api.stop(container_id, timeout=timeout)

    def remove(self, container_id: str, *, force: bool = True) -> None:
        with self._translate(f"remove container {container_id[:12]}", subject=container_id):
            self._api.remove_container(container_id, force=force)

    def pull_image(
        self,
        image: str,
        *,
        auth: Mapping[str, Any] | None,
        timeout: float,
        progress: Callable[[str], None] | None = None,
    ) -> int:
        """Pull ``image`` (with registry credentials ``auth``, see ``registry.auth_for``) within
        ``timeout`` s; return the layers downloaded. :class:`errors.ImagePullFailed` carries the
        registry's message; the node's health is not touched by what a registry says."""
        repository, tag = registry.split_reference(image)
        headers = {"X-Registry-Auth": docker.auth.encode_header(dict(auth))} if auth else {}
        deadline = time.monotonic() + timeout
        try:
            with self._translate(f"pull image {image}", subject=image, allowance=timeout):
                response = self._api._post(
                    self._api._url("/images/create"),
                    params={"fromImage": repository, "tag": tag},
                    headers=headers,
                    stream=True,
                    timeout=(self.timeout, timeout),
                )
                self._api._raise_for_status(response)
                try:
                    return registry.read_pull_stream(
                        self._api._stream_helper(response, decode=True),
                        image=image,
                        node=self.node,
                        deadline=deadline,
                        progress=progress,
                    )
                finally:
                    response.close()
        except errors.ImagePullFailed:
            raise
        except errors.EngineAPIError as e:
            # An HTTP answer about the pull (404 "pull access denied", 500 "unauthorized"):
            # the registry's verdict, in its words, against the row.
            raise errors.ImagePullFailed(
                f"pull of {image} failed: {e}", node=self.node, status=e.status
            ) from e

    def rename(self, container_id: str, name: str) -> None:
        with self._translate(f"rename container {container_id[:12]}", subject=container_id):
            self._api.rename(container_id, name)

    def events(self, *, since: float | None, idle_timeout: float | None) -> EventStream:
        """Subscribe to container and image events from ``since`` (engine clock, inclusive).

        The subscription request itself uses the client's timeout; afterwards a read that waits
        more than ``idle_timeout`` s ends the stream with :class:`errors.EventStreamIdle`.
        """
        params = {
            "since": f"{since:.9f}" if since is not None else None,
            "filters": json.dumps({"type": list(EVENT_TYPES)}),
        }
        with self._translate("subscribe to events"):
            response = self._api._get(
                self._api._url("/events"),
                params=params,
                stream=True,
                timeout=(self.timeout, idle_timeout),
            )
            self._api._raise_for_status(response)
        return EventStream(api=self._api, response=response, node=self.node, url=self.url)

    def logs(
        self, container_id: str, *, follow: bool = False, tail: int | None = None
    ) -> Generator[bytes, None, None]:
        """A container's stdout and stderr as the engine sends them (the last ``tail`` lines,
        or all), stream frames demultiplexed; close the iterator to stop early.

        The request is bounded by the client's timeout. Without ``follow`` every read is too;
        with it, reads wait for output as long as the container runs, and the iteration ends
        when it stops. :class:`errors.ContainerNotFound` when the container is gone.
        """
        doing = f"read the logs of container {container_id[:12]}"
        with self._translate(doing, subject=container_id):
            tty = bool((self._api.inspect_container(container_id).get("Config") or {}).get("Tty"))
            response = self._api._get(
                self._api._url("/containers/{0}/logs", container_id),
                params={
                    "stdout": 1,
                    "stderr": 1,
                    "follow": int(follow),
                    "tail": "all" if tail is None else str(tail),
                },
                stream=True,
                timeout=(self.timeout, None if follow else self.timeout),
            )
            self._api._raise_for_status(response)

        def chunks() -> Generator[bytes, None, None]:
            try:
                yield from _raw_chunks(response.raw) if tty else _log_frames(response.raw)
            except Exception as e:
                raise classify(e, node=self.node, doing=f"{doing} on {self.url}") from e
            finally:
                response.close()

        return chunks()

    async def open_events(
        self, *, since: float | None, idle_timeout: float | None
    ) -> streams.AsyncEventStream:
        """:meth:`events` for an asyncio loop: the same subscription (counted the same way),
        read without a thread of its own (SSH engines: on one thread, see ``streams``)."""
        endpoint = self._endpoint()
        if endpoint is None:
            loop = asyncio.get_running_loop()
            blocking = await loop.run_in_executor(
                None, lambda: self.events(since=since, idle_timeout=idle_timeout)
            )
            return streams.ThreadedEventStream(blocking, loop=loop)
        self._counter.add("GET", "/events")
        stream = await streams.open_socket_stream(
            endpoint,
            query=streams.params(since=since, types=EVENT_TYPES),
            node=self.node,
            url=self.url,
            connect_timeout=self.timeout,
            idle_timeout=idle_timeout,
        )
        with self._flight_lock:
            self._last_answer = time.monotonic()
        return stream

    async def aping(self, *, timeout: float) -> None:
        """:meth:`ping` for an asyncio loop, over a kept-alive connection of its own (SSH: the
        SDK's ping on a thread); counted as ``GET /_ping``. Call on one loop only."""
        endpoint = self._endpoint()
        if endpoint is None:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: self.ping(timeout=timeout)
            )
            return
        pinger = getattr(self, "_pinger", None)
        if pinger is None:
            pinger = self._pinger = streams.Pinger(endpoint, node=self.node, url=self.url)
        self._counter.add("GET", "/_ping")
        token = object()
        with self._flight_lock:
            self._in_flight[token] = (time.monotonic(), 0.0)
        answered = False
        try:
            await pinger.ping(timeout=timeout)
            answered = True
        finally:
            with self._flight_lock:
                del self._in_flight[token]
                if answered:
                    self._last_answer = time.monotonic()

    def _endpoint(self) -> streams.Endpoint | None:
        """Where a plain socket reaches this engine (None: SSH); built once."""
        cached: streams.Endpoint | bool | None = getattr(self, "_endpoint_cache", False)
        if cached is False:
            url = self.url if self.url.startswith("unix:") else str(self._api.base_url)
            cached = streams.endpoint_of(
                url,
                api_version=self.api_version,
                cert=self._api.cert,
                verify=self._api.verify,
            )
            self._endpoint_cache = cached
        assert cached is None or isinstance(cached, streams.Endpoint)
        return cached

    def close(self) -> None:
        """Close pooled connections and remove materialised TLS files. Idempotent."""
        pinger = getattr(self, "_pinger", None)
        if pinger is not None:
            pinger.close_threadsafe()
        with contextlib.suppress(Exception):
            self._api.close()
        if self._tls_dir:
            shutil.rmtree(self._tls_dir, ignore_errors=True)


class EventStream:
    """An iterator of :class:`EngineEvent`; ``close()`` ends it at once from another thread.

    Iteration ends with ``StopIteration`` when the engine ends the stream or after ``close()``,
    raises :class:`errors.EventStreamIdle` after the idle timeout, and another
    :class:`errors.EngineError` when the connection breaks.
    """

    def __init__(self, *, api: Any, response: requests.Response, node: str, url: str) -> None:
        self._response = response
        #: The engine's clock when the stream was opened (its ``Date`` header, whole seconds,
        #: rounded down): every event from then on is delivered by this stream.
        self.opened_at = streams.http_date(response.headers.get("Date"))
        raw = response.raw
        if getattr(raw, "chunked", False) and hasattr(raw, "read_chunked"):
            self._decoded: Iterator[Any] = _json_lines(raw.read_chunked())
        else:
            self._decoded = api._stream_helper(response, decode=True)
        self._closed = threading.Event()
        self._node = node
        self._url = url

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> convert.EngineEvent:
        while True:
            try:
                raw = next(self._decoded)
            except StopIteration:
                raise
            except Exception as e:
                if self._closed.is_set():
                    raise StopIteration from None  # closed on purpose: a quiet end
                if is_read_timeout(e):
                    raise errors.EventStreamIdle(
                        f"event stream from {self._url} was silent", node=self._node
                    ) from e
                raise classify(e, node=self._node, doing=f"read events from {self._url}") from e
            event = convert.event(raw)
            if event is not None:
                return event

    def close(self) -> None:
        """Shut the socket down (wakes a blocked reader), then release the response."""
        self._closed.set()
        with contextlib.suppress(Exception):
            docker.types.CancellableStream(iter(()), self._response).close()
        with contextlib.suppress(Exception):
            self._response.close()


def _json_lines(chunks: Iterator[bytes]) -> Iterator[Any]:
    """The engine's event stream, decoded: JSON objects, one per line.

    dockerd flushes one HTTP chunk per event. docker-py's own decoder reads the first byte of each
    chunk alone and then splits the text character by character; in a profile of a convergence
    that was most of the event thread's time. A line that is not JSON is skipped.
    """
    pending = b""
    while True:
        try:
            chunk: bytes | None = next(chunks)
        except StopIteration:
            return
        except (ValueError, urllib3.exceptions.ProtocolError):
            # A dead engine leaves an empty chunk-size line, which urllib3 reports as
            # InvalidChunkLength from "invalid literal for int() with base 16".
            chunk = None
        if chunk is None:  # raised here, outside the handler, so no parse error is chained
            raise ConnectionResetError("the engine closed the event stream")
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError:
                log.warning("skipped an event that is not JSON: %.200r", line)


def _log_frames(raw: Any) -> Iterator[bytes]:
    """The payloads of a non-TTY log stream: frames of an 8-byte header (stream, size)."""
    while True:
        header = raw.read(8)
        if len(header) < 8:
            return
        payload = raw.read(int.from_bytes(header[4:8], "big"))
        if payload:
            yield payload


def _raw_chunks(raw: Any) -> Iterator[bytes]:
    """A TTY container's log stream: plain bytes, as they come."""
    while chunk := raw.read1(4096) if hasattr(raw, "read1") else raw.read(4096):
        yield chunk
