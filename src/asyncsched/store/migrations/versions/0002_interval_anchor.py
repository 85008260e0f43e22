"""Interval anchor: ``asyncsched_scheduled_tasks.anchor_at`` (ticks count from registration).

Existing rows keep ``NULL`` (their ticks stay aligned to the Unix epoch, as before); tasks registered or
re-planned from now on count from their registration.

Revision ID: 0002_interval_anchor
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_interval_anchor"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("asyncsched_scheduled_tasks") as batch:
        batch.add_column(sa.Column("anchor_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("asyncsched_scheduled_tasks") as batch:
        batch.drop_column("anchor_at")
