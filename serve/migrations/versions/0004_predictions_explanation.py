"""The prediction's explanation: column `explanation` of `predictions` (JSON, JSONB on
PostgreSQL; nullable: rows logged before, without ?explain=true, or with
MEDCAST_LOG_EXPLANATIONS off have none).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column without a default: on PostgreSQL (11+) and SQLite a change of the
    # catalogue only, whatever the size of the log.
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("explanation", sa.JSON().with_variant(JSONB(), "postgresql"),
                                   nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("explanation")
