"""One pydantic-settings object for every component; environment prefix ``PHOTOSCORE_``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "model" / "default" / "photoscore-default.safetensors"


class Settings(BaseSettings):
    """Runtime configuration. Every field maps to ``PHOTOSCORE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="PHOTOSCORE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("var"), description="Where the embedded database, index and audio live.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/photoscore.db.")
    index_dir: Path | None = Field(None, description="FAISS index directory; default <data_dir>/index.")
    audio_dir: Path | None = Field(None, description="Content-addressed stored audio; default <data_dir>/audio.")
    checkpoint: Path = Field(DEFAULT_CHECKPOINT, description="Model checkpoint (.safetensors).")
    dataset_dir: Path = Field(Path("../shared/data"), description="Labelled training data root.")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda[:N]'.")

    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Keys allowed to write (comma separated)."
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

    search_k: int = Field(256, description="FAISS candidates before reranking.")
    batch_max_size: int = Field(16, description="Inference worker: largest micro-batch.")
    batch_max_wait_ms: float = Field(5.0, description="Inference worker: longest wait to fill a batch.")
    micro_batching: bool = Field(True, description="Disable to run one inference per request.")
    index_sync_seconds: float = Field(2.0, description="How often replicas pull catalogue changes.")
    exact_index_threshold: int = Field(200_000, description="Clips below this use exact search.")
    compressed_index_threshold: int = Field(
        2_000_000, description="Clips from which the index is IVF-PQ with exact re-scoring (else HNSW)."
    )
    clip_hop_seconds: float = Field(2.0, description="Hop between indexed 2-second clips.")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, description="Indexer worker processes.")
    log_level: str = "info"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'photoscore.db').resolve()}"

    @property
    def resolved_index_dir(self) -> Path:
        return self.index_dir or self.data_dir / "index"

    @property
    def resolved_audio_dir(self) -> Path:
        return self.audio_dir or self.data_dir / "audio"
