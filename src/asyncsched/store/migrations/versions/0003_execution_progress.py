"""Execution progress: ``asyncsched_task_executions.progress`` and ``progress_at``.

The latest progress a job reported (``current_job().progress()``), kept by the Recorder from the
lifecycle stream's ``progress`` records. Existing rows keep ``NULL`` (no progress reported).

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


def upgrade() -> None:
    with op.batch_alter_table("asyncsched_task_executions") as batch:
        batch.add_column(sa.Column("progress", sa.JSON(none_as_null=True), nullable=True))
        batch.add_column(sa.Column("progress_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("asyncsched_task_executions") as batch:
        batch.drop_column("progress_at")
        batch.drop_column("progress")
