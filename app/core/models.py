"""Catalogue tables: tracks, their 2-second clips (with embeddings), index state and change events.

The database is the source of truth: every clip keeps its embedding so the FAISS index can be
rebuilt without audio, and FAISS ids are clip ids. Ids are never reused (``sqlite_autoincrement``;
PostgreSQL identity columns), so a deleted clip id can never come back meaning another clip.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# BIGINT on PostgreSQL; SQLite needs plain INTEGER for an auto-incrementing rowid primary key.
BigId = BigInteger().with_variant(Integer(), "sqlite")


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base shared by the app and the Alembic migrations (stable constraint names)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Track(Base):
    """One audio file, identified by the SHA-256 of its content."""

    __tablename__ = "tracks"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(512))
    artist: Mapped[str | None] = mapped_column(String(512))
    album: Mapped[str | None] = mapped_column(String(512))
    duration: Mapped[float] = mapped_column(Float)
    source: Mapped[str | None] = mapped_column(Text)
    audio_key: Mapped[str | None] = mapped_column(String(255), index=True)  # the orphan sweep looks it up
    license: Mapped[str | None] = mapped_column(Text)
    valence: Mapped[float] = mapped_column(Float)
    arousal: Mapped[float] = mapped_column(Float)
    clip_count: Mapped[int] = mapped_column(Integer)
    checkpoint_hash: Mapped[str] = mapped_column(String(64), index=True)
    # Query-bank normalisation (mean and spread of the track's score over the checkpoint's bank
    # photos), computed when the track is embedded so no request has to; NULL for tracks indexed
    # before it was stored, or embedded by a checkpoint without a bank (the service backfills).
    bank_mean: Mapped[float | None] = mapped_column(Float, nullable=True)
    bank_std: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    clips: Mapped[list[Clip]] = relationship(
        back_populates="track",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Clip.start",
    )

    def __repr__(self) -> str:
        return f"Track(id={self.id!r}, title={self.title!r}, clips={self.clip_count!r})"


class Clip(Base):
    """A 2-second segment of a track with its predicted VA and its embedding (float32 bytes)."""

    __tablename__ = "clips"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    track_id: Mapped[int] = mapped_column(BigId, ForeignKey("tracks.id", ondelete="CASCADE"), index=True)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    valence: Mapped[float] = mapped_column(Float)
    arousal: Mapped[float] = mapped_column(Float)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)

    track: Mapped[Track] = relationship(back_populates="clips")

    def __repr__(self) -> str:
        return f"Clip(id={self.id!r}, track_id={self.track_id!r}, start={self.start!r})"


class TrackEvent(Base):
    """Append-only change log written in the same transaction as the change, for index replicas.

    ``track_id`` is deliberately not a foreign key: a delete event outlives its track.
    """

    __tablename__ = "track_events"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    track_id: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
