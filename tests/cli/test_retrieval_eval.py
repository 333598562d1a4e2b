"""End-to-end retrieval evaluation: metric functions on hand-made rankings, CLI errors, and one real run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from scipy.stats import spearmanr

from app.cli import main
from app.cli.retrieval_eval import add_retrieval_parser
from app.core.settings import DEFAULT_CHECKPOINT
from app.evaluation.baselines import cosine_scores, random_rankings, rank_by_clip_va, rank_by_track_score, rank_by_va
from app.evaluation.bootstrap import bootstrap_ci, bootstrap_resamples
from app.evaluation.emotify import (
    EMOTIFY_MAX_SONGS,
    emotify_figures,
    emotify_targets,
    load_emotify_set,
    resolve_emotify,
    song_mean_va,
    trains_on,
)
from app.evaluation.errors import RetrievalEvalError
from app.evaluation.metrics import (
    METRICS,
    coverage_at_k,
    distinct_first,
    high_share_at_k,
    jaccard_matrix,
    mean_pairwise_jaccard,
    method_metrics,
    pearson_r,
    quadrant_at_k,
    quadrant_chance,
    quadrant_mix,
    resampled_jaccard,
    side_at_k,
    spearman,
    top_first_share,
)
from app.evaluation.report import emotify_lines, format_report, markdown, mix_lines
from app.evaluation.split import Photo, SplitSpec, held_out_mask, split_spec, stratified_sample

if TYPE_CHECKING:
    from model.inference import Matcher


def _photos(quadrants: list[int]) -> list[Photo]:
    """Photos rated at the centre of their quadrant."""
    return [
        Photo(f"p{i}", Path(f"p{i}.jpg"), "test", 0.75 if q in (1, 4) else 0.25, 0.75 if q in (1, 2) else 0.25, q)
        for i, q in enumerate(quadrants)
    ]


# ------------------------------------------------------------------------------ matching metrics
def test_quadrant_at_k_counts_matching_songs_among_the_first_k() -> None:
    song_q = [1, 1, 2, 3]
    top = [[0, 1, 2, 3], [2, 3, 0, 1]]
    assert quadrant_at_k(top, [1, 2], song_q, k=3).tolist() == pytest.approx([2 / 3, 1 / 3])
    assert quadrant_at_k(top, [1, 2], song_q, k=1).tolist() == [1.0, 1.0]


def test_quadrant_chance_is_the_photo_quadrants_share_of_the_catalogue() -> None:
    chance = quadrant_chance([1, 2, 4], [1, 1, 2, 3])
    assert chance.tolist() == pytest.approx([0.5, 0.25, 0.0])


def test_side_and_high_share() -> None:
    song_high = [True, True, False, False]
    top = [[0, 2], [2, 3]]
    assert side_at_k(top, [True, False], song_high, k=2).tolist() == [0.5, 1.0]
    assert high_share_at_k(top, song_high, k=2).tolist() == [0.5, 0.0]


def test_spearman_matches_scipy_and_handles_constant_input() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    x, y = [0.1, 0.5, 0.2, 0.9, 0.7, 0.3], [0.0, 0.5, 0.5, 1.0, 0.5, 0.1]  # ties, as shares have
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))
    assert math.isnan(spearman([1, 2], [1, 2]))


# ------------------------------------------------------------------------------------- hubness
def test_hubness_of_a_ranking_where_one_song_dominates() -> None:
    top = [[0, 1], [0, 2], [1, 0], [0, 3]]
    assert distinct_first(top) == 2
    assert top_first_share(top) == 0.75
    assert coverage_at_k(top, n_songs=5, k=2) == pytest.approx(4 / 5)
    assert coverage_at_k(top, n_songs=5, k=1) == pytest.approx(2 / 5)


def test_jaccard_over_pairs_and_its_matrix_form() -> None:
    top = [[0, 1], [1, 2], [0, 1]]
    # pairs: {0,1}/{1,2} = 1/3, {0,1}/{0,1} = 1, {1,2}/{0,1} = 1/3
    assert mean_pairwise_jaccard(top, k=2) == pytest.approx(5 / 9)
    jac = jaccard_matrix(top, n_songs=3, k=2)
    assert resampled_jaccard(jac, np.arange(3)) == pytest.approx(5 / 9)
    # a photo drawn twice is not paired with itself: only the two cross pairs (1/3 each) count
    assert resampled_jaccard(jac, np.array([0, 0, 1])) == pytest.approx(1 / 3)
    assert math.isnan(resampled_jaccard(jac, np.array([2, 2])))
    assert mean_pairwise_jaccard([[0, 1], [0, 1]], k=2) == 1.0
    assert mean_pairwise_jaccard([[0], [1]], k=1) == 0.0


# ---------------------------------------------------------------------------- baselines, sampling
def test_va_rankings_break_ties_by_position() -> None:
    item_va = np.array([[0.9, 0.9], [0.5, 0.5], [0.1, 0.1], [0.5, 0.5]])
    assert rank_by_va(np.array([0.5, 0.5]), item_va, k=3) == [1, 3, 0]
    clip_va = np.array([[0.9, 0.9], [0.2, 0.2], [0.5, 0.6], [0.8, 0.8]])
    clip_item = np.array([0, 0, 1, 2])  # item 0's nearest clip beats item 1's
    assert rank_by_clip_va(np.array([0.2, 0.25]), clip_va, clip_item, n_items=3, k=3) == [0, 1, 2]


def test_random_rankings_are_seeded_and_draw_from_the_catalogue() -> None:
    a = random_rankings(5, [3, 5, 7, 9, 11, 13], seed=1, k=4)
    assert a == random_rankings(5, [3, 5, 7, 9, 11, 13], seed=1, k=4)
    assert a != random_rankings(5, [3, 5, 7, 9, 11, 13], seed=2, k=4)
    assert all(len(set(t)) == 4 and set(t) <= {3, 5, 7, 9, 11, 13} for t in a)


def test_stratified_sample_keeps_the_mix() -> None:
    labels = ["a"] * 12 + ["b"] * 4
    idx = stratified_sample(labels, 8, seed=3)
    assert len(idx) == 8 and list(idx) == sorted(idx)
    assert sum(labels[i] == "b" for i in idx) == 2
    assert np.array_equal(idx, stratified_sample(labels, 8, seed=3))
    assert np.array_equal(stratified_sample(labels, 50, seed=3), np.arange(16))


def test_bootstrap_interval() -> None:
    values = np.array([0.0, 1.0] * 50)
    resamples = bootstrap_resamples(len(values), 500, seed=0)
    assert np.array_equal(resamples, bootstrap_resamples(len(values), 500, seed=0))
    lo, hi = bootstrap_ci(lambda r: float(values[r].mean()), resamples)
    assert 0.35 < lo < 0.5 < hi < 0.65
    assert bootstrap_ci(lambda r: 7.0, resamples) == (7.0, 7.0)
    assert all(math.isnan(x) for x in bootstrap_ci(lambda r: math.nan, resamples))


def test_method_metrics_of_a_perfect_and_a_hub_ranking() -> None:
    song_q = np.array([1, 1, 2, 2, 3, 3, 4, 4])
    photos = _photos([1, 2, 3, 4] * 3)
    pred = np.array([[p.valence, p.arousal] for p in photos])
    resamples = bootstrap_resamples(len(photos), 200, seed=0)
    by_q = {q: [i for i in range(8) if song_q[i] == q] for q in (1, 2, 3, 4)}
    perfect = [by_q[p.quadrant] for p in photos]
    m = method_metrics(perfect, photos, pred, song_q, np.arange(8), resamples, k=2)
    assert set(m) == {n.replace("@10", "@2") for n in METRICS}
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
    m = method_metrics(hub, photos, pred, song_q, np.arange(8), resamples, k=2)
    assert m["distinct_first"]["value"] == 1 and m["top_first_share"]["value"] == 1.0
    assert m["coverage@2"]["value"] == 0.25 and m["jaccard@2"]["value"] == 1.0
    assert m["quadrant@2"]["value"] == 0.25
    assert m["spearman_valence"]["value"] is not None and math.isnan(m["spearman_valence"]["value"])


# --------------------------------------------------------------------------- per-quadrant mix
def test_quadrant_mix_rows_sum_to_one_and_their_diagonal_is_quadrant_at_k() -> None:
    song_q = [1, 1, 2, 3, 4, 2]
    top = [[0, 1, 2], [2, 3, 4], [0, 5, 3], [4, 4, 1]]
    photo_q = [1, 2, 1, 4]
    mix = quadrant_mix(top, photo_q, song_q, k=3)
    assert mix["Q1"] == pytest.approx(
        {"n": 2, "Q1": (2 / 3 + 1 / 3) / 2, "Q2": (1 / 3 + 1 / 3) / 2, "Q3": 1 / 6, "Q4": 0}
    )
    assert mix["Q2"] == pytest.approx({"n": 1, "Q1": 0, "Q2": 1 / 3, "Q3": 1 / 3, "Q4": 1 / 3})
    assert mix["Q4"] == pytest.approx({"n": 1, "Q1": 1 / 3, "Q2": 0, "Q3": 0, "Q4": 2 / 3})
    assert mix["Q3"]["n"] == 0 and all(math.isnan(mix["Q3"][f"Q{q}"]) for q in (1, 2, 3, 4))
    for row in (mix["Q1"], mix["Q2"], mix["Q4"]):
        assert sum(row[f"Q{q}"] for q in (1, 2, 3, 4)) == pytest.approx(1.0)
    weighted = sum(r["n"] * r[q] for q, r in mix.items() if r["n"]) / len(top)
    assert weighted == pytest.approx(quadrant_at_k(top, photo_q, song_q, k=3).mean())
    assert quadrant_mix(top, photo_q, song_q, k=1)["Q2"] == pytest.approx({"n": 1, "Q1": 0, "Q2": 1, "Q3": 0, "Q4": 0})


# ------------------------------------------------------------------------------------ ablation
def test_rank_by_track_score_ranks_by_the_mean_clip_score() -> None:
    # item 0 holds the single best clip, item 1 the best mean; item 2 has no clip
    scores = np.array([[0.9, 0.1, 0.6, 0.6, 0.2], [0.0, 0.0, 0.0, 0.0, 1e-9]])
    clip_item = np.array([0, 0, 1, 1, 3])
    ranked = rank_by_track_score(scores, clip_item, n_items=4, k=3)
    assert ranked[0] == [1, 0, 3]
    assert ranked[1] == [0, 1, 3]  # a difference below the rounding is a tie, broken by position
    assert rank_by_track_score(scores, clip_item, n_items=4, k=10)[0] == [1, 0, 3]


def test_cosine_scores_ignore_vector_length() -> None:
    photos = np.array([[1.0, 0.0], [3.0, 4.0]])
    clips = np.array([[2.0, 0.0], [0.0, 0.5], [-1.0, -1.0]])
    expected = np.array([[1.0, 0.0, -math.sqrt(0.5)], [0.6, 0.8, -7 / (5 * math.sqrt(2))]])
    assert cosine_scores(photos, clips) == pytest.approx(expected)


# ------------------------------------------------------------------------------------- Emotify
def test_pearson_r_matches_numpy_and_is_nan_when_undefined() -> None:
    x, y = [0.1, 0.4, 0.2, 0.9, 0.5], [1.0, 2.5, 1.5, 3.0, 2.0]
    assert pearson_r(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert pearson_r([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert math.isnan(pearson_r([1, 2, 3], [1, 1, 1])) and math.isnan(pearson_r([1, 2], [2, 1]))


def test_song_mean_va_averages_each_songs_clips() -> None:
    clip_va = np.array([[0.2, 0.4], [0.4, 0.8], [0.9, 0.1], [0.5, 0.5]])
    mean = song_mean_va(clip_va, np.array([0, 0, 2, 2]), n_songs=3)
    assert mean[0] == pytest.approx([0.3, 0.6]) and mean[2] == pytest.approx([0.7, 0.3])
    assert np.isnan(mean[1]).all()


def test_emotify_figures_on_constructed_predictions() -> None:
    rng = np.random.default_rng(0)
    targets = rng.uniform(-1, 1, (40, 2))
    pred = np.column_stack([np.exp(-3 * targets[:, 0]), 0.2 + 0.5 * targets[:, 1]])  # valence falls, arousal rises
    pred[5] = np.nan  # a song without clips does not count
    fig = emotify_figures(pred, targets)
    assert fig["n"] == 39
    assert fig["arousal"]["pearson"] == pytest.approx(1.0) and fig["arousal"]["spearman"] == pytest.approx(1.0)
    assert fig["valence"]["spearman"] == pytest.approx(-1.0)
    assert -1.0 < fig["valence"]["pearson"] < -0.5  # monotone but not linear
    noise = emotify_figures(rng.uniform(0, 1, (40, 2)), targets)
    assert abs(noise["valence"]["pearson"]) < 0.5 and abs(noise["arousal"]["spearman"]) < 0.5


def test_emotify_targets_are_raw_vote_sums(tmp_path: Path) -> None:
    ann = tmp_path / "annotations.csv"
    ann.write_text(
        "track_id,p_power,p_tension,p_joyful_activation,p_sadness,p_calmness\n"
        "7,0.1,0.2,0.3,0.4,0.9\n"
        "9,0.5,0.0,0.25,0.0,0.0\n"
    )
    targets = emotify_targets(ann)
    assert targets == {"7": pytest.approx((0.3 - 0.4, 0.6)), "9": pytest.approx((0.25, 0.75))}
    ann.write_text("track_id,p_power,p_tension,p_sadness\n1,0.1,0.2,0.3\n")
    with pytest.raises(RetrievalEvalError, match="p_joyful_activation"):
        emotify_targets(ann)


def test_trains_on_finds_emotify_by_folder_name_or_format(tmp_path: Path) -> None:
    assert not trains_on({"data": {"music": ["vgmidi", "panda4q"]}}, "emotify", tmp_path)
    assert not trains_on({}, "emotify", tmp_path)  # TrainConfig's default sources
    assert trains_on({"data": {"music": ["panda4q", "emotify"]}}, "emotify", tmp_path)
    assert trains_on({"data": {"music": ["/elsewhere/Emotify"]}}, "emotify", tmp_path)
    renamed = tmp_path / "gems"
    renamed.mkdir()
    (renamed / "annotations.csv").write_text("track_id,genre,file,p_tension\n")
    assert trains_on({"data": {"music": ["gems"]}}, "emotify", tmp_path)


def test_emotify_folder_defaults_to_the_data_root_and_can_be_skipped(tmp_path: Path) -> None:
    assert resolve_emotify(True, tmp_path) == (None, f"no folder {tmp_path / 'emotify'}")
    (tmp_path / "emotify").mkdir()
    assert resolve_emotify(True, tmp_path) == (tmp_path / "emotify", None)
    assert resolve_emotify(False, tmp_path) == (None, "--no-emotify")
    assert resolve_emotify(tmp_path, Path("/nonexistent")) == (tmp_path, None)
    with pytest.raises(RetrievalEvalError, match="Emotify folder not found"):
        resolve_emotify(tmp_path / "missing", tmp_path)


def test_cli_emotify_options() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_retrieval_parser(parser.add_subparsers())
    args = parser.parse_args(["evaluate-retrieval"])
    assert (args.emotify, args.no_emotify, args.emotify_max_songs) == (None, False, EMOTIFY_MAX_SONGS)
    args = parser.parse_args(["evaluate-retrieval", "--no-emotify", "--emotify-max-songs", "7"])
    assert args.no_emotify and args.emotify_max_songs == 7
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate-retrieval", "--no-emotify", "--emotify", "/x"])


def test_report_sections_on_a_hand_made_result() -> None:
    assert markdown([["a", "bb"], ["1", "2"]]) == ["| a   | bb  |", "| --- | --- |", "| 1   | 2   |"]
    assert emotify_lines({"skipped": "--no-emotify"}) == ["", "Emotify check skipped: --no-emotify"]
    row = {"n": 2, "Q1": 0.1, "Q2": 0.3, "Q3": 0.4, "Q4": 0.2}
    mix = {q: row for q in ("Q1", "Q2", "Q3", "Q4")}
    text = "\n".join(mix_lines({"cdcml:m": {"quadrant_mix": mix}, "random": {"quadrant_mix": mix}}))
    assert "target Q2 photos' Q2 share >= 0.35: 0.300 (not met)" in text
    (line,) = [x for x in text.splitlines() if x.startswith("| random ")]
    assert [c.strip() for c in line.strip("|").split("|")] == [
        "random",
        "0.100 (2)",
        "0.300 (2)",
        "0.400 (2)",
        "0.200 (2)",
    ]


@pytest.mark.data
def test_emotify_songs_are_a_seeded_genre_sample_held_out_by_training(dataset_dir: Path) -> None:
    from model.prepare import SPLITS, assign_split

    folder = dataset_dir / "emotify"
    unseen = load_emotify_set(folder, [], "test", max_songs=20, seed=0)
    assert unseen.info["held_out_by"] == "not trained on"
    assert len(unseen.songs) == 20 and unseen.info["eligible"] > 20
    genres = [s.path.parent.name for s in unseen.songs]
    assert len(set(genres)) > 1 and max(genres.count(g) for g in set(genres)) - min(map(genres.count, set(genres))) <= 1
    assert [s.id for s in unseen.songs] == [s.id for s in load_emotify_set(folder, [], max_songs=20).songs]
    assert [s.id for s in unseen.songs] != [s.id for s in load_emotify_set(folder, [], max_songs=20, seed=5).songs]
    votes, track_of = emotify_targets(folder / "annotations.csv"), _emotify_track_of_file(folder)
    for song, target in zip(unseen.songs, unseen.targets, strict=True):
        assert song.path.is_file() and tuple(target) == pytest.approx(votes[track_of[song.path.resolve()]])

    spec = SplitSpec(0, (0.7, 0.1, 0.2))
    held = load_emotify_set(folder, [spec], "test", max_songs=1000, seed=0)
    assert held.info["held_out_by"] == "split" and held.info["sampled"] == held.info["eligible"] == len(held.songs)
    every = load_emotify_set(folder, [], "test", max_songs=1000, seed=0)
    groups = np.array([s.id for s in every.songs])
    test = set(groups[assign_split(groups, [0.7, 0.1, 0.2], 0) == SPLITS["test"]])
    assert {s.id for s in held.songs} == test and 0 < len(test) < len(groups) / 2


# -------------------------------------------------------------------------------------- splits
def test_split_spec_reads_the_stored_config_and_falls_back_to_defaults() -> None:
    assert split_spec({}) == SplitSpec(0, (0.8, 0.1, 0.1))
    assert split_spec({"seed": 4, "data": {"split": [0.7, 0.1, 0.2]}}) == SplitSpec(4, (0.7, 0.1, 0.2))


def test_held_out_mask_is_the_training_split_and_intersects_checkpoints() -> None:
    from model.prepare import SPLITS, assign_split

    groups = [f"img:{i}" for i in range(400)]
    a, b = SplitSpec(0, (0.8, 0.1, 0.1)), SplitSpec(1, (0.8, 0.1, 0.1))
    only_a = held_out_mask(groups, [a], "test")
    assert np.array_equal(only_a, assign_split(np.array(groups), [0.8, 0.1, 0.1], 0) == SPLITS["test"])
    both = held_out_mask(groups, [a, b], "test")
    assert np.array_equal(both, only_a & held_out_mask(groups, [b], "test"))
    assert 0 < both.sum() < only_a.sum()


# ---------------------------------------------------------------------------------- CLI errors
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--checkpoint", "/nonexistent/model.safetensors"], "checkpoint not found"),
        (["--limit-images", "0"], "--limit-images must be at least 1"),
        (["--workers", "-1"], "--workers must be 0 or more"),
        (["--data-root", "/nonexistent/data"], "/nonexistent/data"),
        (["--emotify-max-songs", "0"], "--emotify-max-songs must be at least 1"),
        (["--emotify", "/nonexistent/emotify"], "Emotify folder not found: /nonexistent/emotify"),
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
    """The shipped checkpoint on 24 held-out photos and 16 held-out songs, 6 Emotify songs, catalogues kept."""
    root = tmp_path_factory.mktemp("retrieval")
    out, workdir = root / "result.json", root / "catalogues"
    argv = ["evaluate-retrieval", "--data-root", str(dataset_dir), "--limit-images", "24", "--limit-songs", "16"]
    argv += ["--workers", "0", "--bootstrap", "200", "--device", "cpu", "--quiet", "--emotify-max-songs", "6"]
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
        assert set(method["metrics"]) == set(METRICS), name
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
    from app.services.photos import clean_va, decode_photo
    from app.services.ranking import Query, Ranker, SearchOptions
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
            emb, va = matcher.embed_image_tensor(np.stack([tensor]))
            hits = (
                Ranker(live, matcher, search_k=settings.search_k, va_weight=settings.rank_va_weight)
                .page(Query(emb[0], clean_va(va[0])), SearchOptions(n=10, spare=0))
                .results
            )
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


@pytest.mark.data
def test_quadrant_mix_of_every_method_agrees_with_its_top10_and_quadrant_at_10(
    shipped_run: tuple[dict, Path],
) -> None:
    result, _ = shipped_run
    song_q = {s["id"]: s["quadrant"] for s in result["songs"]}
    photo_q = [p["quadrant"] for p in result["photos"]]
    (label,) = result["ablation"]
    rows = [*result["methods"].items(), *((k, r) for k, r in result["ablation"][label]["rows"].items())]
    for name, method in rows:
        mix = method["quadrant_mix"]
        assert {q: mix[q]["n"] for q in mix} == result["counts"]["photo_quadrants"], name
        for pq, row in mix.items():
            if row["n"]:
                assert sum(row[f"Q{q}"] for q in (1, 2, 3, 4)) == pytest.approx(1.0), (name, pq)
        weighted = sum(r["n"] * r[q] for q, r in mix.items() if r["n"]) / len(photo_q)
        assert weighted == pytest.approx(method["metrics"]["quadrant@10"]["value"]), name
    top = result["methods"]["random"]["top10"]  # recomputed from the rankings themselves
    for q in (1, 2, 3, 4):
        mine = [[song_q[s] for s in t] for t, p in zip(top, photo_q, strict=True) if p == q]
        if mine:
            share = np.mean([[np.mean(np.array(t) == m) for m in (1, 2, 3, 4)] for t in mine], axis=0)
            got = result["methods"]["random"]["quadrant_mix"][f"Q{q}"]
            assert [got[f"Q{m}"] for m in (1, 2, 3, 4)] == pytest.approx(share.tolist())


@pytest.mark.data
def test_ablation_rows_rank_every_track_by_one_signal(shipped_run: tuple[dict, Path]) -> None:
    from app.core.db import make_engine, make_session_factory
    from app.core.live_index import LiveIndex
    from app.core.settings import Settings
    from app.services.bank_stats import CLIPS_PER_TRACK
    from app.services.ranking import Query, Ranker, SearchOptions
    from model.inference import Matcher

    result, workdir = shipped_run
    (label,) = result["checkpoints"]
    ab = result["ablation"][label]
    assert list(ab["rows"]) == ["va_distance", "embedding_cosine", "learned_predictor", "bank_normalised", "shipped"]
    assert ab["clips_per_track"] == CLIPS_PER_TRACK
    assert ab["rows"]["va_distance"]["metrics"] == result["methods"][f"va-track:{label}"]["metrics"]
    assert ab["rows"]["shipped"]["metrics"] == result["methods"][f"cdcml:{label}"]["metrics"]
    for name in ("embedding_cosine", "learned_predictor", "bank_normalised"):
        assert set(ab["rows"][name]["metrics"]) == set(METRICS)
        assert all(len(t) == 10 and len(set(t)) == 10 for t in ab["rows"][name]["top10"])

    # recomputed track by track: the photo embedding against each track's scored clips
    song_of_track = {t: s for s, t in result["checkpoints"][label]["catalogue"]["track_of_song"].items()}
    matcher = Matcher.load(DEFAULT_CHECKPOINT, "cpu")
    emb_of = _photo_embeddings(matcher, [result["photos"][i]["path"] for i in (0, 11, 23)])
    engine = make_engine(f"sqlite:///{workdir / 'checkpoint-0' / 'catalogue.db'}")
    try:
        live = LiveIndex(make_session_factory(engine), checkpoint_hash=matcher.checkpoint_hash, dim=matcher.dim)
        live.load()
        clips = {c.track_id: c.embeddings for c in live.track_clips(sorted(song_of_track), CLIPS_PER_TRACK)}
        plain = Ranker(live, matcher, search_k=Settings().search_k, va_weight=0.0)
        for i, emb in zip((0, 11, 23), emb_of, strict=True):  # the service's ranking without the VA term
            hits = plain.page(Query(emb), SearchOptions(n=10, spare=0)).results
            assert ab["rows"]["bank_normalised"]["top10"][i] == [song_of_track[h.track_id] for h in hits], i
    finally:
        engine.dispose()
    for i, emb in zip((0, 11, 23), emb_of, strict=True):
        cos = {t: float(np.mean(e @ emb / np.linalg.norm(e, axis=1) / np.linalg.norm(emb))) for t, e in clips.items()}
        pred = {t: float(np.clip(matcher.similarity(emb, e), 0, 1).mean()) for t, e in clips.items()}
        for name, score in (("embedding_cosine", cos), ("learned_predictor", pred)):
            want = sorted(score, key=lambda t, s=score: (-round(s[t], 6), t))[:10]
            assert ab["rows"][name]["top10"][i] == [song_of_track[t] for t in want], (name, i)


@pytest.mark.data
def test_emotify_check_correlates_each_songs_mean_clip_va_with_its_votes(shipped_run: tuple[dict, Path]) -> None:
    from scipy.stats import pearsonr, spearmanr

    from app.core.catalogue import clip_moods, track_moods
    from app.core.db import make_engine, make_session_factory
    from app.core.files import file_sha256
    from model.checkpoint import read_meta

    result, workdir = shipped_run
    (label,) = result["checkpoints"]
    emotify = result["emotify"]
    trained_on = "emotify" in read_meta(DEFAULT_CHECKPOINT).train_config["data"]["music"]
    assert emotify["held_out_by"] == ("split" if trained_on else "not trained on") and emotify["sampled"] == 6
    figures = emotify["checkpoints"][label]
    assert figures["n"] == 6 and not figures["not_indexed"]

    folder = Path(emotify["dir"])
    votes, track_of = emotify_targets(folder / "annotations.csv"), _emotify_track_of_file(folder)
    engine = make_engine(f"sqlite:///{workdir / 'checkpoint-0-emotify' / 'catalogue.db'}")
    try:
        with make_session_factory(engine)() as session:
            sha = file_sha256(DEFAULT_CHECKPOINT)
            tracks = {tid: track_of[Path(str(src)).resolve()] for tid, src, _, _ in track_moods(session, sha)}
            clips = clip_moods(session, sha)
    finally:
        engine.dispose()
    assert len(tracks) == 6
    pred = {t: np.mean([[v, a] for tid, v, a in clips if tid == t], axis=0) for t in tracks}
    x = np.array([pred[t] for t in tracks])
    y = np.array([votes[tracks[t]] for t in tracks])
    for j, dim in enumerate(("valence", "arousal")):
        assert figures[dim]["pearson"] == pytest.approx(pearsonr(x[:, j], y[:, j]).statistic)
        assert figures[dim]["spearman"] == pytest.approx(spearmanr(x[:, j], y[:, j]).statistic)


@pytest.mark.data
def test_report_prints_the_new_sections(shipped_run: tuple[dict, Path]) -> None:
    result, _ = shipped_run
    (label,) = result["checkpoints"]
    text = format_report(result)
    q2 = result["methods"][f"cdcml:{label}"]["quadrant_mix"]["Q2"]
    assert f"| Q2 photos      | {q2['n']} " in text
    assert f"target Q2 photos' Q2 share >= 0.35: {q2['Q2']:.3f}" in text
    assert f"ablation {label}" in text
    for row in ("VA distance", "embedding cosine", "learned predictor", "shipped"):
        assert f"| {row} " in text
    assert "Emotify check (reported, not selected on): 6 of" in text


def _photo_embeddings(matcher: Matcher, paths: list[str]) -> list[np.ndarray]:
    """Photo embeddings the way the service makes them (decode_photo, then the image graph)."""
    from app.core.settings import Settings
    from app.services.photos import decode_photo

    settings = Settings()
    out = []
    for path in paths:
        tensor = decode_photo(Path(path).read_bytes(), settings.max_image_pixels, matcher.image_size)
        emb, _ = matcher.embed_image_tensor(np.stack([tensor]))
        out.append(emb[0])
    return out


def _emotify_track_of_file(folder: Path) -> dict[Path, str]:
    """Emotify's ``track_id`` by audio file, read straight from the annotations (file names repeat per genre)."""
    import csv

    with open(folder / "annotations.csv", newline="", encoding="utf-8") as fh:
        return {(folder / row["file"]).resolve(): row["track_id"] for row in csv.DictReader(fh)}
