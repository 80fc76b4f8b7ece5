"""Operations: image pull policy, status history, the operator's views, status NOTIFY.

* ``desired_containers.pull`` (``missing`` default, ``always``, ``never``): when the row's image
  is pulled onto its node.
* ``status_history``: one row per phase change of a ``container_status`` row (written by the
  controller's store, pruned with the events retention).
* Views ``container_overview`` (one row per desired container: its status, node and node
  health) and ``node_overview`` (one row per node: capacity, what its rows reserve, container
  counts).
* PostgreSQL: a trigger sends ``NOTIFY reconciler_status`` (payload: the row's name) whenever a
  ``container_status`` row is inserted, changed or deleted, so a client can wait for
  convergence without polling.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONTAINER_OVERVIEW = """
CREATE VIEW container_overview AS
SELECT
    d.name AS name,
    d.image AS image,
    d.state AS desired_state,
    d.node AS wanted_node,
    COALESCE(s.phase, 'pending') AS phase,
    s.node AS node,
    s.container_id AS container_id,
    s.message AS message,
    COALESCE(s.failures, 0) AS failures,
    s.next_attempt_at AS next_attempt_at,
    s.updated_at AS status_updated_at,
    n.health AS node_health,
    n.schedulable AS node_schedulable,
    n.last_error AS node_last_error
FROM desired_containers d
LEFT JOIN container_status s ON s.name = d.name
LEFT JOIN nodes n ON n.name = COALESCE(s.node, d.node)
"""

NODE_OVERVIEW = """
CREATE VIEW node_overview AS
SELECT
    n.name AS name,
    n.url AS url,
    n.health AS health,
    n.schedulable AS schedulable,
    n.cpus AS cpus,
    n.memory_bytes AS memory_bytes,
    (SELECT COALESCE(SUM(d.cpus), 0) FROM desired_containers d
        JOIN container_status s ON s.name = d.name WHERE s.node = n.name) AS cpus_reserved,
    (SELECT COALESCE(SUM(d.memory_bytes), 0) FROM desired_containers d
        JOIN container_status s ON s.name = d.name WHERE s.node = n.name) AS memory_reserved_bytes,
    (SELECT COUNT(*) FROM container_status s WHERE s.node = n.name) AS containers,
    (SELECT COUNT(*) FROM container_status s
        WHERE s.node = n.name AND s.phase = 'running') AS running,
    (SELECT COUNT(*) FROM container_status s
        WHERE s.node = n.name AND s.phase = 'failed') AS failed,
    (SELECT COUNT(*) FROM observed_containers o WHERE o.node = n.name) AS observed_containers,
    n.engine_version AS engine_version,
    n.last_seen_at AS last_seen_at,
    n.last_error AS last_error
FROM nodes n
"""

STATUS_NOTIFY_FUNCTION = """
CREATE FUNCTION reconciler_status_changed() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('reconciler_status', OLD.name);
    ELSE
        PERFORM pg_notify('reconciler_status', NEW.name);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""

STATUS_NOTIFY_TRIGGER = """
CREATE TRIGGER container_status_notify
    AFTER INSERT OR UPDATE OR DELETE ON container_status
    FOR EACH ROW EXECUTE FUNCTION reconciler_status_changed()
"""


def upgrade() -> None:
    # Plain ALTER TABLE: a batch would recreate desired_containers on SQLite and drop its
    # change-counter triggers (0002).
    op.add_column(
        "desired_containers",
        sa.Column("pull", sa.String(16), nullable=False, server_default=sa.text("'missing'")),
    )
    op.create_table(
        "status_history",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column(
            "time",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        ),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("previous_phase", sa.String(16), nullable=True),
        sa.Column("node", sa.String(253), nullable=True),
        sa.Column("container_id", sa.String(64), nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_status_history"),
    )
    op.create_index("ix_status_history_name_time", "status_history", ["name", "time"])
    op.create_index("ix_status_history_time", "status_history", ["time"])
    op.execute(CONTAINER_OVERVIEW)
    op.execute(NODE_OVERVIEW)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(STATUS_NOTIFY_FUNCTION)
        op.execute(STATUS_NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER container_status_notify ON container_status")
        op.execute("DROP FUNCTION reconciler_status_changed()")
    op.execute("DROP VIEW node_overview")
    op.execute("DROP VIEW container_overview")
    op.drop_index("ix_status_history_time", table_name="status_history")
    op.drop_index("ix_status_history_name_time", table_name="status_history")
    op.drop_table("status_history")
    op.execute("ALTER TABLE desired_containers DROP COLUMN pull")
