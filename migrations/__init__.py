"""Alembic migrations for the PhotoScore catalogue (PostgreSQL and SQLite); shipped as a package."""
