"""Loaders for the emotion-labelled image and music sets (see ``../shared/data/README.md``).

Every loader returns ``(items, report)``: a list of frozen items whose valence/arousal (VA)
is already on [0, 1], and a :class:`LoadReport` that says how many labelled entries were
skipped because their media file is absent (the data deliberately holds part of each set
back, so label files list items that are not there).

VA is mapped to [0, 1] "by minimum and range", as CDCML does, using the *rating scale's*
minimum and range, not the sample's: ``(x - 1) / 6`` for OASIS' 1-7 Likert scale,
``(x - 1) / 8`` for 1-9 scales (Emotion6, DEAM static), ``(x + 1) / 2`` for [-1, 1]
(VGMIDI, DEAM dynamic). Scale-based mapping keeps one set's labels comparable across
subsets and splits, which a sample min/max would not.

Malformed label data raises :class:`DatasetFormatError` naming the file and line (or JSON
key), so a bad row is found at once instead of silently training on garbage.

Ids are prefixed with the source (``"oasis:Acorns 1"``, ``"vgmidi:<midi stem>"``) so items
from different sets never collide when they are mixed or split by group.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from model.audio import AUDIO_EXTENSIONS

log = logging.getLogger(__name__)

Modality = Literal["image", "music"]

#: Weak VA targets for Russell quadrants (Q1 high V/high A ... Q4 high V/low A).
QUADRANT_VA: dict[str, tuple[float, float]] = {
    "Q1": (0.75, 0.75),
    "Q2": (0.25, 0.75),
    "Q3": (0.25, 0.25),
    "Q4": (0.75, 0.25),
}

LIKERT_7 = (1.0, 7.0)
SCALE_9 = (1.0, 9.0)
BIPOLAR = (-1.0, 1.0)
UNIT = (0.0, 1.0)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MIDI_EXTENSIONS = frozenset({".mid", ".midi"})

_MAX_EXAMPLES = 5
_TOL = 1e-9


class DatasetFormatError(ValueError):
    """A label file does not have the documented format (message names file and line)."""


@dataclass(frozen=True)
class ImageItem:
    """One rated image; ``valence``/``arousal`` on [0, 1]."""

    path: Path
    valence: float
    arousal: float
    source: str
    item_id: str


@dataclass(frozen=True)
class MusicItem:
    """One rated piece of music (MIDI to render, or audio).

    ``va_series`` holds time-varying labels as ``((start_s, end_s, valence, arousal), ...)``
    on [0, 1] (VGMIDI: one entry per measure, averaged over annotators; DEAM: one per
    annotation sample); ``segment_seconds`` is the length of one such entry. Both are
    ``None`` for sets with a single label per piece. ``weak`` marks quadrant-derived targets
    (EMOPIA, Panda-4Q) that only say which quarter of VA space a piece is in.
    """

    path: Path
    valence: float
    arousal: float
    source: str
    song_id: str
    kind: str  # "midi" | "audio"
    va_series: tuple[tuple[float, float, float, float], ...] | None = None
    segment_seconds: float | None = None
    weak: bool = False


@dataclass
class LoadReport:
    """What a loader found: items loaded, labelled entries skipped for missing media."""

    source: str
    loaded: int
    missing: int
    missing_examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers


def to_unit(x: float, scale: tuple[float, float]) -> float:
    """Map a rating on ``scale`` (min, max) to [0, 1] by the scale's minimum and range."""
    lo, hi = scale
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


def _where(path: Path, line: int | None = None, key: str | None = None) -> str:
    if line is not None:
        return f"{path}, line {line}"
    if key is not None:
        return f"{path}, entry {key!r}"
    return str(path)


def _rating(
    raw: object,
    scale: tuple[float, float],
    what: str,
    path: Path,
    line: int | None = None,
    key: str | None = None,
) -> float:
    """Parse one rating, check it lies on its scale, and map it to [0, 1]."""
    where = _where(path, line, key)
    if isinstance(raw, bool):
        raise DatasetFormatError(f"{where}: {what} is not a number: {raw!r}")
    try:
        value = float(raw.strip() if isinstance(raw, str) else raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetFormatError(f"{where}: {what} is not a number: {raw!r}") from None
    lo, hi = scale
    if not math.isfinite(value) or value < lo - _TOL or value > hi + _TOL:
        raise DatasetFormatError(f"{where}: {what} {raw!r} is outside its scale [{lo:g}, {hi:g}]")
    return to_unit(value, scale)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return path.read_text(encoding="latin-1")


def _csv_rows(path: Path, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for non-blank rows; any line ending (CR, LF, CRLF)."""
    lines = _read_text(path).splitlines()
    for lineno, row in enumerate(csv.reader(lines, delimiter=delimiter), start=1):
        if row and any(cell.strip() for cell in row):
            yield lineno, row


def _header_index(path: Path, header: list[str], wanted: Sequence[str]) -> dict[str, int]:
    """Column positions by (whitespace- and case-insensitive) name."""
    names = {h.strip().lower(): i for i, h in enumerate(header)}
    missing = [w for w in wanted if w.lower() not in names]
    if missing:
        raise DatasetFormatError(
            f"{_where(path, 1)}: header lacks column(s) {missing}; found {[h.strip() for h in header]}"
        )
    return {w: names[w.lower()] for w in wanted}


def _labelled_rows(path: Path, wanted: Sequence[str]) -> tuple[Iterator[tuple[int, list[str]]], dict[str, int]]:
    """A label CSV's remaining rows, each checked (as it is read) to be as wide as the header, and
    the positions of the ``wanted`` columns."""
    rows = _csv_rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DatasetFormatError(f"{path}: empty file") from None
    return _rows_of_width(path, rows, len(header)), _header_index(path, header, wanted)


def _rows_of_width(path: Path, rows: Iterator[tuple[int, list[str]]], width: int) -> Iterator[tuple[int, list[str]]]:
    for lineno, row in rows:
        _check_width(path, lineno, row, width)
        yield lineno, row


def _check_width(path: Path, lineno: int, row: list[str], width: int) -> None:
    if len(row) != width:
        raise DatasetFormatError(f"{_where(path, lineno)}: expected {width} columns, found {len(row)}")


def _finish(source: str, loaded: int, missing: list[str], notes: list[str] | None = None) -> LoadReport:
    report = LoadReport(source, loaded, len(missing), missing[:_MAX_EXAMPLES], list(notes or []))
    if missing:
        log.warning(
            "%s: skipped %d labelled entries whose media file is missing (e.g. %s)",
            source,
            len(missing),
            ", ".join(missing[:3]),
        )
    for note in report.notes:
        log.info("%s: %s", source, note)
    return report


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


# --------------------------------------------------------------------------- images


def load_oasis(root: str | Path) -> tuple[list[ImageItem], LoadReport]:
    """OASIS: ``OASIS.csv`` (CR line endings, 1-7 Likert), images ``images/<Theme>.jpg``."""
    root = Path(root)
    label_file = _require_file(root / "OASIS.csv", "OASIS label file")
    rows, col = _labelled_rows(label_file, ["Theme", "Valence_mean", "Arousal_mean"])
    items: list[ImageItem] = []
    missing: list[str] = []
    for lineno, row in rows:
        theme = row[col["Theme"]].strip()
        if not theme:
            raise DatasetFormatError(f"{_where(label_file, lineno)}: empty Theme")
        v = _rating(row[col["Valence_mean"]], LIKERT_7, "Valence_mean", label_file, lineno)
        a = _rating(row[col["Arousal_mean"]], LIKERT_7, "Arousal_mean", label_file, lineno)
        path = root / "images" / f"{theme}.jpg"
        if not path.is_file():
            missing.append(path.name)
            continue
        items.append(ImageItem(path, v, a, "oasis", f"oasis:{theme}"))
    return items, _finish("oasis", len(items), missing)


EMOTION6_CATEGORIES = ("anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral")


def _emotion6_rows(label_file: Path) -> Iterator[tuple[int, list[str]]]:
    """The label rows of ``ground_truth.txt`` (header skipped, widths checked)."""
    width: int | None = None
    for lineno, row in _csv_rows(label_file, delimiter="\t"):
        if width is None and row[0].strip().startswith("["):  # "[image_filename]	[valence] ..."
            width = len(row)
            continue
        if width is None:
            width = len(row)
        _check_width(label_file, lineno, row, width)
        if width < 3:
            raise DatasetFormatError(f"{_where(label_file, lineno)}: expected >= 3 columns")
        yield lineno, row


def _emotion6_id(rel: str) -> str:
    return f"emotion6:{Path(rel).with_suffix('')}"


def load_emotion6(root: str | Path) -> tuple[list[ImageItem], LoadReport]:
    """Emotion6: tab-separated ``ground_truth.txt`` (file, valence, arousal on 1-9, 7 probs)."""
    root = Path(root)
    label_file = _require_file(root / "ground_truth.txt", "Emotion6 label file")
    items: list[ImageItem] = []
    missing: list[str] = []
    for lineno, row in _emotion6_rows(label_file):
        rel = row[0].strip()
        v = _rating(row[1], SCALE_9, "valence", label_file, lineno)
        a = _rating(row[2], SCALE_9, "arousal", label_file, lineno)
        path = root / "images" / rel
        if not path.is_file():
            missing.append(rel)
            continue
        items.append(ImageItem(path, v, a, "emotion6", _emotion6_id(rel)))
    return items, _finish("emotion6", len(items), missing)


def emotion6_distributions(root: str | Path) -> dict[str, np.ndarray]:
    """Each Emotion6 photo's distribution over ``EMOTION6_CATEGORIES`` (the raters' shares), by
    item id. Kept apart from ``ImageItem`` because only one source has it: an auxiliary training
    target, not a label every photo carries."""
    label_file = _require_file(Path(root) / "ground_truth.txt", "Emotion6 label file")
    out: dict[str, np.ndarray] = {}
    for lineno, row in _emotion6_rows(label_file):
        if len(row) < 3 + len(EMOTION6_CATEGORIES):
            raise DatasetFormatError(f"{_where(label_file, lineno)}: expected 7 emotion probabilities")
        try:
            probs = np.array([float(x) for x in row[3 : 3 + len(EMOTION6_CATEGORIES)]], np.float32)
        except ValueError as e:
            raise DatasetFormatError(f"{_where(label_file, lineno)}: {e}") from None
        if (probs < 0).any() or probs.sum() <= 0:
            raise DatasetFormatError(f"{_where(label_file, lineno)}: emotion probabilities must be >= 0, not all 0")
        out[_emotion6_id(row[0].strip())] = probs / probs.sum()
    return out


# --------------------------------------------------------------------------- music


def _vgmidi_dirs(root: Path) -> tuple[Path, Path]:
    base = root / "labelled" if (root / "labelled").is_dir() else root
    return base / "annotations", base / "midi"


def _mean_series(
    path: Path, piece: str, annotations: list[tuple[str, dict]], measures: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-measure mean over annotators; tolerates lists longer/shorter than ``measures``.

    Longer lists are cut to the piece's measure count (three real annotators have one extra
    value); shorter ones contribute to the measures they cover, and measures nobody rated
    are dropped from the end of the series.
    """
    sums = np.zeros((2, measures))
    counts = np.zeros((2, measures))
    for key, ann in annotations:
        for dim, name in enumerate(("valence", "arousal")):
            values = ann.get(name)
            if not isinstance(values, list):
                raise DatasetFormatError(f"{_where(path, key=key)}: {name} is not a list")
            for m, raw in enumerate(values[:measures]):
                sums[dim, m] += _rating(raw, BIPOLAR, f"{name}[{m}]", path, key=key)
                counts[dim, m] += 1
    # Lists are prefixes, so the measures every dimension has a value for are a prefix too.
    covered = int(np.sum((counts > 0).all(axis=0)))
    if covered == 0:
        raise DatasetFormatError(f"{_where(path, key=piece)}: annotations hold no values")
    mean = sums[:, :covered] / counts[:, :covered]
    return mean[0], mean[1]


def load_vgmidi(root: str | Path) -> tuple[list[MusicItem], LoadReport]:
    """VGMIDI labelled pieces: per-measure VA from ``labelled/annotations/*.json``.

    Measure length is ``duration / measures`` (constant per piece). The piece label is the
    mean of the per-measure series; ``va_series`` keeps the series for clip-level targets.
    """
    root = Path(root)
    ann_dir, midi_dir = _vgmidi_dirs(root)
    files = sorted(ann_dir.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no VGMIDI annotation json under {ann_dir}")
    items: list[MusicItem] = []
    missing: list[str] = []
    notes: list[str] = []
    referenced: set[str] = set()
    for path in files:
        try:
            doc = json.loads(_read_text(path))
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{_where(path, exc.lineno)}: invalid JSON: {exc.msg}") from None
        if (
            not isinstance(doc, dict)
            or not isinstance(doc.get("pieces"), dict)
            or not isinstance(doc.get("annotations"), dict)
        ):
            raise DatasetFormatError(f"{path}: expected objects 'pieces' and 'annotations'")
        by_piece: dict[str, list[tuple[str, dict]]] = {}
        for key, ann in doc["annotations"].items():
            piece_key = key.rsplit("_", 1)[0]
            if not isinstance(ann, dict):
                raise DatasetFormatError(f"{_where(path, key=key)}: annotation is not an object")
            by_piece.setdefault(piece_key, []).append((key, ann))
        orphans = sorted(set(by_piece) - set(doc["pieces"]))
        if orphans:
            notes.append(f"{path.name}: annotations for pieces not listed in 'pieces': {orphans}")
        for piece_key, piece in doc["pieces"].items():
            try:
                midi_name = str(piece["midi"])
                duration = float(piece["duration"])
                measures = int(piece["measures"])
            except (KeyError, TypeError, ValueError):
                raise DatasetFormatError(
                    f"{_where(path, key=piece_key)}: needs 'midi', numeric 'duration' and 'measures'"
                ) from None
            if duration <= 0 or measures <= 0:
                raise DatasetFormatError(f"{_where(path, key=piece_key)}: duration and measures must be positive")
            referenced.add(midi_name)
            anns = by_piece.get(piece_key, [])
            if not anns:
                notes.append(f"{path.name}: {piece_key} has no annotations; skipped")
                continue
            val, aro = _mean_series(path, piece_key, anns, measures)
            midi_path = midi_dir / midi_name
            if not midi_path.is_file():
                missing.append(midi_name)
                continue
            seg = duration / measures
            series = tuple((m * seg, (m + 1) * seg, float(val[m]), float(aro[m])) for m in range(len(val)))
            items.append(
                MusicItem(
                    midi_path,
                    float(np.mean(val)),
                    float(np.mean(aro)),
                    "vgmidi",
                    f"vgmidi:{Path(midi_name).stem}",
                    "midi",
                    series,
                    seg,
                    False,
                )
            )
    if midi_dir.is_dir():
        unlabelled = sorted(
            p.name for p in midi_dir.iterdir() if p.suffix.lower() in MIDI_EXTENSIONS and p.name not in referenced
        )
        if unlabelled:
            notes.append(f"{len(unlabelled)} MIDI file(s) without per-measure labels: {unlabelled}")
    return items, _finish("vgmidi", len(items), missing, notes)


_EMOPIA_NAME = re.compile(r"^(Q[1-4])_(.+?)(?:_(\d+))?$")


def load_emopia(root: str | Path) -> tuple[list[MusicItem], LoadReport]:
    """EMOPIA clips ``Q<n>_<song>_<k>.mid``: quadrant prefix gives a weak VA target.

    There is no label list here, so nothing can be reported missing.
    """
    root = Path(root)
    midi_dir = root / "midis" if (root / "midis").is_dir() else root
    files = sorted(p for p in midi_dir.iterdir() if p.suffix.lower() in MIDI_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"no EMOPIA MIDI files under {midi_dir}")
    items: list[MusicItem] = []
    for path in files:
        match = _EMOPIA_NAME.match(path.stem)
        if not match:
            raise DatasetFormatError(f"{path}: EMOPIA file name must start with Q1_..Q4_")
        quadrant, song = match.group(1), match.group(2)
        v, a = QUADRANT_VA[quadrant]
        items.append(MusicItem(path, v, a, "emopia", f"emopia:{quadrant}_{song}", "midi", None, None, True))
    return items, _finish("emopia", len(items), [])


def load_panda4q(root: str | Path) -> tuple[list[MusicItem], LoadReport]:
    """Panda-4Q: ``annotations.csv`` (Song,Quadrant) for 900 songs, audio ``audio/Q*/<song>.*``.

    The folder a file sits in is its quadrant (as documented); a disagreement with the
    annotation file is noted in the report.
    """
    root = Path(root)
    label_file = _require_file(root / "annotations.csv", "Panda-4Q annotations")
    present: dict[str, Path] = {}
    for audio in sorted((root / "audio").glob("Q*/*")):
        if audio.suffix.lower() in AUDIO_EXTENSIONS and audio.parent.name in QUADRANT_VA:
            present.setdefault(audio.stem, audio)
    rows, col = _labelled_rows(label_file, ["Song", "Quadrant"])
    items: list[MusicItem] = []
    missing: list[str] = []
    notes: list[str] = []
    listed: set[str] = set()
    for lineno, row in rows:
        song, quadrant = row[col["Song"]].strip(), row[col["Quadrant"]].strip().upper()
        if not song or quadrant not in QUADRANT_VA:
            raise DatasetFormatError(
                f"{_where(label_file, lineno)}: expected a song id and a quadrant Q1..Q4, got {row!r}"
            )
        listed.add(song)
        path = present.get(song)
        if path is None:
            missing.append(song)
            continue
        if path.parent.name != quadrant:
            notes.append(f"{song}: annotations say {quadrant}, file is in {path.parent.name}")
        items.append(_panda_item(path))
    extra = sorted(set(present) - listed)
    for song in extra:
        items.append(_panda_item(present[song]))
    if extra:
        notes.append(f"{len(extra)} audio file(s) not in annotations.csv, labelled by folder")
    return items, _finish("panda4q", len(items), missing, notes)


def _panda_item(path: Path) -> MusicItem:
    v, a = QUADRANT_VA[path.parent.name]
    return MusicItem(path, v, a, "panda4q", f"panda4q:{path.stem}", "audio", None, None, True)


#: Where each GEMS category sits in valence-arousal space ([0, 1] each), after the circumplex
#: placements of the GEMS terms (Zentner et al. 2008; Aljanaki et al. 2016, Fig. 3): a modelling
#: choice, stated in the model card. Emotify has no VA ratings, only these induced-emotion votes.
GEMS_VA: dict[str, tuple[float, float]] = {
    "amazement": (0.70, 0.75),
    "solemnity": (0.45, 0.40),
    "tenderness": (0.75, 0.30),
    "nostalgia": (0.45, 0.30),
    "calmness": (0.65, 0.15),
    "power": (0.60, 0.85),
    "joyful_activation": (0.85, 0.80),
    "tension": (0.20, 0.80),
    "sadness": (0.15, 0.25),
}
#: A song's VA is the vote-weighted centroid of its categories' places. Listeners tick up to three
#: categories, so centroids crowd the centre; they are standardised over every listed song and
#: spread at this standard deviation around 0.5 (about the spread of the photos' human ratings).
GEMS_SPREAD = 0.18


def _gems_centroids(shares: np.ndarray) -> np.ndarray:
    """[n, 9] vote shares (GEMS_VA order) -> [n, 2] VA, standardised and spread (see GEMS_SPREAD)."""
    places = np.array(list(GEMS_VA.values()), np.float64)
    weight = shares.sum(axis=1, keepdims=True)
    centroid = shares @ places / np.where(weight > 0, weight, 1.0)
    mean, std = centroid.mean(axis=0), centroid.std(axis=0)
    return np.clip(0.5 + GEMS_SPREAD * (centroid - mean) / np.where(std > 0, std, 1.0), 0.02, 0.98)


def load_emotify(root: str | Path) -> tuple[list[MusicItem], LoadReport]:
    """Emotify: ``annotations.csv`` (per-song GEMS vote shares ``p_<category>`` and ``file``),
    1-minute real recordings under ``audio/<genre>/``. VA from the votes by :data:`GEMS_VA`."""
    root = Path(root)
    label_file = _require_file(root / "annotations.csv", "Emotify annotations")
    cats = [f"p_{c}" for c in GEMS_VA]
    rows, col = _labelled_rows(label_file, ["track_id", "file", *cats])
    listed: list[tuple[str, Path]] = []
    shares: list[list[float]] = []
    for lineno, row in rows:
        shares.append([_rating(row[col[c]], (0.0, 1.0), c, label_file, lineno) for c in cats])
        listed.append((row[col["track_id"]].strip(), root / row[col["file"]].strip()))
    if not listed:
        raise DatasetFormatError(f"{label_file}: no songs listed")
    va = _gems_centroids(np.array(shares, np.float64))
    items: list[MusicItem] = []
    missing: list[str] = []
    for (track, path), (v, a) in zip(listed, va, strict=True):
        if not path.is_file():
            missing.append(track)
            continue
        items.append(MusicItem(path, float(v), float(a), "emotify", f"emotify:{track}", "audio"))
    return items, _finish("emotify", len(items), missing)


def load_eimg(root: str | Path) -> tuple[list[MusicItem], LoadReport]:
    """EIMG MIDI pieces: ``labels.csv`` (``file``, ``valence_mean``, ``arousal_mean`` on 1-9, the
    mean of 6 annotators), files under ``midi/``."""
    root = Path(root)
    label_file = _require_file(root / "labels.csv", "EIMG labels")
    midi_dir = root / "midi" if (root / "midi").is_dir() else root
    rows, col = _labelled_rows(label_file, ["file", "valence_mean", "arousal_mean"])
    items: list[MusicItem] = []
    missing: list[str] = []
    for lineno, row in rows:
        name = row[col["file"]].strip()
        v = _rating(row[col["valence_mean"]], (1.0, 9.0), "valence_mean", label_file, lineno)
        a = _rating(row[col["arousal_mean"]], (1.0, 9.0), "arousal_mean", label_file, lineno)
        path = midi_dir / name
        if not path.is_file():
            missing.append(name)
            continue
        items.append(MusicItem(path, v, a, "eimg", f"eimg:{Path(name).stem}", "midi"))
    return items, _finish("eimg", len(items), missing)


_DEAM_AVG = Path("annotations") / "annotations averaged per song"
_DEAM_SAMPLE = re.compile(r"^sample_(\d+)ms$")


def _deam_dynamic(path: Path) -> tuple[dict[str, list[float]], float, float]:
    """Per-song dynamic series on [-1, 1] → ({song: values on [0,1]}, first_s, step_s)."""
    rows = _csv_rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DatasetFormatError(f"{path}: empty file") from None
    names = [h.strip() for h in header]
    if not names or names[0].lower() != "song_id":
        raise DatasetFormatError(f"{_where(path, 1)}: first column must be song_id")
    times = []
    for name in names[1:]:
        match = _DEAM_SAMPLE.match(name)
        if not match:
            raise DatasetFormatError(f"{_where(path, 1)}: unexpected column {name!r}")
        times.append(int(match.group(1)) / 1000.0)
    if not times:
        raise DatasetFormatError(f"{_where(path, 1)}: no sample_<ms>ms columns")
    step = times[1] - times[0] if len(times) > 1 else 0.5
    series: dict[str, list[float]] = {}
    for lineno, row in rows:
        if len(row) > len(names):
            raise DatasetFormatError(f"{_where(path, lineno)}: expected at most {len(names)} columns, found {len(row)}")
        song = row[0].strip()
        values: list[float] = []
        for j, cell in enumerate(row[1:]):
            if not cell.strip() or cell.strip().lower() == "nan":
                break  # shorter songs end early
            values.append(_rating(cell, BIPOLAR, names[j + 1], path, lineno))
        series[song] = values
    return series, times[0], step


def load_deam(root: str | Path) -> tuple[list[MusicItem], LoadReport]:
    """DEAM: static song-level means on 1-9, per-sample dynamic VA on [-1, 1], audio mp3."""
    root = Path(root)
    avg = root / _DEAM_AVG
    static_files = sorted((avg / "song_level").glob("static_annotations_averaged_songs_*.csv"))
    if not static_files:
        raise FileNotFoundError(f"no DEAM static annotations under {avg / 'song_level'}")
    static: dict[str, tuple[float, float]] = {}
    for path in static_files:
        rows, col = _labelled_rows(path, ["song_id", "valence_mean", "arousal_mean"])
        for lineno, row in rows:
            song = row[col["song_id"]].strip()
            static[song] = (
                _rating(row[col["valence_mean"]], SCALE_9, "valence_mean", path, lineno),
                _rating(row[col["arousal_mean"]], SCALE_9, "arousal_mean", path, lineno),
            )
    dyn_dir = avg / "dynamic (per second annotations)"
    dyn_v: dict[str, list[float]] = {}
    dyn_a: dict[str, list[float]] = {}
    first = step = 0.0
    if (dyn_dir / "valence.csv").is_file() and (dyn_dir / "arousal.csv").is_file():
        dyn_v, first, step = _deam_dynamic(dyn_dir / "valence.csv")
        dyn_a, first_a, step_a = _deam_dynamic(dyn_dir / "arousal.csv")
        if (first_a, step_a) != (first, step):
            raise DatasetFormatError(f"{dyn_dir}: valence.csv and arousal.csv sample times differ")
    items: list[MusicItem] = []
    missing: list[str] = []
    for song in sorted(static, key=lambda s: (len(s), s)):
        path = root / "MEMD_audio" / f"{song}.mp3"
        if not path.is_file():
            missing.append(path.name)
            continue
        v, a = static[song]
        n = min(len(dyn_v.get(song, [])), len(dyn_a.get(song, [])))
        series = None
        if n:
            series = tuple((first + k * step, first + (k + 1) * step, dyn_v[song][k], dyn_a[song][k]) for k in range(n))
        items.append(MusicItem(path, v, a, "deam", f"deam:{song}", "audio", series, step if series else None, False))
    return items, _finish("deam", len(items), missing)


# --------------------------------------------------------------------------- manifest


def load_manifest(csv_path: str | Path, modality: Modality) -> tuple[list[ImageItem] | list[MusicItem], LoadReport]:
    """Generic CSV ``path,valence,arousal`` (VA on [0, 1], paths relative to the manifest).

    A header row is optional; with one, columns may come in any order and an optional
    ``song_id`` column groups several files (e.g. stems or excerpts) into one song.
    """
    csv_path = _require_file(Path(csv_path), "manifest")
    if modality not in ("image", "music"):
        raise ValueError(f"modality must be 'image' or 'music', not {modality!r}")
    base = csv_path.parent
    rows = list(_csv_rows(csv_path))
    col = {"path": 0, "valence": 1, "arousal": 2}
    width = 3
    first = {cell.strip().lower() for cell in rows[0][1]} if rows else set()
    if {"path", "valence", "arousal"} <= first:
        header = rows[0][1]
        col = _header_index(csv_path, header, ["path", "valence", "arousal"])
        if "song_id" in [h.strip().lower() for h in header]:
            col.update(_header_index(csv_path, header, ["song_id"]))
        width = len(header)
        rows = rows[1:]
    name = f"manifest:{csv_path.name}"
    items: list = []
    missing: list[str] = []
    for lineno, row in rows:
        _check_width(csv_path, lineno, row, width)
        rel = row[col["path"]].strip()
        if not rel:
            raise DatasetFormatError(f"{_where(csv_path, lineno)}: empty path")
        v = _rating(row[col["valence"]], UNIT, "valence", csv_path, lineno)
        a = _rating(row[col["arousal"]], UNIT, "arousal", csv_path, lineno)
        path = Path(rel) if Path(rel).is_absolute() else base / rel
        if not path.is_file():
            missing.append(rel)
            continue
        ident = f"{name}:{Path(rel).with_suffix('').as_posix()}"
        if modality == "image":
            items.append(ImageItem(path, v, a, name, ident))
        else:
            song = row[col["song_id"]].strip() if "song_id" in col else ""
            kind = "midi" if path.suffix.lower() in MIDI_EXTENSIONS else "audio"
            items.append(MusicItem(path, v, a, name, f"{name}:{song}" if song else ident, kind))
    return items, _finish(name, len(items), missing)


# --------------------------------------------------------------------------- clip labels


def clips_va(item: MusicItem, starts: Sequence[float], ends: Sequence[float]) -> np.ndarray:
    """VA ``[n, 2]`` for clips ``[start, end)``: overlap-weighted mean of the series entries.

    Clips that cover no entry (or items without a series) get the piece label.
    """
    starts_a = np.asarray(starts, dtype=np.float64).reshape(-1)
    ends_a = np.asarray(ends, dtype=np.float64).reshape(-1)
    if starts_a.shape != ends_a.shape:
        raise ValueError("starts and ends must have the same length")
    out = np.tile(np.array([item.valence, item.arousal]), (len(starts_a), 1))
    if not item.va_series or not len(starts_a):
        return out
    series = np.asarray(item.va_series, dtype=np.float64)  # [m, 4]
    overlap = np.minimum(ends_a[:, None], series[None, :, 1]) - np.maximum(starts_a[:, None], series[None, :, 0])
    weights = np.clip(overlap, 0.0, None)
    total = weights.sum(axis=1)
    hit = total > 0
    out[hit] = (weights[hit] @ series[:, 2:4]) / total[hit, None]
    return out


def clip_va(item: MusicItem, start_s: float, end_s: float) -> tuple[float, float]:
    """VA of one clip ``[start_s, end_s)``; see :func:`clips_va`."""
    v, a = clips_va(item, [start_s], [end_s])[0]
    return float(v), float(a)


# --------------------------------------------------------------------------- dispatch

_LOADERS: dict[str, tuple[Modality, Callable[[Path], tuple[list, LoadReport]]]] = {
    "oasis": ("image", load_oasis),
    "emotion6": ("image", load_emotion6),
    "vgmidi": ("music", load_vgmidi),
    "emopia": ("music", load_emopia),
    "panda4q": ("music", load_panda4q),
    "deam": ("music", load_deam),
    "emotify": ("music", load_emotify),
    "eimg": ("music", load_eimg),
}


def _has_columns(csv_path: Path, columns: tuple[str, ...]) -> bool:
    """Whether the CSV's header row names all of ``columns``."""
    with open(csv_path, newline="", encoding="utf-8", errors="replace") as fh:
        header = next(csv.reader(fh), [])
    return all(c in header for c in columns)


def detect_format(folder: str | Path) -> str | None:
    """Name of the known data-set format stored in ``folder``, or ``None``."""
    folder = Path(folder)
    if (folder / "OASIS.csv").is_file():
        return "oasis"
    if (folder / "ground_truth.txt").is_file():
        return "emotion6"
    ann_dir, _ = _vgmidi_dirs(folder)
    if ann_dir.is_dir() and any(ann_dir.glob("*.json")):
        return "vgmidi"
    if (folder / _DEAM_AVG / "song_level").is_dir():
        return "deam"
    if (
        (folder / "annotations.csv").is_file()
        and (folder / "audio").is_dir()
        and _has_columns(folder / "annotations.csv", ("Song", "Quadrant"))
    ):  # Emotify has an annotations.csv and audio/ too, with other columns (GEMS votes)
        return "panda4q"
    if (folder / "annotations.csv").is_file() and _has_columns(folder / "annotations.csv", ("track_id", "p_tension")):
        return "emotify"
    if (folder / "labels.csv").is_file() and _has_columns(
        folder / "labels.csv", ("file", "valence_mean", "arousal_mean")
    ):
        return "eimg"
    midi_dir = folder / "midis" if (folder / "midis").is_dir() else folder
    if any(_EMOPIA_NAME.match(p.stem) for p in midi_dir.glob("Q[1-4]_*.mid*")):
        return "emopia"
    return None


def _load_one(spec: Path, modality: Modality) -> tuple[list, list[LoadReport]]:
    if spec.is_file():
        name = spec.name.lower()
        if name == "oasis.csv":
            return _run_loader("oasis", spec.parent, modality)
        if name == "ground_truth.txt":
            return _run_loader("emotion6", spec.parent, modality)
        if name == "annotations.csv" and detect_format(spec.parent) == "panda4q":
            return _run_loader("panda4q", spec.parent, modality)
        if spec.suffix.lower() == ".csv":
            manifest, report = load_manifest(spec, modality)
            return manifest, [report]
        raise ValueError(f"{spec}: neither a CSV manifest nor a known label file")
    if not spec.is_dir():
        raise FileNotFoundError(f"data source not found: {spec}")
    fmt = detect_format(spec)
    if fmt is not None:
        return _run_loader(fmt, spec, modality)
    # A data root: every known set of the requested modality one level down.
    items: list = []
    reports: list[LoadReport] = []
    found = []
    for sub in sorted(p for p in spec.iterdir() if p.is_dir()):
        sub_fmt = detect_format(sub)
        if sub_fmt is not None:
            found.append(sub_fmt)
            if _LOADERS[sub_fmt][0] == modality:
                more, more_reports = _run_loader(sub_fmt, sub, modality)
                items.extend(more)
                reports.extend(more_reports)
    if not reports:
        raise ValueError(
            f"{spec}: no {modality} data set of a known format found "
            f"(known: {sorted(_LOADERS)}; found here: {found or 'none'})"
        )
    return items, reports


def _run_loader(fmt: str, folder: Path, modality: Modality) -> tuple[list, list[LoadReport]]:
    kind, loader = _LOADERS[fmt]
    if kind != modality:
        raise ValueError(f"{folder} holds {fmt}, a {kind} set, but {modality} data was asked for")
    items, report = loader(folder)
    return items, [report]


def load_source(spec: str | Path, modality: Modality) -> tuple[list[ImageItem] | list[MusicItem], list[LoadReport]]:
    """Load a data source: a known-format folder, a CSV manifest, a data root, or a list.

    ``spec`` may be a comma-separated list of such sources (a path that exists as written
    is never split). Items keep the order of the specs.
    """
    if modality not in ("image", "music"):
        raise ValueError(f"modality must be 'image' or 'music', not {modality!r}")
    text = str(spec)
    parts = [text] if Path(text).exists() or "," not in text else [s.strip() for s in text.split(",") if s.strip()]
    items: list = []
    reports: list[LoadReport] = []
    for part in parts:
        more, more_reports = _load_one(Path(part).expanduser(), modality)
        items.extend(more)
        reports.extend(more_reports)
    return items, reports
