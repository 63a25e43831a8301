"""Schema migrations of the configuration store: ``upgrade(engine)`` brings the ``ss_*``
tables to the newest revision shipped in ``security_server/migrations``.

Called at every start (idempotent), after :func:`security_server.db.create_tables`, which
still creates the message log's tables; revision ``0003`` adds an index to a ``message_log``
made before it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

__all__ = ["MIGRATIONS", "alembic_config", "upgrade"]

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    # Which revisions ran is worth an INFO line; Alembic's plugin set-up is not.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
