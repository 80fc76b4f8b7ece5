"""The SQL contract: the tables people write desired state into and read status from.

This module is the single description of the schema that the application uses; Alembic
revisions under ``migrations/versions`` create and change the same schema *without* importing
this module, and ``tests/test_migrations.py`` checks that the two agree (what ``alembic check``
does). Change a table here only together with a new revision and the README's SQL section.

Rules the schema keeps, because people write rows with plain SQL:

* Only the essential columns are required (``name`` + ``image``, ``name`` + ``url``); every other
  column has a *server-side* default, so ``INSERT INTO desired_containers (name, image) VALUES
  (...)`` works from ``sqlite3`` and ``psql``.
* JSON columns accept a JSON text literal. The controller reads them as text and parses them
  itself, so a malformed value in one row becomes an error on that row, never a crash.
* User-owned columns carry no CHECK constraints that would reject a row the controller can
  explain better (an unknown ``state`` becomes a ``failed`` status with a message); the
  controller-owned columns do carry them.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

#: JSON stored as text on SQLite and as ``jsonb`` on PostgreSQL.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

EMPTY_OBJECT = sa.text("'{}'")
EMPTY_ARRAY = sa.text("'[]'")
TRUE = sa.text("true")
FALSE = sa.text("false")
NOW = sa.text("CURRENT_TIMESTAMP")

HEALTH_STATES = ("pending", "healthy", "unhealthy")
PHASES = ("pending", "running", "stopped", "failed", "unschedulable", "unknown", "completed")


def _lifecycle() -> list[sa.Column[object]]:
    """``restart`` and ``healthcheck`` (revision 0004): on ``desired_containers`` and
    ``services`` alike."""
    return [
        sa.Column("restart", sa.String(16), nullable=False, server_default=sa.text("'always'")),
        sa.Column("healthcheck", Json, nullable=True),
    ]


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    ]


nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # -- user-owned ---------------------------------------------------------------------
    sa.Column("name", sa.String(253), nullable=False, unique=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("labels", Json, nullable=False, server_default=EMPTY_OBJECT),
    sa.Column("schedulable", sa.Boolean, nullable=False, server_default=TRUE),
    sa.Column("tls_ca_cert", sa.Text, nullable=True),
    sa.Column("tls_client_cert", sa.Text, nullable=True),
    sa.Column("tls_client_key", sa.Text, nullable=True),
    sa.Column("allow_insecure_tcp", sa.Boolean, nullable=False, server_default=FALSE),
    sa.Column("drain", sa.Boolean, nullable=False, server_default=FALSE),
    # -- controller-owned ---------------------------------------------------------------
    sa.Column("health", sa.String(16), nullable=False, server_default=sa.text("'pending'")),
    sa.Column("unhealthy_since", sa.DateTime(timezone=True), nullable=True),
    sa.Column("reserved_cpus", sa.Float, nullable=True),
    sa.Column("reserved_memory_bytes", sa.BigInteger, nullable=True),
    sa.Column("managed_running", sa.Integer, nullable=True),
    sa.Column("managed_total", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("engine_id", sa.Text, nullable=True),
    sa.Column("engine_name", sa.Text, nullable=True),
    sa.Column("engine_version", sa.Text, nullable=True),
    sa.Column("api_version", sa.Text, nullable=True),
    sa.Column("os", sa.Text, nullable=True),
    sa.Column("cpus", sa.Integer, nullable=True),
    sa.Column("memory_bytes", sa.BigInteger, nullable=True),
    sa.Column("engine_labels", Json, nullable=False, server_default=EMPTY_OBJECT),
    *_timestamps(),
    sa.CheckConstraint("health IN ('pending', 'healthy', 'unhealthy')", name="health_known"),
)

desired_containers = sa.Table(
    "desired_containers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(253), nullable=False, unique=True),
    sa.Column("image", sa.Text, nullable=False),
    sa.Column("command", Json, nullable=True),
    sa.Column("entrypoint", Json, nullable=True),
    sa.Column("env", Json, nullable=False, server_default=EMPTY_OBJECT),
    sa.Column("labels", Json, nullable=False, server_default=EMPTY_OBJECT),
    sa.Column("node", sa.String(253), nullable=True),
    sa.Column("state", sa.String(16), nullable=False, server_default=sa.text("'running'")),
    sa.Column("ports", Json, nullable=False, server_default=EMPTY_ARRAY),
    sa.Column("mounts", Json, nullable=False, server_default=EMPTY_ARRAY),
    sa.Column("network", sa.Text, nullable=True),
    sa.Column("cpus", sa.Float, nullable=True),
    sa.Column("memory_bytes", sa.BigInteger, nullable=True),
    sa.Column("user", sa.Text, nullable=True),
    sa.Column("workdir", sa.Text, nullable=True),
    sa.Column("stop_timeout", sa.Integer, nullable=True),
    sa.Column("constraints", Json, nullable=False, server_default=EMPTY_ARRAY),
    sa.Column(
        "reschedule", sa.String(32), nullable=False, server_default=sa.text("'on-node-failure'")
    ),
    #: missing (pull when the node lacks the image), always, never (revision 0007).
    sa.Column("pull", sa.String(16), nullable=False, server_default=sa.text("'missing'")),
    *_timestamps(),
    *_lifecycle(),
)

container_status = sa.Table(
    "container_status",
    metadata,
    sa.Column("name", sa.String(253), primary_key=True),
    sa.Column("node", sa.String(253), nullable=True),
    sa.Column("container_id", sa.String(64), nullable=True),
    sa.Column("phase", sa.String(16), nullable=False, server_default=sa.text("'pending'")),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("spec_hash", sa.String(64), nullable=True),
    sa.Column("failures", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    # -- revision 0004: services and the container lifecycle --
    sa.Column("service", sa.String(253), nullable=True),
    sa.Column("health", sa.String(16), nullable=True),
    sa.Column("restarts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.CheckConstraint(
        "phase IN ('pending', 'running', 'stopped', 'failed', 'unschedulable', 'unknown',"
        " 'completed')",
        name="phase_known",
    ),
)

observed_containers = sa.Table(
    "observed_containers",
    metadata,
    sa.Column("node", sa.String(253), primary_key=True),
    sa.Column("container_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("image", sa.Text, nullable=False),
    sa.Column("image_id", sa.Text, nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("status", sa.Text, nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("managed", sa.Boolean, nullable=False, server_default=FALSE),
    sa.Column("desired_name", sa.Text, nullable=True),
    sa.Column("spec_hash", sa.String(64), nullable=True),
    sa.Column("labels", Json, nullable=False, server_default=EMPTY_OBJECT),
    sa.Column("created", sa.DateTime(timezone=True), nullable=True),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
)

observed_images = sa.Table(
    "observed_images",
    metadata,
    sa.Column("node", sa.String(253), primary_key=True),
    sa.Column("image_id", sa.String(128), primary_key=True),
    sa.Column("tags", Json, nullable=False, server_default=EMPTY_ARRAY),
    sa.Column("size_bytes", sa.BigInteger, nullable=True),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("type", sa.String(16), nullable=False, server_default=sa.text("'Normal'")),
    sa.Column("object", sa.Text, nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("message", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.Index("ix_events_time", "time"),
)

#: One row per phase change of a ``container_status`` row (controller-owned, revision 0007),
#: written by the store with the status row and pruned with the events retention.
status_history = sa.Table(
    "status_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("name", sa.String(253), nullable=False),
    sa.Column("phase", sa.String(16), nullable=False),
    sa.Column("previous_phase", sa.String(16), nullable=True),
    sa.Column("node", sa.String(253), nullable=True),
    sa.Column("container_id", sa.String(64), nullable=True),
    sa.Column("message", sa.Text, nullable=True),
    sa.Index("ix_status_history_name_time", "name", "time"),
    sa.Index("ix_status_history_time", "time"),
)

#: One row per watched table; triggers (revision 0002) bump ``generation`` on every change, and
#: on PostgreSQL also ``NOTIFY reconciler_changes``. The daemon reads it to know, cheaply, whether
#: the desired rows changed since its last pass.
change_counters = sa.Table(
    "change_counters",
    metadata,
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("generation", sa.BigInteger, nullable=False, server_default=sa.text("0")),
)

#: One row: this database's identity, carried by its containers as ``reconciler.installation``
#: (controller-owned; created by the migration that adds the table).
installation = sa.Table(
    "installation",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
)

#: One row per lease (the controllers' lease is ``controller``): who leads, since when, and the
#: lease generation (``transitions``). Controller-owned; written by ``db.leases`` only, with the
#: database's clock (revision 0005).
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.Text, nullable=True),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("duration_seconds", sa.Float, nullable=False, server_default=sa.text("15")),
    sa.Column("transitions", sa.BigInteger, nullable=False, server_default=sa.text("0")),
)

#: A service (revision 0004): ``replicas`` containers ``<name>.<slot>`` of one spec (the spec
#: columns of ``desired_containers``), rolled to a new spec ``update_parallelism`` at a time.
services = sa.Table(
    "services",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(253), nullable=False, unique=True),
    sa.Column("image", sa.Text, nullable=False),
    sa.Column("command", Json, nullable=True),
    sa.Column("entrypoint", Json, nullable=True),
    sa.Column("env", Json, nullable=False, server_default=EMPTY_OBJECT),
    sa.Column("labels", Json, nullable=False, server_default=EMPTY_OBJECT),
    sa.Column("ports", Json, nullable=False, server_default=EMPTY_ARRAY),
    sa.Column("mounts", Json, nullable=False, server_default=EMPTY_ARRAY),
    sa.Column("network", sa.Text, nullable=True),
    sa.Column("cpus", sa.Float, nullable=True),
    sa.Column("memory_bytes", sa.BigInteger, nullable=True),
    sa.Column("user", sa.Text, nullable=True),
    sa.Column("workdir", sa.Text, nullable=True),
    sa.Column("stop_timeout", sa.Integer, nullable=True),
    *_lifecycle(),
    sa.Column("replicas", sa.Integer, nullable=False, server_default=sa.text("1")),
    sa.Column("update_parallelism", sa.Integer, nullable=False, server_default=sa.text("1")),
    sa.Column("update_delay_seconds", sa.Float, nullable=False, server_default=sa.text("0")),
    sa.Column("update_monitor_seconds", sa.Float, nullable=False, server_default=sa.text("5")),
    sa.Column(
        "update_failure_action", sa.String(16), nullable=False, server_default=sa.text("'pause'")
    ),
    sa.Column(
        "update_order", sa.String(16), nullable=False, server_default=sa.text("'stop-first'")
    ),
    *_timestamps(),
)

#: Where each service stands (controller-owned, revision 0004). ``spec`` is the service spec
#: the controller converges the slots to, ``previous_spec`` the one before it (what a rollback
#: returns to): kept here so a restarted controller continues an update or a rollback.
service_status = sa.Table(
    "service_status",
    metadata,
    sa.Column("name", sa.String(253), primary_key=True),
    sa.Column("replicas_desired", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("replicas_running", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("replicas_updated", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("update_state", sa.String(24), nullable=False, server_default=sa.text("'completed'")),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("spec", Json, nullable=True),
    sa.Column("previous_spec", Json, nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.CheckConstraint(
        "update_state IN ('completed', 'updating', 'paused', 'rollback_started',"
        " 'rollback_completed', 'rollback_paused')",
        name="update_state_known",
    ),
)
