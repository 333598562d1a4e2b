"""Tests of the indexer: photoscore index on the local and the Ray engine."""
