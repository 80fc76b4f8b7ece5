"""The user-owned side of the ``nodes`` table: list, add, remove, cordon.

The controller-owned columns (health, engine facts) are written by ``db.node_state``.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from reconciler.db import models
from reconciler.types import NodeName, NodeRow

_t = models.nodes


def _labels(raw: object) -> dict[str, str]:
    """Node labels as a dict of strings; a malformed value reads as no labels."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): str(v) for k, v in raw.items()}


def list_nodes(conn: sa.Connection) -> list[NodeRow]:
    """Every node row, ordered by name."""
    rows = conn.execute(
        sa.select(
            _t.c.name,
            _t.c.url,
            sa.cast(_t.c.labels, sa.Text).label("labels"),
            _t.c.schedulable,
            _t.c.tls_ca_cert,
            _t.c.tls_client_cert,
            _t.c.tls_client_key,
            _t.c.allow_insecure_tcp,
        ).order_by(_t.c.name)
    )
    return [
        NodeRow(
            name=NodeName(r.name),
            url=r.url,
            labels=_labels(r.labels),
            schedulable=bool(r.schedulable),
            tls_ca_cert=r.tls_ca_cert,
            tls_client_cert=r.tls_client_cert,
            tls_client_key=r.tls_client_key,
            allow_insecure_tcp=bool(r.allow_insecure_tcp),
        )
        for r in rows
    ]
