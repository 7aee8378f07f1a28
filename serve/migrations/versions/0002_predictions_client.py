"""Audit: who asked. Column `predictions.client` (the client name of the request's key;
nullable, rows written before keep NULL) and an index for `GET /predictions?client=`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:  # SQLite: ADD COLUMN needs no copy
        batch.add_column(sa.Column("client", sa.String(100), nullable=True))
    op.create_index("ix_predictions_client_id", "predictions", ["client", "id"])


def downgrade() -> None:
    op.drop_index("ix_predictions_client_id", table_name="predictions")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("client")
