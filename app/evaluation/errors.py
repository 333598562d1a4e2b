"""The one error the retrieval evaluation raises for input it cannot use."""

from __future__ import annotations


class RetrievalEvalError(ValueError):
    """Input that makes the evaluation impossible; the CLI prints it as one line (exit 2)."""
