"""``xchange adapter serve|check CONFIG``: run an adapter, or only check its configuration.

A configuration with an error is refused with one line per problem naming the file, the line
and the field; ``serve`` then does not start (exit status 1).  See docs/adapters.md.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from xchange_cli.ca import Command

__all__ = ["register"]


def _serve(args: argparse.Namespace) -> int:
    from adapters.app import serve
    from adapters.config import load_config

    config = load_config(args.config)
    if args.port is not None:
        config = replace(config, port=args.port)
    serve(config)
    return 0


def _check(args: argparse.Namespace) -> int:
    from adapters.config import load_config

    config = load_config(args.config)
    ops = sum(len(s.backend.operations()) for s in config.services)
    print(f"{args.config}: valid: {len(config.services)} service(s), {ops} operation(s)")
    return 0


def register(command: Command) -> None:
    """Add the adapter subcommands to the ``xchange`` parser."""
    p = command(["adapter", "serve"], _serve,
                "run an adapter: data silos as provider services (docs/adapters.md)")
    p.set_defaults(serving=True)
    p.add_argument("config", type=Path, help="the adapter's TOML or YAML file")
    p.add_argument("--port", type=int, default=None, help="listen on this port instead")
    p = command(["adapter", "check"], _check,
                "check an adapter configuration without starting anything")
    p.add_argument("config", type=Path, help="the adapter's TOML or YAML file")
