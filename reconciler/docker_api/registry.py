"""Image pulls: registry credentials from a Docker ``config.json``, and the pull stream read.

Credentials follow the ecosystem's convention: the file ``docker login`` writes
(``--docker-config``, else ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``), its
``auths`` entries and credential helpers, read by the SDK's own ``docker.auth``. The file is read
at each pull (a ``docker login`` takes effect without a restart); its contents are sent to the
engine in the ``X-Registry-Auth`` header only, never logged and never stored.

A pull is one streaming request. Its errors come in two shapes: an HTTP error before the stream
(``pull access denied``, 404/500) or an ``error`` object inside it (a failed layer, a wrong
password on some registries). Both become :class:`errors.ImagePullFailed` with the engine's (the
registry's) own words: the row fails and backs off; the node's health is not touched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import docker.auth
import docker.errors
import docker.utils

from reconciler import errors

log = logging.getLogger(__name__)

__all__ = ["auth_for", "read_pull_stream", "split_reference"]


def split_reference(image: str) -> tuple[str, str]:
    """(repository, tag or digest) of ``image``; the tag defaults to ``latest``."""
    repository, tag = docker.utils.parse_repository_tag(image)
    return repository, tag or "latest"


def auth_for(image: str, *, config_path: str | None) -> dict[str, Any] | None:
    """The credentials ``config_path`` (None or empty: Docker's default file) holds for the
    registry of ``image``; None when it holds none (anonymous pull) or there is no file."""
    repository, _ = split_reference(image)
    registry, _ = docker.auth.resolve_repository_name(repository)
    try:
        config = docker.auth.load_config(config_path or None)
        found = docker.auth.resolve_authconfig(config, registry)
    except (OSError, ValueError, docker.errors.DockerException) as e:
        # The message names the file and what is wrong with it, never its contents.
        raise errors.ImagePullFailed(
            f"cannot read registry credentials from {config_path or 'the Docker config'}: "
            f"{type(e).__name__}",
            status=None,
        ) from None
    return dict(found) if found else None


def read_pull_stream(
    items: Iterator[Mapping[str, Any]],
    *,
    image: str,
    node: str,
    deadline: float,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Consume a pull's progress objects; return how many layers were downloaded.

    Raises :class:`errors.ImagePullFailed` on an ``error`` object, and
    :class:`errors.ImagePullFailed` (temporary) once ``deadline`` (monotonic) has passed.
    """
    layers: set[str] = set()
    for item in items:
        if "error" in item:
            raise errors.ImagePullFailed(
                f"pull of {image} failed: {item['error']}", node=node, status=None
            )
        status = str(item.get("status") or "")
        if status in ("Download complete", "Pull complete", "Already exists") and item.get("id"):
            layers.add(str(item["id"]))
        if progress is not None and status:
            progress(f"{status} {item.get('id', '')}".strip())
        if time.monotonic() > deadline:
            raise errors.ImagePullFailed(
                f"pull of {image} did not finish within the pull timeout", node=node, status=None
            )
    return len(layers)
