"""Installation identity: which reconciler database owns a container.

Adds ``installation``, one row created by this upgrade: ``id`` (a random UUID) and
``created_at``. The controller labels every container it creates with
``reconciler.installation=<id>`` and treats containers labelled with another installation's id
as unmanaged, so a second reconciler database pointed at the same engine no longer removes the
first one's containers as orphans. Containers created before this revision carry no such label:
the installation that next sees them adopts them (and labels them when it recreates them).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "installation",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        ),
        sa.PrimaryKeyConstraint("id", name="pk_installation"),
    )
    op.bulk_insert(table, [{"id": str(uuid.uuid4())}])


def downgrade() -> None:
    op.drop_table("installation")
