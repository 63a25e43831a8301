"""security_server.app: the event loop a security server runs on (``[server] event_loop``)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import pytest

from security_server.app import loop_factory
from security_server.config import ConfigError

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


def _kind(factory: object) -> str:
    assert callable(factory)
    loop = factory()
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop)
        return type(loop).__module__.split(".")[0]
    finally:
        loop.close()


def test_asyncio_is_asyncios_own_loop() -> None:
    assert _kind(loop_factory("asyncio")) == "asyncio"


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed on this platform")
@pytest.mark.parametrize("choice", ["auto", "uvloop"])
def test_uvloop_when_installed(choice: str) -> None:
    assert _kind(loop_factory(choice)) == "uvloop"


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert _kind(loop_factory("auto")) == "asyncio"


def test_uvloop_asked_for_but_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with pytest.raises(ConfigError, match=r'server\.event_loop is "uvloop", which is not '
                                          r"installed"):
        loop_factory("uvloop")
