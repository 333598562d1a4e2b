"""Tests of app.services: the inference worker and the ranking."""
