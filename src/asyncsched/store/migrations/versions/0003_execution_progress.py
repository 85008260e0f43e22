"""Execution progress and a partial status index.

* ``asyncsched_task_executions.progress`` and ``progress_at``: the latest progress a job reported
  (``current_job().progress()``), kept by the Recorder from the lifecycle stream's ``progress`` records;
  existing rows keep ``NULL`` (no progress reported).
* ``ix_task_execution_unfinished_created`` replaces the full status index: only executions that did not
  succeed (``status <> 'success'``) have an entry, so most rows cost none; lists filtered by another
  status name the predicate and still use it, a filter on ``success`` walks the ``created_at`` index.

Revision ID: 0003_execution_progress
Revises: 0002_interval_anchor
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_execution_progress"
down_revision = "0002_interval_anchor"
branch_labels = None
depends_on = None

_TABLE = "asyncsched_task_executions"
_WHERE = "status <> 'success'"


def upgrade() -> None:
    with op.batch_alter_table(_TABLE) as batch:
        batch.add_column(sa.Column("progress", sa.JSON(none_as_null=True), nullable=True))
        batch.add_column(sa.Column("progress_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_index("ix_task_execution_status_created", table_name=_TABLE)
    op.create_index(
        "ix_task_execution_unfinished_created",
        _TABLE,
        ["status", "created_at"],
        postgresql_where=sa.text(_WHERE),
        sqlite_where=sa.text(_WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_task_execution_unfinished_created", table_name=_TABLE)
    op.create_index("ix_task_execution_status_created", _TABLE, ["status", "created_at"])
    with op.batch_alter_table(_TABLE) as batch:
        batch.drop_column("progress_at")
        batch.drop_column("progress")
