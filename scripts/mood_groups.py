"""Do joyful, sad and angry photos get different songs? Read from a retrieval evaluation's JSON.

`photoscore evaluate-retrieval --json OUT` keeps every photo's top 10 for every method. Emotion6
photos sit in folders named by their dominant emotion (anger, disgust, fear, joy, sadness,
surprise); this groups the held-out ones by folder and prints, per group, what the shipped path
(the `cdcml:` method of each checkpoint) answered: the share of each song quadrant in the top 10,
the share of energetic songs (Q1 + Q2, high arousal), and the most frequent first songs. It also
prints how much two groups' top-10 songs overlap (Jaccard of their song sets weighted by counts).

    python scripts/mood_groups.py runs/default/retrieval-test.json [--groups joy,sadness,anger]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

QUADRANTS = ("Q1", "Q2", "Q3", "Q4")


def group_of(photo: dict) -> str | None:
    """Emotion6 category of a photo (its folder), None for other sources."""
    return Path(photo["path"]).parent.name if photo["source"] == "emotion6" else None


def weighted_jaccard(a: Counter, b: Counter) -> float:
    """Sum of per-song minimum counts over sum of maximum counts (1 = the same songs as often)."""
    keys = set(a) | set(b)
    top = sum(max(a[k], b[k]) for k in keys)
    return sum(min(a[k], b[k]) for k in keys) / top if top else 0.0


def summarise(result: dict, groups: list[str]) -> dict[str, dict]:
    """Per checkpoint and group: photos, quadrant shares, energetic share, first songs, overlaps."""
    quadrant = {s["id"]: f"Q{s['quadrant']}" for s in result["songs"]}
    members = {g: [i for i, p in enumerate(result["photos"]) if group_of(p) == g] for g in groups}
    out: dict[str, dict] = {}
    for name, method in result["methods"].items():
        if not name.startswith("cdcml:"):
            continue
        top = method["top10"]
        rows: dict[str, dict] = {}
        songs: dict[str, Counter] = {}
        for g, idx in members.items():
            picked = [s for i in idx for s in top[i]]
            songs[g] = Counter(picked)
            q = Counter(quadrant[s] for s in picked)
            n = max(1, len(picked))
            rows[g] = {
                "photos": len(idx),
                **{k: round(q[k] / n, 3) for k in QUADRANTS},
                "energetic": round((q["Q1"] + q["Q2"]) / n, 3),
                "first": Counter(top[i][0] for i in idx if top[i]).most_common(3),
            }
        overlap = {
            f"{a}~{b}": round(weighted_jaccard(songs[a], songs[b]), 3)
            for j, a in enumerate(groups)
            for b in groups[j + 1 :]
        }
        out[name] = {"groups": rows, "overlap": overlap}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result", type=Path, help="JSON written by photoscore evaluate-retrieval --json")
    ap.add_argument("--groups", default="joy,sadness,anger,fear")
    args = ap.parse_args()
    result = json.loads(args.result.read_text())
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    for name, summary in summarise(result, groups).items():
        print(f"\n{name}")
        print("| photos | n | Q1 | Q2 | Q3 | Q4 | energetic (Q1+Q2) | most frequent first songs |")
        print("|---|---|---|---|---|---|---|---|")
        for g, r in summary["groups"].items():
            firsts = ", ".join(f"{s} ({c})" for s, c in r["first"])
            cells = " | ".join(f"{r[k]:.2f}" for k in (*QUADRANTS, "energetic"))
            print(f"| {g} | {r['photos']} | {cells} | {firsts} |")
        print(
            "overlap of top-10 songs (weighted Jaccard): "
            + ", ".join(f"{k} {v}" for k, v in summary["overlap"].items())
        )


if __name__ == "__main__":
    main()
