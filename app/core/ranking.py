"""Pure ranking helpers behind /recommend and /playlist: mood steering, variety, words, windows, DP.

Nothing here touches the model, the database or the index, so every rule is unit-tested on
hand-made numbers (tests/core/test_ranking.py) and documented in one place (docs/CONTRACTS.md).
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

# -------------------------------------------------------------------------------- steering
MAX_SHIFT = 0.5  # |valence_shift|, |arousal_shift| and their sums with mood words stay within this
MOOD_STEP = 0.25  # how far one mood word moves the target
MOOD_SHIFTS: dict[str, tuple[float, float]] = {
    "happier": (MOOD_STEP, 0.0),
    "sadder": (-MOOD_STEP, 0.0),
    "calmer": (0.0, -MOOD_STEP),
    "more energetic": (0.0, MOOD_STEP),
}
_OPPOSITES = (("happier", "sadder"), ("calmer", "more energetic"))
STEER_WEIGHT = 2.0  # score units per unit of VA distance gained towards the target
VA_WEIGHT = 1.0  # z units per unit of VA distance between song and photo (chosen on validation: model card)
NEAR_EQUAL = 0.02  # width of the score steps inside which `seed` reshuffles


class OptionError(ValueError):
    """A request option that cannot be used (the routes answer 422 with this message)."""


def parse_moods(values: Iterable[str] | None) -> list[str]:
    """Mood words from repeated and/or comma-separated values; unknown or opposite words raise."""
    words: list[str] = []
    for value in values or ():
        for part in str(value).split(","):
            word = " ".join(part.strip().lower().replace("_", " ").replace("-", " ").split())
            if not word:
                continue
            if word == "energetic":
                word = "more energetic"
            if word not in MOOD_SHIFTS:
                raise OptionError(
                    f"mood: unknown word {_quote_prefix(part.strip())}; use happier, sadder, calmer or more energetic"
                )
            if word not in words:
                words.append(word)
    for a, b in _OPPOSITES:
        if a in words and b in words:
            raise OptionError(f"mood: {a!r} and {b!r} pull in opposite directions; choose one")
    return words


MAX_ECHO = 40  # characters of an unknown value quoted back in an error message


def _quote_prefix(text: str) -> str:
    """``text`` quoted for an error message, cut to ``MAX_ECHO`` characters: a 60 KB mood word
    was echoed whole in the 422 (issue 24)."""
    if len(text) <= MAX_ECHO:
        return repr(text)
    return f"{text[:MAX_ECHO]!r}... ({len(text):,} characters)"


def total_shift(valence_shift: float, arousal_shift: float, moods: Sequence[str]) -> tuple[float, float]:
    """Explicit shifts plus the mood words' shifts, each clipped to [-MAX_SHIFT, MAX_SHIFT]."""
    for name, value in (("valence_shift", valence_shift), ("arousal_shift", arousal_shift)):
        if not math.isfinite(value) or abs(value) > MAX_SHIFT:
            raise OptionError(f"{name}: {value} is outside [-{MAX_SHIFT}, {MAX_SHIFT}]")
    dv = valence_shift + sum(MOOD_SHIFTS[m][0] for m in moods)
    da = arousal_shift + sum(MOOD_SHIFTS[m][1] for m in moods)
    clip = lambda x: round(min(MAX_SHIFT, max(-MAX_SHIFT, x)), 6)  # noqa: E731
    return clip(dv), clip(da)


def steer_gain(track_va: np.ndarray, photo_va: np.ndarray, target_va: np.ndarray) -> np.ndarray:
    """How much closer each song is to the target than to the photo (VA units, may be < 0).

    Zero for every song when the target is the photo, so a zero shift cannot change a ranking,
    and it grows smoothly with the shift (no jump between shift 0 and a tiny shift).
    """
    track_va = np.asarray(track_va, np.float64).reshape(-1, 2)
    to_photo = np.linalg.norm(track_va - np.asarray(photo_va, np.float64), axis=1)
    to_target = np.linalg.norm(track_va - np.asarray(target_va, np.float64), axis=1)
    return to_photo - to_target


def target_of(photo_va: Sequence[float], shift: tuple[float, float]) -> tuple[float, float]:
    """The photo's VA moved by the shift, kept inside the unit square."""
    return (
        min(1.0, max(0.0, float(photo_va[0]) + shift[0])),
        min(1.0, max(0.0, float(photo_va[1]) + shift[1])),
    )


# --------------------------------------------------------------------------------- variety
_BRACKETS = re.compile(r"\s*[\(\[\{][^\)\]\}]*[\)\]\}]")
_VERSION_WORDS = (
    "remaster|remastered|live|version|edit|mix|remix|mono|stereo|demo|acoustic|radio|single|"
    "album|deluxe|bonus|instrumental|extended|original|explicit|clean"
)
_DASH_SUFFIX = re.compile(rf"\s+[-–—]\s+[^-–—]*\b({_VERSION_WORDS})\b[^-–—]*$", re.IGNORECASE)
_FEAT = re.compile(r"\s+(feat\.?|ft\.?|featuring)\s+.*$", re.IGNORECASE)


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


def normal_title(title: str | None) -> str:
    """'Numb (Live)', 'Numb - Remastered 2011', 'NUMB [feat. X]' -> 'numb'."""
    text = title or ""
    previous = None
    while previous != text:  # nested or repeated suffixes
        previous = text
        text = _BRACKETS.sub("", text)
        text = _DASH_SUFFIX.sub("", text)
        text = _FEAT.sub("", text)
    return _fold(text) or _fold(title or "")


def normal_artist(artist: str | None) -> str:
    """Case, accents and punctuation folded; '' for unknown (no per-artist cap applies then)."""
    return _fold(_FEAT.sub("", artist or ""))


def duplicate_key(title: str | None, artist: str | None) -> str:
    """Songs with equal keys are near-duplicates: the list keeps only the best-ranked one."""
    return f"{normal_title(title)}\x1f{normal_artist(artist)}"


def shuffle_key(seed: int, track_id: int) -> str:
    """A track's place inside its score step for a given seed (stable across processes)."""
    return hashlib.sha256(f"{seed}:{track_id}".encode()).hexdigest()


def score_step(score: float) -> int:
    """Near-equal scores share a step: [0.86, 0.88) is one, [0.88, 0.90) the next."""
    return math.floor(round(score, 6) / NEAR_EQUAL)


# ----------------------------------------------------------------------------------- words
_WORDS = {  # (valence high, arousal high) -> (mild, strong)
    (True, True): ("cheerful · lively", "excited · happy"),
    (False, True): ("restless · uneasy", "tense · anxious"),
    (False, False): ("wistful · subdued", "sad · gloomy"),
    (True, False): ("relaxed · gentle", "calm · content"),
}
NEUTRAL_REACH = 0.05  # within this of the centre (0.5, 0.5) on both axes: "neutral · even"
STRONG_REACH = 0.15  # this far from the centre on either axis: the strong word pair


def mood_words(valence: float | None, arousal: float | None) -> str:
    """Plain words for a point of the VA plane: its quadrant, mild or strong by distance."""
    if valence is None or arousal is None or not (math.isfinite(valence) and math.isfinite(arousal)):
        return "unknown"
    reach = max(abs(valence - 0.5), abs(arousal - 0.5))
    if reach < NEUTRAL_REACH:
        return "neutral · even"
    mild, strong = _WORDS[(valence >= 0.5, arousal >= 0.5)]
    return strong if reach >= STRONG_REACH else mild


# ---------------------------------------------------------------------------------- window
@dataclass(frozen=True)
class Window:
    first: int  # index of the first clip in the window (clips sorted by start)
    last: int  # index of the last clip, inclusive
    start: float
    end: float
    score: float  # mean clip score inside the window


def best_window(starts: ArrayLike, ends: ArrayLike, scores: ArrayLike, seconds: float) -> Window:
    """The run of consecutive clips, at most ``seconds`` long, with the highest mean score.

    Clip boundaries are the only cut points, so the window is as many whole clips as fit in
    ``seconds`` (at least one) and lies inside the song; a song shorter than the window is
    returned whole. Ties go to the earliest window.
    """
    starts = np.asarray(starts, np.float64)
    ends = np.asarray(ends, np.float64)
    scores = np.asarray(scores, np.float64)
    if len(starts) == 0 or not (len(starts) == len(ends) == len(scores)):
        raise ValueError("best_window needs one start, end and score per clip (at least one clip)")
    order = np.argsort(starts, kind="stable")
    if not np.array_equal(order, np.arange(len(starts))):
        raise ValueError("best_window: clips must be sorted by start")
    n = len(starts)
    eps = 1e-6
    if ends[-1] - starts[0] <= seconds + eps:
        return Window(0, n - 1, float(starts[0]), float(ends[-1]), float(scores.mean()))
    # The most clips any run that fits holds: that is the window length in clips.
    m = 1
    j = 0
    for i in range(n):
        j = max(j, i)
        while j + 1 < n and ends[j + 1] - starts[i] <= seconds + eps:
            j += 1
        if ends[j] - starts[i] <= seconds + eps:
            m = max(m, j - i + 1)
    sums = np.concatenate([[0.0], np.cumsum(scores)])
    best: Window | None = None
    for i in range(n - m + 1):
        last = i + m - 1
        if ends[last] - starts[i] > seconds + eps:
            continue
        mean = round(float((sums[last + 1] - sums[i]) / m), 9)
        if best is None or mean > best.score:
            best = Window(i, last, float(starts[i]), float(ends[last]), mean)
    if best is None:  # irregular clips: fall back to the best single clip
        i = int(np.argmax(scores))
        return Window(i, i, float(starts[i]), float(ends[i]), float(scores[i]))
    return best


# -------------------------------------------------------------------------------- playlist
@dataclass(frozen=True)
class Candidate:
    """One song a photo could get: its match score, VA and identity for 'no song twice'."""

    track_id: int
    score: float
    valence: float
    arousal: float
    key: str  # duplicate key: two candidates with the same key are the same song (so the same artist)
    artist: str = ""


_NO_PLAN = (
    "playlist: not enough different songs among the candidates to give every photo its own; "
    "add songs to the catalogue, send fewer photos or relax max_per_artist"
)


def plan_playlist(
    candidates: Sequence[Sequence[Candidate]],
    photo_va: Sequence[Sequence[float]],
    smoothness: float = 1.0,
    max_per_artist: int = 0,
) -> list[Candidate]:
    """One song per photo, no song twice, maximising the summed match score minus
    ``smoothness`` times each transition's VA jump beyond the photos' own jump there.

    Viterbi over each photo's candidates (transition cost: max(0, |song_i - song_{i-1}| -
    |photo_i - photo_{i-1}|), so songs may move as far as the photos do). "No song twice" and
    the artist cap are not Markov constraints: when the best path repeats a song, the song stays
    at one photo and is banned at the others, and when it exceeds ``max_per_artist`` the artist
    is banned at one photo; then the DP runs again. Banning blindly dead-ended (issue 24: with
    ``[[X, Y], [Z], [X]]`` keeping X at the first photo leaves the third with nothing), so a ban
    is applied only if a complete assignment still exists afterwards, checked by bipartite
    matching (``_Assignment``). Such a ban always exists while one did before, and every round
    removes at least one candidate, so this ends with a plan whenever any plan exists. Raises
    OptionError only when none does.
    """
    count = len(candidates)
    if count == 0:
        return []
    if len(photo_va) != count:
        raise ValueError("plan_playlist: one VA per photo")
    allowed = [list(c) for c in candidates]
    pva = np.asarray(photo_va, np.float64).reshape(-1, 2)
    feasible = _Assignment(allowed, max_per_artist)
    if not feasible.solve():
        raise OptionError(_NO_PLAN)
    keys: dict[str, int] = {}
    columns = [_Column.of(c, keys) for c in allowed]
    for _ in range(sum(len(c) for c in allowed) + 1):
        path = _viterbi(columns, pva, smoothness)
        conflicts = _conflicts(path, max_per_artist)
        if not conflicts:
            return path
        # Every conflict mended its preferred way in one round, else the first one alone.
        tries = conflicts[0] if len(conflicts) == 1 else [[b for c in conflicts for b in c[0]], *conflicts[0]]
        for ban in tries:
            trial = list(allowed)
            for p, unwanted in ban:
                trial[p] = [c for c in trial[p] if not unwanted(c)]
            changed = {p for p, _ in ban}
            if feasible.try_with(trial, changed):
                allowed = trial
                for p in changed:
                    columns[p] = _Column.of(allowed[p], keys)
                break
        else:  # unreachable while _Assignment is right: some ban always keeps a plan
            return feasible.path()
    return feasible.path()


@dataclass(frozen=True)
class _Column:
    """One photo's remaining candidates as the arrays the DP needs (rebuilt only when banned)."""

    cands: list[Candidate]
    scores: np.ndarray
    va: np.ndarray  # [n, 2]
    keys: np.ndarray  # interned duplicate keys

    @classmethod
    def of(cls, cands: list[Candidate], keys: dict[str, int]) -> _Column:
        return cls(
            cands,
            np.array([c.score for c in cands], np.float64),
            np.array([[c.valence, c.arousal] for c in cands], np.float64).reshape(-1, 2),
            np.array([keys.setdefault(c.key, len(keys)) for c in cands], np.int64),
        )


def path_penalty(path: Sequence[Candidate], photos: Sequence[tuple[float, float]]) -> float:
    """What ``smoothness`` multiplies along a chosen path: each VA jump between consecutive songs
    beyond the jump between their photos (the transition cost ``_viterbi`` minimises)."""
    total = 0.0
    for i in range(1, len(path)):
        jump = float(np.hypot(path[i].valence - path[i - 1].valence, path[i].arousal - path[i - 1].arousal))
        allowance = float(np.hypot(photos[i][0] - photos[i - 1][0], photos[i][1] - photos[i - 1][1]))
        total += max(0.0, jump - allowance)
    return total


def _viterbi(columns: list[_Column], pva: np.ndarray, smoothness: float) -> list[Candidate]:
    best = columns[0].scores
    back: list[np.ndarray] = []
    for i in range(1, len(columns)):
        prev, cur = columns[i - 1], columns[i]
        diff = cur.va[:, None, :] - prev.va[None, :, :]
        jump = np.sqrt((diff * diff).sum(axis=2))  # [cur, prev]
        allowance = math.hypot(*(pva[i] - pva[i - 1]))
        total = best[None, :] - smoothness * np.maximum(0.0, jump - allowance)
        same = cur.keys[:, None] == prev.keys[None, :]
        total = np.where(same, -np.inf, total)  # never the same song twice in a row
        arg = np.argmax(total, axis=1)  # ties: the earlier (better-ranked) previous candidate
        back.append(arg)
        best = total[np.arange(len(cur.cands)), arg] + cur.scores
    j = int(np.argmax(best))
    path = [columns[-1].cands[j]]
    for i in range(len(columns) - 1, 0, -1):
        j = int(back[i - 1][j])
        path.append(columns[i - 1].cands[j])
    return path[::-1]


Ban = list[tuple[int, Callable[[Candidate], bool]]]  # (photo, which of its candidates go)


def _conflicts(path: list[Candidate], max_per_artist: int) -> list[list[Ban]]:
    """Each broken rule of ``path`` as the bans that would mend it, preferred first.

    A repeated song: keep it where it scores best (then earliest), ban it at the other places.
    An artist over the cap (looked at once no song repeats): ban it at all its places beyond
    the best ``max_per_artist``, or failing that at one place, the worst-scoring (then latest)
    first. Empty when the path breaks no rule."""
    out: list[list[Ban]] = []
    by_key: dict[str, list[int]] = {}
    for i, c in enumerate(path):
        by_key.setdefault(c.key, []).append(i)
    for key, positions in by_key.items():
        if len(positions) > 1:
            keeps = sorted(positions, key=lambda p: (-path[p].score, p))
            unwanted = lambda c, key=key: c.key == key  # noqa: E731
            out.append([[(p, unwanted) for p in positions if p != keep] for keep in keeps])
    if out or max_per_artist <= 0:
        return out
    by_artist: dict[str, list[int]] = {}
    for i, c in enumerate(path):
        if c.artist:
            by_artist.setdefault(c.artist, []).append(i)
    for artist, positions in by_artist.items():
        if len(positions) > max_per_artist:
            worst_first = sorted(positions, key=lambda p: (path[p].score, -p))
            unwanted = lambda c, artist=artist: c.artist == artist  # noqa: E731
            excess = [(p, unwanted) for p in worst_first[: len(positions) - max_per_artist]]
            out.append([excess] + [[(p, unwanted)] for p in worst_first])
    return out


class _Assignment:
    """A complete assignment of distinct songs to photos within the artist cap, if one exists.

    Maximum flow source -> photo (1) -> song (1) -> artist (cap) -> sink, by augmenting paths
    from each unassigned photo (Ford-Fulkerson; a photo once assigned stays assigned, so one
    failed search proves that no complete assignment exists). ``try_with`` re-solves for
    narrower candidate lists starting from the current assignment, so a ban that the current
    assignment survives costs one pass over the photos.
    """

    def __init__(self, allowed: list[list[Candidate]], max_per_artist: int) -> None:
        self.cap = max_per_artist if max_per_artist > 0 else len(allowed)
        self._song: dict[str, int] = {}
        self._artist: dict[str, int] = {}
        self.song_artist: list[int] = []  # -1: unknown artist, never capped
        self.allowed = allowed
        self.choice: list[Candidate | None] = [None] * len(allowed)

    def _song_of(self, c: Candidate) -> int:
        s = self._song.get(c.key)
        a = self._artist.setdefault(c.artist, len(self._artist)) if c.artist else -1
        if s is None:
            s = self._song[c.key] = len(self.song_artist)
            self.song_artist.append(a)
        elif self.song_artist[s] != a:
            raise ValueError(f"plan_playlist: candidates with key {c.key!r} name different artists")
        return s

    def try_with(self, allowed: list[list[Candidate]], changed: set[int]) -> bool:
        """Solve for ``allowed`` (narrower than before at ``changed``); on success keep it, else
        change nothing. Free when the current assignment survives the change."""
        if all(any(c is self.choice[p] for c in allowed[p]) for p in changed):
            self.allowed = allowed
            return True
        old = (self.allowed, self.choice)
        self.allowed = allowed
        if self.solve():
            return True
        self.allowed, self.choice = old
        return False

    def path(self) -> list[Candidate]:
        """The assignment found by the last successful ``solve``."""
        assert all(c is not None for c in self.choice)
        return list(self.choice)  # type: ignore[arg-type]

    def solve(self) -> bool:
        """Complete the current assignment for ``self.allowed``; False when none exists."""
        n = len(self.allowed)
        options: list[dict[int, Candidate]] = []
        for cands in self.allowed:
            songs: dict[int, Candidate] = {}
            for c in cands:
                songs.setdefault(self._song_of(c), c)
            options.append(songs)
        assign = [-1] * n
        holder: dict[int, int] = {}
        used = [0] * len(self._artist)
        for p, chosen in enumerate(self.choice):  # keep what is still allowed and consistent
            if chosen is None:
                continue
            s = self._song_of(chosen)
            a = self.song_artist[s]
            if s in options[p] and s not in holder and (a < 0 or used[a] < self.cap):
                assign[p], holder[s] = s, p
                if a >= 0:
                    used[a] += 1
        for root in range(n):
            if assign[root] < 0 and not self._augment(root, options, assign, holder, used):
                return False
        self.choice = [options[p][assign[p]] for p in range(n)]
        return True

    def _augment(
        self, root: int, options: list[dict[int, Candidate]], assign: list[int], holder: dict[int, int], used: list[int]
    ) -> bool:
        """One augmenting path from the unassigned photo ``root`` (breadth first), applied."""
        parent: dict[int, tuple[int, int]] = {root: (-1, -1)}  # photo -> (photo before it, song it takes)
        seen_artists: set[int] = set()
        queue = [root]
        for p in queue:
            for s in options[p]:
                if s == assign[p]:
                    continue
                q = holder.get(s)
                if q is not None:  # s moves to p; its holder q must find another song
                    if q not in parent:
                        parent[q] = (p, s)
                        queue.append(q)
                    continue
                a = self.song_artist[s]
                if a < 0 or used[a] < self.cap:
                    self._apply(p, s, parent, assign, holder, used)
                    return True
                if a in seen_artists:
                    continue
                seen_artists.add(a)
                for s2, q in list(holder.items()):  # the artist is full: one of its songs makes room
                    if self.song_artist[s2] == a and q not in parent:
                        parent[q] = (p, s)
                        queue.append(q)
        return False

    def _apply(
        self,
        last: int,
        song: int,
        parent: dict[int, tuple[int, int]],
        assign: list[int],
        holder: dict[int, int],
        used: list[int],
    ) -> None:
        moves = [(last, song)]
        p = last
        while parent[p][0] >= 0:
            moves.append(parent[p])
            p = parent[p][0]
        for p, _ in moves:  # release every old song first, then take the new ones
            old = assign[p]
            if old >= 0 and holder.get(old) == p:
                del holder[old]
                if self.song_artist[old] >= 0:
                    used[self.song_artist[old]] -= 1
        for p, s in moves:
            assign[p], holder[s] = s, p
            if self.song_artist[s] >= 0:
                used[self.song_artist[s]] += 1
