"""Scheduling: placement constraints, rescheduling policy, node drain, node usage.

Adds to ``desired_containers`` (user-owned) ``constraints`` (a JSON array of ``KEY==VALUE`` /
``KEY!=VALUE`` strings, default ``[]``) and ``reschedule`` (``on-node-failure`` or ``never``);
to ``nodes`` the user-owned ``drain`` (default false) and the controller-owned
``unhealthy_since`` (when ``health`` last became ``unhealthy``; NULL while it is not),
``reserved_cpus``, ``reserved_memory_bytes``, ``managed_running`` and ``managed_total``.

Columns are added and dropped with plain ``ALTER TABLE`` on both dialects (SQLite 3.35+ drops
columns natively), so ``desired_containers`` is never recreated and keeps its triggers (0002).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")

_COLUMNS = {
    "desired_containers": [
        sa.Column("constraints", _JSON, nullable=False, server_default=sa.text("'[]'")),
        sa.Column(
            "reschedule",
            sa.String(32),
            nullable=False,
            server_default=sa.text("'on-node-failure'"),
        ),
    ],
    "nodes": [
        sa.Column("drain", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("unhealthy_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reserved_cpus", sa.Float, nullable=True),
        sa.Column("reserved_memory_bytes", sa.BigInteger, nullable=True),
        sa.Column("managed_running", sa.Integer, nullable=True),
        sa.Column("managed_total", sa.Integer, nullable=True),
    ],
}


def upgrade() -> None:
    for table, columns in _COLUMNS.items():
        for column in columns:
            op.add_column(table, column)


def downgrade() -> None:
    for table, columns in _COLUMNS.items():
        for column in reversed(columns):
            op.execute(f'ALTER TABLE {table} DROP COLUMN "{column.name}"')
