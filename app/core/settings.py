"""One pydantic-settings object for every component; environment prefix ``PHOTOSCORE_``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.ranking import VA_WEIGHT

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "model" / "default" / "photoscore-default.safetensors"


class Settings(BaseSettings):
    """Runtime configuration. Every field maps to ``PHOTOSCORE_<NAME>``."""

    # hide_input_in_errors: a refused value (API keys, a database URL with its password) is not
    # echoed into logs by the validation error.
    model_config = SettingsConfigDict(
        env_prefix="PHOTOSCORE_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    data_dir: Path = Field(Path("var"), description="Where the embedded database, index and audio live.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/photoscore.db.")
    index_dir: Path | None = Field(None, description="FAISS index directory; default <data_dir>/index.")
    audio_dir: Path | None = Field(None, description="Content-addressed stored audio; default <data_dir>/audio.")
    checkpoint: Path = Field(DEFAULT_CHECKPOINT, description="Model checkpoint (.safetensors).")
    dataset_dir: Path = Field(Path("../shared/data"), description="Labelled training data root.")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda[:N]'.")

    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description='Keys allowed to write: comma separated, or a JSON list `["k1","k2"]`.'
    )
    public_reads: bool = Field(True, description="Reads without a key when true.")

    max_upload_mb: float = Field(50.0, description="Largest accepted upload (image or audio).")
    max_image_pixels: int = Field(40_000_000, description="Decompression-bomb guard for images.")
    max_audio_seconds: float = Field(1800.0, description="Longest accepted audio upload.")
    max_audio_samples: int = Field(
        400_000_000,  # model.audio.DEFAULT_MAX_SAMPLES (not imported: settings load without librosa)
        gt=0,
        description="Decoding budget: frames x channels at the file's own rate (bounds decoded memory).",
    )
    min_audio_seconds: float = Field(2.0, description="Shortest accepted audio (one clip).")

    max_video_mb: float = Field(
        200.0, gt=0, description="Largest accepted video upload (`POST /soundtrack`; streamed to a temporary file)."
    )
    max_video_seconds: float = Field(
        300.0, gt=0, le=7200, description="Longest accepted video; also bounds the soundtrack preview's length."
    )
    max_video_shots: int = Field(200, ge=1, le=5000, description="Most shots (detected cuts + 1) a video may have.")

    search_k: int = Field(256, description="FAISS candidates before reranking.")
    rank_va_weight: float = Field(
        VA_WEIGHT,
        ge=0.0,
        le=10.0,
        description=(
            "Ranking: bank z-score units taken off per unit of VA distance between song and photo"
            " (0: the learned score alone)."
        ),
    )
    max_playlist_photos: int = Field(50, ge=2, le=500, description="Most photos one `POST /playlist` takes.")
    batch_max_size: int = Field(16, description="Inference worker: largest micro-batch.")
    batch_max_wait_ms: float = Field(5.0, description="Inference worker: longest wait to fill a batch.")
    micro_batching: bool = Field(True, description="Disable to run one inference per request.")
    index_sync_seconds: float = Field(2.0, description="How often replicas pull catalogue changes.")
    exact_index_threshold: int = Field(200_000, description="Clips below this use exact search.")
    compressed_index_threshold: int = Field(
        2_000_000, description="Clips from which the index is IVF-PQ with exact re-scoring (else HNSW)."
    )
    clip_hop_seconds: float = Field(2.0, description="Hop between indexed 2-second clips.")
    upload_concurrency: int = Field(
        1, ge=1, description="Uploads decoded, featurised and embedded at once (per process); the rest queue."
    )
    upload_queue_size: int = Field(
        16, ge=0, description="Uploads that may wait for a slot; beyond it `POST /tracks` answers 429 + Retry-After."
    )
    upload_queue_wait_seconds: float = Field(
        120.0, gt=0, description="Longest an upload waits in that queue before it gets 429 + Retry-After."
    )
    body_timeout_seconds: float = Field(
        30.0, ge=0, description="A request body that sends nothing for this long gets 408 and is closed (0: off)."
    )
    max_header_kb: int = Field(
        64, ge=1, description="Largest request line + headers `photoscore serve` reads; larger gets 400."
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="A request head (line + headers) must arrive within this; else 408 and closed."
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Requests in flight `photoscore serve` takes (beyond: 503), and connections waiting for a "
        "request head it keeps (beyond: the oldest is closed).",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, description="Indexer worker processes.")
    log_level: str = "info"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """Comma-separated keys, or the JSON list pydantic-settings users write (`["k1","k2"]`).

        A bracket or quote never ends up inside a key: a value that starts like a JSON list must
        be one, and a comma-separated key with brackets or quotes is refused, not accepted.
        """
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"PHOTOSCORE_API_KEYS starts with '[' but is not a JSON list ({exc.msg}); "
                    'write ["key1","key2"] or key1,key2'
                ) from None
            if not isinstance(parsed, list) or not all(isinstance(k, str) for k in parsed):
                raise ValueError('PHOTOSCORE_API_KEYS as JSON must be a list of strings, e.g. ["key1","key2"]')
            keys = [k.strip() for k in parsed if k.strip()]
        else:
            keys = [k.strip() for k in text.split(",") if k.strip()]
        for key in keys:
            if any(c in key for c in "[]\"'") or any(c.isspace() for c in key):
                raise ValueError(
                    'PHOTOSCORE_API_KEYS: a key contains a bracket, quote or space; write ["key1","key2"] or key1,key2'
                )
        return keys

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'photoscore.db').resolve()}"

    @property
    def resolved_index_dir(self) -> Path:
        return self.index_dir or self.data_dir / "index"

    @property
    def resolved_audio_dir(self) -> Path:
        return self.audio_dir or self.data_dir / "audio"
