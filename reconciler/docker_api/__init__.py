"""The Docker boundary: the only package that imports ``docker``.

Where this sits in a pass: ``nodes.Node`` refreshes its picture through an :class:`EngineClient`,
the executor acts through the same client, and ``nodes.monitor`` reads :meth:`EngineClient.events`.
Everything that leaves this package is a project value (``reconciler.domain`` or the summaries in
``convert``) or a project error (``reconciler.errors``, raised ``from`` the SDK exception).

Guarantees:

* Every call carries an explicit timeout (the client's ``timeout``; ``ping`` may pass a shorter
  one). The event stream gets a socket read timeout (``idle_timeout``), so a silent stream ends
  with :class:`errors.EventStreamIdle` instead of blocking forever.
* The API version is negotiated (``version="auto"``), so Engine API 1.41 and newer both work.
* Every HTTP request the SDK sends is counted in :attr:`EngineClient.calls` by operation
  (``"GET /containers/json"``), the version negotiation and each event subscription included.
* Errors are classified by exception class and HTTP status (``classify``); message text is read
  only where the Engine API offers nothing else, all in ``classify``: stale tasks, which
  container a 404 names, and the 500s a row's content causes (these count against the row, not
  the node).
* URLs are checked by :func:`check_url` with the parser that connects (``urls``).

Modules: ``client`` (connect, :class:`EngineClient`, :class:`EventStream`), ``convert`` (SDK
dicts to values, container specs to create arguments), ``classify`` (exceptions to errors),
``urls`` (engine URLs), ``engine_api`` (the :class:`EngineAPI` Protocol the executor uses),
``streams`` (event streams read by asyncio, many engines on one thread:
:meth:`EngineClient.open_events`).
"""

from reconciler.docker_api.classify import classify
from reconciler.docker_api.client import (
    CREATE_CONTAINER,
    EVENT_TYPES,
    EVENTS,
    INSPECT_CONTAINER,
    LIST_CONTAINERS,
    LIST_IMAGES,
    PING,
    REMOVE_CONTAINER,
    START_CONTAINER,
    CallCounter,
    EngineClient,
    EventStream,
    FenceClosed,
    connect,
    fenced,
    operation_path,
)
from reconciler.docker_api.convert import ContainerSummary, EngineEvent
from reconciler.docker_api.engine_api import EngineAPI
from reconciler.docker_api.urls import EngineURL, check_url, is_loopback

__all__ = [
    "CREATE_CONTAINER",
    "EVENTS",
    "EVENT_TYPES",
    "INSPECT_CONTAINER",
    "LIST_CONTAINERS",
    "LIST_IMAGES",
    "PING",
    "REMOVE_CONTAINER",
    "START_CONTAINER",
    "CallCounter",
    "ContainerSummary",
    "EngineAPI",
    "EngineClient",
    "EngineEvent",
    "EngineURL",
    "EventStream",
    "FenceClosed",
    "check_url",
    "classify",
    "connect",
    "fenced",
    "is_loopback",
    "operation_path",
]
