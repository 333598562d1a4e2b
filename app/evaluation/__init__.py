"""End-to-end retrieval evaluation: held-out photos against held-out songs, through the service's own path.

``evaluate_retrieval`` is what ``photoscore evaluate-retrieval`` runs; ``format_report`` prints
its result. The modules, in the order a run uses them:

- ``split``: the held-out photos and songs (the training split recomputed, stratified samples);
- ``catalogue``: the songs indexed by the real indexer into a temporary catalogue;
- ``service``: photos decoded, embedded and ranked exactly as ``/recommend`` does it;
- ``baselines``: rankings by predicted VA, at random, and by one signal alone (the ablation);
- ``metrics``: matching, correlation and hubness figures (pure: rankings in, numbers out);
- ``bootstrap``: the paired percentile bootstrap over photos behind every interval;
- ``emotify``: the Emotify check (reported, never selected on);
- ``run``: the run end to end; ``report``: the printed tables.
"""

from __future__ import annotations

from app.evaluation.errors import RetrievalEvalError
from app.evaluation.report import format_report
from app.evaluation.run import evaluate_retrieval

__all__ = ["RetrievalEvalError", "evaluate_retrieval", "format_report"]
