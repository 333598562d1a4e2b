"""Tests of model/: audio features, datasets, images, losses, musicnn, pairs, the CLI, the shipped model."""
