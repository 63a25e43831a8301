"""The ``xchange`` parser: built without the heavy libraries, and every subcommand runnable."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

import pytest

from certs.ca import OCSP_RESPONDER_DAYS
from certs.index import REVOCATION_REASONS
from certs.ocsp import DEFAULT_VALIDITY
from certs.tsa import DEV_TSA_POLICY
from xchange_cli.main import _parser, handler_of

# Packages only a subcommand's own module may import (tens to hundreds of ms each).
HEAVY = ("adapters", "aiohttp", "asn1crypto", "certs", "cryptography", "jsonschema", "jwt",
         "lxml", "registry", "security_server", "sqlalchemy", "sqlmodel")


def _subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
                 ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, (*path, name))
            return
    yield path, parser


@pytest.mark.parametrize("argv", [["--help"], ["ss", "status", "--help"],
                                  ["registry", "member", "add", "--help"]])
def test_help_imports_no_heavy_library(argv: list[str]) -> None:
    code = ("import sys\nfrom xchange_cli.main import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    loaded = set(done.stdout.splitlines()[-1].split())
    assert "xchange_cli" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_every_subcommand_names_a_function_that_exists() -> None:
    commands = dict(_subcommands(_parser()))
    assert len(commands) > 90
    for path, parser in commands.items():
        handler = parser.get_default("handler")
        assert isinstance(handler, str), path
        assert callable(handler_of(handler)), path


def test_servers_log_at_info() -> None:
    serving = {path for path, parser in _subcommands(_parser()) if parser.get_default("serving")}
    assert serving == {("ss", "serve"), ("registry", "serve"), ("tsa", "serve"),
                       ("ca", "ocsp-serve"), ("adapter", "serve")}


def test_defaults_written_out_in_the_parser_match_the_library() -> None:
    parser = _parser()
    ocsp = parser.parse_args(["ca", "ocsp-serve", "dir"])
    assert ocsp.validity_seconds == DEFAULT_VALIDITY.total_seconds()
    assert ocsp.responder_days == OCSP_RESPONDER_DAYS
    assert parser.parse_args(["tsa", "serve", "--key", "k", "--cert", "c"]).policy == \
        DEV_TSA_POLICY
    revoke = dict(_subcommands(parser))[("ca", "revoke")]
    choices = next(a.choices for a in revoke._actions if a.dest == "reason")
    assert list(choices or ()) == [r.value for r in REVOCATION_REASONS]
