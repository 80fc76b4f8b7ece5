"""Engine URLs: parsed once, by the parser that connects, and refused when parsers disagree.

``urllib.parse.urlsplit`` reads ``tcp://192.0.2.2\\@127.0.0.1:23750`` as host ``127.0.0.1``;
docker-py hands the same text to urllib3, which connects to ``192.0.2.2``. A loopback check made
on the first reading would let plain TCP go out to another machine. :func:`check_url` therefore
reads the host the way the connection will (docker-py's ``parse_host``, then urllib3's
``parse_url``), refuses text the two readings disagree on, and makes the plain-TCP decision on
the host that will really be connected to.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import docker.errors
import docker.utils
import urllib3.util

from reconciler import errors

SCHEMES = ("unix", "tcp", "ssh")


@dataclass(frozen=True)
class EngineURL:
    """A checked URL: its scheme, and the host and port a connection goes to (None for unix)."""

    scheme: str
    host: str | None
    port: int | None


def check_url(url: str, *, tls: bool, allow_insecure: bool) -> EngineURL:
    """Check ``url`` and return where it connects; raise :class:`errors.BadEngineURL` if not.

    Refused: another scheme than unix/tcp/ssh; a backslash, whitespace or control character;
    user information in a ``tcp://`` URL; a host that ``urlsplit`` and the connecting parser
    read differently; TLS on anything but ``tcp://``; and, raised as
    :class:`errors.InsecureEngineURL`, plain ``tcp://`` to a host that is not loopback unless
    ``tls`` or ``allow_insecure``.
    """
    if any(c == "\\" or c.isspace() or not c.isprintable() for c in url):
        raise errors.BadEngineURL(
            f"{url!r} contains a backslash, whitespace or a control character; "
            "write the URL plainly (e.g. tcp://host:2376)"
        )
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise errors.BadEngineURL(f"must start with unix://, tcp:// or ssh://, got {url!r}")
    if tls and scheme != "tcp":
        raise errors.BadEngineURL("TLS settings apply to tcp:// URLs only")
    split = urlsplit(url)
    if scheme == "unix":
        if not split.path or split.netloc:
            raise errors.BadEngineURL(f"unix:// needs a socket path (unix:///path), got {url!r}")
        return EngineURL(scheme, None, None)
    connects = _connected_host(url, scheme=scheme, tls=tls)
    if not split.hostname or connects.host is None:
        raise errors.BadEngineURL(f"{scheme}:// needs a host, got {url!r}")
    if scheme == "tcp" and connects.auth is not None:
        raise errors.BadEngineURL(f"tcp:// URLs take no user name or password, got {url!r}")
    host = connects.host.strip("[]").lower()
    if host != split.hostname.lower() or connects.port != split.port:
        raise errors.BadEngineURL(
            f"{url!r} is ambiguous: it could mean host {split.hostname} or {host}; "
            "write the URL plainly (e.g. tcp://host:2376)"
        )
    if scheme == "tcp" and not tls and not allow_insecure and not is_loopback(host):
        raise errors.InsecureEngineURL(
            f"plain TCP to {host} would let anyone on the network run containers; use TLS "
            "(CA, client certificate and key), or allow insecure TCP if the network is trusted"
        )
    return EngineURL(scheme, host, connects.port)


def _connected_host(url: str, *, scheme: str, tls: bool) -> urllib3.util.Url:
    """The URL as the connection reads it: docker-py's rewrite, parsed by urllib3."""
    try:
        base = docker.utils.parse_host(url, tls=tls) if scheme == "tcp" else url
        return urllib3.util.parse_url(str(base))
    except (docker.errors.DockerException, urllib3.exceptions.LocationParseError) as e:
        raise errors.BadEngineURL(f"cannot read {url!r} as an engine URL: {e}") from None


def is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback IP address (``127.0.0.0/8``, ``::1``)."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
