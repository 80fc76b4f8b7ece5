"""The initial SQL contract.

Tables: nodes, desired_containers, container_status, observed_containers, observed_images, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

A revision is frozen history: it never imports reconciler's models. Column types, server
defaults and constraint names (the metadata's naming convention, spelled out with ``op.f``) are
written here as they were when this revision was made.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: JSON stored as text on SQLite and as ``jsonb`` on PostgreSQL.
Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

EMPTY_OBJECT = sa.text("'{}'")
EMPTY_ARRAY = sa.text("'[]'")
NOW = sa.text("CURRENT_TIMESTAMP")


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("labels", Json, server_default=EMPTY_OBJECT, nullable=False),
        sa.Column("schedulable", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("tls_ca_cert", sa.Text(), nullable=True),
        sa.Column("tls_client_cert", sa.Text(), nullable=True),
        sa.Column("tls_client_key", sa.Text(), nullable=True),
        sa.Column(
            "allow_insecure_tcp", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column(
            "health", sa.String(length=16), server_default=sa.text("'pending'"), nullable=False
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "consecutive_failures", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("engine_id", sa.Text(), nullable=True),
        sa.Column("engine_name", sa.Text(), nullable=True),
        sa.Column("engine_version", sa.Text(), nullable=True),
        sa.Column("api_version", sa.Text(), nullable=True),
        sa.Column("os", sa.Text(), nullable=True),
        sa.Column("cpus", sa.Integer(), nullable=True),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=True),
        sa.Column("engine_labels", Json, server_default=EMPTY_OBJECT, nullable=False),
        *_timestamps(),
        sa.CheckConstraint(
            "health IN ('pending', 'healthy', 'unhealthy')", name=op.f("ck_nodes_health_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nodes")),
        sa.UniqueConstraint("name", name=op.f("uq_nodes_name")),
    )
    op.create_table(
        "desired_containers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("image", sa.Text(), nullable=False),
        sa.Column("command", Json, nullable=True),
        sa.Column("entrypoint", Json, nullable=True),
        sa.Column("env", Json, server_default=EMPTY_OBJECT, nullable=False),
        sa.Column("labels", Json, server_default=EMPTY_OBJECT, nullable=False),
        sa.Column("node", sa.String(length=253), nullable=True),
        sa.Column(
            "state", sa.String(length=16), server_default=sa.text("'running'"), nullable=False
        ),
        sa.Column("ports", Json, server_default=EMPTY_ARRAY, nullable=False),
        sa.Column("mounts", Json, server_default=EMPTY_ARRAY, nullable=False),
        sa.Column("network", sa.Text(), nullable=True),
        sa.Column("cpus", sa.Float(), nullable=True),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=True),
        sa.Column("user", sa.Text(), nullable=True),
        sa.Column("workdir", sa.Text(), nullable=True),
        sa.Column("stop_timeout", sa.Integer(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_desired_containers")),
        sa.UniqueConstraint("name", name=op.f("uq_desired_containers_name")),
    )
    op.create_table(
        "container_status",
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("node", sa.String(length=253), nullable=True),
        sa.Column("container_id", sa.String(length=64), nullable=True),
        sa.Column(
            "phase", sa.String(length=16), server_default=sa.text("'pending'"), nullable=False
        ),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("spec_hash", sa.String(length=64), nullable=True),
        sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "phase IN ('pending', 'running', 'stopped', 'failed', 'unschedulable', 'unknown')",
            name=op.f("ck_container_status_phase_known"),
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_container_status")),
    )
    op.create_table(
        "observed_containers",
        sa.Column("node", sa.String(length=253), nullable=False),
        sa.Column("container_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("image", sa.Text(), nullable=False),
        sa.Column("image_id", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("managed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("desired_name", sa.Text(), nullable=True),
        sa.Column("spec_hash", sa.String(length=64), nullable=True),
        sa.Column("labels", Json, server_default=EMPTY_OBJECT, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("node", "container_id", name=op.f("pk_observed_containers")),
    )
    op.create_table(
        "observed_images",
        sa.Column("node", sa.String(length=253), nullable=False),
        sa.Column("image_id", sa.String(length=128), nullable=False),
        sa.Column("tags", Json, server_default=EMPTY_ARRAY, nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("node", "image_id", name=op.f("pk_observed_images")),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("type", sa.String(length=16), server_default=sa.text("'Normal'"), nullable=False),
        sa.Column("object", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_time"), "events", ["time"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_events_time"), table_name="events")
    op.drop_table("events")
    op.drop_table("observed_images")
    op.drop_table("observed_containers")
    op.drop_table("container_status")
    op.drop_table("desired_containers")
    op.drop_table("nodes")
