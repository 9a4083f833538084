"""Alembic migrations of the collector database (run programmatically by :func:`..db.migrate`)."""
