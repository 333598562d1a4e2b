"""End-to-end retrieval evaluation: metric functions on hand-made rankings, CLI errors, and one real run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from app.cli import main
from app.cli import retrieval_eval as re_
from app.core.settings import DEFAULT_CHECKPOINT


def _photos(quadrants: list[int]) -> list[re_.Photo]:
    """Photos rated at the centre of their quadrant."""
    return [
        re_.Photo(f"p{i}", Path(f"p{i}.jpg"), "test", 0.75 if q in (1, 4) else 0.25, 0.75 if q in (1, 2) else 0.25, q)
        for i, q in enumerate(quadrants)
    ]


# ------------------------------------------------------------------------------ matching metrics
def test_quadrant_at_k_counts_matching_songs_among_the_first_k() -> None:
    song_q = [1, 1, 2, 3]
    top = [[0, 1, 2, 3], [2, 3, 0, 1]]
    assert re_.quadrant_at_k(top, [1, 2], song_q, k=3).tolist() == pytest.approx([2 / 3, 1 / 3])
    assert re_.quadrant_at_k(top, [1, 2], song_q, k=1).tolist() == [1.0, 1.0]


def test_quadrant_chance_is_the_photo_quadrants_share_of_the_catalogue() -> None:
    chance = re_.quadrant_chance([1, 2, 4], [1, 1, 2, 3])
    assert chance.tolist() == pytest.approx([0.5, 0.25, 0.0])


def test_side_and_high_share() -> None:
    song_high = [True, True, False, False]
    top = [[0, 2], [2, 3]]
    assert re_.side_at_k(top, [True, False], song_high, k=2).tolist() == [0.5, 1.0]
    assert re_.high_share_at_k(top, song_high, k=2).tolist() == [0.5, 0.0]


def test_spearman_matches_scipy_and_handles_constant_input() -> None:
    assert re_.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert re_.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    x, y = [0.1, 0.5, 0.2, 0.9, 0.7, 0.3], [0.0, 0.5, 0.5, 1.0, 0.5, 0.1]  # ties, as shares have
    assert re_.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert math.isnan(re_.spearman([1, 2, 3], [5, 5, 5]))
    assert math.isnan(re_.spearman([1, 2], [1, 2]))


# ------------------------------------------------------------------------------------- hubness
def test_hubness_of_a_ranking_where_one_song_dominates() -> None:
    top = [[0, 1], [0, 2], [1, 0], [0, 3]]
    assert re_.distinct_first(top) == 2
    assert re_.top_first_share(top) == 0.75
    assert re_.coverage_at_k(top, n_songs=5, k=2) == pytest.approx(4 / 5)
    assert re_.coverage_at_k(top, n_songs=5, k=1) == pytest.approx(2 / 5)


def test_jaccard_over_pairs_and_its_matrix_form() -> None:
    top = [[0, 1], [1, 2], [0, 1]]
    # pairs: {0,1}/{1,2} = 1/3, {0,1}/{0,1} = 1, {1,2}/{0,1} = 1/3
    assert re_.mean_pairwise_jaccard(top, k=2) == pytest.approx(5 / 9)
    jac = re_.jaccard_matrix(top, n_songs=3, k=2)
    assert re_.resampled_jaccard(jac, np.arange(3)) == pytest.approx(5 / 9)
    # a photo drawn twice is not paired with itself: only the two cross pairs (1/3 each) count
    assert re_.resampled_jaccard(jac, np.array([0, 0, 1])) == pytest.approx(1 / 3)
    assert math.isnan(re_.resampled_jaccard(jac, np.array([2, 2])))
    assert re_.mean_pairwise_jaccard([[0, 1], [0, 1]], k=2) == 1.0
    assert re_.mean_pairwise_jaccard([[0], [1]], k=1) == 0.0


# ---------------------------------------------------------------------------- baselines, sampling
def test_va_rankings_break_ties_by_position() -> None:
    item_va = np.array([[0.9, 0.9], [0.5, 0.5], [0.1, 0.1], [0.5, 0.5]])
    assert re_.rank_by_va(np.array([0.5, 0.5]), item_va, k=3) == [1, 3, 0]
    clip_va = np.array([[0.9, 0.9], [0.2, 0.2], [0.5, 0.6], [0.8, 0.8]])
    clip_item = np.array([0, 0, 1, 2])  # item 0's nearest clip beats item 1's
    assert re_.rank_by_clip_va(np.array([0.2, 0.25]), clip_va, clip_item, n_items=3, k=3) == [0, 1, 2]


def test_random_rankings_are_seeded_and_draw_from_the_catalogue() -> None:
    a = re_.random_rankings(5, [3, 5, 7, 9, 11, 13], seed=1, k=4)
    assert a == re_.random_rankings(5, [3, 5, 7, 9, 11, 13], seed=1, k=4)
    assert a != re_.random_rankings(5, [3, 5, 7, 9, 11, 13], seed=2, k=4)
    assert all(len(set(t)) == 4 and set(t) <= {3, 5, 7, 9, 11, 13} for t in a)


def test_stratified_sample_keeps_the_mix() -> None:
    labels = ["a"] * 12 + ["b"] * 4
    idx = re_.stratified_sample(labels, 8, seed=3)
    assert len(idx) == 8 and list(idx) == sorted(idx)
    assert sum(labels[i] == "b" for i in idx) == 2
    assert np.array_equal(idx, re_.stratified_sample(labels, 8, seed=3))
    assert np.array_equal(re_.stratified_sample(labels, 50, seed=3), np.arange(16))


def test_bootstrap_interval() -> None:
    values = np.array([0.0, 1.0] * 50)
    resamples = re_.bootstrap_resamples(len(values), 500, seed=0)
    assert np.array_equal(resamples, re_.bootstrap_resamples(len(values), 500, seed=0))
    lo, hi = re_.bootstrap_ci(lambda r: float(values[r].mean()), resamples)
    assert 0.35 < lo < 0.5 < hi < 0.65
    assert re_.bootstrap_ci(lambda r: 7.0, resamples) == (7.0, 7.0)
    assert all(math.isnan(x) for x in re_.bootstrap_ci(lambda r: math.nan, resamples))


def test_method_metrics_of_a_perfect_and_a_hub_ranking() -> None:
    song_q = np.array([1, 1, 2, 2, 3, 3, 4, 4])
    photos = _photos([1, 2, 3, 4] * 3)
    pred = np.array([[p.valence, p.arousal] for p in photos])
    resamples = re_.bootstrap_resamples(len(photos), 200, seed=0)
    by_q = {q: [i for i in range(8) if song_q[i] == q] for q in (1, 2, 3, 4)}
    perfect = [by_q[p.quadrant] for p in photos]
    m = re_.method_metrics(perfect, photos, pred, song_q, np.arange(8), resamples, k=2)
    assert set(m) == {n.replace("@10", "@2") for n in re_.METRICS}
    for name in ("quadrant@2", "valence_side@2", "arousal_side@2"):
        assert m[name] == {"value": 1.0, "lo": 1.0, "hi": 1.0}
    assert m["coverage@2"]["value"] == 1.0 and m["coverage@2"]["lo"] < 1.0  # a resample can miss a quadrant
    assert m["quadrant_chance@2"]["value"] == 0.25
    assert m["spearman_valence"]["value"] == pytest.approx(1.0)
    assert m["spearman_arousal_pred"]["value"] == pytest.approx(1.0)
    assert m["distinct_first"]["value"] == 4
    assert m["top_first_share"]["value"] == 0.25
    # 12 photos, 3 per quadrant: a photo's top 2 equals 2 others' out of 11
    assert m["jaccard@2"]["value"] == pytest.approx(2 / 11)

    hub = [[0, 1] for _ in photos]
    m = re_.method_metrics(hub, photos, pred, song_q, np.arange(8), resamples, k=2)
    assert m["distinct_first"]["value"] == 1 and m["top_first_share"]["value"] == 1.0
    assert m["coverage@2"]["value"] == 0.25 and m["jaccard@2"]["value"] == 1.0
    assert m["quadrant@2"]["value"] == 0.25
    assert m["spearman_valence"]["value"] is not None and math.isnan(m["spearman_valence"]["value"])


# -------------------------------------------------------------------------------------- splits
def test_split_spec_reads_the_stored_config_and_falls_back_to_defaults() -> None:
    assert re_.split_spec({}) == re_.SplitSpec(0, (0.8, 0.1, 0.1))
    assert re_.split_spec({"seed": 4, "data": {"split": [0.7, 0.1, 0.2]}}) == re_.SplitSpec(4, (0.7, 0.1, 0.2))


def test_held_out_mask_is_the_training_split_and_intersects_checkpoints() -> None:
    from model.prepare import SPLITS, assign_split

    groups = [f"img:{i}" for i in range(400)]
    a, b = re_.SplitSpec(0, (0.8, 0.1, 0.1)), re_.SplitSpec(1, (0.8, 0.1, 0.1))
    only_a = re_.held_out_mask(groups, [a], "test")
    assert np.array_equal(only_a, assign_split(np.array(groups), [0.8, 0.1, 0.1], 0) == SPLITS["test"])
    both = re_.held_out_mask(groups, [a, b], "test")
    assert np.array_equal(both, only_a & re_.held_out_mask(groups, [b], "test"))
    assert 0 < both.sum() < only_a.sum()


# ---------------------------------------------------------------------------------- CLI errors
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--checkpoint", "/nonexistent/model.safetensors"], "checkpoint not found"),
        (["--limit-images", "0"], "--limit-images must be at least 1"),
        (["--workers", "-1"], "--workers must be 0 or more"),
        (["--data-root", "/nonexistent/data"], "/nonexistent/data"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(extra: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate-retrieval", "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("photoscore evaluate-retrieval: error:") and message in err
    assert len(err.splitlines()) == 1


# ------------------------------------------------------------------------------ one real run
@pytest.fixture(scope="module")
def shipped_run(tmp_path_factory: pytest.TempPathFactory, dataset_dir: Path) -> tuple[dict, Path]:
    """The shipped checkpoint on 24 held-out photos and 16 held-out songs, catalogue kept."""
    root = tmp_path_factory.mktemp("retrieval")
    out, workdir = root / "result.json", root / "catalogues"
    argv = ["evaluate-retrieval", "--data-root", str(dataset_dir), "--limit-images", "24", "--limit-songs", "16"]
    argv += ["--workers", "0", "--bootstrap", "200", "--device", "cpu", "--quiet"]
    assert main([*argv, "--json", str(out), "--workdir", str(workdir)]) == 0
    return json.loads(out.read_text()), workdir


@pytest.mark.data
def test_real_run_reports_every_method_and_metric_in_range(shipped_run: tuple[dict, Path]) -> None:
    result, _ = shipped_run
    assert result["counts"]["photos"] == 24 and result["counts"]["songs"] == 16
    assert sum(result["counts"]["song_quadrants"].values()) == 16
    (label,) = result["checkpoints"]
    assert label.startswith("photoscore-default@")
    assert list(result["methods"]) == [f"cdcml:{label}", f"va-track:{label}", f"va-clip:{label}", "random"]
    song_ids = {s["id"] for s in result["songs"]}
    for name, method in result["methods"].items():
        assert set(method["metrics"]) == set(re_.METRICS), name
        for metric, m in method["metrics"].items():
            lo, hi = {"distinct_first": (0.0, 16.0)}.get(metric, (-1.0, 1.0) if "spearman" in metric else (0.0, 1.0))
            if metric.startswith("spearman") and m["value"] is None:
                continue  # undefined when every photo's top 10 has the same share (few songs, top 10)
            for x in (m["value"], m["lo"], m["hi"]):
                assert x is not None and lo <= x <= hi, (name, metric, m)
            assert m["lo"] <= m["hi"]
        assert len(method["top10"]) == 24
        assert all(len(t) == 10 and len(set(t)) == 10 and set(t) <= song_ids for t in method["top10"])
    modality = result["checkpoints"][label]["modality"]
    assert -1 <= modality["image_valence_r"] <= 1 and 0 <= modality["song_arousal_auc"] <= 1
    assert modality["v_spread"] > 0 and modality["a_spread"] > 0


@pytest.mark.data
def test_cdcml_rankings_are_what_the_service_search_returns(shipped_run: tuple[dict, Path]) -> None:
    from app.core.db import make_engine, make_session_factory
    from app.core.live_index import LiveIndex
    from app.core.settings import Settings
    from app.services.recommend import Ranker, decode_photo
    from model.inference import Matcher

    result, workdir = shipped_run
    (label,) = result["checkpoints"]
    song_of_track = {t: s for s, t in result["checkpoints"][label]["catalogue"]["track_of_song"].items()}
    settings = Settings()
    matcher = Matcher.load(DEFAULT_CHECKPOINT, "cpu")
    engine = make_engine(f"sqlite:///{workdir / 'checkpoint-0' / 'catalogue.db'}")
    try:
        live = LiveIndex(make_session_factory(engine), checkpoint_hash=matcher.checkpoint_hash, dim=matcher.dim)
        live.load()
        assert live.n_tracks == 16
        for i in (0, 7, 23):
            photo = result["photos"][i]
            tensor = decode_photo(Path(photo["path"]).read_bytes(), settings.max_image_pixels, matcher.image_size)
            emb, _ = matcher.embed_image_tensor(np.stack([tensor]))
            hits = Ranker(live, matcher).recommend(emb[0], 10, settings.search_k)
            assert [song_of_track[h.track_id] for h in hits] == result["methods"][f"cdcml:{label}"]["top10"][i]
    finally:
        engine.dispose()


@pytest.mark.data
def test_photos_and_songs_are_never_in_the_training_split(shipped_run: tuple[dict, Path], dataset_dir: Path) -> None:
    """Recomputed independently from the training config's own sources (all of them, MIDI included)."""
    from model.checkpoint import read_meta
    from model.datasets import load_source
    from model.pairs import split_by_group

    result, _ = shipped_run
    cfg = read_meta(DEFAULT_CHECKPOINT).train_config
    seed, fractions = cfg["seed"], cfg["data"]["split"]
    for modality, key, names, used in (
        ("image", "item_id", cfg["data"]["images"], result["photos"]),
        ("music", "song_id", cfg["data"]["music"], result["songs"]),
    ):
        items, _ = load_source(",".join(str(dataset_dir / n) for n in names), modality)
        groups = [f"{it.source}:{getattr(it, key)}" for it in items]
        train, _, test = split_by_group(groups, fractions, seed)
        ids = {u["id"] for u in used}
        assert ids <= {groups[i] for i in test}, modality
        assert not ids & {groups[i] for i in train}, modality
