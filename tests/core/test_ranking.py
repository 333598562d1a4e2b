"""Pure ranking rules on hand-made numbers: mood words, shifts, duplicates, words, window, playlist DP."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.ranking import (
    NEAR_EQUAL,
    Candidate,
    OptionError,
    best_window,
    duplicate_key,
    mood_words,
    normal_title,
    parse_moods,
    plan_playlist,
    score_step,
    steer_gain,
    target_of,
    total_shift,
)


class TestMoods:
    def test_words_combine_and_are_forgiving_about_spelling(self) -> None:
        assert parse_moods(["Happier", "more-energetic"]) == ["happier", "more energetic"]
        assert parse_moods(["calmer,happier", " calmer "]) == ["calmer", "happier"]
        assert parse_moods(["energetic"]) == ["more energetic"]
        assert parse_moods(None) == [] and parse_moods([""]) == []

    @pytest.mark.parametrize(
        ("words", "message"),
        [
            (["happier", "sadder"], "opposite"),
            (["calmer,more energetic"], "opposite"),
            (["angrier"], "unknown word 'angrier'"),
        ],
    )
    def test_bad_words(self, words: list[str], message: str) -> None:
        with pytest.raises(OptionError, match=message):
            parse_moods(words)

    def test_shift_adds_words_and_clips(self) -> None:
        assert total_shift(0.0, 0.0, []) == (0.0, 0.0)
        assert total_shift(0.1, 0.0, ["happier", "calmer"]) == (0.35, -0.25)
        assert total_shift(0.4, -0.5, ["happier", "calmer"]) == (0.5, -0.5)
        with pytest.raises(OptionError, match="valence_shift"):
            total_shift(0.6, 0.0, [])
        with pytest.raises(OptionError, match="arousal_shift"):
            total_shift(0.0, float("nan"), [])

    def test_target_stays_in_the_unit_square(self) -> None:
        assert target_of((0.9, 0.1), (0.25, -0.25)) == (1.0, 0.0)
        assert target_of((0.5, 0.5), (0.0, 0.0)) == (0.5, 0.5)

    def test_gain_is_zero_without_a_shift_and_favours_songs_towards_the_target(self) -> None:
        songs = np.array([[0.4, 0.5], [0.6, 0.5], [0.5, 0.5]])
        photo = np.array([0.5, 0.5])
        assert np.all(steer_gain(songs, photo, photo) == 0.0)
        gain = steer_gain(songs, photo, np.array([0.75, 0.5]))  # happier
        # progress towards the target: +0.1 closer ... -0.25 for the photo's own mood and behind it
        assert gain[1] == pytest.approx(-0.05) and gain[2] == pytest.approx(-0.25) == gain[0]
        assert steer_gain(np.array([[1.0, 0.5]]), photo, np.array([0.75, 0.5]))[0] == pytest.approx(0.25)


class TestDuplicates:
    @pytest.mark.parametrize(
        "title",
        ["Numb", "Numb (Live)", "NUMB [Remastered]", "Numb - Remastered 2011", "Numb (feat. X) - Live Version", "Numb"],
    )
    def test_versions_of_one_song_share_a_key(self, title: str) -> None:
        assert normal_title(title) == "numb"
        assert duplicate_key(title, "Linkin Park") == duplicate_key("Numb", "linkin park")

    def test_different_songs_and_artists_differ(self) -> None:
        assert normal_title("Part 2 - Reprise") != normal_title("Part 2")  # not a version word
        assert duplicate_key("Numb", "Linkin Park") != duplicate_key("Numb", "Someone Else")
        assert normal_title("Café (Live)") == "cafe"

    def test_score_steps_define_near_equal(self) -> None:
        assert NEAR_EQUAL == 0.02
        assert score_step(0.861) == score_step(0.879) != score_step(0.881)


class TestWords:
    @pytest.mark.parametrize(
        ("v", "a", "words"),
        [
            (0.5, 0.52, "neutral · even"),
            (0.9, 0.9, "excited · happy"),
            (0.58, 0.56, "cheerful · lively"),
            (0.2, 0.8, "tense · anxious"),
            (0.1, 0.1, "sad · gloomy"),
            (0.42, 0.45, "wistful · subdued"),
            (0.8, 0.3, "calm · content"),
            (None, 0.3, "unknown"),
        ],
    )
    def test_lexicon(self, v, a, words: str) -> None:
        assert mood_words(v, a) == words


class TestWindow:
    STARTS = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    ENDS = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]

    def test_one_clip_is_the_best_clip(self) -> None:
        w = best_window(self.STARTS, self.ENDS, [0.1, 0.2, 0.9, 0.3, 0.8, 0.1], 2.0)
        assert (w.first, w.last, w.start, w.end) == (2, 2, 4.0, 6.0) and w.score == pytest.approx(0.9)

    def test_window_takes_the_best_run_snapped_to_clips(self) -> None:
        scores = [0.1, 0.2, 0.9, 0.3, 0.8, 0.7]  # best pair: clips 4+5 (0.75) over 2+3 (0.6)
        w = best_window(self.STARTS, self.ENDS, scores, 5.0)  # 5 s fits two whole clips
        assert (w.start, w.end) == (8.0, 12.0) and w.score == pytest.approx(0.75)
        w = best_window(self.STARTS, self.ENDS, scores, 6.0)
        assert (w.first, w.last) == (2, 4) and w.end - w.start == 6.0  # 0.9 + 0.3 + 0.8 beats 0.3 + 0.8 + 0.7

    def test_ties_go_to_the_earliest_window(self) -> None:
        w = best_window(self.STARTS, self.ENDS, [0.5] * 6, 4.0)
        assert (w.start, w.end) == (0.0, 4.0)

    def test_song_shorter_than_the_window_is_whole(self) -> None:
        w = best_window(self.STARTS, self.ENDS, [0.1, 0.2, 0.9, 0.3, 0.8, 0.1], 60.0)
        assert (w.start, w.end) == (0.0, 12.0)

    def test_overlapping_clips_with_a_one_second_hop(self) -> None:
        starts = np.arange(6) * 1.0
        w = best_window(starts, starts + 2.0, [0, 0, 1, 1, 0, 0], 3.0)  # two clips span 3 s
        assert (w.start, w.end) == (2.0, 5.0)

    def test_bad_input(self) -> None:
        with pytest.raises(ValueError):
            best_window([], [], [], 4.0)
        with pytest.raises(ValueError, match="sorted"):
            best_window([2.0, 0.0], [4.0, 2.0], [0.1, 0.2], 4.0)


def cand(tid: int, score: float, v: float, a: float = 0.5, key: str | None = None, artist: str = "") -> Candidate:
    return Candidate(tid, score, v, a, key or f"k{tid}", artist)


class TestPlaylist:
    def test_follows_the_best_match_when_there_is_no_penalty(self) -> None:
        cands = [[cand(1, 0.9, 0.2), cand(2, 0.5, 0.8)], [cand(3, 0.9, 0.8), cand(4, 0.4, 0.2)]]
        path = plan_playlist(cands, [(0.5, 0.5), (0.5, 0.5)], smoothness=0.0)
        assert [c.track_id for c in path] == [1, 3]

    def test_penalty_avoids_a_large_jump_the_photos_do_not_make(self) -> None:
        cands = [[cand(1, 0.9, 0.2), cand(2, 0.85, 0.75)], [cand(3, 0.9, 0.8), cand(4, 0.8, 0.25)]]
        same_photo = [(0.5, 0.5), (0.5, 0.5)]
        path = plan_playlist(cands, same_photo, smoothness=1.0)
        # 1 -> 3 scores 1.8 - 0.6 = 1.2; 2 -> 3 scores 1.75 - 0.05 = 1.70: the smooth path wins.
        assert [c.track_id for c in path] == [2, 3]

    def test_a_jump_the_photos_make_is_free(self) -> None:
        cands = [[cand(1, 0.9, 0.2), cand(2, 0.85, 0.75)], [cand(3, 0.9, 0.8), cand(4, 0.8, 0.25)]]
        path = plan_playlist(cands, [(0.2, 0.5), (0.8, 0.5)], smoothness=1.0)
        assert [c.track_id for c in path] == [1, 3]

    def test_never_the_same_song_twice(self) -> None:
        favourite = dict(v=0.5)
        cands = [
            [cand(1, 0.95, **favourite), cand(2, 0.5, 0.5)],
            [cand(1, 0.90, **favourite), cand(3, 0.6, 0.5)],
            [cand(1, 0.99, **favourite), cand(4, 0.4, 0.5)],
        ]
        path = plan_playlist(cands, [(0.5, 0.5)] * 3)
        ids = [c.track_id for c in path]
        assert len(set(ids)) == 3 and ids == [2, 3, 1]  # the song stays where it fits best

    def test_near_duplicates_count_as_the_same_song(self) -> None:
        cands = [[cand(1, 0.9, 0.5, key="numb"), cand(2, 0.1, 0.5)], [cand(3, 0.9, 0.5, key="numb"), cand(4, 0.2, 0.5)]]
        path = plan_playlist(cands, [(0.5, 0.5)] * 2)
        assert len({c.key for c in path}) == 2

    def test_artist_cap_over_the_playlist(self) -> None:
        cands = [[cand(i * 10 + 1, 0.9, 0.5, artist="a"), cand(i * 10 + 2, 0.5, 0.5, artist="b")] for i in range(3)]
        path = plan_playlist(cands, [(0.5, 0.5)] * 3, max_per_artist=2)
        assert sum(c.artist == "a" for c in path) == 2

    def test_impossible_plans_say_why(self) -> None:
        cands = [[cand(1, 0.9, 0.5)], [cand(1, 0.8, 0.5)]]
        with pytest.raises(OptionError, match="not enough different songs"):
            plan_playlist(cands, [(0.5, 0.5)] * 2)
        assert plan_playlist([], []) == []

    def test_a_song_wanted_twice_moves_to_where_it_leaves_room(self) -> None:
        # Issue 24: keeping X at the first photo (its best score) left the third with nothing.
        x1, y, z, x3 = cand(1, 0.9, 0.5), cand(2, 0.5, 0.5), cand(3, 0.9, 0.5), cand(1, 0.8, 0.5)
        path = plan_playlist([[x1, y], [z], [x3]], [(0.5, 0.5)] * 3)
        assert [c.track_id for c in path] == [2, 3, 1]

    def test_many_identical_photos_get_distinct_songs(self) -> None:
        # Issue 24: 50 identical photos, 60 shared candidates, were refused.
        pool = [cand(i, 0.9 - 0.01 * i, 0.2 + 0.01 * i, artist=f"a{i % 7}") for i in range(60)]
        path = plan_playlist([pool] * 50, [(0.5, 0.5)] * 50, smoothness=1.0, max_per_artist=8)
        assert len({c.key for c in path}) == 50
        assert max(sum(c.artist == f"a{j}" for c in path) for j in range(7)) <= 8


def _objective(path: Sequence[Candidate], photos: Sequence[tuple[float, float]], smoothness: float) -> float:
    total = sum(c.score for c in path)
    for i in range(1, len(path)):
        jump = math.hypot(path[i].valence - path[i - 1].valence, path[i].arousal - path[i - 1].arousal)
        allowance = math.hypot(photos[i][0] - photos[i - 1][0], photos[i][1] - photos[i - 1][1])
        total -= smoothness * max(0.0, jump - allowance)
    return total


def _keeps_rules(path: Sequence[Candidate], max_per_artist: int) -> bool:
    if len({c.key for c in path}) < len(path):
        return False
    artists = Counter(c.artist for c in path if c.artist)
    return max_per_artist <= 0 or all(n <= max_per_artist for n in artists.values())


@st.composite
def _playlist_cases(draw: st.DrawFn) -> tuple[list[list[Candidate]], list[tuple[float, float]], float, int]:
    """Up to 5 photos, each with up to 4 of 6 songs (3 artists and unknown), scores on a coarse grid."""
    songs = range(draw(st.integers(1, 6)))
    artist = {s: draw(st.sampled_from(["", "a", "b", "c"])) for s in songs}
    va = {s: (draw(st.sampled_from([0.1, 0.5, 0.9])), draw(st.sampled_from([0.1, 0.5, 0.9]))) for s in songs}
    photos = draw(st.integers(1, 5))
    cands = []
    for _ in range(photos):
        picks = draw(st.lists(st.sampled_from(list(songs)), min_size=1, max_size=4, unique=True))
        cands.append(
            [Candidate(s, draw(st.sampled_from([0.2, 0.5, 0.8, 0.9])), *va[s], f"k{s}", artist[s]) for s in picks]
        )
    pva = [(draw(st.sampled_from([0.2, 0.8])), draw(st.sampled_from([0.2, 0.8]))) for _ in range(photos)]
    return cands, pva, draw(st.sampled_from([0.0, 1.0, 3.0])), draw(st.integers(0, 2))


class TestPlaylistAgainstBruteForce:
    """Every assignment of small cases enumerated: the planner refuses exactly when none keeps the rules."""

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(_playlist_cases())
    def test_refuses_only_when_no_plan_exists(self, case) -> None:
        cands, photos, smoothness, cap = case
        valid = [p for p in itertools.product(*cands) if _keeps_rules(p, cap)]
        if not valid:
            with pytest.raises(OptionError):
                plan_playlist(cands, photos, smoothness, cap)
            return
        path = plan_playlist(cands, photos, smoothness, cap)
        assert _keeps_rules(path, cap)
        assert all(c in options for c, options in zip(path, cands, strict=True))
        best = max(_objective(p, photos, smoothness) for p in valid)
        assert _objective(path, photos, smoothness) <= best + 1e-9
        unconstrained = max(itertools.product(*cands), key=lambda p: _objective(p, photos, smoothness))
        if _keeps_rules(unconstrained, cap):  # nothing to repair: the plan is the optimum
            assert _objective(path, photos, smoothness) == pytest.approx(best)


def test_an_unknown_mood_word_is_quoted_only_in_part() -> None:
    """Issue 24: a 60 KB unknown word came back whole in the 422."""
    with pytest.raises(OptionError) as caught:
        parse_moods(["x" * 60_000])
    message = str(caught.value)
    assert len(message) < 200 and "60,000 characters" in message and "happier" in message
    with pytest.raises(OptionError, match="'gloomier'"):
        parse_moods(["gloomier"])  # short words are quoted whole
