"""Change counters: let the daemon notice desired-row changes within a few hundred ms.

Adds ``change_counters`` (one row per watched table) and triggers on ``desired_containers`` that
bump its generation on every insert, update and delete, however the change was made (CLI,
``sqlite3`` shell, ``psql``, any program). On PostgreSQL the trigger also sends
``NOTIFY reconciler_changes`` so the daemon's ``LISTEN`` wakes at once; on SQLite the daemon
polls ``PRAGMA data_version`` and then reads the counter.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE_OPS = {"insert": "INSERT", "update": "UPDATE", "delete": "DELETE"}


def upgrade() -> None:
    op.create_table(
        "change_counters",
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("table_name", name="pk_change_counters"),
    )
    op.execute(
        "INSERT INTO change_counters (table_name, generation) VALUES ('desired_containers', 0)"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION reconciler_table_changed() RETURNS trigger AS $$
            BEGIN
                UPDATE change_counters SET generation = generation + 1
                    WHERE table_name = TG_TABLE_NAME;
                PERFORM pg_notify('reconciler_changes', TG_TABLE_NAME);
                RETURN NULL;
            END
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            """
            CREATE TRIGGER desired_containers_changed
                AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON desired_containers
                FOR EACH STATEMENT EXECUTE FUNCTION reconciler_table_changed()
            """
        )
    else:
        for suffix, verb in _SQLITE_OPS.items():
            op.execute(
                f"""
                CREATE TRIGGER desired_containers_changed_{suffix}
                    AFTER {verb} ON desired_containers
                BEGIN
                    UPDATE change_counters SET generation = generation + 1
                        WHERE table_name = 'desired_containers';
                END
                """
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS desired_containers_changed ON desired_containers")
        op.execute("DROP FUNCTION IF EXISTS reconciler_table_changed()")
    else:
        for suffix in _SQLITE_OPS:
            op.execute(f"DROP TRIGGER IF EXISTS desired_containers_changed_{suffix}")
    op.drop_table("change_counters")
