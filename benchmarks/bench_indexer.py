"""Indexer: x real time and clips/s end to end on real music, stage shares, feature accuracy.

1. End to end: ``python -m indexer FILES...`` (the code behind ``photoscore index``) on real
   Ogg Vorbis tracks into a fresh SQLite catalogue and FAISS folder; wall time of the whole
   command (process start, model load, migrations included) and the run's own summary line.
2. Stages: the indexer's own functions called one after another in this process, each timed
   with ``time.perf_counter``: hash (``app.core.files.file_sha256``), decode
   (``model.audio.load_audio``), features (``model.features.cut_clips``), embedding
   (``Matcher.embed_clip_features``), database (``app.core.catalogue.add_track``) and FAISS
   (``indexer.build.sync_index``). Decode and features run under one BLAS/OpenMP thread, as in
   the indexer's worker processes. The sum is the single-process CPU path; the pipeline
   overlaps decoding (worker processes) with embedding (main process).
3. Feature path vs the librosa reference: ``cut_clips`` against librosa's own functions run
   on each 2-second clip alone (mfcc, chroma_stft, spectral_contrast, tonnetz from that chroma,
   power_to_db of melspectrogram), max abs difference per block and speed of each.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.catalogue import Catalogue, open_existing
from benchmarks.common import Context, context_from_command_line, fmt, log, run_indexer_command, wesnoth_tracks
from benchmarks.records import BlockDiff, FeatureAccuracy, IndexerResults, IndexerRun, StageTimes

STAGES = ("hash", "decode", "features", "embedding", "database", "faiss")
EDGE_FRAMES = 4  # frames at each clip edge where librosa zero-pads a lone clip (n_fft/2 = 2 hops)
CLIP_TOLERANCE = 0.5  # a clip "matches" when every interior value is within this of the reference
MAX_SECONDS = 4 * 3600.0


def music_files(n: int) -> list[Path]:
    return wesnoth_tracks()[:n]


def audio_seconds(files: list[Path]) -> float:
    import soundfile as sf

    return float(sum(sf.info(str(f)).duration for f in files))


def run_cli(ctx: Context, files: list[Path], directory: Path, workers: int, audio_s: float) -> IndexerRun:
    """The indexer command end to end into ``directory`` (made fresh); ``audio_s``: the files' duration."""
    cmd = run_indexer_command(files, directory, ["--checkpoint", str(ctx.checkpoint), "--workers", str(workers)])
    res = IndexerRun(
        workers=workers,
        command_wall_s=cmd.wall_s,
        pipeline_xrt=cmd.xrt,
        pipeline_clips_per_s=cmd.clips_per_s,
        pipeline_wall_s=cmd.run_wall_s,
        clips=cmd.clips,
        failed=cmd.failed,
        summary=cmd.output.strip().splitlines()[-12:],
        xrt_command=audio_s / cmd.wall_s,
        clips_per_s_command=cmd.clips / cmd.wall_s,
    )
    if res.failed:
        ctx.note(f"indexer: {res.failed} tracks failed: {cmd.output[-1500:]}")
    return res


def run_stages(ctx: Context, files: list[Path], directory: Path) -> tuple[StageTimes, list[tuple[Path, np.ndarray]]]:
    """Each stage timed with the indexer's own functions, serially, in this process; with the
    first tracks' signals (for the feature comparison)."""
    from threadpoolctl import threadpool_limits

    from app.core.catalogue import ClipBatch, add_track
    from app.core.db import make_engine, make_session_factory, upgrade_database
    from app.core.files import file_sha256
    from app.core.settings import Settings
    from app.core.tags import read_tags
    from app.core.vector_index import IndexPolicy
    from indexer.build import sync_index
    from model.audio import SAMPLE_RATE, load_audio
    from model.features import cut_clips
    from model.inference import Matcher

    settings = Settings()
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    url = f"sqlite:///{(directory / 'photoscore.db').resolve()}"
    upgrade_database(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    matcher = Matcher.load(ctx.checkpoint, "cpu")
    matcher.warmup()
    t = dict.fromkeys(STAGES, 0.0)
    clips_total, seconds_total = 0, 0.0
    signals: list[tuple[Path, np.ndarray]] = []
    for path in files:
        t0 = time.perf_counter()
        sha = file_sha256(path)
        t1 = time.perf_counter()
        with threadpool_limits(1):
            y = load_audio(path, max_seconds=MAX_SECONDS)
            t2 = time.perf_counter()
            clips = cut_clips(y, SAMPLE_RATE, settings.clip_hop_seconds, tagger=matcher.needs_tagger_input)
            t3 = time.perf_counter()
        embs, va = matcher.embed_clip_features(clips.features, clips.tagger)
        t4 = time.perf_counter()
        tags = read_tags(path)
        with factory() as session:
            add_track(
                session,
                sha256=sha,
                title=tags.get("title") or path.stem,
                artist=tags.get("artist"),
                album=tags.get("album"),
                duration=len(y) / SAMPLE_RATE,
                source=str(path),
                audio_key=None,
                license=None,
                checkpoint_hash=matcher.checkpoint_hash,
                clips=ClipBatch(clips.starts, clips.ends, va, embs),
            )
        t5 = time.perf_counter()
        for name, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=False):
            t[name] += dt
        clips_total += len(clips)
        seconds_total += len(y) / SAMPLE_RATE
        if len(signals) < 3:
            signals.append((path, y))
    t0 = time.perf_counter()
    sync_index(
        factory,
        directory / "index",
        checkpoint_hash=matcher.checkpoint_hash,
        dim=matcher.dim,
        policy=IndexPolicy.from_settings(settings),
    )
    t["faiss"] = time.perf_counter() - t0
    engine.dispose()
    total = sum(t.values())
    res = StageTimes(
        seconds=t,
        share={k: v / total for k, v in t.items()},
        total_s=total,
        clips=clips_total,
        audio_s=seconds_total,
        xrt=seconds_total / total,
        clips_per_s=clips_total / total,
        stage_xrt={k: seconds_total / v if v > 0 else float("inf") for k, v in t.items()},
    )
    log("indexer stages: " + ", ".join(f"{k} {v:.1f} s ({100 * res.share[k]:.0f}%)" for k, v in t.items()))
    return res, signals


def _reference_clip(alone: np.ndarray, sr: int, tuning: float) -> np.ndarray:
    """librosa's functions on one 2-second clip alone (the straightforward per-clip path)."""
    import librosa

    chroma = librosa.feature.chroma_stft(y=alone, sr=sr, tuning=tuning)
    return np.concatenate(
        [
            librosa.feature.mfcc(y=alone, sr=sr, n_mfcc=40),
            chroma,
            librosa.feature.spectral_contrast(y=alone, sr=sr),
            librosa.feature.tonnetz(sr=sr, chroma=chroma),
            librosa.power_to_db(librosa.feature.melspectrogram(y=alone, sr=sr)),
        ]
    ).astype(np.float32)


def feature_accuracy(ctx: Context, signals: list[tuple[Path, np.ndarray]], clips_per_track: int) -> FeatureAccuracy:
    import librosa

    from model.audio import HOP_LENGTH, SAMPLE_RATE
    from model.features import CLIP_SAMPLES, N_CHROMA, cut_clips, feature_rows

    rows = feature_rows()
    worst_all = dict.fromkeys(rows, 0.0)
    worst_mid = dict.fromkeys(rows, 0.0)
    mid_diffs: dict[str, list[np.ndarray]] = {name: [] for name in rows}
    scale = dict.fromkeys(rows, 0.0)
    chroma_own_tuning = 0.0
    fast_s, ref_s, ref_clips, fast_clips, fast_audio = 0.0, 0.0, 0, 0, 0.0
    clips_over = 0
    for _, y in signals:
        t0 = time.perf_counter()
        cs = cut_clips(y, SAMPLE_RATE)
        fast_s += time.perf_counter() - t0
        fast_clips += len(cs)
        fast_audio += len(y) / SAMPLE_RATE
        power = np.abs(librosa.stft(y, n_fft=2048, hop_length=HOP_LENGTH)) ** 2
        tuning = librosa.estimate_tuning(S=power, sr=SAMPLE_RATE, bins_per_octave=N_CHROMA)
        pick = np.linspace(0, len(cs) - 1, min(clips_per_track, len(cs))).round().astype(int)
        for i in np.unique(pick):
            first = int(round(cs.starts[i] * SAMPLE_RATE))
            alone = y[first : first + CLIP_SAMPLES]
            t0 = time.perf_counter()
            ref = _reference_clip(alone, SAMPLE_RATE, tuning)
            ref_s += time.perf_counter() - t0
            ref_clips += 1
            ours = cs.features[i]
            clip_worst = 0.0
            for name, sl in rows.items():
                d = np.abs(ours[sl] - ref[sl])
                worst_all[name] = max(worst_all[name], float(d.max()))
                worst_mid[name] = max(worst_mid[name], float(d[:, EDGE_FRAMES:-EDGE_FRAMES].max()))
                mid_diffs[name].append(d[:, EDGE_FRAMES:-EDGE_FRAMES].ravel())
                clip_worst = max(clip_worst, float(d[:, EDGE_FRAMES:-EDGE_FRAMES].max()))
                scale[name] = max(scale[name], float(np.abs(ref[sl]).max()))
            clips_over += clip_worst > CLIP_TOLERANCE
            own = librosa.feature.chroma_stft(y=alone, sr=SAMPLE_RATE)  # per-clip tuning estimate
            chroma_own_tuning = max(
                chroma_own_tuning,
                float(np.abs(own - ours[rows["chroma"]])[:, EDGE_FRAMES:-EDGE_FRAMES].max()),
            )
    res = FeatureAccuracy(
        blocks={
            name: BlockDiff(
                max_abs_all=worst_all[name],
                max_abs_interior=worst_mid[name],
                p99_abs_interior=float(np.percentile(np.concatenate(mid_diffs[name]), 99)),
                median_abs_interior=float(np.median(np.concatenate(mid_diffs[name]))),
                ref_max_abs=scale[name],
            )
            for name in rows
        },
        chroma_vs_per_clip_tuning=chroma_own_tuning,
        clip_tolerance=CLIP_TOLERANCE,
        clips_over_tolerance=int(clips_over),
        fast_clips_per_s=fast_clips / fast_s,
        fast_xrt=fast_audio / fast_s,
        ref_clips_per_s=ref_clips / ref_s,
        ref_xrt=ref_clips * 2.0 / ref_s,
        clips_compared=ref_clips,
        speedup=(fast_clips / fast_s) / (ref_clips / ref_s),
    )
    log(
        f"features: cut_clips {res.fast_clips_per_s:.0f} clips/s vs per-clip librosa "
        f"{res.ref_clips_per_s:.0f} clips/s ({res.speedup:.1f}x); worst interior diff "
        + ", ".join(f"{k} {v.max_abs_interior:.2g}" for k, v in res.blocks.items())
    )
    return res


def run(ctx: Context) -> tuple[IndexerResults, Catalogue]:
    """All indexer figures; the 'workers=1' catalogue is returned for the /recommend benchmark."""
    n_tracks = 3 if ctx.quick else 13
    files = music_files(n_tracks)
    total_audio = audio_seconds(files)
    log(f"indexer: {len(files)} tracks, {total_audio / 60:.1f} min of audio")
    e2e = []
    worker_counts = (1,) if ctx.quick else (2, 1)  # the last one stays as the real-audio catalogue
    real_dir = ctx.workdir / "catalogue-real"
    for w in worker_counts:
        directory = real_dir if w == worker_counts[-1] else ctx.workdir / f"indexer-w{w}"
        res = run_cli(ctx, files, directory, w, total_audio)
        log(
            f"indexer CLI workers={w}: {res.command_wall_s:.1f} s for {res.clips} clips -> "
            f"{res.xrt_command:.1f}x real time (pipeline alone {res.pipeline_xrt:.1f}x, "
            f"{res.pipeline_clips_per_s:.1f} clips/s)"
        )
        e2e.append(res)
        if directory != real_dir:
            shutil.rmtree(directory, ignore_errors=True)
    stages, signals = run_stages(ctx, files, ctx.workdir / "indexer-stages")
    shutil.rmtree(ctx.workdir / "indexer-stages", ignore_errors=True)
    acc = feature_accuracy(ctx, signals[: 1 if ctx.quick else 3], 10 if ctx.quick else 40)
    cat = open_existing(real_dir, f"{n_tracks} real tracks", "real audio")
    cat.name = f"{cat.n_clips:,} real-audio"
    return IndexerResults(
        tracks=len(files),
        files=[f.name for f in files],
        audio_s=total_audio,
        end_to_end=e2e,
        stages=stages,
        features=acc,
    ), cat


def print_tables(res: IndexerResults) -> None:
    print(f"\nIndexer on {res.tracks} real tracks ({res.audio_s / 60:.1f} min of Ogg Vorbis)")
    for e in res.end_to_end:
        print(
            f"  command, workers={e.workers}: {e.command_wall_s:.1f} s -> {e.xrt_command:.1f}x real time, "
            f"{e.clips_per_s_command:.1f} clips/s; pipeline alone {e.pipeline_xrt:.1f}x, "
            f"{e.pipeline_clips_per_s:.1f} clips/s"
        )
    s = res.stages
    print(f"  stages (serial, one process): total {s.total_s:.1f} s = {s.xrt:.1f}x real time")
    for k in STAGES:
        xrt = fmt(s.stage_xrt[k])
        print(f"    {k:>10} {s.seconds[k]:7.2f} s {100 * s.share[k]:5.1f}%  ({xrt}x real time)")
    f = res.features
    print(
        f"  features: cut_clips {f.fast_clips_per_s:.0f} clips/s ({f.fast_xrt:.0f}x real time) vs "
        f"per-clip librosa {f.ref_clips_per_s:.1f} clips/s ({f.ref_xrt:.1f}x); {f.speedup:.1f}x faster"
    )
    for name, b in f.blocks.items():
        print(
            f"    {name:>9} max |diff| interior {b.max_abs_interior:.3g} (p99 {b.p99_abs_interior:.3g}), "
            f"all frames {b.max_abs_all:.3g} "
            f"(reference values up to {b.ref_max_abs:.3g})"
        )


def main() -> None:
    res, _ = run(context_from_command_line(__doc__.splitlines()[0]))
    print_tables(res)


if __name__ == "__main__":
    main()
