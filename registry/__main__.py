"""``python -m registry --config FILE``: run the registry (same as ``xchange registry serve``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from registry.app import serve
from registry.config import ConfigError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m registry")
    parser.add_argument("--config", type=Path, required=True, help="registry TOML file")
    args = parser.parse_args(argv)
    try:
        serve(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
