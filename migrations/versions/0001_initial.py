"""Initial catalogue: tracks, clips, index_state, track_events.

Revision ID: 0001_initial
Revises:
Create Date: 2025-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# BIGINT on PostgreSQL, INTEGER (rowid alias) on SQLite — as in app.core.models.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NOW = sa.func.now()


def upgrade() -> None:
    op.create_table(
        "tracks",
        sa.Column("id", BigId, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tracks"),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("artist", sa.String(512), nullable=True),
        sa.Column("album", sa.String(512), nullable=True),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("audio_key", sa.String(255), nullable=True),
        sa.Column("license", sa.Text(), nullable=True),
        sa.Column("valence", sa.Float(), nullable=False),
        sa.Column("arousal", sa.Float(), nullable=False),
        sa.Column("clip_count", sa.Integer(), nullable=False),
        sa.Column("checkpoint_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.UniqueConstraint("sha256", name="uq_tracks_sha256"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_tracks_checkpoint_hash", "tracks", ["checkpoint_hash"])
    op.create_index("ix_tracks_audio_key", "tracks", ["audio_key"])

    op.create_table(
        "clips",
        sa.Column("id", BigId, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_clips"),
        sa.Column(
            "track_id",
            BigId,
            sa.ForeignKey("tracks.id", ondelete="CASCADE", name="fk_clips_track_id_tracks"),
            nullable=False,
        ),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("valence", sa.Float(), nullable=False),
        sa.Column("arousal", sa.Float(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_clips_track_id", "clips", ["track_id"])

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
        sa.Column("built_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sqlite_autoincrement=True,
    )

    op.create_table(
        "track_events",
        sa.Column("id", BigId, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_track_events"),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("track_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_track_events_track_id", "track_events", ["track_id"])


def downgrade() -> None:
    op.drop_index("ix_track_events_track_id", table_name="track_events")
    op.drop_table("track_events")
    op.drop_table("index_state")
    op.drop_index("ix_clips_track_id", table_name="clips")
    op.drop_table("clips")
    op.drop_index("ix_tracks_audio_key", table_name="tracks")
    op.drop_index("ix_tracks_checkpoint_hash", table_name="tracks")
    op.drop_table("tracks")
