"""``xchange registry ...``: run and administer the registry.

Two kinds of commands:

* **Local** commands work on the registry's own files and database, for the operator of the
  registry machine: ``serve``, ``init``, ``migrate``, ``import`` and ``token`` (issue an
  admin token, signed with the registry's admin-token key; this is how the first officer
  gets in).  They take ``--config``.
* **API** commands talk to a running registry's admin API with a bearer token
  (``--url`` and ``--token``, or ``XCHANGE_REGISTRY_URL`` and ``XCHANGE_REGISTRY_TOKEN``),
  so they are audited under the token's subject and checked against its roles like any
  other API call.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["SERVE", "register"]

Command = Callable[[list[str], Callable[[argparse.Namespace], int], str],
                   argparse.ArgumentParser]


def _now() -> datetime:
    return datetime.now(UTC)


def _config(args: argparse.Namespace) -> Any:
    from registry.config import RegistryConfig

    return RegistryConfig.from_env(args.config)


def _print(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _serve(args: argparse.Namespace) -> int:
    from registry.app import serve

    serve(args.config)
    return 0


def _init(args: argparse.Namespace) -> int:
    from registry.bootstrap import init_registry
    from registry.db import create_db_engine

    config = _config(args)
    engine = create_db_engine(config.database_url)
    try:
        _print(init_registry(config, engine, args.instance, actor="cli:init", now=_now()))
    finally:
        engine.dispose()
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from registry.db import create_db_engine, current_revision, migrate

    engine = create_db_engine(_config(args).database_url)
    try:
        migrate(engine)
        print(f"database at revision {current_revision(engine)}")
    finally:
        engine.dispose()
    return 0


def _import(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from registry.bootstrap import import_data
    from registry.db import create_db_engine, migrate
    from registry.service import RegistryService

    engine = create_db_engine(_config(args).database_url)
    try:
        migrate(engine)
        with Session(engine) as session:
            count = import_data(RegistryService(session, actor="cli:import", now=_now()),
                                args.file)
            session.commit()
    finally:
        engine.dispose()
    print(f"imported {count} members, servers and groups from {args.file}")
    return 0


def _token(args: argparse.Namespace) -> int:
    from registry.adminroles import issue_admin_token

    config = _config(args)
    hours = args.hours if args.hours is not None else config.admin_token_hours
    print(issue_admin_token(config, subject=args.subject, roles=args.role,
                            now=_now(), lifetime=timedelta(hours=hours)))
    return 0


SERVE = _serve
"""The serving command (``main`` logs at INFO for servers)."""


def register(command: Command) -> None:
    """Add the ``registry`` subcommands through ``main``'s ``command`` helper."""
    p = command(["registry", "serve"], _serve, "run the registry")
    p.add_argument("--config", type=Path, required=True, help="registry TOML file")
    p = command(["registry", "init"], _init,
                "prepare a new registry: database, instance, first signing and admin keys")
    p.add_argument("--config", type=Path, required=True, help="registry TOML file")
    p.add_argument("--instance", required=True, help="the federation's instance code")
    p = command(["registry", "migrate"], _migrate,
                "bring the registry's database to the newest schema")
    p.add_argument("--config", type=Path, required=True, help="registry TOML file")
    p = command(["registry", "import"], _import,
                "load an old registry data file (registry-data.schema.json) into the database")
    p.add_argument("--config", type=Path, required=True, help="registry TOML file")
    p.add_argument("file", type=Path, help="registry data file (JSON)")
    p = command(["registry", "token"], _token,
                "issue an admin API token with the registry's admin-token key (local)")
    p.add_argument("--config", type=Path, required=True, help="registry TOML file")
    p.add_argument("--subject", required=True, help="who the token is for (the audit name)")
    p.add_argument("--role", action="append", required=True,
                   help="a role: registration_officer, security_officer, "
                        "system_administrator or observer (repeatable)")
    p.add_argument("--hours", type=float, default=None, help="lifetime (default from config)")
