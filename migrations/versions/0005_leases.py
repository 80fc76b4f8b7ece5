"""Leases: one leader among several ``reconciler run`` on one database.

Adds ``leases`` (one row per lease; the controllers' lease is ``controller``, created here with
no holder): ``holder`` (the identity of the controller that leads, NULL when released),
``acquired_at``, ``renewed_at`` (stamped with the database's clock), ``duration_seconds`` (how
long the lease lasts after ``renewed_at`` without a renewal) and ``transitions`` (the lease
generation: incremented each time a controller acquires the lease; a controller acts only under
the generation it acquired).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.Text, nullable=True),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Float, nullable=False, server_default=sa.text("15")),
        sa.Column("transitions", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )
    op.bulk_insert(table, [{"name": "controller", "duration_seconds": 15.0, "transitions": 0}])


def downgrade() -> None:
    op.drop_table("leases")
