"""Partial status index: ``ix_task_execution_unfinished_created`` replaces the full status index.

Executions that succeeded (most of them) no longer cost an index entry: the Recorder writes faster. Lists
filtered by another status name the index's predicate (``status <> 'success'``) and still use it; a filter
on ``success`` (most rows) walks the ``created_at`` index.

Revision ID: 0004_partial_status_index
Revises: 0003_execution_progress
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_partial_status_index"
down_revision = "0003_execution_progress"
branch_labels = None
depends_on = None

_TABLE = "asyncsched_task_executions"
_WHERE = "status <> 'success'"


def upgrade() -> None:
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
