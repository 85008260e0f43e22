"""History page indexes: each ``asyncsched_task_executions`` list index ends with the list's whole order.

The history is listed newest first by ``(created_at, job_id, attempt)``, optionally filtered by one of
``agent_name``, ``status``, ``scheduled_task_id`` or ``queue``. The indexes of 0001 ended at
``created_at``, so every page sorted the rows of each timestamp again (an incremental sort over every
row before a deep ``OFFSET``); these end with the whole order, so a page is read straight off one index.

Revision ID: 0003_history_page_indexes
Revises: 0002_interval_anchor
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0003_history_page_indexes"
down_revision = "0002_interval_anchor"
branch_labels = None
depends_on = None

_TABLE = "asyncsched_task_executions"
_ORDER = ["created_at", "job_id", "attempt"]
_FILTERS = {
    "": [],
    "agent_": ["agent_name"],
    "status_": ["status"],
    "task_": ["scheduled_task_id"],
    "queue_": ["queue"],
}


def upgrade() -> None:
    for prefix, columns in _FILTERS.items():
        op.drop_index(f"ix_task_execution_{prefix}created", _TABLE)
        op.create_index(f"ix_task_execution_{prefix}page", _TABLE, [*columns, *_ORDER])


def downgrade() -> None:
    for prefix, columns in _FILTERS.items():
        op.drop_index(f"ix_task_execution_{prefix}page", _TABLE)
        op.create_index(f"ix_task_execution_{prefix}created", _TABLE, [*columns, "created_at"])
