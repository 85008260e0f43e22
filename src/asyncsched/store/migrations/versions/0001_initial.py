"""Initial schema: scheduled tasks, task executions, event messages.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    _scheduled_tasks()
    _task_executions()
    _event_messages()


def _scheduled_tasks() -> None:
    op.create_table(
        "asyncsched_scheduled_tasks",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("agent_name", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("schedule", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("function", sa.String(500), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("kwargs", sa.JSON(), nullable=False),
        sa.Column("queue", sa.String(200), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(1000), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("last_run_at", _TS, nullable=True),
        sa.Column("next_run_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_asyncsched_scheduled_tasks"),
        sa.UniqueConstraint("agent_name", "name", name="uq_scheduled_task_agent_name"),
    )
    op.create_index("ix_asyncsched_scheduled_tasks_agent_name", "asyncsched_scheduled_tasks", ["agent_name"])
    op.create_index("ix_scheduled_task_next_run", "asyncsched_scheduled_tasks", ["enabled", "next_run_at"])


def _task_executions() -> None:
    op.create_table(
        "asyncsched_task_executions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(200), nullable=False),
        sa.Column("scheduled_task_id", sa.String(32), nullable=True),
        sa.Column("agent_name", sa.String(200), nullable=True),
        sa.Column("task_name", sa.String(200), nullable=True),
        sa.Column("function", sa.String(500), nullable=True),
        sa.Column("queue", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker_name", sa.String(200), nullable=True),
        sa.Column("enqueued_at", _TS, nullable=True),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("result", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_asyncsched_task_executions"),
        sa.UniqueConstraint("job_id", "attempt", name="uq_task_execution_job_attempt"),
        sa.ForeignKeyConstraint(
            ["scheduled_task_id"],
            ["asyncsched_scheduled_tasks.id"],
            name="fk_asyncsched_task_executions_scheduled_task_id",
            ondelete="SET NULL",
        ),
    )
    for name, columns in (
        ("ix_task_execution_created", ["created_at"]),
        ("ix_task_execution_agent_created", ["agent_name", "created_at"]),
        ("ix_task_execution_status_created", ["status", "created_at"]),
        ("ix_task_execution_task_created", ["scheduled_task_id", "created_at"]),
        ("ix_task_execution_queue_created", ["queue", "created_at"]),
    ):
        op.create_index(name, "asyncsched_task_executions", columns)


def _event_messages() -> None:
    op.create_table(
        "asyncsched_event_messages",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("source_agent", sa.String(200), nullable=False),
        sa.Column("target_agent", sa.String(200), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_asyncsched_event_messages"),
    )
    for name, columns in (
        ("ix_event_message_type_created", ["event_type", "created_at"]),
        ("ix_asyncsched_event_messages_source_agent", ["source_agent"]),
        ("ix_asyncsched_event_messages_target_agent", ["target_agent"]),
        ("ix_asyncsched_event_messages_created_at", ["created_at"]),
    ):
        op.create_index(name, "asyncsched_event_messages", columns)


def downgrade() -> None:
    op.drop_table("asyncsched_event_messages")
    op.drop_table("asyncsched_task_executions")
    op.drop_table("asyncsched_scheduled_tasks")
