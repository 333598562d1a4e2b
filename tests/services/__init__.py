"""Tests of app.services: the inference worker and the retrieval evaluation."""
