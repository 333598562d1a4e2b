"""Print the model card's Markdown tables from `photoscore evaluate --json` and the study results.

python scripts/card_tables.py runs/default/test.json [runs/study/results.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TEST_COLUMNS = [
    ("sim_mse", "Sim MSE"),
    ("sim_mae", "Sim MAE"),
    ("ndcg@10", "NDCG@10"),
    ("map@10", "MAP@10"),
    ("recall@10", "R@10"),
    ("image_valence_mse", "I-V MSE"),
    ("image_arousal_mse", "I-A MSE"),
    ("image_valence_r", "I-V r"),
    ("image_arousal_r", "I-A r"),
    ("image_valence_ccc", "I-V CCC"),
    ("music_valence_mse", "M-V MSE"),
    ("music_arousal_mse", "M-A MSE"),
    ("music_valence_r", "M-V r"),
    ("music_arousal_r", "M-A r"),
    ("music_arousal_ccc", "M-A CCC"),
    ("real_audio_valence_auc", "real V AUC"),
    ("real_audio_arousal_auc", "real A AUC"),
]
STUDY_COLUMNS = [
    "sim_mse",
    "ndcg@10",
    "map@10",
    "image_valence_r",
    "image_arousal_r",
    "music_valence_r",
    "music_arousal_r",
    "real_audio_valence_auc",
    "real_audio_arousal_auc",
]


def table(rows: dict[str, dict], columns: list[tuple[str, str]]) -> str:
    out = ["| method | " + " | ".join(label for _, label in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        out.append(f"| {name} | " + " | ".join(f"{row[k]:.3f}" if k in row else "–" for k, _ in columns) + " |")
    return "\n".join(out)


def main() -> None:
    test = json.loads(Path(sys.argv[1]).read_text())
    print(
        f"Test split: {test['counts']['images']} images, {test['counts']['clips']} clips, sigma {test['sigma']:.4f}\n"
    )
    print(table(test["table"], TEST_COLUMNS))
    if len(sys.argv) > 2:
        study = json.loads(Path(sys.argv[2]).read_text())
        rows = {k: v["val"] | {"train s": v["train_seconds"]} for k, v in study.items()}
        print()
        print(table(rows, [(c, c) for c in STUDY_COLUMNS] + [("train s", "train s")]))


if __name__ == "__main__":
    main()
