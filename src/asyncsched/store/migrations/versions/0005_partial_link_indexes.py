"""The agent and task page indexes of the executions hold only rows that have an agent / a task.

``ix_task_execution_agent_page`` and ``ix_task_execution_task_page`` become partial (``agent_name IS NOT
NULL``, ``scheduled_task_id IS NOT NULL``): an ad-hoc job (no agent, no scheduled task: most of the
history at high rates) costs the Recorder no entry in them. A list filtered by agent or task (``= :value``
implies ``IS NOT NULL``) still reads its page off the same index on both databases, and so does the
foreign key's ``ON DELETE SET NULL`` of a deleted task.

Revision ID: 0005_partial_link_indexes
Revises: 0004_execution_progress
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

_INDEXES = {"ix_task_execution_agent_page": "agent_name", "ix_task_execution_task_page": "scheduled_task_id"}
_TABLE, _ORDER = "asyncsched_task_executions", ["created_at", "job_id", "attempt"]

revision, down_revision = "0005_partial_link_indexes", "0004_execution_progress"
branch_labels = depends_on = None


def upgrade() -> None:
    for name, column in _INDEXES.items():
        op.drop_index(name, table_name=_TABLE)
        where = text(f"{column} IS NOT NULL")
        op.create_index(name, _TABLE, [column, *_ORDER], postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    for name, column in _INDEXES.items():
        op.drop_index(name, table_name=_TABLE)
        op.create_index(name, _TABLE, [column, *_ORDER])
