"""``xchange ss log-key new|rotate``: make and rotate a message log's encryption key file.

See ``security_server.logkeys`` for the file and docs/operations.md for the procedure.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from xchange_cli.tsa import Command

__all__ = ["register"]


def _new(args: argparse.Namespace) -> int:
    from security_server.logkeys import new_key_file

    new_key_file(args.file, args.id)
    print(f"new message-log key file {args.file} (mode 0600), current key {args.id!r}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from security_server.logkeys import rotate_key

    rotate_key(args.file, args.id)
    print(f"key {args.id!r} added to {args.file} and made current; restart the security "
          "server to use it (old records stay readable with the old keys)")
    return 0


def register(command: Command) -> None:
    """Add the key-file subcommands to the ``xchange`` parser."""
    for name, func, text in (
        ("new", _new, "write a new message-log key file holding one fresh AES-256 key"),
        ("rotate", _rotate, "add a fresh key to a message-log key file and make it current"),
    ):
        p = command(["ss", "log-key", name], func, text)
        p.add_argument("--file", type=Path, required=True, help="the key file (TOML)")
        p.add_argument("--id", required=True, help="the new key's id, e.g. 2026-11")
