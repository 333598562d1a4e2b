"""Tests of app.cli: the retrieval evaluation (photoscore evaluate-retrieval)."""
