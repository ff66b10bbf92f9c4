"""Alembic revisions, one module per schema change, oldest first (alembic reads the ``revision`` ids)."""
