"""Alembic migrations of the security server's configuration store (``ss_*`` tables)."""
