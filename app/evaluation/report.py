"""The printed report of ``photoscore evaluate-retrieval``: plain tables and markdown from the result dict.

``format_report`` prints the counts, three metric tables (methods as rows), per-checkpoint VA
figures, the per-quadrant mix of the shipped paths, the ablation and the Emotify check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.evaluation.metrics import CORR_METRICS, HUB_METRICS, MATCH_METRICS, QUADRANTS, K

Q2_TARGET = 0.35  # issue 28: Q2 photos' Q2 share of their top 10


def _cell(m: dict[str, float | None] | None, count: bool = False) -> str:
    """``value [lo, hi]``; counts (``distinct_first``) as numbers of songs, shares to 3 decimals."""
    if not m or m.get("value") is None:
        return "n/a"

    def f(x: float | None) -> str:
        if x is None:
            return "nan"
        return f"{x:.4g}" if count else f"{x:.3f}"

    return f"{f(m['value'])} [{f(m['lo'])}, {f(m['hi'])}]"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def markdown(rows: list[list[str]]) -> list[str]:
    """A markdown table (first row the header), columns padded so it also reads as plain text."""
    widths = [max(3, *(len(r[c]) for r in rows)) for c in range(len(rows[0]))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)) + " |"

    return [line(rows[0]), line(["-" * w for w in widths]), *(line(r) for r in rows[1:])]


def _share_cell(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def mix_lines(methods: dict[str, Any]) -> list[str]:
    """Full photo-quadrant x music-quadrant tables for the CDCML paths, diagonals for the baselines."""
    lines: list[str] = []
    for name, m in methods.items():
        mix = m.get("quadrant_mix")
        if not name.startswith("cdcml:") or not mix:
            continue
        rows = [["photo quadrant", "n", *(f"Q{q}" for q in QUADRANTS)]]
        rows += [[f"{pq} photos", str(r["n"]), *(_share_cell(r[f"Q{q}"]) for q in QUADRANTS)] for pq, r in mix.items()]
        q2 = mix["Q2"]["Q2"]
        verdict = "n/a" if q2 is None else ("met" if q2 >= Q2_TARGET else "not met")
        lines += [
            "",
            f"{name}: share of each music quadrant among a photo's top {K}",
            *markdown(rows),
            f"target Q2 photos' Q2 share >= {Q2_TARGET}: {_share_cell(q2)} ({verdict})",
        ]
    rows = [["method (own-quadrant share)", *(f"Q{q}->Q{q} (n)" for q in QUADRANTS)]]
    for name, m in methods.items():
        mix = m.get("quadrant_mix")
        if mix:
            rows.append([name, *(f"{_share_cell(mix[f'Q{q}'][f'Q{q}'])} ({mix[f'Q{q}']['n']})" for q in QUADRANTS)])
    return [*lines, "", *markdown(rows)] if len(rows) > 1 else lines


ABLATION_LABELS = {
    "va_distance": "VA distance",
    "embedding_cosine": "embedding cosine",
    "learned_predictor": "learned predictor",
    "bank_normalised": "predictor / bank (no VA term)",
    "shipped": "shipped",
}


def ablation_lines(ablation: dict[str, Any]) -> list[str]:
    """One markdown table per checkpoint: each single signal beside the shipped combination."""
    cols = (f"quadrant@{K}", f"valence_side@{K}", f"arousal_side@{K}", "distinct_first", "top_first_share")
    lines: list[str] = []
    for label, ab in ablation.items():
        rows = [["ranking", *cols, "Q2->Q2"]]
        for key, row in ab["rows"].items():
            q2 = (row.get("quadrant_mix") or {}).get("Q2", {}).get("Q2")
            cells = [_cell(row["metrics"].get(c), count=c == "distinct_first") for c in cols]
            rows.append([ABLATION_LABELS.get(key, key), *cells, _share_cell(q2)])
        lines += [
            "",
            f"ablation {label} (all tracks, up to {ab['clips_per_track']} clips each; shipped: the service path)",
            *markdown(rows),
        ]
    return lines


def emotify_lines(emotify: dict[str, Any] | None) -> list[str]:
    """The Emotify check: correlations of predicted song VA with raw vote sums (reported only)."""
    if not emotify:
        return []
    if "skipped" in emotify:
        return ["", f"Emotify check skipped: {emotify['skipped']}"]
    lines = [
        "",
        f"Emotify check (reported, not selected on): {emotify['sampled']} of {emotify['eligible']} songs "
        f"({emotify['held_out_by']}); arousal ~ {emotify['targets']['arousal']}, "
        f"valence ~ {emotify['targets']['valence']}",
    ]
    rows = [["checkpoint", "n", "valence pearson", "valence spearman", "arousal pearson", "arousal spearman"]]
    for label, e in emotify.get("checkpoints", {}).items():
        cells = [_share_cell(e[d][c]) for d in ("valence", "arousal") for c in ("pearson", "spearman")]
        rows.append([label, str(e["n"]), *cells])
    return [*lines, *markdown(rows)]


def format_report(result: dict[str, Any]) -> str:
    """The printed summary: counts, three metric tables (methods as rows), per-checkpoint VA figures,
    the per-quadrant mix, the ablation and the Emotify check."""
    c = result["counts"]
    s = result["settings"]

    def mix(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items())

    lines = [
        f"photoscore evaluate-retrieval: {s['split']} split, top {s['k']}, bootstrap {s['bootstrap']} (95 % intervals)",
        f"  photos {c['photos']} ({', '.join(f'{k} {v}' for k, v in c['photo_sources'].items())}; "
        f"{mix(c['photo_quadrants'])})"
        + (f", {c['photos_not_decoded']} not decoded" if c["photos_not_decoded"] else ""),
        f"  songs  {c['songs']} ({mix(c['song_quadrants'])})",
        "  clips  " + ", ".join(f"{label} {n}" for label, n in c["clips"].items()),
    ]
    for group in (MATCH_METRICS, CORR_METRICS, HUB_METRICS):
        rows = [["method", *group]]
        rows += [
            [name, *(_cell(m["metrics"].get(g), count=g == "distinct_first") for g in group)]
            for name, m in result["methods"].items()
        ]
        lines += ["", *_table(rows)]
    fig = ("image_valence_r", "image_arousal_r", "v_spread", "a_spread", "song_valence_auc", "song_arousal_auc")
    rows = [["checkpoint", *fig]]
    for label, ck in result["checkpoints"].items():
        rows.append([label, *("n/a" if ck["modality"][f] is None else f"{ck['modality'][f]:.3f}" for f in fig)])
    lines += ["", *_table(rows)]
    lines += mix_lines(result["methods"])
    lines += ablation_lines(result.get("ablation") or {})
    lines += emotify_lines(result.get("emotify"))
    return "\n".join(lines)
