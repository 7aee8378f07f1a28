"""The prediction interval's bounds: columns `lower` and `upper` of `predictions` (nullable:
rows logged before, or by a model without intervals, have none).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("lower", sa.Float(), nullable=True))
        batch.add_column(sa.Column("upper", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("upper")
        batch.drop_column("lower")
