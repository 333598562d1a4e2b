"""Drop index_state: the index is described once, by the sidecar beside the FAISS file.

The service checks an index against the catalogue with the sidecar (checkpoint, dimension, type,
last event id); the ``index_state`` rows duplicated it and nothing read them.

Revision ID: 0002_drop_index_state
Revises: 0001_initial
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_drop_index_state"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.drop_table("index_state")


def downgrade() -> None:
    op.create_table(
        "index_state",
        sa.Column("id", BigId, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_index_state"),
        sa.Column("checkpoint_hash", sa.String(64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("index_type", sa.String(32), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sqlite_autoincrement=True,
    )
