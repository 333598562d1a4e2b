"""The suite's one conftest: it registers the shared fixture modules of ``tests/support``.

Helpers are imported from ``tests.support.*``; fixtures are only named as test arguments.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.support")  # helpers assert too: show their values on failure

pytest_plugins = [
    "tests.support.fixtures_model",  # dataset_dir, tiny_checkpoint
    "tests.support.fixtures_databases",  # pg_url, sqlite_url, db_url, migrated_db, session_factory
    "tests.support.fixtures_music",  # music_library, bad_files
    "tests.support.fixtures_page",  # live_server, browser, page
]
