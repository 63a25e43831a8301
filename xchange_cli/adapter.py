"""``xchange adapter serve|check CONFIG``: run an adapter, or only check its configuration.

A configuration with an error is refused with one line per problem naming the file, the line
and the field; ``serve`` then does not start (exit status 1).  See docs/adapters.md.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

__all__: list[str] = []  # the commands are run by name from xchange_cli.commands


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
