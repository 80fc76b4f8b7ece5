"""A small HTTP/1.1 server on asyncio streams: what the docker SDK (requests + urllib3) sends.

Keep-alive connections, ``Content-Length`` and chunked request bodies, fixed-length responses
and chunked streaming responses (the event stream, image pulls). Nothing else: no TLS, no
``Expect: 100-continue``, no pipelining beyond answering requests in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote

_MAX_LINE = 64 * 1024
_MAX_HEADERS = 100


@dataclass(slots=True)
class Request:
    method: str
    #: The path without query string, percent-decoded (version prefix still there).
    path: str
    #: Query parameters; the last value of a repeated key wins (Go's ``Form.Get`` takes the first,
    #: but the SDK never repeats one).
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


class ChunkWriter:
    """Writes one HTTP chunk per call (dockerd flushes one chunk per event)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, data: bytes) -> None:
        if data:
            self._writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await self._writer.drain()


#: A streaming body: gets the chunk writer and a future that completes when the client hangs up.
StreamBody = Callable[[ChunkWriter, "asyncio.Future[bytes]"], Awaitable[None]]


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    #: When set, the body is sent chunked by this coroutine (``body`` is ignored).
    stream: StreamBody | None = None


Handler = Callable[[Request], Awaitable[Response]]

_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The ``Date`` header value, computed once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    line = await reader.readline()
    if not line:
        return None
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3:
        raise ValueError(f"bad request line {line[:100]!r}")
    method, target, _version = parts
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    path, _, query = target.partition("?")
    body = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        pieces = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()  # the blank line after the last chunk (no trailers)
                break
            pieces.append(await reader.readexactly(size))
            await reader.readline()
        body = b"".join(pieces)
    elif length := int(headers.get("content-length") or 0):
        body = await reader.readexactly(length)
    return Request(
        method=method,
        path=unquote(path),
        query=dict(parse_qsl(query, keep_blank_values=True)),
        headers=headers,
        body=body,
    )


def _head(status: int, headers: dict[str, str]) -> bytes:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handler: Handler,
    base_headers: Callable[[], dict[str, str]],
) -> None:
    """Answer requests on one connection until the client closes it."""
    try:
        while True:
            try:
                request = await _read_request(reader)
            except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            if request is None:
                return
            response = await handler(request)
            headers = base_headers()
            headers.update(response.headers)
            if response.content_type and response.status not in (204, 304):
                headers["Content-Type"] = response.content_type
            if response.stream is not None:
                headers["Transfer-Encoding"] = "chunked"
                writer.write(_head(response.status, headers))
                await writer.drain()
                hangup: asyncio.Future[bytes] = asyncio.ensure_future(reader.read())
                try:
                    await response.stream(ChunkWriter(writer), hangup)
                finally:
                    if not hangup.done():
                        hangup.cancel()
                if hangup.done() and not hangup.cancelled():
                    return  # the client went away (or sent more than we will read)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                continue
            if response.status not in (204, 304):
                headers["Content-Length"] = str(len(response.body))
            body = b"" if request.method == "HEAD" else response.body
            writer.write(_head(response.status, headers) + body)
            await writer.drain()
            if request.headers.get("connection", "").lower() == "close":
                return
    except (ConnectionError, OSError):
        return
    finally:
        with contextlib.suppress(Exception):
            writer.close()
