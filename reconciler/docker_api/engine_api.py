"""``EngineAPI``: what the executor asks of one engine, as a Protocol.

:class:`reconciler.docker_api.EngineClient` implements it against a real dockerd; tests script a
fake that implements it too, so the executor's recovery paths (adopt on a name conflict, stale
tasks, a container gone before start) can be driven step by step. Every method raises an
:class:`reconciler.errors.EngineError` subclass, classified as ``docker_api.classify`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from reconciler import domain


class EngineAPI(Protocol):
    """The container operations of one engine that a plan is carried out with."""

    @property
    def node(self) -> domain.NodeName:
        """The node this engine is registered as."""
        ...

    def create_container(
        self, spec: domain.ContainerSpec, *, labels: Mapping[str, str]
    ) -> domain.ContainerId:
        """Create (not start) ``spec``; :class:`errors.NameConflict` when the name is taken."""
        ...

    def inspect_container(self, container_id: str) -> domain.ObservedContainer:
        """One container by id or name; :class:`errors.ContainerNotFound` when it is gone."""
        ...

    def start(self, container_id: str) -> None:
        """Start; :class:`errors.StaleTask` means remove and recreate, and
        :class:`errors.ContainerNotFound` that the container is gone."""
        ...

    def stop(self, container_id: str, *, timeout: int = 10) -> None:
        """Stop gracefully, killing after ``timeout`` s."""
        ...

    def remove(self, container_id: str, *, force: bool = True) -> None:
        """Remove (``force``: even if running); :class:`errors.ContainerNotFound` if gone."""
        ...

    def rename(self, container_id: str, name: str) -> None:
        """Give the container the Docker name ``name``; :class:`errors.NameConflict` if taken."""
        ...

    def pull_image(self, image: str, *, auth: Mapping[str, Any] | None, timeout: float) -> int:
        """Pull ``image`` (registry credentials ``auth``) within ``timeout`` s; return the layers
        downloaded. :class:`errors.ImagePullFailed` carries the registry's message."""
        ...
