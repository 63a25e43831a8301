"""``xchange``: the one command-line entry point.

Each subcommand is a small function that builds its configuration and calls the library.
Errors are caught once, here, and printed as one clear line (exit status 1); ``--debug``
shows the stack trace instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from security_server.config import ConfigError
from xchange.errors import XRoadError
from xchange_cli import adapter, audit, ca, keys, logkeys, registry_admin, ss_register, tsa
from xchange_cli.bench import add_bench_command
from xchange_cli.ss_admin import register as register_ss_admin

__all__ = ["main"]


def _ss_serve(args: argparse.Namespace) -> int:
    from security_server.app import serve

    serve(args.config)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from xchange_cli.demo import run_demo

    return run_demo(serve=args.serve, directory=args.dir)


def _ss_status(args: argparse.Namespace) -> int:
    from xchange_cli.status import show_status

    return show_status(args.config)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xchange", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show stack traces and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(path: Sequence[str], func: Callable[[argparse.Namespace], int],
                help_text: str) -> argparse.ArgumentParser:
        group = sub
        for i, name in enumerate(path[:-1]):
            existing = _groups.get(tuple(path[: i + 1]))
            if existing is None:
                p = group.add_parser(name, help=f"{name} commands")
                existing = p.add_subparsers(dest=f"{name}_command", required=True)
                _groups[tuple(path[: i + 1])] = existing
            group = existing
        p = group.add_parser(path[-1], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    _groups: dict[tuple[str, ...], argparse._SubParsersAction[argparse.ArgumentParser]] = {}

    p = command(["ss", "serve"], _ss_serve, "run a security server")
    p.add_argument("--config", type=Path, required=True, help="security server TOML file")
    add_bench_command(command)
    p = command(["ss", "status"], _ss_status,
                "show a security server's certificates, their expiry and OCSP status")
    p.add_argument("--config", type=Path, required=True, help="security server TOML file")
    register_ss_admin(command)
    ss_register.register(command)
    registry_admin.register(command)
    p = command(["demo"], _demo,
                "build a throwaway federation, run cross-agency queries, explain them")
    p.add_argument("--serve", action="store_true",
                   help="keep the federation running until interrupted")
    p.add_argument("--dir", type=Path, default=None,
                   help="folder for the federation (default: a temporary folder)")
    ca.register(command)
    tsa.register(command)
    audit.register(command)
    keys.register(command)
    logkeys.register(command)
    adapter.register(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Servers tell their operators what they refuse and why (INFO); other commands stay quiet.
    serving = args.func in (_ss_serve, registry_admin.SERVE) or getattr(args, "serving", False)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO if serving else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except (XRoadError, ConfigError, OSError, ValueError) as exc:
        if args.debug:
            raise
        message = exc.message if isinstance(exc, XRoadError) else str(exc)
        code = f" [{exc.code}]" if isinstance(exc, XRoadError) else ""
        print(f"xchange: error{code}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
