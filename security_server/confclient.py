"""The configuration client: keeps a verified, unexpired global configuration at hand.

Every ``refresh_seconds`` it downloads the registry's signed global configuration from the
anchor's download URL, hands the bytes to the core's :class:`TrustedGlobalConf` (signature
against the anchor, schema, rollback, expiry), and on success writes the copy to the state
folder so a restart begins with the last good configuration.  A failed download or a
document that does not verify changes nothing: the last good copy stays in force until it
expires, after which :meth:`current` raises ``global_conf_outdated`` and traffic stops.

Configuration-signing keys announced by an accepted configuration (key rotation) are kept in
``state_dir/conf-signing-keys.pem`` and trusted again after a restart, so a server that was
down while the registry moved to a new key still accepts its next configuration.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from xchange.errors import XRoadError
from xchange.globalconf import ConfigurationAnchor, GlobalConf, TrustedGlobalConf

if TYPE_CHECKING:
    import aiohttp

__all__ = ["ConfFetcher", "GlobalConfClient", "HttpConfFetcher", "learned_keys"]

log = logging.getLogger(__name__)

CACHE_FILE = "globalconf.json"
KEYS_FILE = "conf-signing-keys.pem"


def learned_keys(state_dir: Path) -> list[x509.Certificate]:
    """The configuration-signing keys the last accepted configuration listed (written with
    it), to trust besides the anchor's; none if the file is missing or unreadable."""
    try:
        return x509.load_pem_x509_certificates((state_dir / KEYS_FILE).read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("learned configuration-signing keys not usable: %s", exc)
        return []


class ConfFetcher(Protocol):
    async def fetch(self, url: str) -> bytes: ...


class HttpConfFetcher:
    """Downloads over HTTP(S).  The document is signed, so transport security is not what
    makes it trustworthy; HTTPS is still recommended to keep the federation's map private."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float = 20.0,
                 max_bytes: int = 16 * 1024 * 1024) -> None:
        import aiohttp  # here: commands that only read the cached copy (audits) skip it

        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max = max_bytes

    async def fetch(self, url: str) -> bytes:
        async with self._session.get(url, timeout=self._timeout) as resp:
            resp.raise_for_status()
            data = await resp.content.read(self._max + 1)
            if len(data) > self._max:
                raise ValueError("global configuration larger than allowed")
            return data


class GlobalConfClient:
    def __init__(
        self,
        anchor: ConfigurationAnchor,
        state_dir: Path,
        fetcher: ConfFetcher,
        clock: Callable[[], datetime],
    ) -> None:
        self._trusted = TrustedGlobalConf(anchor, learned_keys(state_dir))
        self._anchor = anchor
        self._state_dir = state_dir
        self._fetcher = fetcher
        self._clock = clock
        self.last_error: str | None = None
        self._stored_version: int | None = None

    def current(self, now: datetime) -> GlobalConf:
        """The configuration in force at ``now``; raises GlobalConfOutdatedError."""
        return self._trusted.current(now=now)

    def load_cached(self) -> None:
        path = self._state_dir / CACHE_FILE
        if not path.exists():
            return
        try:
            conf = self._trusted.update(path.read_bytes(), now=self._clock())
            self._stored_version = conf.version
        except (XRoadError, OSError) as exc:
            log.warning("cached global configuration not usable: %s", exc)

    async def refresh(self) -> bool:
        """Download and install a new configuration; return whether one was installed.

        A copy that verifies but cannot be written to the state folder is in force all the
        same (``last_error`` says so); the next refresh tries the write again.
        """
        import aiohttp

        try:
            data = await self._fetcher.fetch(self._anchor.download_url)
            conf = self._trusted.update(data, now=self._clock())
        except (TimeoutError, XRoadError, aiohttp.ClientError, OSError, ValueError) as exc:
            self.last_error = str(exc) or type(exc).__name__
            log.warning("global configuration refresh failed: %s", self.last_error)
            return False
        self.last_error = None
        if conf.version != self._stored_version:
            log.info("global configuration version %s installed", conf.version)
            try:
                self._store(data)
            except OSError as exc:
                # Raising would end the refresh loop, and traffic with it once this copy expires.
                self.last_error = f"global configuration cache not written: {exc}"
                log.warning("%s", self.last_error)
            else:
                self._stored_version = conf.version
            return True
        return False

    def _store(self, data: bytes) -> None:
        self._state_dir.mkdir(parents=True, exist_ok=True)
        keys = b"".join(c.public_bytes(serialization.Encoding.PEM)
                        for c in self._trusted.trusted_keys)
        for name, content in ((KEYS_FILE, keys), (CACHE_FILE, data)):
            tmp = self._state_dir / (name + ".tmp")
            with open(tmp, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._state_dir / name)

    async def run(self, interval: float) -> None:
        """Refresh forever (a background task, cancelled on shutdown)."""
        while True:
            try:
                await self.refresh()
            except Exception:  # the loop must outlive any one failure, or traffic stops
                log.exception("global configuration refresh failed unexpectedly")
            await asyncio.sleep(interval)
