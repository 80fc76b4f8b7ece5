"""Services and the container lifecycle: replicas, rolling updates, restart policy, health.

Adds ``services`` (user-owned: the container spec columns of ``desired_containers`` plus
``replicas`` and the ``update_*`` columns, defaults as swarm mode's) and ``service_status``
(controller-owned: replica counts, the rolling update's state, and the target and previous
specs kept durably so a restarted controller continues an update or rollback). Both
``desired_containers`` and ``services`` gain ``restart`` (``always`` | ``on-failure`` |
``never``) and ``healthcheck`` (JSON, NULL = the image's). ``container_status`` gains
``service``, ``health`` and ``restarts``, and the phase ``completed`` (a container that exited 0
and is not restarted).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_NOW = sa.text("CURRENT_TIMESTAMP")
_OLD_PHASES = "phase IN ('pending', 'running', 'stopped', 'failed', 'unschedulable', 'unknown')"
_NEW_PHASES = (
    "phase IN ('pending', 'running', 'stopped', 'failed', 'unschedulable', 'unknown', 'completed')"
)
_UPDATE_STATES = (
    "update_state IN ('completed', 'updating', 'paused', 'rollback_started',"
    " 'rollback_completed', 'rollback_paused')"
)


def _lifecycle_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("restart", sa.String(16), nullable=False, server_default=sa.text("'always'")),
        sa.Column("healthcheck", _JSON, nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("image", sa.Text, nullable=False),
        sa.Column("command", _JSON, nullable=True),
        sa.Column("entrypoint", _JSON, nullable=True),
        sa.Column("env", _JSON, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("labels", _JSON, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("ports", _JSON, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("mounts", _JSON, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("network", sa.Text, nullable=True),
        sa.Column("cpus", sa.Float, nullable=True),
        sa.Column("memory_bytes", sa.BigInteger, nullable=True),
        sa.Column("user", sa.Text, nullable=True),
        sa.Column("workdir", sa.Text, nullable=True),
        sa.Column("stop_timeout", sa.Integer, nullable=True),
        *_lifecycle_columns(),
        sa.Column("replicas", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("update_parallelism", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("update_delay_seconds", sa.Float, nullable=False, server_default=sa.text("0")),
        sa.Column("update_monitor_seconds", sa.Float, nullable=False, server_default=sa.text("5")),
        sa.Column(
            "update_failure_action",
            sa.String(16),
            nullable=False,
            server_default=sa.text("'pause'"),
        ),
        sa.Column(
            "update_order", sa.String(16), nullable=False, server_default=sa.text("'stop-first'")
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_services")),
        sa.UniqueConstraint("name", name=op.f("uq_services_name")),
    )
    op.create_table(
        "service_status",
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("replicas_desired", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("replicas_running", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("replicas_updated", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column(
            "update_state",
            sa.String(24),
            nullable=False,
            server_default=sa.text("'completed'"),
        ),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("spec", _JSON, nullable=True),
        sa.Column("previous_spec", _JSON, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_service_status")),
        sa.CheckConstraint(_UPDATE_STATES, name=op.f("ck_service_status_update_state_known")),
    )
    # Plain ALTER TABLE (not batch): recreating desired_containers on SQLite would drop its
    # change-counter triggers (0002).
    for column in _lifecycle_columns():
        op.add_column("desired_containers", column)
    with op.batch_alter_table("container_status") as batch:
        batch.add_column(sa.Column("service", sa.String(253), nullable=True))
        batch.add_column(sa.Column("health", sa.String(16), nullable=True))
        batch.add_column(
            sa.Column("restarts", sa.Integer, nullable=False, server_default=sa.text("0"))
        )
        batch.drop_constraint(op.f("ck_container_status_phase_known"), type_="check")
        batch.create_check_constraint(op.f("ck_container_status_phase_known"), _NEW_PHASES)


def downgrade() -> None:
    op.execute("UPDATE container_status SET phase = 'stopped' WHERE phase = 'completed'")
    with op.batch_alter_table("container_status") as batch:
        batch.drop_constraint(op.f("ck_container_status_phase_known"), type_="check")
        batch.create_check_constraint(op.f("ck_container_status_phase_known"), _OLD_PHASES)
        batch.drop_column("restarts")
        batch.drop_column("health")
        batch.drop_column("service")
    for column in ("healthcheck", "restart"):
        op.execute(f"ALTER TABLE desired_containers DROP COLUMN {column}")
    op.drop_table("service_status")
    op.drop_table("services")
