"""Tracks keep their query-bank statistics (``bank_mean``, ``bank_std``).

They are computed when a track is indexed or uploaded, so the ranking reads them instead of
scoring every track against the query bank on the request path (once per process, again after
every restart). Nullable: rows indexed before this revision get them from the service's backfill.

Revision ID: 0003_track_bank_stats
Revises: 0002_drop_index_state
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_track_bank_stats"
down_revision: str | None = "0002_drop_index_state"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch: SQLite cannot drop columns in place (downgrade); add_column is plain ALTER on both.
    with op.batch_alter_table("tracks") as batch:
        batch.add_column(sa.Column("bank_mean", sa.Float(), nullable=True))
        batch.add_column(sa.Column("bank_std", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tracks") as batch:
        batch.drop_column("bank_std")
        batch.drop_column("bank_mean")
