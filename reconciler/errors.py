"""Project errors: what went wrong, on which node, and whether trying again can help.

Every failure that crosses a layer is one of these. ``reconciler.docker_api`` turns SDK and
transport exceptions into them (``raise ... from e``), classified by exception class and HTTP
status code; the rest of the code decides what to do from two class-level facts:

``temporary``
    Retrying later, with backoff, may succeed (engine unreachable, timeout, 5xx). A permanent
    error is reported and not hammered (a 4xx, a refused insecure URL).
``connection_failure``
    The engine could not be talked to at all (refused, timed out, TLS or SSH refused).
``engine_fault``
    The failure lies with the engine itself, not with what was asked of it: only these count
    against a node's health. Connection failures are engine faults; so is a 5xx that does not
    depend on the request. Everything a request's content causes (a 4xx, an unknown user, a port
    already allocated, a request too large, a stale task of one container) counts against the
    row that asked, never the node: six bad rows must not take a healthy engine out of service.
"""

from __future__ import annotations

from typing import ClassVar


class ReconcilerError(Exception):
    """Base of every project error."""

    #: Retrying later may succeed. A class default; ``EngineAPIError`` sets it per status code.
    temporary: bool = False
    #: The engine could not be talked to at all.
    connection_failure: ClassVar[bool] = False
    #: The engine itself failed (counts against the node's health); a class default that
    #: ``EngineAPIError`` sets per answer.
    engine_fault: bool = False


class ConfigurationError(ReconcilerError):
    """A setting or a row that cannot work as written (e.g. an unknown URL scheme)."""


class EngineError(ReconcilerError):
    """A failure talking to one Docker engine; ``node`` names it (may be empty if unknown).

    Used as such only for failures nothing more specific describes; they count against the node.
    """

    temporary = True
    engine_fault = True

    def __init__(self, message: str, *, node: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.node = node

    def __str__(self) -> str:
        return self.message


class EngineUnreachable(EngineError):
    """Connection refused or reset, socket missing, DNS failure, SSH transport failure."""

    temporary = True
    connection_failure = True


class EngineTimeout(EngineError):
    """The engine accepted the connection but did not answer in time (hung or overloaded)."""

    temporary = True
    connection_failure = True


class EventStreamIdle(EngineTimeout):
    """The event stream delivered nothing for its idle timeout; the caller probes and resubscribes.

    Not a failure by itself: a healthy idle engine sends no events.
    """

    connection_failure = False
    engine_fault = False


class TLSVerificationFailed(EngineError):
    """The engine's certificate did not verify against the node's CA (or names another host).

    Permanent until someone fixes the certificates, but health still retries it with capped
    backoff, so a fixed engine is picked up without a restart.
    """

    temporary = False
    connection_failure = True


class TLSError(EngineError):
    """Any other TLS failure: handshake refused (e.g. no client certificate), bad key files."""

    temporary = False
    connection_failure = True


class NodeConfigurationError(EngineError):
    """The node row cannot work as written: unknown URL scheme, unreadable TLS files."""

    temporary = False
    connection_failure = True


class InsecureTransportRefused(NodeConfigurationError):
    """Plain ``tcp://`` to a non-loopback host without TLS, and the row does not allow it."""


class SSHAuthenticationFailed(EngineError):
    """The SSH server rejected reconciler's credentials."""

    temporary = False
    connection_failure = True


class EngineAPIError(EngineError):
    """The engine answered with an HTTP error; 5xx is temporary, 4xx permanent.

    A 4xx is about the request, never the engine. A 5xx is an engine fault unless
    ``docker_api.classify`` recognised it as caused by the request (``RequestRejected``).
    """

    def __init__(self, message: str, *, node: str = "", status: int | None = None) -> None:
        super().__init__(message, node=node)
        self.status = status
        self.temporary = status is None or status >= 500
        self.engine_fault = status is None or status >= 500


class RequestRejected(EngineAPIError):
    """The engine refused this request because of its content, whatever status it chose.

    dockerd answers 500 to a start whose ``user`` is not in the image, whose port is taken or
    whose request exceeds containerd's message limit: the row is at fault, not the engine.
    Temporary (the row backs off and retries: a port may be freed), never counted against the
    node.
    """

    def __init__(self, message: str, *, node: str = "", status: int | None = None) -> None:
        super().__init__(message, node=node, status=status)
        self.engine_fault = False


class NotFound(EngineAPIError):
    """404: something the request names does not exist (a network, an image, a container).

    Only :class:`ContainerNotFound` means the container acted on is gone: a start answers 404
    for a missing network or a missing ``container:`` network target too.
    """


class ContainerNotFound(NotFound):
    """404 ``No such container`` naming the very container the request was about: it is gone."""


class ImageNotFound(NotFound):
    """404 for an image: permanent until the node's images change."""


class ImagePullFailed(EngineAPIError):
    """A registry refused or failed a pull (wrong password, no such image or tag, registry
    unreachable, pull timeout), in the registry's own words.

    The row's failure, not the engine's: never counted against the node. Temporary: the row
    backs off and retries (a password may be fixed, a registry may come back).
    """

    def __init__(self, message: str, *, node: str = "", status: int | None = None) -> None:
        super().__init__(message, node=node, status=status)
        self.temporary = True
        self.engine_fault = False


class NameConflict(EngineAPIError):
    """409 on create: a container with that name already exists (adopt it if it is ours)."""


class StaleTask(EngineAPIError):
    """``task … already exists`` on start (dockerd 20.10 after a restart): recreate the container.

    dockerd answers ``id already in use`` (409) when containerd still holds the container from
    before a restart, and ``task … already exists`` (500) when it holds its task. Starting again
    does not help; removing and recreating does. Permanent for this container, whatever the
    status code dockerd chose, and never counted against the node.
    """

    def __init__(self, message: str, *, node: str = "", status: int | None = None) -> None:
        super().__init__(message, node=node, status=status)
        self.temporary = False
        self.engine_fault = False


class BadEngineURL(ConfigurationError, ValueError):
    """An engine URL reconciler will not connect to as written (``docker_api.check_url``)."""


class InsecureEngineURL(BadEngineURL):
    """Plain ``tcp://`` to a host that is not loopback, without TLS and without permission."""
