"""The shipped checkpoint: loads without a config, and its recommendations move the right way."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import mido
import numpy as np
import pytest

from app.core.settings import DEFAULT_CHECKPOINT
from model.audio import load_audio
from model.checkpoint import read_meta
from model.datasets import load_source
from model.image import open_image
from model.inference import Matcher
from model.pairs import split_by_group

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def _midi(path: Path, *, tempo_bpm: int, velocity: int, notes: list[int], beats_per_note: float, program: int) -> None:
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm)))
    track.append(mido.Message("program_change", program=program))
    ticks = int(480 * beats_per_note)
    n_beats = int(tempo_bpm * 16 / 60 / beats_per_note)  # ~16 s
    for i in range(n_beats):
        note = notes[i % len(notes)]
        track.append(mido.Message("note_on", note=note, velocity=velocity, time=0))
        track.append(mido.Message("note_on", note=note + 12, velocity=velocity, time=0))
        track.append(mido.Message("note_off", note=note, velocity=0, time=ticks))
        track.append(mido.Message("note_off", note=note + 12, velocity=0, time=0))
    mid.save(path)


def _render(midi: Path) -> np.ndarray:
    wav = midi.with_suffix(".wav")
    subprocess.run(
        ["fluidsynth", "-ni", "-F", str(wav), "-r", "22050", str(SOUNDFONT), str(midi)], check=True, capture_output=True
    )
    return load_audio(wav)


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    assert DEFAULT_CHECKPOINT.is_file(), f"shipped checkpoint missing: {DEFAULT_CHECKPOINT}"
    return Matcher.load(DEFAULT_CHECKPOINT, "cpu")


def test_shipped_checkpoint_is_small_and_self_describing() -> None:
    assert DEFAULT_CHECKPOINT.stat().st_size <= 40 * 1024 * 1024
    meta = read_meta(DEFAULT_CHECKPOINT)
    assert meta.name == "photoscore-default"
    assert meta.metrics["val"]["sim_mse"] > 0
    assert meta.data_summary["images"]["train"] > 1000


def test_exciting_and_calm_photos_get_different_music(matcher: Matcher, tmp_path: Path, dataset_dir: Path) -> None:
    """Held-out photos (test split, never trained on): the most pleasant and exciting ones prefer
    an energetic piece over a calm one more than the calmest photos do. Direction only."""
    assert shutil.which("fluidsynth"), "fluidsynth is required (scripts/install.sh installs it)"
    _midi(
        tmp_path / "energetic.mid",
        tempo_bpm=168,
        velocity=120,
        notes=[60, 64, 67, 72, 67, 64],
        beats_per_note=0.25,
        program=0,
    )
    _midi(tmp_path / "calm.mid", tempo_bpm=52, velocity=40, notes=[57, 60, 64, 60], beats_per_note=2.0, program=0)
    catalogue = {}
    for name in ("energetic", "calm"):
        clips = matcher.featurize(_render(tmp_path / f"{name}.mid"))
        catalogue[name] = matcher.embed_clip_features(clips.features, clips.tagger)
    assert catalogue["energetic"][1][:, 1].mean() > catalogue["calm"][1][:, 1].mean()  # music arousal

    items, _ = load_source(f"{dataset_dir / 'oasis'},{dataset_dir / 'emotion6'}", "image")
    train_config = read_meta(DEFAULT_CHECKPOINT).train_config
    seed, fractions = train_config["seed"], tuple(train_config["data"]["split"])
    _, _, test = split_by_group([f"{it.source}:{it.item_id}" for it in items], fractions, seed)
    held_out = [items[i] for i in test]
    va = np.array([[it.valence, it.arousal] for it in held_out])
    exciting = np.argsort(-(va[:, 0] + va[:, 1]))[:12]
    calm = np.argsort(va[:, 1])[:12]

    def preference(group: np.ndarray) -> tuple[float, float]:
        emb, pred_va = matcher.embed_images([open_image(held_out[i].path, draft_size=224) for i in group])
        pref = [
            matcher.similarity(e, catalogue["energetic"][0]).max() - matcher.similarity(e, catalogue["calm"][0]).max()
            for e in emb
        ]
        return float(np.mean(pref)), float(pred_va[:, 0].mean())

    exciting_pref, exciting_valence = preference(exciting)
    calm_pref, calm_valence = preference(calm)
    assert exciting_pref > calm_pref
    assert exciting_valence > calm_valence


def test_pleasant_and_unpleasant_photos_get_different_real_songs(dataset_dir: Path, tmp_path: Path) -> None:
    """End to end through the service's search path on held-out data (80 photos, 16 real songs):
    pleasant photos' lists hold more positive-valence songs than unpleasant photos' lists, and
    the two groups' lists are mostly different songs."""
    from app.evaluation import evaluate_retrieval

    result = evaluate_retrieval(
        [DEFAULT_CHECKPOINT],
        data_root=dataset_dir,
        limit_images=80,
        limit_songs=16,
        n_boot=50,
        workers=0,
        device="cpu",
        workdir=tmp_path / "catalogues",
        progress=False,
    )
    (cdcml,) = [m for name, m in result["methods"].items() if name.startswith("cdcml:")]
    positive = {s["id"] for s in result["songs"] if s["quadrant"] in (1, 4)}
    valence = np.array([p["valence"] for p in result["photos"]])
    top5 = [t[:5] for t in cdcml["top10"]]
    share = np.array([np.mean([song in positive for song in t]) for t in top5])
    pleasant, unpleasant = valence >= np.quantile(valence, 0.75), valence <= np.quantile(valence, 0.25)
    assert share[pleasant].mean() > share[unpleasant].mean() + 0.25, (share[pleasant].mean(), share[unpleasant].mean())

    def mean_overlap(rows: np.ndarray, cols: np.ndarray) -> float:
        pairs = [(i, j) for i in rows for j in cols if i != j]
        return float(np.mean([len(set(top5[i]) & set(top5[j])) / 5 for i, j in pairs]))

    within = mean_overlap(np.flatnonzero(pleasant), np.flatnonzero(pleasant))
    across = mean_overlap(np.flatnonzero(pleasant), np.flatnonzero(unpleasant))
    assert across < 0.6 * within, (across, within)
