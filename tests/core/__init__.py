"""Tests of app.core: catalogue, storage, vector index, search, settings, text, migrations, ranking, logs."""
