"""Event streams read by asyncio: many engines' ``/events`` on one thread.

Where this sits: ``nodes.monitor`` follows every node's event stream as one asyncio task on one
shared loop (``nodes.monitor.StreamHub``) instead of one blocked thread per engine. This module
opens such a stream over a plain socket: unix, TCP, or TCP with TLS (the node row's certificates,
as :func:`client.connect` uses them). SSH engines have no such socket; for them
:func:`open_events` reads the SDK's blocking :class:`client.EventStream` on a thread of its own
and hands the events to the loop, so every node is followed by the same monitor code.

The request is the one the SDK sends (``GET /v<negotiated>/events?since=&filters=``), counted in
:attr:`client.EngineClient.calls` as ``GET /events``. The body is chunked JSON lines, decoded
here (dockerd flushes one chunk per event). A read that waits more than ``idle_timeout`` raises
:class:`errors.EventStreamIdle`; a dropped connection raises :class:`errors.EngineUnreachable`
("the engine closed the event stream"); :meth:`AsyncEventStream.close` ends it quietly.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import json
import logging
import ssl
import threading
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlencode, urlsplit

from reconciler import errors
from reconciler.docker_api import convert
from reconciler.docker_api.classify import classify

log = logging.getLogger(__name__)

#: Largest response head accepted (status line and headers).
_HEAD_LIMIT = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """Where an engine's API listens, for a plain socket: a unix path, or host and port (TLS
    when ``ssl`` is set)."""

    unix_path: str | None = None
    host: str = "localhost"
    port: int = 0
    ssl: ssl.SSLContext | None = None
    api_version: str = "1.41"


class AsyncEventStream(Protocol):
    """What the monitor reads: ``opened_at`` (engine clock), :meth:`next`, :meth:`close`."""

    opened_at: float | None

    async def next(self) -> convert.EngineEvent | None:
        """The next event; None when the engine ended the stream (or after :meth:`close`)."""
        ...

    def close(self) -> None:
        """End the stream; call on the loop's thread."""
        ...


def params(*, since: float | None, types: tuple[str, ...]) -> dict[str, str]:
    """The query of an events subscription, as the SDK builds it."""
    query = {"filters": json.dumps({"type": list(types)})}
    if since is not None:
        query["since"] = f"{since:.9f}"
    return query


async def open_socket_stream(
    endpoint: Endpoint,
    *,
    query: dict[str, str],
    node: str,
    url: str,
    connect_timeout: float,
    idle_timeout: float | None,
) -> SocketEventStream:
    """Subscribe over a socket; raises an :class:`errors.EngineError` if the engine refuses,
    does not answer within ``connect_timeout``, or answers with an HTTP error."""
    doing = f"subscribe to events on {url}"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(connect_timeout):
            if endpoint.unix_path is not None:
                reader, writer = await asyncio.open_unix_connection(
                    endpoint.unix_path, limit=_HEAD_LIMIT
                )
            else:
                reader, writer = await asyncio.open_connection(
                    endpoint.host,
                    endpoint.port,
                    ssl=endpoint.ssl,
                    server_hostname=endpoint.host if endpoint.ssl else None,
                    limit=_HEAD_LIMIT,
                )
            host = "localhost" if endpoint.unix_path is not None else endpoint.host
            path = f"/v{endpoint.api_version}/events?{urlencode(query)}"
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: reconciler\r\n"
                "Accept: application/json\r\n\r\n".encode("ascii")
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status, headers = _parse_head(head)
            if status >= 300:
                body = await _read_error_body(reader, headers)
                raise _http_error(status, body, node=node, doing=doing)
    except BaseException as e:
        if writer is not None:
            writer.close()
        if isinstance(e, errors.EngineError):
            raise
        if isinstance(e, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
            raise
        raise classify(_as_transport(e), node=node, doing=doing) from e
    return SocketEventStream(
        reader=reader,
        writer=writer,
        chunked="chunked" in headers.get("transfer-encoding", "").lower(),
        opened_at=http_date(headers.get("date")),
        node=node,
        url=url,
        idle_timeout=idle_timeout,
    )


def http_date(value: str | None) -> float | None:
    """The engine's ``Date`` header as epoch seconds (None if absent or unreadable)."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def _as_transport(e: BaseException) -> BaseException:
    """asyncio's own exceptions as the OS errors ``classify`` knows."""
    if isinstance(e, TimeoutError | asyncio.TimeoutError):
        return TimeoutError("no answer in time")
    if isinstance(e, asyncio.IncompleteReadError | asyncio.LimitOverrunError):
        return ConnectionResetError("the engine closed the connection")
    return e


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ConnectionResetError(f"not an HTTP answer: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _read_error_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    length = headers.get("content-length", "")
    if length.isdigit():
        return await reader.readexactly(min(int(length), _HEAD_LIMIT))
    if "chunked" in headers.get("transfer-encoding", "").lower():
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        return await reader.readexactly(min(size, _HEAD_LIMIT))
    return b""


def _http_error(status: int, body: bytes, *, node: str, doing: str) -> errors.EngineError:
    try:
        message = str(json.loads(body).get("message") or "")
    except (ValueError, AttributeError):
        message = body.decode("utf-8", "replace").strip()
    return errors.EngineAPIError(f"{doing}: {status} {message}".rstrip(), node=node, status=status)


class Pinger:
    """``GET /_ping`` over one kept-alive asyncio connection (the heartbeat of a node).

    A thousand nodes pinged every few seconds through the SDK cost a fifth of a core in
    requests' machinery; a request written on an open socket costs a small fraction of that.
    Any failure closes the connection (the next ping opens a new one) and raises the
    :class:`errors.EngineError` the SDK path would have raised for it. Use on one loop only.
    """

    def __init__(self, endpoint: Endpoint, *, node: str, url: str) -> None:
        self._endpoint = endpoint
        self._node = node
        self._url = url
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def ping(self, *, timeout: float) -> None:
        doing = f"ping on {self._url}"
        self._loop = asyncio.get_running_loop()
        async with self._lock:
            try:
                async with asyncio.timeout(timeout):
                    await self._ping()
            except errors.EngineError:
                self.close()
                raise
            except Exception as e:
                self.close()
                raise classify(_as_transport(e), node=self._node, doing=doing) from e

    async def _ping(self) -> None:
        endpoint = self._endpoint
        if self._conn is None or self._conn[1].is_closing():
            if endpoint.unix_path is not None:
                self._conn = await asyncio.open_unix_connection(endpoint.unix_path)
            else:
                self._conn = await asyncio.open_connection(
                    endpoint.host,
                    endpoint.port,
                    ssl=endpoint.ssl,
                    server_hostname=endpoint.host if endpoint.ssl else None,
                )
        reader, writer = self._conn
        host = "localhost" if endpoint.unix_path is not None else endpoint.host
        writer.write(
            f"GET /v{endpoint.api_version}/_ping HTTP/1.1\r\nHost: {host}\r\n"
            "User-Agent: reconciler\r\n\r\n".encode("ascii")
        )
        await writer.drain()
        status, headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
        length = headers.get("content-length", "")
        if length.isdigit():
            body = await reader.readexactly(int(length))
        else:  # no length: read to the end and open a new connection next time
            body = await reader.read(_HEAD_LIMIT)
            self.close()
        if "close" in headers.get("connection", "").lower():
            self.close()
        if status >= 300:
            raise _http_error(status, body, node=self._node, doing=f"ping on {self._url}")

    def close(self) -> None:
        """Close the connection; on the loop's thread."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn[1].close()

    def close_threadsafe(self) -> None:
        """Close the connection from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.close)


class SocketEventStream:
    """One subscription over an asyncio connection."""

    def __init__(
        self,
        *,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        chunked: bool,
        opened_at: float | None,
        node: str,
        url: str,
        idle_timeout: float | None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._chunked = chunked
        self.opened_at = opened_at
        self._node = node
        self._url = url
        self._idle_timeout = idle_timeout
        self._pending = b""
        self._lines: collections.deque[bytes] = collections.deque()
        self._closed = False
        self._ended = False

    async def next(self) -> convert.EngineEvent | None:
        while True:
            while self._lines:
                line = self._lines.popleft()
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                except ValueError:
                    log.warning("skipped an event that is not JSON: %.200r", line)
                    continue
                event = convert.event(raw)
                if event is not None:
                    return event
            if self._ended or self._closed:
                return None
            data = await self._read()
            if data is None:
                self._ended = True
                return None
            self._pending += data
            *lines, self._pending = self._pending.split(b"\n")
            self._lines.extend(lines)

    async def _read(self) -> bytes | None:
        """The next piece of the body; None at its end; raises on a timeout or a break."""
        try:
            async with asyncio.timeout(self._idle_timeout):
                if not self._chunked:
                    data = await self._reader.read(65536)
                    return data or None
                size_line = await self._reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip() or b"x", 16)
                if size == 0:
                    return None
                data = await self._reader.readexactly(size + 2)
                return data[:-2]
        except TimeoutError:
            if self._closed:
                return None
            raise errors.EventStreamIdle(
                f"event stream from {self._url} was silent", node=self._node
            ) from None
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            if self._closed:
                return None  # closed on purpose: a quiet end
            raise errors.EngineUnreachable(
                f"read events from {self._url}: the engine closed the event stream "
                f"({type(e).__name__})",
                node=self._node,
            ) from e

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self._writer.close()


class ThreadedEventStream:
    """A blocking :class:`client.EventStream` (SSH engines) read on a thread of its own; the
    events reach the loop through a queue."""

    def __init__(self, stream: _BlockingStream, *, loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self.opened_at = stream.opened_at
        self._loop = loop
        self._queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self._thread = threading.Thread(target=self._pump, name="events-ssh", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for event in self._stream:
                self._put("event", event)
        except errors.EngineError as e:
            self._put("error", e)
        except Exception as e:  # a bug must not leave the reader waiting forever
            self._put("error", errors.EngineError(f"event stream failed: {e}"))
        self._put("end", None)

    def _put(self, kind: str, value: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is reading
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))

    async def next(self) -> convert.EngineEvent | None:
        kind, value = await self._queue.get()
        if kind == "event":
            assert isinstance(value, convert.EngineEvent)
            return value
        if kind == "error":
            assert isinstance(value, errors.EngineError)
            raise value
        return None

    def close(self) -> None:
        self._stream.close()


class _BlockingStream(Protocol):
    opened_at: float | None

    def __iter__(self) -> _BlockingStream: ...
    def __next__(self) -> convert.EngineEvent: ...
    def close(self) -> None: ...


def endpoint_of(url: str, *, api_version: str, cert: object, verify: object) -> Endpoint | None:
    """The socket endpoint of an engine URL (None for SSH): ``cert`` and ``verify`` are the
    SDK session's TLS settings (a (cert, key) pair; a CA path or a bool)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return Endpoint(unix_path=parts.path, api_version=api_version)
    if parts.scheme not in ("tcp", "http", "https"):
        return None
    context: ssl.SSLContext | None = None
    if cert or parts.scheme == "https" or isinstance(verify, str):
        context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
        if verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if isinstance(cert, tuple) and len(cert) == 2:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
    return Endpoint(
        host=parts.hostname or "localhost",
        port=parts.port or (2376 if context else 2375),
        ssl=context,
        api_version=api_version,
    )
