"""``xchange``: the one command-line entry point.

Each subcommand is a small function that builds its configuration and calls the library.
The parser comes from :mod:`xchange_cli.commands`, which names each subcommand's function as
``"module:function"``; only the module of the subcommand that runs is imported.
Errors are caught once, here, and printed as one clear line (exit status 1); ``--debug``
shows the stack trace instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from xchange.errors import XRoadError
from xchange_cli.commands import register

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
    groups: dict[tuple[str, ...], argparse._SubParsersAction[argparse.ArgumentParser]] = {}

    def command(path: Sequence[str], handler: str, help_text: str) -> argparse.ArgumentParser:
        group = sub
        for i, name in enumerate(path[:-1]):
            existing = groups.get(tuple(path[: i + 1]))
            if existing is None:
                p = group.add_parser(name, help=f"{name} commands")
                existing = p.add_subparsers(dest=f"{name}_command", required=True)
                groups[tuple(path[: i + 1])] = existing
            group = existing
        p = group.add_parser(path[-1], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    register(command)
    return parser


def handler_of(name: str) -> Callable[[argparse.Namespace], int]:
    """The function a subcommand names as ``"module:function"``, its module imported now."""
    module, _, function = name.partition(":")
    func: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module),
                                                        function)
    return func


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Servers tell their operators what they refuse and why (INFO); other commands stay quiet.
    logging.basicConfig(
        level=logging.DEBUG if args.debug
        else logging.INFO if getattr(args, "serving", False) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return handler_of(args.handler)(args)
    except KeyboardInterrupt:
        return 130
    except (XRoadError, OSError, ValueError) as exc:  # ValueError: ConfigError too
        if args.debug:
            raise
        message = exc.message if isinstance(exc, XRoadError) else str(exc)
        code = f" [{exc.code}]" if isinstance(exc, XRoadError) else ""
        print(f"xchange: error{code}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
