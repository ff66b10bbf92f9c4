"""Alembic migration environment and scripts (package data; run by ``storage.migrate``)."""
