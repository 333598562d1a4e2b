"""Shared test support: every test imports its helpers from here, never from another test.

Helpers (plain functions and classes):

* ``servers``: free loopback ports, real `photoscore serve` processes, their readiness.
* ``songs``: real songs (Wesnoth soundtrack cuts, FluidSynth renders) and audio files.
* ``media``: photos and synthetic or hostile upload bytes.
* ``video``: videos encoded with PyAV (shots with known cut frames) and broken ones.
* ``databases``: fresh PostgreSQL databases and a private PostgreSQL cluster.
* ``service``: in-process app settings, adding songs, OpenAPI schema checks.
* ``catalogue``, ``indexing``: catalogue rows and indexer runs with their consistency checks.
* ``audit``, ``load``: what a service stored, catalogue audits, a bounded load driver.
* ``browser``: Debian Chromium and the page tests' photos and screenshots.
* ``training``: arguments of tiny real ``photoscore train`` runs on the shared data.

Fixtures live in the ``fixtures_*`` modules, registered for the whole suite by
``tests/conftest.py`` (``pytest_plugins``); tests name them as arguments and never import them.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
API_KEY = "service-test-key"
