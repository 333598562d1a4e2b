"""The model-study scripts' pure parts on hand-made inputs: hubness corrections, mood groups, key mode."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tests.support.scripts import load_script


def test_corrections_take_the_bank_out_of_each_track_score() -> None:
    hub = load_script("hubness_study")
    s = np.array([[0.85, 0.6], [0.8, 0.7]])  # track 0 scores high for every photo
    b = np.array([[0.85, 0.3], [0.75, 0.5], [0.8, 0.4]])  # ... and for every bank photo too
    out = hub.corrections(s, b)
    np.testing.assert_allclose(out["mean"], s - b.mean(axis=0))
    np.testing.assert_allclose(out["z"], (s - b.mean(axis=0)) / b.std(axis=0))
    np.testing.assert_allclose(out["csls5"], s - b.mean(axis=0), atol=1e-12)  # 3 bank photos: all of them
    assert (np.argmax(s, axis=1) == 0).all()
    assert (np.argmax(out["z"], axis=1) == 1).all()  # normalised, track 1 wins both photos
    beta = 10.0
    lse = np.log(np.exp(beta * b).sum(axis=0))
    np.testing.assert_allclose(out["isoft10"], beta * s - lse)


def _result() -> dict:
    songs = [{"id": f"s{i}", "quadrant": q} for i, q in enumerate((1, 2, 3, 4))]
    photos = [
        {"source": "emotion6", "path": "e6/joy/1.jpg"},
        {"source": "emotion6", "path": "e6/joy/2.jpg"},
        {"source": "emotion6", "path": "e6/sadness/3.jpg"},
        {"source": "emotion6", "path": "e6/anger/4.jpg"},
        {"source": "oasis", "path": "oasis/images/joy/5.jpg"},  # not Emotion6: in no group
    ]
    top = [["s0", "s3"], ["s0", "s1"], ["s2", "s3"], ["s1", "s0"], ["s2", "s2"]]
    return {"songs": songs, "photos": photos, "methods": {"cdcml:m": {"top10": top}, "va-track:m": {"top10": top}}}


def test_mood_groups_count_quadrants_energy_and_overlap() -> None:
    mood = load_script("mood_groups")
    out = mood.summarise(_result(), ["joy", "sadness", "anger"])
    assert list(out) == ["cdcml:m"]  # only the shipped path
    rows = out["cdcml:m"]["groups"]
    assert rows["joy"] == {
        "photos": 2,
        "Q1": 0.5,
        "Q2": 0.25,
        "Q3": 0.0,
        "Q4": 0.25,
        "energetic": 0.75,
        "first": [("s0", 2)],
    }
    assert rows["sadness"]["energetic"] == 0.0 and rows["anger"]["energetic"] == 1.0
    assert out["cdcml:m"]["overlap"]["joy~anger"] == pytest.approx(2 / 4)  # min(s0 2,1)+min(s1 1,1) / 2+1+1
    assert out["cdcml:m"]["overlap"]["sadness~anger"] == 0.0
    assert mood.weighted_jaccard(Counter("aab"), Counter("aab")) == 1.0


def test_key_mode_tells_major_from_minor_in_every_key() -> None:
    probe = load_script("probe_features")
    chroma = np.zeros((4, 12))
    for row, pitch_classes in enumerate(([0, 4, 7], [0, 3, 7], [0, 2, 4, 5, 7, 9, 11], [0, 2, 3, 5, 7, 8, 11])):
        chroma[row, pitch_classes] = 1  # C major and C minor triads, C major and C harmonic minor scales
    f = probe.key_mode_features(chroma)
    mode = f[:, 2]  # best major-profile correlation minus best minor-profile correlation
    assert mode[0] > 0 > mode[1] and mode[2] > 0 > mode[3]
    assert np.allclose(probe.key_mode_features(np.roll(chroma, 5, axis=1)), f)  # the same in F
    assert f[0, 4] < f[2, 4]  # three pitch classes are less spread (entropy) than seven


def test_view_averaging_sees_the_served_photo_its_crops_and_mirror_images(tiny_checkpoint, tmp_path) -> None:
    """A mirror-symmetric photo gives its served embedding back when averaged with its mirror
    image; crops of an asymmetric one move it, and every averaged embedding is unit length."""
    from PIL import Image

    from app.core.settings import Settings
    from app.evaluation.service import embed_photos
    from app.evaluation.split import Photo
    from model.inference import Matcher

    hub = load_script("hubness_study")
    rng = np.random.default_rng(0)
    half = rng.integers(0, 256, (120, 60, 3), dtype=np.uint8)  # square: the served view is not cropped
    photos = []
    for name, pixels in (("symmetric", np.concatenate([half, half[:, ::-1]], axis=1)), ("noise", half)):
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
        photos.append(Photo(name, tmp_path / f"{name}.png", "test", 0.5, 0.5, 1))
    matcher, settings = Matcher.load(tiny_checkpoint, "cpu"), Settings()
    served, served_va = embed_photos(matcher, photos, settings)
    mirrored, mirrored_va = hub.view_embeddings(matcher, photos, settings, "mirror")
    assert np.abs(mirrored[0] - served[0]).max() < 1e-5 and np.abs(mirrored_va[0] - served_va[0]).max() < 1e-5
    cropped, _ = hub.view_embeddings(matcher, photos, settings, "crops+mirror")
    assert np.abs(cropped[1] - served[1]).max() > 1e-3
    assert np.allclose(np.linalg.norm(cropped, axis=1), 1, atol=1e-5)
