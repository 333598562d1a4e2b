"""Loaders (on fixtures written here and on the real data), clip labels and MIDI rendering."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from model import render as render_mod
from model.datasets import (
    EMOTION6_CATEGORIES,
    DatasetFormatError,
    ImageItem,
    MusicItem,
    clip_va,
    clips_va,
    detect_format,
    emotion6_distributions,
    load_deam,
    load_eimg,
    load_emopia,
    load_emotify,
    load_emotion6,
    load_manifest,
    load_oasis,
    load_panda4q,
    load_source,
    load_vgmidi,
)
from model.render import RenderError, render_many, render_midi, set_program
from tests.support import REPO

# Counts measured on ../shared/data (label-file entries = loaded + missing).
REAL = {
    "oasis": (773, 127),
    "emotion6": (1687, 293),
    "vgmidi": (168, 32),  # 171 MIDI files; 3 have no per-measure labels in the json
    "emopia": (1078, 0),  # no label list, so nothing can be reported missing
    "panda4q": (452, 448),
    "emotify": (200, 200),
    "eimg": (2394, 600),  # 2,400 MIDI files; 6 have no row in labels.csv (dropped in the source)
}


@pytest.fixture(scope="module")
def data_root() -> Path:
    root = Path(os.environ.get("PHOTOSCORE_DATASET_DIR", REPO.parent / "shared" / "data"))
    if not root.is_dir() or not all((root / name).is_dir() for name in REAL):
        pytest.fail(
            f"dataset not found at {root} (expected {sorted(REAL)} folders); "
            "set PHOTOSCORE_DATASET_DIR to the shared data root"
        )
    return root


def _touch(path: Path, data: bytes = b"\xff\xd8\xff\xe0") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _midi(path: Path, notes: int = 8, program: int | None = None, channel: int = 0) -> Path:
    """A real, short type-1 MIDI file (quarter notes at 120 bpm)."""
    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    if program is not None:
        track.append(mido.Message("program_change", channel=channel, program=program, time=0))
    for k in range(notes):
        track.append(mido.Message("note_on", channel=channel, note=60 + k % 12, velocity=90, time=0))
        track.append(mido.Message("note_off", channel=channel, note=60 + k % 12, time=480))
    path.parent.mkdir(parents=True, exist_ok=True)
    mid.save(path)
    return path


# --------------------------------------------------------------------------- OASIS

OASIS_HEADER = ",Theme,Category,Source,Valence_mean,Valence_SD,Valence_N,Arousal_mean,Arousal_SD,Arousal_N"


def _oasis(root: Path, rows: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "OASIS.csv").write_bytes("\r".join([OASIS_HEADER, *rows]).encode())
    return root


class TestOasis:
    def test_cr_endings_trailing_space_and_missing(self, tmp_path: Path) -> None:
        root = _oasis(
            tmp_path / "oasis",
            [
                "I1,Acorns 1,Object,Pixabay,4,0.9,102,1,1.6,101",
                "I2,War 2 ,Scenery,Pixabay,7,1.5,101,5.5,1.8,103",
                "I3,Baby 1,Person,Pixabay,2.5,1.0,100,3,1.1,100",
            ],
        )
        _touch(root / "images" / "Acorns 1.jpg")
        _touch(root / "images" / "War 2.jpg")  # Theme "War 2 " has a trailing space
        items, report = load_oasis(root)
        assert [i.item_id for i in items] == ["oasis:Acorns 1", "oasis:War 2"]
        assert items[0] == ImageItem(root / "images" / "Acorns 1.jpg", 0.5, 0.0, "oasis", "oasis:Acorns 1")
        assert items[1].valence == pytest.approx(1.0)
        assert items[1].arousal == pytest.approx(4.5 / 6)
        assert (report.loaded, report.missing, report.missing_examples) == (2, 1, ["Baby 1.jpg"])

    @pytest.mark.parametrize(
        ("bad_row", "needle"),
        [
            ("I2,Bad,Object,Pixabay,high,0.9,102,2,1.6,101", "not a number"),
            ("I2,Bad,Object,Pixabay,8.5,0.9,102,2,1.6,101", "outside its scale"),
            ("I2,Bad,Object,Pixabay,4,0.9,102,2", "expected 10 columns"),
        ],
    )
    def test_malformed_row_names_file_and_line(self, tmp_path: Path, bad_row: str, needle: str) -> None:
        root = _oasis(tmp_path, ["I1,Acorns 1,Object,Pixabay,4,0.9,102,1,1.6,101", bad_row])
        with pytest.raises(DatasetFormatError) as err:
            load_oasis(root)
        assert "OASIS.csv, line 3" in str(err.value)
        assert needle in str(err.value)


# --------------------------------------------------------------------------- Emotion6

E6_HEADER = "[image_filename]\t[valence]\t[arousal]\t" + "\t".join(f"[p{k}]" for k in range(7))


def _emotion6(root: Path, rows: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ground_truth.txt").write_text("\n".join([E6_HEADER, *rows]) + "\n")
    return root


class TestEmotion6:
    def test_loads_and_counts_missing(self, tmp_path: Path) -> None:
        probs = "\t".join(["0.1"] * 7)
        root = _emotion6(tmp_path / "e6", [f"joy/1.jpg\t9\t1\t{probs}", f"fear/2.jpg\t5\t5\t{probs}"])
        _touch(root / "images" / "joy" / "1.jpg")
        items, report = load_emotion6(root)
        assert items == [ImageItem(root / "images/joy/1.jpg", 1.0, 0.0, "emotion6", "emotion6:joy/1")]
        assert (report.loaded, report.missing, report.missing_examples) == (1, 1, ["fear/2.jpg"])

    def test_malformed(self, tmp_path: Path) -> None:
        probs = "\t".join(["0.1"] * 7)
        root = _emotion6(tmp_path, [f"joy/1.jpg\t5\t5\t{probs}", f"joy/2.jpg\t0.5\t5\t{probs}"])
        with pytest.raises(DatasetFormatError, match=r"ground_truth.txt, line 3: valence"):
            load_emotion6(root)
        root = _emotion6(tmp_path, [f"joy/1.jpg\t5\t{probs}"])
        with pytest.raises(DatasetFormatError, match=r"ground_truth.txt, line 2: expected 10 columns"):
            load_emotion6(root)

    def test_category_distributions_by_id(self, tmp_path: Path) -> None:
        """Every listed photo (present or not) gets its raters' shares, normalised to sum 1."""
        root = _emotion6(tmp_path, ["anger/1.jpg\t2\t8\t2\t0\t1\t0\t0\t1\t0", "joy/4.jpg\t8\t6\t0\t0\t0\t0.5\t0\t0\t0"])
        dists = emotion6_distributions(root)
        assert set(dists) == {"emotion6:anger/1", "emotion6:joy/4"}
        assert dists["emotion6:anger/1"].tolist() == [0.5, 0.0, 0.25, 0.0, 0.0, 0.25, 0.0]
        assert dists["emotion6:joy/4"][EMOTION6_CATEGORIES.index("joy")] == 1.0

    @pytest.mark.parametrize(
        ("probs", "needle"), [("0\t0\t0\t0\t0\t0\t0", "not all 0"), ("x\t0\t0\t0\t0\t0\t1", "line 2")]
    )
    def test_category_distributions_malformed(self, tmp_path: Path, probs: str, needle: str) -> None:
        root = _emotion6(tmp_path, [f"joy/1.jpg\t5\t5\t{probs}"])
        with pytest.raises(DatasetFormatError, match=needle):
            emotion6_distributions(root)

    def test_real_category_distributions_cover_the_photos(self, data_root: Path) -> None:
        items, _ = load_emotion6(data_root / "emotion6")
        dists = emotion6_distributions(data_root / "emotion6")
        assert {item.item_id for item in items} <= set(dists)
        for folder in ("disgust", "fear", "joy", "sadness"):  # columns in the order the header names them
            mean = np.mean([d for k, d in dists.items() if k.startswith(f"emotion6:{folder}/")], axis=0)
            assert EMOTION6_CATEGORIES[int(np.argmax(mean))] == folder


# --------------------------------------------------------------------------- VGMIDI


def _vgmidi(root: Path, annotations: dict, pieces: dict | None = None) -> Path:
    pieces = pieces or {
        "piece0": {"midi": "A.mid", "duration": 8.0, "measures": 4, "name": "A", "audio": "a.wav"},
        "piece1": {"midi": "B.mid", "duration": 10, "measures": 5, "name": "B", "audio": "b.wav"},
    }
    ann_dir = root / "labelled" / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    (ann_dir / "vgmidi_raw_1.json").write_text(json.dumps({"pieces": pieces, "annotations": annotations}))
    return root


class TestVgmidi:
    def test_series_average_and_ragged_annotators(self, tmp_path: Path) -> None:
        root = _vgmidi(
            tmp_path / "vgmidi",
            {
                # one annotator has an extra value (cut), one stops early (fewer annotators there)
                "piece0_0": {"valence": [-1, 0, 1, 1, 0.5], "arousal": [1, 1, 1, 1, 1]},
                "piece0_1": {"valence": [1, 0, 1], "arousal": [-1, -1, -1]},
                "piece1_0": {"valence": [0] * 5, "arousal": [0] * 5},
                "piece9_0": {"valence": [0], "arousal": [0]},  # orphan annotation: noted, ignored
            },
        )
        _midi(root / "labelled" / "midi" / "A.mid")  # B.mid deliberately absent
        _midi(root / "labelled" / "midi" / "Extra.mid")  # a MIDI without labels: noted
        items, report = load_vgmidi(root)
        assert (report.loaded, report.missing, report.missing_examples) == (1, 1, ["B.mid"])
        assert any("piece9" in n for n in report.notes)
        assert any("Extra.mid" in n for n in report.notes)
        (item,) = items
        assert item.kind == "midi" and item.song_id == "vgmidi:A" and not item.weak
        assert item.segment_seconds == pytest.approx(2.0)
        # measure 0: V mean(-1, 1)=0 → 0.5, A mean(1, -1)=0 → 0.5; measure 3: only annotator 0
        expected = [(0, 2, 0.5, 0.5), (2, 4, 0.5, 0.5), (4, 6, 1.0, 0.5), (6, 8, 1.0, 1.0)]
        np.testing.assert_allclose(np.array(item.va_series), np.array(expected))
        assert item.valence == pytest.approx(0.75)
        assert item.arousal == pytest.approx(0.625)

    def test_out_of_range_value_names_file_and_entry(self, tmp_path: Path) -> None:
        root = _vgmidi(tmp_path, {"piece0_3": {"valence": [0, 1.5, 0, 0], "arousal": [0] * 4}})
        with pytest.raises(DatasetFormatError, match=r"vgmidi_raw_1.json, entry 'piece0_3'.*outside"):
            load_vgmidi(root)

    def test_broken_json_names_line(self, tmp_path: Path) -> None:
        ann = tmp_path / "labelled" / "annotations"
        ann.mkdir(parents=True)
        (ann / "vgmidi_raw_1.json").write_text('{"pieces": {},\n"annotations": {,}}')
        with pytest.raises(DatasetFormatError, match=r"vgmidi_raw_1.json, line 2"):
            load_vgmidi(tmp_path)


def test_clip_va_overlap_weighted_with_fallback() -> None:
    series = ((0.0, 2.0, 0.2, 0.8), (2.0, 4.0, 0.6, 0.4), (4.0, 6.0, 1.0, 0.0))
    item = MusicItem(Path("x.mid"), 0.55, 0.45, "t", "t:x", "midi", series, 2.0, False)
    assert clip_va(item, 0.0, 2.0) == pytest.approx((0.2, 0.8))
    assert clip_va(item, 1.0, 3.0) == pytest.approx((0.4, 0.6))  # half of each measure
    assert clip_va(item, 1.5, 3.5) == pytest.approx((0.2 * 0.25 + 0.6 * 0.75, 0.8 * 0.25 + 0.4 * 0.75))
    assert clip_va(item, 5.0, 7.0) == pytest.approx((1.0, 0.0))  # only the covered part counts
    assert clip_va(item, 10.0, 12.0) == pytest.approx((0.55, 0.45))  # nothing covered: piece mean
    flat = MusicItem(Path("y.ogg"), 0.25, 0.75, "t", "t:y", "audio", None, None, True)
    assert clip_va(flat, 0.0, 2.0) == (0.25, 0.75)
    many = clips_va(item, [0.0, 1.0, 10.0], [2.0, 3.0, 12.0])
    np.testing.assert_allclose(many, [[0.2, 0.8], [0.4, 0.6], [0.55, 0.45]])


# --------------------------------------------------------------------------- EMOPIA / Panda-4Q


def test_emopia_weak_quadrant_targets(tmp_path: Path) -> None:
    for name in ["Q1_abc_0.mid", "Q1_abc_1.mid", "Q3_x_y_2.mid", "Q4_zz.mid"]:
        _midi(tmp_path / "midis" / name, notes=2)
    (tmp_path / "midis" / "README.txt").write_text("not a midi")
    items, report = load_emopia(tmp_path)
    assert (report.loaded, report.missing) == (4, 0)
    assert [i.song_id for i in items] == ["emopia:Q1_abc", "emopia:Q1_abc", "emopia:Q3_x_y", "emopia:Q4_zz"]
    assert [(i.valence, i.arousal) for i in items] == [(0.75, 0.75)] * 2 + [(0.25, 0.25), (0.75, 0.25)]
    assert all(i.weak and i.kind == "midi" and i.va_series is None for i in items)
    _midi(tmp_path / "midis" / "Q5_bad_0.mid", notes=1)
    with pytest.raises(DatasetFormatError, match="Q5_bad_0.mid"):
        load_emopia(tmp_path)


def test_panda4q_folder_quadrant_and_missing(tmp_path: Path) -> None:
    (tmp_path / "annotations.csv").write_text("Song,Quadrant\nMT1,Q1\nMT2,Q2\nMT3,Q3\nMT4,Q4\n")
    _touch(tmp_path / "audio" / "Q1" / "MT1.ogg", b"OggS")
    _touch(tmp_path / "audio" / "Q3" / "MT3.ogg", b"OggS")
    items, report = load_panda4q(tmp_path)
    assert (report.loaded, report.missing, report.missing_examples) == (2, 2, ["MT2", "MT4"])
    assert items[0] == MusicItem(
        tmp_path / "audio/Q1/MT1.ogg", 0.75, 0.75, "panda4q", "panda4q:MT1", "audio", None, None, True
    )
    assert (items[1].valence, items[1].arousal) == (0.25, 0.25)
    (tmp_path / "annotations.csv").write_text("Song,Quadrant\nMT1,Q1\nMT2,Q7\n")
    with pytest.raises(DatasetFormatError, match=r"annotations.csv, line 3"):
        load_panda4q(tmp_path)


# --------------------------------------------------------------------------- Emotify and EIMG

EMOTIFY_HEADER = (
    "track_id,genre,file,listeners,p_amazement,p_solemnity,p_tenderness,p_nostalgia,p_calmness,"
    "p_power,p_joyful_activation,p_tension,p_sadness,p_liked,p_disliked"
)


class TestEmotify:
    def test_gems_votes_place_songs_in_va(self, tmp_path: Path) -> None:
        rows = [  # amaz solem tender nostal calm power joyful tension sad
            "1,rock,audio/rock/1.ogg,40,0,0,0,0,0,0.6,0.5,0.5,0,0.5,0.1",  # tense and powerful
            "2,classical,audio/classical/2.ogg,40,0,0,0.2,0.3,0.6,0,0,0,0.7,0.5,0.1",  # sad, calm
            "3,pop,audio/pop/3.ogg,40,0,0,0.1,0,0,0.3,0.9,0,0,0.5,0.1",  # joyful
            "4,pop,audio/pop/4.ogg,40,0,0,0.1,0,0.5,0,0,0,0,0.5,0.1",  # absent file
        ]
        (tmp_path / "annotations.csv").write_text("\n".join([EMOTIFY_HEADER, *rows]) + "\n")
        for f in ("rock/1", "classical/2", "pop/3"):
            _touch(tmp_path / "audio" / f"{f}.ogg", b"OggS")
        assert detect_format(tmp_path) == "emotify"
        items, report = load_emotify(tmp_path)
        assert (report.loaded, report.missing, report.missing_examples) == (3, 1, ["4"])
        by = {i.song_id: i for i in items}
        tense, sad, joy = by["emotify:1"], by["emotify:2"], by["emotify:3"]
        assert tense.valence < 0.5 < tense.arousal and tense.arousal > sad.arousal
        assert joy.valence > tense.valence and joy.valence > sad.valence
        assert sad.arousal < 0.5 < joy.arousal and sad.valence < 0.5
        assert all(i.kind == "audio" and not i.weak and i.source == "emotify" for i in items)
        (tmp_path / "annotations.csv").write_text(
            EMOTIFY_HEADER + "\n1,rock,audio/rock/1.ogg,40,0,0,0,0,0,1.7,0,0,0,0,0\n"
        )
        with pytest.raises(DatasetFormatError, match=r"annotations.csv, line 2: p_power"):
            load_emotify(tmp_path)

    def test_real_gems_va_follows_the_votes(self, data_root: Path) -> None:
        items, _ = load_emotify(data_root / "emotify")
        with open(data_root / "emotify" / "annotations.csv", newline="") as fh:
            votes = {f"emotify:{r['track_id']}": r for r in csv.DictReader(fh)}
        aroused = [
            sum(float(votes[i.song_id][f"p_{c}"]) for c in ("power", "tension", "joyful_activation")) for i in items
        ]
        positive = [
            float(votes[i.song_id]["p_joyful_activation"]) - float(votes[i.song_id]["p_sadness"]) for i in items
        ]
        assert np.corrcoef(aroused, [i.arousal for i in items])[0, 1] > 0.8
        assert np.corrcoef(positive, [i.valence for i in items])[0, 1] > 0.6
        va = np.array([(i.valence, i.arousal) for i in items])
        assert va.std(axis=0).min() > 0.12 and va.std(axis=0).max() < 0.25


class TestEimg:
    def test_mean_ratings_on_one_to_nine(self, tmp_path: Path) -> None:
        (tmp_path / "labels.csv").write_text(
            "file,a1_valence,a1_arousal,valence_mean,arousal_mean\n0001.mid,9,1,9,1\n0002.mid,5,5,5,5\n0003.mid,1,9,1,9\n"
        )
        _midi(tmp_path / "midi" / "0001.mid")
        _midi(tmp_path / "midi" / "0003.mid")
        assert detect_format(tmp_path) == "eimg"
        items, report = load_eimg(tmp_path)
        assert (report.loaded, report.missing, report.missing_examples) == (2, 1, ["0002.mid"])
        assert [(i.song_id, i.valence, i.arousal) for i in items] == [("eimg:0001", 1.0, 0.0), ("eimg:0003", 0.0, 1.0)]
        assert all(i.kind == "midi" and not i.weak for i in items)
        (tmp_path / "labels.csv").write_text("file,valence_mean,arousal_mean\n0001.mid,10,1\n")
        with pytest.raises(DatasetFormatError, match=r"labels.csv, line 2: valence_mean"):
            load_eimg(tmp_path)


# --------------------------------------------------------------------------- DEAM


def _deam(root: Path, dyn_valence: str | None = None) -> Path:
    avg = root / "annotations" / "annotations averaged per song"
    (avg / "song_level").mkdir(parents=True)
    (avg / "song_level" / "static_annotations_averaged_songs_1_2000.csv").write_text(
        "song_id, valence_mean, valence_std, arousal_mean, arousal_std\n2,5,1.2,1,0.9\n3,9,0.5,3,1\n4,3,1,3,1\n"
    )
    dyn = avg / "dynamic (per second annotations)"
    dyn.mkdir()
    (dyn / "valence.csv").write_text(
        dyn_valence or ("song_id,sample_15000ms,sample_15500ms,sample_16000ms\n2,-1,0,1\n3,0.5,0.5,\n")
    )
    (dyn / "arousal.csv").write_text("song_id, sample_15000ms, sample_15500ms, sample_16000ms\n2,1,1,1\n3,0,0,\n")
    for song in (2, 3):
        _touch(root / "MEMD_audio" / f"{song}.mp3", b"ID3")
    return root


class TestDeam:
    def test_static_dynamic_and_missing(self, tmp_path: Path) -> None:
        items, report = load_deam(_deam(tmp_path))
        assert (report.loaded, report.missing, report.missing_examples) == (2, 1, ["4.mp3"])
        two, three = items
        assert (two.song_id, two.kind, two.weak) == ("deam:2", "audio", False)
        assert (two.valence, two.arousal) == (0.5, 0.0)
        assert two.segment_seconds == pytest.approx(0.5)
        assert two.va_series == ((15.0, 15.5, 0.0, 1.0), (15.5, 16.0, 0.5, 1.0), (16.0, 16.5, 1.0, 1.0))
        assert len(three.va_series) == 2  # shorter song: empty trailing cells end the series
        assert clip_va(two, 15.0, 16.0) == pytest.approx((0.25, 1.0))

    def test_out_of_range_dynamic(self, tmp_path: Path) -> None:
        bad = "song_id,sample_15000ms,sample_15500ms\n2,0,0\n3,0,1.7\n"
        with pytest.raises(DatasetFormatError, match=r"valence.csv, line 3"):
            load_deam(_deam(tmp_path, dyn_valence=bad))


# --------------------------------------------------------------------------- manifest & dispatch


def test_manifest_relative_paths_header_and_errors(tmp_path: Path) -> None:
    _touch(tmp_path / "img" / "a.jpg")
    _touch(tmp_path / "music" / "s.ogg", b"OggS")
    _midi(tmp_path / "music" / "t.mid", notes=1)
    (tmp_path / "images.csv").write_text("path,valence,arousal\nimg/a.jpg,0.2,0.9\nimg/gone.jpg,0.5,0.5\n")
    items, report = load_manifest(tmp_path / "images.csv", "image")
    assert items == [ImageItem(tmp_path / "img/a.jpg", 0.2, 0.9, "manifest:images.csv", "manifest:images.csv:img/a")]
    assert (report.loaded, report.missing, report.missing_examples) == (1, 1, ["img/gone.jpg"])

    (tmp_path / "music.csv").write_text("music/s.ogg,1,0\nmusic/t.mid,0,1\n")  # no header
    items, _ = load_manifest(tmp_path / "music.csv", "music")
    assert [(i.kind, i.valence, i.arousal) for i in items] == [("audio", 1.0, 0.0), ("midi", 0.0, 1.0)]

    (tmp_path / "songs.csv").write_text(
        "valence,arousal,path,song_id\n0.1,0.2,music/s.ogg,album-1\n0.3,0.4,music/t.mid,album-1\n"
    )
    items, _ = load_manifest(tmp_path / "songs.csv", "music")
    assert [i.song_id for i in items] == ["manifest:songs.csv:album-1"] * 2
    assert (items[1].valence, items[1].arousal) == (0.3, 0.4)

    (tmp_path / "bad.csv").write_text("path,valence,arousal\nimg/a.jpg,0.2,0.9\nimg/a.jpg,1.2,0.1\n")
    with pytest.raises(DatasetFormatError, match=r"bad.csv, line 3: valence '1.2' is outside"):
        load_manifest(tmp_path / "bad.csv", "image")
    (tmp_path / "bad2.csv").write_text("path,valence,arousal\nimg/a.jpg,0.2\n")
    with pytest.raises(DatasetFormatError, match=r"bad2.csv, line 2: expected 3 columns"):
        load_manifest(tmp_path / "bad2.csv", "image")


def test_load_source_dispatch(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _oasis(root / "oasis", ["I1,Acorns 1,Object,Pixabay,4,0.9,102,1,1.6,101"])
    _touch(root / "oasis" / "images" / "Acorns 1.jpg")
    probs = "\t".join(["0.1"] * 7)
    _emotion6(root / "e6", [f"joy/1.jpg\t9\t1\t{probs}"])
    _touch(root / "e6" / "images" / "joy" / "1.jpg")
    _midi(root / "emopia" / "midis" / "Q2_s_0.mid", notes=1)
    _deam(root / "deam")
    assert detect_format(root / "oasis") == "oasis"
    assert detect_format(root / "deam") == "deam"
    assert detect_format(root) is None

    items, reports = load_source(root, "image")  # the data root: every image set
    assert sorted(r.source for r in reports) == ["emotion6", "oasis"] and len(items) == 2
    items, reports = load_source(str(root), "music")
    assert sorted(r.source for r in reports) == ["deam", "emopia"] and len(items) == 3

    (tmp_path / "m.csv").write_text("path,valence,arousal\ndata/e6/images/joy/1.jpg,0.1,0.2\n")
    items, reports = load_source(f"{root / 'oasis'}, {tmp_path / 'm.csv'}", "image")
    assert [i.source for i in items] == ["oasis", "manifest:m.csv"]
    items, _ = load_source(root / "oasis" / "OASIS.csv", "image")
    assert [i.item_id for i in items] == ["oasis:Acorns 1"]

    with pytest.raises(ValueError, match="image set"):
        load_source(root / "oasis", "music")
    with pytest.raises(FileNotFoundError):
        load_source(tmp_path / "nowhere", "image")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image data set"):
        load_source(tmp_path / "empty", "image")


# --------------------------------------------------------------------------- real data


class TestRealData:
    @pytest.mark.parametrize(
        ("name", "loader"),
        [
            ("oasis", load_oasis),
            ("emotion6", load_emotion6),
            ("vgmidi", load_vgmidi),
            ("emopia", load_emopia),
            ("panda4q", load_panda4q),
            ("emotify", load_emotify),
            ("eimg", load_eimg),
        ],
    )
    def test_counts_and_ranges(self, data_root: Path, name: str, loader) -> None:
        items, report = loader(data_root / name)
        loaded, missing = REAL[name]
        assert report.loaded == len(items) > 0
        assert (report.loaded, report.missing) == (loaded, missing)
        assert len(report.missing_examples) == min(missing, 5)
        va = np.array([(i.valence, i.arousal) for i in items])
        assert ((va >= 0) & (va <= 1)).all()
        assert all(i.path.is_file() for i in items)
        ids = [getattr(i, "item_id", None) or i.path for i in items]
        assert len(set(ids)) == len(ids)

    def test_oasis_trailing_space_themes_found(self, data_root: Path) -> None:
        items, _ = load_oasis(data_root / "oasis")
        ids = {i.item_id for i in items}
        assert {"oasis:War 2", "oasis:Crosswalk 1"} <= ids

    def test_vgmidi_series_cover_the_piece(self, data_root: Path) -> None:
        items, _ = load_vgmidi(data_root / "vgmidi")
        for item in items:
            s = np.array(item.va_series)
            assert s[0, 0] == 0 and len(s) >= 1
            np.testing.assert_allclose(s[1:, 0], s[:-1, 1])
            np.testing.assert_allclose(s[:, 1] - s[:, 0], item.segment_seconds)
            assert item.valence == pytest.approx(s[:, 2].mean())
        # the three ragged annotators (one value more than measures) did not lengthen series
        assert max(len(i.va_series) for i in items) <= max(
            int(round(i.va_series[-1][1] / i.segment_seconds)) for i in items
        )
        assert len({i.song_id for i in items}) == len(items)

    def test_load_source_on_data_root(self, data_root: Path) -> None:
        images, reports = load_source(data_root, "image")
        assert len(images) == REAL["oasis"][0] + REAL["emotion6"][0]
        assert {r.source for r in reports} == {"oasis", "emotion6"}
        music, reports = load_source(data_root, "music")
        assert len(music) == sum(REAL[k][0] for k in ("vgmidi", "emopia", "panda4q", "emotify", "eimg"))
        assert {r.source: r.missing for r in reports} == {
            "vgmidi": 32,
            "emopia": 0,
            "panda4q": 448,
            "emotify": 200,
            "eimg": 600,
        }
        assert {m.kind for m in music if m.source == "panda4q"} == {"audio"}


# --------------------------------------------------------------------------- rendering


@pytest.fixture(scope="module")
def short_piece(data_root: Path) -> MusicItem:
    items, _ = load_vgmidi(data_root / "vgmidi")
    return min(items, key=lambda i: i.va_series[-1][1])


class TestRender:
    def test_programs_differ_and_cache(self, short_piece: MusicItem, tmp_path: Path) -> None:
        piano = render_midi(short_piece.path, tmp_path, program=0)
        strings = render_midi(short_piece.path, tmp_path, program=48)
        assert piano != strings
        a, sr_a = sf.read(piano, dtype="float32")
        b, sr_b = sf.read(strings, dtype="float32")
        assert sr_a == sr_b == 22050
        assert np.abs(a).max() > 0.01 and np.abs(b).max() > 0.01
        n = min(len(a), len(b))
        assert np.abs(a[:n] - b[:n]).mean() > 1e-3
        duration = short_piece.va_series[-1][1]
        assert abs(len(a) / sr_a - duration) < duration * 0.5
        mtime = piano.stat().st_mtime_ns
        assert render_midi(short_piece.path, tmp_path, program=0) == piano
        assert piano.stat().st_mtime_ns == mtime  # cached, not re-rendered
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
        results = render_many([short_piece], tmp_path, programs=(0, 48), workers=2, progress=False)
        assert [(r.program, r.wav, r.error) for r in results] == [(0, piano, None), (48, strings, None)]

    def test_set_program_rewrites_melodic_channels_only(self, tmp_path: Path) -> None:
        src = _midi(tmp_path / "in.mid", notes=2, program=5)
        mid = mido.MidiFile(src)
        drums = mido.MidiTrack(
            [
                mido.Message("program_change", channel=9, program=3, time=0),
                mido.Message("note_on", channel=9, note=36, time=0),
            ]
        )
        mid.tracks.append(drums)
        set_program(mid, 48)
        progs = [(m.channel, m.program) for t in mid.tracks for m in t if m.type == "program_change"]
        assert sorted(progs) == [(0, 48), (0, 48), (9, 3)]

    def test_clear_errors(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        src = _midi(tmp_path / "in.mid", notes=1)
        with pytest.raises(RenderError, match="soundfont not found"):
            render_midi(src, tmp_path, soundfont=tmp_path / "none.sf2")
        monkeypatch.setattr(render_mod.shutil, "which", lambda _name: None)
        with pytest.raises(RenderError, match="fluidsynth is not installed"):
            render_midi(src, tmp_path)
        assert shutil.which is not None
