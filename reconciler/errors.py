"""Project errors: what went wrong, on which node, and whether trying again can help.

Every failure that crosses a layer is one of these. ``reconciler.docker_api`` turns SDK and
transport exceptions into them (``raise ... from e``), classified by exception class and HTTP
status code; the rest of the code decides what to do from two class-level facts:

``temporary``
    Retrying later, with backoff, may succeed (engine unreachable, timeout, 5xx). A permanent
    error is reported and not hammered (a 4xx, a refused insecure URL).
``connection_failure``
    The engine could not be talked to at all. Only these count against a node's health; an API
    answer such as 404 or 409 proves the engine is alive.
"""

from __future__ import annotations

from typing import ClassVar


class ReconcilerError(Exception):
    """Base of every project error."""

    #: Retrying later may succeed. A class default; ``EngineAPIError`` sets it per status code.
    temporary: bool = False
    #: The engine could not be talked to at all (counts against the node's health).
    connection_failure: ClassVar[bool] = False


class ConfigurationError(ReconcilerError):
    """A setting or a row that cannot work as written (e.g. an unknown URL scheme)."""


class EngineError(ReconcilerError):
    """A failure talking to one Docker engine; ``node`` names it (may be empty if unknown)."""

    temporary = True

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
    """The engine answered with an HTTP error; 5xx is temporary, 4xx permanent."""

    def __init__(self, message: str, *, node: str = "", status: int | None = None) -> None:
        super().__init__(message, node=node)
        self.status = status
        self.temporary = status is None or status >= 500


class NotFound(EngineAPIError):
    """404: no such container (or other object). Permanent for that id."""


class ImageNotFound(NotFound):
    """404 for an image: permanent until the node's images change."""


class NameConflict(EngineAPIError):
    """409 on create: a container with that name already exists (adopt it if it is ours)."""


class StaleTask(EngineAPIError):
    """``task … already exists`` on start (dockerd 20.10 after a restart): recreate the container.

    Starting again does not help; removing and recreating does. Permanent for this container,
    whatever the status code dockerd chose.
    """

    def __init__(self, message: str, *, node: str = "", status: int | None = None) -> None:
        super().__init__(message, node=node, status=status)
        self.temporary = False
