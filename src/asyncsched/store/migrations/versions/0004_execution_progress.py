"""Execution progress and a partial status index.

* ``asyncsched_task_executions.progress`` and ``progress_at``: the latest progress a job reported
  (``current_job().progress()``), kept by the Recorder from the lifecycle stream's ``progress`` records;
  existing rows keep ``NULL`` (no progress reported).
* ``ix_task_execution_unfinished_page`` replaces the full status index (``ix_task_execution_status_page``):
  only executions that did not succeed (``status <> 'success'``) have an entry, so most rows cost none;
  lists filtered by another status name the predicate and still use it, a filter on ``success`` walks
  ``ix_task_execution_page``.

Revision ID: 0004_execution_progress
Revises: 0003_history_page_indexes
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_execution_progress"
down_revision = "0003_history_page_indexes"
branch_labels = depends_on = None

_TABLE = "asyncsched_task_executions"
_WHERE = "status <> 'success'"
_COLUMNS = ["status", "created_at", "job_id", "attempt"]


def upgrade() -> None:
    with op.batch_alter_table(_TABLE) as batch:
        batch.add_column(sa.Column("progress", sa.JSON(none_as_null=True), nullable=True))
        batch.add_column(sa.Column("progress_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_index("ix_task_execution_status_page", table_name=_TABLE)
    op.create_index(
        "ix_task_execution_unfinished_page",
        _TABLE,
        _COLUMNS,
        postgresql_where=sa.text(_WHERE),
        sqlite_where=sa.text(_WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_task_execution_unfinished_page", table_name=_TABLE)
    op.create_index("ix_task_execution_status_page", _TABLE, _COLUMNS)
    with op.batch_alter_table(_TABLE) as batch:
        batch.drop_column("progress_at")
        batch.drop_column("progress")
