"""``xchange ss log-key new|rotate``: make and rotate a message log's encryption key file.

See ``security_server.logkeys`` for the file and docs/operations.md for the procedure.
"""

from __future__ import annotations

import argparse

__all__: list[str] = []  # the commands are run by name from xchange_cli.commands


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
