"""A cheaper row to write: on PostgreSQL `features` and `explanation` become `json` (the text
as written, checked to be JSON) instead of `jsonb` (parsed into a binary form on every
insert), and the index on `model_md5`, which no query of the service or the notebooks uses,
goes. On the 2-core machine a COPY of 1,000 diabetes rows took 11.2-13.4 ms instead of
14.4-17.6 (docs/prediction-log.md, "What a row costs the database"). SQLite keeps its
columns (JSON is text there); the index goes on both.

On PostgreSQL, changing a column's type rewrites the table: on a large log, run
`python -m serve migrate` in a quiet hour (the table is locked while it runs).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON_COLUMNS = ("features", "explanation")


def upgrade() -> None:
    op.drop_index("ix_predictions_model_md5", table_name="predictions")
    if op.get_bind().dialect.name == "postgresql":
        for name in JSON_COLUMNS:
            op.alter_column("predictions", name, type_=sa.JSON(), existing_type=JSONB(),
                            postgresql_using=f"{name}::json")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in JSON_COLUMNS:
            op.alter_column("predictions", name, type_=JSONB(), existing_type=sa.JSON(),
                            postgresql_using=f"{name}::jsonb")
    op.create_index("ix_predictions_model_md5", "predictions", ["model_md5"])
